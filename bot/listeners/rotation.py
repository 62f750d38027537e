"""Rotating credentials from Slack: the Rotate button and ``/connections rotate <name>`` open the
form, its submission is verified after the ack, the verified rotation is posted for approval, and
Approve / Reject on that request decide it (checked in full on the server for every click)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from blocks.approval import (
    admin_check_failed_reply,
    not_admin_reply,
    not_found_reply,
)
from blocks.results import problem_message
from blocks.retests import refusal_message
from blocks.rotation import (
    rotation_decided,
    rotation_decision_dm,
    rotation_modal,
    rotation_pending_reply,
    rotation_problem_view,
    rotation_reject_modal,
    rotation_request,
    rotation_result_message,
    rotation_result_view,
    rotation_verifying_view,
)
from bot import ids
from bot.listeners.approvals import message_of
from bot.listeners.events import publish_home
from bot.listeners.replies import SLACK_ERRORS, channel_failure, open_modal, slack_failure, tell_user
from bot.listeners.state import (
    first_input,
    form_fits,
    parse_json_object,
    parse_rotation_metadata,
    read_form,
    read_reason,
    team_of,
)
from bot.listeners.views import LAST_WORD_SECONDS, deliver_final, deliver_result
from bot.providers.base import Provider
from bot.runtime import Services
from bot.services.approvals import Verdict
from bot.services.interrupted import ClaimBusy
from bot.services.permissions import Refusal, Refused
from bot.services.rotations import RotationDecision

__all__ = ["announce_rotation", "interrupted_rotation_news", "open_rotation_form", "register"]

logger = logging.getLogger(__name__)

PRECHECK_SECONDS = 1.5
"""The rights check before the form opens must leave time for views.open (a trigger lasts 3 s)."""
NOTHING_CHANGED = "Something went wrong on our side, so nothing changed. Please try again in a minute."
SAY_WHICH = "Say which connection to rotate: `/connections rotate &lt;name&gt;`."
TOO_SLOW = "Checking your rights took too long, so the form could not open. Click Rotate again."
REJECT_FORM_FAILED = "The reject form could not be opened in time, so nothing changed. Click Reject again."
STALE_FORM = "This form is out of date. Close it and start the rotation again."
AWAITS_APPROVAL = (
    "The new credentials are saved and await an admin's approval; the old key keeps working until "
    "then. You will get a message when an admin decides."
)
NOT_POSTED = (
    "The new credentials are saved and await an admin's approval, but the request could not be "
    "posted to the admin channel. An admin can still decide from `/connections status &lt;name&gt;`; "
    "ask whoever runs this bot to check CONNECTIONS_ADMIN_CHANNEL and to invite the bot there."
)
NO_APPROVALS = (
    "Rotations need an admin's approval, but approvals are not configured: ask whoever runs this "
    "bot to set CONNECTIONS_ADMIN_CHANNEL. Nothing changed."
)
INTERRUPTED = (
    "The bot was restarted before it finished checking the new credentials, so nothing changed. "
    "Please rotate again."
)
CUT_SHORT = (
    "The new credentials are saved and await an admin's approval; the old key keeps working until "
    "then. The bot was restarting, so the request may not have reached the admin channel: an admin "
    "can decide from `/connections status &lt;name&gt;`."
)
DATABASE_BUSY = (
    "The bot's database is busy right now, so nothing was checked or changed. Submit the form again "
    "in a moment."
)
ALREADY_ROTATING = (
    "New credentials for this connection are being checked right now (someone submitted them a "
    "moment ago). Wait for that check to finish; nothing changed."
)


def register(app: AsyncApp, services: Services) -> None:
    async def rotate_clicked(
        ack: AsyncAck,
        action: dict[str, Any],
        body: dict[str, Any],
        client: AsyncWebClient,
        respond: AsyncRespond,
        context: AsyncBoltContext,
    ) -> None:
        await ack()
        team_id, actor = team_of(context, body), str(body["user"]["id"])
        services.background.spawn(
            open_rotation_form(
                services,
                client,
                respond,
                team_id,
                actor,
                str(body.get("trigger_id", "")),
                connection_id=str(action.get("value", "")),
            ),
            name="action:rotate",
        )

    async def rotation_submitted(
        ack: AsyncAck,
        body: dict[str, Any],
        view: dict[str, Any],
        client: AsyncWebClient,
        context: AsyncBoltContext,
    ) -> None:
        form = parse_rotation_metadata(view.get("private_metadata"))
        provider = services.providers.find(form.provider_key) if form is not None else None
        if form is None or provider is None or not form_fits(view, provider):
            await ack(response_action="errors", errors={first_input(view): STALE_FORM})
            return
        connection_id = form.connection_id
        team_id, actor = team_of(context, body), str(body["user"]["id"])
        _, raw = read_form(view, provider)
        values = provider.clean(raw)
        problems = await services.rotations.check_form(provider, values)
        if problems:
            await ack(response_action="errors", errors=problems)
            return
        name = form.name
        view_id = str(view["id"])
        try:
            claim_id = await services.rotations.claim(
                team_id,
                actor,
                provider,
                connection_id,
                name=name,
                config=provider.config_of(values),
                view_id=view_id,
            )
        except ClaimBusy:
            await ack(response_action="errors", errors={first_input(view): DATABASE_BUSY})
            return
        except Exception:
            logger.exception("recording a %s rotation failed", provider.key)
            await ack(response_action="errors", errors={first_input(view): NOTHING_CHANGED})
            return
        if claim_id is None:
            await ack(response_action="errors", errors={first_input(view): ALREADY_ROTATING})
            return
        await ack(response_action="update", view=rotation_verifying_view(provider, name))
        services.background.spawn(
            _verify_and_report(
                services, client, provider, team_id, actor, connection_id, name, values, view_id, claim_id
            ),
            name=f"rotate:{provider.key}:{team_id}",
        )

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
                decision = await services.rotations.approve(team_id, str(action.get("value", "")), actor)
            except Exception:
                logger.exception("approving a rotation failed")
                await tell_user(client, respond, actor, {"text": NOTHING_CHANGED})
                return
            await _answer(services, client, respond, decision, where, actor)

        services.background.spawn(approve(), name="action:approve-rotation")

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
        rotation_id = str(action.get("value", ""))
        where = message_of(body)

        async def ask_why() -> None:
            try:
                verdict = await asyncio.wait_for(
                    services.rotations.may_decide(team_id, rotation_id, actor), PRECHECK_SECONDS
                )
            except TimeoutError:
                verdict = None  # the submission is checked in full anyway
            except Exception:
                logger.exception("checking a rotation rejection failed")
                await tell_user(client, respond, actor, {"text": NOTHING_CHANGED})
                return
            if verdict is not None and verdict.verdict is not Verdict.DECIDED:
                await _answer(services, client, respond, verdict, where, actor)
                return
            try:
                rotation = await asyncio.wait_for(
                    services.rotations.describe(team_id, rotation_id), PRECHECK_SECONDS
                )
            except Exception:  # a timeout included: the trigger would expire anyway
                logger.exception("reading a rotation to reject failed")
                await tell_user(client, respond, actor, {"text": NOTHING_CHANGED})
                return
            if rotation is None:
                await tell_user(client, respond, actor, not_found_reply())
                return
            metadata = json.dumps({"rotation": rotation_id, "channel": where[0], "ts": where[1]})
            try:
                await client.views_open(
                    trigger_id=body["trigger_id"],
                    view=rotation_reject_modal(rotation, private_metadata=metadata),
                )
            except Exception as exc:  # an expired trigger, most likely: one more click fixes it
                logger.warning("could not open the rotation reject form: %s", slack_failure(exc))
                await tell_user(client, respond, actor, {"text": REJECT_FORM_FAILED})

        services.background.spawn(ask_why(), name="action:reject-rotation")

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
            await ack(response_action="errors", errors={ids.BLOCK_REASON: "Say why, so the requester knows."})
            return
        try:
            decision = await services.rotations.reject(
                team_id, str(metadata.get("rotation", "")), actor, reason
            )
        except Exception:
            logger.exception("rejecting a rotation failed")
            await ack(response_action="errors", errors={ids.BLOCK_REASON: NOTHING_CHANGED})
            return
        if decision.verdict is not Verdict.DECIDED:
            await ack(response_action="errors", errors={ids.BLOCK_REASON: _plain_refusal(decision)})
            return
        await ack()
        where = (str(metadata.get("channel") or ""), str(metadata.get("ts") or ""))
        services.background.spawn(
            announce_rotation(services, client, decision, where), name="view:reject-rotation"
        )

    app.action(ids.ACTION_ROTATE)(rotate_clicked)
    app.view(ids.VIEW_ROTATE)(rotation_submitted)
    app.action(ids.ACTION_APPROVE_ROTATION)(approve_clicked)
    app.action(ids.ACTION_REJECT_ROTATION)(reject_clicked)
    app.view(ids.VIEW_REJECT_ROTATION)(reason_submitted)


async def open_rotation_form(
    services: Services,
    client: AsyncWebClient,
    respond: AsyncRespond,
    team_id: str,
    actor: str,
    trigger_id: str,
    *,
    connection_id: str | None = None,
    name: str | None = None,
) -> None:
    """Check that ``actor`` may rotate the connection, then open the form (or say why not)."""
    if connection_id is None and not (name or "").strip():
        await tell_user(client, respond, actor, {"text": SAY_WHICH})
        return
    if not services.settings.admin_channel:
        # A rotation waits for an admin in that channel; without it, it would wait for nobody.
        await tell_user(client, respond, actor, {"text": NO_APPROVALS})
        return
    try:
        target = await asyncio.wait_for(
            services.rotations.may_rotate(team_id, actor, connection_id=connection_id, name=name),
            PRECHECK_SECONDS,
        )
        if isinstance(target, Refused):
            reply = refusal_message(target.message)
            if target.reason is Refusal.ROTATION_PENDING and target.connection_id is not None:
                pending = await services.rotations.pending_for(team_id, target.connection_id)
                reply = rotation_pending_reply(pending) if pending is not None else reply
            await tell_user(client, respond, actor, reply)
            return
    except TimeoutError:
        await tell_user(client, respond, actor, {"text": TOO_SLOW})
        return
    except Exception:
        logger.exception("checking a rotation failed")
        await tell_user(client, respond, actor, {"text": NOTHING_CHANGED})
        return
    connection = target.connection
    metadata = json.dumps(
        {"connection": connection.id, "provider": target.provider.key, "name": connection.name}
    )
    await open_modal(
        client,
        respond,
        actor,
        trigger_id=trigger_id,
        view=rotation_modal(target.provider, connection, private_metadata=metadata, initial=target.config),
        what="rotation",
        again="Click Rotate again." if connection_id is not None else "Run the command again.",
    )


async def _verify_and_report(
    services: Services,
    client: AsyncWebClient,
    provider: Provider,
    team_id: str,
    actor: str,
    connection_id: str,
    name: str,
    values: dict[str, Any],
    view_id: str,
    claim_id: str,
) -> None:
    """Verify and store the rotation, then show the outcome; as for a new connection
    (bot.listeners.views), the user is told once in every case."""
    try:
        outcome = await services.rotations.request(team_id, connection_id, actor, values, claim_id=claim_id)
    except asyncio.CancelledError:
        await _tell_interrupted(services, client, provider, name, actor, view_id, claim_id)
        raise
    except Exception:
        logger.exception("rotating a %s connection failed", provider.key)
        await deliver_final(
            client,
            view_id,
            actor,
            rotation_problem_view(provider, NOTHING_CHANGED),
            problem_message(provider, name, NOTHING_CHANGED),
        )
        return
    finally:
        values.clear()
    if outcome.abandoned:  # the user was told it was interrupted; a second answer would contradict it
        return
    if outcome.refused is not None:
        await deliver_final(
            client,
            view_id,
            actor,
            rotation_problem_view(provider, outcome.refused.message),
            problem_message(provider, name, outcome.refused.message),
        )
        return
    verification = outcome.verification
    if verification is None:  # every outcome that is not refused has one
        return

    def news(note: str) -> tuple[dict[str, Any], dict[str, Any]]:
        return (
            rotation_result_view(provider, name, verification, note=note, try_again_value=None),
            rotation_result_message(provider, name, verification, note=note),
        )

    note = ""
    if outcome.rotation_id is not None:
        # Stored, and the claim ended with it: no sweep will tell the user, so a shutdown gives up
        # the admin post (the request stays decidable from the status reply), not the user's news.
        try:
            posted = await _post_for_approval(services, client, team_id, outcome.rotation_id)
        except asyncio.CancelledError:
            await deliver_result(client, view_id, actor, *news(CUT_SHORT), within=LAST_WORD_SECONDS)
            raise
        note = AWAITS_APPROVAL if posted else NOT_POSTED
    await deliver_final(client, view_id, actor, *news(note))


async def _tell_interrupted(
    services: Services,
    client: AsyncWebClient,
    provider: Provider,
    name: str,
    actor: str,
    view_id: str,
    claim_id: str,
) -> None:
    """Shutdown gave up waiting: tell the user unless a sweep already did, and end the claim only
    once they were told (else the next start tells them)."""
    if not await services.rotations.claim_held(claim_id):
        return
    view, fallback = interrupted_rotation_news(provider, name)
    if await deliver_result(client, view_id, actor, view, fallback, within=LAST_WORD_SECONDS):
        await services.rotations.release_claim(claim_id)


async def _post_for_approval(
    services: Services, client: AsyncWebClient, team_id: str, rotation_id: str
) -> bool:
    try:
        return await post_rotation_request(services, client, team_id, rotation_id)
    except Exception:  # stored already: the user must still hear that, and how it goes on
        logger.exception("could not post the rotation request")
        return False


def interrupted_rotation_news(provider: Provider, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The modal and the direct message that tell a user their new credentials were not checked to
    the end: nothing changed, rotate again."""
    return rotation_problem_view(provider, INTERRUPTED), problem_message(provider, name, INTERRUPTED)


async def post_rotation_request(
    services: Services, client: AsyncWebClient, team_id: str, rotation_id: str
) -> bool:
    channel = services.settings.admin_channel
    if not channel:
        return False
    rotation = await services.rotations.describe(team_id, rotation_id)
    if rotation is None:
        return False
    try:
        posted = await client.chat_postMessage(channel=channel, **rotation_request(rotation))
    except SLACK_ERRORS as exc:
        logger.warning(
            "could not post the rotation request %s to CONNECTIONS_ADMIN_CHANNEL %s: %s",
            rotation_id,
            channel,
            channel_failure(exc, "CONNECTIONS_ADMIN_CHANNEL"),
        )
        return False
    await services.rotations.record_request_message(
        team_id, rotation_id, str(posted["channel"]), str(posted["ts"])
    )
    return True


async def _answer(
    services: Services,
    client: AsyncWebClient,
    respond: AsyncRespond,
    decision: RotationDecision,
    where: tuple[str, str],
    actor: str,
) -> None:
    if decision.verdict in (Verdict.DECIDED, Verdict.EXPIRED):
        if decision.verdict is Verdict.EXPIRED:
            await tell_user(client, respond, actor, {"text": _plain_refusal(decision)})
        await announce_rotation(services, client, decision, where)
        return
    await tell_user(client, respond, actor, _reply_for(services, decision))
    if decision.verdict is Verdict.ALREADY_DECIDED:
        await _update_request(client, decision, where)


async def announce_rotation(
    services: Services, client: AsyncWebClient, decision: RotationDecision, where: tuple[str, str]
) -> None:
    """A rotation was decided (or expired, or cancelled): update its request in place, tell the
    requester, and refresh the Home tabs that show the connection's key."""
    rotation = decision.rotation
    if rotation is None:
        return
    await _update_request(client, decision, where)
    try:
        await client.chat_postMessage(channel=rotation.requested_by, **rotation_decision_dm(rotation))
    except Exception as exc:
        logger.warning("could not tell %s about the rotation decision: %s", rotation.requested_by, exc)
    for user_id in dict.fromkeys((rotation.requested_by, rotation.connection.created_by)):
        try:
            await publish_home(services, client, rotation.team_id, user_id)
        except Exception as exc:
            logger.warning("could not republish the Home tab of %s: %s", user_id, exc)


async def _update_request(client: AsyncWebClient, decision: RotationDecision, where: tuple[str, str]) -> None:
    rotation = decision.rotation
    if rotation is None or rotation.decided_at is None:
        return
    stored = (rotation.approval_channel or "", rotation.approval_ts or "")
    channel, ts = stored if all(stored) else where
    if not (channel and ts):
        return
    try:
        await client.chat_update(channel=channel, ts=ts, **rotation_decided(rotation))
    except Exception as exc:
        logger.warning("could not update the rotation request %s/%s: %s", channel, ts, exc)


def _reply_for(services: Services, decision: RotationDecision) -> dict[str, Any]:
    if decision.verdict is Verdict.NOT_ADMIN:
        return not_admin_reply(services.rotations.policy.how_to_become())
    if decision.verdict is Verdict.ADMIN_CHECK_FAILED:
        return admin_check_failed_reply(decision.admin.why if decision.admin else "unknown")
    if decision.verdict in (Verdict.SELF_APPROVAL, Verdict.ALREADY_DECIDED):
        return refusal_message(_plain_refusal(decision))
    return not_found_reply()


def _plain_refusal(decision: RotationDecision) -> str:
    if decision.verdict is Verdict.NOT_ADMIN:
        return "Only admins of connections can decide on rotations. Nothing changed."
    if decision.verdict is Verdict.ADMIN_CHECK_FAILED:
        why = decision.admin.why if decision.admin else "unknown"
        return f"Your admin rights could not be checked with Slack ({why}), so nothing changed. Try again."
    if decision.verdict is Verdict.SELF_APPROVAL:
        return "You asked for this rotation, so another admin must decide. Nothing changed."
    if decision.verdict is Verdict.EXPIRED:
        return "This rotation request expired: nobody decided within the time limit. Nothing changed."
    if decision.verdict is Verdict.ALREADY_DECIDED and decision.rotation is not None:
        return f"Someone already decided: this rotation is {decision.rotation.status.value}. Nothing changed."
    return "This rotation no longer exists. Nothing changed."


def _first_block(provider: Provider | None) -> str:
    if provider is not None and provider.fields:
        return provider.fields[0].name
    return ids.BLOCK_NAME
