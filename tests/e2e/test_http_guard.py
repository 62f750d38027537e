"""What anyone on the internet can send to ``POST /slack/events`` before it is authenticated, and
what a signed body that does not parse gets: the served bot, over loopback HTTP and raw sockets.

* a body over ``CONNECTIONS_MAX_BODY_BYTES`` is answered 413 before it is read whole, declared
  (``Content-Length``) or chunked, and memory does not grow with it;
* a request without a valid signature gets 401 and one WARNING that says why, at most once a
  minute per reason, never the body;
* a signed body that is not UTF-8, not JSON, nested too deep, not an object, or a form with no
  payload gets 400 and one WARNING, never a 500 or a traceback;
* ``/healthz`` reuses its answer for a few seconds, so probes cannot load the database pool.
"""

from __future__ import annotations

import io
import json
import select
import socket
import time
import tracemalloc
from collections.abc import Iterator
from urllib.parse import quote, urlsplit

import httpx
import pytest

from bot.app import BotApp
from bot.settings import Settings
from tests.e2e.conftest import SIGNING_SECRET, Bot
from tests.e2e.helpers import stored, wait_until
from tests.support.servers import serve_asgi
from tests.support.slack_requests import form_body, sign, slash_command

LIMIT = 1024 * 1024
MARKER = "marker-4f1c9b2e-never-logged"


def new_lines(bot: Bot, before: int) -> list[str]:
    return bot.log_text()[before:].splitlines()


def level_lines(lines: list[str], level: str) -> list[str]:
    return [line for line in lines if f" {level} " in line]


def raw_exchange(bot: Bot, head: bytes, body_chunks: Iterator[bytes]) -> bytes:
    """Send ``head`` and then ``body_chunks`` until the bot answers (or they run out); return the
    status line. The body is never finished, so an answer proves the bot did not wait for it."""
    where = urlsplit(bot.url)
    with socket.create_connection((where.hostname, where.port), timeout=10) as sock:
        sock.sendall(head)
        for chunk in body_chunks:
            if select.select([sock], [], [], 0)[0]:
                break  # answered
            sock.sendall(chunk)
        # A bot waiting for the rest of the body never answers: recv times out and the test fails.
        return sock.recv(200).split(b"\r\n", 1)[0]


def head(content_length: int | None = None) -> bytes:
    framing = (
        f"content-length: {content_length}" if content_length is not None else "transfer-encoding: chunked"
    )
    return (
        "POST /slack/events HTTP/1.1\r\nhost: bot\r\n"
        f"content-type: application/x-www-form-urlencoded\r\n{framing}\r\n\r\n"
    ).encode()


# --- bodies over the limit --------------------------------------------------------------------------


def test_a_declared_length_over_the_limit_is_refused_before_any_byte_of_the_body(bot: Bot) -> None:
    # Not one byte of the body is sent: only a bot that trusts nothing it has not read would wait.
    assert raw_exchange(bot, head(LIMIT + 1), iter(())) == b"HTTP/1.1 413 Request Entity Too Large"


def test_a_chunked_body_is_refused_once_it_passes_the_limit_without_waiting_for_the_rest(bot: Bot) -> None:
    chunk = b"a" * 65536
    framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    # Twice the limit, then nothing more and no final chunk: the answer must come before the end.
    chunks = iter([framed] * (2 * LIMIT // len(chunk)))
    assert raw_exchange(bot, head(), chunks) == b"HTTP/1.1 413 Request Entity Too Large"


def test_a_huge_chunked_body_is_refused_and_never_held_in_memory(bot: Bot) -> None:
    size = 64 * LIMIT

    def lazily() -> Iterator[bytes]:
        for _ in range(size // 65536):
            yield b"b" * 65536

    before = len(bot.log_text())
    tracemalloc.start()
    try:
        response = httpx.post(f"{bot.url}/slack/events", content=lazily(), timeout=60)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert response.status_code == 413
    # Everything in this process (the bot, its server, the client) together stayed far below
    # the 64 MiB sent: a bot that buffered the body would have held all of it at once.
    assert peak < 8 * LIMIT, f"{peak / LIMIT:.1f} MiB allocated at the peak"
    [line] = level_lines(new_lines(bot, before), "WARNING")
    assert "CONNECTIONS_MAX_BODY_BYTES" in line


def test_a_body_at_the_limit_is_read(bot: Bot) -> None:
    body = "x" * LIMIT
    assert bot.sender.post_raw(body, sign(body, "not-the-secret")).status_code == 401


# --- requests without a valid signature -------------------------------------------------------------


def forged_command() -> str:
    return form_body(
        slash_command(
            f"status {MARKER}",
            team_id="T0A1B2C3D4E",
            user_id="U0A1B2C3D4E",
            channel_id="C0A1B2C3D4E",
            response_url="https://hooks.slack.com/commands/x",
            trigger_id="1.2.3",
        )
    )


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ({"content-type": "application/x-www-form-urlencoded"}, "no X-Slack-Signature"),
        (
            {"x-slack-request-timestamp": "soon", "x-slack-signature": "v0=00"},
            "no X-Slack-Signature",
        ),
        (None, "s away from this host's clock"),
        ({}, "signature does not match"),
    ],
    ids=["missing", "not-a-number", "stale", "bad-signature"],
)
def test_each_refused_signature_logs_why_once_and_never_the_body(
    bot: Bot, headers: dict[str, str] | None, why: str
) -> None:
    body = forged_command()
    if headers is None:
        headers = sign(body, SIGNING_SECRET, timestamp=int(time.time()) - 600)
    elif not headers:
        headers = sign(body, "not-the-signing-secret")
    before = len(bot.log_text())

    assert bot.sender.post_raw(body, headers).status_code == 401

    lines = new_lines(bot, before)
    [line] = level_lines(lines, "WARNING")
    assert why in line
    if why == "signature does not match":
        assert "SLACK_SIGNING_SECRET" in line and "Basic Information" in line
    assert MARKER not in bot.log_text()
    assert bot.slack.calls_to("views.open") == [] and bot.slack.hooks == []


def test_a_flood_of_forged_requests_logs_a_bounded_number_of_lines(bot: Bot) -> None:
    body = forged_command()
    before = len(bot.log_text())
    for n in range(200):
        headers = sign(body, "forged") if n % 2 else {"content-type": "application/x-www-form-urlencoded"}
        assert bot.sender.post_raw(body, headers).status_code == 401

    lines = new_lines(bot, before)
    # One line per reason a minute: two reasons here, whatever the number of requests.
    assert 2 <= len(level_lines(lines, "WARNING")) <= 4, lines
    assert MARKER not in bot.log_text()
    assert stored(bot.database_url)["connections"] == []


# --- signed bodies that do not parse ---------------------------------------------------------------


def deep_json(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


SIGNED_GARBAGE = {
    "not UTF-8": (b"command=/connections&text=\xff\xfe\xc3(", "application/x-www-form-urlencoded"),
    "deep JSON body": (deep_json(50_000).encode(), "application/json"),
    "deep JSON payload": (
        ("payload=" + quote(deep_json(50_000))).encode(),
        "application/x-www-form-urlencoded",
    ),
    "JSON that is not JSON": (b'{"type": "event_callback", ', "application/json"),
    "a form without payload": (b"text=hello&user_id=U1", "application/x-www-form-urlencoded"),
    "an empty form": (b"", "application/x-www-form-urlencoded"),
    "a payload that is a list": (
        ("payload=" + quote(json.dumps([{"type": "block_actions"}]))).encode(),
        "application/x-www-form-urlencoded",
    ),
    "a payload that is a number": (b"payload=5", "application/x-www-form-urlencoded"),
    "a payload that is a string": (b"payload=%22block_actions%22", "application/x-www-form-urlencoded"),
    "a JSON body that is a list": (b"[1, 2]", "application/json"),
    "actions that are null": (
        ("payload=" + quote(json.dumps({"type": "block_actions", "actions": None}))).encode(),
        "application/x-www-form-urlencoded",
    ),
    "an event that is a list": (
        json.dumps({"type": "event_callback", "event": ["app_home_opened"]}).encode(),
        "application/json",
    ),
    "a team that is a number": (
        ("payload=" + quote(json.dumps({"type": "block_actions", "team": 5, "user": 7}))).encode(),
        "application/x-www-form-urlencoded",
    ),
}


@pytest.mark.parametrize("what", sorted(SIGNED_GARBAGE))
def test_a_signed_body_that_does_not_parse_gets_400_and_one_warning(bot: Bot, what: str) -> None:
    body, content_type = SIGNED_GARBAGE[what]
    before = len(bot.log_text())

    response = bot.sender.post_raw(body, {**sign(body, SIGNING_SECRET), "content-type": content_type})

    assert response.status_code == 400
    lines = new_lines(bot, before)
    assert len(level_lines(lines, "WARNING")) == 1, lines
    assert level_lines(lines, "ERROR") == [] and "Traceback" not in "\n".join(lines)
    assert bot.slack.calls_to("views.open") == [] and bot.slack.hooks == []


# --- /healthz --------------------------------------------------------------------------------------


def test_healthz_checks_once_for_many_probes(bot_settings: Settings, captured_logs: io.StringIO) -> None:
    # A window no run outlasts; that it ends is tests/unit/test_cached_call.py's business.
    app = BotApp(bot_settings, health_cache_seconds=3600)
    with serve_asgi(app) as url:
        services = app.services
        assert services is not None
        real = services.healthy
        checks: list[float] = []

        async def counted() -> dict[str, bool]:
            checks.append(time.monotonic())
            return await real()

        services.healthy = counted  # type: ignore[method-assign]
        with httpx.Client(base_url=url) as client:
            answers = [client.get("/healthz") for _ in range(20)]

    assert {a.status_code for a in answers} == {200}
    assert answers[-1].json() == {"status": "ok", "database": "ok", "master_key": "ok"}
    assert len(checks) == 1


def test_a_command_whose_text_holds_the_word_payload_is_still_a_command(bot: Bot) -> None:
    # Bolt reads any form with "payload" in it as an interaction; the command would be lost (400).
    response = bot.sender.command("status payload-db")

    assert response.status_code == 200
    wait_until(lambda: any("payload-db" in str(hook) for hook in bot.slack.hooks), what="the answer")
