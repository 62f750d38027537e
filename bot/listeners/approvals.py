"""Approve and Reject on an approval request, the reject-reason modal, and posting the request."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from blocks.approval import (
    admin_check_failed_reply,
    already_decided_reply,
    approval_decided,
    approval_request,
    decision_dm,
    not_admin_reply,
    not_found_reply,
    reject_reason_modal,
    self_approval_reply,
)
from bot import ids
from bot.listeners.events import publish_home
from bot.listeners.replies import SLACK_ERRORS, channel_failure, slack_failure, tell_user
from bot.listeners.state import parse_json_object, read_reason, team_of
from bot.runtime import Services
from bot.services.approvals import Decision, Verdict

__all__ = ["announce_decision", "message_of", "post_approval_request", "register"]

logger = logging.getLogger(__name__)

NOTHING_CHANGED = "Something went wrong on our side, so nothing changed. Please try again in a minute."
REJECT_FORM_FAILED = "The reject form could not be opened in time, so nothing changed. Click Reject again."

PRECHECK_SECONDS = 1.0
"""How long a Reject click may spend checking rights before opening the reason modal anyway (its
trigger_id expires after 3 s); the submission is checked in full."""


def register(app: AsyncApp, services: Services) -> None:
    async def approve_clicked(
        ack: AsyncAck,
        action: dict[str, Any],
        body: dict[str, Any],
        client: AsyncWebClient,
        respond: AsyncRespond,
        context: AsyncBoltContext,
    ) -> None:
        await ack()
        team_id, actor = team_of(context, body), str(body["user"]["id"])
        where = message_of(body)

        async def approve() -> None:
            try:
                decision = await services.approvals.approve(team_id, str(action.get("value", "")), actor)
            except Exception:
                logger.exception("approving a connection failed")
                await tell_user(client, respond, actor, {"text": NOTHING_CHANGED})
                return
            await _answer(services, client, respond, decision, where, team_id=team_id, actor=actor)

        services.background.spawn(approve(), name="action:approve")

    async def reject_clicked(
        ack: AsyncAck,
        action: dict[str, Any],
        body: dict[str, Any],
        client: AsyncWebClient,
        respond: AsyncRespond,
        context: AsyncBoltContext,
    ) -> None:
        await ack()
        team_id, actor = team_of(context, body), str(body["user"]["id"])
        connection_id = str(action.get("value", ""))
        where = message_of(body)

        async def ask_why() -> None:
            try:
                verdict = await asyncio.wait_for(
                    services.approvals.may_decide(team_id, connection_id, actor), PRECHECK_SECONDS
                )
            except TimeoutError:
                verdict = None  # the submission is checked in full anyway
            except Exception:
                logger.exception("checking a rejection failed")
                await tell_user(client, respond, actor, {"text": NOTHING_CHANGED})
                return
            if verdict is not None and verdict.verdict is not Verdict.DECIDED:
                await _answer(services, client, respond, verdict, where, team_id=team_id, actor=actor)
                return
            try:
                request = await services.approvals.request(team_id, connection_id)
            except Exception:
                logger.exception("reading a connection to reject failed")
                await tell_user(client, respond, actor, {"text": NOTHING_CHANGED})
                return
            if request.connection is None:
                await tell_user(client, respond, actor, not_found_reply())
                return
            metadata = json.dumps({"connection": connection_id, "channel": where[0], "ts": where[1]})
            try:
                await client.views_open(
                    trigger_id=body["trigger_id"],
                    view=reject_reason_modal(request.connection, private_metadata=metadata),
                )
            except Exception as exc:  # an expired trigger_id, most likely: say so instead of nothing
                logger.warning("could not open the reject form: %s", slack_failure(exc))
                await tell_user(client, respond, actor, {"text": REJECT_FORM_FAILED})

        services.background.spawn(ask_why(), name="action:reject")

    async def reason_submitted(
        ack: AsyncAck,
        body: dict[str, Any],
        view: dict[str, Any],
        client: AsyncWebClient,
        context: AsyncBoltContext,
    ) -> None:
        metadata = parse_json_object(view.get("private_metadata"))
        team_id, actor = team_of(context, body), str(body["user"]["id"])
        reason = read_reason(view)
        if not reason:
            await ack(
                response_action="errors", errors={ids.BLOCK_REASON: "Say why, so the requester can fix it."}
            )
            return
        try:
            decision = await services.approvals.reject(
                team_id, str(metadata.get("connection", "")), actor, reason
            )
        except Exception:
            logger.exception("rejecting a connection failed")
            await ack(response_action="errors", errors={ids.BLOCK_REASON: NOTHING_CHANGED})
            return
        if decision.verdict is not Verdict.DECIDED:
            # Inline errors are plain text, so the mrkdwn replies are not used here.
            await ack(response_action="errors", errors={ids.BLOCK_REASON: _plain_refusal(decision)})
            if decision.verdict is Verdict.EXPIRED:
                services.background.spawn(
                    _announce(services, client, decision, ("", ""), team_id=team_id), name="view:expired"
                )
            return
        await ack()
        where = (metadata.get("channel"), metadata.get("ts"))
        services.background.spawn(
            _announce(
                services, client, decision, (str(where[0] or ""), str(where[1] or "")), team_id=team_id
            ),
            name="view:reject",
        )

    app.action(ids.ACTION_APPROVE)(approve_clicked)
    app.action(ids.ACTION_REJECT)(reject_clicked)
    app.view(ids.VIEW_REJECT)(reason_submitted)


async def post_approval_request(
    services: Services, client: AsyncWebClient, team_id: str, connection_id: str
) -> bool:
    """Post the request to the admin channel; False (and an actionable log line) if it cannot."""
    channel = services.settings.admin_channel
    if not channel:
        return False
    request = await services.approvals.request(team_id, connection_id)
    if request.connection is None:
        return False
    try:
        posted = await client.chat_postMessage(
            channel=channel, **approval_request(request.connection, request.checks)
        )
    except SLACK_ERRORS as exc:
        logger.warning(
            "could not post the approval request of connection %s to CONNECTIONS_ADMIN_CHANNEL %s: %s",
            connection_id,
            channel,
            channel_failure(exc, "CONNECTIONS_ADMIN_CHANNEL"),
        )
        return False
    await services.approvals.record_request_message(
        team_id, connection_id, str(posted["channel"]), str(posted["ts"])
    )
    return True


def message_of(body: dict[str, Any]) -> tuple[str, str]:
    """The channel and ts of the message whose button was clicked ("" when it was not a message)."""
    container = body.get("container") or {}
    if container.get("type") != "message" or container.get("is_ephemeral"):
        return "", ""
    return str(container.get("channel_id") or ""), str(container.get("message_ts") or "")


def _plain_refusal(decision: Decision) -> str:
    if decision.verdict is Verdict.NOT_ADMIN:
        return "Only admins of connections can reject. Nothing changed."
    if decision.verdict is Verdict.ADMIN_CHECK_FAILED:
        why = decision.admin.why if decision.admin else "unknown"
        return f"Your admin rights could not be checked with Slack ({why}), so nothing changed. Try again."
    if decision.verdict is Verdict.SELF_APPROVAL:
        return "You asked for this connection, so another admin must decide. Nothing changed."
    if decision.verdict is Verdict.EXPIRED:
        return "This request expired: nobody decided within the time limit. Nothing changed."
    if decision.verdict is Verdict.ALREADY_DECIDED and decision.status is not None:
        return f"Someone already decided: this connection is {decision.status.label}. Nothing changed."
    return "This connection no longer exists. Nothing changed."


def _reply_for(services: Services, decision: Decision) -> dict[str, Any]:
    if decision.verdict is Verdict.NOT_ADMIN:
        return not_admin_reply(services.approvals.policy.how_to_become())
    if decision.verdict is Verdict.ADMIN_CHECK_FAILED:
        return admin_check_failed_reply(decision.admin.why if decision.admin else "unknown")
    if decision.verdict is Verdict.SELF_APPROVAL:
        return self_approval_reply()
    if decision.verdict in (Verdict.ALREADY_DECIDED, Verdict.EXPIRED) and decision.status is not None:
        return already_decided_reply(decision.status, decision.decided_by, decision.decided_at)
    return not_found_reply()


async def _answer(
    services: Services,
    client: AsyncWebClient,
    respond: AsyncRespond,
    decision: Decision,
    where: tuple[str, str],
    *,
    team_id: str,
    actor: str,
) -> None:
    if decision.verdict is Verdict.DECIDED:
        await _announce(services, client, decision, where, team_id=team_id)
        return
    await tell_user(client, respond, actor, _reply_for(services, decision))
    if decision.verdict is Verdict.EXPIRED:
        # This click expired the request: announce it as the periodic job would have.
        await _announce(services, client, decision, where, team_id=team_id)
        return
    if decision.verdict is Verdict.ALREADY_DECIDED:
        # The clicked message may be stale (posted before the decision): bring it up to date.
        await _update_request(client, decision, where)
    if not respond.response_url:
        # A click on App Home, which showed something stale (or buttons to a former admin).
        await publish_home(services, client, team_id, actor)


async def _announce(
    services: Services,
    client: AsyncWebClient,
    decision: Decision,
    where: tuple[str, str],
    *,
    team_id: str | None = None,
) -> None:
    """A decision was made: update the request in place, tell the requester and, given the
    workspace, republish the Home tabs of the requester and of whoever decided."""
    await _update_request(client, decision, where)
    connection = decision.connection
    if connection is None or decision.status is None:
        return
    try:
        await client.chat_postMessage(
            channel=connection.created_by,
            **decision_dm(
                connection, status=decision.status, decided_by=decision.decided_by, reason=decision.reason
            ),
        )
    except Exception as exc:  # the decision stands; the rest of the announcement must still go out
        logger.warning("could not tell %s about the decision: %s", connection.created_by, slack_failure(exc))
    if team_id is not None:
        # Homes that list this request: the requester's among their connections, and admins' as
        # waiting for a decision (the decider and the listed admins; members of the admin group
        # catch up when they next open Home, or on a stale click).
        listed = sorted(services.settings.admins)
        for user_id in dict.fromkeys(u for u in (connection.created_by, decision.decided_by, *listed) if u):
            try:
                await publish_home(services, client, team_id, user_id)
            except Exception as exc:
                logger.warning("could not republish the Home tab of %s: %s", user_id, slack_failure(exc))


announce_decision = _announce
"""Public name of :func:`_announce`, for decisions made outside a click (expiry)."""


async def _update_request(client: AsyncWebClient, decision: Decision, where: tuple[str, str]) -> None:
    connection = decision.connection
    # The stored location is the one the bot posted to; the clicked one is only a fallback for
    # requests posted before it was recorded (a payload's channel and ts are not to be trusted).
    stored = (decision.approval_channel or "", decision.approval_ts or "")
    channel, ts = stored if all(stored) else where
    if connection is None or decision.status is None or decision.decided_at is None or not (channel and ts):
        return
    try:
        await client.chat_update(
            channel=channel,
            ts=ts,
            **approval_decided(
                connection,
                decision.checks,
                status=decision.status,
                decided_by=decision.decided_by,
                decided_at=decision.decided_at,
                reason=decision.reason,
            ),
        )
    except Exception as exc:  # logged, never raised: the requester must still be told
        logger.warning("could not update the approval request %s/%s: %s", channel, ts, slack_failure(exc))
