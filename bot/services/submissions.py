"""Submitted forms: a new connection, or new credentials for an active one (a rotation).

Before the ack, :meth:`Submissions.check` runs the offline checks and claims what the submission
will store (a name, or the connection rotated) as an in-flight verification
(:mod:`bot.services.interrupted`): of two submissions of one name only one is acknowledged, and a
crash leaves a row that says whom to tell. After the ack, :meth:`Submissions.submit` verifies with
the provider outside any transaction, then in one transaction ends the claim and stores the sealed
credential version, the verification, the audit event and the approval request (the connection
itself, or a :class:`Rotation`). A failed verification stores only its audit event.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
from sqlalchemy.exc import OperationalError

from bot.crypto import Cipher
from bot.domain import (
    NAME_FIELD,
    NAME_MAX_LENGTH,
    ApprovalRequest,
    ConfigChange,
    ConnectionSummary,
    Health,
    InFlightKind,
    Refusal,
    Refused,
    RequestKind,
    Status,
    Trigger,
    utcnow,
)
from bot.providers.base import FieldValues, Provider, Verification
from bot.providers.registry import ProviderRegistry
from bot.redaction import Secret
from bot.services.admins import AdminPolicy
from bot.services.approvals import pending_rotation
from bot.services.interrupted import ClaimLost, ProcessOwner, end_claim, release_quietly, still_claimed
from bot.services.permissions import find_connection, owner_or_admin, owner_refusal
from bot.services.records import audit_event, config_changes, history_row, seal_credential, summarize
from bot.store import (
    AuditEvent,
    Connection,
    Database,
    MasterKeyMoved,
    NameTaken,
    Rotation,
    RotationPending,
)
from bot.store.models import InFlightVerification
from bot.store.uow import UnitOfWork

__all__ = ["FormCheck", "RotationTarget", "Submission", "SubmissionOutcome", "Submissions", "Waiter"]

logger = logging.getLogger(__name__)

FIRST_VERSION = 1
CLAIM_LOCK_WAIT_MS = 2_000
"""The longest a claim waits for a lock that another transaction holds: it runs before Slack gets
its answer, which must come within 3 seconds, while SQLite's own busy timeout is 15."""
NAME_TAKEN = (
    "A connection with this name already exists in this workspace (names ignore case). Pick another name."
)
DATABASE_BUSY = (
    "The bot's database is busy right now, so nothing was checked or saved. Submit the form again "
    "in a moment."
)
NAME_BEING_REGISTERED = (
    "A connection with this name is being registered right now (names ignore case). Pick another "
    "name, or wait for that one to finish."
)
ALREADY_ROTATING = (
    "New credentials for this connection are being checked right now (someone submitted them a "
    "moment ago). Wait for that check to finish; nothing changed."
)
ROTATION_BUSY = (
    "The bot's database is busy right now, so nothing was checked or changed. Submit the form again "
    "in a moment."
)
KEY_MOVED = {
    RequestKind.CONNECTION: (
        "The credentials work, but the bot's master key was rotated while it was running, so nothing "
        "was saved. Ask whoever runs the bot to restart it, then submit again."
    ),
    RequestKind.ROTATION: (
        "The new credentials work, but the bot's master key was rotated while it was running, so "
        "nothing was saved. Ask whoever runs the bot to restart it, then rotate again."
    ),
}
STALE_ROTATION = "This form is out of date. Close it and start the rotation again."
REMOVED_MEANWHILE = "The connection was removed meanwhile, so the new credentials were not saved."
ROTATED_MEANWHILE = "Someone else asked to rotate this connection a moment ago; nothing was saved."


@dataclass(frozen=True)
class Waiter:
    """Who waits for a verification's outcome, and the modal it will be shown in."""

    user_id: str
    view_id: str


@dataclass(frozen=True)
class FormCheck:
    """The offline verdict on a submitted form: cleaned values, or problems by field name
    (``form_problem`` for one about the form as a whole), and the claim it now holds."""

    name: str
    values: dict[str, str | Secret] = field(repr=False)
    problems: dict[str, str]
    form_problem: str | None = None
    claim_id: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems and self.form_problem is None


@dataclass(frozen=True)
class Submission:
    """A checked form whose credentials are verified after the ack."""

    kind: RequestKind
    team_id: str
    user_id: str
    provider: Provider
    name: str
    values: FieldValues = field(repr=False)
    connection_id: str | None = None
    """The connection a rotation is for."""
    claim_id: str | None = None
    """The in-flight row of this verification; ended when the outcome is stored."""


@dataclass(frozen=True)
class SubmissionOutcome:
    """What became of a submission: its verification and, when it passed and was stored, the id of
    the approval request (the new connection's, or the rotation's). ``problem`` says in words why
    nothing was stored although nothing broke (the name was taken a moment ago, the connection was
    removed meanwhile). ``abandoned``: a sweep took the claim first (the verification overran its
    deadline) and told the user it was interrupted, so nothing was stored and nothing is to be said."""

    verification: Verification | None = None
    request_id: str | None = None
    problem: str | None = None
    abandoned: bool = False
    config_changes: tuple[ConfigChange, ...] | None = None
    """For a stored rotation: the other settings approving it will change (empty: only the secret)."""

    @property
    def stored(self) -> bool:
        return self.request_id is not None


@dataclass(frozen=True)
class RotationTarget:
    """A connection that may be rotated now: what the form needs to show."""

    connection: ConnectionSummary
    provider: Provider
    config: dict[str, str]


def lock_wait_exceeded(error: OperationalError) -> bool:
    """Whether ``error`` says a lock wait ran out (SQLite: "database is locked"; PostgreSQL:
    ``lock_timeout``, SQLSTATE 55P03), rather than that something is broken."""
    original = error.orig
    if getattr(original, "sqlstate", None) == "55P03":
        return True
    return isinstance(original, sqlite3.OperationalError) and "database is locked" in str(original)


class _Unavailable(Exception):
    """The claim could not be made; the message says why, for the form."""


@dataclass
class Submissions:
    """Checks, claims, verifies and stores submitted forms; see the module docstring."""

    db: Database
    cipher: Cipher
    providers: ProviderRegistry
    http: httpx.AsyncClient
    admins: AdminPolicy
    owner: ProcessOwner = field(default_factory=ProcessOwner.current)
    clock: Callable[[], datetime] = utcnow

    # --- before the ack ---------------------------------------------------------------------------

    async def check(
        self,
        kind: RequestKind,
        team_id: str,
        provider: Provider,
        name: str,
        values: FieldValues,
        *,
        claim_for: Waiter | None = None,
        connection_id: str | None = None,
    ) -> FormCheck:
        """The offline checks of a form, then (``claim_for``) the claim. No provider call: this runs
        before Slack is answered. A new connection's name is checked (and claimed) too; a rotation
        claims its connection (``connection_id``), once the user is found to be allowed to rotate it
        with this provider's form: a refused user leaves no claim that could block anyone."""
        cleaned = provider.clean(values)
        if kind is RequestKind.ROTATION and claim_for is not None:
            target = await self.may_rotate(team_id, claim_for.user_id, connection_id=connection_id)
            if isinstance(target, Refused):
                return FormCheck(name, cleaned, {}, target.message)
            if target.provider.key != provider.key:
                return FormCheck(name, cleaned, {}, STALE_ROTATION)
        # Offline but not always cheap (opening an encrypted private key runs its key derivation):
        # on a thread, so other requests' acks are not held up meanwhile.
        problems = await asyncio.to_thread(provider.validate, cleaned)
        creating = kind is RequestKind.CONNECTION
        if creating:
            name = " ".join(name.split())
            problems.update(await self._name_problems(team_id, provider, name, check_taken=claim_for is None))
        if problems or claim_for is None:
            return FormCheck(name, cleaned, problems)
        row = self.owner.claim(
            kind=InFlightKind.CREATE if creating else InFlightKind.ROTATION,
            team_id=team_id,
            user_id=claim_for.user_id,
            provider=provider,
            name=name,
            view_id=claim_for.view_id,
            config=provider.config_of(cleaned),
            now=self.clock(),
            connection_id=connection_id,
        )
        try:
            await self._claim(row, creating)
        except _Unavailable as unavailable:
            where = {NAME_FIELD: str(unavailable)} if creating else {}
            return FormCheck(name, cleaned, where, None if where else str(unavailable))
        return FormCheck(name, cleaned, {}, claim_id=row.id)

    async def _name_problems(
        self, team_id: str, provider: Provider, name: str, *, check_taken: bool
    ) -> dict[str, str]:
        if not name:
            example = f", e.g. “{provider.name_examples[0]}”" if provider.name_examples else ""
            return {NAME_FIELD: f"Give the connection a name{example}."}
        if len(name) > NAME_MAX_LENGTH:
            return {NAME_FIELD: f"Keep the name to {NAME_MAX_LENGTH} characters or fewer."}
        if any(unicodedata.category(ch) == "Cc" for ch in name):
            # Invisible, and PostgreSQL cannot store NUL: say so rather than fail on saving.
            return {NAME_FIELD: "Remove the control characters from the name (they don't show)."}
        if check_taken:
            async with self.db.read() as tx:
                if await tx.connections.name_taken(team_id, name):
                    return {NAME_FIELD: NAME_TAKEN}
        return {}

    async def _claim(self, row: InFlightVerification, creating: bool) -> None:
        """Record the verification to come, reserving what it will store; then, for a new
        connection, check that no connection holds the name: one transaction, the claim first.

        In that order no interleaving lets two submissions of one name through. A claim waits for
        (PostgreSQL) or queues behind (SQLite) any other transaction holding the same name, so of
        two at once the second fails; and a claim made after another verification stored its
        connection (ending its claim in that transaction) comes with a fresh snapshot under read
        committed, in which that connection is visible."""
        try:
            async with self.db.transaction(lock_wait_ms=CLAIM_LOCK_WAIT_MS) as tx:
                if not await tx.in_flight.claim(row):
                    raise _Unavailable(NAME_BEING_REGISTERED if creating else ALREADY_ROTATING)
                if creating and await tx.connections.name_taken(row.team_id, row.name):
                    raise _Unavailable(NAME_TAKEN)  # leaving by an exception rolls the claim back
        except OperationalError as error:
            # Another transaction held the lock past the budget: nothing was written, say "busy".
            if lock_wait_exceeded(error):
                raise _Unavailable(DATABASE_BUSY if creating else ROTATION_BUSY) from None
            raise

    async def may_rotate(
        self, team_id: str, actor: str, *, connection_id: str | None = None, name: str | None = None
    ) -> RotationTarget | Refused:
        """Whether ``actor`` may rotate the connection (owner or admin, active, no rotation
        waiting); checked when the form is asked for and again when it is verified."""
        async with self.db.read() as tx:
            row = await find_connection(tx, team_id, connection_id=connection_id, name=name)
            if isinstance(row, Refused):
                return row
            waiting = await tx.rotations.pending_for(team_id, row.id)
        if row.status is not Status.ACTIVE:
            return Refused(
                Refusal.WRONG_STATUS,
                f"“{row.name}” is {row.status.label}; only active connections can be rotated.",
            )
        check = await owner_or_admin(self.admins, actor, row.created_by)
        if not check.allowed:
            return owner_refusal(check, "rotate")
        if waiting is not None:
            return Refused(
                Refusal.ROTATION_PENDING,
                f"A rotation of “{row.name}” is already waiting for an admin's approval. An admin "
                "can reject it if it should be replaced.",
                connection_id=row.id,
            )
        provider = self.providers.find(row.provider)
        if provider is None:
            return Refused(Refusal.WRONG_STATUS, f"This bot no longer offers {row.provider!r}.")
        return RotationTarget(
            summarize(row, self.providers), provider, {str(k): str(v) for k, v in row.config.items()}
        )

    async def pending_rotation(self, team_id: str, connection_id: str) -> ApprovalRequest | None:
        """The connection's rotation waiting for approval, if any (to say so to a second rotator)."""
        async with self.db.read() as tx:
            return await pending_rotation(tx, self.providers, team_id, connection_id)

    # --- after the ack ----------------------------------------------------------------------------

    async def release_claim(self, claim_id: str | None) -> bool:
        """End the claim of a verification that stopped without an outcome; never raises.
        ``False`` when a sweep had taken it: its user was told, and must not be told again."""
        return await release_quietly(self.db, claim_id)

    async def claim_held(self, claim_id: str | None) -> bool:
        """Whether the claim is still this process's to end (no sweep took it and told its user)."""
        return await still_claimed(self.db, claim_id)

    async def submit(self, submission: Submission) -> SubmissionOutcome:
        """Verify the credentials, then store them (see the module docstring). The claim ends in the
        transaction that stores the outcome, or, if anything raises, right away."""
        try:
            return await self._verify_and_store(submission)
        except ClaimLost as lost:
            logger.warning(
                "a %s verification in team %s overran its deadline and was reported as interrupted; "
                "its outcome was dropped",
                submission.provider.key,
                submission.team_id,
            )
            return SubmissionOutcome(verification=lost.verification, abandoned=True)
        except Exception:
            if not await self.release_claim(submission.claim_id):
                # A sweep took the claim and told the user it was interrupted: one answer is enough.
                logger.exception("a %s verification failed after it was reported", submission.provider.key)
                return SubmissionOutcome(abandoned=True)
            raise

    async def _verify_and_store(self, s: Submission) -> SubmissionOutcome:
        rotated: ConnectionSummary | None = None
        if s.kind is RequestKind.ROTATION:
            target = await self.may_rotate(s.team_id, s.user_id, connection_id=s.connection_id)
            if isinstance(target, Refused):
                async with self.db.transaction() as tx:
                    await end_claim(tx, s.claim_id, None)
                return SubmissionOutcome(problem=target.message)
            rotated = target.connection
        verification = await s.provider.verify(s.values, self.http)
        now = self.clock()
        if not verification.ok:
            async with self.db.transaction() as tx:
                await end_claim(tx, s.claim_id, verification)
                await tx.audit.add(_event(s, rotated, now, verification))
            return SubmissionOutcome(verification)
        try:
            async with self.db.transaction() as tx:
                await end_claim(tx, s.claim_id, verification)
                store = _store_connection if s.kind is RequestKind.CONNECTION else _store_rotation
                stored = await store(tx, s, now)
                if isinstance(stored, str):  # not stored; the ended claim commits
                    return SubmissionOutcome(verification, problem=stored)
                request_id, connection, version = stored
                config = s.provider.config_of(s.values)
                changes = None
                if s.kind is RequestKind.ROTATION:  # the connection as it is, before any approval
                    changes = config_changes(s.provider, connection.config, config)
                secrets = s.provider.secrets_of(s.values)
                await seal_credential(tx, self.cipher, secrets, connection, version, config, now)
                trigger = Trigger.CREATE if s.kind is RequestKind.CONNECTION else Trigger.ROTATION
                await tx.verifications.add(history_row(verification, connection, trigger, s.user_id))
                await tx.audit.add(_event(s, connection, now, None))
        except (RotationPending, MasterKeyMoved) as error:
            # Rolled back with the rest: the claim's end too.
            await self.release_claim(s.claim_id)
            if isinstance(error, RotationPending):
                return SubmissionOutcome(verification, problem=ROTATED_MEANWHILE)
            logger.error("not storing a %s %s: %s", s.provider.key, s.kind, error)
            return SubmissionOutcome(verification, problem=KEY_MOVED[s.kind])
        logger.info(
            "%s %s stored in team %s by %s (%s)", s.kind, request_id, s.team_id, s.user_id, s.provider.key
        )
        return SubmissionOutcome(verification, request_id=request_id, config_changes=changes)


async def _store_connection(
    tx: UnitOfWork, s: Submission, now: datetime
) -> tuple[str, Connection, int] | str:
    """Insert the new connection, awaiting approval: it is its own approval request."""
    connection = Connection(
        team_id=s.team_id,
        name=s.name,
        provider=s.provider.key,
        status=Status.PENDING_APPROVAL,
        health=Health.HEALTHY,
        config=s.provider.config_of(s.values),
        key_hint=s.provider.credential_hint(s.values),
        created_by=s.user_id,
        created_at=now,
        updated_at=now,
        last_verified_at=now,
        credential_version=FIRST_VERSION,
        credential_created_at=now,
    )
    try:
        await tx.connections.add(connection)
    except NameTaken:
        # Only a connection stored without a claim can get here.
        return (
            "The credentials work, but someone registered a connection named "
            f"“{s.name}” a moment ago. Nothing was saved; try again with another name."
        )
    return connection.id, connection, FIRST_VERSION


async def _store_rotation(tx: UnitOfWork, s: Submission, now: datetime) -> tuple[str, Connection, int] | str:
    """Insert the rotation request beside the connection, under the next unused version; the
    connection keeps its credential until an admin approves. Raises ``RotationPending`` if one
    already waits."""
    row = await tx.connections.lock(s.team_id, s.connection_id or "")
    if row is None or row.status is not Status.ACTIVE:
        return REMOVED_MEANWHILE
    version = max(row.credential_version, await tx.rotations.latest_version(row.id)) + 1
    rotation = Rotation(
        team_id=s.team_id,
        connection_id=row.id,
        version=version,
        requested_by=s.user_id,
        config=s.provider.config_of(s.values),
        key_hint=s.provider.credential_hint(s.values),
        replaced_config=dict(row.config),
        created_at=now,
        updated_at=now,
    )
    await tx.rotations.add(rotation)
    return rotation.id, row, version


def _event(
    s: Submission,
    connection: Connection | ConnectionSummary | None,
    now: datetime,
    failed: Verification | None,
) -> AuditEvent:
    """The audit event of a stored submission, or of one whose verification ``failed``; ``connection``
    is the one stored or rotated (None for a new connection that failed)."""
    fields: dict[str, Any]
    if connection is None:
        action, fields = "connection.create_failed", {"details": {"provider": s.provider.key, "name": s.name}}
    elif s.kind is RequestKind.CONNECTION:
        action, fields = "connection.created", {"connection": connection, "after": Status.PENDING_APPROVAL}
    else:
        status = Status(connection.status).value
        action = "connection.rotation_requested" if failed is None else "connection.rotation_failed"
        fields = {"connection": connection, "before": status, "after": status}
    reason = None if failed is None else failed.outcome.value
    return audit_event(s.team_id, s.user_id, action, now, reason=reason, **fields)
