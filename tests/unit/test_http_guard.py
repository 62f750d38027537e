"""The guard in front of Bolt, as an ASGI app driven by hand: how much of a body it pulls, what
it tells Bolt, and the rate of its log lines."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse

from bot.http_guard import SlackRequestGuard
from bot.log_throttle import LogThrottle
from tests.support.slack_requests import sign

SECRET = "unit-signing-secret"
LIMIT = 4096
NOW = 1_700_000_000


class Exchange:
    """One request: the chunks ``receive`` hands out (counted), and what the guard sent."""

    def __init__(self, chunks: list[bytes], headers: dict[str, str], *, endless: bool = False) -> None:
        self.chunks = chunks
        self.endless = endless
        self.pulled = 0
        self.sent: list[dict[str, Any]] = []
        self.headers = [(k.encode(), v.encode()) for k, v in headers.items()]

    async def receive(self) -> dict[str, Any]:
        self.pulled += 1
        if self.endless:
            return {"type": "http.request", "body": b"z" * 1000, "more_body": True}
        index = self.pulled - 1
        return {"type": "http.request", "body": self.chunks[index], "more_body": index < len(self.chunks) - 1}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    async def run(self, guard: SlackRequestGuard) -> Exchange:
        scope = {"type": "http", "method": "POST", "path": "/slack/events", "headers": self.headers}
        await guard(scope, self.receive, self.send)
        return self


class Bolt:
    def __init__(self) -> None:
        self.requests: list[AsyncBoltRequest] = []

    async def dispatch(self, request: AsyncBoltRequest) -> BoltResponse:
        self.requests.append(request)
        return BoltResponse(status=200, body="ok")


@pytest.fixture
def bolt() -> Bolt:
    return Bolt()


def guard_for(bolt: Bolt, throttle: LogThrottle | None = None) -> SlackRequestGuard:
    return SlackRequestGuard(
        bolt.dispatch, signing_secret=SECRET, max_body_bytes=LIMIT, clock=lambda: NOW, throttle=throttle
    )


async def test_it_stops_pulling_a_body_as_soon_as_it_passes_the_limit(bolt: Bolt) -> None:
    exchange = await Exchange([], {}, endless=True).run(guard_for(bolt))
    assert exchange.status == 413
    # 1,000 bytes a chunk: the fifth passes 4,096; a guard that read on would never return.
    assert exchange.pulled == 5
    assert bolt.requests == []


async def test_a_declared_length_over_the_limit_is_refused_without_pulling_anything(bolt: Bolt) -> None:
    exchange = await Exchange([], {"content-length": str(LIMIT + 1)}, endless=True).run(guard_for(bolt))
    assert (exchange.status, exchange.pulled) == (413, 0)


async def test_a_signed_body_in_pieces_reaches_bolt_whole(bolt: Bolt) -> None:
    body = "command=%2Fconnections&text=list&team_id=T1"
    headers = sign(body, SECRET, timestamp=NOW)
    exchange = await Exchange([body[:10].encode(), body[10:].encode()], headers).run(guard_for(bolt))
    assert exchange.status == 200
    [request] = bolt.requests
    assert request.raw_body == body and request.body["text"] == "list"


async def test_a_client_that_goes_away_is_answered_nothing(bolt: Bolt) -> None:
    sent: list[Any] = []

    async def gone() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        sent.append(message)

    await guard_for(bolt)({"type": "http", "headers": []}, gone, send)
    assert sent == [] and bolt.requests == []


async def test_a_stale_timestamp_is_told_from_a_bad_signature(
    bolt: Bolt, caplog: pytest.LogCaptureFixture
) -> None:
    body = "command=%2Fconnections"
    guard = guard_for(bolt)
    for timestamp in (NOW - 301, NOW + 301, NOW):
        headers = sign(body, SECRET if timestamp != NOW else "wrong", timestamp=timestamp)
        assert (await Exchange([body.encode()], headers).run(guard)).status == 401
    messages = [r.getMessage() for r in caplog.records]
    assert "301 s away" in messages[0] and "signature does not match" in messages[1]
    assert len(messages) == 2  # the second stale one falls in the first one's minute
    assert bolt.requests == []


def test_the_throttle_lets_one_line_a_minute_through_and_counts_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    throttle = LogThrottle(logging.getLogger("test.throttle"), interval=60, clock=lambda: now[0])
    for second in range(150):
        now[0] = float(second)
        throttle.warning("bad signature", "refused: %s", "bad signature")
        if second % 10 == 0:
            throttle.warning("stale", "refused: stale")

    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "refused: bad signature",
        "refused: stale",
        "refused: bad signature (59 more like it since the last such line were not logged)",
        "refused: stale (5 more like it since the last such line were not logged)",
        "refused: bad signature (59 more like it since the last such line were not logged)",
        "refused: stale (5 more like it since the last such line were not logged)",
    ]
