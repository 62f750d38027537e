"""Requests nobody decides and verifications nobody finishes.

Approval requests past their time to live expire, and each is announced as a decision would be.
A verification that a crash, a kill or a missed deadline left unfinished is cleared, and its user
told that nothing was stored: at start for what this host's last run left, and by every run of
the job for what any replica left past its deadline.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from slack_sdk.web.async_client import AsyncWebClient

from bot.notify.connections import announce_decision
from bot.notify.results import announce_interrupted

if TYPE_CHECKING:
    from bot.runtime import Services

__all__ = ["EXPIRY_JOB", "expire_and_announce", "recover_interrupted"]

logger = logging.getLogger(__name__)

EXPIRY_JOB = "expire-approval-requests"


async def expire_and_announce(services: Services, client: AsyncWebClient) -> None:
    """Expire overdue approval requests (of new connections and of rotations), then for each one
    update its request message in place ("Expired", no buttons) and tell the requester; then tell
    the users of verifications past their deadline.

    A Slack failure is logged and never raised: the request is expired whether or not Slack heard
    of it, and one failed announcement must not keep the others from being made."""
    for decision in await services.approvals.expire_overdue():
        try:
            await announce_decision(services, client, decision)
        except Exception:
            request_id = decision.request.id if decision.request else "?"
            logger.exception("could not announce the expiry of request %s", request_id)
    # A replica that died mid-verification and never came back leaves its users waiting: whoever
    # runs this job tells them once the verification's deadline has passed.
    await announce_interrupted(services, client, await services.interrupted.sweep_overdue())


async def recover_interrupted(services: Services, client: AsyncWebClient) -> None:
    """At start, before serving: clear the verifications that a previous run of this bot on this
    host left unfinished (and any past their deadline), then tell their users in the background,
    so Slack being slow does not hold up the start."""
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
