"""The reply to /connections: provider cards, the connections list, pagination, and help."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from blocks.connections import (
    ACTION_PAGE_NEXT,
    ACTION_PAGE_PREVIOUS,
    connections_message,
    help_message,
)
from blocks.text import literal, slack_date
from bot import ids
from bot.domain import NAME_MAX_LENGTH, PAGE_SIZE, ConnectionSummary, Health, Page, Status
from tests.support.block_kit import assert_valid
from tests.support.block_text import HOSTILE_MARKUP, markup_problems, visible_text, visible_texts
from tests.unit.blocks.providers import FakeProvider

CREATOR = "U0CREATOR1"
_OUR_TOKENS = re.compile(
    r"<!date\^\d+\^\{date_short_pretty\} at \{time\}\|[^<>|]*>|" + re.escape(f"<@{CREATOR}>")
)


PROVIDERS = (
    FakeProvider("acme_stream", "Acme Stream", "Hosted streams. Connect with a token."),
    FakeProvider("bigwarehouse", "Big Warehouse", "A data warehouse & lake."),
)


def summary(
    name: str = "Production stream",
    *,
    status: Status = Status.ACTIVE,
    health: Health = Health.HEALTHY,
    last_verified_at: datetime | None = datetime(2024, 5, 6, 7, 8, tzinfo=UTC),
    key_hint: str | None = "ABCD…WXYZ",
    created_by: str = CREATOR,
    credential_created_at: datetime | None = None,
    n: int = 0,
) -> ConnectionSummary:
    return ConnectionSummary(
        id=f"c{n}",
        name=name,
        provider_key="acme_stream",
        provider_title="Acme Stream",
        status=status,
        health=health,
        created_by=created_by,
        created_at=datetime(2024, 5, 1, tzinfo=UTC) + timedelta(minutes=n),
        last_verified_at=last_verified_at,
        key_hint=key_hint,
        credential_created_at=credential_created_at,
    )


def page_of(
    items: Sequence[ConnectionSummary], *, number: int = 1, total: int | None = None
) -> Page[ConnectionSummary]:
    return Page(
        items=tuple(items), number=number, size=PAGE_SIZE, total=len(items) if total is None else total
    )


def buttons(payload: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for block in payload["blocks"]:
        if block.get("accessory", {}).get("type") == "button":
            found.append(block["accessory"])
        found.extend(e for e in block.get("elements", []) if e.get("type") == "button")
    return found


def page_buttons(payload: dict[str, Any]) -> dict[str, str]:
    return {
        b["text"]["text"]: b["value"]
        for b in buttons(payload)
        if re.match(r"^connections_page", b["action_id"])
    }


# --- provider cards -------------------------------------------------------------------------


def test_starts_with_a_connections_header_then_one_card_per_provider_in_order() -> None:
    payload = connections_message(PROVIDERS, page_of([]))
    assert_valid("message", payload)
    assert payload["text"] == "Connections"
    assert payload["blocks"][0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "Connections", "emoji": True},
    }
    cards = [b for b in payload["blocks"] if b.get("block_id", "").startswith("provider_")]
    assert [c["block_id"] for c in cards] == ["provider_acme_stream", "provider_bigwarehouse"]
    assert cards[0]["text"]["text"] == "*Acme Stream*\nHosted streams. Connect with a token."
    # Provider text is escaped like any other text.
    assert cards[1]["text"]["text"] == "*Big Warehouse*\nA data warehouse &amp; lake."


def test_each_card_has_a_connect_button_carrying_the_provider_key() -> None:
    payload = connections_message(PROVIDERS, page_of([]))
    connect = [b for b in buttons(payload) if b["action_id"] == ids.ACTION_CONNECT]
    assert [(b["text"]["text"], b["value"]) for b in connect] == [
        ("Connect", "acme_stream"),
        ("Connect", "bigwarehouse"),
    ]


# --- the list -------------------------------------------------------------------------------


def test_empty_workspace_says_so_and_points_at_connect() -> None:
    payload = connections_message(PROVIDERS, page_of([]))
    text = visible_text(payload)
    assert "No connections yet" in text
    assert "Click *Connect*" in text
    assert page_buttons(payload) == {}


def test_connections_show_name_provider_status_health_last_verified_and_key_hint() -> None:
    verified = datetime(2024, 5, 6, 7, 8, tzinfo=UTC)
    payload = connections_message(
        PROVIDERS,
        page_of(
            [
                summary(
                    "Prod", status=Status.PENDING_APPROVAL, health=Health.UNKNOWN, last_verified_at=None, n=2
                ),
                summary(
                    "Analytics", status=Status.ACTIVE, health=Health.HEALTHY, last_verified_at=verified, n=1
                ),
                summary("Old", status=Status.REVOKED, health=Health.FAILING, key_hint=None, n=0),
            ]
        ),
    )
    assert_valid("message", payload)
    rows = [t for t in visible_texts(payload) if t.startswith(("*Prod*", "*Analytics*", "*Old*"))]
    assert [r.split("*")[1] for r in rows] == ["Prod", "Analytics", "Old"]  # the caller's order

    prod, analytics, old = rows
    assert "Acme Stream" in prod
    assert "awaiting approval" in prod
    assert "⚪ not checked yet" in prod
    assert "last verified never" in prod
    assert "`ABCD…WXYZ`" in prod
    assert f"<@{CREATOR}>" in prod

    assert "active" in analytics
    assert "🟢 healthy" in analytics
    assert f"last verified <!date^{int(verified.timestamp())}^" in analytics
    assert "|2024-05-06 07:08 UTC>" in analytics

    assert "revoked" in old
    assert "🔴 failing" in old
    assert "key `" not in old


def test_names_and_hints_are_escaped_so_they_cannot_ping_or_link() -> None:
    payload = connections_message(
        PROVIDERS,
        page_of([summary(f"<!channel> & <@U123> {HOSTILE_MARKUP}", key_hint="<!here>")]),
    )
    assert_valid("message", payload)
    assert not markup_problems(payload)
    text = visible_text(payload)
    assert literal(f"<!channel> & <@U123> {HOSTILE_MARKUP}") in text
    assert "`&lt;!here&gt;`" in text
    assert "<!channel>" not in text
    assert "<@U123>" not in text
    assert "<!here>" not in text


def test_a_creator_that_is_not_a_slack_user_id_is_shown_as_text() -> None:
    payload = connections_message(PROVIDERS, page_of([summary(created_by="<!everyone>")]))
    text = visible_text(payload)
    assert "added by &lt;!everyone&gt;" in text
    assert "<!everyone>" not in text


def test_a_long_name_is_shortened_with_an_ellipsis() -> None:
    payload = connections_message(PROVIDERS, page_of([summary("n" * 500)]))
    assert_valid("message", payload)
    row = next(t for t in visible_texts(payload) if t.startswith("*n"))
    shown = row.split("*")[1]
    assert shown.endswith("…")
    assert len(shown) < 500


# --- re-test buttons and key age ------------------------------------------------------------

STORED = datetime(2024, 1, 2, 9, 0, tzinfo=UTC)
NOW = datetime(2024, 4, 6, 12, 0, tzinfo=UTC)  # 95 days later


def row_of(payload: dict[str, Any], name: str) -> dict[str, Any]:
    return next(b for b in payload["blocks"] if b.get("text", {}).get("text", "").startswith(f"*{name}*"))


def test_connections_holding_credentials_get_a_retest_button_on_their_line() -> None:
    items = [summary(status.value, status=status, n=i) for i, status in enumerate(Status)]
    payload = connections_message(PROVIDERS, page_of(items))
    assert_valid("message", payload)
    retest = {b["value"] for b in buttons(payload) if b["action_id"] == ids.ACTION_RETEST}
    assert retest == {item.id for item in items if item.status in (Status.ACTIVE, Status.PENDING_APPROVAL)}
    accessory = row_of(payload, "active")["accessory"]
    assert accessory["text"]["text"] == "Re-test"
    for gone in (Status.REJECTED, Status.EXPIRED, Status.REVOKED):
        assert "accessory" not in row_of(payload, gone.value)
    # The button rides on the line: one block per connection, as before.
    assert len(payload["blocks"]) == len(connections_message(PROVIDERS, page_of([]))["blocks"]) - 1 + len(
        items
    )


def test_the_key_age_is_shown_in_days_when_now_is_given() -> None:
    payload = connections_message(
        PROVIDERS, page_of([summary("Prod", credential_created_at=STORED)]), now=NOW
    )
    assert_valid("message", payload)
    assert "key `ABCD…WXYZ` · key stored 95 days ago\n" in row_of(payload, "Prod")["text"]["text"]


def test_a_key_older_than_the_rotation_period_is_flagged_for_rotation() -> None:
    items = [
        summary("Old", credential_created_at=STORED, n=0),
        summary("Fresh", credential_created_at=NOW - timedelta(days=3), n=1),
        summary("Waiting", status=Status.PENDING_APPROVAL, credential_created_at=STORED, n=2),
    ]
    payload = connections_message(PROVIDERS, page_of(items), now=NOW, rotation_days=90)
    assert_valid("message", payload)
    assert "⚠️ key 95 days old — rotate it" in row_of(payload, "Old")["text"]["text"]
    fresh = row_of(payload, "Fresh")["text"]["text"]
    assert "key stored 3 days ago" in fresh and "⚠️" not in fresh
    # Only an active connection can be rotated.
    waiting = row_of(payload, "Waiting")["text"]["text"]
    assert "key stored 95 days ago" in waiting and "rotate it" not in waiting


def test_without_now_the_key_age_is_the_date_it_was_stored() -> None:
    payload = connections_message(PROVIDERS, page_of([summary("Prod", credential_created_at=STORED)]))
    assert f"key stored {slack_date(STORED)}" in visible_text(payload)


def test_no_key_age_for_a_connection_whose_credentials_are_gone_or_unknown() -> None:
    items = [
        summary("Gone", status=Status.REVOKED, credential_created_at=STORED, n=0),
        summary("Unknown", credential_created_at=None, n=1),
    ]
    payload = connections_message(PROVIDERS, page_of(items), now=NOW, rotation_days=1)
    assert "stored" not in visible_text(payload)
    assert "rotate" not in visible_text(payload)


# --- pagination -----------------------------------------------------------------------------


def test_no_pagination_for_exactly_one_full_page() -> None:
    items = [summary(f"conn {i}", n=i) for i in range(PAGE_SIZE)]
    payload = connections_message(PROVIDERS, page_of(items, total=PAGE_SIZE))
    assert_valid("message", payload)
    assert page_buttons(payload) == {}
    assert "Page 1 of" not in visible_text(payload)


def test_the_twenty_first_connection_brings_a_next_button() -> None:
    items = [summary(f"conn {i}", n=i) for i in range(PAGE_SIZE)]
    payload = connections_message(PROVIDERS, page_of(items, total=PAGE_SIZE + 1))
    assert_valid("message", payload)
    assert page_buttons(payload) == {"Next": "2"}
    assert "Page 1 of 2 · 21 connections" in visible_text(payload)


def test_a_middle_page_has_previous_and_next_with_distinct_action_ids() -> None:
    items = [summary(f"conn {i}", n=i) for i in range(PAGE_SIZE)]
    payload = connections_message(PROVIDERS, page_of(items, number=2, total=45))
    assert_valid("message", payload)
    assert page_buttons(payload) == {"Previous": "1", "Next": "3"}
    assert "Page 2 of 3 · 45 connections" in visible_text(payload)
    actions = next(b for b in payload["blocks"] if b["type"] == "actions")
    assert [e["action_id"] for e in actions["elements"]] == [ACTION_PAGE_PREVIOUS, ACTION_PAGE_NEXT]
    assert all(a.startswith(ids.ACTION_PAGE) for a in (ACTION_PAGE_PREVIOUS, ACTION_PAGE_NEXT))


def test_the_last_page_has_only_previous() -> None:
    payload = connections_message(PROVIDERS, page_of([summary("last")], number=3, total=41))
    assert page_buttons(payload) == {"Previous": "2"}
    assert "Page 3 of 3 · 41 connections" in visible_text(payload)


def test_a_page_past_the_end_explains_itself_and_offers_the_way_back() -> None:
    payload = connections_message(PROVIDERS, page_of([], number=5, total=21))
    assert_valid("message", payload)
    assert "nothing on page 5" in visible_text(payload)
    assert page_buttons(payload) == {"Previous": "2"}


def test_twenty_connections_and_five_providers_fit_in_one_message() -> None:
    providers = [FakeProvider(f"p{i}", f"Provider {i}", "d" * 900) for i in range(5)]
    items = [summary("&<>" * (NAME_MAX_LENGTH // 3), key_hint="<<<<…>>>>", n=i) for i in range(PAGE_SIZE)]
    payload = connections_message(providers, page_of(items, number=2, total=100))
    assert_valid("message", payload)
    assert len(payload["blocks"]) <= 50
    assert page_buttons(payload) == {"Previous": "1", "Next": "3"}


# --- help -----------------------------------------------------------------------------------


def test_help_explains_every_sub_command_and_lists_provider_keys() -> None:
    payload = help_message(PROVIDERS)
    assert_valid("message", payload)
    text = visible_text(payload)
    for command in (
        "`/connections`",
        "`/connections help`",
        "`/connections connect &lt;provider key&gt;`",
        "`/connections list [page]`",
        "`/connections test &lt;name&gt;`",
        "`/connections test all`",
        "`/connections status &lt;name&gt;`",
        "`/connections rotate &lt;name&gt;`",
        "`/connections remove &lt;name&gt;`",
    ):
        assert command in text
    assert "re-verify one connection with its stored credentials" in text
    assert "re-verify every active connection with its stored credentials" in text
    assert "last 10 verification results" in text
    assert "its owner or an admin" in text
    assert "verified, then approved by an admin, before it replaces the old one" in text
    assert "revoked and its stored credentials are destroyed" in text
    assert "`acme_stream` (Acme Stream)" in text
    assert "`bigwarehouse` (Big Warehouse)" in text
    assert "I don't know" not in text


def test_help_for_an_unknown_command_says_so_first_and_escapes_it() -> None:
    payload = help_message(PROVIDERS, unknown="<!channel> `frobnicate`")
    assert_valid("message", payload)
    first = payload["blocks"][0]["text"]["text"]
    assert first.startswith("I don't know `&lt;!channel&gt; 'frobnicate'`")
    assert "<!channel>" not in visible_text(payload)
    assert "`/connections list [page]`" in visible_text(payload)


# --- property: user text never becomes a mention --------------------------------------------

mention_like = st.sampled_from(
    ["<!channel>", "<!here|here>", "<@U123>", "<#C123>", "<!subteam^S1>", "&lt;!channel&gt;", "*_~`>"]
)
names = st.one_of(
    st.text(max_size=NAME_MAX_LENGTH),
    st.lists(st.one_of(mention_like, st.text(max_size=8)), max_size=6).map(
        lambda parts: "".join(parts)[:NAME_MAX_LENGTH]
    ),
)


@settings(max_examples=150, deadline=None)
@given(name=names, hint=st.one_of(st.none(), names))
def test_any_name_gives_a_valid_message_without_user_made_mentions(name: str, hint: str | None) -> None:
    payload = connections_message(PROVIDERS, page_of([summary(name, key_hint=hint)], number=1, total=30))
    assert_valid("message", payload)
    ours_removed = _OUR_TOKENS.sub("", visible_text(payload))
    assert "<!" not in ours_removed
    assert "<@" not in ours_removed
    assert "<" not in ours_removed  # no link, channel or anything else either
