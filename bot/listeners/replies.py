"""Replying to one user about their click, wherever the click came from."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

__all__ = ["tell_user"]

logger = logging.getLogger(__name__)


async def tell_user(
    client: AsyncWebClient, respond: AsyncRespond, user_id: str, reply: dict[str, Any]
) -> None:
    """A reply for the clicker alone: ephemeral through the clicked message's response_url. A
    click on App Home has no response_url and no channel to post an ephemeral in, so a DM."""
    if respond.response_url:
        await respond(response_type="ephemeral", replace_original=False, **reply)
        return
    try:
        await client.chat_postMessage(channel=user_id, **reply)
    except SlackApiError as exc:
        logger.warning("could not reply to %s: %s", user_id, exc.response.get("error"))
