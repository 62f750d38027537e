"""Telling people what happened to a connection: its approval request posted to the admin channel,
a decision on it (the request updated in place, the requester told, the Home tabs that show it
republished), and its removal.

Slack failures are logged with what to fix and never raised: what happened stands whether or not
Slack heard of it, and one failed message must not keep the others from going out.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from slack_sdk.web.async_client import AsyncWebClient

from blocks.approval import decided_message, decision_dm, request_message
from blocks.home import home_view
from blocks.removal import removed_message
from bot.domain import Decision, Removal, RequestKind, Verdict
from bot.notify.slack_calls import SLACK_ERRORS, channel_failure, slack_failure

if TYPE_CHECKING:
    from bot.runtime import Services

__all__ = ["announce_decision", "announce_removal", "post_request", "publish_home", "update_request"]

logger = logging.getLogger(__name__)

_NOUNS = {RequestKind.CONNECTION: "approval", RequestKind.ROTATION: "rotation"}


async def publish_home(services: Services, client: AsyncWebClient, team_id: str, user_id: str) -> bool:
    """Build ``user_id``'s Home tab from the current data and publish it. Call it after anything
    that changes what a Home shows (a decision). Never raises: a tab that could not be built or
    published (False, and a warning) catches up when it is next opened, and whatever the caller
    did stands."""
    try:
        data = await services.queries.home(team_id, user_id)
        view = home_view(
            data,
            list(services.providers),
            now=datetime.now(UTC),
            rotation_days=services.settings.rotation_days,
        )
        await client.views_publish(user_id=user_id, view=view)
    except SLACK_ERRORS as exc:
        logger.warning("could not publish the Home tab of %s: %s", user_id, slack_failure(exc))
        return False
    except Exception:
        logger.exception("could not build the Home tab of %s", user_id)
        return False
    return True


async def post_request(
    services: Services, client: AsyncWebClient, kind: RequestKind, team_id: str, request_id: str
) -> bool:
    """Post the request to the admin channel and remember where; False (and an actionable log
    line) if there is no admin channel, no such request, or the channel refused it."""
    channel = services.settings.admin_channel
    if not channel:
        return False
    request = await services.approvals.describe(kind, team_id, request_id)
    if request is None:
        return False
    try:
        posted = await client.chat_postMessage(channel=channel, **request_message(request))
    except SLACK_ERRORS as exc:
        logger.warning(
            "could not post the %s request %s to CONNECTIONS_ADMIN_CHANNEL %s: %s",
            _NOUNS[kind],
            request_id,
            channel,
            channel_failure(exc, "CONNECTIONS_ADMIN_CHANNEL"),
        )
        return False
    await services.approvals.record_message(
        kind, team_id, request_id, str(posted["channel"]), str(posted["ts"])
    )
    return True


async def announce_decision(services: Services, client: AsyncWebClient, decision: Decision) -> None:
    """A request was decided (or expired, or cancelled): update it in place, tell the requester,
    and republish the Home tabs that list it: the requester's and the owner's and, for a new
    connection, those of whoever decided and of the listed admins (members of the admin group
    catch up when they next open Home, or on a stale click)."""
    request = decision.request
    if request is None or request.pending:
        return
    await update_request(client, decision)
    try:
        await client.chat_postMessage(channel=request.requested_by, **decision_dm(request))
    except Exception as exc:  # the decision stands; the rest of the announcement must still go out
        logger.warning("could not tell %s about the decision: %s", request.requested_by, slack_failure(exc))
    homes = [request.requested_by, request.connection.created_by]
    if request.kind is RequestKind.CONNECTION:
        homes += [request.decided_by or "", *sorted(services.settings.admins)]
    await _republish(services, client, request.team_id, homes)


async def update_request(client: AsyncWebClient, decision: Decision) -> None:
    """Show the decision in the request message, where the bot recorded posting it. Never where a
    payload says (a clicked message, a modal's private_metadata): those come from the client, and
    would let anyone who can send one make the bot rewrite another message. A request whose post
    was not recorded is told to its requester only."""
    request = decision.request
    if request is None or request.pending or request.decided_at is None:
        return
    channel, ts = request.message_channel, request.message_ts
    if not (channel and ts):
        return
    try:
        await client.chat_update(channel=channel, ts=ts, **decided_message(request))
    except Exception as exc:  # logged, never raised: the requester must still be told
        logger.warning(
            "could not update the %s request %s/%s: %s", _NOUNS[request.kind], channel, ts, slack_failure(exc)
        )


async def announce_removal(
    services: Services, client: AsyncWebClient, team_id: str, removal: Removal
) -> None:
    """Close the open alert about a removed connection (nobody needs to act on it any more),
    announce the rotation its removal cancelled, tell its owner if someone else removed it, and
    republish both Home tabs."""
    connection, actor = removal.connection, removal.removed_by
    notice = removed_message(connection, actor)
    if removal.alert_channel and removal.alert_ts:
        try:
            await client.chat_postMessage(channel=removal.alert_channel, thread_ts=removal.alert_ts, **notice)
            await client.chat_update(channel=removal.alert_channel, ts=removal.alert_ts, **notice)
        except Exception as exc:
            logger.warning("could not close the alert about %s: %s", connection.id, slack_failure(exc))
    if removal.cancelled_rotation is not None:
        await announce_decision(services, client, Decision(Verdict.DECIDED, removal.cancelled_rotation))
    if connection.created_by != actor:
        try:
            await client.chat_postMessage(channel=connection.created_by, **notice)
        except Exception as exc:
            logger.warning(
                "could not tell %s about the removal: %s", connection.created_by, slack_failure(exc)
            )
    await _republish(services, client, team_id, [actor, connection.created_by])


async def _republish(services: Services, client: AsyncWebClient, team_id: str, users: list[str]) -> None:
    for user_id in dict.fromkeys(u for u in users if u):
        await publish_home(services, client, team_id, user_id)
