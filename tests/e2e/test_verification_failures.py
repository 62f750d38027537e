"""What a user reads when Confluent says no: plain words, hints for that outcome, Try again, and
nothing stored."""

from __future__ import annotations

import io
import socket
from typing import Any

import pytest

from bot import ids
from bot.settings import Settings
from tests.e2e.conftest import Bot, CloudKey, bot_env, running_bot
from tests.e2e.helpers import (
    form_values,
    input_block,
    open_create_form,
    stored,
    visible_text,
    wait_for_result,
    wait_until,
)
from tests.fakes.confluent_api import FakeConfluent, new_api_key, new_api_secret
from tests.fakes.slack_api import FakeSlack
from tests.support.slack_requests import find_action


def submit_and_read(bot: Bot, values: dict[str, str]) -> tuple[str, str]:
    view_id = open_create_form(bot.slack, bot.sender)
    answer = bot.sender.submit(view_id, values).json()
    assert answer["response_action"] == "update"
    return view_id, visible_text(wait_for_result(bot.slack, view_id))


def assert_nothing_stored_but_the_attempt(bot: Bot, outcome: str) -> None:
    rows = stored(bot.database_url)
    assert rows["connections"] == []
    assert rows["credentials"] == []
    assert rows["verifications"] == []
    [event] = rows["audit_events"]
    assert (event.action, event.reason, event.connection_id) == ("connection.create_failed", outcome, None)


def test_a_rejected_key_gets_the_typo_wrong_kind_and_propagation_hints(bot: Bot, cloud_key: CloudKey) -> None:
    _, text = submit_and_read(bot, form_values("prod", cloud_key.key, new_api_secret()))
    assert "Check both for typos, a missing or extra character" in text
    # The wrong kind of key, both ways round: a cluster key given to the Cloud API, and a Cloud key
    # given to a cluster; then what to do when it is a cluster key.
    assert "a Kafka cluster key is rejected by the Cloud API" in text
    assert "a Cloud resource management key is rejected by a Kafka cluster" in text
    assert (
        "If this is a Kafka cluster key, fill in the cluster's REST endpoint and cluster ID, "
        "or create a key for Cloud resource management instead." in text
    )
    assert "Keys created in the last few minutes may still be propagating" in text
    assert "*Nothing was saved.*" in text
    assert_nothing_stored_but_the_attempt(bot, "unauthorized")


def test_a_key_whose_owner_lacks_a_role_gets_the_rbac_hint(bot: Bot) -> None:
    key, secret = new_api_key(), new_api_secret()
    bot.confluent.add_cloud_key(key, secret, role=False)
    _, text = submit_and_read(bot, form_values("prod", key, secret))
    assert "RBAC" in text
    for role in ("OrganizationAdmin", "EnvironmentAdmin", "CloudClusterAdmin"):
        assert role in text
    assert "accepted" in text.lower()
    assert_nothing_stored_but_the_attempt(bot, "forbidden")


def test_rate_limiting_after_the_retries_gets_its_own_hint(bot: Bot, cloud_key: CloudKey) -> None:
    bot.confluent.fail_next("/org/v2/environments", 429, times=3, retry_after=0)
    _, text = submit_and_read(bot, form_values("prod", cloud_key.key, cloud_key.secret))
    assert "Confluent Cloud is rate-limiting us." in text
    assert "• Confluent is rate-limiting us; try again in a minute." in text
    assert "The limit is shared by every caller of the key's organization" in text
    # Two retries, then the third 429 is the answer.
    assert len(bot.confluent.requests_to("/org/v2/environments")) == 3
    assert_nothing_stored_but_the_attempt(bot, "rate_limited")


def test_a_provider_error_shows_the_request_id(bot: Bot, cloud_key: CloudKey) -> None:
    bot.confluent.fail_next("/org/v2/environments", 500, times=2)
    _, text = submit_and_read(bot, form_values("prod", cloud_key.key, cloud_key.secret))
    # One retry, then the second 500 is the answer.
    assert len(bot.confluent.requests_to("/org/v2/environments")) == 2
    request_id = bot.confluent.request_ids[-1]
    assert "Confluent Cloud had a server error." in text
    assert f"• Confluent returned a server error (request id {request_id}); try again later." in text
    # A hint is the bot's own mrkdwn: its link to the status page stays a link.
    assert "check https://status.confluent.cloud and give Confluent support the request id" in text
    assert f"Confluent Cloud request id: `{request_id}`" in text
    assert_nothing_stored_but_the_attempt(bot, "provider_error")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_unreachable_api_gets_the_network_hint(
    fake_slack: FakeSlack, migrated_database_url: str, captured_logs: io.StringIO
) -> None:
    settings = Settings.from_mapping(
        bot_env(fake_slack, f"http://127.0.0.1:{_closed_port()}", migrated_database_url)
    )
    with running_bot(settings, fake_slack, FakeConfluent(), captured_logs) as bot:
        _, text = submit_and_read(bot, form_values("prod", new_api_key(), new_api_secret()))
        assert "reach" in text.lower()
        assert "private networking" in text.lower()
        assert_nothing_stored_but_the_attempt(bot, "unreachable")


def test_try_again_reopens_the_form_with_the_name_kept_and_never_the_key_or_secret(
    bot: Bot, cloud_key: CloudKey
) -> None:
    wrong_secret = new_api_secret()
    view_id, _ = submit_and_read(bot, form_values("Production Confluent Cloud", cloud_key.key, wrong_secret))
    result = bot.slack.views[view_id]
    _block_id, button = find_action(result["blocks"], ids.ACTION_TRY_AGAIN)
    assert button["text"]["text"] == "Try again"
    assert cloud_key.key not in button["value"] and wrong_secret not in button["value"]

    bot.sender.action(ids.ACTION_TRY_AGAIN, on=view_id)
    wait_for_result(bot.slack, view_id, count=2)
    form = bot.slack.views[view_id]
    assert form["callback_id"] == ids.VIEW_CREATE
    assert input_block(form, ids.BLOCK_NAME)["element"]["initial_value"] == "Production Confluent Cloud"
    assert "initial_value" not in input_block(form, "api_key")["element"]
    assert "initial_value" not in input_block(form, "api_secret")["element"]
    assert cloud_key.key not in str(form) and wrong_secret not in str(form)

    # The user types the right secret this time; the connection is created.
    answer = bot.sender.submit(view_id, {"api_key": cloud_key.key, "api_secret": cloud_key.secret}).json()
    assert answer["response_action"] == "update"
    text = visible_text(wait_for_result(bot.slack, view_id, count=3))
    assert "Cloud API key accepted" in text
    [connection] = stored(bot.database_url)["connections"]
    assert connection.name == "Production Confluent Cloud"


def test_the_result_arrives_as_a_direct_message_when_the_modal_was_closed(
    bot: Bot, cloud_key: CloudKey
) -> None:
    view_id = open_create_form(bot.slack, bot.sender)
    bot.slack.fail_next("views.update", error="not_found", status=200, retry_after=None)
    bot.sender.submit(view_id, form_values("prod", cloud_key.key, cloud_key.secret))

    def dms() -> list[Any]:
        return [
            c for c in bot.slack.calls_to("chat.postMessage") if c.body.get("channel") == bot.sender.user_id
        ]

    wait_until(lambda: dms(), what="the direct message")
    [dm] = dms()
    assert dm.ok
    assert "Cloud API key accepted" in visible_text(dm.body.get("blocks"))
    assert len(stored(bot.database_url)["connections"]) == 1


@pytest.mark.parametrize("secret_kind", ["legacy", "cflt"])
def test_both_secret_formats_verify(bot: Bot, secret_kind: str) -> None:
    key, secret = new_api_key(), new_api_secret(legacy=secret_kind == "legacy")
    bot.confluent.add_cloud_key(key, secret)
    _, text = submit_and_read(bot, form_values(f"prod {secret_kind}", key, f"  {secret}\n"))
    assert "Cloud API key accepted" in text
