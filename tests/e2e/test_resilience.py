"""When something breaks, the user is told plainly and nothing is half-written."""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from bot import ids
from bot.settings import Settings
from tests.e2e.conftest import CloudKey, running_bot
from tests.e2e.helpers import form_values, open_create_form, stored, visible_text, wait_until
from tests.fakes.confluent_api import FakeConfluent
from tests.fakes.slack_api import FakeSlack
from tests.support.databases import sqlite_path


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
