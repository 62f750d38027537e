"""The approval flow as admins and requesters read it: the request, its decided form, the reject
modal, the direct message, and the replies to a click that changes nothing."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blocks.approval import (
    APPROVAL_ACTIONS_BLOCK,
    REASON_MAX_LENGTH,
    admin_check_failed_reply,
    already_decided_reply,
    decided_message,
    decision_dm,
    not_admin_reply,
    not_found_reply,
    reason_modal,
    request_message,
    self_approval_reply,
)
from blocks.text import literal, slack_date
from bot import ids
from bot.domain import NAME_MAX_LENGTH, ApprovalRequest, ConnectionSummary, Health, RequestKind, Status
from bot.providers.base import Check
from tests.support.block_kit import assert_valid
from tests.support.block_text import HOSTILE_MARKUP, as_read, fold, markup_problems, visible_text

REQUESTER = "U0REQUEST1"
ADMIN = "U0ADMIN01"
FULL_KEY = "ABCD5EFGHIJKLMNOWXYZ"
KEY_HINT = "ABCD…WXYZ"
CREATED = datetime(2024, 5, 1, 9, 30, tzinfo=UTC)
DECIDED = datetime(2024, 5, 2, 14, 0, tzinfo=UTC)
CHECKS = (Check("Authenticate", True, "key accepted"), Check("List topics", False, "not allowed"))
DECIDED_STATUSES = [Status.ACTIVE, Status.REJECTED, Status.EXPIRED, Status.REVOKED]

# Tokens the builders write on purpose: Slack dates and mentions of well-formed user ids.
_OUR_TOKENS = re.compile(r"<!date\^\d+\^\{date_short_pretty\} at \{time\}\|[^<>|]*>|<@[UW][A-Z0-9]{2,}>")


def summary(
    name: str = "Production stream",
    *,
    created_by: str = REQUESTER,
    key_hint: str | None = KEY_HINT,
    provider_title: str = "Acme Stream",
) -> ConnectionSummary:
    return ConnectionSummary(
        id="conn-42",
        name=name,
        provider_key="acme_stream",
        provider_title=provider_title,
        status=Status.PENDING_APPROVAL,
        health=Health.HEALTHY,
        created_by=created_by,
        created_at=CREATED,
        last_verified_at=CREATED,
        key_hint=key_hint,
    )


def approval(
    item: ConnectionSummary | None = None,
    checks: tuple[Check, ...] = CHECKS,
    *,
    status: Status = Status.PENDING_APPROVAL,
    decided_by: str | None = None,
    decided_at: datetime | None = None,
    reason: str | None = None,
) -> ApprovalRequest:
    """The approval request of a new connection, as the approval service describes it."""
    item = item or summary()
    return ApprovalRequest(
        kind=RequestKind.CONNECTION,
        id=item.id,
        team_id="T0TEAM",
        connection=item,
        requested_by=item.created_by,
        requested_at=item.created_at,
        status=status,
        checks=checks,
        decided_by=decided_by,
        decided_at=decided_at,
        reason=reason,
    )


def decided(
    status: Status,
    *,
    item: ConnectionSummary | None = None,
    decided_by: str | None = ADMIN,
    reason: str | None = None,
) -> dict[str, Any]:
    return decided_message(
        approval(item, CHECKS, status=status, decided_by=decided_by, decided_at=DECIDED, reason=reason)
    )


def buttons(payload: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for block in payload["blocks"]:
        if block.get("accessory", {}).get("type") == "button":
            found.append(block["accessory"])
        found.extend(e for e in block.get("elements", []) if e.get("type") == "button")
    return found


def mrkdwn_texts(payload: dict[str, Any]) -> list[str]:
    """The texts Slack parses for mentions and links: mrkdwn objects and the fallback text."""
    found = [payload["text"]] if isinstance(payload.get("text"), str) else []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "mrkdwn":
                found.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(payload.get("blocks", []))
    return found


def user_made_markup(payload: dict[str, Any]) -> str:
    """Everything Slack would parse in ``payload`` except the dates and mentions we put there."""
    return _OUR_TOKENS.sub("", "\n".join(mrkdwn_texts(payload)))


# --- the request ----------------------------------------------------------------------------


def test_request_shows_who_asks_for_what_with_the_checks_and_two_buttons() -> None:
    payload = request_message(approval(summary(), CHECKS))
    assert_valid("message", payload)
    header = payload["blocks"][0]
    assert header["type"] == "header"
    assert header["text"]["text"] == "Approval requested: Production stream"
    text = visible_text(payload)
    assert "*Provider*\nAcme Stream" in text
    assert "*Name*\n“Production stream”" in text
    assert f"*Requested by*\n<@{REQUESTER}>" in text
    assert f"*When*\n{slack_date(CREATED)}" in text
    assert f"*Key*\n`{KEY_HINT}`" in text
    assert "✅ *Authenticate* — key accepted" in text
    assert "⚠️ *List topics* — not allowed" in text


def test_request_buttons_carry_the_connection_id_and_reject_has_no_confirm_dialog() -> None:
    payload = request_message(approval(summary(), CHECKS))
    actions = [b for b in payload["blocks"] if b["type"] == "actions"]
    assert [a["block_id"] for a in actions] == [APPROVAL_ACTIONS_BLOCK]
    assert [
        (b["text"]["text"], b["action_id"], b.get("style"), b["value"], "confirm" in b)
        for b in buttons(payload)
    ] == [
        ("Approve", ids.ACTION_APPROVE, "primary", "conn-42", False),
        ("Reject", ids.ACTION_REJECT, "danger", "conn-42", False),
    ]


def test_request_fallback_text_names_the_connection_and_the_requester() -> None:
    payload = request_message(approval(summary("Lake <prod>"), CHECKS))
    assert payload["text"] == f"Approval requested: “Lake &lt;prod&gt;” (Acme Stream) by <@{REQUESTER}>"


def test_request_without_checks_or_key_hint_still_says_what_it_can() -> None:
    payload = request_message(approval(summary(key_hint=None), ()))
    assert_valid("message", payload)
    text = visible_text(payload)
    assert "*Key*\n—" in text
    assert "*Checks*" not in text
    assert len(buttons(payload)) == 2


def test_only_the_masked_key_hint_is_shown_never_more_of_the_key() -> None:
    item = summary(key_hint=KEY_HINT)
    payloads = [
        request_message(approval(item, CHECKS)),
        *(decided(s, item=item, reason="r") for s in DECIDED_STATUSES),
        *(decision_dm(approval(item, status=s, decided_by=ADMIN, reason="r")) for s in DECIDED_STATUSES),
        reason_modal(approval(item), private_metadata="conn-42"),
    ]
    for payload in payloads:
        sent = json.dumps(payload, ensure_ascii=False)
        assert FULL_KEY not in sent
        assert FULL_KEY[4:-4] not in sent
        # Each key mention is exactly the hint, in code: nothing is added around it.
        assert re.findall(r"`[^`]*WXYZ[^`]*`", sent) == [f"`{KEY_HINT}`"] * len(re.findall("WXYZ", sent))
    assert "`ABCD…WXYZ`" in visible_text(payloads[0])
    assert "key `ABCD…WXYZ`" in visible_text(payloads[-2])


def test_a_64_character_name_fits_the_header_whole_and_a_longer_one_is_cut() -> None:
    name = "n" * NAME_MAX_LENGTH
    whole = request_message(approval(summary(name), CHECKS))
    assert whole["blocks"][0]["text"]["text"] == f"Approval requested: {name}"

    cut = request_message(approval(summary("x" * 400), CHECKS))
    assert_valid("message", cut)
    header = cut["blocks"][0]["text"]["text"]
    assert len(header) == 150
    assert header.startswith("Approval requested: xxx")
    assert header.endswith("…")


def test_a_multiline_name_is_one_line_in_the_header() -> None:
    payload = request_message(approval(summary("prod\n\nstream"), CHECKS))
    assert payload["blocks"][0]["text"]["text"] == "Approval requested: prod stream"


def test_names_cannot_ping_or_link_anywhere_in_the_request() -> None:
    name = f"<!channel> & <@U123> <https://evil.example|x> {HOSTILE_MARKUP}"
    payload = request_message(approval(summary(name, provider_title="Acme <!here>"), CHECKS))
    assert_valid("message", payload)
    assert not markup_problems(payload)
    text = visible_text(payload)
    assert f"“{literal(name)}”" in text
    assert "*Provider*\nAcme &lt;!here&gt;" in text
    assert "<" not in user_made_markup(payload)


def test_a_requester_that_is_not_a_slack_user_id_is_shown_as_text() -> None:
    payload = request_message(approval(summary(created_by="<!everyone>"), CHECKS))
    assert "*Requested by*\n&lt;!everyone&gt;" in visible_text(payload)
    assert "<" not in user_made_markup(payload)


# --- the decided request --------------------------------------------------------------------


@pytest.mark.parametrize("status", DECIDED_STATUSES)
def test_a_decided_request_keeps_the_facts_and_loses_the_buttons(status: Status) -> None:
    request = request_message(approval(summary(), CHECKS))
    payload = decided(status, reason="Wrong team")
    assert_valid("message", payload)
    assert buttons(payload) == []
    assert not any(b["type"] == "actions" for b in payload["blocks"])
    shared = [b for b in request["blocks"] if b["type"] in ("header", "section")]
    assert payload["blocks"][: len(shared)] == shared


def test_approved_names_the_admin_and_the_time() -> None:
    payload = decided(Status.ACTIVE)
    outcome = f"✅ Approved by <@{ADMIN}> {slack_date(DECIDED)}"
    assert payload["blocks"][-1]["text"]["text"] == outcome
    assert payload["text"] == f"“Production stream” (Acme Stream): {outcome}"


def test_rejected_names_the_admin_the_time_and_quotes_the_reason_escaped() -> None:
    payload = decided(Status.REJECTED, reason="Use the <!channel> service key & retry.\nThanks")
    assert_valid("message", payload)
    texts = [b["text"]["text"] for b in payload["blocks"][-2:]]
    assert texts == [
        f"❌ Rejected by <@{ADMIN}> {slack_date(DECIDED)}",
        "> Use the &lt;!channel&gt; service key &amp; retry.\n> Thanks",
    ]
    assert "<!channel>" not in user_made_markup(payload)


def test_rejected_without_a_reason_says_none_was_given() -> None:
    payload = decided(Status.REJECTED, reason="   ")
    assert payload["blocks"][-1]["text"]["text"] == "_No reason was given._"


def test_a_reason_longer_than_the_modal_allows_is_cut_to_fit_a_section() -> None:
    # Every "&" grows fivefold when escaped: the worst case for Slack's 3000-character section.
    reason = "&" * 3000
    for payload in (
        decided(Status.REJECTED, reason=reason),
        decision_dm(approval(summary(), status=Status.REJECTED, decided_by=ADMIN, reason=reason)),
    ):
        assert_valid("message", payload)
        quoted = next(t for t in mrkdwn_texts(payload) if t.startswith("> "))
        assert quoted.endswith("…")
        assert quoted.count("&amp;") >= REASON_MAX_LENGTH


def test_expired_says_nobody_decided_and_names_no_one() -> None:
    payload = decided(Status.EXPIRED, decided_by=ADMIN)
    assert (
        payload["blocks"][-1]["text"]["text"] == f"⌛ Expired {slack_date(DECIDED)}: nobody decided in time"
    )
    assert f"<@{ADMIN}>" not in visible_text(payload)


def test_revoked_names_who_revoked_and_quotes_a_reason_when_given() -> None:
    without = decided(Status.REVOKED)
    assert without["blocks"][-1]["text"]["text"] == f"🚫 Revoked by <@{ADMIN}> {slack_date(DECIDED)}"
    with_reason = decided(Status.REVOKED, reason="Rotated")
    assert with_reason["blocks"][-1]["text"]["text"] == "> Rotated"


def test_a_decider_that_is_not_a_slack_user_id_is_text_and_none_is_left_out() -> None:
    odd = decided(Status.ACTIVE, decided_by="<!here>")
    assert odd["blocks"][-1]["text"]["text"] == f"✅ Approved by &lt;!here&gt; {slack_date(DECIDED)}"
    assert "<" not in user_made_markup(odd)
    nobody = decided(Status.ACTIVE, decided_by=None)
    assert nobody["blocks"][-1]["text"]["text"] == f"✅ Approved {slack_date(DECIDED)}"


def test_a_pending_status_is_not_a_decision() -> None:
    with pytest.raises(ValueError):
        decided(Status.PENDING_APPROVAL)
    with pytest.raises(ValueError):
        decision_dm(approval(summary(), status=Status.PENDING_APPROVAL, decided_by=ADMIN, reason=None))
    with pytest.raises(ValueError):
        already_decided_reply(Status.PENDING_APPROVAL, ADMIN, DECIDED)


# --- the reject modal -----------------------------------------------------------------------


def test_reject_modal_asks_for_a_required_reason_the_requester_will_see() -> None:
    view = reason_modal(approval(summary("Lake & co")), private_metadata='{"id": "conn-42"}')
    assert_valid("modal", view)
    assert view["callback_id"] == ids.VIEW_REJECT
    assert (view["title"]["text"], view["submit"]["text"], view["close"]["text"]) == (
        "Reject connection",
        "Reject",
        "Cancel",
    )
    assert view["private_metadata"] == '{"id": "conn-42"}'
    inputs = [b for b in view["blocks"] if b["type"] == "input"]
    assert len(inputs) == 1
    reason = inputs[0]
    assert reason["block_id"] == ids.BLOCK_REASON
    assert reason["label"]["text"] == "Reason"
    assert "requester" in reason["hint"]["text"]
    assert reason.get("optional", False) is False
    element = reason["element"]
    assert (element["type"], element["action_id"], element["multiline"]) == (
        "plain_text_input",
        ids.INPUT_ACTION,
        True,
    )
    assert (element["min_length"], element["max_length"]) == (1, REASON_MAX_LENGTH) == (1, 500)
    first = view["blocks"][0]["text"]["text"]
    assert "“Lake &amp; co”" in first
    assert f"<@{REQUESTER}>" in first
    assert "Acme Stream" in first


# --- the direct message to the requester ----------------------------------------------------


def test_approved_dm_says_the_connection_is_active_and_who_approved() -> None:
    payload = decision_dm(approval(summary(), status=Status.ACTIVE, decided_by=ADMIN, reason=None))
    assert_valid("message", payload)
    assert (
        payload["text"] == f"✅ Your Acme Stream connection “Production stream” was approved by <@{ADMIN}>."
    )
    text = visible_text(payload)
    assert "It is now active and ready to use." in text
    assert "destroyed" not in text


def test_rejected_dm_quotes_the_reason_and_says_what_to_do_next() -> None:
    payload = decision_dm(
        approval(summary(), status=Status.REJECTED, decided_by=ADMIN, reason="Wrong <env> & key")
    )
    assert_valid("message", payload)
    assert (
        payload["text"] == f"❌ Your Acme Stream connection “Production stream” was rejected by <@{ADMIN}>."
    )
    text = visible_text(payload)
    assert "> Wrong &lt;env&gt; &amp; key" in text
    assert "credentials you entered were destroyed" in text
    assert "Fix what the reason says" in text
    assert "`/connections`" in text


def test_expired_dm_says_nobody_decided_in_time_and_to_register_again() -> None:
    payload = decision_dm(approval(summary(), status=Status.EXPIRED, decided_by=None, reason=None))
    assert_valid("message", payload)
    assert "nobody decided on it within the time limit" in payload["text"]
    text = visible_text(payload)
    assert "credentials you entered were destroyed" in text
    assert "register the connection again with `/connections`" in text
    assert "<@" not in text


def test_revoked_dm_says_it_can_no_longer_be_used() -> None:
    payload = decision_dm(approval(summary(), status=Status.REVOKED, decided_by=ADMIN, reason=None))
    assert_valid("message", payload)
    assert f"was revoked by <@{ADMIN}>. It can no longer be used." in visible_text(payload)


@pytest.mark.parametrize("status", DECIDED_STATUSES)
def test_a_connection_dm_offers_no_rotate_button_whatever_the_decision(status: Status) -> None:
    # A connection's "rejected" and "expired" are the same strings as a rotation's, which do
    # offer Rotate: the kind of request decides, not the status's text.
    payload = decision_dm(approval(summary(), status=status, decided_by=ADMIN, reason="Because."))
    assert buttons(payload) == []


def test_dm_identifies_the_credential_by_its_hint_and_escapes_the_name() -> None:
    payload = decision_dm(
        approval(summary("<!channel> prod"), status=Status.ACTIVE, decided_by=ADMIN, reason=None)
    )
    text = visible_text(payload)
    assert "“&lt;!channel&gt; prod”" in text
    assert f"Acme Stream · key `{KEY_HINT}` · requested {slack_date(CREATED)}" in text
    assert "<" not in user_made_markup(payload)


# --- ephemeral replies ----------------------------------------------------------------------


def test_not_admin_reply_explains_and_says_how_to_become_one() -> None:
    how = "Ask in <#C0ADMINS> to be added to <!subteam^S0ADMINS>."
    payload = not_admin_reply(how)
    assert_valid("message", payload)
    assert payload["text"].startswith("Only admins of connections can approve or reject.")
    # The caller's mrkdwn stays a link.
    assert payload["text"].endswith(how)
    assert visible_text(payload["blocks"]) == payload["text"]


def test_self_approval_reply_says_another_admin_must_decide() -> None:
    payload = self_approval_reply()
    assert_valid("message", payload)
    assert "You requested this connection" in payload["text"]
    assert "another admin" in payload["text"]


@pytest.mark.parametrize(
    ("status", "decided_by", "expected"),
    [
        (Status.ACTIVE, ADMIN, f"Already approved by <@{ADMIN}> {slack_date(DECIDED)}."),
        (Status.REJECTED, ADMIN, f"Already rejected by <@{ADMIN}> {slack_date(DECIDED)}."),
        (Status.REVOKED, None, f"Already revoked {slack_date(DECIDED)}."),
        (Status.EXPIRED, None, f"Already expired {slack_date(DECIDED)}: nobody decided in time."),
    ],
)
def test_already_decided_reply_says_who_decided_and_when(
    status: Status, decided_by: str | None, expected: str
) -> None:
    payload = already_decided_reply(status, decided_by, DECIDED)
    assert_valid("message", payload)
    assert payload["text"].startswith(expected)


def test_already_decided_reply_without_a_time_leaves_it_out() -> None:
    assert already_decided_reply(Status.ACTIVE, ADMIN, None)["text"].startswith(
        f"Already approved by <@{ADMIN}>. "
    )


def test_not_found_reply_says_the_connection_is_gone() -> None:
    payload = not_found_reply()
    assert_valid("message", payload)
    assert "no longer exists" in payload["text"]


def test_admin_check_failed_reply_escapes_why_and_says_nothing_changed() -> None:
    payload = admin_check_failed_reply("Slack said <!channel> & timed out")
    assert_valid("message", payload)
    assert "(Slack said &lt;!channel&gt; &amp; timed out)" in payload["text"]
    assert "nothing changed" in payload["text"]
    assert "Try again" in payload["text"]
    assert "<" not in user_made_markup(payload)


# --- property: a reason is shown as typed and never becomes markup -------------------------

mention_like = st.sampled_from(
    ["<!channel>", "<!here|here>", "<@U123>", "<#C123>", "<!subteam^S1>", "&lt;", "&", ">", "\n", "*_~`"]
)
reasons = st.one_of(
    st.text(min_size=1, max_size=REASON_MAX_LENGTH),
    st.lists(st.one_of(mention_like, st.text(max_size=8)), min_size=1, max_size=20).map(
        lambda parts: "".join(parts)[:REASON_MAX_LENGTH]
    ),
)


def unquote(quoted: str) -> list[str]:
    return [as_read(line[2:]) if line.startswith("> ") else "" for line in quoted.split("\n")]


@settings(max_examples=150, deadline=None)
@given(reason=reasons, name=st.text(max_size=NAME_MAX_LENGTH))
def test_any_reason_is_quoted_as_typed_and_cannot_ping(reason: str, name: str) -> None:
    item = summary(name)
    message_payload = decided(Status.REJECTED, item=item, reason=reason)
    dm_payload = decision_dm(approval(item, status=Status.REJECTED, decided_by=ADMIN, reason=reason))
    typed = [fold(line) if line.strip() else "" for line in reason.strip().splitlines()]
    for payload, quote_at in ((message_payload, -1), (dm_payload, 1)):
        assert_valid("message", payload)
        assert "<" not in user_made_markup(payload)
        quoted = payload["blocks"][quote_at]["text"]["text"]
        if typed:
            assert unquote(quoted) == typed
        else:
            assert quoted == "_No reason was given._"
