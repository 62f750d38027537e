"""The health schedule: re-test what is due, announce what changed, remind owners of old keys.

Every replica runs it; the database decides which replica re-tests which connection
(:meth:`bot.services.retests.RetestService.run_due`), so each due connection is re-tested, and
each change announced, once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from slack_sdk.web.async_client import AsyncWebClient

from bot.notify.health import announcer, send_rotation_reminders

if TYPE_CHECKING:
    from bot.runtime import Services

__all__ = ["HEALTH_JOB", "check_health", "tick_seconds"]

HEALTH_JOB = "health-checks"
TICK_MAX_SECONDS = 60.0
"""How often the schedule looks for due re-tests at most: a due check waits this long at worst."""
TICK_MIN_SECONDS = 0.5


async def check_health(services: Services, client: AsyncWebClient) -> None:
    """One tick of the schedule: re-test what is due, announce changes, send rotation reminders."""
    await services.retests.run_due(on_result=announcer(services, client))
    await send_rotation_reminders(services, client)


def tick_seconds(interval_minutes: float) -> float:
    """How often to look for due re-tests: a small share of the interval, within bounds."""
    return min(TICK_MAX_SECONDS, max(TICK_MIN_SECONDS, interval_minutes * 60 / 100))
