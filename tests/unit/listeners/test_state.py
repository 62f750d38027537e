"""What the listeners round-trip through Slack: drafts in button values, private_metadata, modal state.

Slack hands these back on later requests, so every reader is fed tampered input here as well as
good input: it must answer None (or drop the bad part), never raise, and never let a secret field
back into a form.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from slack_bolt.async_app import AsyncBoltContext

from bot import ids
from bot.payloads import FormDraft, form_metadata, parse_form_metadata, read_form, team_of
from bot.providers.confluent_cloud import ConfluentCloud
from bot.redaction import Secret

REST = "https://pkc-abcde.us-west4.gcp.confluent.cloud:443"
DEEPLY_NESTED = "[" * 1500  # shorter than Slack's 2000-character button value


@pytest.fixture
def provider() -> ConfluentCloud:
    return ConfluentCloud()


def view_with(values: dict[str, Any]) -> dict[str, Any]:
    """A submitted view whose inputs hold ``values`` (block id -> value), as Slack sends it."""
    return {
        "id": "V0000VIEW",
        "state": {
            "values": {
                block_id: {ids.INPUT_ACTION: {"type": "plain_text_input", "value": value}}
                for block_id, value in values.items()
            }
        },
    }


# --- FormDraft -------------------------------------------------------------------------------------


def test_a_draft_survives_encode_and_decode() -> None:
    draft = FormDraft("confluent_cloud", "Prod “Kafka” ✓", {"rest_endpoint": REST, "cluster_id": "lkc-1"})

    encoded = draft.encode()

    assert FormDraft.decode(encoded) == draft
    assert json.loads(encoded) == {
        "p": "confluent_cloud",
        "n": "Prod “Kafka” ✓",
        "c": {"rest_endpoint": REST, "cluster_id": "lkc-1"},
    }


def test_an_empty_draft_survives_encode_and_decode() -> None:
    draft = FormDraft("confluent_cloud")

    assert FormDraft.decode(draft.encode()) == FormDraft("confluent_cloud", "", {})


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        "{",
        "null",
        "42",
        '"confluent_cloud"',
        '["confluent_cloud", "Prod"]',
        "{}",
        '{"n": "Prod", "c": {}}',
        '{"p": null, "n": "Prod"}',
        '{"p": 7}',
        '{"p": ["confluent_cloud"]}',
        "x" * 100_000,
    ],
    ids=lambda text: text[:20] or "empty",
)
def test_decode_rejects_what_is_not_a_draft(text: str) -> None:
    assert FormDraft.decode(text) is None


@pytest.mark.parametrize(
    "text",
    [
        DEEPLY_NESTED,
        '{"p": "confluent_cloud", "c": ' + '{"a": ' * 1500,
        '{"p": "confluent_cloud", "n": ' + "[" * 1500 + "]" * 1500 + "}",
    ],
    ids=["nested-list", "nested-config", "nested-name"],
)
def test_decode_of_deeply_nested_json_returns_none(text: str) -> None:
    assert FormDraft.decode(text) is None


@pytest.mark.parametrize("name", [42, None, ["Prod"], {"n": "Prod"}, True])
def test_decode_drops_a_name_that_is_not_text(name: object) -> None:
    text = json.dumps({"p": "confluent_cloud", "n": name, "c": {"cluster_id": "lkc-1"}})

    assert FormDraft.decode(text) == FormDraft("confluent_cloud", "", {"cluster_id": "lkc-1"})


def test_decode_drops_config_values_that_are_not_text() -> None:
    config = {"cluster_id": "lkc-1", "a": 1, "b": None, "c": ["x"], "d": {"x": "y"}, "e": False}
    text = json.dumps({"p": "confluent_cloud", "n": "Prod", "c": config})

    assert FormDraft.decode(text) == FormDraft("confluent_cloud", "Prod", {"cluster_id": "lkc-1"})


@pytest.mark.parametrize("config", ["lkc-1", ["cluster_id", "lkc-1"], 3, None])
def test_decode_drops_a_config_that_is_not_an_object(config: object) -> None:
    text = json.dumps({"p": "confluent_cloud", "n": "Prod", "c": config})

    assert FormDraft.decode(text) == FormDraft("confluent_cloud", "Prod", {})


def test_decode_of_huge_valid_input_does_not_raise() -> None:
    text = json.dumps({"p": "confluent_cloud", "n": "N" * 1_000_000, "c": {"cluster_id": "lkc-1"}})

    draft = FormDraft.decode(text)

    assert draft is None or draft.provider_key == "confluent_cloud"


def test_initial_values_keep_the_name_and_non_secret_fields(provider: ConfluentCloud) -> None:
    draft = FormDraft("confluent_cloud", "Prod", {"rest_endpoint": REST, "cluster_id": "lkc-1"})

    assert draft.initial_values(provider) == {
        ids.BLOCK_NAME: "Prod",
        "rest_endpoint": REST,
        "cluster_id": "lkc-1",
    }


def test_initial_values_drop_secret_and_unknown_fields_of_a_tampered_draft(provider: ConfluentCloud) -> None:
    tampered = json.dumps(
        {
            "p": "confluent_cloud",
            "n": "Prod",
            "c": {
                "api_key": "ABCD1234567890AB",
                "api_secret": "cflt-should-never-come-back",
                "cluster_id": "lkc-1",
                "evil": "x",
                ids.BLOCK_NAME: "Another name",
            },
        }
    )
    draft = FormDraft.decode(tampered)
    assert draft is not None

    values = draft.initial_values(provider)

    assert values == {ids.BLOCK_NAME: "Prod", "cluster_id": "lkc-1"}
    assert not set(values) & set(provider.secret_fields)


def test_initial_values_without_a_name_leave_the_name_empty(provider: ConfluentCloud) -> None:
    draft = FormDraft("confluent_cloud", "", {"cluster_id": "lkc-1", ids.BLOCK_NAME: "Smuggled"})

    assert draft.initial_values(provider) == {"cluster_id": "lkc-1"}


# --- private_metadata ------------------------------------------------------------------------------


def test_form_metadata_names_the_provider(provider: ConfluentCloud) -> None:
    assert parse_form_metadata(form_metadata(provider)) == "confluent_cloud"


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "   ",
        "confluent_cloud",
        "{",
        "null",
        "[]",
        '["confluent_cloud"]',
        "{}",
        '{"provider": null}',
        '{"provider": 3}',
        '{"provider": {"key": "confluent_cloud"}}',
        '{"p": "confluent_cloud"}',
    ],
    ids=lambda text: "none" if text is None else (text[:20] or "empty"),
)
def test_parse_form_metadata_rejects_unusable_metadata(text: str | None) -> None:
    assert parse_form_metadata(text) is None


def test_parse_form_metadata_of_deeply_nested_json_returns_none() -> None:
    assert parse_form_metadata('{"provider": ' + DEEPLY_NESTED) is None


# --- read_form -------------------------------------------------------------------------------------


def test_read_form_wraps_secret_fields(provider: ConfluentCloud) -> None:
    view = view_with(
        {
            ids.BLOCK_NAME: " Prod  Kafka ",
            "api_key": "ABCD1234567890AB",
            "api_secret": "the-secret-value",
            "rest_endpoint": REST,
            "cluster_id": "lkc-1",
        }
    )

    name, values = read_form(view, provider)

    assert name == " Prod  Kafka ", "cleaning is the service's job"
    assert set(values) == {"api_key", "api_secret", "rest_endpoint", "cluster_id"}
    assert isinstance(values["api_key"], Secret) and isinstance(values["api_secret"], Secret)
    assert values["api_key"] == Secret("ABCD1234567890AB")
    assert values["api_secret"] == Secret("the-secret-value")
    assert (values["rest_endpoint"], values["cluster_id"]) == (REST, "lkc-1")
    assert type(values["rest_endpoint"]) is str and type(values["cluster_id"]) is str
    assert "the-secret-value" not in repr(values)


def test_read_form_reads_empty_and_missing_inputs_as_empty_text(provider: ConfluentCloud) -> None:
    # Slack sends "value": null for an input left empty; a block can also be missing altogether.
    view = view_with({ids.BLOCK_NAME: None, "api_key": None, "rest_endpoint": None})

    name, values = read_form(view, provider)

    assert name == ""
    assert values == {
        "api_key": Secret(""),
        "api_secret": Secret(""),
        "rest_endpoint": "",
        "cluster_id": "",
    }
    assert isinstance(values["api_key"], Secret) and isinstance(values["api_secret"], Secret)


def test_read_form_of_a_view_without_state(provider: ConfluentCloud) -> None:
    name, values = read_form({"id": "V0000VIEW"}, provider)

    assert name == ""
    assert values == {"api_key": Secret(""), "api_secret": Secret(""), "rest_endpoint": "", "cluster_id": ""}


def test_read_form_ignores_values_that_are_not_text(provider: ConfluentCloud) -> None:
    view = view_with({ids.BLOCK_NAME: 42, "api_key": ["x"], "cluster_id": {"value": "lkc-1"}})

    name, values = read_form(view, provider)

    assert name == ""
    assert values["api_key"] == Secret("")
    assert values["cluster_id"] == ""


# --- team_of ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("context", "body"),
    [
        ({"team_id": "T0000CTX"}, {"team_id": "T0000BODY"}),
        ({}, {"team_id": "T0000CTX"}),
        ({}, {"team": {"id": "T0000CTX"}}),
        ({}, {"team": None, "user": {"id": "U0000USER", "team_id": "T0000CTX"}}),
    ],
    ids=["context-first", "command-payload", "interaction-payload", "user-team"],
)
def test_team_of_finds_the_workspace(context: dict[str, Any], body: dict[str, Any]) -> None:
    assert team_of(AsyncBoltContext(context), body) == "T0000CTX"


@pytest.mark.parametrize("body", [{}, {"team": None, "user": None}, {"team_id": ""}])
def test_team_of_refuses_a_request_without_a_team(body: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="team id"):
        team_of(AsyncBoltContext(), body)
