"""SlackGroupDirectory against the fake Slack Web API served on loopback."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Iterator

import pytest
from slack_sdk.web.async_client import AsyncWebClient
from starlette.types import ASGIApp, Receive, Scope, Send

from bot.services.admins import DirectoryUnavailable
from bot.slack_directory import SlackGroupDirectory
from tests.fakes.slack_api import FakeSlack
from tests.support.servers import serve_asgi

GROUP = "S0123ABCD"


@pytest.fixture
def fake() -> FakeSlack:
    fake = FakeSlack()
    fake.usergroups[GROUP] = ["U1", "U2"]
    return fake


@pytest.fixture
def served(fake: FakeSlack) -> Iterator[FakeSlack]:
    with fake.serve():
        yield fake


@pytest.fixture
async def client(served: FakeSlack) -> AsyncIterator[AsyncWebClient]:
    yield AsyncWebClient(token=served.bot_token, base_url=served.api_url)


async def test_members_are_the_groups_users(served: FakeSlack, client: AsyncWebClient) -> None:
    members = await SlackGroupDirectory(client).members(GROUP)

    assert members == frozenset({"U1", "U2"})
    (call,) = served.calls_to("usergroups.users.list")
    assert call.ok
    assert call.body["usergroup"] == GROUP
    assert call.body["include_disabled"] in ("0", "false")


async def test_membership_changes_are_seen_by_the_next_lookup(
    served: FakeSlack, client: AsyncWebClient
) -> None:
    directory = SlackGroupDirectory(client)
    assert await directory.members(GROUP) == {"U1", "U2"}

    served.usergroups[GROUP] = ["U3"]

    assert await directory.members(GROUP) == {"U3"}


async def test_a_slack_error_becomes_unavailable_with_its_code(
    served: FakeSlack, client: AsyncWebClient
) -> None:
    served.fail_next("usergroups.users.list", error="missing_scope", status=200, retry_after=None)

    with pytest.raises(DirectoryUnavailable) as caught:
        await SlackGroupDirectory(client).members(GROUP)

    assert caught.value.reason == "missing_scope"
    assert caught.value.__cause__ is None  # the SlackApiError (with the request) is not carried along


async def test_rate_limiting_is_reported_as_such(served: FakeSlack, client: AsyncWebClient) -> None:
    served.fail_next("usergroups.users.list", error="ratelimited", status=429, retry_after=30)

    with pytest.raises(DirectoryUnavailable) as caught:
        await SlackGroupDirectory(client).members(GROUP)

    assert caught.value.reason == "ratelimited"


async def test_an_unknown_group_is_slacks_error(served: FakeSlack, client: AsyncWebClient) -> None:
    with pytest.raises(DirectoryUnavailable) as caught:
        await SlackGroupDirectory(client).members("S0NOSUCH0")

    assert caught.value.reason == "no_such_subteam"


async def test_a_rejected_token_is_slacks_error(served: FakeSlack) -> None:
    client = AsyncWebClient(token="xoxb-not-the-right-token", base_url=served.api_url)

    with pytest.raises(DirectoryUnavailable) as caught:
        await SlackGroupDirectory(client).members(GROUP)

    assert caught.value.reason == "invalid_auth"
    assert "xoxb-not-the-right-token" not in str(caught.value)


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/api/"


async def test_nothing_listening_is_unreachable() -> None:
    client = AsyncWebClient(token="xoxb-fake-bot-token", base_url=closed_port_url())

    with pytest.raises(DirectoryUnavailable) as caught:
        await SlackGroupDirectory(client).members(GROUP)

    assert caught.value.reason == "unreachable"


class Held:
    """Wraps an ASGI app and holds every request until released (a Slack that does not answer)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.release = threading.Event()
        self.arrived = threading.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.arrived.set()
            # Polling a thread-safe event: the test's loop and the server's loop are different.
            while not self.release.is_set():
                await asyncio.sleep(0.01)
        await self.app(scope, receive, send)


async def test_a_slack_that_does_not_answer_times_out(fake: FakeSlack) -> None:
    held = Held(fake.app)
    with serve_asgi(held) as url:
        try:
            # The client would wait an hour: only the directory's own deadline can end the lookup.
            client = AsyncWebClient(token=fake.bot_token, base_url=f"{url}/api/", timeout=3600)
            lookup = SlackGroupDirectory(client, timeout_seconds=0.2).members(GROUP)
            with pytest.raises(DirectoryUnavailable) as caught:
                # A guard against hanging, not a timing assertion: tripping it fails the test.
                await asyncio.wait_for(lookup, timeout=30)
        finally:
            held.release.set()

    assert caught.value.reason == "timeout"
    assert held.arrived.is_set()  # it was the wait for an answer that timed out, not the connection


def test_a_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="timeout_seconds"):
        SlackGroupDirectory(AsyncWebClient(token="xoxb-x"), timeout_seconds=0)
