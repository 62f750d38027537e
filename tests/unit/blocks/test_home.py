"""The App Home tab as a user reads it: Connect buttons, their own connections, and for admins the
requests waiting for a decision with Approve and Reject."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from blocks.home import HOME_MAX_BLOCKS, PROVIDERS_SHOWN_MAX, decide_block_id, home_view
from blocks.text import literal, slack_date
from bot import ids
from bot.domain import (
    HOME_ITEMS_MAX,
    NAME_MAX_LENGTH,
    ApprovalRequest,
    ConnectionSummary,
    Health,
    HomeData,
    RequestKind,
    Status,
)
from bot.providers.base import Check, Provider
from tests.support.block_kit import assert_valid
from tests.support.block_text import HOSTILE_MARKUP, markup_problems, visible_text
from tests.support.slack_requests import find_action
from tests.unit.blocks.providers import WAREHOUSE, FakeProvider
from tests.unit.blocks.test_approval import buttons, user_made_markup

USER = "U0USER0001"
ADMIN = "U0ADMIN001"
REQUESTER = "U0REQUEST1"
CREATED = datetime(2024, 5, 1, 9, 30, tzinfo=UTC)
VERIFIED = datetime(2024, 5, 1, 9, 31, tzinfo=UTC)
KEY_HINT = "ABCD…WXYZ"
CHECKS = (Check("Authenticate", True, "key accepted"), Check("List topics", False, "not allowed"))
PROVIDERS: list[Provider] = [WAREHOUSE, FakeProvider("acme_stream", "Acme Stream", "Streams & <queues>.")]


def connection(
    number: int = 1,
    *,
    name: str | None = None,
    status: Status = Status.ACTIVE,
    health: Health = Health.HEALTHY,
    created_by: str = USER,
    key_hint: str | None = KEY_HINT,
    last_verified_at: datetime | None = VERIFIED,
    credential_created_at: datetime | None = None,
) -> ConnectionSummary:
    return ConnectionSummary(
        id=f"00000000-0000-4000-8000-{number:012d}",
        name=name if name is not None else f"Connection {number}",
        provider_key="acme_warehouse",
        provider_title="Acme Warehouse",
        status=status,
        health=health,
        created_by=created_by,
        created_at=CREATED + timedelta(minutes=number),
        last_verified_at=last_verified_at,
        key_hint=key_hint,
        credential_created_at=credential_created_at,
    )


def awaiting(item: ConnectionSummary, checks: tuple[Check, ...] = CHECKS) -> ApprovalRequest:
    """The approval request of a new connection, as the Home tab gets it."""
    return ApprovalRequest(
        kind=RequestKind.CONNECTION,
        id=item.id,
        team_id="T1",
        connection=item,
        requested_by=item.created_by,
        requested_at=item.created_at,
        status=item.status,
        checks=checks,
    )


def pending(number: int, **kw: Any) -> ApprovalRequest:
    kw.setdefault("created_by", REQUESTER)
    return awaiting(connection(number, status=Status.PENDING_APPROVAL, **kw))


def admin_home(*requests: ApprovalRequest, **kw: Any) -> HomeData:
    return HomeData(user_id=ADMIN, is_admin=True, pending=requests, pending_total=len(requests), **kw)


def headers(view: dict[str, Any]) -> list[str]:
    return [b["text"]["text"] for b in view["blocks"] if b["type"] == "header"]


# --- shape and limits ----------------------------------------------------------------------------


def test_a_user_home_shows_connect_buttons_and_their_connections() -> None:
    data = HomeData(
        user_id=USER,
        connections=(connection(2, status=Status.PENDING_APPROVAL, health=Health.UNKNOWN), connection(1)),
        connections_total=2,
    )
    view = home_view(data, PROVIDERS)
    assert_valid("home", view)
    assert view["type"] == "home"
    assert headers(view) == ["Connections", "Add a connection", "Your connections"]
    text = visible_text(view)
    assert "*Connection 2* · Acme Warehouse" in text
    assert "⏳ awaiting approval · ⚪ not checked yet" in text
    assert f"✅ active · 🟢 healthy · last verified {slack_date(VERIFIED)} · key `{KEY_HINT}`" in text
    assert f"added {slack_date(CREATED + timedelta(minutes=1))}" in text
    assert text.index("Connection 2") < text.index("Connection 1")  # the order given is kept
    assert not [b for b in buttons(view) if b["action_id"] in (ids.ACTION_APPROVE, ids.ACTION_REJECT)]


@pytest.mark.parametrize("status", list(Status))
def test_every_status_is_shown_by_its_label(status: Status) -> None:
    data = HomeData(user_id=USER, connections=(connection(status=status),), connections_total=1)
    assert status.label in visible_text(home_view(data, PROVIDERS))


def test_a_connection_never_verified_and_without_a_key_hint_says_so() -> None:
    data = HomeData(
        user_id=USER,
        connections=(connection(key_hint=None, last_verified_at=None, health=Health.FAILING),),
        connections_total=1,
    )
    text = visible_text(home_view(data, PROVIDERS))
    assert "🔴 failing · last verified never" in text and "key" not in text.split("Connection 1")[1]


def test_each_provider_gets_a_connect_button_carrying_its_key() -> None:
    view = home_view(HomeData(user_id=USER), PROVIDERS)
    for provider in PROVIDERS:
        _, button = find_action(view["blocks"], ids.ACTION_CONNECT, provider.key)
        assert button["text"]["text"] == "Connect"
    text = visible_text(view)
    assert "*Acme Stream*\nStreams &amp; &lt;queues&gt;." in text
    assert "You haven't added a connection yet" in text


def test_without_providers_the_tab_says_so() -> None:
    view = home_view(HomeData(user_id=USER), [])
    assert_valid("home", view)
    assert "No providers are configured" in visible_text(view)


def test_twenty_connections_and_twenty_requests_with_many_checks_and_providers_fit() -> None:
    many_checks = tuple(Check(f"check {i} " + "x" * 300, i % 2 == 0, "<d>" * 400) for i in range(15))
    long_name = "N" * NAME_MAX_LENGTH
    requests = tuple(
        replace(pending(100 + i, name=long_name), checks=many_checks) for i in range(HOME_ITEMS_MAX + 5)
    )
    data = HomeData(
        user_id=ADMIN,
        connections=tuple(connection(i, name=long_name) for i in range(HOME_ITEMS_MAX + 5)),
        connections_total=HOME_ITEMS_MAX + 30,
        is_admin=True,
        pending=requests,
        pending_total=HOME_ITEMS_MAX + 40,
    )
    providers = [FakeProvider(f"p{i}", f"Provider {i}", "d" * 2000) for i in range(PROVIDERS_SHOWN_MAX + 4)]

    view = home_view(data, providers)

    assert_valid("home", view)
    assert len(view["blocks"]) <= HOME_MAX_BLOCKS
    shown_requests = [b for b in view["blocks"] if b["type"] == "actions"]
    assert len(shown_requests) == HOME_ITEMS_MAX
    connect = [b for b in buttons(view) if b["action_id"] == ids.ACTION_CONNECT]
    assert len(connect) == PROVIDERS_SHOWN_MAX
    text = visible_text(view)
    assert "4 more: type `/connections` to see them all." in text
    assert f"Showing your {HOME_ITEMS_MAX} newest of {HOME_ITEMS_MAX + 30} connections." in text
    assert f"Showing the {HOME_ITEMS_MAX} oldest of {HOME_ITEMS_MAX + 40} requests." in text
    assert "and 6 more checks" in text


# --- re-test buttons and key age ----------------------------------------------------------------


def own_line(view: dict[str, Any], name: str) -> dict[str, Any]:
    return next(b for b in view["blocks"] if b.get("text", {}).get("text", "").startswith(f"*{name}*"))


def test_own_connections_holding_credentials_can_be_re_tested_from_home() -> None:
    items = tuple(connection(i, name=status.value, status=status) for i, status in enumerate(Status))
    view = home_view(HomeData(user_id=USER, connections=items, connections_total=len(items)), PROVIDERS)
    assert_valid("home", view)
    for item in items:
        line = own_line(view, item.name)
        if item.status in (Status.ACTIVE, Status.PENDING_APPROVAL):
            assert line["accessory"]["action_id"] == ids.ACTION_RETEST
            assert line["accessory"]["value"] == item.id
            assert line["accessory"]["text"]["text"] == "Re-test"
        else:
            assert "accessory" not in line


def test_home_shows_the_key_age_and_flags_an_old_key_for_rotation() -> None:
    now = CREATED + timedelta(days=120)
    items = (
        connection(1, name="Old", credential_created_at=CREATED),
        connection(2, name="Fresh", credential_created_at=now - timedelta(hours=5)),
    )
    data = HomeData(user_id=USER, connections=items, connections_total=2)
    view = home_view(data, PROVIDERS, now=now, rotation_days=90)
    assert_valid("home", view)
    assert "· ⚠️ key 120 days old — rotate it\n" in own_line(view, "Old")["text"]["text"]
    assert "· key stored today\n" in own_line(view, "Fresh")["text"]["text"]

    without_period = home_view(data, PROVIDERS, now=now)
    assert "· key stored 120 days ago\n" in own_line(without_period, "Old")["text"]["text"]
    assert "rotate" not in visible_text(without_period)


def test_a_full_home_with_buttons_on_every_line_still_fits() -> None:
    items = tuple(
        connection(i, name="N" * NAME_MAX_LENGTH, credential_created_at=CREATED)
        for i in range(HOME_ITEMS_MAX)
    )
    requests = tuple(pending(100 + i) for i in range(HOME_ITEMS_MAX))
    data = HomeData(
        user_id=ADMIN,
        connections=items,
        connections_total=HOME_ITEMS_MAX,
        is_admin=True,
        pending=requests,
        pending_total=HOME_ITEMS_MAX,
    )
    view = home_view(data, PROVIDERS, now=CREATED + timedelta(days=400), rotation_days=90)
    assert_valid("home", view)
    assert len(view["blocks"]) <= HOME_MAX_BLOCKS
    assert len([b for b in buttons(view) if b["action_id"] == ids.ACTION_RETEST]) == HOME_ITEMS_MAX


# --- admins --------------------------------------------------------------------------------------


def test_an_admin_sees_each_pending_request_with_approve_and_reject_carrying_its_id() -> None:
    first, second = pending(1), pending(2, created_by="U0OTHER001")
    view = home_view(admin_home(first, second), PROVIDERS)
    assert_valid("home", view)
    assert headers(view)[-1] == "Waiting for your decision"
    for request in (first, second):
        connection_id = request.connection.id
        for action_id, style in ((ids.ACTION_APPROVE, "primary"), (ids.ACTION_REJECT, "danger")):
            block_id, button = find_action(view["blocks"], action_id, connection_id)
            assert block_id == decide_block_id(connection_id)
            assert button["style"] == style
    text = visible_text(view)
    assert f"*“Connection 1”* · Acme Warehouse\nRequested by <@{REQUESTER}>" in text
    assert f"key `{KEY_HINT}`" in text
    assert "✅ *Authenticate* — key accepted" in text and "⚠️ *List topics* — not allowed" in text
    assert text.index("Connection 1") < text.index("Connection 2")


def test_an_admin_with_nothing_to_decide_is_told_so() -> None:
    view = home_view(admin_home(), PROVIDERS)
    assert "Nothing is waiting for a decision" in visible_text(view)


def test_an_admin_gets_no_buttons_on_their_own_request_unless_self_approval_is_allowed() -> None:
    own = pending(1, created_by=ADMIN)
    refused = home_view(admin_home(own), PROVIDERS)
    assert not [b for b in buttons(refused) if b["action_id"] == ids.ACTION_APPROVE]
    assert "another admin must approve or reject it" in visible_text(refused)

    allowed = home_view(admin_home(own, allow_self_approval=True), PROVIDERS)
    find_action(allowed["blocks"], ids.ACTION_APPROVE, own.connection.id)


def test_a_failed_admin_check_is_explained_without_buttons() -> None:
    data = HomeData(
        user_id=USER, admin_check_failed=True, admin_why="could not check group membership: <timeout>"
    )
    view = home_view(data, PROVIDERS)
    assert_valid("home", view)
    text = visible_text(view)
    assert "couldn't check your admin rights" in text and "&lt;timeout&gt;" in text
    assert not [b for b in buttons(view) if b["action_id"] in (ids.ACTION_APPROVE, ids.ACTION_REJECT)]


def test_someone_who_is_not_an_admin_sees_no_approval_section() -> None:
    view = home_view(HomeData(user_id=USER), PROVIDERS)
    assert "Waiting for your decision" not in headers(view)


# --- escaping ------------------------------------------------------------------------------------


def test_user_text_cannot_mention_link_or_ping() -> None:
    hostile = f"<!channel> <@U0VICTIM1> & more {HOSTILE_MARKUP}"
    data = HomeData(
        user_id=ADMIN,
        connections=(connection(1, name=hostile, key_hint="<!here>…&"),),
        connections_total=1,
        is_admin=True,
        pending=(
            awaiting(
                connection(2, name=hostile, status=Status.PENDING_APPROVAL, created_by="<!everyone>"),
                (Check("<!here>", False, "<@U0VICTIM1> & <https://x.example>"),),
            ),
        ),
        pending_total=1,
    )
    view = home_view(data, [FakeProvider("evil", "<!channel> Evil", "<@U0VICTIM1>")])
    assert_valid("home", view)
    markup = user_made_markup(view)
    assert "<" not in markup and ">" not in markup
    assert literal(hostile) in markup and not markup_problems(view)
