"""Buttons: Connect on a provider card, paging through connections, Try again after a failure."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from blocks.connections import connections_message
from bot import ids
from bot.listeners.replies import SLACK_ERRORS, open_modal, slack_failure, tell_user
from bot.listeners.state import FormDraft, form_view, parse_page, team_of
from bot.providers.registry import UnknownProvider
from bot.runtime import Services

__all__ = ["register"]

logger = logging.getLogger(__name__)

LIST_FAILED = "Something went wrong on our side, so nothing changed. Please try again in a minute."
STALE_PROVIDER = "That provider is not offered any more. Run /connections to see the current list."
STALE_TRY_AGAIN = (
    "That form is out of date, so it could not be brought back. Close it and run /connections to start again."
)


def register(app: AsyncApp, services: Services) -> None:
    async def connect_clicked(
        ack: AsyncAck,
        action: dict[str, Any],
        body: dict[str, Any],
        client: AsyncWebClient,
        respond: AsyncRespond,
    ) -> None:
        await ack()
        try:
            provider = services.providers.get(str(action.get("value", "")))
        except UnknownProvider:
            services.background.spawn(
                tell_user(client, respond, str(body["user"]["id"]), {"text": STALE_PROVIDER}),
                name="action:connect:stale",
            )
            return
        # A trigger_id expires 3 seconds after the click: the modal opens before anything else.
        services.background.spawn(
            open_modal(
                client,
                respond,
                str(body["user"]["id"]),
                trigger_id=body["trigger_id"],
                view=form_view(provider),
                what=provider.key,
                again="Click Connect again.",
            ),
            name="action:connect",
        )

    async def page_clicked(
        ack: AsyncAck,
        action: dict[str, Any],
        body: dict[str, Any],
        client: AsyncWebClient,
        respond: AsyncRespond,
        context: AsyncBoltContext,
    ) -> None:
        await ack()
        page = parse_page(str(action.get("value", "")))
        team_id = team_of(context, body)

        async def show_page() -> None:
            try:
                listing = await services.connections.list_connections(team_id, page)
            except Exception:
                logger.exception("listing connections failed")
                await tell_user(client, respond, str(body["user"]["id"]), {"text": LIST_FAILED})
                return
            # The list is an ephemeral reply: there is no message to update, only its response_url.
            await respond(
                replace_original=True,
                **connections_message(
                    list(services.providers),
                    listing,
                    now=datetime.now(UTC),
                    rotation_days=services.settings.rotation_days,
                ),
            )

        services.background.spawn(show_page(), name="action:page")

    async def try_again_clicked(
        ack: AsyncAck,
        action: dict[str, Any],
        body: dict[str, Any],
        client: AsyncWebClient,
        respond: AsyncRespond,
    ) -> None:
        await ack()
        draft = FormDraft.decode(str(action.get("value", "")))
        view = body.get("view") or {}
        provider = services.providers.find(draft.provider_key) if draft is not None else None
        if provider is None or draft is None or not view.get("id"):
            # Not a draft this bot wrote for a modal (garbled, or of a provider taken out since):
            # the form cannot be rebuilt from it, so say how to start over instead.
            services.background.spawn(
                tell_user(client, respond, str(body["user"]["id"]), {"text": STALE_TRY_AGAIN}),
                name="action:try-again:stale",
            )
            return
        services.background.spawn(
            _show_form_again(client, str(view["id"]), view.get("hash"), form_view(provider, draft)),
            name="action:try-again",
        )

    app.action(ids.ACTION_CONNECT)(connect_clicked)
    app.action(ids.ACTION_PAGE_PREVIOUS)(page_clicked)
    app.action(ids.ACTION_PAGE_NEXT)(page_clicked)
    app.action(ids.ACTION_TRY_AGAIN)(try_again_clicked)


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
