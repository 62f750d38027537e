"""Everything the bot does on a timer, beside answering Slack: expiring approval requests, telling
users whose verification a stop interrupted, re-testing on the health schedule, and reminding
owners of old keys. Jobs run only in a process that serves Slack, from start to shutdown."""

from __future__ import annotations

from typing import TYPE_CHECKING

from slack_sdk.web.async_client import AsyncWebClient

from bot.jobs.expiry import EXPIRY_JOB, expire_and_announce, recover_interrupted
from bot.jobs.health import HEALTH_JOB, check_health, tick_seconds
from bot.jobs.periodic import Periodic

if TYPE_CHECKING:
    from bot.runtime import Services

__all__ = [
    "EXPIRY_JOB",
    "HEALTH_JOB",
    "Periodic",
    "check_health",
    "expire_and_announce",
    "recover_interrupted",
    "start_jobs",
]

_EXPIRY_JITTER_SHARE = 0.1
_HEALTH_JITTER_SHARE = 0.2
"""Each wait is stretched by up to this share of the interval, so replicas drift apart."""


def start_jobs(services: Services, client: AsyncWebClient) -> list[Periodic]:
    """Run every periodic job from now on; each is stopped first at shutdown (it is appended to
    ``services.stoppers``). Call it with the event loop that serves Slack running."""
    expiry = services.settings.expiry_check_seconds
    tick = tick_seconds(services.settings.retest_interval_minutes)

    async def expire() -> None:
        await expire_and_announce(services, client)

    async def check() -> None:
        await check_health(services, client)

    jobs = [
        Periodic(EXPIRY_JOB, expiry, expire, jitter=expiry * _EXPIRY_JITTER_SHARE),
        Periodic(HEALTH_JOB, tick, check, jitter=tick * _HEALTH_JITTER_SHARE),
    ]
    for job in jobs:
        job.start()
        services.stoppers.append(job.stop)
    return jobs
