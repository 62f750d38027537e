"""Removing a connection: it becomes ``revoked``, its ciphertexts are destroyed, its name is free.

The owner (who added it) or an admin may remove an active connection. Everything happens in one
transaction: the conditional transition (``UPDATE … WHERE status = 'active'``, so a double click
removes once), the destruction of every stored credential version, the cancellation of a
rotation waiting for approval, and the audit event.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from bot.domain import ConnectionSummary, Status
from bot.providers.registry import ProviderRegistry
from bot.services.admins import AdminPolicy
from bot.services.lookup import find_connection
from bot.services.permissions import Refusal, Refused, owner_or_admin, owner_refusal
from bot.services.rotations import RotationSummary, cancel_pending
from bot.services.summaries import summarize
from bot.store import AuditEvent, Connection, Database
from bot.store.uow import UnitOfWork

__all__ = ["Removal", "RemovalService"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Removal:
    """A removed connection (status ``revoked``), and the rotation its removal cancelled."""

    connection: ConnectionSummary
    removed_by: str
    cancelled_rotation: RotationSummary | None = None
    alert_channel: str | None = None
    alert_ts: str | None = None
    """The open alert about the connection's failure, if any: the removal closes it."""


def _now() -> datetime:
    return datetime.now(UTC)


class RemovalService:
    def __init__(
        self,
        db: Database,
        providers: ProviderRegistry,
        policy: AdminPolicy,
        *,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self._db = db
        self._providers = providers
        self._policy = policy
        self._clock = clock

    async def may_remove(
        self, team_id: str, actor: str, *, connection_id: str | None = None, name: str | None = None
    ) -> ConnectionSummary | Refused:
        """The connection ``actor`` may remove, found by id or name, or why not."""
        async with self._db.read() as session:
            row = await find_connection(UnitOfWork(session), team_id, connection_id=connection_id, name=name)
        if isinstance(row, Refused):
            return row
        refused = _status_refusal(row)
        if refused is not None:
            return refused
        check = await owner_or_admin(self._policy, actor, row.created_by)
        if not check.allowed:
            return owner_refusal(check, "remove")
        return summarize(row, self._providers)

    async def remove(self, team_id: str, connection_id: str, actor: str) -> Removal | Refused:
        """Remove the connection if ``actor`` may (checked here, on every click)."""
        allowed = await self.may_remove(team_id, actor, connection_id=connection_id)
        if isinstance(allowed, Refused):
            return allowed
        now = self._clock()
        async with self._db.transaction() as tx:
            # Locked first (as rotation decisions do), and read for its open alert.
            before = await tx.connections.lock(team_id, connection_id)
            alert = (before.alert_channel, before.alert_ts) if before is not None else (None, None)
            won = await tx.connections.transition(
                team_id,
                connection_id,
                Status.ACTIVE,
                Status.REVOKED,
                next_check_at=None,
                alert_channel=None,
                alert_ts=None,
                updated_at=now,
            )
            row = await tx.connections.get(team_id, connection_id)
            if row is None:
                return Refused(Refusal.NOT_FOUND, "That connection no longer exists.")
            await tx.session.refresh(row)
            if not won:
                return _status_refusal(row) or Refused(Refusal.WRONG_STATUS, "Nothing changed.")
            cancelled = await cancel_pending(tx, self._providers, team_id, connection_id, actor, now)
            destroyed = await tx.credentials.delete_for(connection_id)
            await tx.audit.add(
                AuditEvent(
                    team_id=team_id,
                    actor=actor,
                    action="connection.removed",
                    connection_id=connection_id,
                    before_status=Status.ACTIVE,
                    after_status=Status.REVOKED,
                    reason=None,
                    details={
                        "name": row.name,
                        "provider": row.provider,
                        "ciphertexts_destroyed": destroyed,
                        **({"cancelled_rotation": cancelled.id} if cancelled else {}),
                    },
                    created_at=now,
                )
            )
            summary = summarize(row, self._providers)
        logger.info("connection %s removed by %s", connection_id, actor)
        return Removal(summary, actor, cancelled, alert_channel=alert[0], alert_ts=alert[1])


def _status_refusal(row: Connection) -> Refused | None:
    if row.status is Status.ACTIVE:
        return None
    if row.status is Status.PENDING_APPROVAL:
        return Refused(
            Refusal.WRONG_STATUS,
            f"“{row.name}” still awaits approval; an admin can reject it instead of removing it.",
        )
    return Refused(Refusal.WRONG_STATUS, f"“{row.name}” is already {row.status.label}; nothing to remove.")
