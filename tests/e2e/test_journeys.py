"""Every provider through the whole journey, the same way: connect from its card, verify, approve,
re-test, fail and alert, rotate, approve the rotation, re-test with the new credential, remove.

Only a small driver per provider differs (how its fake accepts, breaks and replaces a credential,
in journeys_support);
the journey itself is written once, against the provider's declaration, which is the plug-in
contract's promise: a provider is one module plus its tests.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest

from bot import ids
from bot.domain import Health, RotationStatus, Status
from bot.providers.registry import PROVIDERS
from tests.e2e.conftest import Bot
from tests.e2e.helpers import stored, visible_text, wait_for_result, wait_until
from tests.e2e.journeys_support import (
    Driver,
    approval_request,
    command,
    journey_bot,
    open_driver,
    open_form_from_card,
)
from tests.e2e.test_approvals import ADMIN, ADMIN_CHANNEL, REQUESTER, audit, click
from tests.e2e.test_rotation import connection, rotation_request_calls, rotation_status, updated_in_place
from tests.e2e.test_security import assert_not_leaked
from tests.fakes.confluent_api import FakeConfluent
from tests.fakes.slack_api import FakeSlack
from tests.support.databases import dump_database_text
from tests.support.private_postgres import private_postgres_server as private_postgres_server
from tests.support.slack_requests import CHANNEL_ID, find_action

ALERTS = ADMIN_CHANNEL


@pytest.fixture(params=[p.key for p in PROVIDERS])
def driver(request: pytest.FixtureRequest, fake_confluent: tuple[FakeConfluent, str]) -> Iterator[Driver]:
    with open_driver(request.param, request, fake_confluent) as opened:
        yield opened


@pytest.fixture
def jbot(
    driver: Driver,
    fake_slack: FakeSlack,
    fake_confluent: tuple[FakeConfluent, str],
    migrated_database_url: str,
    captured_logs: io.StringIO,
) -> Iterator[Bot]:
    with journey_bot(driver, fake_slack, fake_confluent, migrated_database_url, captured_logs) as bot:
        yield bot


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
    assert not [s for s in first.secrets.values() if s in dump_database_text(jbot.database_url)]

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
    assert_not_leaked(jbot, *first.secrets.values(), *second.secrets.values())
