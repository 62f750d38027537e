"""Submitting the two forms: "Create <provider>" and "Rotate credentials".

Before the ack: the user's limit (:mod:`bot.services.limits`), the offline checks and the claim
(:meth:`bot.services.submissions.Submissions.check`), with problems shown under their fields.
Then "Verifying…", and after the ack the verification, the request posted to the admin channel,
and the result in the same modal (a direct message when the modal is gone). The user is told once
in every case, even when the bot is stopping or something breaks."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext
from slack_sdk.web.async_client import AsyncWebClient

from blocks.forms import result_view, verifying_view
from blocks.results import config_change_lines, result_message
from bot import ids
from bot.domain import RequestKind
from bot.listeners.kit import services_of
from bot.notify.connections import post_request, publish_home
from bot.notify.results import (
    INTERRUPTED,
    LAST_WORD_SECONDS,
    News,
    deliver_final,
    deliver_result,
    problem_news,
)
from bot.notify.slack_calls import NOTHING_CHANGED
from bot.payloads import (
    first_input,
    form_fits,
    parse_form_metadata,
    parse_rotation_metadata,
    read_form,
    team_of,
    try_again_value,
)
from bot.providers.base import Provider, Verification
from bot.runtime import Services
from bot.services.limits import Action
from bot.services.submissions import STALE_ROTATION, Submission, Waiter

__all__ = ["form_submitted", "register"]

logger = logging.getLogger(__name__)

STALE = {
    RequestKind.CONNECTION: "This form is out of date. Close it and run /connections again.",
    RequestKind.ROTATION: STALE_ROTATION,
}
INTERNAL_ERROR = {
    RequestKind.CONNECTION: (
        "Something went wrong on our side and nothing was saved. Please try again in a minute."
    ),
    RequestKind.ROTATION: NOTHING_CHANGED,
}
AWAITS_APPROVAL = {
    RequestKind.CONNECTION: (
        "It is saved and now awaits an admin's approval; you will get a message when they decide."
    ),
    RequestKind.ROTATION: (
        "The new credentials are saved and await an admin's approval; the old key keeps working until "
        "then. You will get a message when an admin decides."
    ),
}
NOT_POSTED = {
    RequestKind.CONNECTION: (
        "It is saved and awaits an admin's approval, but the bot could not post the request to the "
        "admin channel. Ask whoever runs this bot to check CONNECTIONS_ADMIN_CHANNEL and to invite "
        "the bot there."
    ),
    RequestKind.ROTATION: (
        "The new credentials are saved and await an admin's approval, but the request could not be "
        "posted to the admin channel. An admin can still decide from `/connections status &lt;name&gt;`; "
        "ask whoever runs this bot to check CONNECTIONS_ADMIN_CHANNEL and to invite the bot there."
    ),
}
NO_ADMIN_CHANNEL = (
    "It is saved, but approvals are not configured: no admin will see it until whoever runs this "
    "bot sets CONNECTIONS_ADMIN_CHANNEL."
)
CUT_SHORT = {
    RequestKind.CONNECTION: (
        "It is saved and awaits an admin's approval. The bot was restarting, so the request may not "
        "have reached the admin channel: admins can approve or reject it on the bot's Home tab, under "
        "“Waiting for your decision”."
    ),
    RequestKind.ROTATION: (
        "The new credentials are saved and await an admin's approval; the old key keeps working until "
        "then. The bot was restarting, so the request may not have reached the admin channel: an admin "
        "can decide from `/connections status &lt;name&gt;`."
    ),
}


def register(app: AsyncApp) -> None:
    app.view(ids.VIEW_CREATE)(form_submitted)
    app.view(ids.VIEW_ROTATE)(form_submitted)


async def form_submitted(
    ack: AsyncAck,
    body: dict[str, Any],
    view: dict[str, Any],
    client: AsyncWebClient,
    context: AsyncBoltContext,
) -> None:
    """Check and claim before the ack; answer "Verifying…", and verify after it."""
    services = services_of(context)
    kind = RequestKind.CONNECTION if view.get("callback_id") == ids.VIEW_CREATE else RequestKind.ROTATION
    form = _form(services, kind, view)
    if form is None:
        # No provider, or not the one the form was built for: Slack would refuse errors under
        # fields the view does not have, so the form as a whole is out of date.
        await ack(response_action="errors", errors={first_input(view): STALE[kind]})
        return
    provider, name, values, connection_id = form
    team_id, user_id, view_id = team_of(context, body), str(body["user"]["id"]), str(view["id"])
    # Before anything is checked, claimed or sent to a provider.
    action = Action.SUBMISSION if kind is RequestKind.CONNECTION else Action.ROTATION
    limited = await services.limits.take(action, team_id, user_id)
    if limited is not None:
        await ack(response_action="errors", errors={first_input(view): limited.message})
        return
    try:
        checked = await services.submissions.check(
            kind,
            team_id,
            provider,
            name,
            values,
            claim_for=Waiter(user_id, view_id),
            connection_id=connection_id,
        )
    except Exception:
        # Slack would show its generic "trouble connecting"; an inline message says more.
        logger.exception("checking a %s form failed", provider.key)
        await ack(response_action="errors", errors={first_input(view): INTERNAL_ERROR[kind]})
        return
    if not checked.ok:
        errors = dict(checked.problems)
        if checked.form_problem is not None:
            errors[first_input(view)] = checked.form_problem
        await ack(response_action="errors", errors=errors)
        return
    await ack(response_action="update", view=verifying_view(provider, checked.name, kind=kind))
    submission = Submission(
        kind, team_id, user_id, provider, checked.name, checked.values, connection_id, checked.claim_id
    )
    services.background.spawn(
        _verify_and_report(services, client, submission, view_id), name=f"{kind}:{provider.key}:{team_id}"
    )


def _form(
    services: Services, kind: RequestKind, view: dict[str, Any]
) -> tuple[Provider, str, dict[str, Any], str | None] | None:
    """What a form holds: its provider, the name, the values by field, and the connection a
    rotation is for; None when its private_metadata is not one we wrote, or names another
    provider than the one the form was built for."""
    metadata = view.get("private_metadata")
    rotation = parse_rotation_metadata(metadata) if kind is RequestKind.ROTATION else None
    key = rotation.provider_key if rotation is not None else parse_form_metadata(metadata)
    provider = services.providers.find(key or "")
    if (
        provider is None
        or not form_fits(view, provider)
        or (kind is RequestKind.ROTATION and rotation is None)
    ):
        return None
    name, values = read_form(view, provider)
    if rotation is not None:  # a rotation's form has no Name: it names the connection it was opened for
        return provider, rotation.name, values, rotation.connection_id
    return provider, name, values, None


async def _verify_and_report(services: Services, client: AsyncWebClient, s: Submission, view_id: str) -> None:
    """Verify and store, then show the outcome."""
    config = s.provider.config_of(s.values)
    try:
        outcome = await services.submissions.submit(s)
    except asyncio.CancelledError:
        await _tell_interrupted(services, client, s, view_id, config)
        raise
    except Exception:
        logger.exception("a %s %s submission failed", s.provider.key, s.kind)
        news = problem_news(s.kind, s.provider, s.name, INTERNAL_ERROR[s.kind], config=config)
        await deliver_final(client, view_id, s.user_id, *news)
        return
    finally:
        if isinstance(s.values, dict):
            s.values.clear()  # the plain text lives for the provider call only
    if outcome.abandoned:  # the user was told it was interrupted; a second answer would contradict it
        return
    if outcome.problem is not None or outcome.verification is None:
        problem = outcome.problem or INTERNAL_ERROR[s.kind]
        await deliver_final(
            client, view_id, s.user_id, *problem_news(s.kind, s.provider, s.name, problem, config=config)
        )
        return
    verification = outcome.verification
    note = ""
    if outcome.request_id is not None:
        # Stored, and the claim ended with it: no sweep will tell the user, so a shutdown gives up
        # the admin post (the request stays decidable elsewhere), not the user's news.
        try:
            posted = await _post(services, client, s.kind, s.team_id, outcome.request_id)
        except asyncio.CancelledError:
            news = _result_news(s, verification, CUT_SHORT[s.kind], config)
            await deliver_result(client, view_id, s.user_id, *news, within=LAST_WORD_SECONDS)
            raise
        if posted:
            note = AWAITS_APPROVAL[s.kind]
        else:
            note = NOT_POSTED[s.kind] if services.settings.admin_channel else NO_ADMIN_CHANNEL
        if outcome.config_changes is not None:  # a rotation: what approving it changes besides the key
            note = "\n".join([note, *config_change_lines(outcome.config_changes)])
    await deliver_final(client, view_id, s.user_id, *_result_news(s, verification, note, config))
    if outcome.request_id is not None and s.kind is RequestKind.CONNECTION:
        await publish_home(services, client, s.team_id, s.user_id)


def _result_news(s: Submission, verification: Verification, note: str, config: dict[str, str]) -> News:
    draft = try_again_value(s.kind, s.provider.key, s.name, config)
    return (
        result_view(s.provider, s.name, verification, try_again_value=draft, approval_note=note, kind=s.kind),
        result_message(s.provider, s.name, verification, note, kind=s.kind),
    )


async def _post(
    services: Services, client: AsyncWebClient, kind: RequestKind, team_id: str, request_id: str
) -> bool:
    try:
        return await post_request(services, client, kind, team_id, request_id)
    except Exception:  # stored already: the user must still hear that, and how it goes on
        logger.warning("could not post the %s request", kind, exc_info=True)
        return False


async def _tell_interrupted(
    services: Services, client: AsyncWebClient, s: Submission, view_id: str, config: dict[str, str]
) -> None:
    """Shutdown gave up waiting for the verification. The claim ends only once the user was told:
    if Slack cannot be reached in the little time left, the next start finds the claim and tells
    them. A claim already gone was taken by a sweep, which told them itself."""
    if not await services.submissions.claim_held(s.claim_id):
        return
    news = problem_news(s.kind, s.provider, s.name, INTERRUPTED[s.kind], config=config)
    if await deliver_result(client, view_id, s.user_id, *news, within=LAST_WORD_SECONDS):
        await services.submissions.release_claim(s.claim_id)
