"""Credential rotation as users and admins read it: the form, the views that replace it, the request
in the admin channel and its decided form, the direct messages, and the reply to a second rotation."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from blocks.alerts import rotation_reminder_dm
from blocks.approval import (
    REASON_MAX_LENGTH,
    REMINDER_ACTIONS_BLOCK,
    ROTATION_ACTIONS_BLOCK,
    decided_message,
    decision_dm,
    reason_modal,
    request_message,
    rotation_pending_reply,
)
from blocks.forms import problem_view, result_view, rotation_modal, verifying_view
from blocks.results import ALSO_CHANGES, ONLY_THE_SECRET, config_change_lines, result_message
from blocks.text import literal, slack_date
from bot import ids
from bot.domain import (
    NAME_MAX_LENGTH,
    ApprovalRequest,
    ConfigChange,
    ConnectionSummary,
    Health,
    RequestKind,
    RotationStatus,
    Status,
)
from bot.providers.base import Check, FormField, FormSection, Outcome, Verification
from tests.support.block_kit import assert_valid
from tests.support.block_text import HOSTILE_MARKUP, markup_problems, visible_text
from tests.unit.blocks.providers import WAREHOUSE, Warehouse

OWNER = "U0OWNER01"
REQUESTER = "U0REQUEST1"
ADMIN = "U0ADMIN01"
OLD_KEY = "OLDK5EFGHIJKLMNO1111"
OLD_HINT = "OLDK…1111"
NEW_KEY = "NEWK5PQRSTUVWXYZ2222"
NEW_HINT = "NEWK…2222"
CREATED = datetime(2024, 1, 10, 8, 0, tzinfo=UTC)
REQUESTED = datetime(2024, 5, 1, 9, 30, tzinfo=UTC)
DECIDED = datetime(2024, 5, 2, 14, 0, tzinfo=UTC)
CHECKS = (Check("Authenticate", True, "key accepted"), Check("List topics", False, "not <allowed>"))
DECIDED_STATUSES = [
    RotationStatus.APPROVED,
    RotationStatus.REJECTED,
    RotationStatus.EXPIRED,
    RotationStatus.CANCELLED,
]
HOSTILE_NAME = f"<!channel> & <@U123> {HOSTILE_MARKUP}"
HOSTILE_SHOWN = f"“{literal(HOSTILE_NAME)}”"

# Tokens the builders write on purpose: Slack dates and mentions of well-formed user ids.
_OUR_TOKENS = re.compile(r"<!date\^\d+\^\{date_short_pretty\} at \{time\}\|[^<>|]*>|<@[UW][A-Z0-9]{2,}>")


def connection(
    name: str = "Production warehouse",
    *,
    key_hint: str | None = OLD_HINT,
    created_by: str = OWNER,
    provider_title: str = "Acme Warehouse",
    credential_created_at: datetime | None = CREATED,
) -> ConnectionSummary:
    return ConnectionSummary(
        id="conn-42",
        name=name,
        provider_key="acme_warehouse",
        provider_title=provider_title,
        status=Status.ACTIVE,
        health=Health.HEALTHY,
        created_by=created_by,
        created_at=CREATED,
        last_verified_at=CREATED,
        key_hint=key_hint,
        credential_created_at=credential_created_at,
    )


def rotation(
    status: RotationStatus = RotationStatus.PENDING_APPROVAL,
    *,
    item: ConnectionSummary | None = None,
    requested_by: str = REQUESTER,
    new_key_hint: str | None = NEW_HINT,
    decided_by: str | None = ADMIN,
    reason: str | None = None,
    config_changes: tuple[ConfigChange, ...] | None = None,
) -> ApprovalRequest:
    pending = status is RotationStatus.PENDING_APPROVAL
    return ApprovalRequest(
        kind=RequestKind.ROTATION,
        id="rot-7",
        team_id="T0TEAM",
        connection=item or connection(),
        requested_by=requested_by,
        requested_at=REQUESTED,
        new_key_hint=new_key_hint,
        status=status,
        checks=CHECKS,
        decided_by=None if pending else decided_by,
        decided_at=None if pending else DECIDED,
        reason=reason,
        config_changes=config_changes,
    )


def verification(
    outcome: Outcome = Outcome.OK,
    summary: str = "Acme Warehouse accepted the key.",
    *,
    checks: tuple[Check, ...] = (),
    hints: tuple[str, ...] = (),
    request_id: str | None = None,
) -> Verification:
    return Verification(outcome, summary, checks, hints, 240, request_id)


def inputs(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {b["block_id"]: b for b in view["blocks"] if b["type"] == "input"}


def buttons(payload: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for b in payload["blocks"] if b["type"] == "actions" for e in b["elements"]]


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


# --- the form -------------------------------------------------------------------------------


def test_the_form_is_titled_rotate_credentials_with_verify_and_cancel() -> None:
    view = rotation_modal(WAREHOUSE, connection(), private_metadata='{"id":"conn-42"}')
    assert_valid("modal", view)
    assert view["callback_id"] == ids.VIEW_ROTATE
    assert view["title"]["text"] == "Rotate credentials"
    assert view["submit"]["text"] == "Verify"
    assert view["close"]["text"] == "Cancel"
    assert view["notify_on_close"] is False
    assert view["private_metadata"] == '{"id":"conn-42"}'


def test_the_form_names_the_connection_and_says_the_current_key_keeps_working() -> None:
    view = rotation_modal(WAREHOUSE, connection(), private_metadata="")
    first = view["blocks"][0]["text"]["text"]
    assert first == (
        "🔁 *Rotate the credentials of “Production warehouse”* (Acme Warehouse)\n"
        f"Enter the new credentials below. The current key `{OLD_HINT}` keeps working until an "
        "admin approves the new one."
    )
    assert "we check the new credentials with Acme Warehouse before anything changes" in visible_text(view)


def test_the_form_is_the_providers_form_without_the_name() -> None:
    view = rotation_modal(WAREHOUSE, connection(), private_metadata="")
    layout = [
        b["text"]["text"] if b["type"] == "header" else b.get("block_id", b["type"]) for b in view["blocks"]
    ]
    assert layout == [
        "section",
        "Account",
        "account_url",
        "api_key",
        "api_secret",
        "Advanced (optional)",
        "context",
        "notes",
        "context",
    ]
    assert ids.BLOCK_NAME not in inputs(view)
    assert "Metadata" not in visible_text(view)


def test_each_field_renders_as_in_the_create_form() -> None:
    fields = inputs(rotation_modal(WAREHOUSE, connection(), private_metadata=""))
    for field in WAREHOUSE.fields:
        block = fields[field.name]
        assert block["label"]["text"] == field.label
        assert block["hint"]["text"] == field.hint
        assert block["element"]["action_id"] == ids.INPUT_ACTION
        assert block["optional"] is field.optional
    assert fields["account_url"]["element"]["max_length"] == 200
    assert fields["notes"]["element"]["multiline"] is True


def test_plain_fields_are_prefilled_and_secrets_never() -> None:
    view = rotation_modal(
        WAREHOUSE,
        connection(),
        private_metadata="",
        initial={"account_url": "https://prod.acme.example", "gone_field": "x"},
    )
    assert_valid("modal", view)
    fields = inputs(view)
    assert fields["account_url"]["element"]["initial_value"] == "https://prod.acme.example"
    for name in ("api_key", "api_secret", "notes"):
        assert "initial_value" not in fields[name]["element"]


@pytest.mark.parametrize("secret_field", ["api_key", "api_secret"])
def test_asking_to_prefill_a_secret_is_refused_without_echoing_it(secret_field: str) -> None:
    with pytest.raises(ValueError) as raised:
        rotation_modal(WAREHOUSE, connection(), private_metadata="", initial={secret_field: "s3cr3t-value-1"})
    assert secret_field in str(raised.value)
    assert "s3cr3t-value-1" not in str(raised.value)


def test_a_field_named_like_the_name_input_is_fine_without_the_name_input() -> None:
    class Named(Warehouse):
        sections = (FormSection("Account", (FormField(ids.BLOCK_NAME, "Account name", "As shown."),)),)

    view = rotation_modal(Named(), connection(), private_metadata="")
    assert_valid("modal", view)
    assert inputs(view)[ids.BLOCK_NAME]["label"]["text"] == "Account name"


def test_a_notice_follows_the_introduction_and_is_escaped() -> None:
    view = rotation_modal(WAREHOUSE, connection(), private_metadata="", notice="Key refused <!here> & more")
    assert_valid("modal", view)
    assert view["blocks"][1]["text"]["text"] == "⚠️ Key refused &lt;!here&gt; &amp; more"
    assert view["blocks"][2]["text"]["text"] == "Account"


def test_the_form_escapes_the_name_and_copes_without_a_key_hint() -> None:
    view = rotation_modal(WAREHOUSE, connection(HOSTILE_NAME, key_hint=None), private_metadata="")
    assert_valid("modal", view)
    first = view["blocks"][0]["text"]["text"]
    assert HOSTILE_SHOWN in first
    assert "The current key keeps working until an admin approves the new one." in first
    assert "<" not in user_made_markup(view)


# --- verifying, result and problem views ----------------------------------------------------


def test_verifying_view_says_what_is_checked_and_that_nothing_changes_yet() -> None:
    view = verifying_view(WAREHOUSE, "Prod <@U1>", kind=RequestKind.ROTATION)
    assert_valid("modal", view)
    assert view["callback_id"] == ids.VIEW_ROTATE_RESULT
    assert view["title"]["text"] == "Rotate credentials"
    assert view["close"]["text"] == "Close"
    assert "submit" not in view
    text = visible_text(view["blocks"])
    assert "⏳ Verifying the new credentials for *“Prod &lt;@\u2060U1&gt;”* with Acme Warehouse…" in text
    assert "direct message" in text
    assert "keeps using its current key" in text


def test_success_says_the_new_credentials_work_and_shows_the_note() -> None:
    checks = (Check("Cloud API key", True, "Listed 1 environment."),)
    note = "It now awaits an admin's approval in <#C0ADMINS>; the current key keeps working until then."
    view = result_view(
        WAREHOUSE,
        "Prod",
        verification(checks=checks),
        approval_note=note,
        try_again_value='{"c":"conn-42"}',
        kind=RequestKind.ROTATION,
    )
    assert_valid("modal", view)
    assert view["callback_id"] == ids.VIEW_ROTATE_RESULT
    assert view["title"]["text"] == "Rotate credentials"
    assert "submit" not in view
    text = visible_text(view["blocks"])
    assert text.startswith("✅ *The credentials for “Prod” work.*\nAcme Warehouse accepted the key.")
    assert "✅ *Cloud API key* — Listed 1 environment." in text
    # The caller's mrkdwn keeps its channel link.
    assert note in text
    assert "Checked in 240 ms" in text
    assert "Nothing" not in text
    assert buttons(view) == []


def test_failure_shows_hints_and_checks_and_says_the_old_key_is_still_in_use() -> None:
    failed = verification(
        Outcome.UNAUTHORIZED,
        "Acme Warehouse did not accept the key <x>.",
        checks=(Check("API key", False, "401 Unauthorized"),),
        hints=("Check the key was copied whole.",),
        request_id="req-8f2a",
    )
    view = result_view(
        WAREHOUSE,
        "Prod",
        failed,
        approval_note="awaits approval",
        try_again_value="v1",
        kind=RequestKind.ROTATION,
    )
    assert_valid("modal", view)
    text = visible_text(view["blocks"])
    assert text.startswith("❌ *Acme Warehouse did not accept the key &lt;x&gt;.*")
    assert "*What to check*\n• Check the key was copied whole." in text
    assert "❌ *API key* — 401 Unauthorized" in text
    assert "Acme Warehouse request id: `req-8f2a`" in text
    assert "*Nothing was saved.*" in text
    assert "*Nothing changed:* “Prod” keeps using its current Acme Warehouse key." in text
    assert "awaits approval" not in text
    assert view["blocks"][-1]["type"] == "actions"
    assert [(b["text"]["text"], b["action_id"], b["value"]) for b in buttons(view)] == [
        ("Try again", ids.ACTION_TRY_AGAIN, "v1")
    ]


def test_failure_without_a_try_again_value_has_no_button() -> None:
    view = result_view(
        WAREHOUSE,
        "Prod",
        verification(Outcome.UNREACHABLE, "No answer."),
        approval_note="",
        try_again_value=None,
        kind=RequestKind.ROTATION,
    )
    assert_valid("modal", view)
    assert buttons(view) == []
    assert "keeps using its current Acme Warehouse key" in visible_text(view["blocks"])


def test_a_flood_of_hints_and_checks_still_fits_and_keeps_the_last_blocks() -> None:
    flood = verification(
        Outcome.FORBIDDEN,
        "Not allowed. " * 200,
        hints=tuple("h" * 2900 for _ in range(300)),
        checks=tuple(Check(f"check {i}", False, "d" * 2900) for i in range(100)),
        request_id="r" * 500,
    )
    view = result_view(
        WAREHOUSE, "n" * 200, flood, approval_note="", try_again_value="v", kind=RequestKind.ROTATION
    )
    assert_valid("modal", view)
    assert len(view["blocks"]) <= 100
    assert "left out" in visible_text(view["blocks"])
    assert view["blocks"][-2]["text"]["text"].startswith("*Nothing changed:*")
    assert view["blocks"][-1]["type"] == "actions"

    dm = result_message(WAREHOUSE, "n" * 200, flood, "", kind=RequestKind.ROTATION)
    assert_valid("message", dm)
    assert dm["blocks"][-1]["text"]["text"].startswith("*Nothing changed:*")


def test_the_result_as_a_direct_message_says_which_credentials() -> None:
    ok = result_message(WAREHOUSE, "Prod & co", verification(), "Awaits approval.", kind=RequestKind.ROTATION)
    assert_valid("message", ok)
    assert ok["text"] == "✅ The new credentials for “Prod &amp; co” work."
    assert "Awaits approval." in visible_text(ok)

    failed = result_message(
        WAREHOUSE, "Prod", verification(Outcome.UNAUTHORIZED, "No <!here>"), "", kind=RequestKind.ROTATION
    )
    assert_valid("message", failed)
    assert (
        failed["text"]
        == "❌ Couldn't verify the new credentials for “Prod” with Acme Warehouse: No &lt;!here&gt;"
    )
    assert "keeps using its current Acme Warehouse key" in visible_text(failed)
    assert buttons(failed) == []


def test_problem_view_shows_the_message_escaped() -> None:
    view = problem_view(
        WAREHOUSE,
        "A rotation of <Prod> already waits for approval. Nothing changed.",
        try_again_value=None,
        kind=RequestKind.ROTATION,
    )
    assert_valid("modal", view)
    assert view["callback_id"] == ids.VIEW_ROTATE_RESULT
    assert view["title"]["text"] == "Rotate credentials"
    assert view["close"]["text"] == "Close"
    assert "submit" not in view
    assert visible_text(view["blocks"]) == (
        "⚠️ A rotation of &lt;Prod&gt; already waits for approval. Nothing changed."
    )
    assert buttons(view) == []


# --- the request in the admin channel -------------------------------------------------------


def test_request_shows_who_asks_which_key_replaces_which_and_the_checks() -> None:
    payload = request_message(rotation())
    assert_valid("message", payload)
    header = payload["blocks"][0]
    assert header["type"] == "header"
    assert header["text"]["text"] == "🔁 Rotation requested for “Production warehouse”"
    text = visible_text(payload)
    assert "*Provider*\nAcme Warehouse" in text
    assert "*Name*\n“Production warehouse”" in text
    assert f"*Requested by*\n<@{REQUESTER}>" in text
    assert f"*When*\n{slack_date(REQUESTED)}" in text
    assert f"*Key*\n`{OLD_HINT}` → `{NEW_HINT}`" in text
    assert f"*Owner*\n<@{OWNER}>" in text
    assert "✅ *Authenticate* — key accepted" in text
    assert "⚠️ *List topics* — not &lt;allowed&gt;" in text
    assert payload["text"] == (
        f"🔁 Rotation requested for “Production warehouse” (Acme Warehouse) by <@{REQUESTER}>"
    )


REPOINTED = (
    ConfigChange("REST endpoint", "https://a.example", "https://b.example"),
    ConfigChange("Cluster ID", "", "lkc-1"),
)


@pytest.mark.parametrize("status", [RotationStatus.PENDING_APPROVAL, *DECIDED_STATUSES])
def test_request_shows_every_other_setting_the_rotation_changes_before_and_after(
    status: RotationStatus,
) -> None:
    request = rotation(status, config_changes=REPOINTED)
    payload = request_message(request) if request.pending else decided_message(request)
    assert_valid("message", payload)
    text = visible_text(payload)
    assert ALSO_CHANGES in text
    assert "• *REST endpoint*: " + literal("https://a.example → https://b.example") in text
    assert "• *Cluster ID*: (not set) → lkc-1" in text


def test_a_rotation_of_the_secret_alone_says_so_and_an_unknown_change_says_nothing() -> None:
    assert ONLY_THE_SECRET in visible_text(request_message(rotation(config_changes=())))
    unknown = visible_text(decided_message(rotation(RotationStatus.APPROVED)))
    assert ONLY_THE_SECRET not in unknown and ALSO_CHANGES not in unknown


def test_changed_settings_are_shown_as_text_whole_and_on_one_line() -> None:
    # A value is what the requester typed: no links or mentions, no forged lines, and never cut,
    # since a shortened host could hide where the connection now points.
    long_host = "https://" + "a" * 180 + ".evil.example"
    hostile = ConfigChange("Warehouse <!here>", "wh", f"<{long_host}|safe>\n• *Cluster ID*: x → y")
    payload = request_message(rotation(config_changes=(hostile,)))
    assert_valid("message", payload)
    text = visible_text(payload)
    assert literal(f"<{long_host}|safe> • *Cluster ID*: x → y") in text
    assert "*Warehouse &lt;!here&gt;*" in text
    assert user_made_markup(payload).count("<") == 0


def test_the_requesters_confirmation_lists_the_same_changes() -> None:
    note = "\n".join(["Awaits approval.", *config_change_lines(REPOINTED)])
    text = visible_text(
        result_message(Warehouse(), "Production warehouse", verification(), note, kind=RequestKind.ROTATION)
    )
    assert "*REST endpoint*: " + literal("https://a.example → https://b.example") in text
    assert config_change_lines(()) == [ONLY_THE_SECRET]


def test_request_explains_what_approving_and_rejecting_do() -> None:
    contexts = [b for b in request_message(rotation())["blocks"] if b["type"] == "context"]
    assert len(contexts) == 1
    explained = contexts[0]["elements"][0]["text"]
    assert "Approving replaces the key in use with the new one and destroys the old stored credentials." in (
        explained
    )
    assert "destroys the new credentials and keeps the old ones working" in explained


def test_request_buttons_carry_the_rotation_id() -> None:
    payload = request_message(rotation())
    actions = [b for b in payload["blocks"] if b["type"] == "actions"]
    assert [a["block_id"] for a in actions] == [ROTATION_ACTIONS_BLOCK]
    assert payload["blocks"][-1] is actions[0]
    assert [
        (b["text"]["text"], b["action_id"], b.get("style"), b["value"], "confirm" in b)
        for b in buttons(payload)
    ] == [
        ("Approve", ids.ACTION_APPROVE_ROTATION, "primary", "rot-7", False),
        ("Reject", ids.ACTION_REJECT_ROTATION, "danger", "rot-7", False),
    ]


def test_an_owner_rotating_their_own_connection_is_not_named_twice() -> None:
    text = visible_text(request_message(rotation(requested_by=OWNER)))
    assert "*Owner*" not in text
    assert text.count(f"<@{OWNER}>") == 2  # the fallback text and the Requested by field


def test_request_without_checks_or_hints_still_says_what_it_can() -> None:
    item = rotation(item=connection(key_hint=None), new_key_hint=None)
    payload = request_message(dataclasses.replace(item, checks=()))
    assert_valid("message", payload)
    text = visible_text(payload)
    assert "*Key*\n— → —" in text
    assert "*Checks*" not in text
    assert len(buttons(payload)) == 2


def test_names_and_requesters_cannot_ping_or_link_in_the_request() -> None:
    item = connection(HOSTILE_NAME, provider_title="Acme <!here>")
    payload = request_message(rotation(item=item, requested_by="<!everyone>"))
    assert_valid("message", payload)
    text = visible_text(payload)
    assert f"*Name*\n{HOSTILE_SHOWN}" in text
    assert "*Provider*\nAcme &lt;!here&gt;" in text
    assert "*Requested by*\n&lt;!everyone&gt;" in text
    assert "<" not in user_made_markup(payload)


def test_a_long_name_is_cut_to_fit_the_header_and_keeps_its_closing_quote() -> None:
    whole = request_message(rotation(item=connection("n" * NAME_MAX_LENGTH)))
    assert whole["blocks"][0]["text"]["text"] == f"🔁 Rotation requested for “{'n' * NAME_MAX_LENGTH}”"

    cut = request_message(rotation(item=connection("x" * 400)))
    assert_valid("message", cut)
    header = cut["blocks"][0]["text"]["text"]
    assert len(header) == 150
    assert header.startswith("🔁 Rotation requested for “xxx")
    assert header.endswith("x…”")

    multiline = request_message(rotation(item=connection("prod\n\nwarehouse")))
    assert multiline["blocks"][0]["text"]["text"] == "🔁 Rotation requested for “prod warehouse”"


# --- the decided request --------------------------------------------------------------------


@pytest.mark.parametrize("status", DECIDED_STATUSES)
def test_a_decided_request_keeps_the_facts_and_loses_the_buttons(status: RotationStatus) -> None:
    request = request_message(rotation())
    payload = decided_message(rotation(status, reason="Wrong team"))
    assert_valid("message", payload)
    assert buttons(payload) == []
    assert not any(b["type"] in ("actions", "context") for b in payload["blocks"])
    shared = [b for b in request["blocks"] if b["type"] in ("header", "section")]
    assert payload["blocks"][: len(shared)] == shared


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (
            RotationStatus.APPROVED,
            f"✅ Approved by <@{ADMIN}> {slack_date(DECIDED)}: the new key is in use and the old stored "
            "credentials were destroyed.",
        ),
        (
            RotationStatus.REJECTED,
            f"❌ Rejected by <@{ADMIN}> {slack_date(DECIDED)}: the new credentials were destroyed; the old "
            "key is still in use.",
        ),
        (
            RotationStatus.EXPIRED,
            f"⌛ Expired {slack_date(DECIDED)}: nobody decided in time. The new credentials were destroyed; "
            "the old key is still in use.",
        ),
        (
            RotationStatus.CANCELLED,
            f"🚫 Cancelled {slack_date(DECIDED)}: the connection was removed, and the new credentials were "
            "destroyed.",
        ),
    ],
)
def test_the_decision_says_who_when_and_what_became_of_each_key(status: RotationStatus, outcome: str) -> None:
    payload = decided_message(rotation(status))
    outcomes = [b["text"]["text"] for b in payload["blocks"] if b["type"] == "section" and "text" in b]
    assert outcome in outcomes
    assert payload["text"] == f"🔁 Rotation of “Production warehouse” (Acme Warehouse): {outcome}"


def test_rejected_quotes_the_reason_escaped() -> None:
    payload = decided_message(
        rotation(RotationStatus.REJECTED, reason="Use the <!channel> key & retry.\nThanks")
    )
    assert_valid("message", payload)
    assert payload["blocks"][-1]["text"]["text"] == "> Use the &lt;!channel&gt; key &amp; retry.\n> Thanks"
    assert "<" not in user_made_markup(payload)


def test_rejected_without_a_reason_says_none_was_given() -> None:
    payload = decided_message(rotation(RotationStatus.REJECTED, reason="  "))
    assert payload["blocks"][-1]["text"]["text"] == "_No reason was given._"


def test_a_reason_longer_than_the_modal_allows_is_cut_to_fit_a_section() -> None:
    reason = "&" * 3000
    for payload in (
        decided_message(rotation(RotationStatus.REJECTED, reason=reason)),
        decision_dm(rotation(RotationStatus.REJECTED, reason=reason)),
    ):
        assert_valid("message", payload)
        quoted = next(t for t in mrkdwn_texts(payload) if t.startswith("> "))
        assert quoted.endswith("…")
        assert quoted.count("&amp;") >= REASON_MAX_LENGTH


def test_expired_names_no_one_and_a_decider_that_is_not_a_user_id_is_text() -> None:
    expired = decided_message(rotation(RotationStatus.EXPIRED))
    assert f"<@{ADMIN}>" not in "\n".join(mrkdwn_texts(expired))

    odd = decided_message(rotation(RotationStatus.APPROVED, decided_by="<!here>"))
    assert f"✅ Approved by &lt;!here&gt; {slack_date(DECIDED)}:" in visible_text(odd)
    assert "<" not in user_made_markup(odd)


def test_a_decision_without_a_time_or_decider_leaves_them_out() -> None:
    item = dataclasses.replace(rotation(RotationStatus.APPROVED), decided_by=None, decided_at=None)
    assert "✅ Approved: the new key is in use" in visible_text(decided_message(item))


def test_once_the_connection_shows_the_new_key_only_the_new_one_is_shown() -> None:
    swapped = rotation(RotationStatus.APPROVED, item=connection(key_hint=NEW_HINT))
    payload = decided_message(swapped)
    assert f"*Key*\n`{NEW_HINT}`" in visible_text(payload)
    assert "→" not in visible_text(payload)
    dm = decision_dm(swapped)
    assert "delete the old key at Acme Warehouse" in visible_text(dm)
    assert "old key `" not in visible_text(dm)


def test_a_pending_rotation_is_not_a_decision() -> None:
    with pytest.raises(ValueError):
        decided_message(rotation())
    with pytest.raises(ValueError):
        decision_dm(rotation())


# --- the reject modal -----------------------------------------------------------------------


def test_reject_modal_asks_for_a_reason_and_says_what_rejecting_a_rotation_does() -> None:
    view = reason_modal(rotation(item=connection("Lake & co")), private_metadata='{"rotation":"rot-7"}')
    assert_valid("modal", view)
    assert view["callback_id"] == ids.VIEW_REJECT_ROTATION
    assert (view["title"]["text"], view["submit"]["text"], view["close"]["text"]) == (
        "Reject rotation",
        "Reject",
        "Cancel",
    )
    assert view["private_metadata"] == '{"rotation":"rot-7"}'
    (reason,) = inputs(view).values()
    assert reason["block_id"] == ids.BLOCK_REASON
    assert reason.get("optional", False) is False
    element = reason["element"]
    assert (element["action_id"], element["min_length"], element["max_length"]) == (
        ids.INPUT_ACTION,
        1,
        REASON_MAX_LENGTH,
    )
    text = visible_text(view["blocks"])
    assert (
        "Reject the new Acme Warehouse credentials for *“Lake &amp; co”*, "
        f"requested by <@{REQUESTER}> {slack_date(REQUESTED)}?"
    ) in text
    assert (
        f"The new credentials `{NEW_HINT}` are destroyed; "
        f"the connection keeps using its current key `{OLD_HINT}`." in text
    )


# --- the direct message to the requester ----------------------------------------------------


def test_approved_dm_says_the_new_key_is_in_use_and_to_delete_the_old_one() -> None:
    payload = decision_dm(rotation(RotationStatus.APPROVED))
    assert_valid("message", payload)
    assert payload["text"] == (
        "✅ The new credentials for Acme Warehouse connection “Production warehouse” "
        f"were approved by <@{ADMIN}>."
    )
    text = visible_text(payload)
    assert f"The new key `{NEW_HINT}` is now in use, and the old stored credentials were destroyed." in text
    assert f"*What next:* delete the old key `{OLD_HINT}` at Acme Warehouse" in text
    assert buttons(payload) == []


def test_rejected_dm_quotes_the_reason_and_says_the_old_key_keeps_working() -> None:
    payload = decision_dm(rotation(RotationStatus.REJECTED, reason="Wrong <env> & key"))
    assert_valid("message", payload)
    assert payload["text"] == (
        "❌ The new credentials for Acme Warehouse connection “Production warehouse” "
        f"were rejected by <@{ADMIN}>."
    )
    text = visible_text(payload)
    assert "> Wrong &lt;env&gt; &amp; key" in text
    assert (
        "the new credentials you entered were destroyed and "
        f"the connection keeps using its current key `{OLD_HINT}`" in text
    )
    assert "Fix what the reason says" in text
    assert [(b["action_id"], b["value"]) for b in buttons(payload)] == [(ids.ACTION_ROTATE, "conn-42")]


def test_expired_dm_says_nobody_decided_and_offers_to_rotate_again() -> None:
    payload = decision_dm(rotation(RotationStatus.EXPIRED, decided_by=None))
    assert_valid("message", payload)
    assert "nobody decided on them within the time limit" in payload["text"]
    text = visible_text(payload)
    assert f"keeps using its current key `{OLD_HINT}`" in text
    assert "<@" not in text
    assert [b["action_id"] for b in buttons(payload)] == [ids.ACTION_ROTATE]


def test_cancelled_dm_says_the_connection_was_removed() -> None:
    payload = decision_dm(rotation(RotationStatus.CANCELLED))
    assert_valid("message", payload)
    assert payload["text"] == (
        "🚫 The rotation of Acme Warehouse connection “Production warehouse” was cancelled: "
        "the connection was removed."
    )
    assert "delete it at Acme Warehouse" in visible_text(payload)
    assert buttons(payload) == []


def test_dm_identifies_both_keys_and_escapes_the_name() -> None:
    payload = decision_dm(rotation(RotationStatus.APPROVED, item=connection(HOSTILE_NAME)))
    text = visible_text(payload)
    assert HOSTILE_SHOWN in text
    assert (
        f"Acme Warehouse · old key `{OLD_HINT}` · new key `{NEW_HINT}` · requested {slack_date(REQUESTED)}"
        in (text)
    )
    assert "<" not in user_made_markup(payload)


# --- the reminder ---------------------------------------------------------------------------


def test_reminder_says_how_old_the_key_is_and_how_to_rotate() -> None:
    payload = rotation_reminder_dm(connection(), age_days=120, rotation_days=90.0)
    assert_valid("message", payload)
    assert payload["text"] == (
        "🔁 The key of your Acme Warehouse connection “Production warehouse” is 120 days old: "
        "time to rotate it."
    )
    text = visible_text(payload)
    assert (
        f"Its Acme Warehouse key `{OLD_HINT}` is 120 days old, "
        "older than your team's rotation period of 90 days."
    ) in text
    assert "1. Create a new key at Acme Warehouse." in text
    assert "2. Click *Rotate* below" in text
    assert "3. An admin approves the new key; until then the old one keeps working." in text
    assert "4. Once it is approved, delete the old key at Acme Warehouse." in text
    assert f"Key stored {slack_date(CREATED)}" in text


def test_reminder_has_a_rotate_button_carrying_the_connection_id() -> None:
    payload = rotation_reminder_dm(connection(), age_days=120, rotation_days=90)
    actions = [b for b in payload["blocks"] if b["type"] == "actions"]
    assert [a["block_id"] for a in actions] == [REMINDER_ACTIONS_BLOCK]
    assert [(b["text"]["text"], b["action_id"], b["value"]) for b in buttons(payload)] == [
        ("Rotate", ids.ACTION_ROTATE, "conn-42")
    ]


@pytest.mark.parametrize(
    ("days", "shown"), [(90.0, "90 days"), (1.0, "1 day"), (0.5, "0.5 days"), (30, "30 days")]
)
def test_reminder_shows_the_rotation_period_without_needless_decimals(days: float, shown: str) -> None:
    payload = rotation_reminder_dm(connection(), age_days=1, rotation_days=days)
    assert f"is 1 day old, older than your team's rotation period of {shown}." in visible_text(payload)


def test_reminder_escapes_the_name_and_copes_without_a_hint_or_date() -> None:
    item = connection(HOSTILE_NAME, key_hint=None, credential_created_at=None)
    payload = rotation_reminder_dm(item, age_days=200, rotation_days=90)
    assert_valid("message", payload)
    text = visible_text(payload)
    assert HOSTILE_SHOWN in text
    assert "Its Acme Warehouse key is 200 days old" in text
    assert "Key stored" not in text
    assert "<" not in user_made_markup(payload)


# --- the reply to a second rotation ---------------------------------------------------------


def test_pending_reply_says_who_asked_when_and_which_new_key() -> None:
    payload = rotation_pending_reply(rotation())
    assert_valid("message", payload)
    assert payload["text"].startswith(
        "A rotation of “Production warehouse” already waits for an admin's approval: requested by "
        f"<@{REQUESTER}> {slack_date(REQUESTED)}, new key `{NEW_HINT}`. Nothing changed."
    )
    assert visible_text(payload["blocks"]) == payload["text"]


def test_pending_reply_escapes_and_copes_without_a_hint() -> None:
    payload = rotation_pending_reply(
        rotation(item=connection(HOSTILE_NAME), requested_by="<!here>", new_key_hint=None)
    )
    assert_valid("message", payload)
    assert HOSTILE_SHOWN in payload["text"]
    assert "requested by &lt;!here&gt;" in payload["text"]
    assert "new key (no hint)" in payload["text"]
    assert "<" not in user_made_markup(payload)


# --- across every builder: only masked hints, never a mention from user text ---------------


def every_payload(item: ApprovalRequest) -> list[tuple[str, dict[str, Any]]]:
    return [
        ("modal", rotation_modal(WAREHOUSE, item.connection, private_metadata="conn-42")),
        ("modal", reason_modal(item, private_metadata="rot-7")),
        ("message", request_message(item)),
        ("message", rotation_pending_reply(item)),
        ("message", rotation_reminder_dm(item.connection, age_days=100, rotation_days=90)),
        *(
            ("message", decided_message(dataclasses.replace(item, status=s, reason="r")))
            for s in DECIDED_STATUSES
        ),
        *(
            ("message", decision_dm(dataclasses.replace(item, status=s, reason="r")))
            for s in DECIDED_STATUSES
        ),
    ]


def test_only_the_masked_key_hints_are_shown_never_more_of_a_key() -> None:
    for surface, payload in every_payload(rotation()):
        assert_valid(surface, payload)
        sent = json.dumps(payload, ensure_ascii=False)
        for key in (OLD_KEY, NEW_KEY):
            assert key not in sent
            assert key[4:-4] not in sent
        # Each key mention is exactly a hint, in code: nothing is added around it.
        for tail, hint in (("1111", OLD_HINT), ("2222", NEW_HINT)):
            assert re.findall(rf"`[^`]*{tail}[^`]*`", sent) == [f"`{hint}`"] * sent.count(tail)


def test_no_user_text_becomes_markup_in_any_builder() -> None:
    item = rotation(
        item=connection(HOSTILE_NAME, provider_title="Acme <!here>", created_by="<!everyone>"),
        requested_by="<@nope>",
        decided_by="<!channel>",
    )
    for surface, payload in every_payload(item):
        assert_valid(surface, payload)
        assert "<" not in user_made_markup(payload), payload.get("text", payload)
        assert not markup_problems(payload), payload.get("text", payload)
