"""``/connections status <name>``: one connection, its latest verifications, a rotation waiting."""

from __future__ import annotations

from bot.domain import Trigger
from bot.providers.base import Outcome
from bot.providers.registry import ProviderRegistry
from bot.services.lookup import find_connection
from bot.services.permissions import Refused
from bot.services.retests import HISTORY_SHOWN, HistoryEntry, StatusReport
from bot.services.rotations import RotationService
from bot.services.summaries import summarize
from bot.store import Database
from bot.store.uow import UnitOfWork

__all__ = ["StatusService"]


class StatusService:
    def __init__(self, db: Database, providers: ProviderRegistry, rotations: RotationService) -> None:
        self._db = db
        self._providers = providers
        self._rotations = rotations

    async def status(self, team_id: str, name: str) -> StatusReport | Refused:
        """The connection named ``name`` (the latest one, in any status) with its last
        verifications, newest first."""
        async with self._db.read() as session:
            tx = UnitOfWork(session)
            row = await find_connection(tx, team_id, name=name, any_status=True)
            if isinstance(row, Refused):
                return row
            records = await tx.verifications.recent(team_id, row.id, limit=HISTORY_SHOWN)
        history = tuple(
            HistoryEntry(
                at=record.created_at,
                trigger=_trigger(record.trigger),
                outcome=Outcome(record.outcome),
                summary=record.summary,
                latency_ms=record.latency_ms,
                actor=record.actor,
            )
            for record in records
        )
        return StatusReport(
            connection=summarize(row, self._providers),
            history=history,
            failing_since=row.failing_since,
            pending_rotation=await self._rotations.pending_for(team_id, row.id),
        )


def _trigger(value: str) -> Trigger:
    try:
        return Trigger(value)
    except ValueError:  # written by a newer bot sharing the database
        return Trigger.RETEST
