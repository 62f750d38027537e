"""Expiring approval requests on a schedule, and telling Slack about each one; and telling users
whose verification was interrupted (a crash, a kill, a missed deadline) that nothing was saved.

Not a Slack listener: nothing here answers a request. It lives beside the approval listeners
because it shows its outcome the same way they do, by updating the request message (or the
user's modal) in place, or sending a direct message.
"""

from __future__ import annotations

import logging

from slack_sdk.web.async_client import AsyncWebClient

from bot.listeners.approvals import announce_decision
from bot.listeners.rotation import announce_rotation, interrupted_rotation_news
from bot.listeners.views import deliver_result, interrupted_create_news
from bot.runtime import Services
from bot.scheduler import Periodic
from bot.services.interrupted import Interrupted
from bot.store.models import InFlightKind

__all__ = ["JOB_NAME", "announce_interrupted", "expire_and_announce", "recover_interrupted", "start_expiry"]

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


async def announce_interrupted(
    services: Services, client: AsyncWebClient, interrupted: list[Interrupted]
) -> None:
    """Replace each user's "Verifying…" with the news that nothing was saved (a direct message when
    the modal is gone). Never raises: one failed announcement must not stop the others."""
    for item in interrupted:
        provider = services.providers.find(item.provider_key)
        if provider is None:  # the provider was taken out of the bot since; its modal cannot be drawn
            logger.warning(
                "cannot tell %s about an interrupted %s verification", item.user_id, item.provider_key
            )
            continue
        if item.kind is InFlightKind.CREATE:
            view, fallback = interrupted_create_news(provider, item.name, item.config)
        else:
            view, fallback = interrupted_rotation_news(provider, item.name)
        try:
            await deliver_result(client, item.view_id, item.user_id, view, fallback)
        except Exception:
            logger.exception("could not tell %s about an interrupted verification", item.user_id)


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
