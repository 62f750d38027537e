"""Expiring approval requests on a schedule, and telling Slack about each one.

Not a Slack listener: nothing here answers a request. It lives beside the approval listeners
because it shows its outcome the same way they do, by updating the request message in place and
sending the requester a direct message.
"""

from __future__ import annotations

import logging

from slack_sdk.web.async_client import AsyncWebClient

from bot.listeners.approvals import announce_decision
from bot.listeners.rotation import announce_rotation
from bot.runtime import Services
from bot.scheduler import Periodic

__all__ = ["JOB_NAME", "expire_and_announce", "start_expiry"]

logger = logging.getLogger(__name__)

JOB_NAME = "expire-approval-requests"
_JITTER_SHARE = 0.1
"""Each wait is stretched by up to this share of the interval, so replicas drift apart."""


async def expire_and_announce(services: Services, client: AsyncWebClient) -> None:
    """Expire overdue approval requests (of new connections and of rotations), then for each one
    update its request message in place ("Expired", no buttons) and tell the requester by direct
    message.

    A Slack failure is logged and never raised: the connection is expired whether or not Slack
    heard of it, and one failed announcement must not keep the others from being made.
    """
    for decision in await services.expiry.expire_overdue():
        try:
            await announce_decision(services, client, decision, ("", ""), team_id=decision.team_id)
        except Exception:
            connection_id = decision.connection.id if decision.connection else "?"
            logger.exception("could not announce the expiry of connection %s", connection_id)
    for rotation in await services.rotations.expire_overdue():
        try:
            await announce_rotation(services, client, rotation, ("", ""))
        except Exception:
            rotation_id = rotation.rotation.id if rotation.rotation else "?"
            logger.exception("could not announce the expiry of rotation %s", rotation_id)


def start_expiry(services: Services, client: AsyncWebClient) -> Periodic:
    """Run :func:`expire_and_announce` every ``CONNECTIONS_EXPIRY_CHECK_SECONDS`` from now on, and
    stop it first at shutdown (it is appended to ``services.stoppers``). Call it only from a
    process that serves Slack, with the event loop that serves it running."""
    interval = services.settings.expiry_check_seconds

    async def job() -> None:
        await expire_and_announce(services, client)

    periodic = Periodic(JOB_NAME, interval, job, jitter=interval * _JITTER_SHARE)
    periodic.start()
    services.stoppers.append(periodic.stop)
    return periodic
