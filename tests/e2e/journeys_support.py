"""What the journey tests share: a driver per provider (how its fake accepts, refuses, breaks and
replaces a credential), the bot they run against, and the Slack steps a user takes.

The journey itself is written against a provider's declaration, so a new provider needs only a
driver here (``open_driver`` fails for a provider without one).
"""

from __future__ import annotations

import io
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import pytest
from cryptography.hazmat.primitives import serialization
from psycopg import sql
from starlette.types import ASGIApp, Receive, Scope, Send

from bot import ids
from bot.settings import Settings
from tests.e2e.conftest import Bot, bot_env, running_bot
from tests.e2e.helpers import visible_text, wait_until
from tests.e2e.test_approvals import ADMIN, ADMIN_CHANNEL, REQUESTER
from tests.fakes.confluent_api import FakeConfluent, new_api_key, new_api_secret
from tests.fakes.slack_api import FakeSlack, Message
from tests.fakes.snowflake_api import FakeSnowflake, new_rsa_key, new_token
from tests.support.private_postgres import PrivatePostgres
from tests.support.servers import serve_asgi
from tests.support.slack_requests import CHANNEL_ID, find_action

__all__ = [
    "ConfluentDriver",
    "Credential",
    "Driver",
    "RedshiftDriver",
    "SnowflakeDriver",
    "SnowflakeTokenDriver",
    "approval_request",
    "command",
    "journey_bot",
    "open_driver",
    "open_form_from_card",
    "replies",
]


@dataclass
class Credential:
    """Form values for one credential, and the secrets in them that must never show (by label)."""

    values: dict[str, str]
    secrets: dict[str, str] = field(default_factory=dict)
    basic_auth: tuple[str, str] | None = None
    """(user, password) when the provider gets the credential in an HTTP Basic header."""


class Driver(Protocol):
    """What a journey needs from a provider's fake."""

    key: str

    @property
    def url(self) -> str | None:
        """Where the provider's fake answers HTTP; None for a provider reached otherwise."""
        ...

    def env(self) -> dict[str, str]:
        """Extra settings for the bot (where the provider's fake is)."""
        ...

    def new_credential(self) -> Credential:
        """A credential the fake accepts from now on."""
        ...

    def wrong_credential(self) -> Credential:
        """A credential that passes the form's offline checks but that the fake refuses."""
        ...

    def break_(self, credential: Credential) -> None:
        """Make ``credential`` stop working, as a revoked key or a changed password does."""
        ...

    def secrets_sent(self) -> dict[str, str]:
        """Secrets the bot made itself and sent to the provider (a key pair's JWTs), by label."""
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
        return self._credential(key, secret)

    def wrong_credential(self) -> Credential:
        key = new_api_key()
        self.fake.add_cloud_key(key, new_api_secret(), environments=2)
        # A real key with a secret Confluent never issued for it: a typo, as far as Confluent knows.
        return self._credential(key, new_api_secret())

    def break_(self, credential: Credential) -> None:
        self.fake.revoke_key(credential.values["api_key"])

    def secrets_sent(self) -> dict[str, str]:
        return {}

    @staticmethod
    def _credential(key: str, secret: str) -> Credential:
        return Credential(
            {"api_key": key, "api_secret": secret}, {"API key": key, "API secret": secret}, (key, secret)
        )


class RedshiftDriver:
    """A private PostgreSQL with password authentication stands in for the cluster; the bot is
    told to connect there (REDSHIFT_CONNECT_TO) without TLS (REDSHIFT_SSLMODE), as only tests do."""

    key = "redshift"
    url = None
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
        user, password = self._new_role()
        return self._credential(user, password)

    def wrong_credential(self) -> Credential:
        user, _ = self._new_role()
        return self._credential(user, secrets.token_urlsafe(18))

    def break_(self, credential: Credential) -> None:
        statement = sql.SQL("ALTER ROLE {} PASSWORD {}").format(
            sql.Identifier(credential.values["user"]), sql.Literal(secrets.token_urlsafe(18))
        )
        self.server.execute(statement)

    def secrets_sent(self) -> dict[str, str]:
        return {}

    def _new_role(self) -> tuple[str, str]:
        user, password = f"bot_{secrets.token_hex(4)}", secrets.token_urlsafe(18)
        self.server.create_role(user, password)
        return user, password

    def _credential(self, user: str, password: str) -> Credential:
        values = {
            "endpoint": self.endpoint,
            "port": "5439",
            "database": self.database,
            "user": user,
            "password": password,
        }
        return Credential(values, {"password": password})


class BearerRecorder:
    """Wraps a fake's ASGI app and keeps each bearer credential it is sent, so a test knows the
    values the bot minted itself (JWTs) and can look for them where they must not be."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.seen: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope.get("headers", []):
                scheme, _, bearer = value.decode("latin-1").partition(" ")
                if name.lower() == b"authorization" and scheme.lower() == "bearer" and bearer:
                    self.seen.append(bearer)
        await self.app(scope, receive, send)


class SnowflakeDriver:
    """The fake SQL API on loopback; SNOWFLAKE_API_URL sends each account to its path prefix.

    With ``passphrase``, every private key is an encrypted PKCS#8 key and its passphrase is one
    more secret to keep."""

    key = "snowflake"
    account_name = "myorg-journey"
    user_name = "SVC_JOURNEY"

    def __init__(
        self, fake: FakeSnowflake, url: str, recorder: BearerRecorder, *, passphrase: bool = False
    ) -> None:
        self.fake, self.url, self.recorder = fake, url, recorder
        self.passphrase = passphrase
        self.account = fake.add_account(self.account_name)
        self.user = fake.add_user(self.account, self.user_name)

    def env(self) -> dict[str, str]:
        return {"SNOWFLAKE_API_URL": f"{self.url}/{{account}}"}

    def new_credential(self) -> Credential:
        # A second key goes into the user's other slot, as RSA_PUBLIC_KEY_2 is used for rotation.
        key = new_rsa_key()
        self.user.public_keys.append(key.public_key())
        return self._credential(key)

    def wrong_credential(self) -> Credential:
        return self._credential(new_rsa_key())  # a key whose public half Snowflake does not know

    def break_(self, credential: Credential) -> None:
        pem = credential.values["private_key"].encode()
        password = credential.values.get("passphrase", "").encode() or None
        public = serialization.load_pem_private_key(pem, password=password).public_key()
        numbers = public.public_numbers()  # type: ignore[union-attr]
        self.user.public_keys[:] = [k for k in self.user.public_keys if k.public_numbers() != numbers]

    def secrets_sent(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for n, jwt in enumerate(dict.fromkeys(self.recorder.seen)):
            found[f"key-pair JWT #{n + 1}"] = jwt
            found[f"signature of key-pair JWT #{n + 1}"] = jwt.rsplit(".", 1)[-1]
        return found

    def _credential(self, key: Any) -> Credential:
        values = {"account": self.account_name, "user": self.user_name}
        hidden: dict[str, str] = {}
        encryption: serialization.KeySerializationEncryption = serialization.NoEncryption()
        if self.passphrase:
            values["passphrase"] = hidden["passphrase"] = f"pass {secrets.token_urlsafe(12)}"
            encryption = serialization.BestAvailableEncryption(values["passphrase"].encode())
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
        values["private_key"] = hidden["private key PEM"] = pem.decode()
        # Each body line on its own: a partial leak must show too. A short last line could turn
        # up anywhere by chance; the full lines before it cover the key.
        for n, line in enumerate(values["private_key"].splitlines()[1:-1]):
            if len(line) >= 16:
                hidden[f"private key PEM line {n + 1}"] = line
        return Credential(values, hidden)


class SnowflakeTokenDriver:
    """Snowflake with a programmatic access token instead of a key pair."""

    key = "snowflake"

    def __init__(self, fake: FakeSnowflake, url: str) -> None:
        self.fake, self.url = fake, url
        self.account = fake.add_account(SnowflakeDriver.account_name)
        self.user = fake.add_user(self.account, SnowflakeDriver.user_name)

    def env(self) -> dict[str, str]:
        return {"SNOWFLAKE_API_URL": f"{self.url}/{{account}}"}

    def new_credential(self) -> Credential:
        return self._credential(self.fake.add_token(self.user))

    def wrong_credential(self) -> Credential:
        return self._credential(new_token())

    def break_(self, credential: Credential) -> None:
        self.user.tokens.pop(credential.values["token"], None)

    def secrets_sent(self) -> dict[str, str]:
        return {}

    def _credential(self, token: str) -> Credential:
        values = {"account": SnowflakeDriver.account_name, "user": SnowflakeDriver.user_name, "token": token}
        return Credential(values, {"programmatic access token": token})


@contextmanager
def open_driver(
    variant: str, request: pytest.FixtureRequest, fake_confluent: tuple[FakeConfluent, str]
) -> Iterator[Driver]:
    """The driver named ``variant``: a provider key, or ``snowflake_passphrase`` (an encrypted key)
    or ``snowflake_token`` (a programmatic access token)."""
    if variant == "confluent_cloud":
        yield ConfluentDriver(*fake_confluent)
    elif variant == "redshift":
        yield RedshiftDriver(request.getfixturevalue("private_postgres"))
    elif variant in ("snowflake", "snowflake_passphrase", "snowflake_token"):
        fake = FakeSnowflake()
        recorder = BearerRecorder(fake.app)
        with serve_asgi(recorder) as url:
            if variant == "snowflake_token":
                yield SnowflakeTokenDriver(fake, url)
            else:
                yield SnowflakeDriver(fake, url, recorder, passphrase=variant == "snowflake_passphrase")
    else:
        raise AssertionError(f"no journey driver for provider {variant!r}: add one here")


@contextmanager
def journey_bot(
    driver: Driver,
    fake_slack: FakeSlack,
    fake_confluent: tuple[FakeConfluent, str],
    database_url: str,
    logs: io.StringIO,
    **extra: str,
) -> Iterator[Bot]:
    """The bot served with an admin channel and an admin, and pointed at the driver's fake;
    ``extra`` settings on top (a secret store's)."""
    env = bot_env(
        fake_slack,
        fake_confluent[1],
        database_url,
        CONNECTIONS_ADMIN_CHANNEL=ADMIN_CHANNEL,
        CONNECTIONS_ADMINS=ADMIN,
        **{**driver.env(), **extra},
    )
    with running_bot(Settings.from_mapping(env), fake_slack, fake_confluent[0], logs) as bot:
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
    """The request for ``connection_id`` that the bot posted to the admin channel."""

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
