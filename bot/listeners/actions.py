"""Buttons: Connect on a provider card, paging through connections, Try again after a failure."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from blocks.connections import connections_message
from bot import ids
from bot.listeners.replies import tell_user
from bot.listeners.state import FormDraft, form_view, parse_page, team_of
from bot.providers.registry import UnknownProvider
from bot.runtime import Services

__all__ = ["register"]

logger = logging.getLogger(__name__)

STALE_PROVIDER = "That provider is not offered any more. Run /connections to see the current list."


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
            client.views_open(
                trigger_id=body["trigger_id"],
                view=form_view(provider),
            ),
            name="action:connect",
        )

    async def page_clicked(
        ack: AsyncAck,
        action: dict[str, Any],
        body: dict[str, Any],
        respond: AsyncRespond,
        context: AsyncBoltContext,
    ) -> None:
        await ack()
        page = parse_page(str(action.get("value", "")))
        team_id = team_of(context, body)

        async def show_page() -> None:
            listing = await services.connections.list_connections(team_id, page)
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
    ) -> None:
        await ack()
        draft = FormDraft.decode(str(action.get("value", "")))
        view = body.get("view") or {}
        if draft is None or not view.get("id"):
            return
        try:
            provider = services.providers.get(draft.provider_key)
        except UnknownProvider:
            return
        services.background.spawn(
            client.views_update(
                view_id=view["id"],
                hash=view.get("hash"),
                view=form_view(provider, draft),
            ),
            name="action:try-again",
        )

    app.action(ids.ACTION_CONNECT)(connect_clicked)
    app.action(ids.ACTION_PAGE_PREVIOUS)(page_clicked)
    app.action(ids.ACTION_PAGE_NEXT)(page_clicked)
    app.action(ids.ACTION_TRY_AGAIN)(try_again_clicked)
