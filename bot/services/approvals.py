"""Deciding on connections: approve or reject, exactly once, by an admin who did not ask for it.

Every decision is checked here, on the server, for every click: the actor's admin rights (through
:class:`AdminPolicy`), the self-approval rule, and the connection's current status. The transition
itself is one conditional UPDATE in the same transaction as its audit event (and, for a rejection,
the destruction of the ciphertexts), so two admins clicking at once, a double click or a click on a
stale message produce exactly one decision; the others learn who made it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Protocol

from bot.domain import ConnectionSummary, Status
from bot.providers.base import Check
from bot.providers.registry import ProviderRegistry
from bot.services.admins import AdminCheck, AdminPolicy
from bot.services.summaries import summarize
from bot.store import AuditEvent, Connection, Database
from bot.store.repositories import ConnectionRepository
from bot.store.uow import UnitOfWork

__all__ = ["ApprovalService", "Decision", "Verdict", "describe"]

REASON_MAX_LENGTH = 500


class Verdict(enum.Enum):
    DECIDED = "decided"
    ALREADY_DECIDED = "already_decided"
    NOT_FOUND = "not_found"
    SELF_APPROVAL = "self_approval"
    NOT_ADMIN = "not_admin"
    ADMIN_CHECK_FAILED = "admin_check_failed"
    EXPIRED = "expired"
    """The request had outlived its time to live; this click expired it instead of deciding."""


@dataclass(frozen=True)
class Decision:
    """The answer to a click: what happened, and what the messages about it need to show."""

    verdict: Verdict
    connection: ConnectionSummary | None = None
    checks: tuple[Check, ...] = ()
    decided_by: str | None = None
    decided_at: datetime | None = None
    reason: str | None = None
    admin: AdminCheck | None = None
    approval_channel: str | None = None
    approval_ts: str | None = None
    team_id: str | None = None

    @property
    def status(self) -> Status | None:
        return self.connection.status if self.connection else None


class Expirer(Protocol):
    """Expires overdue requests (the expiry service), so a click never approves one."""

    def overdue(self, connection: Connection, now: datetime) -> bool: ...

    async def expire(self, team_id: str, connection_id: str, now: datetime) -> Decision | None: ...


def _now() -> datetime:
    return datetime.now(UTC)


class ApprovalService:
    def __init__(
        self,
        db: Database,
        providers: ProviderRegistry,
        policy: AdminPolicy,
        *,
        allow_self_approval: bool = False,
        expirer: Expirer | None = None,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self._expirer = expirer
        self._db = db
        self._providers = providers
        self._policy = policy
        self._allow_self_approval = allow_self_approval
        self._clock = clock

    @property
    def policy(self) -> AdminPolicy:
        return self._policy

    async def request(self, team_id: str, connection_id: str) -> Decision:
        """The pending connection and its checks, for posting the approval request."""
        async with self._db.transaction() as tx:
            connection = await tx.connections.get(team_id, connection_id)
            if connection is None:
                return Decision(Verdict.NOT_FOUND)
            return await self._describe(tx, connection, Verdict.DECIDED)

    async def record_request_message(self, team_id: str, connection_id: str, channel: str, ts: str) -> None:
        """Remember where the request was posted, so decisions and expiry can update it."""
        async with self._db.transaction() as tx:
            connection = await tx.connections.get(team_id, connection_id)
            if connection is not None:
                connection.approval_channel, connection.approval_ts = channel, ts

    async def may_decide(self, team_id: str, connection_id: str, actor: str) -> Decision:
        """Every check of a decision, without deciding (before asking a rejecting admin why)."""
        admin = await self._policy.check(actor)
        async with self._db.transaction() as tx:
            return await self._refusal(tx, team_id, connection_id, actor, admin) or Decision(
                Verdict.DECIDED, admin=admin
            )

    async def approve(self, team_id: str, connection_id: str, actor: str) -> Decision:
        return await self._decide(team_id, connection_id, actor, Status.ACTIVE, reason=None)

    async def reject(self, team_id: str, connection_id: str, actor: str, reason: str) -> Decision:
        reason = reason.strip()[:REASON_MAX_LENGTH].rstrip()
        if not reason:
            raise ValueError("a rejection needs a reason")
        return await self._decide(team_id, connection_id, actor, Status.REJECTED, reason=reason)

    async def _decide(
        self, team_id: str, connection_id: str, actor: str, to_status: Status, *, reason: str | None
    ) -> Decision:
        admin = await self._policy.check(actor)
        now = self._clock()
        if admin.allowed and self._expirer is not None:
            # The periodic job may not have run yet: a request past its time is expired, not decided.
            async with self._db.read() as session:
                current = await ConnectionRepository(session).get(team_id, connection_id)
            if current is not None and self._expirer.overdue(current, now):
                expired = await self._expirer.expire(team_id, connection_id, now)
                if expired is not None:
                    return replace(expired, verdict=Verdict.EXPIRED, admin=admin)
        async with self._db.transaction() as tx:
            refusal = await self._refusal(tx, team_id, connection_id, actor, admin)
            if refusal is not None:
                return refusal
            won = await tx.connections.transition(
                team_id,
                connection_id,
                Status.PENDING_APPROVAL,
                to_status,
                decided_by=actor,
                decided_at=now,
                decision_reason=reason,
                updated_at=now,
            )
            connection = await tx.connections.get(team_id, connection_id)
            if connection is None:
                return Decision(Verdict.NOT_FOUND, admin=admin)
            await tx.session.refresh(connection)
            if not won:
                return await self._describe(tx, connection, Verdict.ALREADY_DECIDED, admin=admin)
            if to_status is Status.REJECTED:
                # A rejected credential has no further use; keeping its ciphertext would only be risk.
                await tx.credentials.delete_for(connection.id)
            await tx.audit.add(
                AuditEvent(
                    team_id=team_id,
                    actor=actor,
                    action="connection.approved" if to_status is Status.ACTIVE else "connection.rejected",
                    connection_id=connection.id,
                    before_status=Status.PENDING_APPROVAL,
                    after_status=to_status,
                    reason=reason,
                    details={"name": connection.name, "provider": connection.provider, "admin": admin.why},
                    created_at=now,
                )
            )
            return await self._describe(tx, connection, Verdict.DECIDED, admin=admin)

    async def _refusal(
        self, tx: UnitOfWork, team_id: str, connection_id: str, actor: str, admin: AdminCheck
    ) -> Decision | None:
        if not admin.allowed:
            verdict = Verdict.ADMIN_CHECK_FAILED if admin.failed_closed else Verdict.NOT_ADMIN
            return Decision(verdict, admin=admin)
        connection = await tx.connections.get(team_id, connection_id)
        if connection is None:
            return Decision(Verdict.NOT_FOUND, admin=admin)
        if connection.status is not Status.PENDING_APPROVAL:
            return await self._describe(tx, connection, Verdict.ALREADY_DECIDED, admin=admin)
        if connection.created_by == actor and not self._allow_self_approval:
            return await self._describe(tx, connection, Verdict.SELF_APPROVAL, admin=admin)
        return None

    async def _describe(
        self, tx: UnitOfWork, connection: Connection, verdict: Verdict, *, admin: AdminCheck | None = None
    ) -> Decision:
        return await describe(tx, connection, self._providers, verdict, admin=admin)


async def describe(
    tx: UnitOfWork,
    connection: Connection,
    providers: ProviderRegistry,
    verdict: Verdict,
    *,
    admin: AdminCheck | None = None,
) -> Decision:
    """``connection`` as a :class:`Decision` with ``verdict``: its summary, the checks of its
    latest verification, who decided what and when, and where its request was posted."""
    records = await tx.verifications.recent(connection.team_id, connection.id, limit=1)
    checks = (
        tuple(Check(c["name"], bool(c["passed"]), str(c.get("detail", ""))) for c in records[0].checks)
        if records
        else ()
    )
    return Decision(
        verdict,
        connection=summarize(connection, providers),
        checks=checks,
        decided_by=connection.decided_by,
        decided_at=connection.decided_at,
        reason=connection.decision_reason,
        admin=admin,
        approval_channel=connection.approval_channel,
        approval_ts=connection.approval_ts,
        team_id=connection.team_id,
    )
