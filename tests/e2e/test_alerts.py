"""Health alerts in the alert channel: one alert when a connection starts failing (from the
schedule or a re-test from Slack), nothing more while it keeps failing, one reply in the alert's
thread when it works again; and no key or secret in anything the bot said or stored on the way.

The schedule runs with a re-test interval of 1.2 seconds (``CONNECTIONS_RETEST_INTERVAL_MINUTES``
0.02) and looks for due re-tests twice a second, so a connection is re-tested every second or two.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from bot import ids
from bot.domain import SYSTEM_ACTOR, Health, Status, Trigger
from tests.e2e import test_retests
from tests.e2e.conftest import Bot
from tests.e2e.helpers import stored, visible_text
from tests.e2e.test_app_home import open_home
from tests.e2e.test_retests import (
    ADMIN,
    ADMIN_CHANNEL,
    ALERTS,
    OWNER,
    click_retest,
    command,
    dms_to,
    eventually,
    history,
    listing,
    new_key,
    replies,
    retest,
    row,
    shown,
    store,
    unknown_key,
)
from tests.e2e.test_security import assert_not_leaked
from tests.fakes.slack_api import Message
from tests.support.slack_requests import find_action

# The re-test tests' bot (an admin, an alert channel), as fixtures here.
rbot = test_retests.rbot
retests_env = test_retests.retests_env

SCHEDULED = {"CONNECTIONS_RETEST_INTERVAL_MINUTES": "0.02"}
SCHEDULE_WAIT = 30.0
"""How long a test waits for scheduled re-tests before failing (a bound, not a measurement)."""
NEW_FAILURE = "🔔 This is a new failure, so an alert was raised for the team."


def in_channel(bot: Bot, channel: str) -> list[Message]:
    """What everyone sees at the top level of ``channel`` (not the ephemeral replies to one user)."""
    return [m for m in bot.slack.messages if m.channel == channel and m.thread_ts is None and not m.ephemeral]


def thread_of(bot: Bot, alert: Message) -> list[Message]:
    return [m for m in bot.slack.messages if m.thread_ts == alert.ts]


def scheduled_checks(bot: Bot, connection_id: str) -> int:
    return sum(1 for r in history(bot, connection_id) if r.trigger == Trigger.SCHEDULE.value)


def checked_more(bot: Bot, connection_id: str, than: int) -> Callable[[], bool]:
    return lambda: scheduled_checks(bot, connection_id) > than


def health_events(bot: Bot, connection_id: str) -> list[Any]:
    events = [
        e
        for e in stored(bot.database_url)["audit_events"]
        if e.action == "connection.health_changed" and e.connection_id == connection_id
    ]
    return sorted(events, key=lambda e: e.created_at)


def assert_is_the_alert_about(alert: Message, name: str, connection_id: str) -> None:
    text = visible_text(alert.blocks)
    assert f"🔴 *“{name}” (Confluent Cloud) is failing*" in text
    assert f"Owner: <@{OWNER}>" in text and "failing since" in text
    assert "Check both for typos" in text and "A key is deleted together with its owner" in text
    for action_id in (ids.ACTION_RETEST, ids.ACTION_ROTATE):
        _, button = find_action(alert.blocks, action_id)
        assert button["value"] == connection_id
    assert f"“{name}”" in alert.text


# --- the schedule ----------------------------------------------------------------------------------


@pytest.mark.parametrize("retests_env", [SCHEDULED], indirect=True)
def test_a_revoked_key_raises_one_alert_the_schedule_does_not_repeat_and_recovery_replies_in_its_thread(
    rbot: Bot,
) -> None:
    now = datetime.now(UTC)
    steady = store(rbot, "Steady", new_key(rbot), next_check_at=now)
    key = unknown_key()  # deleted in Confluent since it was stored
    orders = store(rbot, "Orders", key, next_check_at=now)

    eventually(lambda: in_channel(rbot, ALERTS), what="the alert", timeout=SCHEDULE_WAIT)
    [alert] = in_channel(rbot, ALERTS)
    assert_is_the_alert_about(alert, "Orders", orders)
    eventually(lambda: row(rbot, orders).alert_ts is not None, what="the alert to be remembered")
    failing = row(rbot, orders)
    assert (failing.health, failing.alert_channel, failing.alert_ts) == (Health.FAILING, ALERTS, alert.ts)

    # The schedule re-tests it several more times while it keeps failing: no second alert, and
    # no reminder (those come a day apart at the earliest).
    checked = scheduled_checks(rbot, orders)
    eventually(checked_more(rbot, orders, checked + 2), what="more scheduled checks", timeout=SCHEDULE_WAIT)
    assert in_channel(rbot, ALERTS) == [alert]
    assert thread_of(rbot, alert) == []
    assert scheduled_checks(rbot, steady) >= 2

    # The key works again: one reply in the alert's thread, and nothing new at the top level.
    rbot.confluent.add_cloud_key(key.key, key.secret)
    eventually(lambda: thread_of(rbot, alert), what="the recovery reply", timeout=SCHEDULE_WAIT)
    [reply] = thread_of(rbot, alert)
    assert (reply.channel, reply.thread_ts) == (ALERTS, alert.ts)
    assert visible_text(reply.blocks).startswith(
        "✅ “Orders” (Confluent Cloud) works again after failing for"
    )
    recovered_at = scheduled_checks(rbot, orders)
    eventually(
        checked_more(rbot, orders, recovered_at + 1), what="more scheduled checks", timeout=SCHEDULE_WAIT
    )
    assert thread_of(rbot, alert) == [reply]
    # The alert itself now says it is resolved, and offers no buttons any more.
    [resolved] = in_channel(rbot, ALERTS)
    assert resolved.ts == alert.ts
    assert "Resolved" in visible_text(resolved.blocks)
    assert not [b for b in resolved.blocks if b.get("type") == "actions"]
    healthy = row(rbot, orders)
    assert (healthy.health, healthy.alert_ts, healthy.failing_since) == (Health.HEALTHY, None, None)
    # The schedule's two changes are in the audit log, made by the bot.
    events = health_events(rbot, orders)
    assert [(e.actor, e.details["health_after"]) for e in events] == [
        (SYSTEM_ACTOR, "failing"),
        (SYSTEM_ACTOR, "healthy"),
    ]
    assert health_events(rbot, steady) == []


# --- re-tests from Slack ---------------------------------------------------------------------------


def test_a_retest_from_slack_that_flips_health_alerts_once_and_the_alerts_button_shows_the_recovery(
    rbot: Bot,
) -> None:
    key = unknown_key()
    orders = store(rbot, "Orders", key)

    _, result = retest(rbot, "Orders")
    assert NEW_FAILURE in shown(result)
    eventually(lambda: in_channel(rbot, ALERTS), what="the alert")
    [alert] = in_channel(rbot, ALERTS)
    assert_is_the_alert_about(alert, "Orders", orders)

    # Still failing: the result says so, without raising anything new.
    _, again = retest(rbot, "Orders")
    assert "❌ *“Orders” is failing:*" in shown(again) and "🔔" not in shown(again)

    # The key works again; someone clicks Re-test on the alert itself.
    rbot.confluent.add_cloud_key(key.key, key.secret)
    eventually(lambda: row(rbot, orders).alert_ts == alert.ts, what="the alert to be remembered")
    url = click_retest(rbot, orders, alert, ADMIN)
    eventually(lambda: rbot.slack.hooks_to(url), what="the reply to the click")
    [clicked] = rbot.slack.hooks_to(url)
    assert clicked.body.get("response_type") == "ephemeral"
    assert "✅ *“Orders” works.*" in shown(clicked) and "🎉 It works again after failing" in shown(clicked)
    eventually(lambda: thread_of(rbot, alert), what="the recovery reply")
    [reply] = thread_of(rbot, alert)
    assert "works again" in visible_text(reply.blocks)
    eventually(
        lambda: "Resolved" in visible_text(in_channel(rbot, ALERTS)[0].blocks), what="the alert resolved"
    )
    assert [m.ts for m in in_channel(rbot, ALERTS)] == [alert.ts]
    assert row(rbot, orders).health is Health.HEALTHY


def test_test_all_raises_one_alert_per_connection_that_started_failing(rbot: Bot) -> None:
    store(rbot, "Steady", new_key(rbot))
    first = store(rbot, "Newly revoked", unknown_key())
    second = store(rbot, "Lost its role", new_key(rbot, role=False))

    _, report = command(rbot, "test all", until=replies(2), what="the report")
    assert shown(report).startswith("❌ *1 healthy, 2 failing*")
    eventually(lambda: len(in_channel(rbot, ALERTS)) >= 2, what="the alerts")
    posted = {find_action(m.blocks, ids.ACTION_RETEST)[1]["value"]: m for m in in_channel(rbot, ALERTS)}
    assert sorted(posted) == sorted([first, second])
    assert "lacks an RBAC role" in visible_text(posted[second].blocks)
    assert "Newly revoked" in posted[first].text and "Steady" not in visible_text(posted[second].blocks)


def test_a_pending_connection_that_fails_raises_no_alert(rbot: Bot) -> None:
    pending = store(rbot, "Awaiting approval", unknown_key(), status=Status.PENDING_APPROVAL)
    _, result = retest(rbot, "Awaiting approval")
    assert "❌ *“Awaiting approval” is failing:*" in shown(result) and "🔔" not in shown(result)
    assert row(rbot, pending).health is Health.FAILING
    # An active one failing afterwards is alerted about; the pending one never was.
    store(rbot, "Orders", unknown_key())
    retest(rbot, "Orders")
    eventually(lambda: in_channel(rbot, ALERTS), what="the alert about the active connection")
    assert ["Orders" in m.text for m in in_channel(rbot, ALERTS)] == [True]


@pytest.mark.parametrize("retests_env", [{"CONNECTIONS_ALERT_CHANNEL": None}], indirect=True)
def test_without_an_alert_channel_alerts_go_to_the_admin_channel(rbot: Bot) -> None:
    orders = store(rbot, "Orders", unknown_key())
    retest(rbot, "Orders")
    eventually(lambda: in_channel(rbot, ADMIN_CHANNEL), what="the alert")
    [alert] = in_channel(rbot, ADMIN_CHANNEL)
    assert_is_the_alert_about(alert, "Orders", orders)


def test_when_the_alert_could_not_be_posted_the_recovery_is_posted_on_its_own(rbot: Bot) -> None:
    key = unknown_key()
    orders = store(rbot, "Orders", key)
    rbot.slack.fail_next("chat.postMessage", error="not_in_channel", status=200, retry_after=None)
    _, result = retest(rbot, "Orders")
    assert NEW_FAILURE in shown(result)
    eventually(lambda: "not_in_channel" in rbot.log_text(), what="the refused alert to be logged")
    assert in_channel(rbot, ALERTS) == []
    assert row(rbot, orders).health is Health.FAILING

    rbot.confluent.add_cloud_key(key.key, key.secret)
    retest(rbot, "Orders")
    eventually(lambda: in_channel(rbot, ALERTS), what="the recovery notice")
    [notice] = in_channel(rbot, ALERTS)
    # Top-level, so it names the connection by itself.
    assert visible_text(notice.blocks).startswith("✅ “Orders” (Confluent Cloud) works again")
    assert [m for m in rbot.slack.messages if m.thread_ts] == []


# --- secrets ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("retests_env", [SCHEDULED], indirect=True)
def test_no_key_or_secret_leaks_through_retests_alerts_and_recoveries(rbot: Bot) -> None:
    now = datetime.now(UTC)
    working = new_key(rbot)
    steady = store(rbot, "Steady", working, next_check_at=now)
    revoked = unknown_key()
    orders = store(rbot, "Orders", revoked, next_check_at=now)

    eventually(lambda: in_channel(rbot, ALERTS), what="the alert", timeout=SCHEDULE_WAIT)
    [alert] = in_channel(rbot, ALERTS)
    retest(rbot, "Orders")
    retest(rbot, "Steady")
    command(rbot, "test all", until=replies(2), what="the report")
    command(rbot, "status Orders", until=replies(1), what="the status")
    url = click_retest(rbot, steady, listing(rbot))
    eventually(lambda: rbot.slack.hooks_to(url), what="the reply to the click")
    home = open_home(rbot, OWNER)
    assert rbot.sender.action(ids.ACTION_RETEST, orders, on=home["id"]).status_code == 200
    eventually(lambda: dms_to(rbot, OWNER), what="the direct message")
    rbot.confluent.add_cloud_key(revoked.key, revoked.secret)
    eventually(lambda: thread_of(rbot, alert), what="the recovery reply", timeout=SCHEDULE_WAIT)

    assert_not_leaked(rbot, working.key, working.secret)
    assert_not_leaked(rbot, revoked.key, revoked.secret)
    # The search has something to search: the logs tell the story, and the masked hint is shown.
    logs = rbot.log_text()
    assert "due on the schedule" in logs and "confluent GET" in logs
    masked = f"{revoked.key[:4]}…{revoked.key[-4:]}"
    assert any(masked in shown(h) for h in rbot.slack.hooks)
