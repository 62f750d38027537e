"""Admins approve or reject in the admin channel: who may, exactly once, and what everyone sees."""

from __future__ import annotations

import asyncio
import io
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import update

from bot import ids
from bot.domain import Status
from bot.settings import Settings
from bot.store import Connection, Database
from tests.e2e.conftest import Bot, CloudKey, bot_env, running_bot
from tests.e2e.helpers import (
    form_values,
    open_create_form,
    stored,
    visible_text,
    wait_for_result,
    wait_until,
)
from tests.fakes.confluent_api import FakeConfluent
from tests.fakes.slack_api import FakeSlack, Message
from tests.support.slack_requests import (
    USER_ID,
    SlackSender,
    block_actions_on_message,
    find_action,
    payload_body,
    sign,
    view_submission,
)

REQUESTER = USER_ID
ADMIN = "U0ADMIN0001"
SECOND_ADMIN = "U0ADMIN0002"
OUTSIDER = "U0OUTSIDER1"
GROUP = "S0ADMINS01"
GROUP_MEMBER = "U0GROUPMEM1"
ADMIN_CHANNEL = "C0ADMINS01"


@pytest.fixture
def approvals_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """Extra settings for the bot of a test; indirect parametrisation overrides (None deletes)."""
    env = {
        "CONNECTIONS_ADMIN_CHANNEL": ADMIN_CHANNEL,
        "CONNECTIONS_ADMINS": f"{ADMIN},{SECOND_ADMIN}",
        "CONNECTIONS_ADMIN_GROUP": GROUP,
    }
    for name, value in getattr(request, "param", {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


@pytest.fixture
def abot(
    approvals_env: dict[str, str],
    fake_slack: FakeSlack,
    fake_confluent: tuple[FakeConfluent, str],
    migrated_database_url: str,
    captured_logs: io.StringIO,
) -> Iterator[Bot]:
    fake_slack.usergroups[GROUP] = [GROUP_MEMBER]
    settings = Settings.from_mapping(
        bot_env(fake_slack, fake_confluent[1], migrated_database_url, **approvals_env)
    )
    with running_bot(settings, fake_slack, fake_confluent[0], captured_logs) as bot:
        yield bot


def create_pending(bot: Bot, key: CloudKey, name: str = "Production Confluent Cloud") -> tuple[str, Message]:
    """Register a connection as the requester; return its id and the approval request message."""
    requests_before = len(
        [c for c in bot.slack.calls_to("chat.postMessage") if c.body.get("channel") == ADMIN_CHANNEL]
    )
    view_id = open_create_form(bot.slack, bot.sender)
    bot.sender.submit(view_id, form_values(name, key.key, key.secret))
    result = visible_text(wait_for_result(bot.slack, view_id))
    assert "awaits an admin's approval" in result
    posts = [c for c in bot.slack.calls_to("chat.postMessage") if c.body.get("channel") == ADMIN_CHANNEL]
    assert len(posts) == requests_before + 1 and posts[-1].ok
    [connection] = [c for c in stored(bot.database_url)["connections"] if c.name == name]
    return connection.id, bot.slack.message_of(posts[-1])


def click(bot: Bot, action_id: str, connection_id: str, message: Message, user: str) -> None:
    response = bot.sender.action(action_id, connection_id, on=message, user_id=user)
    assert response.status_code == 200


def stale_click(
    bot: Bot, sender: SlackSender, action_id: str, connection_id: str, seen: Message, user: str
) -> None:
    """Click a button on the copy of a message a user still has on screen (``seen``), even if the
    message has been updated since, as a Slack client with a stale view does."""
    response_url = bot.slack.issue_response_url(
        channel_id=seen.channel, user_id=user, message_ts=seen.ts, kind="actions"
    )
    payload = block_actions_on_message(
        action_id,
        connection_id,
        ephemeral=False,
        response_url=response_url,
        trigger_id=bot.slack.issue_trigger_id(),
        team_id=sender.team_id,
        user_id=user,
        channel_id=seen.channel,
        blocks=seen.blocks,
        message_ts=seen.ts,
        message_text=seen.text,
    )
    body = payload_body(payload)
    assert sender.post_raw(body, sign(body, sender.signing_secret)).status_code == 200


def replies_to(bot: Bot, user: str) -> list[str]:
    """What ``user`` was told privately in the admin channel (ephemeral replies)."""
    return [
        visible_text(m.blocks) or m.text
        for m in bot.slack.visible_messages(ADMIN_CHANNEL, user)
        if m.ephemeral
    ]


def dms_to(bot: Bot, user: str) -> list[str]:
    return [
        visible_text(c.body.get("blocks")) or str(c.body.get("text"))
        for c in bot.slack.calls_to("chat.postMessage")
        if c.body.get("channel") == user and c.ok
    ]


def audit(bot: Bot, action: str) -> list[Any]:
    return [e for e in stored(bot.database_url)["audit_events"] if e.action == action]


def test_the_request_shows_who_asked_what_was_checked_and_the_masked_key(
    abot: Bot, cloud_key: CloudKey
) -> None:
    connection_id, request = create_pending(abot, cloud_key)
    text = visible_text(request.blocks)
    assert "Production Confluent Cloud" in text and "Confluent Cloud" in text
    assert f"<@{REQUESTER}>" in text
    assert f"{cloud_key.key[:4]}…{cloud_key.key[-4:]}" in text and cloud_key.key not in text
    assert "Cloud API key accepted" in text
    for action_id in (ids.ACTION_APPROVE, ids.ACTION_REJECT):
        _, button = find_action(request.blocks, action_id)
        assert button["value"] == connection_id
    [row] = stored(abot.database_url)["connections"]
    assert (row.approval_channel, row.approval_ts) == (ADMIN_CHANNEL, request.ts)


def test_an_admin_approves_the_request_is_updated_in_place_and_the_requester_told(
    abot: Bot, cloud_key: CloudKey
) -> None:
    connection_id, request = create_pending(abot, cloud_key)
    click(abot, ids.ACTION_APPROVE, connection_id, request, ADMIN)
    wait_until(lambda: abot.slack.calls_to("chat.update"), what="the request to be updated")
    updated = abot.slack.message_of(request)
    text = visible_text(updated.blocks)
    assert "Approved" in text and f"<@{ADMIN}>" in text
    assert all(b.get("type") != "actions" for b in updated.blocks)
    wait_until(lambda: dms_to(abot, REQUESTER), what="the requester's DM")
    assert "approved" in dms_to(abot, REQUESTER)[-1].lower()
    [row] = stored(abot.database_url)["connections"]
    assert (row.status, row.decided_by) == (Status.ACTIVE, ADMIN)
    [event] = audit(abot, "connection.approved")
    assert (event.actor, event.before_status, event.after_status) == (
        ADMIN,
        Status.PENDING_APPROVAL,
        Status.ACTIVE,
    )


def test_anyone_else_is_told_only_admins_can_and_nothing_changes(abot: Bot, cloud_key: CloudKey) -> None:
    connection_id, request = create_pending(abot, cloud_key)
    click(abot, ids.ACTION_APPROVE, connection_id, request, OUTSIDER)
    wait_until(lambda: replies_to(abot, OUTSIDER), what="the outsider's reply")
    reply = replies_to(abot, OUTSIDER)[-1]
    assert "Only admins" in reply and "CONNECTIONS_ADMINS" in reply
    assert abot.slack.calls_to("chat.update") == []
    [row] = stored(abot.database_url)["connections"]
    assert row.status == Status.PENDING_APPROVAL
    assert audit(abot, "connection.approved") == []


def test_a_member_of_the_admin_user_group_may_approve(abot: Bot, cloud_key: CloudKey) -> None:
    connection_id, request = create_pending(abot, cloud_key)
    click(abot, ids.ACTION_APPROVE, connection_id, request, GROUP_MEMBER)
    wait_until(lambda: abot.slack.calls_to("chat.update"), what="the request to be updated")
    assert stored(abot.database_url)["connections"][0].status == Status.ACTIVE
    lookups = abot.slack.calls_to("usergroups.users.list")
    assert lookups and lookups[-1].body.get("usergroup") == GROUP


def test_when_slack_cannot_say_who_is_in_the_group_the_click_is_refused(
    abot: Bot, cloud_key: CloudKey
) -> None:
    # Slack refuses every membership lookup (a failed lookup is never cached, so each check asks).
    for _ in range(10):
        abot.slack.fail_next("usergroups.users.list", error="missing_scope", status=200, retry_after=None)
    connection_id, request = create_pending(abot, cloud_key)
    click(abot, ids.ACTION_APPROVE, connection_id, request, GROUP_MEMBER)
    wait_until(lambda: replies_to(abot, GROUP_MEMBER), what="the refusal")
    reply = replies_to(abot, GROUP_MEMBER)[-1]
    assert "missing_scope" in reply and "nothing changed" in reply.lower()
    assert stored(abot.database_url)["connections"][0].status == Status.PENDING_APPROVAL


@pytest.mark.parametrize(
    ("approvals_env", "allowed"),
    [
        ({"CONNECTIONS_ADMINS": REQUESTER}, False),
        ({"CONNECTIONS_ADMINS": REQUESTER, "CONNECTIONS_ALLOW_SELF_APPROVAL": "true"}, True),
    ],
    ids=["refused", "allowed-by-setting"],
    indirect=["approvals_env"],
)
def test_an_admin_cannot_approve_their_own_connection_unless_allowed(
    abot: Bot, allowed: bool, cloud_key: CloudKey
) -> None:
    connection_id, message = create_pending(abot, cloud_key)
    click(abot, ids.ACTION_APPROVE, connection_id, message, REQUESTER)
    if allowed:
        wait_until(lambda: abot.slack.calls_to("chat.update"), what="the approval")
        assert stored(abot.database_url)["connections"][0].status == Status.ACTIVE
    else:
        wait_until(lambda: replies_to(abot, REQUESTER), what="the refusal")
        assert "another admin" in replies_to(abot, REQUESTER)[-1].lower()
        assert stored(abot.database_url)["connections"][0].status == Status.PENDING_APPROVAL


def test_reject_asks_why_then_destroys_the_credential_and_tells_the_requester(
    abot: Bot, cloud_key: CloudKey
) -> None:
    connection_id, request = create_pending(abot, cloud_key)
    opened = len(abot.slack.calls_to("views.open"))
    click(abot, ids.ACTION_REJECT, connection_id, request, ADMIN)
    call = abot.slack.wait_for("views.open", count=opened + 1)[-1]
    modal_id = str(call.response["view"]["id"])
    assert abot.slack.views[modal_id]["callback_id"] == ids.VIEW_REJECT
    answer = abot.sender.submit(
        modal_id, {ids.BLOCK_REASON: "Use the <!channel> service account & a Cloud key"}, user_id=ADMIN
    )
    assert answer.status_code == 200 and not answer.content.strip()  # closes the modal

    wait_until(lambda: abot.slack.calls_to("chat.update"), what="the request to be updated")
    text = visible_text(abot.slack.message_of(request).blocks)
    assert "Rejected" in text and "service account" in text and "<!channel>" not in text
    rows = stored(abot.database_url)
    assert rows["connections"][0].status == Status.REJECTED
    assert rows["credentials"] == []
    [event] = audit(abot, "connection.rejected")
    assert event.reason == "Use the <!channel> service account & a Cloud key"
    wait_until(lambda: dms_to(abot, REQUESTER), what="the requester's DM")
    dm = dms_to(abot, REQUESTER)[-1]
    assert "rejected" in dm.lower() and "service account" in dm and "/connections" in dm


def test_a_double_click_decides_once_and_the_second_click_learns_who_decided(
    abot: Bot, cloud_key: CloudKey
) -> None:
    connection_id, request = create_pending(abot, cloud_key)
    click(abot, ids.ACTION_APPROVE, connection_id, request, ADMIN)
    wait_until(lambda: abot.slack.calls_to("chat.update"), what="the first decision")
    # A second admin clicks on the copy of the message they still have on screen.
    stale_click(abot, abot.sender, ids.ACTION_APPROVE, connection_id, request, SECOND_ADMIN)
    wait_until(lambda: replies_to(abot, SECOND_ADMIN), what="the second admin's reply")
    reply = replies_to(abot, SECOND_ADMIN)[-1]
    assert "Already approved" in reply and f"<@{ADMIN}>" in reply
    assert len(audit(abot, "connection.approved")) == 1
    assert stored(abot.database_url)["connections"][0].decided_by == ADMIN


def race(abot: Bot, cloud_key: CloudKey, name: str) -> None:
    """Two admins click Approve on the same request at the same moment."""
    connection_id, request = create_pending(abot, cloud_key, name=name)

    def already_told() -> int:
        return sum("Already approved" in r for user in (ADMIN, SECOND_ADMIN) for r in replies_to(abot, user))

    told_before = already_told()
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def decide(user: str) -> None:
        try:
            with SlackSender(abot.url, signing_secret=abot.sender.signing_secret, fake=abot.slack) as own:
                start.wait()
                stale_click(abot, own, ids.ACTION_APPROVE, connection_id, request, user)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=decide, args=(user,)) for user in (ADMIN, SECOND_ADMIN)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors

    def decided() -> list[Any]:
        events = stored(abot.database_url)["audit_events"]
        return [e for e in events if e.connection_id == connection_id and e.action == "connection.approved"]

    wait_until(lambda: decided(), what="the decision")
    row = next(c for c in stored(abot.database_url)["connections"] if c.id == connection_id)
    assert row.status == Status.ACTIVE and row.decided_by in (ADMIN, SECOND_ADMIN)
    # The other admin is told who decided; nobody else is.
    wait_until(lambda: already_told() > told_before, what="the other admin's reply")
    assert already_told() == told_before + 1
    assert len(decided()) == 1


@pytest.mark.postgres
def test_two_admins_clicking_at_once_make_exactly_one_decision(
    abot: Bot, cloud_key: CloudKey, migrated_database_url: str
) -> None:
    if not migrated_database_url.startswith("postgresql"):
        pytest.skip("the race is about PostgreSQL's concurrent transactions; SQLite serialises writers")
    for round_ in range(5):
        race(abot, cloud_key, f"race {round_}")


@pytest.mark.parametrize("approvals_env", [{"CONNECTIONS_ADMIN_CHANNEL": None}], indirect=True)
def test_without_an_admin_channel_the_user_is_told_approvals_are_not_configured(
    abot: Bot, cloud_key: CloudKey
) -> None:
    view_id = open_create_form(abot.slack, abot.sender)
    abot.sender.submit(view_id, form_values("prod", cloud_key.key, cloud_key.secret))
    text = visible_text(wait_for_result(abot.slack, view_id))
    assert "approvals are not configured" in text and "CONNECTIONS_ADMIN_CHANNEL" in text
    assert "CONNECTIONS_ADMIN_CHANNEL is not set" in abot.log_text()


def test_a_rejection_submitted_after_someone_else_decided_is_refused_in_plain_words(
    abot: Bot, cloud_key: CloudKey
) -> None:
    connection_id, request = create_pending(abot, cloud_key)
    opened = len(abot.slack.calls_to("views.open"))
    click(abot, ids.ACTION_REJECT, connection_id, request, ADMIN)
    modal_id = str(abot.slack.wait_for("views.open", count=opened + 1)[-1].response["view"]["id"])
    # While the first admin types a reason, the second approves.
    stale_click(abot, abot.sender, ids.ACTION_APPROVE, connection_id, request, SECOND_ADMIN)
    wait_until(
        lambda: stored(abot.database_url)["connections"][0].status == Status.ACTIVE, what="the approval"
    )

    answer = abot.sender.submit(modal_id, {ids.BLOCK_REASON: "too broad"}, user_id=ADMIN).json()
    assert answer["response_action"] == "errors"
    error = answer["errors"][ids.BLOCK_REASON]
    assert "already decided" in error and "active" in error and "Nothing changed" in error
    assert "<" not in error  # inline errors are plain text: no mentions or date tokens
    assert audit(abot, "connection.rejected") == []


def test_when_the_reject_form_cannot_open_the_admin_is_told(abot: Bot, cloud_key: CloudKey) -> None:
    connection_id, request = create_pending(abot, cloud_key)
    abot.slack.fail_next("views.open", error="expired_trigger_id", status=200, retry_after=None)
    click(abot, ids.ACTION_REJECT, connection_id, request, ADMIN)
    wait_until(lambda: replies_to(abot, ADMIN), what="the admin's reply")
    assert "could not be opened in time" in replies_to(abot, ADMIN)[-1]
    assert stored(abot.database_url)["connections"][0].status == Status.PENDING_APPROVAL


def test_a_real_double_click_decides_once(abot: Bot, cloud_key: CloudKey) -> None:
    connection_id, request = create_pending(abot, cloud_key)
    # Both clicks leave before the bot has answered either: the same message, twice, at once.
    stale_click(abot, abot.sender, ids.ACTION_APPROVE, connection_id, request, ADMIN)
    stale_click(abot, abot.sender, ids.ACTION_APPROVE, connection_id, request, ADMIN)
    wait_until(lambda: replies_to(abot, ADMIN), what="the reply to the second click")
    assert "Already approved" in replies_to(abot, ADMIN)[-1]
    assert len(audit(abot, "connection.approved")) == 1
    assert len([d for d in dms_to(abot, REQUESTER) if "approved" in d.lower()]) == 1


def forget_where_posted(database_url: str, connection_id: str) -> None:
    """As if the bot had posted the request but could not record where (a post recorded nowhere)."""

    async def forget() -> None:
        db = Database.from_url(database_url)
        try:
            async with db.transaction() as tx:
                await tx.session.execute(
                    update(Connection)
                    .where(Connection.id == connection_id)
                    .values(approval_channel=None, approval_ts=None)
                )
        finally:
            await db.dispose()

    asyncio.run(forget())


def test_a_reject_reason_whose_metadata_names_another_message_never_updates_it(
    abot: Bot, cloud_key: CloudKey
) -> None:
    # The request's post was not recorded, and a forged reason form names another of the bot's
    # messages: the bot used to update that one.
    connection_id, request = create_pending(abot, cloud_key)
    _, victim = create_pending(abot, cloud_key, name="Another connection")
    forget_where_posted(abot.database_url, connection_id)
    opened = len(abot.slack.calls_to("views.open"))
    click(abot, ids.ACTION_REJECT, connection_id, request, ADMIN)
    modal_id = str(abot.slack.wait_for("views.open", count=opened + 1)[-1].response["view"]["id"])
    view = {**abot.slack.open_view(modal_id), "id": modal_id}
    view["private_metadata"] = json.dumps(
        {"connection": connection_id, "channel": victim.channel, "ts": victim.ts}
    )
    payload = view_submission(
        view, {ids.BLOCK_REASON: "too broad"}, user_id=ADMIN, team_id=abot.sender.team_id
    )
    body = payload_body(payload)
    assert abot.sender.post_raw(body, sign(body, abot.sender.signing_secret)).status_code == 200

    # The request message would be updated before the requester is told.
    wait_until(
        lambda: any("rejected" in d.lower() for d in dms_to(abot, REQUESTER)), what="the requester's DM"
    )
    assert {c.id: c.status for c in stored(abot.database_url)["connections"]}[
        connection_id
    ] == Status.REJECTED
    assert [c for c in abot.slack.calls_to("chat.update") if c.body.get("ts") == victim.ts] == []
    assert "Rejected" not in visible_text(abot.slack.message_of(victim).blocks)
