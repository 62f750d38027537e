"""Deciding on approval requests: approve, reject, expire or cancel, exactly once, by an admin who
did not ask for it.

A request's subject is a new connection or new credentials for an active one (a rotation). Both go
through one path; they differ only in where the request's status lives and what a decision does
(:class:`_NewConnection`, :class:`_Rotation`).

Every click is checked here: the actor's admin rights (:class:`AdminPolicy`), the self-approval
rule, the time to live and the status. The transition is one conditional UPDATE (``… WHERE status =
'pending_approval'``) in the transaction of its effects and audit event, so concurrent clicks, a
stale message or an expiry make exactly one decision and the others learn who made it. The
connection row is locked first, as a removal locks it, so the two cannot deadlock.

With a secret store, an approval first writes the credential to the store, outside any
transaction, then decides as above and destroys every local copy in the same transaction; a store
that refuses leaves the request waiting, and a decision lost meanwhile takes the write back
(:mod:`bot.services.delivery`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar

from bot.crypto import Cipher
from bot.domain import (
    REASON_MAX_LENGTH,
    SYSTEM_ACTOR,
    AdminCheck,
    ApprovalRequest,
    ConfigChange,
    Decision,
    RequestKind,
    RotationStatus,
    Status,
    Trigger,
    Verdict,
    utcnow,
)
from bot.providers.registry import ProviderRegistry
from bot.services.admins import AdminPolicy
from bot.services.delivery import Delivered, Pending, deliver, elsewhere, prepare, undo
from bot.services.records import BATCH_SIZE, audit_event, checks_of, config_changes, summarize
from bot.store import Connection, Database, Rotation
from bot.store.uow import UnitOfWork
from bot.stores.base import SecretStore, StoredSecret, StoreError
from bot.stores.paths import PathTemplate

__all__ = ["BATCH_SIZE", "ApprovalService", "close_request", "connection_request", "pending_rotation"]

logger = logging.getLogger(__name__)

Decided = Status | RotationStatus


class _Subject:
    """What one kind of request is about: where its status lives, and what deciding does."""

    kind: ClassVar[RequestKind]
    pending: ClassVar[Decided]
    outcomes: ClassVar[Mapping[str, tuple[Decided, str]]]
    """The status and audit action of each decision ("approve", "reject", "expire", "cancel")."""

    def rows(self, tx: UnitOfWork) -> Any:
        return tx.connections if self.kind is RequestKind.CONNECTION else tx.rotations

    async def load(
        self, tx: UnitOfWork, team_id: str, request_id: str, *, lock: bool = False
    ) -> tuple[Any, Connection] | None:
        """The request's row and its connection (with ``lock``, locked until the transaction ends,
        and both read afresh)."""
        rotation = None
        if self.kind is RequestKind.ROTATION:
            rotation = await tx.rotations.get(team_id, request_id)
            if rotation is None:
                return None
            request_id = rotation.connection_id
        connection = await (tx.connections.lock if lock else tx.connections.get)(team_id, request_id)
        if connection is None:
            return None
        if rotation is not None and lock:  # read again once locked: a decision may have landed meanwhile
            await tx.session.refresh(rotation)
        return rotation or connection, connection

    async def apply(
        self,
        tx: UnitOfWork,
        row: Any,
        connection: Connection,
        to: Decided,
        now: datetime,
        why: str | None,
        delivered: Delivered | None,
    ) -> dict[str, Any]:
        """Do what a decision does besides the status, once its conditional UPDATE won; return its
        audit event's statuses before and after, and details. ``why``: the deciding admin's rights;
        ``delivered``: where an approval wrote the credential, when a secret store holds it."""
        raise NotImplementedError

    async def describe(
        self, tx: UnitOfWork, row: Any, connection: Connection, providers: ProviderRegistry
    ) -> ApprovalRequest:
        """The request as messages show it, with the checks of the verification that led to it."""
        rotation = isinstance(row, Rotation)
        if rotation:
            record = await tx.verifications.latest_with_trigger(row.team_id, connection.id, Trigger.ROTATION)
        else:
            records = await tx.verifications.recent(row.team_id, row.id, limit=1)
            record = records[0] if records else None
        return ApprovalRequest(
            kind=self.kind,
            id=row.id,
            team_id=row.team_id,
            connection=summarize(connection, providers),
            requested_by=row.requested_by if rotation else row.created_by,
            requested_at=row.created_at,
            status=row.status,
            checks=checks_of(record),
            decided_by=row.decided_by,
            decided_at=row.decided_at,
            reason=row.decision_reason,
            message_channel=row.approval_channel,
            message_ts=row.approval_ts,
            new_key_hint=row.key_hint if rotation else None,
            config_changes=_changes(row, connection, providers) if rotation else None,
        )


def _changes(
    row: Rotation, connection: Connection, providers: ProviderRegistry
) -> tuple[ConfigChange, ...] | None:
    """What approving changes besides the secret: while pending, from the connection as it is (what
    approval will overwrite); once decided, from what it was when the rotation was asked for."""
    pending = row.status is RotationStatus.PENDING_APPROVAL
    before = connection.config if pending else row.replaced_config
    return None if before is None else config_changes(providers.find(connection.provider), before, row.config)


class _NewConnection(_Subject):
    """A new connection waits as ``pending_approval``; deciding sets its status."""

    kind = RequestKind.CONNECTION
    pending = Status.PENDING_APPROVAL
    outcomes: ClassVar[Mapping[str, tuple[Decided, str]]] = {
        "approve": (Status.ACTIVE, "connection.approved"),
        "reject": (Status.REJECTED, "connection.rejected"),
        "expire": (Status.EXPIRED, "connection.expired"),
    }

    async def apply(
        self,
        tx: UnitOfWork,
        row: Any,
        connection: Connection,
        to: Decided,
        now: datetime,
        why: str | None,
        delivered: Delivered | None,
    ) -> dict[str, Any]:
        if to is not Status.ACTIVE:
            # Nobody can approve it any more, so its ciphertext would only be risk.
            await tx.credentials.delete_for(connection.id)
        details: dict[str, Any] = {} if why is None else {"admin": why}
        if to is Status.ACTIVE and delivered is not None:
            details.update(await _held_by_store(tx, connection, delivered))
        return {"before": Status.PENDING_APPROVAL, "after": to, "details": details}


class _Rotation(_Subject):
    """New credentials wait beside the old ones as a :class:`Rotation`; approval swaps them, any
    other end destroys the new ones. The connection stays active throughout."""

    kind = RequestKind.ROTATION
    pending = RotationStatus.PENDING_APPROVAL
    outcomes: ClassVar[Mapping[str, tuple[Decided, str]]] = {
        "approve": (RotationStatus.APPROVED, "connection.rotated"),
        "reject": (RotationStatus.REJECTED, "connection.rotation_rejected"),
        "expire": (RotationStatus.EXPIRED, "connection.rotation_expired"),
        "cancel": (RotationStatus.CANCELLED, "connection.rotation_cancelled"),
    }

    async def apply(
        self,
        tx: UnitOfWork,
        row: Any,
        connection: Connection,
        to: Decided,
        now: datetime,
        why: str | None,
        delivered: Delivered | None,
    ) -> dict[str, Any]:
        status = Status(connection.status)
        details: dict[str, Any] = {"rotation": row.id, "version": row.version}
        audited = {"before": status, "after": status, "details": details}
        if to is not RotationStatus.APPROVED:
            await tx.credentials.delete_for(connection.id, row.version)
            return audited
        connection.credential_version = row.version
        connection.key_hint = row.key_hint
        connection.config = dict(row.config)
        connection.credential_created_at = now
        connection.rotation_reminded_at = None
        # Re-test the new credential soon: a recovery then follows the usual path (and closes an
        # open alert) instead of being assumed here.
        connection.next_check_at = now
        connection.updated_at = now
        if delivered is None:
            await tx.credentials.delete_other_versions(connection.id, keep=row.version)
        else:
            details.update(await _held_by_store(tx, connection, delivered))
        return audited


async def _held_by_store(tx: UnitOfWork, connection: Connection, delivered: Delivered) -> dict[str, Any]:
    """Record that the store holds the connection's credential now, and destroy every local copy
    of it: with a store, an active credential lives in one place. What the audit event records."""
    connection.secret_store = delivered.store
    connection.secret_path = delivered.path
    connection.secret_version = delivered.version
    destroyed = await tx.credentials.delete_for(connection.id)
    return {
        "secret_store": delivered.store,
        "secret_path": delivered.path,
        "secret_version": delivered.version,
        "ciphertexts_destroyed": destroyed,
    }


SUBJECTS: dict[RequestKind, _Subject] = {subject.kind: subject for subject in (_NewConnection(), _Rotation())}


async def close_request(
    tx: UnitOfWork,
    providers: ProviderRegistry,
    kind: RequestKind,
    team_id: str,
    request_id: str,
    decision: str,
    *,
    actor: str,
    now: datetime,
    reason: str | None = None,
    why: str | None = None,
    audit_reason: str | None = None,
    delivered: Delivered | None = None,
) -> ApprovalRequest | None:
    """Close a waiting request as ``decision`` ("approve", "reject", "expire" or "cancel"), with what
    it does and its audit event, in ``tx``, if this call's conditional UPDATE wins; None when the
    request is gone or someone decided first. ``reason`` is kept and shown with the decision;
    ``audit_reason``, if given, is audited instead; ``why`` is the deciding admin's rights;
    ``delivered``, for an approval, where the secret store now holds the credential."""
    subject = SUBJECTS[kind]
    found = await subject.load(tx, team_id, request_id, lock=True)
    if found is None:
        return None
    row, connection = found
    to, action = subject.outcomes[decision]
    won = await subject.rows(tx).transition(
        row.team_id,
        row.id,
        subject.pending,
        to,
        decided_by=None if actor == SYSTEM_ACTOR else actor,
        decided_at=now,
        decision_reason=reason,
        updated_at=now,
    )
    if not won:
        return None
    await tx.session.refresh(row)
    if decision != "approve" or row is not connection:  # it destroys the request's or the replaced key
        providers.forget(connection.provider, (connection if decision == "approve" else row).key_hint)
    fields = await subject.apply(tx, row, connection, to, now, why, delivered)
    noted = reason if audit_reason is None else audit_reason
    await tx.audit.add(
        audit_event(team_id, actor, action, now, connection=connection, reason=noted, **fields)
    )
    return await subject.describe(tx, row, connection, providers)


async def describe_request(
    tx: UnitOfWork, providers: ProviderRegistry, kind: RequestKind, team_id: str, request_id: str
) -> ApprovalRequest | None:
    """The request as it is now, or None if there is no such request in the workspace."""
    subject = SUBJECTS[kind]
    found = await subject.load(tx, team_id, request_id)
    return None if found is None else await subject.describe(tx, *found, providers)


async def connection_request(tx: UnitOfWork, providers: ProviderRegistry, row: Connection) -> ApprovalRequest:
    """A connection as the request for its approval."""
    return await SUBJECTS[RequestKind.CONNECTION].describe(tx, row, row, providers)


async def pending_rotation(
    tx: UnitOfWork, providers: ProviderRegistry, team_id: str, connection_id: str
) -> ApprovalRequest | None:
    """The rotation of a connection waiting for approval, if any."""
    rotation = await tx.rotations.pending_for(team_id, connection_id)
    if rotation is None:
        return None
    return await describe_request(tx, providers, RequestKind.ROTATION, team_id, rotation.id)


@dataclass
class ApprovalService:
    """Reads, decides and expires approval requests; see the module docstring."""

    db: Database
    providers: ProviderRegistry
    policy: AdminPolicy
    ttl: timedelta
    allow_self_approval: bool = False
    clock: Callable[[], datetime] = utcnow
    batch_size: int = BATCH_SIZE
    store: SecretStore | None = None
    """Where approved credentials go; None keeps them sealed in the database (``local``)."""
    cipher: Cipher | None = None
    """Opens the pending credential to deliver it to ``store`` (needed with a store only)."""
    paths: PathTemplate = field(default_factory=PathTemplate)
    """``CONNECTIONS_SECRET_PATH``: where in ``store`` a new connection's secret goes."""

    def __post_init__(self) -> None:
        if self.ttl <= timedelta(0):
            raise ValueError("ttl must be positive")
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if self.store is not None and self.cipher is None:
            raise ValueError("a secret store needs the cipher that opens what it is to hold")

    async def describe(self, kind: RequestKind, team_id: str, request_id: str) -> ApprovalRequest | None:
        """The request as it is now (to post it, or to ask an admin why they reject it)."""
        async with self.db.read() as tx:
            return await describe_request(tx, self.providers, kind, team_id, request_id)

    async def record_message(
        self, kind: RequestKind, team_id: str, request_id: str, channel: str, ts: str
    ) -> None:
        """Remember where the request was posted, so decisions and expiry can update it in place."""
        async with self.db.transaction() as tx:
            found = await SUBJECTS[kind].load(tx, team_id, request_id)
            if found is not None:
                found[0].approval_channel, found[0].approval_ts = channel, ts

    async def may_decide(self, kind: RequestKind, team_id: str, request_id: str, actor: str) -> Decision:
        """Every check of a decision, without deciding (before asking a rejecting admin why):
        :attr:`Verdict.ALLOWED` with the request, or why not."""
        admin = await self.policy.check(actor)
        async with self.db.read() as tx:
            return await self._check(tx, kind, team_id, request_id, actor, admin)

    async def approve(self, kind: RequestKind, team_id: str, request_id: str, actor: str) -> Decision:
        return await self._decide(kind, team_id, request_id, actor, "approve", None)

    async def reject(
        self, kind: RequestKind, team_id: str, request_id: str, actor: str, reason: str
    ) -> Decision:
        reason = reason.strip()[:REASON_MAX_LENGTH].rstrip()
        if not reason:
            raise ValueError("a rejection needs a reason")
        return await self._decide(kind, team_id, request_id, actor, "reject", reason)

    async def expire_overdue(self, now: datetime | None = None) -> list[Decision]:
        """Expire the requests of every workspace that nobody decided on within the time to live,
        oldest first, at most ``batch_size`` of each kind per run. Each one expires in its own
        transaction: one that another caller decided first is left out, one that fails is logged
        and left for the next run."""
        now = self.clock() if now is None else now
        expired: list[Decision] = []
        for kind, subject in SUBJECTS.items():
            async with self.db.read() as tx:
                overdue = await subject.rows(tx).pending_created_before(now - self.ttl, self.batch_size)
            for row in overdue:
                try:
                    request = await self._expire(kind, row.team_id, row.id, now)
                except Exception:
                    logger.exception("could not expire %s request %s; the next run tries again", kind, row.id)
                    continue
                if request is not None:
                    logger.info("%s request %s (team %s) expired", kind, row.id, row.team_id)
                    expired.append(Decision(Verdict.DECIDED, request))
        return expired

    async def _expire(
        self, kind: RequestKind, team_id: str, request_id: str, now: datetime
    ) -> ApprovalRequest | None:
        hours = self.ttl.total_seconds() / 3600
        async with self.db.transaction() as tx:
            return await close_request(
                tx,
                self.providers,
                kind,
                team_id,
                request_id,
                "expire",
                actor=SYSTEM_ACTOR,
                now=now,
                audit_reason=f"not decided within {hours:g} hour{'' if hours == 1 else 's'}",
            )

    async def _decide(
        self, kind: RequestKind, team_id: str, request_id: str, actor: str, decision: str, reason: str | None
    ) -> Decision:
        admin = await self.policy.check(actor)
        now = self.clock()
        if admin.allowed:
            # The periodic job may not have run yet: a request past its time is expired, not decided.
            current = await self.describe(kind, team_id, request_id)
            if current is not None and current.pending and now - current.requested_at >= self.ttl:
                expired = await self._expire(kind, team_id, request_id, now)
                if expired is not None:
                    return Decision(Verdict.EXPIRED, expired, admin)
        if decision == "approve" and self.store is not None and self.cipher is not None:
            return await self._approve_into(
                self.store, self.cipher, kind, team_id, request_id, actor, admin, now
            )
        async with self.db.transaction() as tx:
            checked = await self._check(tx, kind, team_id, request_id, actor, admin)
            if checked.verdict is not Verdict.ALLOWED:
                return checked
            if decision == "approve" and kind is RequestKind.ROTATION:
                # Without a store, a connection a store still holds cannot take a local credential.
                found = await SUBJECTS[kind].load(tx, team_id, request_id)
                problem = None if found is None else elsewhere(found[1].secret_store, None)
                if problem is not None:
                    return Decision(Verdict.STORE_FAILED, checked.request, admin, problem)
            decided = await close_request(
                tx,
                self.providers,
                kind,
                team_id,
                request_id,
                decision,
                actor=actor,
                now=now,
                reason=reason,
                why=admin.why,
            )
            if decided is not None:
                return Decision(Verdict.DECIDED, decided, admin)
            request = await describe_request(tx, self.providers, kind, team_id, request_id)
            return Decision(Verdict.NOT_FOUND if request is None else Verdict.ALREADY_DECIDED, request, admin)

    async def _approve_into(
        self,
        store: SecretStore,
        cipher: Cipher,
        kind: RequestKind,
        team_id: str,
        request_id: str,
        actor: str,
        admin: AdminCheck,
        now: datetime,
    ) -> Decision:
        """Approve with a secret store (see :mod:`bot.services.delivery`): check and open the
        pending credential, write it to the store, then decide; take the write back if the
        decision was lost meanwhile. A store that refuses decides nothing (STORE_FAILED)."""
        async with self.db.read() as tx:
            checked = await self._check(tx, kind, team_id, request_id, actor, admin)
            if checked.verdict is not Verdict.ALLOWED:
                return checked
            found = await SUBJECTS[kind].load(tx, team_id, request_id)
            if found is None:
                return Decision(Verdict.NOT_FOUND, admin=admin)
            pending = await prepare(tx, cipher, store, self.paths, *found, actor, now)
        if isinstance(pending, str):
            return Decision(Verdict.STORE_FAILED, checked.request, admin, pending)
        try:
            try:
                delivered, previous = await deliver(store, pending)
            except StoreError as exc:
                logger.warning("%s request %s was not approved: %s", kind, request_id, exc)
                return Decision(Verdict.STORE_FAILED, checked.request, admin, str(exc))
            outcome, in_use = await self._decide_delivered(
                kind, team_id, request_id, actor, admin, now, pending, delivered
            )
            if not in_use:
                await self._take_back(store, pending, delivered, previous)
            return outcome
        finally:
            pending.fields.clear()  # the plain text lived for the store call only

    async def _decide_delivered(
        self,
        kind: RequestKind,
        team_id: str,
        request_id: str,
        actor: str,
        admin: AdminCheck,
        now: datetime,
        pending: Pending,
        delivered: Delivered,
    ) -> tuple[Decision, bool]:
        """The decision on a delivered credential, and whether the connection now uses what was
        written: a concurrent click on Approve may have won with the very same version, which must
        then stay."""
        async with self.db.transaction() as tx:
            checked = await self._check(tx, kind, team_id, request_id, actor, admin)
            decided = None
            if checked.verdict is Verdict.ALLOWED:
                decided = await close_request(
                    tx,
                    self.providers,
                    kind,
                    team_id,
                    request_id,
                    "approve",
                    actor=actor,
                    now=now,
                    why=admin.why,
                    delivered=delivered,
                )
            if decided is not None:
                logger.info("%s request %s approved into %s", kind, request_id, delivered.store)
                return Decision(Verdict.DECIDED, decided, admin), True
            connection = await tx.connections.get(team_id, pending.connection_id)
            in_use = (
                connection is not None
                and connection.secret_path == delivered.path
                and connection.secret_version == delivered.version
            )
            if checked.verdict is not Verdict.ALLOWED:
                return checked, in_use
            request = await describe_request(tx, self.providers, kind, team_id, request_id)
            verdict = Verdict.NOT_FOUND if request is None else Verdict.ALREADY_DECIDED
            return Decision(verdict, request, admin), in_use

    async def _take_back(
        self, store: SecretStore, pending: Pending, delivered: Delivered, previous: StoredSecret | None
    ) -> None:
        """Undo a delivery whose decision was lost; a version written back becomes the one the bot
        knows it wrote, so the next re-test does not take it for a change made outside the bot."""
        restored = await undo(store, pending, delivered, previous)
        if restored is None or delivered.replaced is None:
            return
        try:
            async with self.db.transaction() as tx:
                await tx.connections.repoint_secret(pending.connection_id, delivered.replaced, restored)
        except Exception as exc:
            logger.warning(
                "could not record the version written back to %s: %s", delivered.path, type(exc).__name__
            )

    async def _check(
        self, tx: UnitOfWork, kind: RequestKind, team_id: str, request_id: str, actor: str, admin: AdminCheck
    ) -> Decision:
        if not admin.allowed:
            verdict = Verdict.ADMIN_CHECK_FAILED if admin.failed_closed else Verdict.NOT_ADMIN
            return Decision(verdict, admin=admin)
        request = await describe_request(tx, self.providers, kind, team_id, request_id)
        if request is None:
            return Decision(Verdict.NOT_FOUND, admin=admin)
        if not request.pending:
            return Decision(Verdict.ALREADY_DECIDED, request, admin)
        if request.requested_by == actor and not self.allow_self_approval:
            return Decision(Verdict.SELF_APPROVAL, request, admin)
        return Decision(Verdict.ALLOWED, request, admin)
