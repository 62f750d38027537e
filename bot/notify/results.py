"""Telling a user what became of the form they submitted: the result replaces their "Verifying…"
modal, or comes as a direct message when the modal is gone, so it is never lost; and the news
that a verification cut short by a stop will not finish."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from blocks.forms import problem_view
from blocks.results import problem_message
from bot.background import CANCEL_GRACE_SECONDS
from bot.domain import InFlightKind, RequestKind
from bot.notify.slack_calls import slack_failure
from bot.payloads import try_again_value
from bot.providers.base import Provider

if TYPE_CHECKING:
    from bot.runtime import Services
    from bot.services.interrupted import Interrupted

__all__ = [
    "INTERRUPTED",
    "LAST_WORD_SECONDS",
    "announce_interrupted",
    "deliver_final",
    "deliver_result",
    "problem_news",
]

logger = logging.getLogger(__name__)

LAST_WORD_SECONDS = 0.7 * CANCEL_GRACE_SECONDS
"""How long a verification cut short by shutdown may still take to tell its user: the rest of the
grace the shutdown gives cancelled work is for ending the claim after the news."""
INTERRUPTED = {
    RequestKind.CONNECTION: (
        "The bot was restarted before it finished checking these credentials, so nothing was saved. "
        "Please submit them again."
    ),
    RequestKind.ROTATION: (
        "The bot was restarted before it finished checking the new credentials, so nothing changed. "
        "Please rotate again."
    ),
}

News = tuple[dict[str, Any], dict[str, Any]]
"""A result as the modal shows it, and as the direct message that stands in for a closed modal."""


def problem_news(
    kind: RequestKind, provider: Provider, name: str, text: str, *, config: dict[str, str] | None = None
) -> News:
    """A failure that is not the provider's answer (plain ``text`` for the user). A new
    connection's form can be brought back by Try again with its non-secret fields (``config``)."""
    draft = try_again_value(kind, provider.key, name, config or {})
    return problem_view(provider, text, try_again_value=draft, kind=kind), problem_message(
        provider, name, text
    )


async def announce_interrupted(
    services: Services, client: AsyncWebClient, interrupted: list[Interrupted]
) -> None:
    """Replace each user's "Verifying…" with the news that nothing was stored (a direct message
    when the modal is gone). Never raises: one failed announcement must not stop the others."""
    for item in interrupted:
        provider = services.providers.find(item.provider_key)
        if provider is None:  # the provider was taken out of the bot since; its modal cannot be drawn
            logger.warning(
                "cannot tell %s about an interrupted %s verification", item.user_id, item.provider_key
            )
            continue
        kind = RequestKind.CONNECTION if item.kind is InFlightKind.CREATE else RequestKind.ROTATION
        news = problem_news(kind, provider, item.name, INTERRUPTED[kind], config=item.config)
        try:
            await deliver_result(client, item.view_id, item.user_id, *news)
        except Exception:
            logger.exception("could not tell %s about an interrupted verification", item.user_id)


async def deliver_result(
    client: AsyncWebClient,
    view_id: str,
    user_id: str,
    view: dict[str, Any],
    fallback: dict[str, Any],
    *,
    within: float | None = None,
) -> bool:
    """Replace the "Verifying…" view; when Slack no longer has it (the user closed the modal) or
    cannot be reached for it, send the same news as a direct message so it is never lost. Whether
    either arrived.

    With ``within``, both calls together take at most that many seconds, the modal's at most half
    of them (a call that meets a rate limit would otherwise wait out Slack's ``Retry-After``): for
    a bot that is stopping."""
    deadline = None if within is None else asyncio.get_running_loop().time() + within
    if await _attempt(
        client.views_update(view_id=view_id, view=view),
        _seconds_left(deadline, share=0.5),
        "update the modal of a finished verification",
        slack_refusal_level=logging.INFO,
    ):
        return True
    return await _attempt(
        client.chat_postMessage(channel=user_id, **fallback),
        _seconds_left(deadline),
        f"send a verification result to {user_id}",
        slack_refusal_level=logging.WARNING,
    )


async def deliver_final(
    client: AsyncWebClient, view_id: str, user_id: str, view: dict[str, Any], fallback: dict[str, Any]
) -> bool:
    """:func:`deliver_result` for news that nothing else will bring once lost (the outcome is
    stored or the claim ended, so no sweep tells the user): if shutdown cancels the delivery, it is
    tried once more within :data:`LAST_WORD_SECONDS` before the cancellation goes on."""
    try:
        return await deliver_result(client, view_id, user_id, view, fallback)
    except asyncio.CancelledError:
        await deliver_result(client, view_id, user_id, view, fallback, within=LAST_WORD_SECONDS)
        raise


def _seconds_left(deadline: float | None, *, share: float = 1.0) -> float | None:
    if deadline is None:
        return None
    return max(0.0, deadline - asyncio.get_running_loop().time()) * share


async def _attempt(call: Awaitable[Any], bound: float | None, what: str, *, slack_refusal_level: int) -> bool:
    try:
        await asyncio.wait_for(call, bound)
    except SlackApiError as exc:
        logger.log(slack_refusal_level, "could not %s: %s", what, slack_failure(exc))
    except TimeoutError as exc:
        why = "the bot is stopping" if bound is not None else slack_failure(exc)
        logger.warning("could not %s: %s", what, why)
    except Exception as exc:
        # Slack unreachable (a refused or dropped connection): one line, never a traceback.
        logger.warning("could not %s: %s", what, slack_failure(exc))
    else:
        return True
    return False
