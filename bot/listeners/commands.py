"""``/connections`` and its sub-commands: the routing table from the first word of the text to the
function that answers it. Every answer comes after the ack, through the command's response_url."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from blocks.connections import help_message
from bot.listeners import audit, forms, listing, removal, retests
from bot.listeners.kit import Command, after_ack
from bot.notify.slack_calls import NOTHING_CHANGED

__all__ = ["COMMAND", "SUB_COMMANDS", "connections_command", "register"]

COMMAND = "/connections"


async def show_help(command: Command) -> None:
    unknown = None if command.sub == "help" else command.sub
    await command.tell(help_message(list(command.services.providers), unknown=unknown))


SUB_COMMANDS: dict[str, Callable[[Command], Coroutine[Any, Any, None]]] = {
    "": listing.show,
    "list": listing.show,
    "connect": forms.connect,
    "test": retests.retest,
    "status": retests.status,
    "rotate": forms.rotate,
    "remove": removal.confirm,
    "audit": audit.show,
    "help": show_help,
}
"""Anything else gets the help."""
FAILURES = {"test": retests.RETEST_FAILED}
"""What a user is told when answering breaks, where "nothing changed" would not be the whole truth."""


def register(app: AsyncApp) -> None:
    app.command(COMMAND)(connections_command)


async def connections_command(
    ack: AsyncAck,
    command: dict[str, Any],
    client: AsyncWebClient,
    respond: AsyncRespond,
    context: AsyncBoltContext,
) -> None:
    await ack()
    asked = Command.of(context, command, client, respond)
    answer = SUB_COMMANDS.get(asked.sub, show_help)
    failed = FAILURES.get(asked.sub, NOTHING_CHANGED)
    after_ack(asked, answer(asked), name=f"command:{asked.sub or 'list'}", failed=failed)
