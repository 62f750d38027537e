"""End-to-end fixtures: the bot served on loopback against a fake Slack and a fake Confluent Cloud.

Every test gets its own database (SQLite file or PostgreSQL database), its own fakes and its own
bot process state; logs from every logger are captured at DEBUG through the production logging
set-up, so tests can search them for secrets.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from bot.app import BotApp
from bot.crypto import MasterKey
from bot.logs import configure_logging
from bot.settings import Settings
from tests.fakes.confluent_api import FakeConfluent, new_api_key, new_api_secret
from tests.fakes.slack_api import FakeSlack
from tests.support.servers import serve_asgi
from tests.support.slack_requests import SlackSender

SIGNING_SECRET = "e2e-signing-secret-0123456789abcdef"


@dataclass
class Bot:
    """Everything a test drives or inspects."""

    url: str
    settings: Settings
    slack: FakeSlack
    confluent: FakeConfluent
    sender: SlackSender
    database_url: str
    logs: io.StringIO

    def log_text(self) -> str:
        return self.logs.getvalue()


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    fake = FakeSlack()
    with fake.serve():
        yield fake


@pytest.fixture
def fake_confluent() -> Iterator[tuple[FakeConfluent, str]]:
    fake = FakeConfluent()
    with serve_asgi(fake.app) as url:
        yield fake, url


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    stream = io.StringIO()
    configure_logging("DEBUG", stream=stream)
    try:
        yield stream
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved_handlers:
            root.addHandler(handler)
        root.setLevel(saved_level)


def bot_env(slack: FakeSlack, confluent_url: str, database_url: str, **extra: str) -> dict[str, str]:
    return {
        "SLACK_BOT_TOKEN": slack.bot_token,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": slack.api_url,
        "CONFLUENT_CLOUD_API_URL": confluent_url,
        "DATABASE_URL": database_url,
        "CONNECTIONS_MASTER_KEY": MasterKey.generate().to_base64().reveal(),
        **extra,
    }


@pytest.fixture
def bot_settings(
    fake_slack: FakeSlack, fake_confluent: tuple[FakeConfluent, str], migrated_database_url: str
) -> Settings:
    _, confluent_url = fake_confluent
    return Settings.from_mapping(
        bot_env(fake_slack, confluent_url, migrated_database_url, CONNECTIONS_ADMIN_CHANNEL="C0ADMINS01")
    )


@contextmanager
def running_bot(
    settings: Settings,
    slack: FakeSlack,
    confluent: FakeConfluent,
    logs: io.StringIO,
    *,
    drain_seconds: float = 5.0,
) -> Iterator[Bot]:
    """The bot served on loopback with ``settings``, and a sender that plays Slack."""
    with (
        serve_asgi(BotApp(settings, drain_seconds=drain_seconds)) as url,
        SlackSender(url, signing_secret=SIGNING_SECRET, fake=slack) as sender,
    ):
        yield Bot(
            url=url,
            settings=settings,
            slack=slack,
            confluent=confluent,
            sender=sender,
            database_url=settings.database_url,
            logs=logs,
        )


@pytest.fixture
def bot(
    bot_settings: Settings,
    fake_slack: FakeSlack,
    fake_confluent: tuple[FakeConfluent, str],
    captured_logs: io.StringIO,
) -> Iterator[Bot]:
    with running_bot(bot_settings, fake_slack, fake_confluent[0], captured_logs) as running:
        yield running


@dataclass(frozen=True)
class CloudKey:
    key: str
    secret: str


@pytest.fixture
def cloud_key(fake_confluent: tuple[FakeConfluent, str]) -> CloudKey:
    """A working Cloud API key whose owner sees three environments."""
    confluent, _ = fake_confluent
    key, secret = new_api_key(), new_api_secret()
    confluent.add_cloud_key(key, secret, environments=3)
    return CloudKey(key, secret)
