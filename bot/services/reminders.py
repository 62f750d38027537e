"""Rotation reminders: the owner of a credential older than ``CONNECTIONS_ROTATION_DAYS`` is told,
at most once every ``every`` (a week by default), until the credential is rotated.

Reminders are claimed in the database (``FOR UPDATE SKIP LOCKED``, then marked as sent in the same
transaction), so several replicas running the job send each reminder once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bot.domain import ConnectionSummary
from bot.providers.registry import ProviderRegistry
from bot.services.summaries import summarize
from bot.store import Database

__all__ = ["REMIND_EVERY", "Reminder", "RotationReminders"]

REMIND_EVERY = timedelta(days=7)
BATCH_SIZE = 100


@dataclass(frozen=True)
class Reminder:
    team_id: str
    connection: ConnectionSummary
    age_days: int


def _now() -> datetime:
    return datetime.now(UTC)


class RotationReminders:
    def __init__(
        self,
        db: Database,
        providers: ProviderRegistry,
        *,
        rotation_days: float,
        every: timedelta = REMIND_EVERY,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        if rotation_days <= 0:
            raise ValueError("rotation_days must be positive")
        self._db = db
        self._providers = providers
        self._max_age = timedelta(days=rotation_days)
        self._every = every
        self._clock = clock

    @property
    def rotation_days(self) -> float:
        return self._max_age.total_seconds() / 86400

    async def due(self, limit: int = BATCH_SIZE) -> list[Reminder]:
        """Claim the reminders due now (marking them sent) and return them for sending."""
        now = self._clock()
        async with self._db.transaction() as tx:
            rows = await tx.connections.claim_rotation_reminders(
                now, older_than=now - self._max_age, reminded_before=now - self._every, limit=limit
            )
            return [
                Reminder(
                    team_id=row.team_id,
                    connection=summarize(row, self._providers),
                    age_days=(now - (row.credential_created_at or row.created_at)).days,
                )
                for row in rows
            ]
