"""The "Create <provider>" modal: check offline and claim the name, answer "Verifying…", verify
after the ack."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from blocks.modal import problem_view, result_view, verifying_view
from blocks.results import problem_message, result_message
from bot import ids
from bot.background import CANCEL_GRACE_SECONDS
from bot.listeners.approvals import post_approval_request
from bot.listeners.events import publish_home
from bot.listeners.replies import slack_failure
from bot.listeners.state import FormDraft, first_input, form_fits, parse_form_metadata, read_form, team_of
from bot.providers.base import Provider
from bot.runtime import Services
from bot.services.connections import CreateOutcome, CreateRequest, Waiter
from bot.services.interrupted import ClaimLost

__all__ = ["LAST_WORD_SECONDS", "deliver_final", "deliver_result", "interrupted_create_news", "register"]

logger = logging.getLogger(__name__)

INTERNAL_ERROR = "Something went wrong on our side and nothing was saved. Please try again in a minute."
INTERRUPTED = (
    "The bot was restarted before it finished checking these credentials, so nothing was saved. "
    "Please submit them again."
)
STALE_FORM = "This form is out of date. Close it and run /connections again."
CUT_SHORT = (
    "It is saved and awaits an admin's approval. The bot was restarting, so the request may not "
    "have reached the admin channel: admins can approve or reject it on the bot's Home tab, under "
    "“Waiting for your decision”."
)
LAST_WORD_SECONDS = 0.7 * CANCEL_GRACE_SECONDS
"""How long a verification cut short by shutdown may still take to tell its user: the rest of the
grace the shutdown gives cancelled work is for ending the claim after the news."""


def register(app: AsyncApp, services: Services) -> None:
    async def create_submitted(
        ack: AsyncAck,
        body: dict[str, Any],
        view: dict[str, Any],
        client: AsyncWebClient,
        context: AsyncBoltContext,
    ) -> None:
        provider = services.providers.find(parse_form_metadata(view.get("private_metadata")) or "")
        if provider is None or not form_fits(view, provider):
            # No provider, or not the one the form was built for: Slack would refuse errors
            # under fields the view does not have, so the form as a whole is out of date.
            await ack(response_action="errors", errors={first_input(view): STALE_FORM})
            return
        try:
            team_id, user_id = team_of(context, body), str(body["user"]["id"])
            name, raw_values = read_form(view, provider)
            # Claims the name too: of two submissions of one name, only one gets "Verifying…".
            checked = await services.connections.check_form(
                team_id, provider, name, raw_values, claim_for=Waiter(user_id, str(view["id"]))
            )
        except Exception:
            # Slack would show its generic "trouble connecting"; an inline message says more.
            logger.exception("checking a %s form failed", provider.key)
            await ack(response_action="errors", errors={ids.BLOCK_NAME: INTERNAL_ERROR})
            return
        if not checked.ok:
            await ack(response_action="errors", errors=dict(checked.problems))
            return
        await ack(response_action="update", view=verifying_view(provider, checked.name))
        request = CreateRequest(
            team_id=team_id,
            user_id=user_id,
            provider_key=provider.key,
            name=checked.name,
            values=checked.values,
            claim_id=checked.claim_id,
        )
        services.background.spawn(
            _verify_and_report(services, client, provider, request, view_id=str(view["id"])),
            name=f"create:{provider.key}:{team_id}",
        )

    app.view(ids.VIEW_CREATE)(create_submitted)


async def _verify_and_report(
    services: Services,
    client: AsyncWebClient,
    provider: Provider,
    request: CreateRequest,
    *,
    view_id: str,
) -> None:
    """Create the connection and show the outcome; the user is told once in every case, even when
    the bot is stopping or something breaks."""
    draft = FormDraft(provider.key, request.name, provider.config_of(request.values)).encode()
    try:
        outcome = await services.connections.create(request)
    except asyncio.CancelledError:
        await _tell_interrupted(services, client, provider, request, view_id)
        raise
    except ClaimLost:
        logger.warning("a %s verification failed after it was reported as interrupted", provider.key)
        return
    except Exception:
        logger.exception("creating a %s connection failed", provider.key)
        await deliver_final(
            client,
            view_id,
            request.user_id,
            problem_view(provider, INTERNAL_ERROR, try_again_value=draft),
            problem_message(provider, request.name, INTERNAL_ERROR),
        )
        return
    if outcome.abandoned:  # the user was told it was interrupted; a second answer would contradict it
        return
    if outcome.problem:
        await deliver_final(
            client,
            view_id,
            request.user_id,
            problem_view(provider, outcome.problem, try_again_value=draft),
            problem_message(provider, request.name, outcome.problem),
        )
        return
    await _report_outcome(services, client, provider, request, outcome, draft, view_id)


async def _tell_interrupted(
    services: Services, client: AsyncWebClient, provider: Provider, request: CreateRequest, view_id: str
) -> None:
    """Shutdown gave up waiting for the verification. The claim ends only once the user was told:
    if Slack cannot be reached in the little time left, the next start finds the claim and tells
    them. A claim already gone was taken by a sweep, which told them itself."""
    if not await services.connections.claim_held(request.claim_id):
        return
    view, fallback = interrupted_create_news(provider, request.name, provider.config_of(request.values))
    if await deliver_result(client, view_id, request.user_id, view, fallback, within=LAST_WORD_SECONDS):
        await services.connections.release_claim(request.claim_id)


async def _report_outcome(
    services: Services,
    client: AsyncWebClient,
    provider: Provider,
    request: CreateRequest,
    outcome: CreateOutcome,
    draft: str,
    view_id: str,
) -> None:
    """Post a stored connection for approval, then show the verification's result. The outcome is
    stored and its claim ended, so no sweep will tell the user anything: if shutdown cancels this,
    the admin post is given up (admins also see the request on their Home tab) and the result is
    delivered within :data:`LAST_WORD_SECONDS` before the cancellation goes on."""

    def news(note: str) -> tuple[dict[str, Any], dict[str, Any]]:
        verification = outcome.verification
        return (
            result_view(provider, request.name, verification, try_again_value=draft, approval_note=note),
            result_message(provider, request.name, verification, note),
        )

    note = ""
    if outcome.connection_id is not None:
        try:
            posted = await _post_for_approval(services, client, request.team_id, outcome.connection_id)
        except asyncio.CancelledError:
            await deliver_result(client, view_id, request.user_id, *news(CUT_SHORT), within=LAST_WORD_SECONDS)
            raise
        note = _approval_note(services, posted)
    await deliver_final(client, view_id, request.user_id, *news(note))
    if outcome.connection_id is not None:
        try:
            await publish_home(services, client, request.team_id, request.user_id)
        except Exception:  # the Home tab catches up when next opened; the user already has the result
            logger.warning("could not republish the Home tab of %s", request.user_id, exc_info=True)


async def _post_for_approval(
    services: Services, client: AsyncWebClient, team_id: str, connection_id: str
) -> bool:
    try:
        return await post_approval_request(services, client, team_id, connection_id)
    except Exception:  # Slack unreachable: the user still gets the result, with the right note
        logger.warning("could not post the approval request", exc_info=True)
        return False


def interrupted_create_news(
    provider: Provider, name: str, config: dict[str, str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The modal and the direct message that tell a user their new connection was not checked to
    the end: nothing was saved, submit again (Try again keeps the non-secret fields)."""
    draft = FormDraft(provider.key, name, config).encode()
    return (
        problem_view(provider, INTERRUPTED, try_again_value=draft),
        problem_message(provider, name, INTERRUPTED),
    )


def _approval_note(services: Services, posted: bool) -> str:
    if posted:
        return "It is saved and now awaits an admin's approval; you will get a message when they decide."
    if services.settings.admin_channel:
        return (
            "It is saved and awaits an admin's approval, but the bot could not post the request to "
            "the admin channel. Ask whoever runs this bot to check CONNECTIONS_ADMIN_CHANNEL and to "
            "invite the bot there."
        )
    return (
        "It is saved, but approvals are not configured: no admin will see it until whoever runs this "
        "bot sets CONNECTIONS_ADMIN_CHANNEL."
    )


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
