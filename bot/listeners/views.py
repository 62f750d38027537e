"""The "Create <provider>" modal: check offline, answer "Verifying…", verify after the ack."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from blocks.modal import problem_view, result_view, verifying_view
from blocks.results import problem_message, result_message
from bot import ids
from bot.listeners.approvals import post_approval_request
from bot.listeners.events import publish_home
from bot.listeners.state import FormDraft, parse_form_metadata, read_form, team_of
from bot.providers.base import Provider
from bot.providers.registry import UnknownProvider
from bot.runtime import Services
from bot.services.connections import CreateRequest

__all__ = ["deliver_result", "register"]

logger = logging.getLogger(__name__)

INTERNAL_ERROR = "Something went wrong on our side and nothing was saved. Please try again in a minute."
INTERRUPTED = (
    "The bot was restarted before it finished checking these credentials, so nothing was saved. "
    "Please submit them again."
)
STALE_FORM = "This form is out of date. Close it and run /connections again."


def register(app: AsyncApp, services: Services) -> None:
    async def create_submitted(
        ack: AsyncAck,
        body: dict[str, Any],
        view: dict[str, Any],
        client: AsyncWebClient,
        context: AsyncBoltContext,
    ) -> None:
        try:
            provider = services.providers.get(parse_form_metadata(view.get("private_metadata")) or "")
        except UnknownProvider:
            await ack(response_action="errors", errors={ids.BLOCK_NAME: STALE_FORM})
            return
        try:
            team_id, user_id = team_of(context, body), str(body["user"]["id"])
            name, raw_values = read_form(view, provider)
            checked = await services.connections.check_form(team_id, provider, name, raw_values)
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
    """Create the connection and show the outcome; the user is told in every case, even when the
    bot is stopping or something breaks."""
    draft = FormDraft(provider.key, request.name, provider.config_of(request.values)).encode()
    try:
        outcome = await services.connections.create(request)
    except asyncio.CancelledError:
        await deliver_result(
            client,
            view_id,
            request.user_id,
            problem_view(provider, INTERRUPTED, try_again_value=draft),
            problem_message(provider, request.name, INTERRUPTED),
        )
        raise
    except Exception:
        logger.exception("creating a %s connection failed", provider.key)
        await deliver_result(
            client,
            view_id,
            request.user_id,
            problem_view(provider, INTERNAL_ERROR, try_again_value=draft),
            problem_message(provider, request.name, INTERNAL_ERROR),
        )
        return
    if outcome.problem:
        await deliver_result(
            client,
            view_id,
            request.user_id,
            problem_view(provider, outcome.problem, try_again_value=draft),
            problem_message(provider, request.name, outcome.problem),
        )
        return
    note = ""
    if outcome.connection_id is not None:
        try:
            posted = await post_approval_request(services, client, request.team_id, outcome.connection_id)
        except Exception:  # Slack unreachable: the user still gets the result, with the right note
            logger.warning("could not post the approval request", exc_info=True)
            posted = False
        note = _approval_note(services, posted)
    await deliver_result(
        client,
        view_id,
        request.user_id,
        result_view(provider, request.name, outcome.verification, try_again_value=draft, approval_note=note),
        result_message(provider, request.name, outcome.verification, note),
    )
    if outcome.connection_id is not None:
        try:
            await publish_home(services, client, request.team_id, request.user_id)
        except Exception:  # the Home tab catches up when next opened; the user already has the result
            logger.warning("could not republish the Home tab of %s", request.user_id, exc_info=True)


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
) -> None:
    """Replace the "Verifying…" view; when Slack no longer has it (the user closed the modal) or
    cannot be reached for it, send the same news as a direct message so it is never lost."""
    try:
        await client.views_update(view_id=view_id, view=view)
        return
    except SlackApiError as exc:
        logger.info("views.update of a finished verification failed: %s", _error_code(exc))
    except Exception as exc:
        logger.warning("views.update of a finished verification failed: %s", type(exc).__name__)
    try:
        await client.chat_postMessage(channel=user_id, **fallback)
    except SlackApiError as exc:
        logger.warning("could not send a verification result to %s: %s", user_id, _error_code(exc))
    except Exception as exc:
        logger.warning("could not send a verification result to %s: %s", user_id, type(exc).__name__)


def _error_code(exc: SlackApiError) -> str:
    response = exc.response
    error = response.get("error") if response is not None else None
    return str(error or "unknown error")
