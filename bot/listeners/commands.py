"""``/connections`` and its sub-commands."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from blocks.connections import connections_message, help_message
from blocks.modal import create_modal
from bot.listeners.state import form_metadata
from bot.providers.registry import UnknownProvider
from bot.runtime import Services

__all__ = ["register"]

logger = logging.getLogger(__name__)

COMMAND = "/connections"


def register(app: AsyncApp, services: Services) -> None:
    async def connections_command(
        ack: AsyncAck,
        command: dict[str, Any],
        respond: AsyncRespond,
        client: AsyncWebClient,
        context: AsyncBoltContext,
    ) -> None:
        await ack()
        sub, _, argument = (command.get("text") or "").strip().partition(" ")
        sub = sub.lower()
        argument = argument.strip()
        providers = list(services.providers)
        if sub in ("", "list"):
            page = int(argument) if argument.isdigit() else 1
            listing = await services.connections.list_connections(_team(context, command), page)
            await respond(response_type="ephemeral", **connections_message(providers, listing))
        elif sub == "connect":
            try:
                provider = services.providers.get(argument.lower())
            except UnknownProvider:
                await respond(
                    response_type="ephemeral", **help_message(providers, unknown=f"connect {argument}")
                )
                return
            await client.views_open(
                trigger_id=command["trigger_id"],
                view=create_modal(provider, private_metadata=form_metadata(provider)),
            )
        elif sub == "help":
            await respond(response_type="ephemeral", **help_message(providers))
        else:
            await respond(response_type="ephemeral", **help_message(providers, unknown=sub))

    app.command(COMMAND)(connections_command)


def _team(context: AsyncBoltContext, command: dict[str, Any]) -> str:
    team = context.team_id or command.get("team_id")
    if not team:
        raise ValueError("a slash command without a team id")
    return str(team)
