"""The "Create <provider>" modal: check offline, answer "Verifying…", verify after the ack."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from blocks.modal import problem_view, result_view, verifying_view
from blocks.results import result_message
from bot import ids
from bot.listeners.state import FormDraft, parse_form_metadata, read_form, team_of
from bot.providers.base import Provider
from bot.providers.registry import UnknownProvider
from bot.runtime import Services
from bot.services.connections import NAME_FIELD, CreateRequest

__all__ = ["register"]

logger = logging.getLogger(__name__)

INTERNAL_ERROR = "Something went wrong on our side and nothing was saved. Please try again in a minute."


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
            await ack(
                response_action="errors",
                errors={ids.BLOCK_NAME: "This form is out of date. Close it and run /connections again."},
            )
            return
        team_id, user_id = team_of(context, body), str(body["user"]["id"])
        name, raw_values = read_form(view, provider)
        checked = await services.connections.check_form(team_id, provider, name, raw_values)
        if not checked.ok:
            errors = {
                ids.BLOCK_NAME if key == NAME_FIELD else key: message
                for key, message in checked.problems.items()
            }
            await ack(response_action="errors", errors=errors)
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
    draft = FormDraft(provider.key, request.name, provider.config_of(request.values)).encode()
    try:
        outcome = await services.connections.create(request)
    except Exception:
        logger.exception("creating a %s connection failed", provider.key)
        await _show(client, view_id, problem_view(provider, INTERNAL_ERROR, try_again_value=draft))
        return
    if outcome.problem:
        await _show(client, view_id, problem_view(provider, outcome.problem, try_again_value=draft))
        return
    note = _approval_note(services) if outcome.stored else ""
    view = result_view(
        provider, request.name, outcome.verification, try_again_value=draft, approval_note=note
    )
    if not await _show(client, view_id, view):
        # The user closed the modal while we were verifying: the result must not be lost.
        await _direct_message(
            client, request.user_id, result_message(provider, request.name, outcome.verification, note)
        )


def _approval_note(services: Services) -> str:
    channel = services.settings.admin_channel
    if channel:
        return f"It is saved and now awaits an admin's approval in <#{channel}>."
    return (
        "It is saved and now awaits an admin's approval. No admin channel is configured yet, "
        "so ask whoever runs this bot to set CONNECTIONS_ADMIN_CHANNEL."
    )


async def _show(client: AsyncWebClient, view_id: str, view: dict[str, Any]) -> bool:
    """Replace the "Verifying…" view; False when Slack no longer has it (the modal was closed)."""
    try:
        await client.views_update(view_id=view_id, view=view)
    except SlackApiError as exc:
        logger.info("views.update of a finished verification failed: %s", _error_code(exc))
        return False
    return True


async def _direct_message(client: AsyncWebClient, user_id: str, message: dict[str, Any]) -> None:
    try:
        await client.chat_postMessage(channel=user_id, **message)
    except SlackApiError as exc:
        logger.warning("could not send the verification result to %s: %s", user_id, _error_code(exc))


def _error_code(exc: SlackApiError) -> str:
    response = exc.response
    error = response.get("error") if response is not None else None
    return str(error or "unknown error")
