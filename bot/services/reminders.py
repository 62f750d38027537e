"""Rotation reminders: the owner of a credential older than ``CONNECTIONS_ROTATION_DAYS`` is told,
at most once every ``every`` (a week by default), until the credential is rotated.

Reminders are claimed in the database (``FOR UPDATE SKIP LOCKED``, then marked as sent in the same
transaction), so several replicas running the job send each reminder once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.domain import Reminder, utcnow
from bot.providers.registry import ProviderRegistry
from bot.services.records import BATCH_SIZE, summarize
from bot.store import Database

__all__ = ["REMIND_EVERY", "RotationReminders"]

REMIND_EVERY = timedelta(days=7)


@dataclass
class RotationReminders:
    db: Database
    providers: ProviderRegistry
    rotation_days: float
    every: timedelta = REMIND_EVERY
    clock: Callable[[], datetime] = utcnow

    def __post_init__(self) -> None:
        if self.rotation_days <= 0:
            raise ValueError("rotation_days must be positive")

    async def due(self, limit: int = BATCH_SIZE) -> list[Reminder]:
        """Claim the reminders due now (marking them sent) and return them for sending."""
        now = self.clock()
        async with self.db.transaction() as tx:
            rows = await tx.connections.claim_rotation_reminders(
                now,
                older_than=now - timedelta(days=self.rotation_days),
                reminded_before=now - self.every,
                limit=limit,
            )
            return [
                Reminder(
                    team_id=row.team_id,
                    connection=summarize(row, self.providers),
                    age_days=(now - (row.credential_created_at or row.created_at)).days,
                )
                for row in rows
            ]
