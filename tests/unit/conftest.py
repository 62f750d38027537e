"""Fixtures for unit tests that start the whole app."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.slack_api import FakeSlack

RUNTIME_BOT_TOKEN = "xoxb-0000-runtime-test-token"


@pytest.fixture
def slack_api_url() -> Iterator[str]:
    """A fake Slack Web API for the app's start, which asks where the bot token is installed."""
    fake = FakeSlack(bot_token=RUNTIME_BOT_TOKEN)
    with fake.serve():
        yield fake.api_url
