"""Registering connections: list them, check a submitted form, verify and store a new one.

A submission that passes the offline checks claims its name as an in-flight verification
(:mod:`bot.services.interrupted`) before it is acknowledged; the claim ends in the transaction that
stores the outcome. Two submissions of one name cannot both be acknowledged, and a verification cut
short by a crash leaves a row that tells the next start whom to tell."""

from __future__ import annotations

import asyncio
import logging
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
from sqlalchemy.exc import OperationalError

from bot.crypto import Cipher, associated_data
from bot.domain import NAME_FIELD, NAME_MAX_LENGTH, PAGE_SIZE, ConnectionSummary, Health, Page, Status
from bot.providers.base import FieldValues, Provider, Verification
from bot.providers.registry import ProviderRegistry
from bot.redaction import Secret
from bot.services.interrupted import (
    CLAIM_LOCK_WAIT_MS,
    ClaimLost,
    ProcessOwner,
    end_claim,
    lock_wait_exceeded,
    release_quietly,
    still_claimed,
)
from bot.services.summaries import summarize
from bot.store import MasterKeyMoved, NameTaken
from bot.store.models import AuditEvent, Connection, Credential, InFlightKind, VerificationRecord
from bot.store.repositories import ConnectionRepository
from bot.store.uow import Database

__all__ = [
    "DATABASE_BUSY",
    "NAME_BEING_REGISTERED",
    "NAME_FIELD",
    "NAME_TAKEN",
    "ConnectionService",
    "CreateOutcome",
    "CreateRequest",
    "FormCheck",
    "Waiter",
]

logger = logging.getLogger(__name__)

FIRST_VERSION = 1
KEY_MOVED = (
    "The credentials work, but the bot's master key was rotated while it was running, so nothing was "
    "saved. Ask whoever runs the bot to restart it, then submit again."
)
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


@dataclass(frozen=True)
class Waiter:
    """Who waits for a verification's outcome, and the modal it will be shown in."""

    user_id: str
    view_id: str


@dataclass(frozen=True)
class FormCheck:
    """The offline verdict on a submitted form: cleaned values, or problems by field name."""

    name: str
    values: dict[str, str | Secret]
    problems: dict[str, str]
    claim_id: str | None = None
    """The in-flight verification that now holds the name, when the check was asked to claim it."""

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class CreateRequest:
    team_id: str
    user_id: str
    provider_key: str
    name: str
    values: FieldValues = field(repr=False)
    claim_id: str | None = None
    """The in-flight row of this verification (see ``check_form``); ended when the outcome is stored."""


@dataclass(frozen=True)
class CreateOutcome:
    """What happened to a create request: the verification, and the stored connection if any.

    ``problem`` is set when the credentials verified but could not be stored (the name was taken by
    someone else in the meantime); nothing was stored then either. ``abandoned`` means a sweep took
    the request's claim before it finished (it overran its deadline): its user was told it was
    interrupted, and nothing was stored."""

    verification: Verification
    connection_id: str | None = None
    problem: str | None = None
    abandoned: bool = False

    @property
    def stored(self) -> bool:
        return self.connection_id is not None


def _now() -> datetime:
    return datetime.now(UTC)


class _NameUnavailable(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConnectionService:
    def __init__(
        self,
        db: Database,
        cipher: Cipher,
        providers: ProviderRegistry,
        http: httpx.AsyncClient,
        clock: Callable[[], datetime] = _now,
        *,
        owner: ProcessOwner | None = None,
    ) -> None:
        self._db = db
        self._cipher = cipher
        self._providers = providers
        self._http = http
        self._clock = clock
        self._owner = owner or ProcessOwner.current()

    async def list_connections(self, team_id: str, page: int = 1) -> Page[ConnectionSummary]:
        """A page of the workspace's connections, newest first; an out-of-range page gives the last."""
        async with self._db.read() as session:
            connections = ConnectionRepository(session)
            # Clamp before querying: a page far past the end would overflow OFFSET.
            last_page = max(1, -(-(await connections.count(team_id)) // PAGE_SIZE))
            page = min(max(1, page), last_page)
            rows, total = await connections.list_page(team_id, page, PAGE_SIZE)
        return Page(
            items=tuple(summarize(row, self._providers) for row in rows),
            number=page,
            size=PAGE_SIZE,
            total=total,
        )

    async def check_form(
        self,
        team_id: str,
        provider: Provider,
        name: str,
        values: FieldValues,
        *,
        claim_for: Waiter | None = None,
    ) -> FormCheck:
        """Offline checks of a submission, plus one small query that tells whether the name is free.
        No provider call: this runs before Slack is answered.

        With ``claim_for``, a form that passes claims its name for the verification to come, in one
        transaction (see :meth:`_claim_name`), and the check returns the claim's id; without it, the
        name is only looked up."""
        name = " ".join(name.split())
        cleaned = provider.clean(values)
        # Offline but not always cheap (opening an encrypted private key runs its key derivation):
        # on a thread, so other requests' acks are not held up meanwhile.
        problems = await asyncio.to_thread(provider.validate, cleaned)
        if not name:
            example = f", e.g. “{provider.name_examples[0]}”" if provider.name_examples else ""
            problems[NAME_FIELD] = f"Give the connection a name{example}."
        elif len(name) > NAME_MAX_LENGTH:
            problems[NAME_FIELD] = f"Keep the name to {NAME_MAX_LENGTH} characters or fewer."
        elif _has_control_characters(name):
            # Invisible, and PostgreSQL cannot store NUL: say so rather than fail on saving.
            problems[NAME_FIELD] = "Remove the control characters from the name (they don't show)."
        elif claim_for is None:
            async with self._db.read() as session:
                taken = await ConnectionRepository(session).name_taken(team_id, name)
            if taken:
                problems[NAME_FIELD] = NAME_TAKEN
        if problems or claim_for is None:
            return FormCheck(name=name, values=cleaned, problems=problems)
        try:
            claim_id = await self._claim_name(team_id, provider, name, cleaned, claim_for)
        except _NameUnavailable as unavailable:
            return FormCheck(name=name, values=cleaned, problems={NAME_FIELD: unavailable.message})
        return FormCheck(name=name, values=cleaned, problems={}, claim_id=claim_id)

    async def _claim_name(
        self, team_id: str, provider: Provider, name: str, values: FieldValues, waiter: Waiter
    ) -> str:
        """Record the verification to come, reserving its name, then check that no connection holds
        the name: one transaction, the claim first.

        In that order no interleaving lets two submissions of one name through. A claim waits for
        (PostgreSQL) or queues behind (SQLite) any other transaction holding the same name, so of two
        at once the second fails; and a claim made after another verification stored its connection
        (ending its claim in that transaction) comes with a fresh snapshot under read committed, in
        which that connection is visible. Looking up the name first would leave a gap between the
        lookup and the claim."""
        now = self._clock()
        row = self._owner.claim(
            kind=InFlightKind.CREATE,
            team_id=team_id,
            user_id=waiter.user_id,
            provider=provider,
            name=name,
            view_id=waiter.view_id,
            config=provider.config_of(values),
            now=now,
        )
        try:
            async with self._db.transaction(lock_wait_ms=CLAIM_LOCK_WAIT_MS) as tx:
                if not await tx.in_flight.claim(row):
                    raise _NameUnavailable(NAME_BEING_REGISTERED)
                if await tx.connections.name_taken(team_id, name):
                    raise _NameUnavailable(NAME_TAKEN)  # leaving by an exception rolls the claim back
        except OperationalError as error:
            # Another transaction held the lock past the budget: nothing was written, say "busy".
            if lock_wait_exceeded(error):
                raise _NameUnavailable(DATABASE_BUSY) from None
            raise
        return row.id

    async def release_claim(self, claim_id: str | None) -> bool:
        """End the claim of a verification that stopped without an outcome; never raises.
        ``False`` when a sweep had taken it: its user was told, and must not be told again."""
        return await release_quietly(self._db, claim_id)

    async def claim_held(self, claim_id: str | None) -> bool:
        """Whether the claim is still this process's to end (no sweep took it and told its user)."""
        return await still_claimed(self._db, claim_id)

    async def create(self, request: CreateRequest) -> CreateOutcome:
        """Verify the credentials with the provider, then store them encrypted in one transaction.

        The provider call happens outside any transaction. A failed verification stores nothing
        but an audit event (no secret in it). The request's claim ends in the transaction that
        stores the outcome, or, if anything raises, right away; :class:`ClaimLost` is raised then
        if a sweep had taken the claim (its user was told the verification was interrupted)."""
        try:
            return await self._verify_and_store(request)
        except ClaimLost as lost:
            logger.warning(
                "a %s verification in team %s overran its deadline and was reported as interrupted; "
                "its outcome was dropped",
                request.provider_key,
                request.team_id,
            )
            verification = lost.verification
            if verification is None:  # a create always has one by then; for the type checker
                raise
            return CreateOutcome(verification=verification, abandoned=True)
        except Exception as error:
            if not await self.release_claim(request.claim_id):
                # A sweep took the claim and told the user it was interrupted: one answer is enough.
                raise ClaimLost(None) from error
            raise

    async def _verify_and_store(self, request: CreateRequest) -> CreateOutcome:
        provider = self._providers.get(request.provider_key)
        verification = await provider.verify(request.values, self._http)
        now = self._clock()
        if not verification.ok:
            async with self._db.transaction() as tx:
                await end_claim(tx, request.claim_id, verification)
                await tx.audit.add(
                    AuditEvent(
                        team_id=request.team_id,
                        actor=request.user_id,
                        action="connection.create_failed",
                        connection_id=None,
                        before_status=None,
                        after_status=None,
                        reason=verification.outcome.value,
                        details={"provider": provider.key, "name": request.name},
                        created_at=now,
                    )
                )
            return CreateOutcome(verification=verification)

        secrets = provider.secrets_of(request.values)
        connection = Connection(
            team_id=request.team_id,
            name=request.name,
            provider=provider.key,
            status=Status.PENDING_APPROVAL,
            health=Health.HEALTHY,
            config=provider.config_of(request.values),
            key_hint=provider.credential_hint(request.values),
            created_by=request.user_id,
            created_at=now,
            updated_at=now,
            last_verified_at=now,
            credential_version=FIRST_VERSION,
            credential_created_at=now,
        )
        try:
            async with self._db.transaction() as tx:
                await end_claim(tx, request.claim_id, verification)
                try:
                    await tx.connections.add(connection)
                except NameTaken:
                    # Only a connection stored without a claim can get here; the ended claim commits.
                    return CreateOutcome(
                        verification=verification,
                        problem=(
                            "The credentials work, but someone registered a connection named "
                            f"“{request.name}” a moment ago. Nothing was saved; try again with another name."
                        ),
                    )
                await tx.key_canary.require_sealing_key(self._cipher.key_id)
                for field_name, secret in secrets.items():
                    sealed = self._cipher.seal(
                        secret, associated_data(connection.id, field_name, FIRST_VERSION)
                    )
                    await tx.credentials.add(
                        Credential(
                            team_id=request.team_id,
                            connection_id=connection.id,
                            version=FIRST_VERSION,
                            field=field_name,
                            key_id=sealed.key_id,
                            nonce=sealed.nonce,
                            ciphertext=sealed.ciphertext,
                            created_at=now,
                        )
                    )
                await tx.verifications.add(
                    VerificationRecord.from_verification(
                        verification,
                        team_id=request.team_id,
                        connection_id=connection.id,
                        trigger="create",
                        actor=request.user_id,
                    )
                )
                await tx.audit.add(
                    AuditEvent(
                        team_id=request.team_id,
                        actor=request.user_id,
                        action="connection.created",
                        connection_id=connection.id,
                        before_status=None,
                        after_status=Status.PENDING_APPROVAL,
                        reason=None,
                        details={"provider": provider.key, "name": request.name},
                        created_at=now,
                    )
                )
        except MasterKeyMoved as moved:
            # The claim's end rolled back with the rest; release it on its own.
            await self.release_claim(request.claim_id)
            logger.error("not storing a new %s connection: %s", provider.key, moved)
            return CreateOutcome(verification=verification, problem=KEY_MOVED)
        logger.info(
            "connection %s created in team %s by %s (%s)",
            connection.id,
            request.team_id,
            request.user_id,
            provider.key,
        )
        return CreateOutcome(verification=verification, connection_id=connection.id)


def _has_control_characters(name: str) -> bool:
    return any(unicodedata.category(ch) == "Cc" for ch in name)
