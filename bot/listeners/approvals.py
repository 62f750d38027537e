"""Approve and Reject on an approval request, for a new connection and for a rotation, wherever the
request is shown (the admin channel, App Home, a status reply), and the reason a rejecting admin
gives. Every click is checked in full on the server (:mod:`bot.services.approvals`)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext
from slack_sdk.web.async_client import AsyncWebClient

from blocks.approval import decision_reply, not_found_reply, reason_modal, refusal_text
from bot import ids
from bot.domain import Decision, RequestKind, Verdict
from bot.listeners.kit import Click, OnClick, services_of
from bot.notify.connections import announce_decision, publish_home, update_request
from bot.notify.slack_calls import NOTHING_CHANGED, slack_failure
from bot.payloads import parse_json_object, read_reason, team_of

__all__ = ["approve", "ask_why", "reason_submitted", "register"]

logger = logging.getLogger(__name__)

REJECT_FORM_FAILED = "The reject form could not be opened in time, so nothing changed. Click Reject again."
SAY_WHY = "Say why, so the requester can fix it."
PRECHECK_SECONDS = 1.0
"""How long a Reject click may spend checking rights before opening the reason modal anyway (its
trigger_id expires after 3 s); the submission is checked in full."""

_KINDS = {
    ids.ACTION_APPROVE: RequestKind.CONNECTION,
    ids.ACTION_REJECT: RequestKind.CONNECTION,
    ids.VIEW_REJECT: RequestKind.CONNECTION,
    ids.ACTION_APPROVE_ROTATION: RequestKind.ROTATION,
    ids.ACTION_REJECT_ROTATION: RequestKind.ROTATION,
    ids.VIEW_REJECT_ROTATION: RequestKind.ROTATION,
}
"""What each button and reason modal decides on; the reason modal's private_metadata names the
request under the kind's value ("connection" or "rotation")."""


def register(app: AsyncApp) -> None:
    app.action(ids.ACTION_APPROVE)(OnClick(approve))
    app.action(ids.ACTION_APPROVE_ROTATION)(OnClick(approve))
    app.action(ids.ACTION_REJECT)(OnClick(ask_why))
    app.action(ids.ACTION_REJECT_ROTATION)(OnClick(ask_why))
    app.view(ids.VIEW_REJECT)(reason_submitted)
    app.view(ids.VIEW_REJECT_ROTATION)(reason_submitted)


async def approve(click: Click) -> None:
    """Approve: decided in full on the server, then announced (or the clicker told why not)."""
    kind = _KINDS[click.action_id]
    decision = await click.services.approvals.approve(kind, click.team_id, click.value, click.user_id)
    await _answer(click, decision, kind)


async def reason_submitted(
    ack: AsyncAck,
    body: dict[str, Any],
    view: dict[str, Any],
    client: AsyncWebClient,
    context: AsyncBoltContext,
) -> None:
    """Decided before the ack, so a refusal shows under the reason; announced after it."""
    services = services_of(context)
    kind = _KINDS[view["callback_id"]]
    metadata = parse_json_object(view.get("private_metadata"))
    reason = read_reason(view)
    if not reason:
        await ack(response_action="errors", errors={ids.BLOCK_REASON: SAY_WHY})
        return
    try:
        decision = await services.approvals.reject(
            kind, team_of(context, body), str(metadata.get(kind.value, "")), str(body["user"]["id"]), reason
        )
    except Exception:
        logger.exception("rejecting a %s request failed", kind)
        await ack(response_action="errors", errors={ids.BLOCK_REASON: NOTHING_CHANGED})
        return
    if decision.verdict is Verdict.DECIDED:
        await ack()
    else:
        # Inline errors are plain text, so the mrkdwn replies are not used here.
        await ack(response_action="errors", errors={ids.BLOCK_REASON: refusal_text(decision, kind)})
        if decision.verdict is not Verdict.EXPIRED:
            return
        # This submission expired the request: announce it as the job would have.
    services.background.spawn(announce_decision(services, client, decision), name="view:reject")


async def ask_why(click: Click) -> None:
    """Reject: check the rights before asking for a reason, within what the trigger allows; then
    open the reason modal, naming the request (only its id) in its private_metadata."""
    kind, approvals = _KINDS[click.action_id], click.services.approvals
    try:
        verdict = await asyncio.wait_for(
            approvals.may_decide(kind, click.team_id, click.value, click.user_id), PRECHECK_SECONDS
        )
    except TimeoutError:
        verdict = None  # the submission is checked in full anyway
    if verdict is not None and verdict.verdict is not Verdict.ALLOWED:
        await _answer(click, verdict, kind)
        return
    if verdict is not None:
        request = verdict.request
    else:
        request = await asyncio.wait_for(
            approvals.describe(kind, click.team_id, click.value), PRECHECK_SECONDS
        )
    if request is None:
        await click.tell(not_found_reply())
        return
    metadata = json.dumps({kind.value: click.value})
    try:
        await click.client.views_open(
            trigger_id=click.trigger_id, view=reason_modal(request, private_metadata=metadata)
        )
    except Exception as exc:  # an expired trigger_id, most likely: one more click fixes it
        logger.warning("could not open the reject form: %s", slack_failure(exc))
        await click.tell({"text": REJECT_FORM_FAILED})


async def _answer(click: Click, decision: Decision, kind: RequestKind) -> None:
    """Announce a decision this click made; otherwise tell the clicker why nothing changed."""
    services = click.services
    if decision.verdict is Verdict.DECIDED:
        await announce_decision(services, click.client, decision)
        return
    await click.tell(decision_reply(decision, services.approvals.policy.how_to_become()))
    if decision.verdict is Verdict.EXPIRED:
        # This click expired the request: announce it as the periodic job would have.
        await announce_decision(services, click.client, decision)
        return
    if decision.verdict is Verdict.ALREADY_DECIDED:
        # The clicked message may be stale (posted before the decision): bring the request up to date.
        await update_request(click.client, decision)
    if click.on_home and kind is RequestKind.CONNECTION:
        # A click on App Home, which showed something stale (or buttons to a former admin).
        await publish_home(services, click.client, click.team_id, click.user_id)
