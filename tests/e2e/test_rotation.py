"""Rotating a connection's credential, driven as Slack drives the bot: the form (from the command,
a status reply or a reminder), the offline checks, "Verifying…", the admin's request, Approve and
Reject, who may do each, the weekly reminder, and what is stored and used before and after."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from bot import ids
from bot.crypto import Cipher, MasterKey
from bot.domain import RotationStatus, Status
from bot.keys.guard import sealed_row
from bot.store import Connection, Credential, Database, Rotation
from tests.e2e import test_approvals
from tests.e2e.conftest import Bot, CloudKey
from tests.e2e.helpers import form_values, input_block, stored, visible_text, wait_for_result, wait_until
from tests.e2e.test_approvals import (
    ADMIN,
    ADMIN_CHANNEL,
    OUTSIDER,
    REQUESTER,
    SECOND_ADMIN,
    audit,
    click,
    dms_to,
    replies_to,
    stale_click,
)
from tests.e2e.test_security import assert_not_leaked
from tests.fakes.confluent_api import new_api_key, new_api_secret
from tests.fakes.slack_api import Call, Message
from tests.support.block_text import as_read
from tests.support.databases import dump_database_text, raw_sqlite_bytes, sqlite_path
from tests.support.seeding import Seed, seed_connections
from tests.support.slack_requests import CHANNEL_ID, find_action

# The approval tests' fixtures, found by pytest under these names in this module.
abot = test_approvals.abot
approvals_env = test_approvals.approvals_env

NAME = "Production Confluent Cloud"
ENVIRONMENTS = "/org/v2/environments"
SECRET_INPUTS = ("api_key", "api_secret")


# --- arranging -------------------------------------------------------------------------------------


def new_cloud_key(bot: Bot) -> CloudKey:
    """Another working Cloud API key, as a user creates one before rotating."""
    key = CloudKey(new_api_key(), new_api_secret())
    bot.confluent.add_cloud_key(key.key, key.secret, environments=2)
    return key


def register(bot: Bot, key: CloudKey, name: str = NAME) -> tuple[str, Message]:
    """Add a connection as the requester with ``/connections connect``; its id and the approval
    request posted to the admins."""
    opened = len(bot.slack.calls_to("views.open"))
    bot.sender.command("connect confluent_cloud")
    view_id = str(bot.slack.wait_for("views.open", count=opened + 1)[-1].response["view"]["id"])
    bot.sender.submit(view_id, form_values(name, key.key, key.secret))
    assert "awaits an admin's approval" in visible_text(wait_for_result(bot.slack, view_id))
    [row] = [
        c
        for c in stored(bot.database_url)["connections"]
        if c.name == name and c.status == Status.PENDING_APPROVAL
    ]
    [request] = [
        c
        for c in bot.slack.calls_to("chat.postMessage")
        if c.ok and any(a.get("value") == row.id for a in actions_of(c.body.get("blocks") or []))
    ]
    return str(row.id), bot.slack.message_of(request)


def actions_of(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for b in blocks if b.get("type") == "actions" for e in b.get("elements") or []]


def active_connection(bot: Bot, key: CloudKey, name: str = NAME) -> str:
    """A connection the requester registered and an admin approved; its id."""
    connection_id, request = register(bot, key, name)
    dms_before = len(dms_to(bot, REQUESTER))
    click(bot, ids.ACTION_APPROVE, connection_id, request, ADMIN)
    wait_until(lambda: connection(bot, connection_id).status == Status.ACTIVE, what="the approval")
    # The approval's direct message comes after the commit: wait for it, so a test counting the
    # requester's messages from here on does not count it.
    wait_until(lambda: len(dms_to(bot, REQUESTER)) > dms_before, what="the approval's DM")
    return connection_id


def seed_active(
    bot: Bot,
    key: CloudKey,
    name: str,
    *,
    owner: str = REQUESTER,
    age_days: int = 0,
    config: dict[str, str] | None = None,
) -> str:
    """An active connection stored directly, its credential ``age_days`` old; its id."""
    stored_at = datetime.now(UTC) - timedelta(days=age_days)
    seed = Seed(
        name=name,
        key=key.key,
        secret=key.secret,
        created_by=owner,
        credential_created_at=stored_at,
        config=config or {},
    )
    [connection_id] = asyncio.run(seed_connections(bot.database_url, cipher_of(bot), [seed]))
    return connection_id


def mask(key: str) -> str:
    return f"{key[:4]}…{key[-4:]}"


# --- reading what was stored -----------------------------------------------------------------------


def cipher_of(bot: Bot) -> Cipher:
    master_key = bot.settings.master_key
    assert master_key is not None
    return Cipher(MasterKey.from_base64(master_key))


def read_all(bot: Bot, model: Any) -> list[Any]:
    async def read() -> list[Any]:
        db = Database.from_url(bot.database_url)
        try:
            async with db.read() as tx:
                return list((await tx.session.scalars(select(model))).all())
        finally:
            await db.dispose()

    return asyncio.run(read())


def connection(bot: Bot, connection_id: str) -> Any:
    [row] = [c for c in read_all(bot, Connection) if c.id == connection_id]
    return row


def rotations(bot: Bot) -> list[Any]:
    return read_all(bot, Rotation)


def opened_credentials(bot: Bot, connection_id: str) -> dict[tuple[int, str], str]:
    """Every stored credential field of the connection, decrypted with the associated data that
    binds it to its version's settings: (version, field) -> plain text."""

    async def read() -> tuple[list[Credential], dict[tuple[str, int], str]]:
        db = Database.from_url(bot.database_url)
        try:
            async with db.read() as tx:
                rows = list(
                    await tx.session.scalars(
                        select(Credential).where(Credential.connection_id == connection_id)
                    )
                )
                return rows, await tx.credentials.bindings(rows)
        finally:
            await db.dispose()

    cipher = cipher_of(bot)
    rows, bindings = asyncio.run(read())
    return {(c.version, c.field): cipher.open(*sealed_row(c, bindings)).reveal() for c in rows}


def in_use(bot: Bot, connection_id: str) -> dict[str, str]:
    """The credential the connection uses now (its current version), decrypted."""
    version = connection(bot, connection_id).credential_version
    return {f: v for (ver, f), v in opened_credentials(bot, connection_id).items() if ver == version}


# --- driving ---------------------------------------------------------------------------------------


def replies_in_channel(bot: Bot, user: str) -> list[str]:
    """What ``user`` was told privately where they typed the command or clicked."""
    return [
        visible_text(m.blocks) or m.text for m in bot.slack.visible_messages(CHANNEL_ID, user) if m.ephemeral
    ]


def command_reply(bot: Bot, text: str, user: str) -> str:
    """Run ``/connections <text>`` as ``user``; the first reply they see."""
    before = len(replies_in_channel(bot, user))
    assert bot.sender.command(text, user_id=user).status_code == 200
    wait_until(lambda: len(replies_in_channel(bot, user)) > before, what=f"the reply to {text!r}")
    return replies_in_channel(bot, user)[before]


def status_reply(bot: Bot, name: str, user: str) -> Message:
    """``/connections status <name>`` as ``user``: the reply, with its Re-test/Rotate/Remove buttons."""
    before = len(bot.slack.visible_messages(CHANNEL_ID, user))
    bot.sender.command(f"status {name}", user_id=user)
    wait_until(lambda: len(bot.slack.visible_messages(CHANNEL_ID, user)) > before, what="the status reply")
    return bot.slack.visible_messages(CHANNEL_ID, user)[-1]


def open_rotation_by_command(bot: Bot, name: str, user: str = REQUESTER) -> str:
    """``/connections rotate <name>`` as ``user``; the id of the form it opens."""
    opened = len(bot.slack.calls_to("views.open"))
    assert bot.sender.command(f"rotate {name}", user_id=user).status_code == 200
    call = bot.slack.wait_for("views.open", count=opened + 1)[-1]
    assert call.ok, call.error
    return str(call.response["view"]["id"])


def open_rotation_by_button(bot: Bot, connection_id: str, on: Message | Call, user: str) -> str:
    opened = len(bot.slack.calls_to("views.open"))
    assert bot.sender.action(ids.ACTION_ROTATE, connection_id, on=on, user_id=user).status_code == 200
    call = bot.slack.wait_for("views.open", count=opened + 1)[-1]
    assert call.ok, call.error
    return str(call.response["view"]["id"])


def secrets_of(key: CloudKey) -> dict[str, str]:
    return {"api_key": key.key, "api_secret": key.secret}


def rotation_request_calls(bot: Bot) -> list[Call]:
    """The rotation requests posted to the admin channel (not the new connections' requests)."""
    found = []
    for call in bot.slack.calls_to("chat.postMessage"):
        if call.body.get("channel") != ADMIN_CHANNEL or not call.ok:
            continue
        try:
            find_action(call.body.get("blocks") or [], ids.ACTION_APPROVE_ROTATION)
        except ValueError:
            continue
        found.append(call)
    return found


def request_rotation(bot: Bot, view_id: str, key: CloudKey, user: str = REQUESTER) -> tuple[str, Message]:
    """Submit the form with ``key``; the id of the stored rotation and its request to the admins."""
    before = len(rotation_request_calls(bot))
    answer = bot.sender.submit(view_id, secrets_of(key), user_id=user)
    assert answer.json()["response_action"] == "update"
    result = visible_text(wait_for_result(bot.slack, view_id))
    assert "await an admin's approval" in result, result
    calls = rotation_request_calls(bot)
    assert len(calls) == before + 1
    _, approve = find_action(calls[-1].body["blocks"], ids.ACTION_APPROVE_ROTATION)
    return str(approve["value"]), bot.slack.message_of(calls[-1])


def environment_calls(bot: Bot) -> int:
    return len(bot.confluent.requests_to(ENVIRONMENTS))


def retest_keys(bot: Bot, name: str, user: str = REQUESTER) -> set[str | None]:
    """Re-test ``name`` from Slack; the API keys Confluent was called with meanwhile (it works)."""
    calls_before = environment_calls(bot)
    replies_before = len(replies_in_channel(bot, user))
    bot.sender.command(f"test {name}", user_id=user)
    wait_until(
        lambda: any("works" in r for r in replies_in_channel(bot, user)[replies_before:]),
        what="the re-test result",
    )
    made = bot.confluent.requests_to(ENVIRONMENTS)[calls_before:]
    assert made and all(r.authenticated for r in made)
    return {r.username for r in made}


def updated_in_place(bot: Bot, request: Message) -> str:
    """The request's text once it was updated in place (it must have lost its buttons)."""

    def decided() -> bool:
        return all(b.get("type") != "actions" for b in bot.slack.message_of(request).blocks)

    wait_until(decided, what="the rotation request to be updated in place")
    updated = bot.slack.message_of(request)
    assert updated.ts == request.ts and updated.channel == ADMIN_CHANNEL
    return visible_text(updated.blocks)


def new_dms(bot: Bot, user: str, before: int) -> list[str]:
    return dms_to(bot, user)[before:]


def rotation_status(bot: Bot, rotation_id: str) -> RotationStatus:
    [row] = [r for r in rotations(bot) if r.id == rotation_id]
    return RotationStatus(row.status)


# --- the happy path --------------------------------------------------------------------------------


def test_the_owner_rotates_and_the_old_key_works_until_an_admin_approves_the_new_one(
    abot: Bot, cloud_key: CloudKey
) -> None:
    connection_id = active_connection(abot, cloud_key)
    new = new_cloud_key(abot)

    # The form: the provider's fields without the Name, secrets empty, non-secret fields as stored.
    view_id = open_rotation_by_command(abot, NAME)
    form = abot.slack.views[view_id]
    assert form["callback_id"] == ids.VIEW_ROTATE
    assert form["title"]["text"] == "Rotate credentials"
    inputs = [b["block_id"] for b in form["blocks"] if b["type"] == "input"]
    assert inputs == ["api_key", "api_secret", "rest_endpoint", "cluster_id"]
    for name in SECRET_INPUTS:
        assert "initial_value" not in input_block(form, name)["element"]
    text = visible_text(form)
    assert NAME in text and mask(cloud_key.key) in text and "keeps working" in text
    assert cloud_key.key not in json.dumps(form) and cloud_key.secret not in json.dumps(form)
    assert json.loads(form["private_metadata"])["connection"] == connection_id

    # A malformed key is caught offline: an inline error, and Confluent hears nothing.
    calls_before = environment_calls(abot)
    answer = abot.sender.submit(view_id, {"api_key": "not-a-key", "api_secret": new.secret}).json()
    assert answer["response_action"] == "errors"
    assert "16 capital letters and digits" in answer["errors"]["api_key"]
    assert "16 capital letters" in abot.slack.view_errors[view_id]["api_key"]
    assert environment_calls(abot) == calls_before

    # A good one: "Verifying…" is the answer while Confluent still holds the check.
    abot.confluent.hold()
    try:
        response = abot.sender.submit(view_id, secrets_of(new))
        answer = response.json()
        assert answer["response_action"] == "update"
        assert "Verifying the new credentials" in visible_text(answer["view"])
        assert "Verifying" in visible_text(abot.slack.views[view_id])
        wait_until(lambda: abot.confluent.held >= 1, what="the verification to reach Confluent")
        assert rotations(abot) == []
    finally:
        abot.confluent.release()
    result = visible_text(wait_for_result(abot.slack, view_id))
    assert "await an admin's approval" in result and "old key keeps working" in result
    assert new.key not in result and new.secret not in result

    # The admins get a request showing both masked keys and Approve / Reject.
    [call] = rotation_request_calls(abot)
    request = abot.slack.message_of(call)
    [rotation] = rotations(abot)
    assert (rotation.status, rotation.requested_by) == (RotationStatus.PENDING_APPROVAL, REQUESTER)
    assert (rotation.approval_channel, rotation.approval_ts) == (ADMIN_CHANNEL, request.ts)
    request_text = visible_text(request.blocks)
    assert NAME in request_text and f"<@{REQUESTER}>" in request_text
    assert mask(cloud_key.key) in request_text and mask(new.key) in request_text
    for action_id in (ids.ACTION_APPROVE_ROTATION, ids.ACTION_REJECT_ROTATION):
        assert find_action(request.blocks, action_id)[1]["value"] == rotation.id

    # Until an admin decides, the connection uses the old credential, and both are stored.
    row = connection(abot, connection_id)
    assert row.key_hint == mask(cloud_key.key) and row.credential_version < rotation.version
    assert in_use(abot, connection_id) == secrets_of(cloud_key)
    assert opened_credentials(abot, connection_id)[(rotation.version, "api_secret")] == new.secret
    assert retest_keys(abot, NAME) == {cloud_key.key}

    # An admin approves: the request is updated in place and the requester told.
    dms_before = len(dms_to(abot, REQUESTER))
    click(abot, ids.ACTION_APPROVE_ROTATION, rotation.id, request, ADMIN)
    decided = updated_in_place(abot, request)
    assert "Approved" in decided and f"<@{ADMIN}>" in decided
    wait_until(lambda: new_dms(abot, REQUESTER, dms_before), what="the requester's DM")
    [dm] = new_dms(abot, REQUESTER, dms_before)
    assert "approved" in dm and mask(new.key) in dm and "delete the old key" in dm

    # Only the new version is stored; the old one is gone for good.
    row = connection(abot, connection_id)
    assert (row.status, row.key_hint, row.credential_version) == (
        Status.ACTIVE,
        mask(new.key),
        rotation.version,
    )
    assert opened_credentials(abot, connection_id) == {
        (rotation.version, "api_key"): new.key,
        (rotation.version, "api_secret"): new.secret,
    }
    dump = dump_database_text(abot.database_url)
    assert cloud_key.secret not in dump and cloud_key.key not in dump
    if abot.database_url.startswith("sqlite"):
        raw = raw_sqlite_bytes(sqlite_path(abot.database_url))
        assert cloud_key.secret.encode() not in raw and new.secret.encode() not in raw
    assert rotation_status(abot, rotation.id) is RotationStatus.APPROVED
    [event] = audit(abot, "connection.rotated")
    assert event.actor == ADMIN and event.connection_id == connection_id
    assert event.details["rotation"] == rotation.id

    # From now on the connection uses the new key.
    assert retest_keys(abot, NAME) == {new.key}
    assert_not_leaked(abot, cloud_key.key, cloud_key.secret)
    assert_not_leaked(abot, new.key, new.secret)


def test_a_new_key_confluent_rejects_is_explained_and_nothing_is_stored(
    abot: Bot, cloud_key: CloudKey
) -> None:
    connection_id = active_connection(abot, cloud_key)
    unknown = CloudKey(new_api_key(), new_api_secret())  # well formed, but Confluent never issued it
    credentials_before = opened_credentials(abot, connection_id)
    view_id = open_rotation_by_command(abot, NAME)
    abot.sender.submit(view_id, secrets_of(unknown))
    result = visible_text(wait_for_result(abot.slack, view_id))

    assert "Check both for typos, a missing or extra character" in result
    assert "keeps using its current Confluent Cloud key" in result
    assert "await" not in result
    last = abot.confluent.requests_to(ENVIRONMENTS)[-1]
    assert (last.username, last.authenticated) == (unknown.key, False)
    assert rotations(abot) == []
    assert rotation_request_calls(abot) == []
    assert opened_credentials(abot, connection_id) == credentials_before
    assert connection(abot, connection_id).key_hint == mask(cloud_key.key)
    [event] = audit(abot, "connection.rotation_failed")
    assert (event.actor, event.reason) == (REQUESTER, "unauthorized")
    assert retest_keys(abot, NAME) == {cloud_key.key}
    assert_not_leaked(abot, unknown.key, unknown.secret)


def test_a_failing_key_is_alerted_with_a_rotate_button_that_leads_to_a_working_key(
    abot: Bot, cloud_key: CloudKey
) -> None:
    connection_id = active_connection(abot, cloud_key)
    abot.confluent.revoke_key(cloud_key.key)  # deleted at Confluent, e.g. after a leak

    before = len(replies_in_channel(abot, REQUESTER))
    abot.sender.command(f"test {NAME}")
    wait_until(lambda: alerts(abot), what="the alert")
    [alert_call] = alerts(abot)
    alert = abot.slack.message_of(alert_call)
    assert NAME in visible_text(alert.blocks) and "failing" in visible_text(alert.blocks)
    wait_until(lambda: len(replies_in_channel(abot, REQUESTER)) > before + 1, what="the re-test result")

    new = new_cloud_key(abot)
    view_id = open_rotation_by_button(abot, connection_id, alert, REQUESTER)
    rotation_id, request = request_rotation(abot, view_id, new)
    click(abot, ids.ACTION_APPROVE_ROTATION, rotation_id, request, ADMIN)
    assert "Approved" in updated_in_place(abot, request)

    assert retest_keys(abot, NAME) == {new.key}
    wait_until(
        lambda: any(m.thread_ts == alert.ts for m in abot.slack.messages),
        what="the recovery reply in the alert's thread",
    )
    [recovery] = [m for m in abot.slack.messages if m.thread_ts == alert.ts]
    assert "works again" in recovery.text
    assert_not_leaked(abot, new.key, new.secret)


def alerts(bot: Bot) -> list[Call]:
    """Health alerts in the alert channel (the admin channel here): the ones with a Rotate button."""
    found = []
    for call in bot.slack.calls_to("chat.postMessage"):
        if call.body.get("channel") != ADMIN_CHANNEL or not call.ok or call.body.get("thread_ts"):
            continue
        try:
            find_action(call.body.get("blocks") or [], ids.ACTION_ROTATE)
        except ValueError:
            continue
        found.append(call)
    return found


def test_two_approvals_at_once_swap_the_key_once(abot: Bot, cloud_key: CloudKey) -> None:
    connection_id = active_connection(abot, cloud_key)
    new = new_cloud_key(abot)
    rotation_id, request = request_rotation(abot, open_rotation_by_command(abot, NAME), new)

    # Both admins click on the copy they have on screen before the bot has answered either.
    for admin in (ADMIN, SECOND_ADMIN):
        stale_click(abot, abot.sender, ids.ACTION_APPROVE_ROTATION, rotation_id, request, admin)

    def told() -> list[str]:
        return [r for user in (ADMIN, SECOND_ADMIN) for r in replies_to(abot, user) if "already decided" in r]

    wait_until(told, what="the slower admin's reply")
    assert len(told()) == 1 and "approved" in told()[0] and "Nothing changed" in told()[0]
    assert len(audit(abot, "connection.rotated")) == 1
    assert "Approved" in updated_in_place(abot, request)
    assert opened_credentials(abot, connection_id) == {
        (connection(abot, connection_id).credential_version, "api_key"): new.key,
        (connection(abot, connection_id).credential_version, "api_secret"): new.secret,
    }


def test_the_replaced_ciphertext_is_gone_from_the_sqlite_file_too(abot: Bot, cloud_key: CloudKey) -> None:
    if not abot.database_url.startswith("sqlite"):
        pytest.skip("only SQLite's files can be read here")
    connection_id = active_connection(abot, cloud_key)
    replaced = [bytes(c.ciphertext) for c in stored(abot.database_url)["credentials"]]
    new = new_cloud_key(abot)
    rotation_id, request = request_rotation(abot, open_rotation_by_command(abot, NAME), new)
    click(abot, ids.ACTION_APPROVE_ROTATION, rotation_id, request, ADMIN)
    updated_in_place(abot, request)
    assert in_use(abot, connection_id) == secrets_of(new)

    raw = raw_sqlite_bytes(sqlite_path(abot.database_url))
    assert [c for c in replaced if c in raw] == []


# --- rejection -------------------------------------------------------------------------------------


def test_a_rejected_rotation_destroys_the_new_key_keeps_the_old_and_tells_the_requester_why(
    abot: Bot, cloud_key: CloudKey
) -> None:
    connection_id = active_connection(abot, cloud_key)
    new = new_cloud_key(abot)
    rotation_id, request = request_rotation(abot, open_rotation_by_command(abot, NAME), new)
    assert len(opened_credentials(abot, connection_id)) == 4

    opened = len(abot.slack.calls_to("views.open"))
    click(abot, ids.ACTION_REJECT_ROTATION, rotation_id, request, ADMIN)
    call = abot.slack.wait_for("views.open", count=opened + 1)[-1]
    modal_id = str(call.response["view"]["id"])
    assert abot.slack.views[modal_id]["callback_id"] == ids.VIEW_REJECT_ROTATION
    dms_before = len(dms_to(abot, REQUESTER))
    reason = "Use the <!channel> service account & not a personal key"
    answer = abot.sender.submit(modal_id, {ids.BLOCK_REASON: reason}, user_id=ADMIN)
    assert answer.status_code == 200 and not answer.content.strip()  # closes the modal

    decided = updated_in_place(abot, request)
    assert "Rejected" in decided and f"<@{ADMIN}>" in decided
    assert "service account" in decided and "<!channel>" not in decided
    assert rotation_status(abot, rotation_id) is RotationStatus.REJECTED
    assert opened_credentials(abot, connection_id) == {
        (connection(abot, connection_id).credential_version, "api_key"): cloud_key.key,
        (connection(abot, connection_id).credential_version, "api_secret"): cloud_key.secret,
    }
    assert connection(abot, connection_id).key_hint == mask(cloud_key.key)
    [event] = audit(abot, "connection.rotation_rejected")
    assert (event.actor, event.reason) == (ADMIN, reason)

    wait_until(lambda: new_dms(abot, REQUESTER, dms_before), what="the requester's DM")
    dm_call = [c for c in abot.slack.calls_to("chat.postMessage") if c.body.get("channel") == REQUESTER][-1]
    dm = visible_text(dm_call.body["blocks"])
    assert "rejected" in dm and "service account" in dm and "<!channel>" not in dm
    assert "keeps using its current key" in dm
    # The DM's Rotate button opens the form again.
    assert find_action(dm_call.body["blocks"], ids.ACTION_ROTATE)[1]["value"] == connection_id
    again = open_rotation_by_button(abot, connection_id, dm_call, REQUESTER)
    assert abot.slack.views[again]["callback_id"] == ids.VIEW_ROTATE

    assert retest_keys(abot, NAME) == {cloud_key.key}
    assert_not_leaked(abot, new.key, new.secret)
    assert_not_leaked(abot, cloud_key.key, cloud_key.secret)


# --- who may -----------------------------------------------------------------------------------------


def test_an_outsider_may_neither_rotate_nor_remove_and_nothing_changes(
    abot: Bot, cloud_key: CloudKey
) -> None:
    connection_id = active_connection(abot, cloud_key)
    credentials_before = opened_credentials(abot, connection_id)
    opened_before = len(abot.slack.calls_to("views.open"))

    refusal = command_reply(abot, f"rotate {NAME}", OUTSIDER)
    assert "Only the person who added this connection, or an admin" in refusal and "rotate it" in refusal
    refusal = command_reply(abot, f"remove {NAME}", OUTSIDER)
    assert "Only the person who added this connection, or an admin" in refusal and "remove it" in refusal
    assert all(
        b.get("type") != "actions" for m in abot.slack.messages for b in m.blocks if m.user == OUTSIDER
    )

    # The status reply shows the buttons to anyone; a click is checked on the server all the same.
    status = status_reply(abot, NAME, OUTSIDER)
    for action_id, what in ((ids.ACTION_ROTATE, "rotate it"), (ids.ACTION_REMOVE, "remove it")):
        before = len(replies_in_channel(abot, OUTSIDER))
        click(abot, action_id, connection_id, status, OUTSIDER)
        wait_until(lambda b=before: len(replies_in_channel(abot, OUTSIDER)) > b, what="the refusal")
        reply = replies_in_channel(abot, OUTSIDER)[-1]
        assert "Only the person who added this connection, or an admin" in reply and what in reply

    assert len(abot.slack.calls_to("views.open")) == opened_before
    row = connection(abot, connection_id)
    assert (row.status, row.key_hint) == (Status.ACTIVE, mask(cloud_key.key))
    assert opened_credentials(abot, connection_id) == credentials_before
    assert rotations(abot) == []
    assert audit(abot, "connection.removed") == []


@pytest.mark.parametrize(
    ("approvals_env", "allowed"),
    [
        ({}, False),
        ({"CONNECTIONS_ALLOW_SELF_APPROVAL": "true"}, True),
    ],
    ids=["refused", "allowed-by-setting"],
    indirect=["approvals_env"],
)
def test_an_admin_may_rotate_a_connection_they_do_not_own_but_not_approve_it_unless_allowed(
    abot: Bot, allowed: bool, cloud_key: CloudKey
) -> None:
    connection_id = active_connection(abot, cloud_key)
    new = new_cloud_key(abot)
    # The admin rotates from the status reply's Rotate button.
    status = status_reply(abot, NAME, SECOND_ADMIN)
    view_id = open_rotation_by_button(abot, connection_id, status, SECOND_ADMIN)
    rotation_id, request = request_rotation(abot, view_id, new, user=SECOND_ADMIN)
    request_text = visible_text(request.blocks)
    assert f"<@{SECOND_ADMIN}>" in request_text and f"<@{REQUESTER}>" in request_text  # asker, owner

    click(abot, ids.ACTION_APPROVE_ROTATION, rotation_id, request, SECOND_ADMIN)
    if allowed:
        assert "Approved" in updated_in_place(abot, request)
        assert connection(abot, connection_id).key_hint == mask(new.key)
        assert in_use(abot, connection_id) == secrets_of(new)
        return
    wait_until(lambda: replies_to(abot, SECOND_ADMIN), what="the refusal")
    assert "another admin must decide" in replies_to(abot, SECOND_ADMIN)[-1]
    assert rotation_status(abot, rotation_id) is RotationStatus.PENDING_APPROVAL
    assert in_use(abot, connection_id) == secrets_of(cloud_key)
    assert any(b.get("type") == "actions" for b in abot.slack.message_of(request).blocks)
    # Another admin may.
    click(abot, ids.ACTION_APPROVE_ROTATION, rotation_id, request, ADMIN)
    assert "Approved" in updated_in_place(abot, request)
    assert in_use(abot, connection_id) == secrets_of(new)


def test_only_admins_may_approve_a_rotation(abot: Bot, cloud_key: CloudKey) -> None:
    connection_id = active_connection(abot, cloud_key)
    new = new_cloud_key(abot)
    rotation_id, request = request_rotation(abot, open_rotation_by_command(abot, NAME), new)

    # Neither the owner who asked (not an admin) nor an outsider may approve, or reject.
    opened_before = len(abot.slack.calls_to("views.open"))
    for user in (REQUESTER, OUTSIDER):
        for action_id in (ids.ACTION_APPROVE_ROTATION, ids.ACTION_REJECT_ROTATION):
            before = len(replies_to(abot, user))
            click(abot, action_id, rotation_id, request, user)
            wait_until(lambda u=user, b=before: len(replies_to(abot, u)) > b, what="the refusal")
            reply = replies_to(abot, user)[-1]
            assert "Only admins" in reply and "CONNECTIONS_ADMINS" in reply
    assert len(abot.slack.calls_to("views.open")) == opened_before
    assert rotation_status(abot, rotation_id) is RotationStatus.PENDING_APPROVAL
    assert in_use(abot, connection_id) == secrets_of(cloud_key)
    assert [c for c in abot.slack.calls_to("chat.update") if c.body.get("ts") == request.ts] == []
    assert audit(abot, "connection.rotated") == []


def test_a_second_rotation_waits_for_the_first_to_be_decided(abot: Bot, cloud_key: CloudKey) -> None:
    active_connection(abot, cloud_key)
    first, second = new_cloud_key(abot), new_cloud_key(abot)
    request_rotation(abot, open_rotation_by_command(abot, NAME), first)
    opened_before = len(abot.slack.calls_to("views.open"))

    reply = command_reply(abot, f"rotate {NAME}", REQUESTER)
    # Who asked for the waiting rotation, and which key it brings (masked).
    assert "already waits for an admin's approval" in reply
    assert f"<@{REQUESTER}>" in reply and first.key[-4:] in reply
    assert len(abot.slack.calls_to("views.open")) == opened_before
    assert len(rotations(abot)) == 1
    assert second.key not in json.dumps([c.body for c in abot.slack.calls], default=str)


def test_the_command_says_how_to_name_the_connection_and_what_is_wrong(
    abot: Bot, cloud_key: CloudKey
) -> None:
    assert "/connections rotate &lt;name&gt;" in command_reply(abot, "rotate", REQUESTER)
    unknown = command_reply(abot, "rotate No <!channel> Such", REQUESTER)
    assert "There is no connection named" in unknown and "<!channel>" not in unknown
    assert abot.slack.calls_to("views.open") == []

    # A form that cannot open in time (an expired trigger) is explained rather than lost.
    active_connection(abot, cloud_key)
    abot.slack.fail_next("views.open", error="expired_trigger_id", status=200, retry_after=None)
    assert "could not open" in command_reply(abot, f"rotate {NAME}", REQUESTER)
    assert rotations(abot) == []


def test_when_the_request_cannot_be_posted_the_user_is_told_to_check_the_admin_channel(
    abot: Bot, cloud_key: CloudKey
) -> None:
    active_connection(abot, cloud_key)
    new = new_cloud_key(abot)
    view_id = open_rotation_by_command(abot, NAME)
    abot.slack.fail_next("chat.postMessage", error="channel_not_found", status=200, retry_after=None)
    abot.sender.submit(view_id, secrets_of(new))
    result = visible_text(wait_for_result(abot.slack, view_id))
    assert "could not be posted" in result and "CONNECTIONS_ADMIN_CHANNEL" in result
    [rotation] = rotations(abot)
    assert rotation.status == RotationStatus.PENDING_APPROVAL and rotation.approval_ts is None

    # Not stuck: an admin decides from the status reply instead.
    status = status_reply(abot, NAME, ADMIN)
    _, approve = find_action(status.blocks, ids.ACTION_APPROVE_ROTATION)
    assert approve["value"] == rotation.id
    click(abot, ids.ACTION_APPROVE_ROTATION, rotation.id, status, ADMIN)
    wait_until(lambda: rotation_status(abot, rotation.id) is RotationStatus.APPROVED, what="the approval")
    assert in_use(abot, connection(abot, rotation.connection_id).id) == secrets_of(new)


@pytest.mark.parametrize("approvals_env", [{"CONNECTIONS_ADMIN_CHANNEL": None}], indirect=True)
def test_without_an_admin_channel_a_rotation_is_refused_before_anything_is_asked(
    abot: Bot, cloud_key: CloudKey
) -> None:
    connection_id = seed_active(abot, cloud_key, NAME)
    opened = len(abot.slack.calls_to("views.open"))
    reply = command_reply(abot, f"rotate {NAME}", REQUESTER)
    assert "approvals are not configured" in reply and "CONNECTIONS_ADMIN_CHANNEL" in reply
    assert len(abot.slack.calls_to("views.open")) == opened
    assert rotations(abot) == [] and connection(abot, connection_id).credential_version == 1


# --- reminders ---------------------------------------------------------------------------------------

FAST_SCHEDULE = {"CONNECTIONS_RETEST_INTERVAL_MINUTES": "0.5", "CONNECTIONS_ROTATION_DAYS": "90"}
"""The health schedule then ticks about twice a second; rotation reminders go out on its ticks."""
TICK_WAIT = 20.0
"""How long a test waits for a tick's effect before failing (a bound on hanging, not a measurement)."""


def reminders_to(bot: Bot, user: str) -> list[Call]:
    found = []
    for call in bot.slack.calls_to("chat.postMessage"):
        if call.body.get("channel") != user or not call.ok:
            continue
        if "Time to rotate" in visible_text(call.body.get("blocks")):
            found.append(call)
    return found


@pytest.mark.parametrize("approvals_env", [FAST_SCHEDULE], indirect=True)
def test_the_owner_of_an_old_key_is_reminded_once_with_a_rotate_button(
    abot: Bot, cloud_key: CloudKey
) -> None:
    old = seed_active(abot, cloud_key, "Old Confluent Cloud", age_days=100)
    fresh_key = new_cloud_key(abot)
    seed_active(abot, fresh_key, "Fresh Confluent Cloud", age_days=10)

    wait_until(lambda: reminders_to(abot, REQUESTER), timeout=TICK_WAIT, what="the reminder")
    [reminder] = reminders_to(abot, REQUESTER)
    text = visible_text(reminder.body["blocks"])
    assert "Old Confluent Cloud" in text and "Fresh Confluent Cloud" not in text
    assert "100 days old" in text and "90 days" in text and mask(cloud_key.key) in text
    assert find_action(reminder.body["blocks"], ids.ACTION_ROTATE)[1]["value"] == old
    assert connection(abot, old).rotation_reminded_at is not None

    # Two more ticks pass (each reminds a newly stored old key, which proves it ran) ...
    for owner in ("U0OTHEROWN1", "U0OTHEROWN2"):
        other = new_cloud_key(abot)
        seed_active(abot, other, f"Old key of {owner}", owner=owner, age_days=200)
        wait_until(lambda owner=owner: reminders_to(abot, owner), timeout=TICK_WAIT, what="a later tick")
    # ... without reminding the first owner again.
    assert len(reminders_to(abot, REQUESTER)) == 1

    # The reminder's button opens the rotation form.
    view_id = open_rotation_by_button(abot, old, reminder, REQUESTER)
    form = abot.slack.views[view_id]
    assert form["callback_id"] == ids.VIEW_ROTATE and "Old Confluent Cloud" in visible_text(form)
    assert_not_leaked(abot, cloud_key.key, cloud_key.secret)


# --- expiry --------------------------------------------------------------------------------------------

EXPIRING = {"CONNECTIONS_APPROVAL_TTL_HOURS": "0.001", "CONNECTIONS_EXPIRY_CHECK_SECONDS": "0.2"}
"""0.001 hours is 3.6 seconds: long enough for the request to be posted first."""


@pytest.mark.parametrize("approvals_env", [EXPIRING], indirect=True)
def test_an_undecided_rotation_expires_and_the_old_key_stays(abot: Bot, cloud_key: CloudKey) -> None:
    connection_id = seed_active(abot, cloud_key, NAME)
    new = new_cloud_key(abot)
    dms_before = len(dms_to(abot, REQUESTER))
    rotation_id, request = request_rotation(abot, open_rotation_by_command(abot, NAME), new)

    decided = updated_in_place(abot, request)
    assert "Expired" in decided and "nobody decided in time" in decided
    assert rotation_status(abot, rotation_id) is RotationStatus.EXPIRED
    assert in_use(abot, connection_id) == secrets_of(cloud_key)
    assert len(opened_credentials(abot, connection_id)) == 2
    wait_until(lambda: new_dms(abot, REQUESTER, dms_before), what="the requester's DM")
    assert "expired" in new_dms(abot, REQUESTER, dms_before)[-1]
    # A late approval, on the copy of the request the admin still has on screen, changes nothing.
    stale_click(abot, abot.sender, ids.ACTION_APPROVE_ROTATION, rotation_id, request, ADMIN)
    wait_until(lambda: replies_to(abot, ADMIN), what="the late approver's reply")
    assert "expired" in replies_to(abot, ADMIN)[-1]
    assert in_use(abot, connection_id) == secrets_of(cloud_key)
    assert audit(abot, "connection.rotated") == []


# --- secrets -------------------------------------------------------------------------------------------


def test_no_old_or_new_secret_leaks_through_a_rotation_a_rejection_and_an_approval(
    abot: Bot, cloud_key: CloudKey
) -> None:
    connection_id = active_connection(abot, cloud_key)
    rejected, approved = new_cloud_key(abot), new_cloud_key(abot)
    typo = CloudKey(approved.key, new_api_secret())

    # A typo (Confluent says no), a rejected rotation, then an approved one.
    view_id = open_rotation_by_command(abot, NAME)
    abot.sender.submit(view_id, secrets_of(typo))
    wait_for_result(abot.slack, view_id)
    rotation_id, request = request_rotation(abot, open_rotation_by_command(abot, NAME), rejected)
    opened = len(abot.slack.calls_to("views.open"))
    click(abot, ids.ACTION_REJECT_ROTATION, rotation_id, request, ADMIN)
    modal_id = str(abot.slack.wait_for("views.open", count=opened + 1)[-1].response["view"]["id"])
    abot.sender.submit(modal_id, {ids.BLOCK_REASON: "wrong account"}, user_id=ADMIN)
    updated_in_place(abot, request)
    rotation_id, request = request_rotation(abot, open_rotation_by_command(abot, NAME), approved)
    click(abot, ids.ACTION_APPROVE_ROTATION, rotation_id, request, ADMIN)
    updated_in_place(abot, request)
    assert retest_keys(abot, NAME) == {approved.key}
    assert in_use(abot, connection_id) == secrets_of(approved)

    for key in (cloud_key, rejected, approved, typo):
        assert_not_leaked(abot, key.key, key.secret)
    # The search has teeth: the journey was logged, and Slack was shown masked keys.
    assert connection_id in abot.log_text()
    shown = json.dumps([c.body for c in abot.slack.calls], ensure_ascii=False)
    assert mask(approved.key) in shown and mask(cloud_key.key) in shown


def test_a_rotation_that_changes_the_endpoint_shows_before_and_after_to_admin_and_requester(
    abot: Bot, cloud_key: CloudKey
) -> None:
    old = {"rest_endpoint": "https://pkc-old.example.com:443", "cluster_id": "lkc-old1"}
    connection_id = seed_active(abot, cloud_key, NAME, config=old)
    view_id = open_rotation_by_command(abot, NAME)
    assert (
        input_block(abot.slack.views[view_id], "rest_endpoint")["element"]["initial_value"]
        == old["rest_endpoint"]
    )
    new = new_cloud_key(abot)

    # The requester empties the cluster fields: the connection would no longer check that cluster.
    answer = abot.sender.submit(view_id, {**secrets_of(new), "rest_endpoint": "", "cluster_id": ""})
    assert answer.json()["response_action"] == "update"
    confirmation = visible_text(wait_for_result(abot.slack, view_id))
    [call] = rotation_request_calls(abot)
    request = visible_text(call.body["blocks"])

    for shown in (request, confirmation):
        assert "This rotation also changes" in shown
        assert "*REST endpoint*: https://pkc-old.example.com:443 → (not set)" in as_read(shown)
        assert "*Cluster ID*: lkc-old1 → (not set)" in shown
    assert connection(abot, connection_id).config == old  # nothing changes before an approval


def test_a_rotation_of_the_secret_alone_says_only_the_secret_changes(abot: Bot, cloud_key: CloudKey) -> None:
    active_connection(abot, cloud_key)
    view_id = open_rotation_by_command(abot, NAME)
    _, request = request_rotation(abot, view_id, new_cloud_key(abot))
    assert "Only the secret changes" in visible_text(request.blocks)
    assert "Only the secret changes" in visible_text(abot.slack.views[view_id])
