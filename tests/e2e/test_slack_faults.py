"""Slack faults the bot must survive, each scripted on the fake Slack and each with what the user
is told, what is stored and what the operator reads in the log.

* A trigger that expired (or a busy Slack) when a form should open: the user is told to click
  again, through whatever channel the click came from; no traceback in the log.
* ``views.update`` answering ``not_found`` (the user closed the modal) or ``hash_conflict``:
  the verification result arrives as a direct message, and the connection is stored as it should.
* ``chat.postMessage`` answering ``channel_not_found`` or ``not_in_channel`` for the admin channel
  or the alert channel: the requester learns what to ask the operator, the log names the setting
  and the channel, and an alert that did not go out is posted again by the next re-test.
* ``ratelimited`` with ``Retry-After``: work after the ack waits as asked and tries again; a call
  bound to Slack's 3 seconds does not wait.
* Slack unreachable: nothing crashes, what was verified is stored, the log says what happened,
  and once Slack is back the next action works.
* Slack redelivering an event (``X-Slack-Retry-Num``): processed once.

Slack faults do not depend on the database, so these tests run on SQLite only.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from bot import ids
from bot.domain import Health, RotationStatus, Status
from tests.e2e import test_approvals, test_retests
from tests.e2e.conftest import Bot, CloudKey
from tests.e2e.helpers import (
    form_values,
    latest_message,
    open_create_form,
    stored,
    visible_text,
    wait_for_result,
    wait_until,
)
from tests.e2e.test_app_home import home_opened, open_home, publishes_to
from tests.e2e.test_approvals import (
    ADMIN,
    ADMIN_CHANNEL,
    GROUP_MEMBER,
    REQUESTER,
    click,
    create_pending,
    dms_to,
)
from tests.e2e.test_retests import ALERTS, eventually, row, store, unknown_key
from tests.e2e.test_rotation import (
    NAME,
    new_cloud_key,
    open_rotation_by_command,
    replies_in_channel,
    request_rotation,
    rotations,
    secrets_of,
    seed_active,
    status_reply,
)
from tests.fakes.slack_api import Call, Message
from tests.support.slack_requests import block_actions_in_view, payload_body, sign

# The approval tests' bot (listed admins, an admin group, an admin channel) and the re-test
# tests' bot (an alert channel of its own), as fixtures here.
abot = test_approvals.abot
approvals_env = test_approvals.approvals_env
rbot = test_retests.rbot
retests_env = test_retests.retests_env

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

SCHEDULED = {"CONNECTIONS_RETEST_INTERVAL_MINUTES": "0.02"}
"""Re-test every 1.2 seconds, looking for due ones twice a second (see tests/e2e/test_alerts.py)."""
SCHEDULE_WAIT = 30.0
"""How long a test waits for scheduled re-tests before failing (a bound, not a measurement)."""
RETRY_AFTER = 1
"""The Retry-After the fake asks for, in seconds: the retried call must come no sooner."""


# --- reading what happened --------------------------------------------------------------------------


def assert_no_traceback(bot: Bot) -> None:
    """Expected trouble is one log line; a traceback would mean something went unhandled."""
    text = bot.log_text()
    assert "Traceback" not in text, text
    assert "background task" not in text, text


def log_lines(bot: Bot, *parts: str) -> list[str]:
    return [line for line in bot.log_text().splitlines() if all(p in line for p in parts)]


def new_reply(texts: Callable[[], list[str]], before: int, what: str) -> str:
    wait_until(lambda: len(texts()) > before, what=what)
    return texts()[before]


def calls(bot: Bot, method: str, **matching: str) -> list[Call]:
    return [c for c in bot.slack.calls_to(method) if all(c.body.get(k) == v for k, v in matching.items())]


def assert_waited_out(failed: Call, retried: Call) -> None:
    assert (failed.ok, failed.error, retried.ok) == (False, "ratelimited", True)
    assert retried.at - failed.at >= RETRY_AFTER


# --- a form that cannot open ------------------------------------------------------------------------


def expire_next_trigger(bot: Bot) -> None:
    bot.slack.fail_next("views.open", error="expired_trigger_id", status=200, retry_after=None)


Act = Callable[[], str]
"""Clicks (or types) what opens a form, with the next trigger expired; returns the reply."""


def connect_from_the_connections_message(bot: Bot, key: CloudKey) -> Act:
    bot.sender.command("")
    bot.slack.wait_for_hook()
    message = latest_message(bot.slack, bot.sender)

    def act() -> str:
        before = len(replies_in_channel(bot, REQUESTER))
        bot.sender.action(ids.ACTION_CONNECT, "confluent_cloud", on=message)
        return new_reply(lambda: replies_in_channel(bot, REQUESTER), before, "the reply to Connect")

    return act


def connect_by_command(bot: Bot, key: CloudKey) -> Act:
    def act() -> str:
        bot.sender.command("connect confluent_cloud")
        return new_reply(lambda: replies_in_channel(bot, REQUESTER), 0, "the reply to the command")

    return act


def connect_on_app_home(bot: Bot, key: CloudKey) -> Act:
    home = open_home(bot, REQUESTER)

    def act() -> str:
        bot.sender.action(ids.ACTION_CONNECT, "confluent_cloud", on=home["id"], user_id=REQUESTER)
        # App Home has no response_url: the reply comes as a direct message.
        return new_reply(lambda: dms_to(bot, REQUESTER), 0, "the direct message")

    return act


def rotate_from_a_status_reply(bot: Bot, key: CloudKey) -> Act:
    connection_id = seed_active(bot, key, NAME)
    status = status_reply(bot, NAME, REQUESTER)

    def act() -> str:
        before = len(replies_in_channel(bot, REQUESTER))
        bot.sender.action(ids.ACTION_ROTATE, connection_id, on=status, user_id=REQUESTER)
        return new_reply(lambda: replies_in_channel(bot, REQUESTER), before, "the reply to Rotate")

    return act


def rotate_by_command(bot: Bot, key: CloudKey) -> Act:
    seed_active(bot, key, NAME)

    def act() -> str:
        bot.sender.command(f"rotate {NAME}")
        return new_reply(lambda: replies_in_channel(bot, REQUESTER), 0, "the reply to the command")

    return act


def reject_a_new_connection(bot: Bot, key: CloudKey) -> Act:
    connection_id, request = create_pending(bot, key)

    def act() -> str:
        click(bot, ids.ACTION_REJECT, connection_id, request, ADMIN)
        return new_reply(lambda: test_approvals.replies_to(bot, ADMIN), 0, "the reply to Reject")

    return act


def reject_a_rotation(bot: Bot, key: CloudKey) -> Act:
    seed_active(bot, key, NAME)
    rotation_id, request = request_rotation(bot, open_rotation_by_command(bot, NAME), new_cloud_key(bot))

    def act() -> str:
        click(bot, ids.ACTION_REJECT_ROTATION, rotation_id, request, ADMIN)
        return new_reply(lambda: test_approvals.replies_to(bot, ADMIN), 0, "the reply to Reject")

    return act


def what_is_stored(bot: Bot) -> list[tuple[str, object, int]]:
    data = stored(bot.database_url)
    statuses = [(c.id, c.status, c.credential_version) for c in data["connections"]]
    return [*statuses, *((r.id, r.status, 0) for r in rotations(bot))]


@pytest.mark.parametrize(
    "arrange",
    [
        connect_from_the_connections_message,
        connect_by_command,
        connect_on_app_home,
        rotate_from_a_status_reply,
        rotate_by_command,
        reject_a_new_connection,
        reject_a_rotation,
    ],
)
def test_a_form_whose_trigger_expired_tells_the_user_to_try_again_and_changes_nothing(
    abot: Bot, cloud_key: CloudKey, arrange: Callable[[Bot, CloudKey], Act]
) -> None:
    act = arrange(abot, cloud_key)
    before = what_is_stored(abot)
    expire_next_trigger(abot)
    reply = act()

    assert "in time" in reply and "nothing changed" in reply and "again" in reply, reply
    [refused] = [c for c in abot.slack.calls_to("views.open") if not c.ok]
    assert refused.error == "expired_trigger_id"
    assert len(log_lines(abot, "could not open the", "form: expired_trigger_id")) == 1
    assert_no_traceback(abot)
    assert what_is_stored(abot) == before


def test_a_form_slack_will_not_open_for_a_rate_limit_is_not_waited_for(abot: Bot) -> None:
    # The trigger dies 3 seconds after the click: waiting out Retry-After would only outlive it.
    abot.slack.fail_next("views.open", error="ratelimited", status=429, retry_after=RETRY_AFTER)
    abot.sender.command("connect confluent_cloud")
    reply = new_reply(lambda: replies_in_channel(abot, REQUESTER), 0, "the reply to the command")

    assert "because Slack is busy right now" in reply and "again" in reply
    assert [c.error for c in abot.slack.calls_to("views.open")] == ["ratelimited"]
    assert_no_traceback(abot)


# --- the result of a verification ----------------------------------------------------------------


def test_a_result_for_a_modal_the_user_closed_comes_as_a_direct_message(
    abot: Bot, cloud_key: CloudKey
) -> None:
    view_id = open_create_form(abot.slack, abot.sender)
    abot.confluent.hold()
    abot.sender.submit(view_id, form_values("prod", cloud_key.key, cloud_key.secret))
    wait_until(lambda: abot.confluent.held >= 1, what="the verification to reach Confluent")
    abot.slack.close_modal(view_id)
    abot.confluent.release()

    dm = new_reply(lambda: dms_to(abot, REQUESTER), 0, "the result as a direct message")
    assert "The credentials for “prod” work" in dm and "awaits an admin's approval" in dm
    [update] = calls(abot, "views.update", view_id=view_id)
    assert update.error == "not_found"
    [connection] = stored(abot.database_url)["connections"]
    assert connection.status == Status.PENDING_APPROVAL and connection.approval_ts is not None
    assert_no_traceback(abot)


def test_a_rotation_result_for_a_modal_the_user_closed_comes_as_a_direct_message(
    abot: Bot, cloud_key: CloudKey
) -> None:
    connection_id = seed_active(abot, cloud_key, NAME)
    view_id = open_rotation_by_command(abot, NAME)
    new = new_cloud_key(abot)
    abot.confluent.hold()
    abot.sender.submit(view_id, secrets_of(new))
    wait_until(lambda: abot.confluent.held >= 1, what="the verification to reach Confluent")
    abot.slack.close_modal(view_id)
    abot.confluent.release()

    dm = new_reply(lambda: dms_to(abot, REQUESTER), 0, "the result as a direct message")
    assert f"“{NAME}” work" in dm and "await an admin's approval" in dm
    [rotation] = rotations(abot)
    assert (rotation.connection_id, rotation.status) == (connection_id, RotationStatus.PENDING_APPROVAL)
    assert rotation.approval_ts is not None
    assert_no_traceback(abot)


def test_a_hash_conflict_while_delivering_a_result_falls_back_to_a_direct_message(
    abot: Bot, cloud_key: CloudKey
) -> None:
    view_id = open_create_form(abot.slack, abot.sender)
    abot.slack.fail_next("views.update", error="hash_conflict", status=200, retry_after=None)
    abot.sender.submit(view_id, form_values("prod", cloud_key.key, cloud_key.secret))

    dm = new_reply(lambda: dms_to(abot, REQUESTER), 0, "the result as a direct message")
    assert "The credentials for “prod” work" in dm
    [update] = calls(abot, "views.update", view_id=view_id)
    # The result replaces whatever the modal shows: no hash, which only a stale one could fail.
    assert update.error == "hash_conflict" and "hash" not in update.body
    [connection] = stored(abot.database_url)["connections"]
    assert connection.status == Status.PENDING_APPROVAL
    assert_no_traceback(abot)


def test_a_second_click_on_try_again_leaves_the_form_the_first_brought_back(abot: Bot) -> None:
    view_id = open_create_form(abot.slack, abot.sender)
    abot.sender.submit(view_id, form_values("prod", unknown_key().key, unknown_key().secret))
    failed = wait_for_result(abot.slack, view_id)
    assert "Try again" in visible_text(failed)

    abot.sender.action(ids.ACTION_TRY_AGAIN, on=view_id)
    wait_for_result(abot.slack, view_id, count=2)
    # The same button clicked again on the screen as it was (the old hash): Slack refuses it.
    payload = block_actions_in_view(
        ids.ACTION_TRY_AGAIN,
        None,
        view=failed,
        trigger_id=abot.slack.issue_trigger_id(view_id=view_id),
        team_id=abot.sender.team_id,
        user_id=REQUESTER,
    )
    body = payload_body(payload)
    assert abot.sender.post_raw(body, sign(body, abot.sender.signing_secret)).status_code == 200
    wait_until(lambda: len(calls(abot, "views.update", view_id=view_id)) == 3, what="the second Try again")

    assert [c.error for c in calls(abot, "views.update", view_id=view_id)] == [None, None, "hash_conflict"]
    form = abot.slack.views[view_id]
    assert form["callback_id"] == ids.VIEW_CREATE and abot.slack.is_open(view_id)
    wait_until(lambda: log_lines(abot, "Try again: hash_conflict"), what="the log line")
    assert_no_traceback(abot)


# --- the admin channel and the alert channel -------------------------------------------------------

CHANNEL_ERRORS = ["channel_not_found", "not_in_channel"]
ADVICE = {
    "channel_not_found": "check that CONNECTIONS_ADMIN_CHANNEL holds the channel's id",
    "not_in_channel": "invite the bot to that channel",
}


@pytest.mark.parametrize("error", CHANNEL_ERRORS)
def test_an_approval_request_the_admin_channel_refuses_is_explained_to_requester_and_operator(
    abot: Bot, cloud_key: CloudKey, error: str
) -> None:
    view_id = open_create_form(abot.slack, abot.sender)
    abot.slack.fail_next("chat.postMessage", error=error, status=200, retry_after=None)
    abot.sender.submit(view_id, form_values("prod", cloud_key.key, cloud_key.secret))
    result = visible_text(wait_for_result(abot.slack, view_id))

    assert "could not post the request to the admin channel" in result
    assert "CONNECTIONS_ADMIN_CHANNEL" in result and "invite the bot" in result
    [connection] = stored(abot.database_url)["connections"]
    assert connection.status == Status.PENDING_APPROVAL and connection.approval_ts is None
    [line] = log_lines(abot, "could not post the approval request")
    assert f"CONNECTIONS_ADMIN_CHANNEL {ADMIN_CHANNEL}: {error}: {ADVICE[error]}" in line
    assert_no_traceback(abot)


@pytest.mark.parametrize("error", CHANNEL_ERRORS)
def test_a_rotation_request_the_admin_channel_refuses_is_explained_to_requester_and_operator(
    abot: Bot, cloud_key: CloudKey, error: str
) -> None:
    seed_active(abot, cloud_key, NAME)
    view_id = open_rotation_by_command(abot, NAME)
    abot.slack.fail_next("chat.postMessage", error=error, status=200, retry_after=None)
    abot.sender.submit(view_id, secrets_of(new_cloud_key(abot)))
    result = visible_text(wait_for_result(abot.slack, view_id))

    assert "could not be posted to the admin channel" in result and "CONNECTIONS_ADMIN_CHANNEL" in result
    [rotation] = rotations(abot)
    assert rotation.status == RotationStatus.PENDING_APPROVAL and rotation.approval_ts is None
    [line] = log_lines(abot, "could not post the rotation request")
    assert f"CONNECTIONS_ADMIN_CHANNEL {ADMIN_CHANNEL}: {error}: {ADVICE[error]}" in line
    assert_no_traceback(abot)


def alerts_in(bot: Bot) -> list[Message]:
    return [m for m in bot.slack.messages if m.channel == ALERTS and m.thread_ts is None]


@pytest.mark.parametrize("retests_env", [SCHEDULED], indirect=True)
@pytest.mark.parametrize("error", [*CHANNEL_ERRORS, "unreachable"])
def test_an_alert_that_did_not_reach_the_alert_channel_is_posted_by_the_next_run(
    rbot: Bot, error: str
) -> None:
    if error != "unreachable":
        rbot.slack.fail_next("chat.postMessage", error=error, status=200, retry_after=None)
        connection_id = store(rbot, "Orders", unknown_key(), next_check_at=datetime.now(UTC))
        eventually(lambda: log_lines(rbot, "could not post the failed notice"), what="the failed post")
    else:
        with rbot.slack.unreachable():
            connection_id = store(rbot, "Orders", unknown_key(), next_check_at=datetime.now(UTC))
            eventually(
                lambda: log_lines(rbot, "could not post the failed notice"),
                what="the failed post",
                timeout=SCHEDULE_WAIT,
            )
    line = log_lines(rbot, "could not post the failed notice")[0]
    assert f"CONNECTIONS_ALERT_CHANNEL {ALERTS}" in line and "posts it again" in line
    if error == "unreachable":
        assert "Slack could not be reached" in line and "SLACK_API_URL" in line
    else:
        assert f": {error}: " in line

    # Not counted as sent: the next scheduled re-test that still finds it failing alerts.
    eventually(lambda: alerts_in(rbot), what="the alert", timeout=SCHEDULE_WAIT)
    [alert] = alerts_in(rbot)
    assert "“Orders” (Confluent Cloud) is failing" in visible_text(alert.blocks)
    eventually(lambda: row(rbot, connection_id).alert_ts == alert.ts, what="the alert to be remembered")
    assert row(rbot, connection_id).health == Health.FAILING
    assert_no_traceback(rbot)


# --- rate limits ------------------------------------------------------------------------------------


def test_a_rate_limited_result_is_delivered_after_the_wait_slack_asked_for(
    abot: Bot, cloud_key: CloudKey
) -> None:
    view_id = open_create_form(abot.slack, abot.sender)
    abot.slack.fail_next("views.update", error="ratelimited", status=429, retry_after=RETRY_AFTER)
    abot.sender.submit(view_id, form_values("prod", cloud_key.key, cloud_key.secret))

    result = visible_text(wait_for_result(abot.slack, view_id, count=2))
    assert "awaits an admin's approval" in result
    assert_waited_out(*calls(abot, "views.update", view_id=view_id))
    assert dms_to(abot, REQUESTER) == []  # no fallback: the modal itself shows the result
    assert log_lines(abot, "Slack rate-limited views.update; trying again in 1 s")


def test_a_rate_limited_approval_request_is_posted_after_the_wait(abot: Bot, cloud_key: CloudKey) -> None:
    view_id = open_create_form(abot.slack, abot.sender)
    abot.slack.fail_next("chat.postMessage", error="ratelimited", status=429, retry_after=RETRY_AFTER)
    abot.sender.submit(view_id, form_values("prod", cloud_key.key, cloud_key.secret))
    result = visible_text(wait_for_result(abot.slack, view_id))

    assert "now awaits an admin's approval" in result and "could not post" not in result
    failed, posted = calls(abot, "chat.postMessage", channel=ADMIN_CHANNEL)
    assert_waited_out(failed, posted)
    [connection] = stored(abot.database_url)["connections"]
    assert connection.approval_ts == posted.response["ts"]


@pytest.mark.parametrize("retests_env", [SCHEDULED], indirect=True)
def test_a_rate_limited_alert_is_posted_after_the_wait(rbot: Bot) -> None:
    rbot.slack.fail_next("chat.postMessage", error="ratelimited", status=429, retry_after=RETRY_AFTER)
    connection_id = store(rbot, "Orders", unknown_key(), next_check_at=datetime.now(UTC))

    eventually(lambda: alerts_in(rbot), what="the alert", timeout=SCHEDULE_WAIT)
    failed, posted = calls(rbot, "chat.postMessage", channel=ALERTS)[:2]
    assert_waited_out(failed, posted)
    # Waited out by the same run, not left to the next one.
    assert log_lines(rbot, "Slack rate-limited chat.postMessage; trying again in 1 s")
    assert not log_lines(rbot, "could not post the failed notice")
    eventually(lambda: row(rbot, connection_id).alert_ts == posted.response["ts"], what="the alert's ts")
    assert len(alerts_in(rbot)) == 1


def test_a_rate_limited_home_tab_is_published_after_the_wait(abot: Bot) -> None:
    abot.slack.fail_next("views.publish", error="ratelimited", status=429, retry_after=RETRY_AFTER)
    assert abot.sender.event(home_opened(REQUESTER)).status_code == 200

    wait_until(lambda: len(publishes_to(abot, REQUESTER)) == 2, what="the publish after the wait")
    assert_waited_out(*publishes_to(abot, REQUESTER))
    home = abot.slack.home_view(REQUESTER)
    assert home is not None and "Confluent Cloud" in visible_text(home)


def test_a_rate_limit_longer_than_the_bot_waits_falls_back_at_once(abot: Bot, cloud_key: CloudKey) -> None:
    view_id = open_create_form(abot.slack, abot.sender)
    abot.slack.fail_next("views.update", error="ratelimited", status=429, retry_after=3600)
    abot.sender.submit(view_id, form_values("prod", cloud_key.key, cloud_key.secret))

    dm = new_reply(lambda: dms_to(abot, REQUESTER), 0, "the result as a direct message")
    assert "The credentials for “prod” work" in dm
    assert [c.error for c in calls(abot, "views.update", view_id=view_id)] == ["ratelimited"]
    assert not log_lines(abot, "trying again in")


# The requester is a listed admin here, so that nothing looks the group up before the click does.
@pytest.mark.parametrize("approvals_env", [{"CONNECTIONS_ADMINS": f"{ADMIN},{REQUESTER}"}], indirect=True)
def test_an_admin_check_inside_the_ack_window_does_not_wait_out_a_rate_limit(
    abot: Bot, cloud_key: CloudKey
) -> None:
    connection_id, request = create_pending(abot, cloud_key)
    assert abot.slack.calls_to("usergroups.users.list") == []
    abot.slack.fail_next("usergroups.users.list", error="ratelimited", status=429, retry_after=RETRY_AFTER)
    opened = len(abot.slack.calls_to("views.open"))
    click(abot, ids.ACTION_REJECT, connection_id, request, GROUP_MEMBER)

    reply = new_reply(lambda: test_approvals.replies_to(abot, GROUP_MEMBER), 0, "the reply to Reject")
    # Had the lookup waited, the click's one-second check would have given up and opened the form.
    assert "couldn't check your admin rights with Slack" in reply and "ratelimited" in reply
    assert [c.error for c in abot.slack.calls_to("usergroups.users.list")] == ["ratelimited"]
    assert len(abot.slack.calls_to("views.open")) == opened
    assert stored(abot.database_url)["connections"][0].status == Status.PENDING_APPROVAL


# --- Slack unreachable ------------------------------------------------------------------------------


def test_while_slack_is_unreachable_a_verified_connection_is_stored_and_decided_once_it_is_back(
    abot: Bot, cloud_key: CloudKey
) -> None:
    view_id = open_create_form(abot.slack, abot.sender)
    abot.confluent.hold()
    abot.sender.submit(view_id, form_values("prod", cloud_key.key, cloud_key.secret))
    wait_until(lambda: abot.confluent.held >= 1, what="the verification to reach Confluent")
    calls_before = len(abot.slack.calls)
    with abot.slack.unreachable():
        abot.confluent.release()
        wait_until(lambda: log_lines(abot, "could not send a verification result"), what="the result to fail")
        wait_until(lambda: log_lines(abot, "could not publish the Home tab"), what="the Home tab to fail")

    # Nothing reached Slack, and nothing was lost: the connection awaits approval.
    assert len(abot.slack.calls) == calls_before
    [connection] = stored(abot.database_url)["connections"]
    assert connection.status == Status.PENDING_APPROVAL and connection.approval_ts is None
    [line] = log_lines(abot, "could not post the approval request")
    assert f"CONNECTIONS_ADMIN_CHANNEL {ADMIN_CHANNEL}: Slack could not be reached" in line
    assert "SLACK_API_URL" in line
    assert_no_traceback(abot)

    # Slack is back: the admin finds the request on App Home and approves it there.
    home = open_home(abot, ADMIN)
    abot.sender.action(ids.ACTION_APPROVE, connection.id, on=home["id"], user_id=ADMIN)
    wait_until(
        lambda: stored(abot.database_url)["connections"][0].status == Status.ACTIVE, what="the approval"
    )
    dm = new_reply(lambda: dms_to(abot, REQUESTER), 0, "the decision's direct message")
    assert "approved" in dm.lower()


# --- events Slack redelivers ------------------------------------------------------------------------


def test_an_event_and_its_redelivery_publish_the_home_tab_once(abot: Bot) -> None:
    event = home_opened(REQUESTER)
    assert abot.sender.event(event, event_id="Ev0REDELIVER").status_code == 200
    assert abot.sender.event(event, event_id="Ev0REDELIVER", retry_num=1).status_code == 200
    assert abot.sender.event(event, event_id="Ev0REDELIVER", retry_num=2).status_code == 200
    wait_until(lambda: publishes_to(abot, REQUESTER), what="the Home tab")
    # A later event, published after the redeliveries were answered: had one of them started a
    # publish, it would have finished by now.
    open_home(abot, ADMIN)
    assert len(publishes_to(abot, REQUESTER)) == 1
