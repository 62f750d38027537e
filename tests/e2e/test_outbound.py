"""Where a typed host may send the bot, end to end: an address or a local name in the Confluent
form is an inline error and nothing is sent; a Confluent name that resolves to a private address
gets a clear result and no connection, at creation and at a re-test; an operator who widens the
policy gets the connection made to the checked address.

DNS is the test's: ``socket.getaddrinfo`` answers for the names below and passes anything else on,
so the bot's own resolver code runs unchanged."""

from __future__ import annotations

import io
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from bot.settings import Settings
from tests.e2e.conftest import Bot, CloudKey, bot_env, running_bot
from tests.e2e.helpers import form_values, open_create_form, stored, visible_text, wait_for_result
from tests.e2e.test_retests import new_key, retest, shown, store
from tests.fakes.confluent_api import FakeConfluent
from tests.fakes.slack_api import FakeSlack
from tests.support.block_text import as_read

CLUSTER = "lkc-abc123"
NAME = "pkc-e2e01.us-west4.gcp.confluent.cloud"
REFUSED = "resolves to an address the bot does not connect to"


class Dns:
    """What ``getaddrinfo`` answers for the test's names; every name it was asked for."""

    def __init__(self, real: Any) -> None:
        self.real, self.answers, self.asked = real, dict[str, str](), list[str]()

    def __call__(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        self.asked.append(name)
        if name in self.answers:
            return self.real(self.answers[name], port, *args, **kwargs)
        return self.real(host, port, *args, **kwargs)


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> Dns:
    fake = Dns(socket.getaddrinfo)
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return fake


class Listener:
    """A TCP port on 127.0.0.1 that counts the connections made to it and closes each at once (a
    TLS client then fails its handshake quickly)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.accepted = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()
        self._thread.join(5)


@pytest.fixture
def listener() -> Iterator[Listener]:
    found = Listener()
    yield found
    found.close()


def submitted(bot: Bot, key: CloudKey, endpoint: str) -> dict[str, Any]:
    view_id = open_create_form(bot.slack, bot.sender)
    values = form_values("Prod Kafka", key.key, key.secret, rest_endpoint=endpoint, cluster_id=CLUSTER)
    answer: dict[str, Any] = bot.sender.submit(view_id, values).json()
    if answer.get("response_action") == "update":
        return {"result": visible_text(wait_for_result(bot.slack, view_id)["blocks"])}
    return answer


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://127.0.0.1",
        "https://169.254.169.254",
        "https://[::1]",
        "https://10.0.0.1",
        "https://localhost",
        "https://0x7f.1",
        "https://2130706433",
    ],
)
def test_an_address_or_a_local_name_is_an_inline_error_and_nothing_is_sent(
    bot: Bot, cloud_key: CloudKey, dns: Dns, endpoint: str
) -> None:
    answer = submitted(bot, cloud_key, endpoint)
    assert answer["response_action"] == "errors"
    assert set(answer["errors"]) == {"rest_endpoint"}
    message = answer["errors"]["rest_endpoint"]
    assert "IP address" in message or "only resolves inside a private network" in message
    assert bot.confluent.requests == []  # not even the Cloud API
    # Not even looked up (the test's own clients look up 127.0.0.1, the fakes' address).
    assert not [name for name in dns.asked if name != "127.0.0.1" and name in endpoint]
    assert stored(bot.database_url)["connections"] == []


def test_a_name_outside_confluent_cloud_is_an_inline_error_by_default(bot: Bot, cloud_key: CloudKey) -> None:
    answer = submitted(bot, cloud_key, "https://pkc-1.kafka.corp.example")
    assert "ends in .confluent.cloud" in answer["errors"]["rest_endpoint"]
    assert bot.confluent.requests == []


@pytest.mark.parametrize("address", ["10.0.0.1", "127.0.0.1"])
def test_a_confluent_name_resolving_to_a_private_address_gets_a_clear_result_and_no_connection(
    bot: Bot, cloud_key: CloudKey, dns: Dns, listener: Listener, address: str
) -> None:
    dns.answers[NAME] = address
    answer = submitted(bot, cloud_key, f"https://{NAME}:{listener.port}")
    text = answer["result"]
    assert f"{NAME} {REFUSED}" in as_read(text)
    assert address not in text and "refused" not in text.lower() and "TLS" not in text
    assert NAME in dns.asked
    assert listener.accepted == 0
    assert bot.confluent.requests == []  # the key went nowhere, the Cloud API included
    assert stored(bot.database_url)["connections"] == []


def test_a_retest_of_an_endpoint_that_now_resolves_to_a_private_address_sends_no_credential(
    bot: Bot, dns: Dns, listener: Listener
) -> None:
    key = new_key(bot)
    store(
        bot,
        "Prod Kafka",
        key,
        config={"rest_endpoint": f"https://{NAME}:{listener.port}", "cluster_id": CLUSTER},
    )
    dns.answers[NAME] = "10.0.0.1"  # the name was public when stored; it now points inside

    _, result = retest(bot, "Prod Kafka")
    assert f"{NAME} {REFUSED}" in as_read(shown(result))
    assert listener.accepted == 0
    assert bot.confluent.requests == []  # no credential to the Cloud API either
    assert key.secret not in bot.log_text()


@pytest.fixture
def widened_bot(
    fake_slack: FakeSlack,
    fake_confluent: tuple[FakeConfluent, str],
    migrated_database_url: str,
    captured_logs: io.StringIO,
) -> Iterator[Bot]:
    env = bot_env(
        fake_slack,
        fake_confluent[1],
        migrated_database_url,
        CONFLUENT_REST_ALLOWED_HOSTS="*.kafka.corp.example",
        CONNECTIONS_ALLOW_PRIVATE_ADDRESSES="true",
    )
    with running_bot(Settings.from_mapping(env), fake_slack, fake_confluent[0], captured_logs) as bot:
        yield bot


def test_an_operator_who_widens_the_policy_gets_the_connection_made_to_the_checked_address(
    widened_bot: Bot, dns: Dns, listener: Listener
) -> None:
    key = new_key(widened_bot)
    name = "pkc-1.kafka.corp.example"
    dns.answers[name] = "127.0.0.1"
    text = submitted(widened_bot, key, f"https://{name}:{listener.port}")["result"]
    assert REFUSED not in text
    assert listener.accepted >= 1  # connected, at the address checked; the handshake then failed
    assert "couldn't reach" in text.lower()
