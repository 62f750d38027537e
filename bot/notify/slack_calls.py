"""Calls to Slack on one user's behalf, and what to say when one fails: a reply to a click or a
command wherever it came from, a modal opened without leaving the user in silence when Slack
refuses, and the few words a log line gives a failed call."""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
from slack_bolt.async_app import AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

__all__ = ["NOTHING_CHANGED", "SLACK_ERRORS", "channel_failure", "open_modal", "slack_failure", "tell_user"]

logger = logging.getLogger(__name__)

NOTHING_CHANGED = "Something went wrong on our side, so nothing changed. Please try again in a minute."
"""Told to a user whose request broke on our side (the traceback goes to the log)."""

_TRIGGER_GONE = frozenset({"expired_trigger_id", "exchanged_trigger_id"})

SLACK_ERRORS = (SlackApiError, aiohttp.ClientError, OSError, TimeoutError)
"""What a Web API call raises when Slack refuses it or cannot be reached (after the client's own
retries): expected trouble, reported in one log line rather than a traceback."""

_CHANNEL_ADVICE = {
    "channel_not_found": "check that {setting} holds the channel's id (C…), not its name",
    "not_in_channel": "invite the bot to that channel",
    "is_archived": "unarchive the channel or set {setting} to another one",
    "ratelimited": "Slack kept the bot waiting for longer than it waits",
}


async def tell_user(
    client: AsyncWebClient, respond: AsyncRespond, user_id: str, reply: dict[str, Any]
) -> None:
    """A reply for the clicker alone: ephemeral through the clicked message's response_url. A
    click on App Home has no response_url and no channel to post an ephemeral in, so a DM.
    Never raises: a reply that cannot be delivered is logged, and the caller goes on."""
    if respond.response_url:
        try:
            await respond(response_type="ephemeral", replace_original=False, **reply)
        except Exception as exc:
            logger.warning("could not reply to %s through the response_url: %s", user_id, slack_failure(exc))
        return
    try:
        await client.chat_postMessage(channel=user_id, **reply)
    except Exception as exc:
        logger.warning("could not reply to %s: %s", user_id, slack_failure(exc))


def slack_failure(exc: BaseException) -> str:
    """Why a call to Slack failed, in a few words safe for a log line: Slack's error code, or that
    Slack could not be reached. Never the exception's text, which can quote the request."""
    if isinstance(exc, SlackApiError):
        response = exc.response
        # A body that is not JSON leaves the raw HTTP response here instead of a SlackResponse.
        code = response.get("error") if hasattr(response, "get") else None
        return str(code or "an unexpected answer")
    if isinstance(exc, aiohttp.ClientError | OSError | TimeoutError):
        return f"Slack could not be reached ({type(exc).__name__}); check the network and SLACK_API_URL"
    return type(exc).__name__


def channel_failure(exc: BaseException, setting: str) -> str:
    """Why a post to the channel named by ``setting`` failed, and what whoever runs the bot should
    do about it (a wrong id, the bot not invited, an outage), for a log line."""
    code = slack_failure(exc)
    if not isinstance(exc, SlackApiError):
        return code
    advice = _CHANNEL_ADVICE.get(code, "check {setting} and that the bot was invited to that channel")
    return f"{code}: {advice.format(setting=setting)}"


async def open_modal(
    client: AsyncWebClient,
    respond: AsyncRespond,
    user_id: str,
    *,
    trigger_id: str,
    view: dict[str, Any],
    what: str,
    again: str,
) -> bool:
    """Open ``view`` with the trigger of a click or a command; False when Slack refused, and the
    user was told to ``again`` (a trigger_id lives 3 seconds and opens one modal, so a slow or
    busy moment costs the user one more click, never their answer)."""
    try:
        await client.views_open(trigger_id=trigger_id, view=view)
        return True
    except SLACK_ERRORS as exc:
        logger.warning("could not open the %s form: %s", what, slack_failure(exc))
        why = _why_not_opened(exc)
    except Exception:
        logger.exception("could not open the %s form", what)
        why = ""
    await tell_user(
        client, respond, user_id, {"text": f"The form could not open{why}, so nothing changed. {again}"}
    )
    return False


def _why_not_opened(exc: BaseException) -> str:
    code = slack_failure(exc)
    if code in _TRIGGER_GONE:
        return " in time"
    if code == "ratelimited":
        return " because Slack is busy right now"
    if not isinstance(exc, SlackApiError):
        return " because Slack could not be reached"
    return ""
