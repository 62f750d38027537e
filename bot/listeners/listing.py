"""The workspace's connections: ``/connections`` (or ``list [page]``) and the Previous / Next
buttons under the list."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from slack_bolt.async_app import AsyncApp

from blocks.connections import connections_message
from bot import ids
from bot.listeners.kit import Click, Command, OnClick
from bot.payloads import parse_page
from bot.runtime import Services

__all__ = ["page_clicked", "register", "show"]


def register(app: AsyncApp) -> None:
    app.action(ids.ACTION_PAGE_PREVIOUS)(OnClick(page_clicked))
    app.action(ids.ACTION_PAGE_NEXT)(OnClick(page_clicked))


async def show(command: Command) -> None:
    """``/connections`` and ``/connections list <page>``."""
    await command.tell(await _page(command.services, command.team_id, parse_page(command.argument)))


async def page_clicked(click: Click) -> None:
    """Previous / Next under the list: it is an ephemeral reply, so there is no message to update,
    only its response_url."""
    page = await _page(click.services, click.team_id, parse_page(click.value))
    await click.respond(replace_original=True, **page)


async def _page(services: Services, team_id: str, page: int) -> dict[str, Any]:
    listing = await services.queries.list_connections(team_id, page)
    return connections_message(
        list(services.providers),
        listing,
        now=datetime.now(UTC),
        rotation_days=services.settings.rotation_days,
    )
