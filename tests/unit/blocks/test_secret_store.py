"""What people see about secret stores: where an approved credential lives (the status reply, the
decided request, the requester's direct message, App Home and the list), why an approval did not go
through, and a re-test that could not read the store. Checked against Slack's limits."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from blocks.approval import decided_message, decision_dm, decision_reply, refusal_text
from blocks.connections import connections_message
from blocks.home import home_view
from blocks.parts import secret_path_text
from blocks.removal import remove_prompt
from blocks.retests import retest_report_message, retest_result_message, status_message
from bot.domain import (
    STORE_CHECK,
    AdminCheck,
    ApprovalRequest,
    ConnectionSummary,
    Decision,
    HomeData,
    Page,
    RequestKind,
    RetestReport,
    RetestResult,
    RotationStatus,
    SecretLocation,
    Status,
    StatusReport,
    Verdict,
)
from bot.providers.base import Check, Outcome, Verification
from bot.stores.paths import PATH_MAX_LENGTH
from tests.support.block_kit import assert_valid
from tests.support.block_text import HOSTILE_MARKUP, as_read, markup_problems, visible_text
from tests.unit.blocks.test_approval import ADMIN, DECIDED, approval, summary
from tests.unit.blocks.test_retests import NOW, PROVIDER, PROVIDERS, connection, rate_limited

PATH = "connections/T0TEAM/acme_stream/production-stream"
WHERE = SecretLocation("aws", "AWS Secrets Manager", PATH)
SHOWN = f"AWS Secrets Manager at `{PATH}`"
HOSTILE_PROBLEM = f"the bot may not write `{PATH}`: <!channel> {HOSTILE_MARKUP}"


def stored(item: ConnectionSummary, location: SecretLocation | None = WHERE) -> ConnectionSummary:
    return replace(item, secret_location=location)


def mrkdwn(payload: dict[str, Any]) -> str:
    """Every text exactly as sent (no reading aid): what a person copies out of Slack."""
    return visible_text(payload)


def rotation(status: RotationStatus, item: ConnectionSummary) -> ApprovalRequest:
    return ApprovalRequest(
        kind=RequestKind.ROTATION,
        id="rot-1",
        team_id="T0TEAM",
        connection=item,
        requested_by=item.created_by,
        requested_at=item.created_at,
        status=status,
        decided_by=ADMIN,
        decided_at=DECIDED,
        new_key_hint="NEWK…EY12",
    )


# --- where it lives ------------------------------------------------------------------------------


def test_a_path_is_shown_in_code_exactly_as_pipelines_reference_it() -> None:
    assert secret_path_text(PATH) == f"`{PATH}`", "no invisible characters in a path to copy"
    assert secret_path_text("connections/T0/acme/db.prod@eu") == "`connections/T0/acme/db.prod@eu`"


def test_a_path_that_no_template_makes_is_shown_literally() -> None:
    shown = secret_path_text("x` <!channel> *bold*")
    assert "<!channel>" not in shown and "&lt;!channel&gt;" in shown
    assert shown.count("`") == 2, "it cannot close the code span"


def test_the_status_reply_says_where_the_credential_lives() -> None:
    report = StatusReport(stored(connection()), history=())
    payload = status_message(report, PROVIDER, now=NOW, rotation_days=90)
    assert_valid("message", payload)
    assert f"*Stored in*\n{SHOWN}" in mrkdwn(payload)
    local = status_message(StatusReport(connection(), history=()), PROVIDER, now=NOW, rotation_days=90)
    assert "Stored in" not in visible_text(local)


def test_an_approved_request_says_where_the_credential_now_lives() -> None:
    item = stored(replace(summary(), status=Status.ACTIVE))
    payload = decided_message(approval(item, status=Status.ACTIVE, decided_by=ADMIN, decided_at=DECIDED))
    assert_valid("message", payload)
    assert f"🔐 The credential is stored in {SHOWN}: pipelines read it there." in mrkdwn(payload)

    rejected = decided_message(
        approval(
            stored(summary()), status=Status.REJECTED, decided_by=ADMIN, decided_at=DECIDED, reason="No."
        )
    )
    assert "stored in" not in visible_text(rejected)


def test_the_requesters_message_says_where_their_credential_lives() -> None:
    item = stored(replace(summary(), status=Status.ACTIVE))
    created = decision_dm(approval(item, status=Status.ACTIVE, decided_by=ADMIN, decided_at=DECIDED))
    assert_valid("message", created)
    assert f"The credential is stored in {SHOWN}" in mrkdwn(created)

    rotated = decision_dm(rotation(RotationStatus.APPROVED, item))
    assert_valid("message", rotated)
    assert f"The new credential is stored in {SHOWN}" in mrkdwn(rotated)
    rejected = decision_dm(replace(rotation(RotationStatus.REJECTED, item), reason="No."))
    assert "stored in" not in visible_text(rejected)


def test_app_home_and_the_list_say_where_each_credential_lives() -> None:
    mine = (stored(connection(1)), connection(2))
    view = home_view(HomeData(user_id="U0OWNER001", connections=mine, connections_total=2), [PROVIDER])
    assert_valid("home", view)
    assert visible_text(view).count(f"stored in {SHOWN}") == 1

    listed = connections_message([PROVIDER], Page(mine, 1, 20, 2))
    assert_valid("message", listed)
    assert visible_text(listed).count(f"stored in {SHOWN}") == 1


def test_the_removal_prompt_says_the_secret_in_the_store_is_deleted_too() -> None:
    payload = remove_prompt(stored(connection()))
    assert_valid("message", payload)
    assert f"Its secret in {SHOWN} is deleted too" in mrkdwn(payload)
    assert "deleted too" not in visible_text(remove_prompt(connection()))


def test_the_longest_path_still_fits_every_view() -> None:
    longest = SecretLocation("aws", "AWS Secrets Manager", "c/" + "x" * (PATH_MAX_LENGTH - 2))
    item = stored(replace(summary(), status=Status.ACTIVE), longest)
    assert_valid("message", decided_message(approval(item, status=Status.ACTIVE, decided_at=DECIDED)))
    assert_valid("message", decision_dm(approval(item, status=Status.ACTIVE, decided_at=DECIDED)))
    report = StatusReport(stored(connection(), longest), history=())
    assert_valid("message", status_message(report, PROVIDER, now=NOW, rotation_days=90))
    many = tuple(stored(connection(i), longest) for i in range(20))
    assert_valid("home", home_view(HomeData(user_id="U0OWNER001", connections=many), [PROVIDER]))


# --- an approval the store refused ---------------------------------------------------------------


@pytest.mark.parametrize("kind", list(RequestKind))
def test_an_admin_whose_approval_the_store_refused_is_told_why_and_to_click_again(kind: RequestKind) -> None:
    request = (
        approval() if kind is RequestKind.CONNECTION else rotation(RotationStatus.PENDING_APPROVAL, summary())
    )
    decision = Decision(
        Verdict.STORE_FAILED,
        request,
        AdminCheck(True, "listed"),
        f"the bot may not write `{PATH}`: AccessDenied",
    )

    payload = decision_reply(decision, "Ask in #admins.")

    assert_valid("message", payload)
    text = as_read(visible_text(payload))
    assert "Nothing was approved" in text
    assert f"the bot may not write `{PATH}`: AccessDenied" in text
    assert f"The {kind.value} still waits for approval" in text
    assert "click *Approve* again" in text
    assert "Nothing was approved" in refusal_text(decision, kind)


def test_what_a_store_said_can_neither_ping_nor_format() -> None:
    decision = Decision(Verdict.STORE_FAILED, approval(), AdminCheck(True, "listed"), HOSTILE_PROBLEM)
    payload = decision_reply(decision, "")
    assert markup_problems(payload) == []
    assert "<!channel>" not in str(payload)


# --- a re-test that could not read the store -----------------------------------------------------


def store_down() -> RetestResult:
    found = Verification(
        Outcome.UNREACHABLE,
        f"The secret at {PATH} in AWS Secrets Manager could not be read (the store did not answer).",
        (Check(STORE_CHECK, False, "the store did not answer"),),
        ("Whoever runs the bot: check that the secret store answers.",),
        0,
        inconclusive=True,
    )
    return RetestResult("T1", stored(connection()), found)


def test_a_retest_the_store_did_not_answer_is_inconclusive_not_rate_limited() -> None:
    payload = retest_result_message(store_down(), PROVIDER)
    assert_valid("message", payload)
    text = as_read(visible_text(payload))
    assert "could not be checked" in text and "health is unchanged" in text
    assert "rate-limiting" not in text and "rate-limited" not in text
    assert "Whoever runs the bot: check that the secret store answers." in text


def test_a_report_counts_store_failures_as_inconclusive_without_blaming_rate_limits() -> None:
    mixed = retest_report_message(RetestReport((store_down(), rate_limited(2))), PROVIDERS)
    assert_valid("message", mixed)
    assert "2 inconclusive*" in visible_text(mixed)
    assert "Inconclusive: not checked, health unchanged (2)" in visible_text(mixed)
    limited = retest_report_message(RetestReport((rate_limited(2),)), PROVIDERS)
    assert "1 inconclusive (rate-limited)" in visible_text(limited)


def test_a_changed_secret_that_works_is_a_warning_in_the_reply() -> None:
    found = Verification(
        Outcome.OK,
        "Changed outside the bot: Authenticated.",
        (Check(STORE_CHECK, False, "changed outside the bot (current version v2, the bot wrote v1)"),),
        (),
        120,
    )
    payload = retest_result_message(RetestResult("T1", stored(connection()), found), PROVIDER)
    text = as_read(visible_text(payload))
    assert f"⚠️ *{STORE_CHECK}* — changed outside the bot (current version v2, the bot wrote v1)" in text
