"""Events API: ``app_home_opened`` publishes the user's App Home tab; ``publish_home`` republishes it."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from slack_bolt.async_app import AsyncApp, AsyncBoltContext, AsyncBoltRequest
from slack_sdk.web.async_client import AsyncWebClient

from blocks.home import home_view
from bot.listeners.replies import SLACK_ERRORS, slack_failure
from bot.listeners.state import team_of
from bot.runtime import Services

__all__ = ["publish_home", "register"]

logger = logging.getLogger(__name__)

RETRY_HEADER = "x-slack-retry-num"
"""Set by Slack on a redelivered event (over HTTP, and by Bolt in Socket Mode since 1.29)."""


def register(app: AsyncApp, services: Services) -> None:
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
        team_id, user_id = team_of(context, body), str(event["user"])
        services.background.spawn(
            publish_home(services, client, team_id, user_id), name="event:app_home_opened"
        )

    app.event("app_home_opened")(home_opened)


def is_retry(headers: Mapping[str, Sequence[str] | str]) -> bool:
    """Whether a request is Slack redelivering an event (``X-Slack-Retry-Num`` is present)."""
    return any(name.lower() == RETRY_HEADER and value for name, value in headers.items())


async def publish_home(services: Services, client: AsyncWebClient, team_id: str, user_id: str) -> bool:
    """Build ``user_id``'s Home tab from the current data and publish it; False (and a warning)
    when Slack refuses or cannot be reached. Call it after anything that changes what a Home
    shows (a decision)."""
    data = await services.home.home_for(team_id, user_id)
    try:
        await client.views_publish(
            user_id=user_id,
            view=home_view(
                data,
                list(services.providers),
                now=datetime.now(UTC),
                rotation_days=services.settings.rotation_days,
            ),
        )
    except SLACK_ERRORS as exc:
        logger.warning("could not publish the Home tab of %s: %s", user_id, slack_failure(exc))
        return False
    return True
