"""Requests Slack did not sign are refused, and a key or secret never leaves in plain text:
not in a log line, a Slack call, a view, or the database."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from urllib.parse import quote, quote_plus

from bot import ids
from tests.e2e.conftest import SIGNING_SECRET, Bot, CloudKey
from tests.e2e.helpers import form_values, open_create_form, stored, wait_for_result
from tests.fakes.confluent_api import new_api_key, new_api_secret
from tests.support.databases import dump_database_text, raw_sqlite_bytes, sqlite_path
from tests.support.slack_requests import payload_body, sign, view_submission

_URLSAFE = str.maketrans("+/", "-_")
_LAYOUT = re.compile(r"\s+|\\[nr]")  # line breaks, raw or JSON-escaped, as wrapped base64 has them
_SHORTEST = 8  # a shorter value turns up by chance in megabytes of logs and base64


def base64_cores(data: bytes) -> dict[str, str]:
    """What ``data`` turns into wherever it sits inside a larger base64 blob (form -> its name).

    Base64 writes each 3 bytes as 4 characters, so the characters for ``data`` depend on where it
    starts in the blob, modulo 3, and the first and last characters can mix its bits with a
    neighbour's. For each of the 3 alignments only the characters made of ``data``'s bits alone
    are kept; one of them is in any blob that holds ``data``, in either alphabet.
    """
    cores: dict[str, str] = {}
    for offset in range(3):
        encoded = base64.b64encode(bytes(offset) + data).decode()
        core = encoded[(8 * offset + 5) // 6 : 8 * (offset + len(data)) // 6]
        cores.setdefault(core, f"base64 at offset {offset}")
        cores.setdefault(core.translate(_URLSAFE), f"URL-safe base64 at offset {offset}")
    return cores


def secret_forms(value: str) -> dict[str, str]:
    """The ways ``value`` could show up (form -> its name): as is, URL-, form- and JSON-encoded
    (once, twice, JSON inside a form field), and base64 (alone, and inside any larger blob)."""
    escaped = json.dumps(value)[1:-1]
    candidates = [
        (value, "plain text"),
        (quote(value, safe=""), "URL-encoded"),
        (quote_plus(value), "form-encoded"),
        (escaped, "JSON-escaped"),
        (json.dumps(escaped)[1:-1], "JSON-escaped twice"),
        (quote_plus(escaped), "JSON-escaped and form-encoded"),
        (base64.b64encode(value.encode()).decode(), "base64"),
        (base64.urlsafe_b64encode(value.encode()).decode(), "URL-safe base64"),
        *base64_cores(value.encode()).items(),
    ]
    forms: dict[str, str] = {}
    for form, name in candidates:
        forms.setdefault(form, name)  # the simplest name for forms that coincide
    return forms


def basic_auth_forms(user: str, password: str) -> dict[str, str]:
    """``user:password`` as an HTTP Basic header carries it, in both alphabets."""
    pair = f"{user}:{password}".encode()
    forms = {base64.b64encode(pair).decode(): "Basic auth header"}
    forms.setdefault(base64.urlsafe_b64encode(pair).decode(), "URL-safe Basic auth")
    return forms


def find_leaks(
    outputs: Mapping[str, str],
    secrets: Mapping[str, str],
    basic_auth: Iterable[tuple[str, str]] = (),
) -> list[str]:
    """Where each secret (label -> value) shows up in ``outputs`` (name -> text), in any form of
    :func:`secret_forms` or as a Basic auth pair; one line per finding, naming no secret."""
    short = [label for label, value in secrets.items() if len(value) < _SHORTEST]
    if short:
        raise ValueError(f"too short to search for without false alarms: {short}")
    searches = [(label, secret_forms(value)) for label, value in secrets.items()]
    searches += [
        (f"Basic auth pair #{n + 1}", basic_auth_forms(user, password))
        for n, (user, password) in enumerate(basic_auth)
    ]
    found: list[str] = []
    for where, text in outputs.items():
        # Base64 is also looked for with line breaks taken out: a wrapped blob splits its forms.
        unwrapped = _LAYOUT.sub("", text)
        for label, forms in searches:
            for form, how in forms.items():
                if form in text or ("base64" in how.lower() and form in unwrapped):
                    found.append(f"{label} ({how}) in the {where}")
    return found


def leaked_forms(*values: str) -> list[str]:
    """Every form :func:`find_leaks` looks for, for ``values`` (and a pair of them as Basic auth)."""
    forms = [form for value in values for form in secret_forms(value)]
    if len(values) == 2:
        forms += list(basic_auth_forms(*values))
    return forms


def everything_the_bot_emitted(bot: Bot) -> dict[str, str]:
    """Everything the bot wrote or sent, by where: logs, Slack calls (headers included; the bot
    token is no provider secret), response_url posts, views and messages as users see them, and
    the database (every row, and SQLite's files byte for byte)."""
    outputs = {
        "logs": bot.log_text(),
        "slack calls": json.dumps(
            [(c.method, c.headers, c.body, c.response) for c in bot.slack.calls], default=str
        ),
        "response_url posts": json.dumps([h.body for h in bot.slack.hooks], default=str),
        "views": json.dumps([bot.slack.views, bot.slack.view_errors], default=str),
        "messages": json.dumps([asdict(m) for m in bot.slack.messages], default=str),
        "database": dump_database_text(bot.database_url),
        # The provider itself is the one place the key and secret must go (in the Basic header).
    }
    if bot.database_url.startswith("sqlite"):
        outputs["database file"] = raw_sqlite_bytes(sqlite_path(bot.database_url)).decode("latin-1")
    return outputs


def assert_not_leaked(bot: Bot, *values: str) -> None:
    pairs = [(values[0], values[1])] if len(values) == 2 else []
    labels = {f"secret #{n + 1}": value for n, value in enumerate(values)}
    leaks = find_leaks(everything_the_bot_emitted(bot), labels, pairs)
    assert not leaks, "a secret appeared: " + "; ".join(leaks)


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
