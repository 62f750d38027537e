"""The Events API: ``app_home_opened`` publishes the user's App Home tab."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from slack_bolt.async_app import AsyncApp, AsyncBoltContext, AsyncBoltRequest
from slack_sdk.web.async_client import AsyncWebClient

from bot.listeners.kit import services_of
from bot.notify.connections import publish_home
from bot.payloads import team_of

__all__ = ["home_opened", "is_retry", "register"]

logger = logging.getLogger(__name__)

RETRY_HEADER = "x-slack-retry-num"
"""Set by Slack on a redelivered event (over HTTP, and by Bolt in Socket Mode since 1.29)."""


def register(app: AsyncApp) -> None:
    app.event("app_home_opened")(home_opened)


async def home_opened(
    event: dict[str, Any],
    body: dict[str, Any],
    request: AsyncBoltRequest,
    context: AsyncBoltContext,
    client: AsyncWebClient,
) -> None:
    # Bolt acknowledges events itself; the tab is built after the answer, in the background.
    if event.get("tab") != "home" or not event.get("user"):
        return  # the Messages tab: nothing to publish
    if is_retry(request.headers):
        # Slack redelivers an event it thinks was lost (no 2xx within 3 s). The first delivery
        # reached us and publishes the same tab from the same data, so a second publish would
        # only cost a database read and a Web API call, and could land after a newer publish
        # (one made after a decision) with older content. If the first really failed, the next
        # time the user opens the tab sends a fresh event.
        logger.debug("ignoring a redelivered app_home_opened event")
        return
    services = services_of(context)
    home = publish_home(services, client, team_of(context, body), str(event["user"]))
    services.background.spawn(home, name="event:app_home_opened")


def is_retry(headers: Mapping[str, Sequence[str] | str]) -> bool:
    """Whether a request is Slack redelivering an event (``X-Slack-Retry-Num`` is present)."""
    return any(name.lower() == RETRY_HEADER and value for name, value in headers.items())
