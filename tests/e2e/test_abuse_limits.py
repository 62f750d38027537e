"""What an ordinary member cannot push the bot past: one ``test all`` per workspace at a time,
per-user limits on submissions, and verifications someone waits for kept apart from bulk
re-tests. Order, not timing: the fake Confluent holds requests until the test lets them go."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest

from bot.settings import Settings
from tests.e2e.conftest import Bot, CloudKey, bot_env, running_bot
from tests.e2e.helpers import form_values, open_create_form, visible_text, wait_for_result
from tests.e2e.test_retests import (
    ADMIN_CHANNEL,
    OWNER,
    click_retest,
    command,
    eventually,
    listing,
    new_key,
    replies,
    shown,
    store,
)
from tests.fakes.confluent_api import FakeConfluent
from tests.fakes.slack_api import FakeSlack

OTHER = "U0OTHERUSR1"
ENVIRONMENTS = "/org/v2/environments"


@pytest.fixture
def limits_env(request: pytest.FixtureRequest) -> dict[str, str]:
    return {"CONNECTIONS_ADMIN_CHANNEL": ADMIN_CHANNEL, **getattr(request, "param", {})}


@pytest.fixture
def lbot(
    limits_env: dict[str, str],
    fake_slack: FakeSlack,
    fake_confluent: tuple[FakeConfluent, str],
    migrated_database_url: str,
    captured_logs: io.StringIO,
) -> Iterator[Bot]:
    settings = Settings.from_mapping(
        bot_env(fake_slack, fake_confluent[1], migrated_database_url, **limits_env)
    )
    with running_bot(settings, fake_slack, fake_confluent[0], captured_logs) as bot:
        yield bot
        bot.confluent.release()  # let held requests go before the bot drains


def stored_keys(bot: Bot, count: int, prefix: str = "conn") -> list[CloudKey]:
    keys = [new_key(bot) for _ in range(count)]
    for i, key in enumerate(keys):
        store(bot, f"{prefix} {i}", key)
    return keys


def test_a_second_test_all_names_the_running_one_and_probes_nothing(lbot: Bot) -> None:
    keys = stored_keys(lbot, 3)
    lbot.confluent.hold()
    lbot.sender.command("test all", user_id=OWNER)
    eventually(lambda: lbot.confluent.held == 3, what="the first run's three probes to be held")

    [told] = command(lbot, "test all", user=OTHER, until=replies(1), what="the second test all's answer")

    text = shown(told)
    assert f"<@{OWNER}> started a re-test of all 3 connections" in text, text
    assert "s ago; 0 done" in text
    assert lbot.confluent.held == 3  # nothing more reached Confluent
    lbot.confluent.release()
    eventually(lambda: len(lbot.confluent.requests_to(ENVIRONMENTS)) == 3, what="the first run to finish")
    callers = sorted(str(r.username) for r in lbot.confluent.requests_to(ENVIRONMENTS))
    assert callers == sorted(k.key for k in keys)  # each connection probed once


@pytest.mark.parametrize("limits_env", [{"CONNECTIONS_LIMIT_SUBMISSIONS_PER_MINUTE": "2"}], indirect=True)
def test_the_third_submission_in_a_minute_is_refused_under_the_form(lbot: Bot) -> None:
    answers = []
    for n in range(3):
        view_id = open_create_form(lbot.slack, lbot.sender)
        key = new_key(lbot)
        answers.append(lbot.sender.submit(view_id, form_values(f"Kafka {n}", key.key, key.secret)).json())
        if n < 2:
            wait_for_result(lbot.slack, view_id)

    assert [a.get("response_action") for a in answers] == ["update", "update", "errors"]
    [message] = answers[2]["errors"].values()
    assert message.startswith("You've submitted 2 new connections in the last minute; try again in ")
    assert message.endswith(" s.")
    assert len(lbot.confluent.requests_to(ENVIRONMENTS)) == 2


@pytest.mark.parametrize("limits_env", [{"CONNECTIONS_RETEST_CONCURRENCY": "2"}], indirect=True)
def test_verifications_someone_waits_for_go_past_a_bulk_run_that_fills_its_pool(lbot: Bot) -> None:
    bulk = stored_keys(lbot, 5, prefix="bulk")
    wanted = store(lbot, "wanted", new_key(lbot))
    message = listing(lbot)
    lbot.confluent.hold(keys={k.key for k in bulk})
    lbot.sender.command("test all", user_id=OWNER)
    eventually(lambda: lbot.confluent.held == 2, what="the bulk pool of two to be full")

    # One re-test, then a new connection: both reach Confluent and finish while the bulk run is
    # still held at its bound.
    url = click_retest(lbot, wanted, message)
    eventually(lambda: lbot.slack.hooks_to(url), what="the re-test's answer")
    assert "works" in shown(lbot.slack.hooks_to(url)[0])
    view_id = open_create_form(lbot.slack, lbot.sender)
    key = new_key(lbot)
    lbot.sender.submit(view_id, form_values("New Kafka", key.key, key.secret))
    result = wait_for_result(lbot.slack, view_id)
    assert "awaits an admin's approval" in visible_text(result["blocks"])
    assert lbot.confluent.held == 2

    lbot.confluent.release()
    eventually(lambda: any("6 healthy" in shown(h) for h in lbot.slack.hooks), what="the bulk run's report")


@pytest.mark.parametrize("limits_env", [{"CONNECTIONS_LIMIT_RETESTS_PER_MINUTE": "1"}], indirect=True)
def test_past_the_retest_limit_a_command_and_a_button_are_answered_and_probe_nothing(lbot: Bot) -> None:
    stored_keys(lbot, 2)
    third = store(lbot, "third", new_key(lbot))
    message = listing(lbot)
    command(lbot, "test conn 0", until=replies(2), what="the first re-test")

    [told] = command(lbot, "test all", until=replies(1), what="the refusal")
    url = click_retest(lbot, third, message)
    eventually(lambda: lbot.slack.hooks_to(url), what="the refusal of the click")

    limited = "You've started 1 re-test in the last minute; try again in "
    assert shown(told).startswith(limited)
    assert shown(lbot.slack.hooks_to(url)[0]).startswith(limited)
    assert len(lbot.confluent.requests_to(ENVIRONMENTS)) == 1


@pytest.mark.parametrize("limits_env", [{"CONNECTIONS_LIMIT_ROTATIONS_PER_MINUTE": "1"}], indirect=True)
def test_past_the_rotation_limit_the_form_says_so_and_nothing_is_verified(lbot: Bot) -> None:
    stored_keys(lbot, 2)
    answers = []
    for name in ("conn 0", "conn 1"):
        opened = len(lbot.slack.calls_to("views.open"))
        lbot.sender.command(f"rotate {name}", user_id=OWNER)
        view_id = str(lbot.slack.wait_for("views.open", count=opened + 1)[-1].response["view"]["id"])
        key = new_key(lbot)
        answers.append(lbot.sender.submit(view_id, {"api_key": key.key, "api_secret": key.secret}).json())
        if not answers[-1].get("errors"):
            wait_for_result(lbot.slack, view_id)

    assert [a.get("response_action") for a in answers] == ["update", "errors"]
    [message] = answers[1]["errors"].values()
    assert message.startswith("You've submitted 1 rotation in the last minute; try again in ")
    assert len(lbot.confluent.requests_to(ENVIRONMENTS)) == 1
