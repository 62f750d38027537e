"""Expiry: approval requests that nobody decided on in time.

A connection still ``pending_approval`` when its time to live (``CONNECTIONS_APPROVAL_TTL_HOURS``,
counted from its creation) has passed becomes ``expired``. Each one moves in its own transaction:
the conditional transition, the destruction of its ciphertexts and the audit event land together
or not at all. The transition is the same ``UPDATE … WHERE status = 'pending_approval'`` as a
decision's, so an admin clicking Approve at that moment, or another replica running expiry at
the same time, cannot both win: whoever loses leaves the connection alone, and only the caller
whose transition won gets it back to announce.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from bot.domain import Status
from bot.providers.registry import ProviderRegistry
from bot.services.approvals import Decision, Verdict, describe
from bot.store import AuditEvent, Connection, Database
from bot.store.repositories import ConnectionRepository
from bot.store.uow import UnitOfWork

__all__ = ["BATCH_SIZE", "SYSTEM_ACTOR", "ExpiryService"]

logger = logging.getLogger(__name__)

BATCH_SIZE = 100
"""The most connections one run expires; a longer backlog is worked off by the following runs."""
SYSTEM_ACTOR = "system"
"""The audit trail's actor for changes nobody in Slack made."""


def _now() -> datetime:
    return datetime.now(UTC)


class ExpiryService:
    """Expires overdue approval requests of every workspace; see the module docstring."""

    def __init__(
        self,
        db: Database,
        providers: ProviderRegistry,
        *,
        ttl: timedelta,
        clock: Callable[[], datetime] = _now,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        if ttl <= timedelta(0):
            raise ValueError("ttl must be positive")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._db = db
        self._providers = providers
        self._ttl = ttl
        self._clock = clock
        self._batch_size = batch_size

    @property
    def ttl(self) -> timedelta:
        return self._ttl

    async def expire_overdue(self, now: datetime | None = None) -> list[Decision]:
        """Expire up to ``batch_size`` connections created more than ``ttl`` before ``now`` (by
        default the clock's time) and still awaiting approval, oldest first.

        Returns one :class:`Decision` (verdict ``DECIDED``, status ``expired``, ``decided_by``
        ``None``) per connection this call expired, with where its request was posted. One that
        another caller decided or expired first is left out. A connection that fails to expire is
        logged and left for the next run, so it cannot hold back the rest of the batch.
        """
        now = self._clock() if now is None else now
        async with self._db.read() as session:
            overdue = await ConnectionRepository(session).pending_created_before(
                now - self._ttl, self._batch_size
            )
        expired: list[Decision] = []
        for candidate in overdue:
            try:
                decision = await self._expire(candidate, now)
            except Exception:
                logger.exception("could not expire connection %s; the next run tries again", candidate.id)
                continue
            if decision is not None:
                logger.info(
                    "approval request for connection %s (team %s) expired", candidate.id, candidate.team_id
                )
                expired.append(decision)
        return expired

    def overdue(self, connection: Connection, now: datetime) -> bool:
        """Whether a pending request has outlived its time to live."""
        return connection.status is Status.PENDING_APPROVAL and now - connection.created_at >= self._ttl

    async def expire(self, team_id: str, connection_id: str, now: datetime) -> Decision | None:
        """Expire one request now (a click found it overdue before the periodic job did); the
        decision if this call's transition won, else None."""
        async with self._db.transaction() as tx:
            return await self._expire_in(tx, team_id, connection_id, now)

    async def _expire(self, candidate: Connection, now: datetime) -> Decision | None:
        async with self._db.transaction() as tx:
            return await self._expire_in(tx, candidate.team_id, candidate.id, now)

    async def _expire_in(
        self, tx: UnitOfWork, team_id: str, connection_id: str, now: datetime
    ) -> Decision | None:
        won = await tx.connections.transition(
            team_id,
            connection_id,
            Status.PENDING_APPROVAL,
            Status.EXPIRED,
            decided_by=None,
            decided_at=now,
            decision_reason=None,
            updated_at=now,
        )
        if not won:
            return None
        connection = await tx.connections.get(team_id, connection_id)
        if connection is None:  # the winning UPDATE holds the row; this is for the type checker
            return None
        # Nobody can approve an expired request, so its ciphertext would only be risk.
        await tx.credentials.delete_for(connection_id)
        await tx.audit.add(
            AuditEvent(
                team_id=team_id,
                actor=SYSTEM_ACTOR,
                action="connection.expired",
                connection_id=connection_id,
                before_status=Status.PENDING_APPROVAL,
                after_status=Status.EXPIRED,
                reason=f"not decided within {_hours(self._ttl)}",
                details={"name": connection.name, "provider": connection.provider},
                created_at=now,
            )
        )
        return await describe(tx, connection, self._providers, Verdict.DECIDED)


def _hours(ttl: timedelta) -> str:
    hours = ttl.total_seconds() / 3600
    return f"{hours:g} hour" if hours == 1 else f"{hours:g} hours"
