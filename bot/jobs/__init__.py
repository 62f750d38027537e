"""Everything the bot does on a timer, beside answering Slack. Jobs run only in a process that
serves Slack, from its start to its shutdown, and every replica runs them: the database decides
who does what (conditional updates, ``SKIP LOCKED`` claims), so each thing is done once.

* Expiry: requests past their time to live expire and are announced like a decision; unfinished
  verifications are cleared and their users told (see :mod:`bot.services.interrupted`).
* Health: re-test what the schedule says is due, announce what changed, remind owners of old keys.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING

from slack_sdk.web.async_client import AsyncWebClient

from bot.jobs.periodic import Periodic
from bot.notify.connections import announce_decision
from bot.notify.health import announcer, send_rotation_reminders
from bot.notify.results import announce_interrupted

if TYPE_CHECKING:
    from bot.runtime import Services

__all__ = [
    "EXPIRY_JOB",
    "HEALTH_JOB",
    "check_health",
    "expire_and_announce",
    "recover_interrupted",
    "start_jobs",
]

logger = logging.getLogger(__name__)

EXPIRY_JOB = "expire-approval-requests"
HEALTH_JOB = "health-checks"
TICK_MAX_SECONDS = 60.0
"""How often the schedule looks for due re-tests at most: a due check waits this long at worst."""
TICK_MIN_SECONDS = 0.5


def start_jobs(services: Services, client: AsyncWebClient) -> None:
    """Run every periodic job from now on; each is stopped first at shutdown (it is appended to
    ``services.stoppers``). Call it with the event loop that serves Slack running."""
    health_tick = tick_seconds(services.settings.retest_interval_minutes)
    for name, interval, work, jitter_share in (
        (EXPIRY_JOB, services.settings.expiry_check_seconds, expire_and_announce, 0.1),
        (HEALTH_JOB, health_tick, check_health, 0.2),
    ):
        # Each wait is stretched by up to that share of the interval, so replicas drift apart.
        job = Periodic(name, interval, partial(work, services, client), jitter=interval * jitter_share)
        job.start()
        services.stoppers.append(job.stop)


async def expire_and_announce(services: Services, client: AsyncWebClient) -> None:
    """Expire overdue approval requests and announce each (the request updated in place, the
    requester told), then tell the users of verifications past their deadline. A Slack failure is
    logged, never raised: the request is expired whether or not Slack heard of it."""
    for decision in await services.approvals.expire_overdue():
        try:
            await announce_decision(services, client, decision)
        except Exception:
            logger.exception(
                "could not announce the expiry of request %s", decision.request and decision.request.id
            )
    # A replica that died mid-verification and never came back leaves its users waiting: whoever
    # runs this job tells them once the verification's deadline has passed.
    await announce_interrupted(services, client, await services.interrupted.sweep_overdue())


async def recover_interrupted(services: Services, client: AsyncWebClient) -> None:
    """At start, before serving: clear the verifications this host's last run left unfinished (and
    any past their deadline), then tell their users in the background, so a slow Slack does not
    hold up the start."""
    try:
        interrupted = await services.interrupted.sweep_at_start()
    except Exception:  # the periodic job will find the overdue ones; serving matters more now
        logger.exception("could not look for verifications interrupted by the last stop")
        return
    if interrupted:
        logger.info("telling %d user(s) that their verification was interrupted", len(interrupted))
        services.background.spawn(
            announce_interrupted(services, client, interrupted), name="announce-interrupted"
        )


async def check_health(services: Services, client: AsyncWebClient) -> None:
    """One tick of the schedule: re-test what is due, announce changes, send rotation reminders."""
    await services.retests.run_due(on_result=announcer(services, client))
    await send_rotation_reminders(services, client)


def tick_seconds(interval_minutes: float) -> float:
    """How often to look for due re-tests: a small share of the interval, within bounds."""
    return min(TICK_MAX_SECONDS, max(TICK_MIN_SECONDS, interval_minutes * 60 / 100))
