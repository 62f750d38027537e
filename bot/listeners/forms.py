"""Opening the two forms: "Create <provider>" (Connect on a provider card, ``/connections connect
<provider>``, Try again after a failure) and "Rotate credentials" (Rotate on a status reply, an
alert or a reminder, ``/connections rotate <name>``). A trigger_id expires 3 seconds after the
click, so the modal opens before anything slower."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from blocks.approval import rotation_pending_reply
from blocks.connections import help_message
from blocks.forms import create_modal, rotation_modal
from blocks.parts import refusal_message
from bot import ids
from bot.domain import Refusal, Refused
from bot.listeners.kit import Asker, Click, Command, OnClick
from bot.notify.slack_calls import SLACK_ERRORS, slack_failure
from bot.payloads import FormDraft, form_metadata
from bot.providers.base import Provider
from bot.providers.registry import UnknownProvider

__all__ = [
    "connect",
    "connect_clicked",
    "create_form",
    "register",
    "rotate",
    "rotate_clicked",
    "try_again_clicked",
]

logger = logging.getLogger(__name__)

TRY_AGAIN_NOTICE = "Nothing was saved. Fix what the hints pointed at and submit again."
STALE_PROVIDER = "That provider is not offered any more. Run /connections to see the current list."
STALE_TRY_AGAIN = (
    "That form is out of date, so it could not be brought back. Close it and run /connections to start again."
)
SAY_WHICH = "Say which connection to rotate: `/connections rotate &lt;name&gt;`."
TOO_SLOW = "Checking your rights took too long, so the form could not open. Click Rotate again."
NO_APPROVALS = (
    "Rotations need an admin's approval, but approvals are not configured: ask whoever runs this "
    "bot to set CONNECTIONS_ADMIN_CHANNEL. Nothing changed."
)
PRECHECK_SECONDS = 1.5
"""The rights check before the rotation form opens must leave time for views.open."""


def register(app: AsyncApp) -> None:
    app.action(ids.ACTION_CONNECT)(OnClick(connect_clicked))
    app.action(ids.ACTION_TRY_AGAIN)(OnClick(try_again_clicked))
    app.action(ids.ACTION_ROTATE)(OnClick(rotate_clicked))


def create_form(provider: Provider, draft: FormDraft | None = None) -> dict[str, Any]:
    """The "Create <provider>" modal; from a draft (Try again), with its non-secret values kept."""
    if draft is None:
        return create_modal(provider, private_metadata=form_metadata(provider))
    return create_modal(
        provider,
        private_metadata=form_metadata(provider),
        initial=draft.initial_values(provider),
        notice=TRY_AGAIN_NOTICE,
    )


async def connect_clicked(click: Click) -> None:
    """Connect on a provider card: the provider's form."""
    try:
        provider = click.services.providers.get(click.value)
    except UnknownProvider:
        await click.tell({"text": STALE_PROVIDER})
        return
    await click.open_form(create_form(provider), what=provider.key, again="Click Connect again.")


async def connect(command: Command) -> None:
    """``/connections connect <provider>``: the provider's form, or the help if there is none."""
    providers = command.services.providers
    try:
        provider = providers.get(command.argument.lower())
    except UnknownProvider:
        await command.tell(help_message(list(providers), unknown=f"connect {command.argument}"))
        return
    again = f"Run `/connections connect {provider.key}` again."
    await command.open_form(create_form(provider), what=provider.key, again=again)


async def try_again_clicked(click: Click) -> None:
    """Try again on a failed result: the form back, with the non-secret fields it held."""
    draft = FormDraft.decode(click.value)
    provider = click.services.providers.find(draft.provider_key) if draft is not None else None
    if provider is None or draft is None or not click.view.get("id"):
        # Not a draft this bot wrote for a modal (garbled, or of a provider taken out since):
        # the form cannot be rebuilt from it, so say how to start over instead.
        await click.tell({"text": STALE_TRY_AGAIN})
        return
    form = create_form(provider, draft)
    await _show_form_again(click.client, str(click.view["id"]), click.view.get("hash"), form)


async def rotate_clicked(click: Click) -> None:
    """Rotate on a status reply, an alert or a reminder."""
    await _open_rotation_form(click, connection_id=click.value, again="Click Rotate again.")


async def rotate(command: Command) -> None:
    """``/connections rotate <name>``."""
    await _open_rotation_form(command, name=command.name, again="Run the command again.")


async def _open_rotation_form(
    asker: Asker,
    *,
    again: str,
    connection_id: str | None = None,
    name: str | None = None,
) -> None:
    """Check that the user may rotate the connection, then open the form (or say why not)."""
    services = asker.services
    if connection_id is None and not (name or "").strip():
        await asker.tell({"text": SAY_WHICH})
        return
    if not services.settings.admin_channel:
        # A rotation waits for an admin in that channel; without it, it would wait for nobody.
        await asker.tell({"text": NO_APPROVALS})
        return
    try:
        target = await asyncio.wait_for(
            services.submissions.may_rotate(
                asker.team_id, asker.user_id, connection_id=connection_id, name=name
            ),
            PRECHECK_SECONDS,
        )
    except TimeoutError:
        await asker.tell({"text": TOO_SLOW})
        return
    if isinstance(target, Refused):
        await asker.tell(await _refusal(asker, target))
        return
    connection = target.connection
    metadata = json.dumps(
        {"connection": connection.id, "provider": target.provider.key, "name": connection.name}
    )
    form = rotation_modal(target.provider, connection, private_metadata=metadata, initial=target.config)
    await asker.open_form(form, what="rotation", again=again)


async def _refusal(asker: Asker, refused: Refused) -> dict[str, Any]:
    """Why the form does not open; for a rotation already waiting, which one."""
    if refused.reason is Refusal.ROTATION_PENDING and refused.connection_id is not None:
        waiting = await asker.services.submissions.pending_rotation(asker.team_id, refused.connection_id)
        if waiting is not None:
            return rotation_pending_reply(waiting)
    return refusal_message(refused.message)


async def _show_form_again(
    client: AsyncWebClient, view_id: str, view_hash: str | None, form: dict[str, Any]
) -> None:
    """Bring the form back in place of a failed result. The hash makes Slack refuse the update if
    the modal changed since the click: a second click on Try again, whose first already brought
    the form back (the user is looking at it), so there is nothing left to do; neither is there
    when the user closed the modal meanwhile."""
    try:
        await client.views_update(view_id=view_id, hash=view_hash, view=form)
    except SLACK_ERRORS as exc:
        why = slack_failure(exc)
        level = logging.INFO if why in ("hash_conflict", "not_found") else logging.WARNING
        logger.log(level, "could not bring the form back after Try again: %s", why)
