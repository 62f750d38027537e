"""Every provider through the whole journey, the same way: connect from its card, verify, approve,
re-test, fail and alert, rotate, approve the rotation, re-test with the new credential, remove.

Only a small driver per provider differs (how its fake accepts, breaks and replaces a credential);
the journey itself is written once, against the provider's declaration, which is the plug-in
contract's promise: a provider is one module plus its tests.
"""

from __future__ import annotations

import io
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import pytest
from cryptography.hazmat.primitives import serialization
from psycopg import sql

from bot import ids
from bot.domain import Health, RotationStatus, Status
from bot.providers.registry import PROVIDERS
from bot.settings import Settings
from tests.e2e.conftest import Bot, bot_env, running_bot
from tests.e2e.helpers import stored, visible_text, wait_for_result, wait_until
from tests.e2e.test_approvals import ADMIN, ADMIN_CHANNEL, REQUESTER, audit, click
from tests.e2e.test_rotation import connection, rotation_request_calls, rotation_status, updated_in_place
from tests.e2e.test_security import assert_not_leaked
from tests.fakes.confluent_api import FakeConfluent, new_api_key, new_api_secret
from tests.fakes.slack_api import FakeSlack, Message
from tests.fakes.snowflake_api import FakeSnowflake, new_rsa_key
from tests.support.databases import dump_database_text
from tests.support.private_postgres import PrivatePostgres
from tests.support.private_postgres import private_postgres_server as private_postgres_server
from tests.support.servers import serve_asgi
from tests.support.slack_requests import CHANNEL_ID, find_action

ALERTS = ADMIN_CHANNEL


@dataclass
class Credential:
    """Form values for one credential, and the secrets in them that must never show."""

    values: dict[str, str]
    secrets: list[str] = field(default_factory=list)


class Driver(Protocol):
    """What the journey needs from a provider's fake."""

    key: str

    def env(self) -> dict[str, str]:
        """Extra settings for the bot (where the provider's fake is)."""
        ...

    def new_credential(self) -> Credential:
        """A credential the fake accepts from now on."""
        ...

    def break_(self, credential: Credential) -> None:
        """Make ``credential`` stop working, as a revoked key or a changed password does."""
        ...


class ConfluentDriver:
    key = "confluent_cloud"

    def __init__(self, fake: FakeConfluent, url: str) -> None:
        self.fake, self.url = fake, url

    def env(self) -> dict[str, str]:
        return {}

    def new_credential(self) -> Credential:
        key, secret = new_api_key(), new_api_secret()
        self.fake.add_cloud_key(key, secret, environments=2)
        return Credential({"api_key": key, "api_secret": secret}, [key, secret])

    def break_(self, credential: Credential) -> None:
        self.fake.revoke_key(credential.values["api_key"])


class RedshiftDriver:
    """A private PostgreSQL with password authentication stands in for the cluster; the bot is
    told to connect there (REDSHIFT_CONNECT_TO) without TLS (REDSHIFT_SSLMODE), as only tests do."""

    key = "redshift"
    endpoint = "examplecluster.abc123xyz789.us-west-2.redshift.amazonaws.com"

    def __init__(self, server: PrivatePostgres) -> None:
        self.server = server
        self.database = f"journey_{secrets.token_hex(4)}"
        server.create_database(self.database)

    def env(self) -> dict[str, str]:
        return {
            "REDSHIFT_SSLMODE": "disable",
            "REDSHIFT_CONNECT_TO": f"{self.server.host}:{self.server.port}",
        }

    def new_credential(self) -> Credential:
        user, password = f"bot_{secrets.token_hex(4)}", secrets.token_urlsafe(18)
        self.server.create_role(user, password)
        values = {
            "endpoint": self.endpoint,
            "port": "5439",
            "database": self.database,
            "user": user,
            "password": password,
        }
        return Credential(values, [password])

    def break_(self, credential: Credential) -> None:
        statement = sql.SQL("ALTER ROLE {} PASSWORD {}").format(
            sql.Identifier(credential.values["user"]), sql.Literal(secrets.token_urlsafe(18))
        )
        self.server.execute(statement)


class SnowflakeDriver:
    """The fake SQL API on loopback; SNOWFLAKE_API_URL sends each account to its path prefix."""

    key = "snowflake"
    account_name = "myorg-journey"
    user_name = "SVC_JOURNEY"

    def __init__(self, fake: FakeSnowflake, url: str) -> None:
        self.fake, self.url = fake, url
        self.account = fake.add_account(self.account_name)
        self.user = fake.add_user(self.account, self.user_name)

    def env(self) -> dict[str, str]:
        return {"SNOWFLAKE_API_URL": f"{self.url}/{{account}}"}

    def new_credential(self) -> Credential:
        # A second key goes into the user's other slot, as RSA_PUBLIC_KEY_2 is used for rotation.
        key = new_rsa_key()
        self.user.public_keys.append(key.public_key())
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        values = {"account": self.account_name, "user": self.user_name, "private_key": pem}
        # The whole key, and one line of it: a partial leak must show too.
        return Credential(values, [pem, pem.splitlines()[5]])

    def break_(self, credential: Credential) -> None:
        pem = credential.values["private_key"].encode()
        public = serialization.load_pem_private_key(pem, password=None).public_key()
        numbers = public.public_numbers()  # type: ignore[union-attr]
        self.user.public_keys[:] = [k for k in self.user.public_keys if k.public_numbers() != numbers]


@pytest.fixture(params=[p.key for p in PROVIDERS])
def driver(request: pytest.FixtureRequest, fake_confluent: tuple[FakeConfluent, str]) -> Iterator[Driver]:
    if request.param == "confluent_cloud":
        yield ConfluentDriver(*fake_confluent)
    elif request.param == "redshift":
        yield RedshiftDriver(request.getfixturevalue("private_postgres"))
    elif request.param == "snowflake":
        fake = FakeSnowflake()
        with serve_asgi(fake.app) as url:
            yield SnowflakeDriver(fake, url)
    else:
        raise AssertionError(f"no journey driver for provider {request.param!r}: add one here")


@pytest.fixture
def jbot(
    driver: Driver,
    fake_slack: FakeSlack,
    fake_confluent: tuple[FakeConfluent, str],
    migrated_database_url: str,
    captured_logs: io.StringIO,
) -> Iterator[Bot]:
    env = bot_env(
        fake_slack,
        fake_confluent[1],
        migrated_database_url,
        CONNECTIONS_ADMIN_CHANNEL=ADMIN_CHANNEL,
        CONNECTIONS_ADMINS=ADMIN,
        **driver.env(),
    )
    with running_bot(Settings.from_mapping(env), fake_slack, fake_confluent[0], captured_logs) as bot:
        yield bot


# --- steps -------------------------------------------------------------------------------------------


def replies(bot: Bot, user: str = REQUESTER) -> list[str]:
    return [visible_text(m.blocks) for m in bot.slack.visible_messages(CHANNEL_ID, user) if m.ephemeral]


def command(bot: Bot, text: str, until: Callable[[str], bool], what: str) -> str:
    """Run ``/connections <text>`` as the requester; the first new reply ``until`` accepts."""
    before = len(replies(bot))
    assert bot.sender.command(text).status_code == 200
    wait_until(lambda: any(until(r) for r in replies(bot)[before:]), what=what)
    return next(r for r in replies(bot)[before:] if until(r))


def open_form_from_card(bot: Bot, key: str) -> str:
    """``/connections``, then Connect on ``key``'s card; the id of the modal that opens."""
    hooks = len(bot.slack.hooks)
    bot.sender.command("")
    bot.slack.wait_for_hook(count=hooks + 1)
    [listing] = [m for m in bot.slack.visible_messages(CHANNEL_ID, REQUESTER) if m.ephemeral][-1:]
    opened = len(bot.slack.calls_to("views.open"))
    bot.sender.action(ids.ACTION_CONNECT, key, on=listing)
    call = bot.slack.wait_for("views.open", count=opened + 1)[-1]
    assert call.ok, call.error
    return str(call.response["view"]["id"])


def approval_request(bot: Bot, connection_id: str) -> Message:
    def posted() -> list[Any]:
        found = []
        for call in bot.slack.calls_to("chat.postMessage"):
            if call.body.get("channel") != ADMIN_CHANNEL or not call.ok:
                continue
            try:
                _, button = find_action(call.body.get("blocks") or [], ids.ACTION_APPROVE)
            except ValueError:
                continue
            if button["value"] == connection_id:
                found.append(call)
        return found

    wait_until(lambda: posted(), what="the approval request")
    return bot.slack.message_of(posted()[-1])


def test_a_provider_goes_through_the_whole_journey(jbot: Bot, driver: Driver) -> None:
    provider = next(p for p in PROVIDERS if p.key == driver.key).from_environment({})
    name = f"Journey {provider.title}"

    # Create, from the provider's card.
    first = driver.new_credential()
    view_id = open_form_from_card(jbot, driver.key)
    assert jbot.slack.open_view(view_id)["title"]["text"] == f"Create {provider.title}"
    response = jbot.sender.submit(view_id, {ids.BLOCK_NAME: name, **first.values})
    assert response.json().get("response_action") == "update", response.text
    result = visible_text(wait_for_result(jbot.slack, view_id))
    assert "work" in result and "awaits an admin's approval" in result, result
    [row] = [c for c in stored(jbot.database_url)["connections"] if c.name == name]
    assert (row.provider, row.status) == (driver.key, Status.PENDING_APPROVAL)

    # Approve.
    click(jbot, ids.ACTION_APPROVE, row.id, approval_request(jbot, row.id), ADMIN)
    wait_until(lambda: connection(jbot, row.id).status == Status.ACTIVE, what="the approval")

    # Re-test: healthy.
    healthy = command(jbot, f"test {name}", lambda r: "works" in r or "failing" in r, "the re-test")
    assert "works" in healthy, healthy
    assert connection(jbot, row.id).health == Health.HEALTHY

    # The credential stops working: the re-test fails with hints, and one alert goes out.
    driver.break_(first)
    failing = command(jbot, f"test {name}", lambda r: "works" in r or "failing" in r, "the failing re-test")
    assert "failing" in failing, failing
    wait_until(lambda: connection(jbot, row.id).alert_ts is not None, what="the alert")
    alerts = [
        m for m in jbot.slack.messages if m.channel == ALERTS and name in m.text and "failing" in m.text
    ]
    assert len(alerts) == 1

    # Rotate to a new credential; an admin approves; the re-test works again, with the new one.
    second = driver.new_credential()
    opened = len(jbot.slack.calls_to("views.open"))
    jbot.sender.command(f"rotate {name}")
    call = jbot.slack.wait_for("views.open", count=opened + 1)[-1]
    assert call.ok, call.error
    rotation_view = str(call.response["view"]["id"])
    requests_before = len(rotation_request_calls(jbot))
    secret_names = {f.name for f in provider.fields if f.secret}
    answer = jbot.sender.submit(rotation_view, second.values)
    assert answer.json().get("response_action") == "update", answer.text
    assert "await an admin's approval" in visible_text(wait_for_result(jbot.slack, rotation_view))
    wait_until(lambda: len(rotation_request_calls(jbot)) > requests_before, what="the rotation request")
    request = jbot.slack.message_of(rotation_request_calls(jbot)[-1])
    _, approve = find_action(request.blocks, ids.ACTION_APPROVE_ROTATION)
    click(jbot, ids.ACTION_APPROVE_ROTATION, approve["value"], request, ADMIN)
    assert "Approved" in updated_in_place(jbot, request)
    assert rotation_status(jbot, approve["value"]) is RotationStatus.APPROVED
    again = command(
        jbot, f"test {name}", lambda r: "works" in r or "failing" in r, "the re-test after rotation"
    )
    assert "works" in again, again
    # The first credential's secrets are gone from the database.
    assert not [s for s in first.secrets if s in dump_database_text(jbot.database_url)]

    # Remove.
    prompt_text = command(jbot, f"remove {name}", lambda r: "Remove" in r, "the removal prompt")
    [prompt] = [
        m
        for m in jbot.slack.visible_messages(CHANNEL_ID, REQUESTER)
        if m.ephemeral and visible_text(m.blocks) == prompt_text
    ]
    click(jbot, ids.ACTION_REMOVE, row.id, prompt, REQUESTER)
    wait_until(lambda: connection(jbot, row.id).status == Status.REVOKED, what="the removal")
    assert [e.actor for e in audit(jbot, "connection.removed")] == [REQUESTER]
    assert stored(jbot.database_url)["credentials"] == []

    # No secret of either credential anywhere the bot wrote or sent.
    assert secret_names
    assert_not_leaked(jbot, *first.secrets, *second.secrets)
