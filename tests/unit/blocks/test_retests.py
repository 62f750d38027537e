"""Re-tests as on-call engineers read them: one result, the bulk report, a connection's status with
its recent history, and the short notes around them."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from blocks.parts import refusal_message
from blocks.removal import REMOVE_CONFIRM_TITLE
from blocks.retests import (
    DETAILED_FAILING_MAX,
    PENDING_ROTATION_BLOCK,
    retest_all_running,
    retest_one_started,
    retest_report_message,
    retest_result_message,
    retest_started,
    status_message,
)
from blocks.text import literal, slack_date
from bot import ids
from bot.domain import (
    ApprovalRequest,
    ChangeKind,
    ConnectionSummary,
    Health,
    HealthChange,
    HistoryEntry,
    RequestKind,
    RetestReport,
    RetestResult,
    RotationStatus,
    Status,
    StatusReport,
    Trigger,
)
from bot.providers.base import Check, Outcome, Provider, Verification
from tests.support.block_kit import assert_valid
from tests.support.block_text import (
    HOSTILE_HINT,
    HOSTILE_HINT_SHOWN,
    HOSTILE_MARKUP,
    markup_problems,
    visible_text,
)
from tests.support.slack_requests import find_action
from tests.unit.blocks.providers import FakeProvider
from tests.unit.blocks.test_approval import buttons, user_made_markup

OWNER = "U0OWNER001"
TESTER = "U0TESTER01"
CREATED = datetime(2024, 1, 1, 9, 0, tzinfo=UTC)
STORED = datetime(2024, 1, 2, 9, 0, tzinfo=UTC)
NOW = datetime(2024, 4, 6, 12, 0, tzinfo=UTC)  # 95 days after STORED
VERIFIED = datetime(2024, 4, 6, 11, 0, tzinfo=UTC)
FAILING_SINCE = datetime(2024, 4, 6, 8, 0, tzinfo=UTC)  # 3 hours before VERIFIED
PROVIDER = FakeProvider("acme_stream", "Acme Stream", "Streams.")
PROVIDERS: dict[str, Provider] = {PROVIDER.key: PROVIDER}
HOSTILE = f"<!channel> & <@U0VICTIM1> {HOSTILE_MARKUP}"

UNAUTHORIZED_HINTS = (
    "Check the key for typos: it is case-sensitive.",
    "A 401 means the key was revoked or deleted: create a new one and rotate it here.",
)


def connection(
    number: int = 1,
    *,
    name: str | None = None,
    status: Status = Status.ACTIVE,
    health: Health = Health.HEALTHY,
    provider_key: str = "acme_stream",
    provider_title: str = "Acme Stream",
    created_by: str = OWNER,
    key_hint: str | None = "ABCD…WXYZ",
    last_verified_at: datetime | None = VERIFIED,
    credential_created_at: datetime | None = STORED,
) -> ConnectionSummary:
    return ConnectionSummary(
        id=f"00000000-0000-4000-8000-{number:012d}",
        name=name if name is not None else f"Connection {number:04d}",
        provider_key=provider_key,
        provider_title=provider_title,
        status=status,
        health=health,
        created_by=created_by,
        created_at=CREATED,
        last_verified_at=last_verified_at,
        key_hint=key_hint,
        credential_created_at=credential_created_at,
    )


def verification(
    outcome: Outcome = Outcome.OK,
    summary: str | None = None,
    *,
    checks: tuple[Check, ...] | None = None,
    hints: tuple[str, ...] = (),
    latency_ms: int = 240,
    request_id: str | None = None,
) -> Verification:
    if summary is None:
        summary = {
            Outcome.OK: "Authenticated as service account sa-42.",
            Outcome.UNAUTHORIZED: "The API key was rejected (401).",
            Outcome.FORBIDDEN: "The key lacks permission to list topics (403).",
            Outcome.RATE_LIMITED: "Acme Stream is rate-limiting requests (429).",
            Outcome.UNREACHABLE: "We couldn't reach Acme Stream.",
        }.get(outcome, "Something went wrong.")
    if checks is None:
        ok = outcome is Outcome.OK
        checks = (Check("Authenticate", ok, "key accepted" if ok else "401 Unauthorized"),)
    return Verification(outcome, summary, checks, hints, latency_ms, request_id)


def failing(number: int = 1, **kw: Any) -> RetestResult:
    change = kw.pop("change", None)
    found = verification(
        Outcome.UNAUTHORIZED,
        checks=(Check("Authenticate", False, "401 Unauthorized"), Check("Reach the API", True, "200")),
        hints=UNAUTHORIZED_HINTS,
        request_id=kw.pop("request_id", None),
    )
    return RetestResult("T1", connection(number, health=Health.FAILING, **kw), found, change)


def healthy(number: int = 1, **kw: Any) -> RetestResult:
    return RetestResult("T1", connection(number, **kw), verification())


def rate_limited(number: int = 1, **kw: Any) -> RetestResult:
    found = verification(Outcome.RATE_LIMITED, checks=(), hints=("Wait a minute.",))
    return RetestResult("T1", connection(number, **kw), found)


def lines_of(payload: dict[str, Any]) -> list[str]:
    return visible_text(payload).splitlines()


# --- starting ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "expected"),
    [(12, "⏳ Re-testing 12 connections…"), (1, "⏳ Re-testing 1 connection…")],
)
def test_retest_started_counts_the_connections(count: int, expected: str) -> None:
    payload = retest_started(count)
    assert_valid("message", payload)
    assert payload["text"] == expected
    assert visible_text(payload["blocks"]) == expected


@pytest.mark.parametrize(
    ("ago", "said"), [(timedelta(seconds=20), "20 s ago"), (timedelta(minutes=3, seconds=5), "3 minutes ago")]
)
def test_a_running_test_all_is_named_with_who_when_and_how_far(ago: timedelta, said: str) -> None:
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    payload = retest_all_running("U0123ABCD", now - ago, 40, 12, now)
    assert_valid("message", payload)
    assert visible_text(payload["blocks"]).startswith(
        f"⏳ <@U0123ABCD> started a re-test of all 40 connections {said}; 12 done."
    )


def test_retest_started_with_nothing_to_do_says_there_is_no_active_connection() -> None:
    payload = retest_started(0)
    assert_valid("message", payload)
    assert "There is no active connection to re-test yet." in visible_text(payload)
    assert "Re-testing" not in visible_text(payload)


def test_retest_one_started_quotes_the_escaped_name() -> None:
    payload = retest_one_started(HOSTILE)
    assert_valid("message", payload)
    assert payload["text"] == f"⏳ Re-testing “{literal(HOSTILE)}”…"
    assert "<" not in user_made_markup(payload)


# --- one result ----------------------------------------------------------------------------------


def test_a_working_connection_says_so_with_its_checks_latency_and_a_retest_button() -> None:
    result = healthy(7, name="Prod stream")
    payload = retest_result_message(result, PROVIDER)
    assert_valid("message", payload)
    assert payload["text"] == "✅ “Prod stream” (Acme Stream) works."
    text = visible_text(payload)
    assert "✅ *“Prod stream” works.* Acme Stream accepted its stored credentials." in text
    assert "Authenticated as service account sa-42." in text
    assert "✅ *Authenticate* — key accepted" in text
    assert "Checked in 240 ms" in text
    assert "What to check" not in text
    _, button = find_action(payload["blocks"], ids.ACTION_RETEST, result.connection.id)
    assert button["text"]["text"] == "Re-test"


def test_a_failure_shows_the_summary_the_failed_checks_the_hints_and_the_request_id() -> None:
    result = failing(name="Prod stream", request_id="req-123")
    payload = retest_result_message(result, PROVIDER)
    assert_valid("message", payload)
    assert payload["text"] == "❌ “Prod stream” (Acme Stream) is failing: The API key was rejected (401)."
    text = visible_text(payload)
    assert "❌ *“Prod stream” is failing:* The API key was rejected (401)." in text
    assert "Acme Stream no longer accepts its stored credentials." in text
    assert "❌ *Authenticate* — 401 Unauthorized" in text
    assert "✅ *Reach the API* — 200" in text
    assert "*What to check*" in text
    for hint in UNAUTHORIZED_HINTS:
        assert f"• {hint}" in text
    assert "Acme Stream request id: `req-123`" in text
    assert text.index("*Checks*") < text.index("*What to check*") < text.index("Checked in")
    find_action(payload["blocks"], ids.ACTION_RETEST, result.connection.id)


def test_a_failure_on_the_providers_side_suggests_re_testing_later() -> None:
    result = RetestResult("T1", connection(), verification(Outcome.UNREACHABLE, hints=("Check the VPN.",)))
    text = visible_text(retest_result_message(result, PROVIDER))
    assert "❌ *“Connection 0001” is failing:* We couldn't reach Acme Stream." in text
    assert "This may be on Acme Stream's side and temporary" in text
    assert "• Check the VPN." in text


def test_a_new_failure_says_an_alert_was_raised() -> None:
    result = failing(change=HealthChange(ChangeKind.FAILED, VERIFIED))
    assert "an alert was raised" in visible_text(retest_result_message(result, PROVIDER))


def test_a_recovery_says_it_works_again_and_for_how_long_it_failed() -> None:
    result = replace(healthy(), change=HealthChange(ChangeKind.RECOVERED, FAILING_SINCE, "C1", "1.2"))
    payload = retest_result_message(result, PROVIDER)
    assert_valid("message", payload)
    assert f"🎉 It works again after failing for 3 hours since {slack_date(FAILING_SINCE)}." in visible_text(
        payload
    )


def test_a_connection_still_failing_says_since_when() -> None:
    result = failing(change=HealthChange(ChangeKind.STILL_FAILING, FAILING_SINCE, "C1", "1.2"))
    text = visible_text(retest_result_message(result, PROVIDER))
    assert f"It has been failing since {slack_date(FAILING_SINCE)}." in text
    assert "alert was raised" not in text


def test_a_rate_limited_result_is_inconclusive_and_leaves_the_health_unchanged() -> None:
    result = rate_limited(health=Health.HEALTHY)
    payload = retest_result_message(result, PROVIDER)
    assert_valid("message", payload)
    text = visible_text(payload)
    assert payload["text"].startswith(
        "⏳ “Connection 0001” (Acme Stream) could not be checked (rate-limited)"
    )
    assert (
        "⏳ *“Connection 0001” could not be checked:* Acme Stream is rate-limiting requests (429).\n"
        "Acme Stream is rate-limiting requests, so the result is inconclusive and its health is "
        "unchanged (🟢 healthy)."
    ) in text
    assert "❌" not in text
    assert "is failing" not in text


def test_without_the_provider_the_stored_title_is_used() -> None:
    result = failing(provider_key="gone", provider_title="Old Queue")
    payload = retest_result_message(result, None)
    assert_valid("message", payload)
    assert "(Old Queue) is failing" in payload["text"]
    assert "Old Queue no longer accepts" in visible_text(payload)


def test_a_connection_removed_meanwhile_gets_no_retest_button() -> None:
    result = failing(status=Status.REVOKED)
    payload = retest_result_message(result, PROVIDER)
    assert_valid("message", payload)
    assert not buttons(payload)


def test_names_summaries_checks_and_hints_cannot_ping_or_link() -> None:
    found = Verification(
        Outcome.FORBIDDEN,
        f"Denied for {HOSTILE}",
        (Check(HOSTILE, False, HOSTILE),),
        (HOSTILE_HINT,),
        10,
        request_id="<!here>",
    )
    result = RetestResult("T1", connection(name=HOSTILE, created_by="<!everyone>"), found)
    payload = retest_result_message(result, FakeProvider("x", "<!channel> Evil", "d"))
    assert_valid("message", payload)
    markup = user_made_markup(payload)
    assert "<" not in markup and ">" not in markup
    assert literal(HOSTILE) in markup and not markup_problems(payload)
    # A hint keeps its own code span and link; the value inside stays inert.
    assert HOSTILE_HINT_SHOWN.search(markup)


def test_a_hint_in_the_report_keeps_its_code_and_link_while_its_value_stays_inert() -> None:
    found = verification(Outcome.UNAUTHORIZED, hints=(HOSTILE_HINT,))
    result = RetestResult("T1", connection(health=Health.FAILING), found)
    payload = retest_report_message(RetestReport((result,)), PROVIDERS)
    assert_valid("message", payload)
    markup = user_made_markup(payload)
    assert "<" not in markup and HOSTILE_HINT_SHOWN.search(markup)
    assert not markup_problems(payload)


def test_huge_provider_output_still_fits_one_message() -> None:
    found = Verification(
        Outcome.UNAUTHORIZED,
        "&" * 5000,
        tuple(Check("<c>" * 100, False, "&" * 3000) for _ in range(40)),
        tuple("<h>" * 1000 for _ in range(40)),
        10,
        request_id="r" * 5000,
    )
    result = RetestResult("T1", connection(name="&" * 64), found, HealthChange(ChangeKind.FAILED, VERIFIED))
    payload = retest_result_message(result, PROVIDER)
    assert_valid("message", payload)
    find_action(payload["blocks"], ids.ACTION_RETEST)


# --- the bulk report -----------------------------------------------------------------------------


def test_the_report_starts_with_the_counts_and_the_time_it_took() -> None:
    results = (failing(1), failing(2), rate_limited(3), *(healthy(n) for n in range(4, 14)))
    payload = retest_report_message(RetestReport(results, elapsed_ms=3400), PROVIDERS)
    assert_valid("message", payload)
    assert payload["text"] == "Re-tested 13 connections: 10 healthy, 2 failing, 1 inconclusive (rate-limited)"
    first = payload["blocks"][0]["text"]["text"]
    assert first == (
        "❌ *10 healthy, 2 failing, 1 inconclusive (rate-limited)*\nRe-tested 13 connections in 3.4 s."
    )


def test_an_all_healthy_report_leaves_out_the_inconclusive_count() -> None:
    payload = retest_report_message(RetestReport((healthy(1), healthy(2)), elapsed_ms=75_500), PROVIDERS)
    assert_valid("message", payload)
    assert (
        payload["blocks"][0]["text"]["text"]
        == "✅ *2 healthy, 0 failing*\nRe-tested 2 connections in 1 min 16 s."
    )
    assert "inconclusive" not in visible_text(payload)


def test_failing_connections_come_first_in_full_then_inconclusive_then_healthy_lines() -> None:
    results = (
        failing(1, name="Broken", change=HealthChange(ChangeKind.FAILED, VERIFIED)),
        rate_limited(2, name="Busy"),
        healthy(3, name="Fine"),
    )
    payload = retest_report_message(RetestReport(results, elapsed_ms=900), PROVIDERS)
    assert_valid("message", payload)
    text = visible_text(payload)
    assert "❌ *Broken* · Acme Stream · 240 ms · 🔔 new failure\nThe API key was rejected (401)." in text
    assert "❌ *Authenticate* — 401 Unauthorized" in text
    assert "Reach the API" not in text  # only the checks that failed
    assert f"• {UNAUTHORIZED_HINTS[1]}" in text
    assert (
        "*Inconclusive: rate-limited, health unchanged (1)*\n"
        "⏳ *Busy* · Acme Stream · Acme Stream is rate-limiting requests (429)."
    ) in text
    assert "*Healthy (1)*\n✅ *Fine* · Acme Stream · 240 ms" in text
    assert text.index("Broken") < text.index("Busy") < text.index("Fine")
    # The failing one can be re-tested from the report.
    find_action(payload["blocks"], ids.ACTION_RETEST, results[0].connection.id)
    assert "left out" not in text


def test_report_uses_the_stored_title_for_a_provider_no_longer_offered() -> None:
    results = (healthy(1, name="Legacy", provider_key="gone", provider_title="Old Queue"),)
    text = visible_text(retest_report_message(RetestReport(results), PROVIDERS))
    assert "✅ *Legacy* · Old Queue · 240 ms" in text


def test_an_empty_report_says_there_was_nothing_to_re_test() -> None:
    payload = retest_report_message(RetestReport(()), PROVIDERS)
    assert_valid("message", payload)
    assert "There was no active connection to re-test." in visible_text(payload)


def _named(payload: dict[str, Any]) -> set[str]:
    return set(re.findall(r"Connection \d{4}", visible_text(payload)))


def _left_out(payload: dict[str, Any]) -> int:
    found = re.search(r"(\d+) more connections? left out to fit in one message\.", visible_text(payload))
    return int(found.group(1)) if found else 0


def test_a_thousand_results_fit_one_message_and_what_is_left_out_is_counted() -> None:
    results = (*(failing(n) for n in range(3)), *(healthy(n) for n in range(3, 1000)))
    payload = retest_report_message(RetestReport(results, elapsed_ms=120_000), PROVIDERS)
    assert_valid("message", payload)
    assert len(payload["blocks"]) <= 50
    assert payload["blocks"][0]["text"]["text"].startswith("❌ *997 healthy, 3 failing*")
    shown = _named(payload)
    assert {"Connection 0000", "Connection 0001", "Connection 0002"} <= shown
    left_out = _left_out(payload)
    assert left_out > 0
    assert len(shown) + left_out == 1000
    assert "/connections status &lt;name&gt;" in visible_text(payload)
    assert len(payload["text"]) < 200


def test_sixty_failing_show_a_few_in_full_and_the_rest_in_one_line_each() -> None:
    results = tuple(failing(n) for n in range(60))
    payload = retest_report_message(RetestReport(results, elapsed_ms=5000), PROVIDERS)
    assert_valid("message", payload)
    assert len(payload["blocks"]) <= 50
    text = visible_text(payload)
    assert text.count("*What to check*") == DETAILED_FAILING_MAX
    assert f"*Also failing ({60 - DETAILED_FAILING_MAX})*" in text
    assert "❌ *Connection 0059* · Acme Stream · The API key was rejected (401). · 240 ms" in text
    assert len(_named(payload)) + _left_out(payload) == 60
    assert "/connections status &lt;name&gt;" in text


def test_long_hostile_names_in_a_big_report_stay_escaped_and_within_limits() -> None:
    long_hostile = (HOSTILE * 3)[:64]
    results = (
        *(failing(n, name=f"{long_hostile}{n}") for n in range(60)),
        *(rate_limited(n, name=f"{'&' * 60}{n}") for n in range(60, 100)),
        *(healthy(n, name=f"{'<' * 60}{n}") for n in range(100, 1000)),
    )
    payload = retest_report_message(RetestReport(results), PROVIDERS)
    assert_valid("message", payload)
    markup = user_made_markup(payload)
    assert "<" not in markup and ">" not in markup
    assert len(visible_text(payload)) <= 40_000


@pytest.mark.parametrize(("n_failing", "n_healthy"), [(0, 1), (1, 0), (5, 45), (6, 200), (49, 1), (200, 0)])
def test_every_result_is_shown_or_counted(n_failing: int, n_healthy: int) -> None:
    results = (
        *(failing(n) for n in range(n_failing)),
        *(healthy(n) for n in range(n_failing, n_failing + n_healthy)),
    )
    payload = retest_report_message(RetestReport(results), PROVIDERS)
    assert_valid("message", payload)
    assert len(_named(payload)) + _left_out(payload) == n_failing + n_healthy


# --- status --------------------------------------------------------------------------------------

HISTORY = (
    HistoryEntry(
        VERIFIED, Trigger.RETEST, Outcome.UNAUTHORIZED, "The API key was rejected (401).", 250, TESTER
    ),
    HistoryEntry(
        VERIFIED - timedelta(hours=6), Trigger.SCHEDULE, Outcome.RATE_LIMITED, "Too many requests.", 90
    ),
    HistoryEntry(VERIFIED - timedelta(days=1), Trigger.ROTATION, Outcome.OK, "Works.", 1200, TESTER),
    HistoryEntry(CREATED, Trigger.CREATE, Outcome.OK, "Authenticated.", 300, OWNER),
)


def status(
    item: ConnectionSummary | None = None,
    *,
    history: tuple[HistoryEntry, ...] = HISTORY,
    failing_since: datetime | None = None,
    pending_rotation: ApprovalRequest | None = None,
    rotation_days: float = 365,
    provider: Provider | None = PROVIDER,
) -> dict[str, Any]:
    report = StatusReport(item or connection(), history, failing_since, pending_rotation)
    return status_message(report, provider, now=NOW, rotation_days=rotation_days)


def test_status_shows_the_facts_of_the_connection() -> None:
    item = connection(name="Prod stream", health=Health.FAILING)
    payload = status(item, failing_since=FAILING_SINCE)
    assert_valid("message", payload)
    assert payload["blocks"][0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "Prod stream", "emoji": True},
    }
    assert payload["text"] == "“Prod stream” (Acme Stream): active, 🔴 failing"
    text = visible_text(payload)
    assert "*Provider*\nAcme Stream" in text
    assert "*Status*\nactive" in text
    assert "*Health*\n🔴 failing" in text
    assert f"*Failing since*\n{slack_date(FAILING_SINCE)}" in text
    assert f"*Last verified*\n{slack_date(VERIFIED)}" in text
    assert "*Key*\n`ABCD…WXYZ`\nkey stored 95 days ago" in text
    assert f"*Added by*\n<@{OWNER}> {slack_date(CREATED)}" in text
    assert "⚠️" not in text


def test_status_of_a_connection_never_verified_says_never_and_has_no_failing_since() -> None:
    item = connection(health=Health.UNKNOWN, last_verified_at=None, key_hint=None, credential_created_at=None)
    text = visible_text(status(item, history=()))
    assert "*Health*\n⚪ not checked yet" in text
    assert "*Last verified*\nnever" in text
    assert "*Key*\n—" in text
    assert "Failing since" not in text
    assert "No verification recorded yet." in text


def test_status_lists_the_latest_results_with_what_triggered_each() -> None:
    payload = status()
    assert_valid("message", payload)
    lines = lines_of(payload)
    start = lines.index("*Last 4 results*")
    assert lines[start + 1 : start + 5] == [
        f"{slack_date(VERIFIED)} · re-test by <@{TESTER}> · ❌ The API key was rejected (401). · 250 ms",
        f"{slack_date(VERIFIED - timedelta(hours=6))} · scheduled · ⏳ Too many requests. · 90 ms",
        f"{slack_date(VERIFIED - timedelta(days=1))} · rotation · ✅ Works. · 1.2 s",
        f"{slack_date(CREATED)} · created · ✅ Authenticated. · 300 ms",
    ]


def test_status_shows_at_most_ten_results() -> None:
    history = tuple(
        HistoryEntry(VERIFIED - timedelta(hours=n), Trigger.SCHEDULE, Outcome.OK, f"run {n}", 100)
        for n in range(15)
    )
    text = visible_text(status(history=history))
    assert "*Last 10 results*" in text
    assert "run 9 ·" in text and "run 10 ·" not in text


def test_a_key_older_than_the_rotation_period_is_flagged() -> None:
    payload = status(rotation_days=90)
    assert_valid("message", payload)
    text = visible_text(payload)
    assert "⚠️ *This key was stored 95 days ago*, more than the 90 days" in text
    assert "rotate it" in text


def test_a_pending_connection_is_never_told_to_rotate() -> None:
    text = visible_text(status(connection(status=Status.PENDING_APPROVAL), rotation_days=1))
    assert "⚠️" not in text and "rotate it" not in text


def test_a_pending_rotation_says_who_asked_when_and_the_new_key_awaits_approval() -> None:
    item = connection()
    rotation = ApprovalRequest(
        kind=RequestKind.ROTATION,
        id="r1",
        team_id="T1",
        connection=item,
        requested_by=TESTER,
        requested_at=VERIFIED,
        new_key_hint="NEWK…EY99",
        status=RotationStatus.PENDING_APPROVAL,
    )
    payload = status(item, pending_rotation=rotation)
    assert_valid("message", payload)
    text = visible_text(payload)
    assert "🔄 *A new key `NEWK…EY99` is awaiting approval.*" in text
    assert f"<@{TESTER}> asked {slack_date(VERIFIED)}" in text
    # Decidable from here too (a request the admin channel never got must not be stuck).
    [decide] = [b for b in payload["blocks"] if b.get("block_id") == PENDING_ROTATION_BLOCK]
    assert [(e["action_id"], e["value"]) for e in decide["elements"]] == [
        (ids.ACTION_APPROVE_ROTATION, "r1"),
        (ids.ACTION_REJECT_ROTATION, "r1"),
    ]


def test_an_active_connection_can_be_re_tested_rotated_and_removed_after_confirming() -> None:
    item = connection()
    payload = status(item)
    actions = [b for b in payload["blocks"] if b["type"] == "actions"]
    assert len(actions) == 1
    assert [(e["action_id"], e["value"], e["text"]["text"]) for e in actions[0]["elements"]] == [
        (ids.ACTION_RETEST, item.id, "Re-test"),
        (ids.ACTION_ROTATE, item.id, "Rotate"),
        (ids.ACTION_REMOVE, item.id, "Remove"),
    ]
    remove = actions[0]["elements"][2]
    assert remove["style"] == "danger"
    confirm = remove["confirm"]
    assert confirm["title"]["text"] == REMOVE_CONFIRM_TITLE == "Remove connection?"
    assert "revoked" in confirm["text"]["text"] and "destroyed" in confirm["text"]["text"]
    assert "cannot be undone" in confirm["text"]["text"]
    assert confirm["confirm"]["text"] == "Remove"
    assert confirm["deny"]["text"] == "Cancel"


def test_a_pending_connection_can_only_be_re_tested() -> None:
    payload = status(connection(status=Status.PENDING_APPROVAL))
    assert [b["action_id"] for b in buttons(payload)] == [ids.ACTION_RETEST]


@pytest.mark.parametrize("gone", [Status.REJECTED, Status.EXPIRED, Status.REVOKED])
def test_a_connection_without_credentials_has_no_buttons(gone: Status) -> None:
    payload = status(connection(status=gone))
    assert_valid("message", payload)
    assert not buttons(payload)
    assert f"*Status*\n{gone.label}" in visible_text(payload)
    assert "key stored" not in visible_text(payload)


def test_status_without_the_provider_uses_the_stored_title() -> None:
    text = visible_text(status(connection(provider_title="Old Queue"), provider=None))
    assert "*Provider*\nOld Queue" in text


def test_status_escapes_everything_users_and_providers_wrote() -> None:
    history = (HistoryEntry(VERIFIED, Trigger.RETEST, Outcome.FORBIDDEN, HOSTILE, 5, "<!here>"),)
    item = connection(name=HOSTILE, key_hint="<!here>", created_by="<!everyone>")
    rotation = ApprovalRequest(
        kind=RequestKind.ROTATION,
        id="r1",
        team_id="T1",
        connection=item,
        requested_by="<!here>",
        requested_at=VERIFIED,
        new_key_hint="<@U0VICTIM1>",
        status=RotationStatus.PENDING_APPROVAL,
    )
    payload = status(
        item, history=history, pending_rotation=rotation, provider=FakeProvider("x", "<!channel>", "d")
    )
    assert_valid("message", payload)
    markup = user_made_markup(payload)
    assert "<" not in markup and ">" not in markup
    assert payload["blocks"][0]["text"]["text"].startswith("<!channel>")  # plain text: shown, never parsed
    assert payload["blocks"][0]["text"]["type"] == "plain_text"


def test_status_with_long_everything_fits() -> None:
    item = connection(name="N" * 500, key_hint="&" * 500)
    history = tuple(
        HistoryEntry(VERIFIED, Trigger.RETEST, Outcome.UNAUTHORIZED, "&" * 5000, 5, "x" * 300)
        for _ in range(30)
    )
    payload = status(item, history=history, failing_since=FAILING_SINCE, rotation_days=1)
    assert_valid("message", payload)


# --- refusals ------------------------------------------------------------------------------------


def test_a_refusal_is_one_escaped_sentence() -> None:
    payload = refusal_message("There is no connection named “<!channel>” in this workspace.")
    assert_valid("message", payload)
    assert payload["text"] == "There is no connection named “&lt;!channel&gt;” in this workspace."
    assert visible_text(payload["blocks"]) == payload["text"]


def test_a_very_long_refusal_is_shortened_to_fit() -> None:
    payload = refusal_message("&" * 10_000)
    assert_valid("message", payload)
    assert payload["text"].endswith("…")
