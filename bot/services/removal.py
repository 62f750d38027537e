"""Removing a connection: it becomes ``revoked``, its ciphertexts are destroyed, its name is free.

The owner (who added it) or an admin may remove an active connection. Everything happens in one
transaction: the conditional transition (``UPDATE … WHERE status = 'active'``, so a double click
removes once), the destruction of every stored credential version, the cancellation of a
rotation waiting for approval (through the approval path), and the audit event.

When a secret store holds the credential, it is deleted there first, outside any transaction (a
delete is idempotent, so a removal that stops halfway is finished by trying again); if the store
refuses, nothing is removed and the user is told why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from bot.domain import ConnectionSummary, Refusal, Refused, Removal, RequestKind, Status, utcnow
from bot.providers.registry import ProviderRegistry
from bot.services.admins import AdminPolicy
from bot.services.approvals import close_request
from bot.services.delivery import elsewhere
from bot.services.permissions import find_connection, owner_or_admin, owner_refusal
from bot.services.records import audit_event, summarize
from bot.store import Connection, Database
from bot.stores.base import SecretStore, StoreError

__all__ = ["RemovalService"]

logger = logging.getLogger(__name__)

CANCELLED = "the connection was removed"


@dataclass
class RemovalService:
    db: Database
    providers: ProviderRegistry
    admins: AdminPolicy
    clock: Callable[[], datetime] = utcnow
    store: SecretStore | None = None
    """The secret store the bot is configured with (None: ``local``)."""

    async def may_remove(
        self, team_id: str, actor: str, *, connection_id: str | None = None, name: str | None = None
    ) -> ConnectionSummary | Refused:
        """The connection ``actor`` may remove, found by id or name, or why not."""
        async with self.db.read() as tx:
            row = await find_connection(tx, team_id, connection_id=connection_id, name=name)
        if isinstance(row, Refused):
            return row
        refused = _status_refusal(row)
        if refused is not None:
            return refused
        check = await owner_or_admin(self.admins, actor, row.created_by)
        if not check.allowed:
            return owner_refusal(check, "remove")
        return summarize(row, self.providers)

    async def remove(self, team_id: str, connection_id: str, actor: str) -> Removal | Refused:
        """Remove the connection if ``actor`` may (checked here, on every click)."""
        allowed = await self.may_remove(team_id, actor, connection_id=connection_id)
        if isinstance(allowed, Refused):
            return allowed
        held = await self._delete_held(team_id, connection_id, allowed.name)
        if isinstance(held, Refused):
            return held
        now = self.clock()
        async with self.db.transaction() as tx:
            # Locked first (as decisions do), and read for its open alert.
            row = await tx.connections.lock(team_id, connection_id)
            if row is None:
                return Refused(Refusal.NOT_FOUND, "That connection no longer exists.")
            alert = (row.alert_channel, row.alert_ts)
            stored_at = {"secret_store": row.secret_store, "secret_path": row.secret_path}
            won = await tx.connections.transition(
                team_id,
                connection_id,
                Status.ACTIVE,
                Status.REVOKED,
                next_check_at=None,
                alert_channel=None,
                alert_ts=None,
                # The secret is gone from the store: nothing may point at it any more.
                secret_store=None,
                secret_path=None,
                secret_version=None,
                updated_at=now,
            )
            await tx.session.refresh(row)
            if not won:
                return _status_refusal(row) or Refused(Refusal.WRONG_STATUS, "Nothing changed.")
            destroyed = await tx.credentials.delete_for(connection_id)
            self.providers.forget(row.provider, row.key_hint)
            waiting = await tx.rotations.pending_for(team_id, connection_id)
            cancelled = None
            if waiting is not None:
                cancelled = await close_request(
                    tx,
                    self.providers,
                    RequestKind.ROTATION,
                    team_id,
                    waiting.id,
                    "cancel",
                    actor=actor,
                    now=now,
                    reason=CANCELLED,
                )
            await tx.audit.add(
                audit_event(
                    team_id,
                    actor,
                    "connection.removed",
                    now,
                    connection=row,
                    before=Status.ACTIVE,
                    after=Status.REVOKED,
                    details={
                        "ciphertexts_destroyed": destroyed,
                        **({"cancelled_rotation": cancelled.id} if cancelled else {}),
                        **({k: v for k, v in stored_at.items() if v is not None}),
                    },
                )
            )
            summary = summarize(row, self.providers)
        logger.info("connection %s removed by %s", connection_id, actor)
        return Removal(summary, actor, cancelled, alert_channel=alert[0], alert_ts=alert[1])

    async def _delete_held(self, team_id: str, connection_id: str, name: str) -> Refused | None:
        """Delete the connection's secret from the store that holds it, if one does: first, so
        that a removal never leaves a credential the platform can still read. Why not, if not."""
        async with self.db.read() as tx:
            row = await tx.connections.get(team_id, connection_id)
        if row is None or row.secret_store is None:
            return None
        moved = elsewhere(row.secret_store, self.store)
        if moved is not None:
            return Refused(Refusal.STORE_FAILED, f"“{name}” was not removed. {moved}", connection_id)
        assert self.store is not None and row.secret_path is not None
        try:
            await self.store.delete(row.secret_path)
        except StoreError as exc:
            logger.warning("connection %s was not removed: %s", connection_id, exc)
            return Refused(
                Refusal.STORE_FAILED,
                f"“{name}” was not removed: the secret store refused to delete its secret ({exc}). "
                "Nothing changed; try again once whoever runs the bot has fixed it.",
                connection_id,
            )
        logger.info("deleted the secret of connection %s from %s", connection_id, self.store.title)
        return None


def _status_refusal(row: Connection) -> Refused | None:
    if row.status is Status.ACTIVE:
        return None
    if row.status is Status.PENDING_APPROVAL:
        return Refused(
            Refusal.WRONG_STATUS,
            f"“{row.name}” still awaits approval; an admin can reject it instead of removing it.",
        )
    return Refused(Refusal.WRONG_STATUS, f"“{row.name}” is already {row.status.label}; nothing to remove.")
