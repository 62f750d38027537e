"""The "Create <provider>" modal and the views that replace it: built from any provider's form."""

from __future__ import annotations

from typing import Any

import pytest

from blocks.forms import create_modal, problem_view, result_view, verifying_view
from bot import ids
from bot.domain import NAME_MAX_LENGTH
from bot.providers.base import Check, FormField, FormSection, Outcome, Verification
from tests.support.block_kit import assert_valid
from tests.support.block_text import visible_text
from tests.unit.blocks.providers import WAREHOUSE, Warehouse


def inputs(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {b["block_id"]: b for b in view["blocks"] if b["type"] == "input"}


def buttons(view: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for b in view["blocks"] if b["type"] == "actions" for e in b["elements"]]


def verification(
    outcome: Outcome = Outcome.OK,
    summary: str = "Acme Warehouse accepted the key.",
    *,
    checks: tuple[Check, ...] = (),
    hints: tuple[str, ...] = (),
    request_id: str | None = None,
    latency_ms: int = 240,
) -> Verification:
    return Verification(outcome, summary, checks, hints, latency_ms, request_id)


# --- the form -------------------------------------------------------------------------------


def test_the_form_is_titled_after_the_provider_with_verify_and_cancel() -> None:
    view = create_modal(WAREHOUSE, private_metadata='{"channel":"C1"}')
    assert_valid("modal", view)
    assert view["type"] == "modal"
    assert view["callback_id"] == ids.VIEW_CREATE
    assert view["title"]["text"] == "Create Acme Warehouse"
    assert view["submit"]["text"] == "Verify and save"
    assert view["close"]["text"] == "Cancel"
    assert view["notify_on_close"] is False
    assert view["private_metadata"] == '{"channel":"C1"}'


def test_sections_come_in_order_metadata_first() -> None:
    view = create_modal(WAREHOUSE, private_metadata="")
    layout = [
        b["text"]["text"] if b["type"] == "header" else b.get("block_id", b["type"]) for b in view["blocks"]
    ]
    assert layout == [
        "Metadata",
        ids.BLOCK_NAME,
        "Account",
        "account_url",
        "api_key",
        "api_secret",
        "Advanced (optional)",
        "context",
        "notes",
        "context",
    ]
    description = view["blocks"][7]["elements"][0]["text"]
    assert description == "Only for private networking &amp; &lt;custom&gt; setups."


def test_the_name_input_asks_for_a_friendly_label_with_the_providers_examples() -> None:
    name = inputs(create_modal(WAREHOUSE, private_metadata=""))[ids.BLOCK_NAME]
    assert name["label"]["text"] == "Name"
    assert name["element"]["action_id"] == ids.INPUT_ACTION
    assert name["element"]["max_length"] == NAME_MAX_LENGTH
    assert name["optional"] is False
    hint = name["hint"]["text"]
    assert "Acme Warehouse account or project" in hint
    assert "“Production warehouse” or “Staging analytics”" in hint
    assert name["element"]["placeholder"]["text"] == "Production warehouse"


def test_each_field_renders_its_declaration() -> None:
    fields = inputs(create_modal(WAREHOUSE, private_metadata=""))
    url, key, secret, notes = (fields[n] for n in ("account_url", "api_key", "api_secret", "notes"))
    assert all(f["element"]["action_id"] == ids.INPUT_ACTION for f in (url, key, secret, notes))
    assert url["label"]["text"] == "Account URL"
    assert url["hint"]["text"] == "Your account's address."
    assert url["element"]["placeholder"]["text"] == "https://x.acme.example"
    assert url["element"]["max_length"] == 200
    assert url["optional"] is False
    assert "placeholder" not in secret["element"]
    assert "max_length" not in secret["element"]
    assert notes["optional"] is True
    assert notes["element"]["multiline"] is True
    assert "multiline" not in url["element"]


def test_initial_values_fill_the_name_and_plain_fields_only() -> None:
    view = create_modal(
        WAREHOUSE,
        private_metadata="",
        initial={ids.BLOCK_NAME: "Prod", "account_url": "https://prod.acme.example", "gone_field": "x"},
    )
    assert_valid("modal", view)
    fields = inputs(view)
    assert fields[ids.BLOCK_NAME]["element"]["initial_value"] == "Prod"
    assert fields["account_url"]["element"]["initial_value"] == "https://prod.acme.example"
    for name in ("api_key", "api_secret", "notes"):
        assert "initial_value" not in fields[name]["element"]


@pytest.mark.parametrize("secret_field", ["api_key", "api_secret"])
def test_asking_to_prefill_a_secret_is_refused_without_echoing_it(secret_field: str) -> None:
    with pytest.raises(ValueError) as raised:
        create_modal(WAREHOUSE, private_metadata="", initial={secret_field: "s3cr3t-value-123"})
    assert secret_field in str(raised.value)
    assert "s3cr3t-value-123" not in str(raised.value)


def test_a_notice_comes_first_and_is_escaped() -> None:
    view = create_modal(WAREHOUSE, private_metadata="", notice="Nothing was saved. <!channel> fix & retry.")
    assert_valid("modal", view)
    assert view["blocks"][0]["text"]["text"] == "⚠️ Nothing was saved. &lt;!channel&gt; fix &amp; retry."
    assert view["blocks"][1]["text"]["text"] == "Metadata"


def test_the_form_says_what_happens_on_submit() -> None:
    text = visible_text(create_modal(WAREHOUSE, private_metadata="")["blocks"])
    assert "we check these credentials with Acme Warehouse before saving" in text


def test_a_long_provider_title_is_shortened_to_fit_the_title_bar() -> None:
    class Long(Warehouse):
        title = "Extremely Long Provider Name"

    view = create_modal(Long(), private_metadata="")
    assert_valid("modal", view)
    assert len(view["title"]["text"]) <= 24
    assert view["title"]["text"].startswith("Create Extremely")
    assert view["title"]["text"].endswith("…")


def test_a_field_named_like_the_name_input_is_a_declaration_error() -> None:
    class Clash(Warehouse):
        sections = (FormSection("Account", (FormField(ids.BLOCK_NAME, "Name", "dup"),)),)

    with pytest.raises(ValueError):
        create_modal(Clash(), private_metadata="")


def test_a_max_length_slack_would_refuse_is_a_declaration_error() -> None:
    class TooLong(Warehouse):
        sections = (FormSection("Account", (FormField("cert", "Cert", "PEM", max_length=5000),)),)

    with pytest.raises(ValueError):
        create_modal(TooLong(), private_metadata="")


# --- verifying and result views -------------------------------------------------------------


def test_verifying_view_says_what_is_happening_and_where_the_result_goes() -> None:
    view = verifying_view(WAREHOUSE, "Prod <@U1>")
    assert_valid("modal", view)
    assert view["callback_id"] == ids.VIEW_RESULT
    assert "submit" not in view
    assert view["close"]["text"] == "Close"
    assert view["title"]["text"] == "Create Acme Warehouse"
    text = visible_text(view["blocks"])
    assert "Verifying *“Prod &lt;@\u2060U1&gt;”* with Acme Warehouse…" in text
    assert "a few seconds" in text
    assert "direct message" in text


def test_success_shows_what_worked_what_to_watch_and_what_happens_next() -> None:
    checks = (
        Check("Cloud API key", True, "Listed 1 environment."),
        Check("Create topics", False, "The key may not create topics <here>."),
    )
    view = result_view(
        WAREHOUSE,
        "Prod",
        verification(checks=checks, latency_ms=240),
        try_again_value='{"p":"acme_warehouse"}',
        approval_note="It now awaits an admin's approval.",
    )
    assert_valid("modal", view)
    assert view["callback_id"] == ids.VIEW_RESULT
    assert "submit" not in view
    text = visible_text(view["blocks"])
    assert text.startswith("✅ *The credentials for “Prod” work.*\nAcme Warehouse accepted the key.")
    assert "✅ *Cloud API key* — Listed 1 environment." in text
    assert "⚠️ *Create topics* — The key may not create topics &lt;here&gt;." in text
    assert "It now awaits an admin's approval." in text
    assert "Checked in 240 ms" in text
    assert "Nothing was saved." not in text
    assert buttons(view) == []


def test_failure_says_why_what_to_check_and_offers_try_again() -> None:
    failed = verification(
        Outcome.UNAUTHORIZED,
        "Acme Warehouse did not accept the key and secret.",
        checks=(Check("API key", False, "401 Unauthorized"),),
        hints=("Check the key was copied whole.", "Make sure the secret belongs to this key."),
        request_id="req-8f2a",
    )
    view = result_view(WAREHOUSE, "Prod", failed, try_again_value='{"p":"acme_warehouse"}', approval_note="x")
    assert_valid("modal", view)
    text = visible_text(view["blocks"])
    assert text.startswith("❌ *Acme Warehouse did not accept the key and secret.*")
    assert "We couldn't verify the credentials for “Prod” with Acme Warehouse." in text
    assert "Check the details below, then try again." in text
    assert (
        "*What to check*\n• Check the key was copied whole.\n• Make sure the secret belongs to this key."
        in text
    )
    assert "❌ *API key* — 401 Unauthorized" in text
    assert "Acme Warehouse request id: `req-8f2a`" in text
    assert "*Nothing was saved.*" in text
    assert "x" not in text.split("\n")  # the approval note is for success only
    assert [(b["text"]["text"], b["action_id"], b["value"]) for b in buttons(view)] == [
        ("Try again", ids.ACTION_TRY_AGAIN, '{"p":"acme_warehouse"}')
    ]


def test_a_transient_failure_says_it_is_probably_temporary() -> None:
    view = result_view(
        WAREHOUSE,
        "Prod",
        verification(Outcome.UNREACHABLE, "We couldn't reach Acme Warehouse."),
        try_again_value="v",
        approval_note="",
    )
    assert "This is often temporary: try again in a minute." in visible_text(view["blocks"])
    assert "Check the details below" not in visible_text(view["blocks"])


def test_long_hints_are_split_across_sections_and_all_shown() -> None:
    long_hints = tuple(f"hint{i} " + ("word " * 1200).strip() for i in range(3)) + tuple(
        f"short hint {i} & <more>" for i in range(40)
    )
    view = result_view(
        WAREHOUSE,
        "Prod",
        verification(Outcome.FORBIDDEN, "Not allowed.", hints=long_hints),
        try_again_value="v",
        approval_note="",
    )
    assert_valid("modal", view)
    assert len(view["blocks"]) <= 100
    sections = [b["text"]["text"] for b in view["blocks"] if b["type"] == "section"]
    assert all(len(s) <= 3000 for s in sections)
    assert sum(1 for s in sections if "• hint" in s or s.startswith("word")) >= 3
    shown = "\n".join(sections)
    for i in range(3):
        assert f"• hint{i} word" in shown
    for i in range(40):
        assert f"• short hint {i} &amp; &lt;more&gt;" in shown
    assert shown.count("word") == 3 * 1200
    assert [b["action_id"] for b in buttons(view)] == [ids.ACTION_TRY_AGAIN]


def test_a_flood_of_hints_and_checks_still_fits_in_a_modal() -> None:
    flood = verification(
        Outcome.FORBIDDEN,
        "Not allowed. " * 200,
        hints=tuple("h" * 2900 for _ in range(300)),
        checks=tuple(Check(f"check {i}", False, "d" * 2900) for i in range(100)),
        request_id="r" * 500,
    )
    view = result_view(WAREHOUSE, "n" * 200, flood, try_again_value="v", approval_note="")
    assert_valid("modal", view)
    assert len(view["blocks"]) <= 100
    assert "left out" in visible_text(view["blocks"])
    assert view["blocks"][-1]["type"] == "actions"  # Try again survives the cut


def test_problem_view_shows_the_message_and_try_again_only_when_offered() -> None:
    view = problem_view(
        WAREHOUSE,
        "Someone else just took the name <Prod>. Nothing was saved.",
        try_again_value='{"p":"acme_warehouse"}',
    )
    assert_valid("modal", view)
    assert view["callback_id"] == ids.VIEW_RESULT
    assert view["close"]["text"] == "Close"
    assert "submit" not in view
    assert "⚠️ Someone else just took the name &lt;Prod&gt;. Nothing was saved." in visible_text(
        view["blocks"]
    )
    assert [(b["action_id"], b["value"]) for b in buttons(view)] == [
        (ids.ACTION_TRY_AGAIN, '{"p":"acme_warehouse"}')
    ]

    internal = problem_view(
        WAREHOUSE, "Something went wrong on our side; nothing was saved.", try_again_value=None
    )
    assert_valid("modal", internal)
    assert buttons(internal) == []
    assert "Something went wrong on our side; nothing was saved." in visible_text(internal["blocks"])


# --- the real provider ----------------------------------------------------------------------


def test_the_confluent_cloud_form_matches_the_user_guide() -> None:
    from bot.providers.confluent_cloud import ConfluentCloud

    provider = ConfluentCloud()
    view = create_modal(provider, private_metadata="")
    assert_valid("modal", view)
    assert view["title"]["text"] == "Create Confluent Cloud"
    headers = [b["text"]["text"] for b in view["blocks"] if b["type"] == "header"]
    assert headers == ["Metadata", "Confluent Account", "Kafka cluster (optional)"]
    fields = inputs(view)
    assert list(fields) == [ids.BLOCK_NAME, *(f.name for f in provider.fields)]
    for field in provider.fields:
        assert fields[field.name]["label"]["text"] == field.label
        assert fields[field.name]["hint"]["text"] == field.hint
    assert (
        "“Production Confluent Cloud” or “Analytics Cluster Credentials”"
        in fields[ids.BLOCK_NAME]["hint"]["text"]
    )
    with pytest.raises(ValueError):
        create_modal(provider, private_metadata="", initial={name: "x" for name in provider.secret_fields})
