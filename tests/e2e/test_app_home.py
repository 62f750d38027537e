"""The App Home tab over signed HTTP: what a requester and an admin see when they open it, deciding
from it, and the tab following every decision."""

from __future__ import annotations

import time
from typing import Any

from bot import ids
from bot.domain import Status
from tests.e2e import test_approvals
from tests.e2e.conftest import Bot, CloudKey
from tests.e2e.helpers import stored, visible_text, wait_until
from tests.e2e.test_approvals import (
    ADMIN,
    GROUP_MEMBER,
    OUTSIDER,
    REQUESTER,
    SECOND_ADMIN,
    audit,
    click,
    create_pending,
    dms_to,
)
from tests.support.slack_requests import find_action

# The bot of the approval tests (two listed admins, a user group, an admin channel), as fixtures here.
abot = test_approvals.abot
approvals_env = test_approvals.approvals_env

NAME = "Production Confluent Cloud"


def home_opened(user: str, *, tab: str = "home") -> dict[str, Any]:
    """The ``app_home_opened`` event Slack sends when ``user`` opens a tab of the app."""
    return {
        "type": "app_home_opened",
        "user": user,
        "channel": "D0APPHOME1",
        "tab": tab,
        "event_ts": f"{time.time():.6f}",
    }


def publishes_to(bot: Bot, user: str) -> list[Any]:
    return [c for c in bot.slack.calls_to("views.publish") if c.body.get("user_id") == user]


def open_home(bot: Bot, user: str) -> dict[str, Any]:
    """``user`` opens the Home tab; return it once the bot has published it."""
    before = len(publishes_to(bot, user))
    response = bot.sender.event(home_opened(user))
    assert response.status_code == 200
    wait_until(lambda: len(publishes_to(bot, user)) > before, what=f"the Home tab of {user}")
    call = publishes_to(bot, user)[-1]
    assert call.ok, call.error
    home = bot.slack.home_view(user)
    assert home is not None
    return home


def republished(bot: Bot, user: str, after: int) -> dict[str, Any]:
    """The Home of ``user`` once the bot has published it more than ``after`` times."""
    wait_until(lambda: len(publishes_to(bot, user)) > after, what=f"the Home tab of {user} to be republished")
    assert all(c.ok for c in publishes_to(bot, user))
    home = bot.slack.home_view(user)
    assert home is not None
    return home


def has_button(home: dict[str, Any], action_id: str, value: str) -> bool:
    try:
        find_action(home["blocks"], action_id, value)
    except ValueError:
        return False
    return True


def test_the_requester_sees_their_connection_awaiting_approval(abot: Bot, cloud_key: CloudKey) -> None:
    connection_id, _ = create_pending(abot, cloud_key, name=NAME)
    home = open_home(abot, REQUESTER)
    text = visible_text(home)
    assert NAME in text and "awaiting approval" in text
    assert f"{cloud_key.key[:4]}…{cloud_key.key[-4:]}" in text
    assert cloud_key.key not in str(home) and cloud_key.secret not in str(home)
    # Not an admin: no decision to make, and a way to add another connection.
    assert "Waiting for your decision" not in text
    assert not has_button(home, ids.ACTION_APPROVE, connection_id)
    assert has_button(home, ids.ACTION_CONNECT, "confluent_cloud")


def test_the_messages_tab_publishes_nothing(abot: Bot) -> None:
    assert abot.sender.event(home_opened(REQUESTER, tab="messages")).status_code == 200
    open_home(abot, ADMIN)  # a later event, handled after the first one
    assert publishes_to(abot, REQUESTER) == []


def test_an_admin_sees_the_pending_request_with_approve_and_reject(abot: Bot, cloud_key: CloudKey) -> None:
    connection_id, _ = create_pending(abot, cloud_key, name=NAME)
    home = open_home(abot, ADMIN)
    text = visible_text(home)
    assert "Waiting for your decision" in text and NAME in text and f"<@{REQUESTER}>" in text
    assert "Cloud API key accepted" in text
    assert has_button(home, ids.ACTION_APPROVE, connection_id)
    assert has_button(home, ids.ACTION_REJECT, connection_id)
    assert cloud_key.secret not in str(home)


def test_approving_from_home_updates_the_request_tells_the_requester_and_republishes_both_homes(
    abot: Bot, cloud_key: CloudKey
) -> None:
    connection_id, request = create_pending(abot, cloud_key, name=NAME)
    open_home(abot, REQUESTER)
    admin_home = open_home(abot, ADMIN)
    admin_before, requester_before = len(publishes_to(abot, ADMIN)), len(publishes_to(abot, REQUESTER))

    response = abot.sender.action(ids.ACTION_APPROVE, connection_id, on=admin_home["id"], user_id=ADMIN)
    assert response.status_code == 200

    # The request in the admin channel is updated in place, though the click came from elsewhere.
    wait_until(lambda: abot.slack.calls_to("chat.update"), what="the request to be updated")
    updated = abot.slack.message_of(request)
    assert "Approved" in visible_text(updated.blocks) and f"<@{ADMIN}>" in visible_text(updated.blocks)
    assert all(b.get("type") != "actions" for b in updated.blocks)
    wait_until(lambda: dms_to(abot, REQUESTER), what="the requester's DM")
    assert "approved" in dms_to(abot, REQUESTER)[-1].lower()

    admin_after = republished(abot, ADMIN, admin_before)
    assert not has_button(admin_after, ids.ACTION_APPROVE, connection_id)
    assert "Nothing is waiting for a decision" in visible_text(admin_after)
    requester_after = republished(abot, REQUESTER, requester_before)
    text = visible_text(requester_after)
    assert NAME in text and "active" in text and "awaiting approval" not in text

    [row] = stored(abot.database_url)["connections"]
    assert (row.status, row.decided_by) == (Status.ACTIVE, ADMIN)
    assert len(audit(abot, "connection.approved")) == 1


def test_rejecting_from_home_asks_why_then_updates_the_request_and_both_homes(
    abot: Bot, cloud_key: CloudKey
) -> None:
    connection_id, request = create_pending(abot, cloud_key, name=NAME)
    admin_home = open_home(abot, ADMIN)
    admin_before, requester_before = len(publishes_to(abot, ADMIN)), len(publishes_to(abot, REQUESTER))
    opened = len(abot.slack.calls_to("views.open"))

    abot.sender.action(ids.ACTION_REJECT, connection_id, on=admin_home["id"], user_id=ADMIN)
    call = abot.slack.wait_for("views.open", count=opened + 1)[-1]
    assert call.ok, call.error
    modal_id = str(call.response["view"]["id"])
    answer = abot.sender.submit(modal_id, {ids.BLOCK_REASON: "Use a service account key"}, user_id=ADMIN)
    assert answer.status_code == 200

    wait_until(lambda: abot.slack.calls_to("chat.update"), what="the request to be updated")
    assert "Rejected" in visible_text(abot.slack.message_of(request).blocks)
    assert "rejected" in visible_text(republished(abot, REQUESTER, requester_before))
    assert not has_button(republished(abot, ADMIN, admin_before), ids.ACTION_REJECT, connection_id)
    assert stored(abot.database_url)["connections"][0].status == Status.REJECTED


def test_a_decision_in_the_channel_republishes_homes_and_a_stale_home_click_learns_who_decided(
    abot: Bot, cloud_key: CloudKey
) -> None:
    connection_id, request = create_pending(abot, cloud_key, name=NAME)
    # An admin by group membership: not listed, so their open Home is not republished and goes stale.
    stale_home = open_home(abot, GROUP_MEMBER)
    listed_home = open_home(abot, SECOND_ADMIN)
    assert has_button(listed_home, ids.ACTION_APPROVE, connection_id)
    admin_before, requester_before = len(publishes_to(abot, ADMIN)), len(publishes_to(abot, REQUESTER))
    listed_before = len(publishes_to(abot, SECOND_ADMIN))

    click(abot, ids.ACTION_APPROVE, connection_id, request, ADMIN)
    assert "active" in visible_text(republished(abot, REQUESTER, requester_before))
    republished(abot, ADMIN, admin_before)
    # Listed admins' Homes are republished too, without the decided request.
    assert not has_button(republished(abot, SECOND_ADMIN, listed_before), ids.ACTION_APPROVE, connection_id)

    member_before = len(publishes_to(abot, GROUP_MEMBER))
    abot.sender.action(ids.ACTION_APPROVE, connection_id, on=stale_home["id"], user_id=GROUP_MEMBER)
    wait_until(lambda: dms_to(abot, GROUP_MEMBER), what="the group member's reply")
    reply = dms_to(abot, GROUP_MEMBER)[-1]
    assert "Already approved" in reply and f"<@{ADMIN}>" in reply
    assert not has_button(republished(abot, GROUP_MEMBER, member_before), ids.ACTION_APPROVE, connection_id)
    assert len(audit(abot, "connection.approved")) == 1


def test_a_non_admin_clicking_approve_on_home_is_refused_by_dm_and_nothing_changes(
    abot: Bot, cloud_key: CloudKey
) -> None:
    connection_id, _ = create_pending(abot, cloud_key, name=NAME)
    admin_home = open_home(abot, ADMIN)
    outsider_before = len(publishes_to(abot, OUTSIDER))

    # The buttons were published for an admin; the click is signed for someone else.
    response = abot.sender.action(ids.ACTION_APPROVE, connection_id, on=admin_home["id"], user_id=OUTSIDER)
    assert response.status_code == 200

    wait_until(lambda: dms_to(abot, OUTSIDER), what="the refusal")
    reply = dms_to(abot, OUTSIDER)[-1]
    assert "Only admins" in reply and "nothing changed" in reply.lower()
    outsider_home = republished(abot, OUTSIDER, outsider_before)
    assert not has_button(outsider_home, ids.ACTION_APPROVE, connection_id)
    assert abot.slack.calls_to("chat.update") == []
    assert stored(abot.database_url)["connections"][0].status == Status.PENDING_APPROVAL
    assert audit(abot, "connection.approved") == []
    assert "failed" not in abot.log_text()


def test_a_redelivered_event_publishes_nothing(abot: Bot) -> None:
    response = abot.sender.event(home_opened(ADMIN), retry_num=1)
    assert response.status_code == 200
    # Two later events, each published after the redelivery was answered: had the redelivery
    # started a publish, it would have finished by now.
    open_home(abot, REQUESTER)
    open_home(abot, OUTSIDER)
    assert publishes_to(abot, ADMIN) == []
    # The same event delivered for the first time is published.
    open_home(abot, ADMIN)
    assert len(publishes_to(abot, ADMIN)) == 1


def test_connect_on_home_opens_the_create_form(abot: Bot) -> None:
    home = open_home(abot, REQUESTER)
    opened = len(abot.slack.calls_to("views.open"))
    response = abot.sender.action(ids.ACTION_CONNECT, "confluent_cloud", on=home["id"], user_id=REQUESTER)
    assert response.status_code == 200
    call = abot.slack.wait_for("views.open", count=opened + 1)[-1]
    assert call.ok, call.error
    modal = abot.slack.views[str(call.response["view"]["id"])]
    assert modal["callback_id"] == ids.VIEW_CREATE
    assert modal["title"]["text"] == "Create Confluent Cloud"
