"""Requests Slack did not sign are refused, and a key or secret never leaves in plain text:
not in a log line, a Slack call, a view, or the database."""

from __future__ import annotations

import base64
import json
import time
from urllib.parse import quote, quote_plus

from bot import ids
from tests.e2e.conftest import SIGNING_SECRET, Bot, CloudKey
from tests.e2e.helpers import form_values, open_create_form, stored, wait_for_result
from tests.fakes.confluent_api import new_api_key, new_api_secret
from tests.support.databases import dump_database_text, raw_sqlite_bytes, sqlite_path
from tests.support.slack_requests import payload_body, sign, view_submission


def leaked_forms(*values: str) -> list[str]:
    """The ways a value could show up: as is, URL- and JSON-encoded, and inside a Basic header."""
    forms: list[str] = []
    for value in values:
        forms += [value, quote(value, safe=""), quote_plus(value), json.dumps(value)[1:-1]]
    if len(values) == 2:
        forms.append(base64.b64encode(f"{values[0]}:{values[1]}".encode()).decode())
    return forms


def everything_the_bot_emitted(bot: Bot) -> dict[str, str]:
    outputs = {
        "logs": bot.log_text(),
        "slack calls": json.dumps([(c.method, c.body, c.response) for c in bot.slack.calls], default=str),
        "response_url posts": json.dumps([h.body for h in bot.slack.hooks], default=str),
        "views": json.dumps(bot.slack.views, default=str),
        "database": dump_database_text(bot.database_url),
        # The provider itself is the one place the key and secret must go (in the Basic header).
    }
    if bot.database_url.startswith("sqlite"):
        outputs["database file"] = raw_sqlite_bytes(sqlite_path(bot.database_url)).decode("latin-1")
    return outputs


def assert_not_leaked(bot: Bot, *values: str) -> None:
    for where, text in everything_the_bot_emitted(bot).items():
        for form in leaked_forms(*values):
            assert form not in text, f"a secret appeared in the {where}"


def test_a_forged_signature_and_a_stale_timestamp_are_refused_without_logging_the_body(bot: Bot) -> None:
    view_id = open_create_form(bot.slack, bot.sender)
    key, secret = new_api_key(), new_api_secret()
    payload = view_submission(
        bot.slack.open_view(view_id),
        form_values("prod", key, secret),
        user_id=bot.sender.user_id,
        team_id=bot.sender.team_id,
    )
    body = payload_body(payload)

    forged = sign(body, "not-the-signing-secret")
    assert bot.sender.post_raw(body, forged).status_code == 401
    stale = sign(body, SIGNING_SECRET, timestamp=int(time.time()) - 301)
    assert bot.sender.post_raw(body, stale).status_code == 401
    unsigned = {"content-type": "application/x-www-form-urlencoded"}
    assert bot.sender.post_raw(body, unsigned).status_code == 401

    assert bot.confluent.requests == []
    assert stored(bot.database_url)["connections"] == []
    assert_not_leaked(bot, key, secret)


def test_no_key_or_secret_leaks_through_a_success_a_failure_and_a_retry(
    bot: Bot, cloud_key: CloudKey
) -> None:
    # A failure first (wrong secret), then Try again with the right one.
    wrong_secret = new_api_secret()
    view_id = open_create_form(bot.slack, bot.sender)
    bot.sender.submit(view_id, form_values("Production Confluent Cloud", cloud_key.key, wrong_secret))
    wait_for_result(bot.slack, view_id)
    bot.sender.action(ids.ACTION_TRY_AGAIN, on=view_id)
    wait_for_result(bot.slack, view_id, count=2)
    bot.sender.submit(view_id, {"api_key": cloud_key.key, "api_secret": cloud_key.secret})
    wait_for_result(bot.slack, view_id, count=3)
    # And the list, which shows the masked key hint.
    bot.sender.command("")
    bot.slack.wait_for_hook(count=2)

    assert len(stored(bot.database_url)["credentials"]) == 2
    assert_not_leaked(bot, cloud_key.key, cloud_key.secret)
    assert_not_leaked(bot, cloud_key.key, wrong_secret)
    # The proof has teeth: the logs did record the journey, and the masked hint is shown.
    assert "connection" in bot.log_text()
    assert f"{cloud_key.key[:4]}…{cloud_key.key[-4:]}" in json.dumps(
        [h.body for h in bot.slack.hooks], ensure_ascii=False
    )


def test_the_search_would_find_a_leak(bot: Bot) -> None:
    """Guard against a vacuous search: a value we put in the logs on purpose is found."""
    marker = new_api_secret()
    bot.logs.write(f"planted {quote(marker, safe='')}\n")
    try:
        assert_not_leaked(bot, marker)
    except AssertionError as exc:
        assert "logs" in str(exc)
    else:
        raise AssertionError("the leak search did not find a planted value")
