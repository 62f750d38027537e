"""Removing a connection: ``/connections remove <name>`` asks for confirmation with a Remove button;
the button (which carries Slack's confirm dialog) removes it, checked in full on every click."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from blocks.parts import refusal_message
from blocks.removal import remove_prompt, removed_message
from bot import ids
from bot.domain import Refused
from bot.listeners.kit import Click, Command, OnClick
from bot.notify.connections import announce_removal

__all__ = ["confirm", "register", "remove_clicked"]

SAY_WHICH = "Say which connection to remove: `/connections remove &lt;name&gt;`."


def register(app: AsyncApp) -> None:
    app.action(ids.ACTION_REMOVE)(OnClick(remove_clicked))


async def confirm(command: Command) -> None:
    """``/connections remove <name>``: ask for confirmation; the Remove button does the removal."""
    if not command.name:
        await command.tell({"text": SAY_WHICH})
        return
    target = await command.services.removal.may_remove(command.team_id, command.user_id, name=command.name)
    await command.tell(
        refusal_message(target.message) if isinstance(target, Refused) else remove_prompt(target)
    )


async def remove_clicked(click: Click) -> None:
    """Remove, after Slack's confirm dialog: checked in full, then announced."""
    outcome = await click.services.removal.remove(click.team_id, click.value, click.user_id)
    if isinstance(outcome, Refused):
        await click.tell(refusal_message(outcome.message))
        return
    await click.tell(removed_message(outcome.connection, outcome.removed_by))
    await announce_removal(click.services, click.client, click.team_id, outcome)
