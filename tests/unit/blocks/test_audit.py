"""A connection's audit history as an admin reads it, and the replies when it cannot be shown."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blocks.audit import (
    SYSTEM_ACTOR,
    audit_admin_check_failed_reply,
    audit_history_message,
    audit_not_admin_reply,
    audit_not_found_reply,
    audit_usage_reply,
)
from blocks.text import HEADER_MAX, literal, slack_date, unlinked
from bot.domain import AuditEntry, ConnectionSummary, Status
from tests.support.block_kit import assert_valid
from tests.support.block_text import HOSTILE_MARKUP, as_read, fold, markup_problems, visible_text
from tests.unit.blocks.test_approval import mention_like, summary, user_made_markup

REQUESTER = "U0REQUEST1"  # the requester of test_approval's summary()
ADMIN = "U0ADMIN01"
T0 = datetime(2024, 5, 1, 9, 30, tzinfo=UTC)


def event(
    action: str = "connection.approved",
    *,
    actor: str = ADMIN,
    before: str | None = Status.PENDING_APPROVAL,
    after: str | None = Status.ACTIVE,
    reason: str | None = None,
    minutes: int = 0,
    id: int = 1,
) -> AuditEntry:
    return AuditEntry(
        id=id,
        created_at=T0 + timedelta(minutes=minutes),
        team_id="T1",
        actor=actor,
        action=action,
        connection_id="conn-42",
        before_status=before,
        after_status=after,
        reason=reason,
    )


def trail() -> list[AuditEntry]:
    """Created, then rejected; newest first, as the service returns it."""
    return [
        event("connection.rejected", after=Status.REJECTED, reason="Use a service account", minutes=5, id=2),
        event("connection.created", actor=REQUESTER, before=None, after=Status.PENDING_APPROVAL, id=1),
    ]


def sections_text(payload: dict[str, Any]) -> list[str]:
    return [b["text"]["text"] for b in payload["blocks"] if b["type"] == "section"]


def history_lines(payload: dict[str, Any]) -> list[str]:
    return [line for text in sections_text(payload) for line in text.split("\n") if line.startswith("• ")]


def test_each_event_is_one_line_with_time_actor_action_statuses_and_reason() -> None:
    payload = audit_history_message(summary(), trail(), limit=20)
    assert_valid("message", payload)
    header = payload["blocks"][0]
    assert header == {
        "type": "header",
        "text": {"type": "plain_text", "text": "Audit: Production stream", "emoji": True},
    }
    rejected, created = history_lines(payload)
    assert rejected == (
        f"• {slack_date(T0 + timedelta(minutes=5))} · <@{ADMIN}> *rejected* · "
        "awaiting approval → rejected · “Use a service account”"
    )
    assert created == f"• {slack_date(T0)} · <@{REQUESTER}> *created* · new → awaiting approval"
    text = visible_text(payload)
    assert "Acme Stream" in text and "now *awaiting approval*" in text
    assert "2 events, newest first" in text
    assert "connections-bot audit export" in text
    assert payload["text"] == "Audit log of “Production stream”: 2 events"


@pytest.mark.parametrize(
    ("action", "words"),
    [
        ("connection.created", "created"),
        ("connection.approved", "approved"),
        ("connection.rejected", "rejected"),
        ("connection.expired", "expired"),
        ("connection.create_failed", "create failed"),
        ("connection.key_rotated", "key rotated"),
        ("<!channel>", "&lt;!channel&gt;"),
    ],
)
def test_actions_are_shown_in_words(action: str, words: str) -> None:
    [line] = history_lines(audit_history_message("Prod", [event(action)], limit=20))
    assert f"*{words}*" in line


def test_the_bot_is_named_for_system_events_and_odd_actors_are_not_mentions() -> None:
    events = [
        event("connection.expired", actor=SYSTEM_ACTOR, after=Status.EXPIRED, minutes=2, id=3),
        event(actor="<!here>", minutes=1, id=2),
    ]
    payload = audit_history_message(summary(), events, limit=20)
    assert_valid("message", payload)
    expired, odd = history_lines(payload)
    assert "the bot *expired*" in expired and "<@system>" not in expired
    assert "awaiting approval → expired" in expired
    assert "&lt;!here&gt; *approved*" in odd
    assert "<" not in user_made_markup(payload)


def test_unknown_statuses_are_shown_escaped_and_missing_ones_as_dashes() -> None:
    events = [event(before="<b>weird</b>", after=None, id=2), event(before=None, after=None, id=1)]
    first, second = history_lines(audit_history_message("Prod", events, limit=20))
    assert "&lt;b&gt;weird&lt;/b&gt; → —" in first
    assert "→" not in second


def test_names_and_reasons_cannot_ping_or_link() -> None:
    name = f"<!channel> & <https://evil.example|prod> {HOSTILE_MARKUP}"
    reason = f"see <!here> and <https://evil.example|this>\nsecond line {HOSTILE_MARKUP}"
    payload = audit_history_message(summary(name), [event(reason=reason)], limit=20)
    assert_valid("message", payload)
    assert "<" not in user_made_markup(payload)
    assert not markup_problems(payload)
    assert payload["blocks"][0]["text"]["text"] == unlinked(f"Audit: {name}")
    assert literal(name) in payload["text"]
    [line] = history_lines(payload)
    assert f"“{literal(' '.join(reason.split()))}”" in line


def test_a_long_name_is_cut_to_fit_the_header() -> None:
    payload = audit_history_message("x" * 500, trail(), limit=20)
    assert_valid("message", payload)
    header = payload["blocks"][0]["text"]["text"]
    assert len(header) == HEADER_MAX and header.startswith("Audit: xxx") and header.endswith("…")


def test_long_reasons_are_shortened_and_lines_are_packed_into_sections_that_fit() -> None:
    events = [event(reason="&" * 5000, minutes=-i, id=100 - i) for i in range(20)]
    payload = audit_history_message(summary(), events, limit=20)
    assert_valid("message", payload)
    lines = history_lines(payload)
    assert len(lines) == 20
    assert all(len(line) < 3000 and line.endswith("…”") for line in lines)
    assert all(len(text) <= 3000 for text in sections_text(payload))
    assert all(line.count("&amp;") < 300 for line in lines)


def test_lines_share_sections_as_far_as_they_fit() -> None:
    events = [event(reason="r" * 250, minutes=-i, id=100 - i) for i in range(20)]
    payload = audit_history_message(summary(), events, limit=20)
    assert_valid("message", payload)
    assert len(history_lines(payload)) == 20
    texts = sections_text(payload)
    assert 1 < len(texts) < 20 and all(len(text) <= 3000 for text in texts)


def test_no_more_than_limit_events_are_shown_and_the_footer_says_so() -> None:
    events = [event(minutes=-i, id=30 - i, reason=f"n{i}") for i in range(25)]
    payload = audit_history_message(summary(), events, limit=20)
    assert_valid("message", payload)
    lines = history_lines(payload)
    assert len(lines) == 20 and "“n0”" in lines[0] and "“n19”" in lines[-1]
    assert "The last 20 events, newest first" in visible_text(payload)


def test_more_is_announced_even_when_exactly_limit_events_are_given() -> None:
    payload = audit_history_message(summary(), trail(), limit=2, more=True)
    assert "The last 2 events" in visible_text(payload)
    assert "The last" not in visible_text(audit_history_message(summary(), trail(), limit=2))


def test_a_huge_history_still_fits_in_one_message() -> None:
    events = [event(reason="<" * 300, minutes=-i, id=1000 - i) for i in range(200)]
    payload = audit_history_message(summary(), events, limit=200)
    assert_valid("message", payload)
    assert len(payload["blocks"]) <= 50
    assert "Older events were left out" in visible_text(payload)


def test_an_empty_history_says_so() -> None:
    payload = audit_history_message(summary(), [], limit=20)
    assert_valid("message", payload)
    text = visible_text(payload)
    assert "No events are recorded" in text and "0 events" in text
    with pytest.raises(ValueError):
        audit_history_message(summary(), [], limit=0)


def test_a_name_alone_is_enough() -> None:
    payload = audit_history_message("Prod", trail(), limit=20)
    assert_valid("message", payload)
    assert payload["blocks"][0]["text"]["text"] == "Audit: Prod"
    assert all(b["type"] != "context" or "requested by" not in visible_text(b) for b in payload["blocks"])


def test_the_summary_line_shows_provider_status_and_requester() -> None:
    item = ConnectionSummary(**{**summary().__dict__, "status": Status.REJECTED})
    facts = audit_history_message(item, [], limit=20)["blocks"][1]
    assert facts["type"] == "context"
    assert visible_text(facts) == (
        f"Acme Stream · now *rejected* · requested by <@{REQUESTER}> {slack_date(item.created_at)}"
    )


def test_not_found_names_what_was_asked_escaped() -> None:
    payload = audit_not_found_reply("<!channel> prod")
    assert_valid("message", payload)
    assert "No connection named “&lt;!channel&gt; prod”" in visible_text(payload)
    assert "<" not in user_made_markup(payload)


def test_usage_shows_how_to_ask() -> None:
    payload = audit_usage_reply()
    assert_valid("message", payload)
    assert "`/connections audit &lt;name&gt;`" in visible_text(payload)


def test_refusals_say_who_may_and_why() -> None:
    refused = audit_not_admin_reply("Ask whoever runs the bot to add you to <!subteam^S0ADMINS01>.")
    assert_valid("message", refused)
    assert "Only admins of connections can see the audit log." in visible_text(refused)
    assert "<!subteam^S0ADMINS01>" in visible_text(refused)
    failed = audit_admin_check_failed_reply("could not check group membership: <timeout>")
    assert_valid("message", failed)
    assert "(could not check group membership: &lt;timeout&gt;)" in visible_text(failed)
    assert "not shown" in visible_text(failed)


texts = st.one_of(
    st.text(max_size=600),
    st.lists(st.one_of(mention_like, st.text(max_size=8)), max_size=30).map("".join),
)


@settings(max_examples=100, deadline=None)
@given(name=texts, reasons=st.lists(st.one_of(st.none(), texts), max_size=25), actor=texts)
def test_any_history_is_valid_and_cannot_ping(name: str, reasons: list[str | None], actor: str) -> None:
    events = [event(reason=reason, actor=actor, id=i) for i, reason in enumerate(reasons)]
    payload = audit_history_message(summary(name), events, limit=20)
    assert_valid("message", payload)
    assert "<" not in user_made_markup(payload)
    for reason, line in zip(reasons, history_lines(payload), strict=False):
        if reason and reason.strip() and len(" ".join(reason.split())) < 300:
            assert f"“{fold(' '.join(reason.split()))}”" in as_read(line)
