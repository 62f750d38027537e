"""What the alert channel reads when a connection starts failing, keeps failing, and recovers."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from blocks.alerts import health_alert, recovery_reply, resolved_alert, still_failing_reminder
from blocks.text import slack_date
from bot import ids
from bot.domain import ChangeKind, Health, HealthChange, RetestResult, Status
from bot.providers.base import Check, Outcome, Verification
from tests.support.block_kit import assert_valid
from tests.support.block_text import HOSTILE_HINT, HOSTILE_HINT_SHOWN, markup_problems, visible_text
from tests.support.slack_requests import find_action
from tests.unit.blocks.providers import FakeProvider
from tests.unit.blocks.test_approval import buttons, user_made_markup
from tests.unit.blocks.test_retests import (
    FAILING_SINCE,
    HOSTILE,
    OWNER,
    PROVIDER,
    UNAUTHORIZED_HINTS,
    VERIFIED,
    connection,
    failing,
    healthy,
)


def new_failure(**kw: Any) -> RetestResult:
    return failing(name="Prod stream", change=HealthChange(ChangeKind.FAILED, VERIFIED), **kw)


def still_failing(alert_ts: str | None = "1700000000.000100") -> RetestResult:
    since = VERIFIED - timedelta(days=2)
    change = HealthChange(ChangeKind.STILL_FAILING, since, "C0ALERTS" if alert_ts else None, alert_ts)
    return failing(name="Prod stream", change=change)


def recovered(failing_since: datetime | None = FAILING_SINCE) -> RetestResult:
    change = HealthChange(ChangeKind.RECOVERED, failing_since, "C0ALERTS", "1.2")
    return replace(healthy(name="Prod stream"), change=change)


# --- the alert -----------------------------------------------------------------------------------


def test_the_alert_names_the_connection_its_owner_and_since_when() -> None:
    payload = health_alert(new_failure(), PROVIDER)
    assert_valid("message", payload)
    assert payload["text"] == (
        f"🔴 “Prod stream” (Acme Stream) is failing: The API key was rejected (401). (owner <@{OWNER}>)"
    )
    first = payload["blocks"][0]["text"]["text"]
    assert first == (
        "🔴 *“Prod stream” (Acme Stream) is failing*\n"
        f"Owner: <@{OWNER}> · failing since {slack_date(VERIFIED)}"
    )


def test_the_alert_says_what_failed_and_what_to_check() -> None:
    text = visible_text(health_alert(new_failure(request_id="req-9"), PROVIDER))
    assert "*What failed:* The API key was rejected (401)." in text
    assert "❌ *Authenticate* — 401 Unauthorized" in text
    assert "Reach the API" not in text  # a check that passed is not what failed
    for hint in UNAUTHORIZED_HINTS:
        assert f"• {hint}" in text
    assert "Checked in 240 ms · Acme Stream request id: `req-9`" in text


def test_the_alert_offers_re_test_and_rotate_for_the_connection() -> None:
    result = new_failure()
    payload = health_alert(result, PROVIDER)
    actions = [b for b in payload["blocks"] if b["type"] == "actions"]
    assert len(actions) == 1
    assert [(e["action_id"], e["value"], e["text"]["text"]) for e in actions[0]["elements"]] == [
        (ids.ACTION_RETEST, result.connection.id, "Re-test"),
        (ids.ACTION_ROTATE, result.connection.id, "Rotate"),
    ]


def test_the_alert_for_a_provider_no_longer_offered_uses_the_stored_title() -> None:
    payload = health_alert(new_failure(provider_key="gone", provider_title="Old Queue"), None)
    assert_valid("message", payload)
    assert "(Old Queue) is failing" in payload["text"]


def test_without_a_recorded_start_the_alert_falls_back_to_the_latest_check() -> None:
    result = failing(change=HealthChange(ChangeKind.FAILED))
    assert f"failing since {slack_date(VERIFIED)}" in visible_text(health_alert(result, PROVIDER))


def test_the_alert_escapes_names_and_provider_text_and_mentions_only_real_user_ids() -> None:
    found = Verification(
        Outcome.FORBIDDEN,
        HOSTILE,
        (Check(HOSTILE, False, HOSTILE),),
        (HOSTILE_HINT,),
        10,
        request_id="<!here>",
    )
    result = RetestResult(
        "T1",
        connection(name=HOSTILE, created_by="<!everyone>", health=Health.FAILING),
        found,
        HealthChange(ChangeKind.FAILED, VERIFIED),
    )
    payload = health_alert(result, FakeProvider("x", "<!channel>", "d"))
    assert_valid("message", payload)
    markup = user_made_markup(payload)
    assert "<" not in markup and ">" not in markup
    assert "Owner: &lt;!everyone&gt;" in markup
    assert not markup_problems(payload)
    assert HOSTILE_HINT_SHOWN.search(markup)  # the hint's own code and link work


def test_huge_provider_output_still_fits_the_alert() -> None:
    found = Verification(
        Outcome.UNAUTHORIZED,
        "&" * 5000,
        tuple(Check("<c>" * 100, False, "&" * 3000) for _ in range(40)),
        tuple("<h>" * 1000 for _ in range(40)),
        10,
        request_id="r" * 5000,
    )
    result = RetestResult("T1", connection(name="&" * 64), found, HealthChange(ChangeKind.FAILED, VERIFIED))
    payload = health_alert(result, PROVIDER)
    assert_valid("message", payload)
    find_action(payload["blocks"], ids.ACTION_ROTATE)


# --- the reminder --------------------------------------------------------------------------------


def test_the_reminder_says_for_how_long_and_since_when_with_a_retest_button() -> None:
    result = still_failing()
    payload = still_failing_reminder(result, PROVIDER)
    assert_valid("message", payload)
    since = slack_date(VERIFIED - timedelta(days=2))
    assert visible_text(payload["blocks"][0]) == (
        f"🔴 “Prod stream” (Acme Stream) is still failing for 2 days (since {since}). Owner: <@{OWNER}>\n"
        "The API key was rejected (401)."
    )
    assert [(b["action_id"], b["value"]) for b in buttons(payload)] == [
        (ids.ACTION_RETEST, result.connection.id)
    ]


def test_a_reminder_posted_top_level_still_names_the_connection_and_the_owner() -> None:
    payload = still_failing_reminder(still_failing(alert_ts=None), PROVIDER)
    assert_valid("message", payload)
    assert "“Prod stream”" in payload["text"] and f"<@{OWNER}>" in payload["text"]
    assert "“Prod stream” (Acme Stream) is still failing" in visible_text(payload["blocks"])


def test_the_reminder_escapes_the_name() -> None:
    result = replace(still_failing(), connection=connection(name=HOSTILE, status=Status.ACTIVE))
    payload = still_failing_reminder(result, PROVIDER)
    assert "<" not in user_made_markup(payload)


# --- the recovery --------------------------------------------------------------------------------


def test_the_recovery_says_it_works_again_and_how_long_it_was_failing() -> None:
    payload = recovery_reply(recovered())
    assert_valid("message", payload)
    assert payload["text"] == "✅ “Prod stream” (Acme Stream) works again after failing for 3 hours."
    assert visible_text(payload["blocks"]) == (
        "✅ “Prod stream” (Acme Stream) works again after failing for 3 hours "
        f"(since {slack_date(FAILING_SINCE)})."
    )
    assert not buttons(payload)


def test_a_recovery_without_a_recorded_start_just_says_it_works_again() -> None:
    payload = recovery_reply(recovered(failing_since=None))
    assert_valid("message", payload)
    assert visible_text(payload["blocks"]) == "✅ “Prod stream” (Acme Stream) works again."


def test_the_recovery_escapes_the_name() -> None:
    result = replace(recovered(), connection=connection(name=HOSTILE))
    assert "<" not in user_made_markup(recovery_reply(result))


# --- the alert, once resolved ----------------------------------------------------------------------


def test_a_resolved_alert_says_so_without_buttons() -> None:
    payload = resolved_alert(recovered())
    assert_valid("message", payload)
    assert payload["text"] == "✅ Resolved: “Prod stream” (Acme Stream) works again"
    shown = visible_text(payload["blocks"])
    assert "*Resolved*" in shown
    assert f"failed from {slack_date(FAILING_SINCE)} for 3 hours" in shown
    assert not buttons(payload)


def test_a_resolved_alert_escapes_the_name() -> None:
    result = replace(recovered(), connection=connection(name=HOSTILE))
    assert "<" not in user_made_markup(resolved_alert(result))
