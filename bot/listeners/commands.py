"""``/connections`` and its sub-commands."""

from __future__ import annotations

import logging
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from blocks.connections import connections_message, help_message
from bot.listeners.audit import show_audit
from bot.listeners.removal import remove_command
from bot.listeners.replies import open_modal
from bot.listeners.retests import retest_command, status_command
from bot.listeners.rotation import open_rotation_form
from bot.listeners.state import form_view, parse_name, parse_page, team_of
from bot.providers.registry import UnknownProvider
from bot.runtime import Services

__all__ = ["COMMAND", "register"]

logger = logging.getLogger(__name__)

COMMAND = "/connections"


FAILED = "Something went wrong on our side, so nothing changed. Please try again in a minute."


async def _answering(work: Coroutine[Any, Any, None], respond: AsyncRespond, sub: str) -> None:
    """Run a sub-command's work; if it breaks, the user hears so instead of nothing."""
    try:
        await work
    except Exception:
        logger.exception("/connections %s failed", sub)
        try:
            await respond(response_type="ephemeral", text=FAILED)
        except Exception as exc:
            logger.warning("could not tell the user that /connections %s failed: %s", sub, type(exc).__name__)


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
        sub, argument = sub.lower(), argument.strip()
        team_id = team_of(context, command)
        user_id = str(command.get("user_id", ""))
        providers = list(services.providers)

        async def show_connections() -> None:
            listing = await services.connections.list_connections(team_id, parse_page(argument))
            await respond(
                response_type="ephemeral",
                **connections_message(
                    providers, listing, now=datetime.now(UTC), rotation_days=services.settings.rotation_days
                ),
            )

        async def open_form() -> None:
            try:
                provider = services.providers.get(argument.lower())
            except UnknownProvider:
                await respond(
                    response_type="ephemeral", **help_message(providers, unknown=f"connect {argument}")
                )
                return
            await open_modal(
                client,
                respond,
                user_id,
                trigger_id=command["trigger_id"],
                view=form_view(provider),
                what=provider.key,
                again=f"Run `/connections connect {provider.key}` again.",
            )

        async def show_help() -> None:
            unknown = None if sub == "help" else sub
            await respond(response_type="ephemeral", **help_message(providers, unknown=unknown))

        if sub in ("", "list"):
            work = show_connections()
        elif sub == "connect":
            work = open_form()
        elif sub == "audit":
            work = show_audit(services, respond, team_id, user_id, argument)
        elif sub == "test":
            work = retest_command(services, client, respond, team_id, user_id, parse_name(argument))
        elif sub == "status":
            work = status_command(services, respond, team_id, parse_name(argument))
        elif sub == "rotate":
            work = open_rotation_form(
                services,
                client,
                respond,
                team_id,
                user_id,
                str(command.get("trigger_id", "")),
                name=parse_name(argument),
            )
        elif sub == "remove":
            work = remove_command(services, respond, team_id, user_id, parse_name(argument))
        else:
            work = show_help()
        services.background.spawn(_answering(work, respond, sub or "list"), name=f"command:{sub or 'list'}")

    app.command(COMMAND)(connections_command)
