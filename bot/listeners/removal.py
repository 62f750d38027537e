"""Removing a connection: ``/connections remove <name>`` asks for confirmation with a Remove button;
the button (which carries Slack's confirm dialog) removes it, checked in full on every click."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from blocks.removal import remove_prompt, removed_message
from blocks.retests import refusal_message
from bot import ids
from bot.listeners.events import publish_home
from bot.listeners.replies import tell_user
from bot.listeners.rotation import announce_rotation
from bot.listeners.state import team_of
from bot.runtime import Services
from bot.services.approvals import Verdict
from bot.services.permissions import Refused
from bot.services.rotations import RotationDecision

__all__ = ["register", "remove_command"]

logger = logging.getLogger(__name__)

SAY_WHICH = "Say which connection to remove: `/connections remove &lt;name&gt;`."
NOTHING_CHANGED = "Something went wrong on our side, so nothing changed. Please try again in a minute."


def register(app: AsyncApp, services: Services) -> None:
    async def remove_clicked(
        ack: AsyncAck,
        action: dict[str, Any],
        body: dict[str, Any],
        client: AsyncWebClient,
        respond: AsyncRespond,
        context: AsyncBoltContext,
    ) -> None:
        await ack()
        team_id, actor = team_of(context, body), str(body["user"]["id"])
        connection_id = str(action.get("value", ""))

        async def remove() -> None:
            try:
                outcome = await services.removal.remove(team_id, connection_id, actor)
            except Exception:
                logger.exception("removing connection %s failed", connection_id)
                await tell_user(client, respond, actor, {"text": NOTHING_CHANGED})
                return
            if isinstance(outcome, Refused):
                await tell_user(client, respond, actor, refusal_message(outcome.message))
                return
            await tell_user(client, respond, actor, removed_message(outcome.connection, outcome.removed_by))
            if outcome.alert_channel and outcome.alert_ts:
                # Close the open alert: nobody needs to act on a connection that is gone.
                notice = removed_message(outcome.connection, outcome.removed_by)
                try:
                    await client.chat_postMessage(
                        channel=outcome.alert_channel, thread_ts=outcome.alert_ts, **notice
                    )
                    await client.chat_update(channel=outcome.alert_channel, ts=outcome.alert_ts, **notice)
                except Exception as exc:
                    logger.warning("could not close the alert about %s: %s", outcome.connection.id, exc)
            if outcome.cancelled_rotation is not None:
                cancelled = RotationDecision(Verdict.DECIDED, outcome.cancelled_rotation)
                await announce_rotation(services, client, cancelled, ("", ""))
            owner = outcome.connection.created_by
            if owner != actor:
                try:
                    await client.chat_postMessage(
                        channel=owner, **removed_message(outcome.connection, outcome.removed_by)
                    )
                except Exception as exc:
                    logger.warning("could not tell %s about the removal: %s", owner, exc)
            for user_id in dict.fromkeys((actor, owner)):
                try:
                    await publish_home(services, client, team_id, user_id)
                except Exception as exc:
                    logger.warning("could not republish the Home tab of %s: %s", user_id, exc)

        services.background.spawn(remove(), name="action:remove")

    app.action(ids.ACTION_REMOVE)(remove_clicked)


async def remove_command(
    services: Services, respond: AsyncRespond, team_id: str, user_id: str, name: str
) -> None:
    """Ask for confirmation; the Remove button does the removal."""
    if not name:
        await respond(response_type="ephemeral", text=SAY_WHICH)
        return
    target = await services.removal.may_remove(team_id, user_id, name=name)
    if isinstance(target, Refused):
        await respond(response_type="ephemeral", **refusal_message(target.message))
        return
    await respond(response_type="ephemeral", **remove_prompt(target))
