"""Removing a connection in blocks: the prompt with its Remove button, the confirm dialog that
button carries wherever it appears, and the message once it is done.

Removal revokes the connection and destroys its stored credentials, so the button always asks
for confirmation in a Slack dialog first. Names are escaped; the button carries the connection id.
"""

from __future__ import annotations

from typing import Any

from slack_sdk.models.blocks import ButtonElement, ConfirmObject, PlainTextObject

from blocks.parts import (
    Block,
    actions,
    context,
    message,
    provider_text,
    quoted_name,
    reply,
    section,
    stored_in,
)
from blocks.text import one_line, truncate, unlinked, user_mention
from bot import ids
from bot.domain import ConnectionSummary

__all__ = ["REMOVE_CONFIRM_TITLE", "remove_button", "remove_confirm", "remove_prompt", "removed_message"]

REMOVE_CONFIRM_TITLE = "Remove connection?"
# The dialog's text holds at most 300 characters; the fixed sentence takes about 130.
_CONFIRM_NAME_MAX = 60


def remove_confirm(name: str) -> dict[str, Any]:
    """The confirm dialog of every Remove button: what removing ``name`` does, and that it is final.

    The text is plain text, which Slack shows as typed, so the name cannot mention or format, and
    :func:`blocks.text.unlinked`, so it cannot link."""
    shown = truncate(unlinked(one_line(name)), _CONFIRM_NAME_MAX)
    confirm = ConfirmObject(
        title=REMOVE_CONFIRM_TITLE,
        text=PlainTextObject(
            text=(f"“{shown}” will be revoked and its stored credentials destroyed. This cannot be undone."),
            emoji=False,
        ),
        confirm="Remove",
        deny="Cancel",
        style="danger",
    )
    return dict(confirm.to_dict())


def remove_button(connection: ConnectionSummary) -> ButtonElement:
    """The danger-styled Remove button, value = the connection id, behind :func:`remove_confirm`."""
    return ButtonElement(
        text="Remove",
        action_id=ids.ACTION_REMOVE,
        value=connection.id,
        style="danger",
        confirm=remove_confirm(connection.name),
    )


def remove_prompt(connection: ConnectionSummary) -> dict[str, Any]:
    """The ephemeral reply to ``/connections remove <name>``: what removing does (for a credential a
    secret store holds, that its secret there is deleted too), and the button."""
    name = quoted_name(connection.name)
    blocks: list[Block] = [
        section(
            f"*Remove {name}?* ({provider_text(connection)})\n"
            "Removing it revokes it and destroys its stored credentials; its name is then free "
            "again for a new connection. *This cannot be undone.*"
        ),
        actions(remove_button(connection)),
        context("Nothing changes until you click *Remove* and confirm."),
    ]
    if connection.secret_location is not None:
        # Whoever wired a pipeline to the secret learns it goes before anything breaks.
        deleted = (
            f"Its secret in {stored_in(connection.secret_location)} is deleted too: pipelines that "
            "read it there stop working."
        )
        blocks.insert(1, section(deleted))
    return message(f"Remove {name}?", blocks)


def removed_message(connection: ConnectionSummary, removed_by: str) -> dict[str, Any]:
    """Said once a connection is removed: by whom, and that its credentials are gone."""
    return reply(
        f"🚫 {quoted_name(connection.name)} ({provider_text(connection)}) was removed by "
        f"{user_mention(removed_by)}; its stored credentials were destroyed."
    )
