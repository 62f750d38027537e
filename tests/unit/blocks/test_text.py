"""mrkdwn helpers: what user text looks like once it is safe to show."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blocks.text import (
    as_utc,
    chunks,
    credential_age_text,
    duration_text,
    escape,
    inline,
    literal,
    one_line,
    own_line,
    plural,
    slack_date,
    truncate,
    unlinked,
)
from bot.domain import name_key
from bot.markup import inert
from tests.support.block_text import HOSTILE_MARKUP, as_read, fold, user_formatting_or_links


def test_escape_neutralises_mentions_links_and_ampersands() -> None:
    assert escape("<!channel>") == "&lt;!channel&gt;"
    assert escape("<@U123> & <https://x.example|click>") == (
        "&lt;@U123&gt; &amp; &lt;https://x.example|click&gt;"
    )


def test_escape_keeps_an_entity_typed_by_the_user_visible_as_typed() -> None:
    # "&lt;" typed by a user must read "&lt;", not "<".
    assert escape("a &lt; b") == "a &amp;lt; b"


def test_literal_text_can_neither_format_nor_link_and_reads_as_typed() -> None:
    typed = f"<!here> {HOSTILE_MARKUP} www.evil.example x@evil.example @here #general *a*b_c `x` ~~y~~ ＊z＊"
    shown = literal(typed)
    assert user_formatting_or_links(typed) and not user_formatting_or_links(shown)
    assert not re.search(r"(?<![A-Za-z0-9])[*_~]|[*_~](?![A-Za-z0-9])|[`＊＿｀]", shown)
    assert not re.search(r"[.:@#](?!\u2060)\S", shown)
    assert "<" not in shown and as_read(shown) == fold(typed)


def test_literal_text_keeps_what_cannot_format_as_it_is() -> None:
    # snake_case and a*b inside a word are not markup in Slack; copying such a name keeps working.
    assert literal("prod_kafka_eu a*b x~y") == "prod_kafka_eu a*b x~y"
    assert inline("_private_ db", 50) == "ˍprivateˍ db"


@given(text=st.text(alphabet="ab1 _*~`＊＿｀.:@#&<>;x\n", max_size=40))
def test_literal_is_an_inert_value_escaped(text: str) -> None:
    # One set of rules: a value inert in a hint of the bot's reads as it would shown on its own.
    assert escape(inert(text)) == literal(text)


def test_an_inert_value_cannot_close_the_code_span_it_is_put_in_nor_format_or_link() -> None:
    value = f"x` <!channel> {HOSTILE_MARKUP}"
    shown = escape(f"Run `ALTER USER {inert(value)} SET DISABLED = FALSE`, see https://status.example.com.")
    assert shown.count("`") == 2 and shown.startswith("Run `ALTER USER x")
    assert not user_formatting_or_links(shown) and "<" not in shown
    assert "https://status.example.com." in shown  # the bot's own link is left alone
    assert (
        as_read(shown)
        == f"Run `ALTER USER {fold(value)} SET DISABLED = FALSE`, see https://status.example.com."
    )


def test_own_line_keeps_the_code_and_links_and_closes_a_span_it_cuts() -> None:
    hint = "Run\n `GRANT ROLE r TO USER <user>` and check https://status.example.com"
    assert (
        own_line(hint, 200) == "Run `GRANT ROLE r TO USER &lt;user&gt;` and check https://status.example.com"
    )
    assert own_line(hint, 12) == "Run `GRANT…`"


def test_unlinked_text_reads_the_same_but_no_url_or_domain_survives() -> None:
    shown = unlinked("see https://evil.example/x or mail x@evil.example, #general: ok")
    assert "evil.example" not in shown and "://" not in shown and "@evil" not in shown
    assert shown.replace("\u2060", "") == "see https://evil.example/x or mail x@evil.example, #general: ok"


def test_truncate_keeps_short_text_and_shortens_long_text_with_an_ellipsis() -> None:
    assert truncate("Production", 24) == "Production"
    assert truncate("x" * 24, 24) == "x" * 24
    shortened = truncate("Create A Very Long Provider Name", 24)
    assert len(shortened) <= 24
    assert shortened.endswith("…")
    assert shortened.startswith("Create A Very Long")


def test_truncate_refuses_a_limit_below_one() -> None:
    with pytest.raises(ValueError):
        truncate("abc", 0)


def test_one_line_collapses_newlines_and_falls_back_when_blank() -> None:
    assert one_line("prod\n\n  cluster\t1") == "prod cluster 1"
    assert one_line("   \n") == "(no name)"


def test_slack_date_renders_in_each_readers_time_zone_with_a_utc_fallback() -> None:
    moment = datetime(2024, 1, 2, 3, 4, tzinfo=UTC)
    expected_unix = int(moment.timestamp())
    assert slack_date(moment) == (
        f"<!date^{expected_unix}^{{date_short_pretty}} at {{time}}|2024-01-02 03:04 UTC>"
    )


def test_slack_date_treats_naive_times_as_utc_and_converts_other_zones() -> None:
    utc = slack_date(datetime(2024, 1, 2, 3, 4, tzinfo=UTC))
    assert slack_date(datetime(2024, 1, 2, 3, 4)) == utc
    assert slack_date(datetime(2024, 1, 2, 5, 4, tzinfo=timezone(timedelta(hours=2)))) == utc


def test_slack_date_accepts_another_fallback_format() -> None:
    rendered = slack_date(datetime(2024, 1, 2, 3, 4, tzinfo=UTC), fallback_fmt="%d %b %Y")
    assert rendered.endswith("|02 Jan 2024>")


STORED = datetime(2024, 1, 2, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (STORED, "today"),
        (STORED + timedelta(hours=23, minutes=59), "today"),
        (STORED + timedelta(days=1), "1 day"),
        (STORED + timedelta(days=95, hours=3), "95 days"),
        (STORED - timedelta(minutes=5), "today"),  # clocks a little apart
    ],
)
def test_credential_age_counts_whole_days(now: datetime, expected: str) -> None:
    assert credential_age_text(STORED, now) == expected


def test_credential_age_treats_naive_times_as_utc() -> None:
    naive = datetime(2024, 1, 2, 9, 0)
    assert credential_age_text(naive, datetime(2024, 1, 4, 10, 0, tzinfo=UTC)) == "2 days"
    assert credential_age_text(STORED, datetime(2024, 1, 5, 9, 0)) == "3 days"
    assert as_utc(naive) == STORED
    assert as_utc(datetime(2024, 1, 2, 11, 0, tzinfo=timezone(timedelta(hours=2)))) == STORED


@pytest.mark.parametrize(
    ("delta", "expected"),
    [
        (timedelta(seconds=-5), "less than a minute"),
        (timedelta(seconds=59), "less than a minute"),
        (timedelta(minutes=1), "1 minute"),
        (timedelta(minutes=59, seconds=59), "59 minutes"),
        (timedelta(hours=3, minutes=40), "3 hours"),
        (timedelta(days=1), "1 day"),
        (timedelta(days=12, hours=23), "12 days"),
    ],
)
def test_duration_text(delta: timedelta, expected: str) -> None:
    assert duration_text(delta) == expected


@pytest.mark.parametrize(
    ("n", "word", "many", "expected"),
    [
        (0, "connection", None, "0 connections"),
        (1, "connection", None, "1 connection"),
        (45, "connection", None, "45 connections"),
        (2, "entry", "entries", "2 entries"),
        (1, "entry", "entries", "1 entry"),
    ],
)
def test_plural(n: int, word: str, many: str | None, expected: str) -> None:
    assert plural(n, word, many) == expected


def test_chunks_cut_between_words() -> None:
    assert chunks("alpha beta gamma delta", 11) == ["alpha beta", "gamma delta"]


def test_chunks_never_split_an_entity() -> None:
    pieces = chunks("&" * 12, 12)
    assert all(len(c) <= 12 for c in pieces)
    assert all(re.fullmatch(r"(&amp;)+", c) for c in pieces)
    assert sum(c.count("&amp;") for c in pieces) == 12


def test_chunks_of_the_bots_own_mrkdwn_keep_its_code_and_links() -> None:
    own = "Run `ALTER USER bob` or see https://status.example.com <now>"
    assert chunks(own, 40, escape) == [
        "Run `ALTER USER bob` or see",
        "https://status.example.com &lt;now&gt;",
    ]


_ENTITY_START = re.compile(r"&(?!amp;|lt;|gt;)")


@given(text=st.text(max_size=400), limit=st.integers(min_value=5, max_value=200))
def test_chunks_fit_and_lose_nothing_but_the_spaces_at_cuts(text: str, limit: int) -> None:
    pieces = chunks(text, limit)
    assert all(len(c) <= limit for c in pieces)
    assert not any(_ENTITY_START.search(c) for c in pieces)
    assert as_read("".join(pieces)).replace(" ", "") == fold(text).replace(" ", "")


def test_a_name_copied_out_of_a_message_finds_its_connection() -> None:
    # What Slack shows of "orders.prod" holds an invisible word joiner; pasted back, it is one name.
    shown = literal("orders.prod")
    assert shown != "orders.prod"
    assert name_key(shown) == name_key("Orders.Prod")
