"""Where the bot token is installed (auth.test, bots.info against the fake Slack Web API) and
which payloads that lets through."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.installation import Installation, learn_installation
from tests.fakes.slack_api import FakeSlack
from tests.support.slack_requests import API_APP_ID, TEAM_ID

WORKSPACE = Installation(team_id="T1", enterprise_id=None, org_wide=False, app_id="A1")
GRID_WORKSPACE = Installation(team_id="T1", enterprise_id="E1", org_wide=False, app_id="A1")
ORG_WIDE = Installation(team_id="T1", enterprise_id="E1", org_wide=True, app_id="A1")


@pytest.mark.parametrize(
    ("installation", "team", "enterprise", "app", "refused"),
    [
        (WORKSPACE, "T1", None, "A1", False),
        (WORKSPACE, "T1", None, None, False),
        (WORKSPACE, "T2", None, "A1", True),
        (WORKSPACE, None, None, "A1", True),
        (WORKSPACE, "T1", "E9", "A1", True),
        (WORKSPACE, "T1", None, "A2", True),
        (GRID_WORKSPACE, "T1", "E1", "A1", False),
        (GRID_WORKSPACE, "T2", "E1", "A1", True),
        (GRID_WORKSPACE, "T1", None, "A1", True),
        (ORG_WIDE, "T7", "E1", "A1", False),
        (ORG_WIDE, "T1", "E2", "A1", True),
        (ORG_WIDE, "T1", None, "A1", True),
        (ORG_WIDE, "T7", "E1", "A2", True),
    ],
)
def test_only_the_tokens_own_installation_gets_through(
    installation: Installation, team: str | None, enterprise: str | None, app: str | None, refused: bool
) -> None:
    assert (installation.refusal(team, enterprise, app) is not None) == refused


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    fake = FakeSlack()
    with fake.serve():
        yield fake


async def test_a_workspace_install_is_learnt_with_its_app(fake: FakeSlack) -> None:
    client = AsyncWebClient(token=fake.bot_token, base_url=fake.api_url)
    assert await learn_installation(client) == Installation(TEAM_ID, None, False, API_APP_ID)


async def test_an_org_wide_install_is_learnt(fake: FakeSlack) -> None:
    fake.enterprise_id = "E0ORG000001"
    client = AsyncWebClient(token=fake.bot_token, base_url=fake.api_url)
    assert await learn_installation(client) == Installation(TEAM_ID, "E0ORG000001", True, API_APP_ID)


async def test_without_bots_info_the_workspace_is_still_learnt(
    fake: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    fake.fail_next("bots.info", "missing_scope", status=200, retry_after=None)
    client = AsyncWebClient(token=fake.bot_token, base_url=fake.api_url)
    assert await learn_installation(client) == Installation(TEAM_ID, None, False, None)
    assert "users:read" in caplog.text
