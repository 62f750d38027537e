"""The whole journey of issue 2, driven the way Slack drives the bot: /connections, Connect, the
modal, inline checks, "Verifying…" after the ack, the outcome, Try again, and what gets stored."""

from __future__ import annotations

import json

import httpx
import pytest

from bot import ids
from bot.domain import Status
from bot.providers.registry import PROVIDERS
from tests.e2e.conftest import Bot, CloudKey
from tests.e2e.helpers import (
    form_values,
    input_block,
    latest_message,
    open_create_form,
    stored,
    visible_text,
    wait_for_result,
    wait_until,
)
from tests.fakes.confluent_api import new_api_key, new_api_secret


def test_connections_lists_the_provider_cards_and_no_connections_yet(bot: Bot) -> None:
    response = bot.sender.command("")
    assert response.status_code == 200
    bot.slack.wait_for_hook()
    message = latest_message(bot.slack, bot.sender)
    assert message.ephemeral and message.user == bot.sender.user_id
    text = visible_text(message.blocks)
    assert "Connections" in text
    assert "Confluent Cloud" in text
    connect = [
        element
        for block in message.blocks
        for element in [block.get("accessory") or {}]
        if element.get("action_id") == ids.ACTION_CONNECT
    ]
    # One card per provider, in the registry's order, each with its Connect button.
    assert [c["value"] for c in connect] == [provider.key for provider in PROVIDERS]
    assert all(provider.title in text for provider in PROVIDERS)
    assert "no connections yet" in text.lower()


@pytest.mark.parametrize("text", ["help", "HELP"])
def test_help_explains_every_sub_command(bot: Bot, text: str) -> None:
    bot.sender.command(text)
    bot.slack.wait_for_hook()
    help_text = visible_text(latest_message(bot.slack, bot.sender).blocks)
    for sub_command in ("/connections help", "/connections connect", "/connections list"):
        assert sub_command in help_text
    assert "confluent_cloud" in help_text


def test_an_unknown_sub_command_gets_the_help_not_an_error(bot: Bot) -> None:
    bot.sender.command("frobnicate <!channel>")
    bot.slack.wait_for_hook()
    text = visible_text(latest_message(bot.slack, bot.sender).blocks)
    assert "frobnicate" in text
    assert "/connections help" in text
    assert "<!channel>" not in text


def test_connect_opens_the_create_confluent_cloud_modal_with_its_sections_in_order(bot: Bot) -> None:
    view_id = open_create_form(bot.slack, bot.sender)
    view = bot.slack.views[view_id]
    assert view["title"]["text"] == "Create Confluent Cloud"
    headers = [b["text"]["text"] for b in view["blocks"] if b["type"] == "header"]
    assert headers == ["Metadata", "Confluent Account", "Kafka cluster (optional)"]
    inputs = [b["block_id"] for b in view["blocks"] if b["type"] == "input"]
    assert inputs == [ids.BLOCK_NAME, "api_key", "api_secret", "rest_endpoint", "cluster_id"]
    assert "Production Confluent Cloud" in input_block(view, ids.BLOCK_NAME)["hint"]["text"]
    assert "API key" in input_block(view, "api_key")["hint"]["text"]
    assert "once" in input_block(view, "api_secret")["hint"]["text"]
    assert json.loads(view["private_metadata"]) == {"provider": "confluent_cloud"}


def test_connect_sub_command_opens_the_form_directly(bot: Bot) -> None:
    bot.sender.command("connect confluent_cloud")
    call = bot.slack.wait_for("views.open")[0]
    assert call.ok
    assert call.response["view"]["title"]["text"] == "Create Confluent Cloud"


def test_a_valid_submission_is_acked_with_verifying_before_confluent_answers(
    bot: Bot, cloud_key: CloudKey
) -> None:
    view_id = open_create_form(bot.slack, bot.sender)
    bot.confluent.hold()
    response = bot.sender.submit(
        view_id, form_values("Production Confluent Cloud", cloud_key.key, cloud_key.secret)
    )

    # Slack already has our answer while Confluent still holds the verification request.
    assert response.status_code == 200
    answer = response.json()
    assert answer["response_action"] == "update"
    assert "Verifying" in visible_text(answer["view"])
    assert "Verifying" in visible_text(bot.slack.views[view_id])
    wait_until(lambda: bot.confluent.held >= 1, what="the verification request to reach Confluent")
    assert stored(bot.database_url)["connections"] == []

    bot.confluent.release()
    result = visible_text(wait_for_result(bot.slack, view_id))
    assert "Cloud API key accepted" in result
    assert "3 environments" in result
    assert "approval" in result

    rows = stored(bot.database_url)
    [connection] = rows["connections"]
    assert connection.name == "Production Confluent Cloud"
    assert connection.status == Status.PENDING_APPROVAL
    assert connection.provider == "confluent_cloud"
    assert connection.key_hint == f"{cloud_key.key[:4]}…{cloud_key.key[-4:]}"
    assert sorted(c.field for c in rows["credentials"]) == ["api_key", "api_secret"]
    for credential in rows["credentials"]:
        assert cloud_key.secret.encode() not in credential.ciphertext
        assert cloud_key.key.encode() not in credential.ciphertext
    [verification] = rows["verifications"]
    assert verification.connection_id == connection.id
    assert [e.action for e in rows["audit_events"]] == ["connection.created"]
    assert rows["audit_events"][0].actor == bot.sender.user_id


def test_the_new_connection_is_listed_with_its_status(bot: Bot, cloud_key: CloudKey) -> None:
    view_id = open_create_form(bot.slack, bot.sender)
    bot.sender.submit(view_id, form_values("Analytics Cluster Credentials", cloud_key.key, cloud_key.secret))
    wait_for_result(bot.slack, view_id)
    hooks_before = len(bot.slack.hooks)
    bot.sender.command("")
    bot.slack.wait_for_hook(count=hooks_before + 1)
    text = visible_text(latest_message(bot.slack, bot.sender).blocks)
    assert "Analytics Cluster Credentials" in text
    assert "awaiting approval" in text
    assert cloud_key.key not in text


def mistyped(secret: str) -> str:
    """The secret with its last character changed, as a typo would."""
    return secret[:-1] + ("B" if secret[-1] == "A" else "A")


@pytest.mark.parametrize(
    ("values", "field", "words"),
    [
        (form_values("   ", new_api_key(), new_api_secret()), ids.BLOCK_NAME, "name"),
        (form_values("prod", "abcd1234", new_api_secret()), "api_key", "16"),
        (form_values("prod", new_api_key(), "short-secret"), "api_secret", "64"),
        (
            form_values("prod", new_api_key(), mistyped(new_api_secret())),
            "api_secret",
            "mistyped",
        ),
        (form_values("prod", new_api_secret(), new_api_key()), "api_key", "swapped"),
        (
            form_values("prod", new_api_key(), new_api_secret(), rest_endpoint="http://pkc-1.example.com"),
            "rest_endpoint",
            "https",
        ),
        (
            form_values(
                "prod",
                new_api_key(),
                new_api_secret(),
                rest_endpoint="https://pkc-1.example.com:443",
                cluster_id="cluster-1",
            ),
            "cluster_id",
            "lkc-",
        ),
        (
            form_values(
                "prod", new_api_key(), new_api_secret(), rest_endpoint="https://pkc-1.example.com:443"
            ),
            "cluster_id",
            "cluster",
        ),
        (
            form_values("prod", new_api_key(), new_api_secret(), cluster_id="lkc-abc123"),
            "rest_endpoint",
            "endpoint",
        ),
    ],
    ids=[
        "blank-name",
        "bad-key",
        "short-secret",
        "cflt-checksum",
        "swapped",
        "http-endpoint",
        "bad-cluster-id",
        "endpoint-without-cluster",
        "cluster-without-endpoint",
    ],
)
def test_offline_problems_come_back_inline_without_a_network_call(
    bot: Bot, values: dict[str, str], field: str, words: str
) -> None:
    view_id = open_create_form(bot.slack, bot.sender)
    response = bot.sender.submit(view_id, values)
    answer = response.json()
    assert answer["response_action"] == "errors"
    assert field in answer["errors"]
    assert words.lower() in answer["errors"][field].lower()
    assert bot.slack.view_errors[view_id][field] == answer["errors"][field]
    assert bot.confluent.requests == []
    assert stored(bot.database_url)["connections"] == []


def test_a_name_already_used_in_the_workspace_is_refused_inline_ignoring_case(
    bot: Bot, cloud_key: CloudKey
) -> None:
    first = open_create_form(bot.slack, bot.sender)
    bot.sender.submit(first, form_values("Prod Kafka", cloud_key.key, cloud_key.secret))
    wait_for_result(bot.slack, first)
    probes_before = len(bot.confluent.requests)

    second = open_create_form(bot.slack, bot.sender)
    answer = bot.sender.submit(second, form_values("prod KAFKA", new_api_key(), new_api_secret())).json()
    assert answer["response_action"] == "errors"
    assert "already exists" in answer["errors"][ids.BLOCK_NAME]
    assert len(bot.confluent.requests) == probes_before
    assert len(stored(bot.database_url)["connections"]) == 1


def test_healthz_reports_the_database_and_the_master_key(bot: Bot) -> None:
    response = httpx.get(f"{bot.url}/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "master_key": "ok"}
