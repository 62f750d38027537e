"""The shared result pieces, and the direct message sent when the modal was closed."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blocks.parts import checks_blocks, hints_blocks, message, section
from blocks.results import latency_text, outcome_headline, result_message
from blocks.text import SECTION_TEXT_MAX, literal
from bot import ids
from bot.domain import NAME_MAX_LENGTH
from bot.providers.base import Check, Outcome, Verification
from tests.support.block_kit import assert_valid
from tests.support.block_text import (
    HOSTILE_HINT,
    HOSTILE_HINT_SHOWN,
    HOSTILE_MARKUP,
    markup_problems,
    visible_text,
)
from tests.unit.blocks.providers import FakeProvider

LAKE = FakeProvider("lake", "Data Lake", "A lake.")


def verification(
    outcome: Outcome = Outcome.OK,
    summary: str = "Data Lake accepted the token.",
    *,
    checks: tuple[Check, ...] = (),
    hints: tuple[str, ...] = (),
    request_id: str | None = None,
) -> Verification:
    return Verification(outcome, summary, checks, hints, 1234, request_id)


def as_message(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    return {"text": "t", "blocks": blocks}


# --- pieces ---------------------------------------------------------------------------------


def test_checks_mark_failures_as_warnings_when_the_credentials_still_work() -> None:
    checks = (Check("Read", True, "3 topics"), Check("Write", False, "not allowed"))
    assert visible_text(checks_blocks(checks, failures_are_fatal=False)) == (
        "*Checks*\n✅ *Read* — 3 topics\n⚠️ *Write* — not allowed"
    )
    assert visible_text(checks_blocks(checks, failures_are_fatal=True)) == (
        "*Checks*\n✅ *Read* — 3 topics\n❌ *Write* — not allowed"
    )


def test_check_names_and_details_from_an_api_are_escaped() -> None:
    detail = f"topic <@U1> & {HOSTILE_MARKUP}"
    blocks = checks_blocks((Check("<!here>", False, detail),), failures_are_fatal=True)
    assert_valid("message", as_message(blocks))
    assert visible_text(blocks) == f"*Checks*\n❌ *&lt;!here&gt;* — {literal(detail)}"
    assert not markup_problems(blocks)


def test_no_checks_and_no_hints_render_nothing() -> None:
    assert checks_blocks((), failures_are_fatal=True) == []
    assert hints_blocks(()) == []


def test_hints_are_bullets_under_a_title() -> None:
    blocks = hints_blocks(("Copy the key again.", "Use <the> secret & key together."))
    assert_valid("message", as_message(blocks))
    assert visible_text(blocks) == (
        "*What to check*\n• Copy the key again.\n• Use &lt;the&gt; secret &amp; key together."
    )


def test_a_hint_keeps_its_code_spans_and_links() -> None:
    blocks = hints_blocks(("Run `ALTER USER bob SET DISABLED = FALSE`; see https://status.confluent.cloud.",))
    assert visible_text(blocks) == (
        "*What to check*\n• Run `ALTER USER bob SET DISABLED = FALSE`; see https://status.confluent.cloud."
    )


def test_a_value_in_a_hint_cannot_close_its_code_span_mention_format_or_link() -> None:
    blocks = hints_blocks((HOSTILE_HINT,))
    assert_valid("message", as_message(blocks))
    text = visible_text(blocks)
    assert HOSTILE_HINT_SHOWN.search(text) and "<" not in text
    assert not markup_problems(blocks)


def test_the_result_message_shows_hints_as_the_provider_wrote_them() -> None:
    found = verification(Outcome.UNAUTHORIZED, "Rejected.", hints=(HOSTILE_HINT,))
    payload = result_message(LAKE, "Prod", found, "")
    assert_valid("message", payload)
    assert HOSTILE_HINT_SHOWN.search(visible_text(payload)) and not markup_problems(payload)


def test_a_hint_longer_than_a_section_continues_in_the_next() -> None:
    hint = " ".join(f"w{i}" for i in range(1500))  # about 6000 characters
    blocks = hints_blocks((hint,))
    assert_valid("message", as_message(blocks))
    assert len(blocks) >= 3
    assert all(len(b["text"]["text"]) <= 3000 for b in blocks)
    joined = " ".join(visible_text(blocks).replace("*What to check*\n• ", "").split())
    assert joined == hint


def test_hints_beyond_the_block_budget_are_cut_with_a_note() -> None:
    blocks = hints_blocks(tuple("x" * 2000 for _ in range(50)), max_blocks=5)
    assert len(blocks) == 5
    assert "left out" in blocks[-1]["text"]["text"]


@pytest.mark.parametrize(("ms", "shown"), [(0, "0 ms"), (240, "240 ms"), (999, "999 ms"), (1234, "1.2 s")])
def test_latency_reads_naturally(ms: int, shown: str) -> None:
    assert latency_text(ms) == shown


def test_headline_on_success_and_on_failure() -> None:
    assert outcome_headline(LAKE, verification(), "Prod") == (
        "✅ *The credentials for “Prod” work.*\nData Lake accepted the token."
    )
    assert (
        outcome_headline(LAKE, verification()) == "✅ *The credentials work.*\nData Lake accepted the token."
    )
    failed = outcome_headline(LAKE, verification(Outcome.RATE_LIMITED, "Data Lake is busy <now>."), "Prod")
    assert failed == (
        "❌ *Data Lake is busy &lt;now&gt;.*\nWe couldn't verify the credentials for “Prod” with Data Lake. "
        "This is often temporary: try again in a minute."
    )


def test_a_message_refuses_more_blocks_than_slack_allows() -> None:
    block = {"type": "divider"}
    assert message("t", [block] * 50)["blocks"] == [block] * 50
    with pytest.raises(ValueError):
        message("t", [block] * 51)
    with pytest.raises(ValueError):
        message("", [block])


# --- the direct message ---------------------------------------------------------------------


def test_success_message_has_a_fallback_text_the_checks_and_the_approval_note() -> None:
    payload = result_message(
        LAKE,
        "Prod",
        verification(checks=(Check("Token", True, "valid"),)),
        "It now awaits an admin's approval in <#C0ADMINS>.",
    )
    assert_valid("message", payload)
    assert payload["text"] == "✅ The credentials for “Prod” work."
    text = visible_text(payload["blocks"])
    assert "✅ *Token* — valid" in text
    # The note is the caller's mrkdwn: the channel stays a link.
    assert "It now awaits an admin's approval in <#C0ADMINS>." in text
    assert "Checked in 1.2 s" in text
    assert not any(b["type"] == "actions" for b in payload["blocks"])


def test_failure_message_lists_hints_and_request_id_and_offers_try_again_when_asked() -> None:
    failed = verification(
        Outcome.FORBIDDEN, "The token may not read.", hints=("Grant the reader role.",), request_id="abc-1"
    )
    payload = result_message(LAKE, "Prod", failed, "", try_again_value="lake:42")
    assert_valid("message", payload)
    assert payload["text"] == "❌ Couldn't verify “Prod” with Data Lake: The token may not read."
    text = visible_text(payload["blocks"])
    assert "• Grant the reader role." in text
    assert "request id: `abc-1`" in text
    assert "*Nothing was saved.*" in text
    buttons = [e for b in payload["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert [(b["action_id"], b["value"]) for b in buttons] == [(ids.ACTION_TRY_AGAIN, "lake:42")]

    without = result_message(LAKE, "Prod", failed, "")
    assert not any(b["type"] == "actions" for b in without["blocks"])


def test_a_flood_of_hints_still_fits_in_a_message() -> None:
    flood = verification(
        Outcome.UNAUTHORIZED,
        "No.",
        hints=tuple("h " * 1400 for _ in range(200)),
        checks=tuple(Check(f"c{i}", False, "d " * 1400) for i in range(60)),
    )
    payload = result_message(LAKE, "Prod", flood, "", try_again_value="v")
    assert_valid("message", payload)
    assert len(payload["blocks"]) <= 50
    assert payload["blocks"][-1]["type"] == "actions"


_MENTIONS = ["<!channel>", "<!here>", "<@U123>", "<#C1|x>", "<https://e.example|y>", "&", "*"]


@settings(max_examples=150, deadline=None)
@given(
    name=st.one_of(
        st.text(max_size=NAME_MAX_LENGTH),
        st.lists(st.sampled_from(_MENTIONS) | st.text(max_size=5), max_size=8).map("".join),
    ),
    ok=st.booleans(),
)
def test_no_name_can_smuggle_a_mention_into_a_result(name: str, ok: bool) -> None:
    outcome = Outcome.OK if ok else Outcome.UNAUTHORIZED
    payload = result_message(LAKE, name, verification(outcome, f"summary {name}"), "Awaits approval.")
    assert_valid("message", payload)
    assert not re.search(r"<[!@#h]", visible_text(payload))


def test_a_summary_full_of_characters_to_escape_still_fits_in_a_section() -> None:
    # Escaping makes "&" five characters long; the cut must leave room for that.
    failed = Verification(Outcome.UNAUTHORIZED, "&" * 2000, (), (), latency_ms=5)
    headline = outcome_headline(LAKE, failed)
    assert len(headline) <= SECTION_TEXT_MAX
    assert_valid("message", {"text": "x", "blocks": [section(headline)]})
