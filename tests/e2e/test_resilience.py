"""When something breaks, the user is told plainly and nothing is half-written."""

from __future__ import annotations

import asyncio
import io
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from sqlalchemy import select

from bot import ids
from bot.crypto import Cipher, MasterKey
from bot.settings import Settings
from bot.store import Database, Rotation
from tests.e2e.conftest import Bot, CloudKey, running_bot
from tests.e2e.helpers import (
    form_values,
    open_create_form,
    stored,
    visible_text,
    wait_for_result,
    wait_until,
)
from tests.e2e.test_in_flight import actions, in_flight
from tests.e2e.test_rotation import open_rotation_by_command
from tests.fakes.confluent_api import FakeConfluent, new_api_key, new_api_secret
from tests.fakes.slack_api import FakeSlack
from tests.support.databases import sqlite_path
from tests.support.seeding import Seed, seed_connections
from tests.support.slack_requests import block_actions_in_view, payload_body, sign


def read_all(database_url: str, model: Any) -> list[Any]:
    async def read() -> list[Any]:
        db = Database.from_url(database_url)
        try:
            async with db.read() as tx:
                return list(await tx.session.scalars(select(model)))
        finally:
            await db.dispose()

    return asyncio.run(read())


@contextmanager
def connections_table_missing(database_url: str) -> Iterator[None]:
    """Take the connections table away while the bot runs, as a broken database would."""
    rename = "ALTER TABLE {} RENAME TO {}"
    if database_url.startswith("sqlite"):
        with sqlite3.connect(sqlite_path(database_url)) as db:
            db.execute(rename.format("connections", "connections_away"))
        try:
            yield
        finally:
            with sqlite3.connect(sqlite_path(database_url)) as db:
                db.execute(rename.format("connections_away", "connections"))
    else:
        url = database_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(url, autocommit=True) as db:
            db.execute(rename.format("connections", "connections_away"))
        try:
            yield
        finally:
            with psycopg.connect(url, autocommit=True) as db:
                db.execute(rename.format("connections_away", "connections"))


def test_a_database_failure_while_checking_the_form_is_an_inline_message(
    bot_settings: Settings,
    fake_slack: FakeSlack,
    fake_confluent: tuple[FakeConfluent, str],
    captured_logs: io.StringIO,
    cloud_key: CloudKey,
) -> None:
    with running_bot(bot_settings, fake_slack, fake_confluent[0], captured_logs) as bot:
        view_id = open_create_form(bot.slack, bot.sender)
        with connections_table_missing(bot.database_url):
            response = bot.sender.submit(view_id, form_values("prod", cloud_key.key, cloud_key.secret))
        assert response.status_code == 200
        answer = response.json()
        assert answer["response_action"] == "errors"
        assert "went wrong on our side" in answer["errors"][ids.BLOCK_NAME]
        assert bot.confluent.requests == []
        assert cloud_key.secret not in bot.log_text()


def test_a_verification_cut_short_by_shutdown_tells_the_user_and_saves_nothing(
    bot_settings: Settings,
    fake_slack: FakeSlack,
    fake_confluent: tuple[FakeConfluent, str],
    captured_logs: io.StringIO,
    cloud_key: CloudKey,
) -> None:
    confluent = fake_confluent[0]
    with running_bot(bot_settings, fake_slack, confluent, captured_logs, drain_seconds=0.2) as bot:
        view_id = open_create_form(bot.slack, bot.sender)
        confluent.hold()
        bot.sender.submit(view_id, form_values("prod", cloud_key.key, cloud_key.secret))
        wait_until(lambda: confluent.held >= 1, what="the verification to reach Confluent")
        database_url = bot.database_url
    # The server has stopped: its drain gave up on the held verification.
    confluent.release()
    [update] = [c for c in fake_slack.calls_to("views.update") if c.body.get("view_id") == view_id]
    assert update.ok
    text = visible_text(fake_slack.views[view_id])
    assert "restarted" in text and "nothing was saved" in text
    assert stored(database_url)["connections"] == []
    # The claim on the name went with it: the next start has nobody left to tell.
    assert in_flight(database_url) == []


def test_a_user_slack_could_not_reach_at_shutdown_is_told_at_the_next_start(
    bot_settings: Settings,
    fake_slack: FakeSlack,
    fake_confluent: tuple[FakeConfluent, str],
    captured_logs: io.StringIO,
    cloud_key: CloudKey,
) -> None:
    confluent = fake_confluent[0]
    with running_bot(bot_settings, fake_slack, confluent, captured_logs, drain_seconds=0.2) as bot:
        view_id = open_create_form(bot.slack, bot.sender)
        confluent.hold()
        bot.sender.submit(view_id, form_values("prod", cloud_key.key, cloud_key.secret))
        wait_until(lambda: confluent.held >= 1, what="the verification to reach Confluent")
        # Slack is down while the bot stops: neither the modal nor a direct message gets through.
        fake_slack.fail_next("views.update", "internal_error", status=200, retry_after=None)
        fake_slack.fail_next("chat.postMessage", "internal_error", status=200, retry_after=None)
    confluent.release()
    assert "Verifying" in visible_text(fake_slack.views[view_id])
    [claim] = in_flight(bot_settings.database_url)
    assert claim.view_id == view_id

    # The same process starts the bot again (as a container restarted under the same pid would).
    with running_bot(bot_settings, fake_slack, confluent, captured_logs):
        text = visible_text(wait_for_result(fake_slack, view_id, count=2))
        assert "restarted" in text and "nothing was saved" in text
        assert in_flight(bot_settings.database_url) == []
    actions = [event.action for event in stored(bot_settings.database_url)["audit_events"]]
    assert actions == ["connection.create_interrupted"]


def test_a_rotation_cut_short_by_shutdown_tells_the_user_and_changes_nothing(
    bot_settings: Settings,
    fake_slack: FakeSlack,
    fake_confluent: tuple[FakeConfluent, str],
    captured_logs: io.StringIO,
    cloud_key: CloudKey,
) -> None:
    confluent = fake_confluent[0]
    master_key = bot_settings.master_key
    assert master_key is not None
    seed = Seed(name="Prod Kafka", key=cloud_key.key, secret=cloud_key.secret)
    asyncio.run(
        seed_connections(bot_settings.database_url, Cipher(MasterKey.from_base64(master_key)), [seed])
    )
    new_key, new_secret = new_api_key(), new_api_secret()
    confluent.add_cloud_key(new_key, new_secret, environments=1)
    with running_bot(bot_settings, fake_slack, confluent, captured_logs, drain_seconds=0.2) as bot:
        view_id = open_rotation_by_command(bot, "Prod Kafka")
        confluent.hold()
        answer = bot.sender.submit(view_id, {"api_key": new_key, "api_secret": new_secret})
        assert answer.json()["response_action"] == "update"
        wait_until(lambda: confluent.held >= 1, what="the verification to reach Confluent")
        database_url = bot.database_url
    confluent.release()
    [update] = [c for c in fake_slack.calls_to("views.update") if c.body.get("view_id") == view_id]
    assert update.ok
    text = visible_text(fake_slack.views[view_id])
    assert "restarted before it finished checking the new credentials" in text
    assert "nothing changed" in text
    assert read_all(database_url, Rotation) == []
    assert in_flight(database_url) == []
    assert [c.version for c in stored(database_url)["credentials"]] == [1, 1]


# --- a stored outcome is reported even when shutdown cuts the reporting short --------------------

RATE_LIMIT_WAIT = 30
"""A ``Retry-After`` the bot waits out in full (bot.runtime), far past the test's 0.2 s drain."""
ADMIN_CHANNEL = "C0ADMINS01"


def posts_to(slack: FakeSlack, channel: str) -> list[Any]:
    return [c for c in slack.calls_to("chat.postMessage") if c.body.get("channel") == channel]


def test_a_connection_stored_while_shutdown_cuts_its_approval_post_short_is_still_reported(
    bot_settings: Settings,
    fake_slack: FakeSlack,
    fake_confluent: tuple[FakeConfluent, str],
    captured_logs: io.StringIO,
    cloud_key: CloudKey,
) -> None:
    with running_bot(bot_settings, fake_slack, fake_confluent[0], captured_logs, drain_seconds=0.2) as bot:
        view_id = open_create_form(bot.slack, bot.sender)
        # The admin channel's post meets a rate limit: the bot would wait it out past the drain.
        fake_slack.fail_next("chat.postMessage", retry_after=RATE_LIMIT_WAIT)
        bot.sender.submit(view_id, form_values("prod", cloud_key.key, cloud_key.secret))
        wait_until(lambda: posts_to(fake_slack, ADMIN_CHANNEL), what="the approval request to meet the limit")
        database_url = bot.database_url
    text = visible_text(fake_slack.views[view_id])
    assert "Cloud API key accepted" in text
    assert "saved and awaits an admin's approval" in text and "Home tab" in text
    assert [c.ok for c in posts_to(fake_slack, ADMIN_CHANNEL)] == [False]
    [connection] = stored(database_url)["connections"]
    assert connection.name == "prod"
    assert in_flight(database_url) == []


def test_a_result_whose_modal_update_meets_a_rate_limit_at_shutdown_is_delivered_once_more(
    bot_settings: Settings,
    fake_slack: FakeSlack,
    fake_confluent: tuple[FakeConfluent, str],
    captured_logs: io.StringIO,
    cloud_key: CloudKey,
) -> None:
    with running_bot(bot_settings, fake_slack, fake_confluent[0], captured_logs, drain_seconds=0.2) as bot:
        view_id = open_create_form(bot.slack, bot.sender)
        fake_slack.fail_next("views.update", retry_after=RATE_LIMIT_WAIT)
        bot.sender.submit(view_id, form_values("prod", cloud_key.key, cloud_key.secret))
        wait_until(
            lambda: [c for c in fake_slack.calls_to("views.update") if c.body.get("view_id") == view_id],
            what="the result to meet the limit",
        )
    updates = [c for c in fake_slack.calls_to("views.update") if c.body.get("view_id") == view_id]
    assert [c.ok for c in updates] == [False, True]
    text = visible_text(fake_slack.views[view_id])
    assert "Cloud API key accepted" in text and "now awaits an admin's approval" in text
    assert [c.ok for c in posts_to(fake_slack, ADMIN_CHANNEL)] == [True]


def test_a_rotation_stored_while_shutdown_cuts_its_approval_post_short_is_still_reported(
    bot_settings: Settings,
    fake_slack: FakeSlack,
    fake_confluent: tuple[FakeConfluent, str],
    captured_logs: io.StringIO,
    cloud_key: CloudKey,
) -> None:
    confluent = fake_confluent[0]
    master_key = bot_settings.master_key
    assert master_key is not None
    seed = Seed(name="Prod Kafka", key=cloud_key.key, secret=cloud_key.secret)
    asyncio.run(
        seed_connections(bot_settings.database_url, Cipher(MasterKey.from_base64(master_key)), [seed])
    )
    new_key, new_secret = new_api_key(), new_api_secret()
    confluent.add_cloud_key(new_key, new_secret, environments=1)
    with running_bot(bot_settings, fake_slack, confluent, captured_logs, drain_seconds=0.2) as bot:
        view_id = open_rotation_by_command(bot, "Prod Kafka")
        fake_slack.fail_next("chat.postMessage", retry_after=RATE_LIMIT_WAIT)
        answer = bot.sender.submit(view_id, {"api_key": new_key, "api_secret": new_secret})
        assert answer.json()["response_action"] == "update"
        wait_until(lambda: posts_to(fake_slack, ADMIN_CHANNEL), what="the rotation request to meet the limit")
        database_url = bot.database_url
    text = visible_text(fake_slack.views[view_id])
    assert "new credentials are saved and await an admin's approval" in text
    assert "/connections status" in text
    [rotation] = read_all(database_url, Rotation)
    assert rotation.version == 2
    assert in_flight(database_url) == []


def test_an_interrupted_verification_is_told_within_the_shutdown_and_not_again_at_the_next_start(
    bot_settings: Settings,
    fake_slack: FakeSlack,
    fake_confluent: tuple[FakeConfluent, str],
    captured_logs: io.StringIO,
    cloud_key: CloudKey,
) -> None:
    confluent = fake_confluent[0]
    with running_bot(bot_settings, fake_slack, confluent, captured_logs, drain_seconds=0.2) as bot:
        view_id = open_create_form(bot.slack, bot.sender)
        confluent.hold()
        bot.sender.submit(view_id, form_values("prod", cloud_key.key, cloud_key.secret))
        wait_until(lambda: confluent.held >= 1, what="the verification to reach Confluent")
        # The modal's update meets a rate limit as the bot stops: the news goes by direct message
        # in the time left, and the claim ends with it.
        fake_slack.fail_next("views.update", retry_after=RATE_LIMIT_WAIT)
    confluent.release()
    [dm] = posts_to(fake_slack, bot.sender.user_id)
    assert dm.ok and "nothing was saved" in visible_text(dm.body.get("blocks"))
    assert in_flight(bot_settings.database_url) == []

    with running_bot(bot_settings, fake_slack, confluent, captured_logs):
        pass
    assert len(posts_to(fake_slack, bot.sender.user_id)) == 1
    assert actions(bot_settings.database_url) == []


def test_a_try_again_whose_draft_is_unusable_says_to_start_over(
    bot: Bot, fake_confluent: tuple[FakeConfluent, str]
) -> None:
    view_id = open_create_form(bot.slack, bot.sender)
    bot.sender.submit(view_id, form_values("prod", new_api_key(), new_api_secret()))
    failed = wait_for_result(bot.slack, view_id)
    garbled = {
        "type": "actions",
        "block_id": "garbled",
        "elements": [
            {
                "type": "button",
                "action_id": ids.ACTION_TRY_AGAIN,
                "value": "not-a-draft",
                "text": {"type": "plain_text", "text": "Try again"},
            }
        ],
    }
    payload = block_actions_in_view(
        ids.ACTION_TRY_AGAIN,
        "not-a-draft",
        view={**failed, "blocks": [garbled]},
        trigger_id=bot.slack.issue_trigger_id(view_id=view_id),
        team_id=bot.sender.team_id,
        user_id=bot.sender.user_id,
    )
    body = payload_body(payload)
    assert bot.sender.post_raw(body, sign(body, bot.sender.signing_secret)).status_code == 200

    wait_until(lambda: posts_to(bot.slack, bot.sender.user_id), what="the answer to the click")
    [answer] = posts_to(bot.slack, bot.sender.user_id)
    assert answer.ok and "out of date" in str(answer.body.get("text"))
    assert "run /connections" in str(answer.body.get("text"))
    # The result stays as it was: nothing was rebuilt from the garbled value.
    assert bot.slack.views[view_id] == failed
