"""Database faults the bot must survive.

* At start: ``connections-bot serve`` (a real process) against a PostgreSQL that refuses, one that
  never answers, or a SQLite file that cannot be opened stops promptly with one line on stderr
  saying what it could not reach: exit code 2, no traceback, no password.
* During a request: a table taken away in the middle of the bot's work (the table that a use
  case writes last, so its earlier writes would be left half-done if they were not one
  transaction), or, on PostgreSQL, the whole database going away. The user is told to try again
  in plain words, no row changes, nothing from the driver reaches Slack, and once the database is
  back the same action works.
"""

from __future__ import annotations

import socket
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import make_url

from bot import ids
from bot.crypto import MasterKey
from bot.domain import Health, Status
from tests.e2e import test_approvals
from tests.e2e.conftest import SIGNING_SECRET, Bot, CloudKey
from tests.e2e.helpers import stored, visible_text, wait_until
from tests.e2e.test_approvals import ADMIN, REQUESTER, click, create_pending, dms_to, replies_to
from tests.e2e.test_listing import seed
from tests.e2e.test_removal import remove_prompt
from tests.e2e.test_retests import history, new_key, row, store
from tests.e2e.test_rotation import replies_in_channel
from tests.support.databases import sqlite_path
from tests.support.processes import EXE, clean_env, refused_port
from tests.support.slack_requests import CHANNEL_ID

# The approval tests' bot (listed admins, an admin group, an admin channel), as fixtures here.
abot = test_approvals.abot
approvals_env = test_approvals.approvals_env

NAME = "Orders"
TRY_AGAIN = "Please try again in a minute."
START_BOUND = 60.0
"""How long a failing start may take before the test calls it hung (a bound, not a measurement)."""


# --- at start ----------------------------------------------------------------------------------------


@contextmanager
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections and never answers, as a hung database host does."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield int(listener.getsockname()[1])


@contextmanager
def refused_postgres(tmp_path: Path) -> Iterator[str]:
    with refused_port() as port:
        yield f"postgresql://bot:db-Pa55word-never-shown@127.0.0.1:{port}/connections"


@contextmanager
def silent_postgres(tmp_path: Path) -> Iterator[str]:
    with silent_server() as port:
        yield f"postgresql://bot:db-Pa55word-never-shown@127.0.0.1:{port}/connections"


@contextmanager
def sqlite_in_a_missing_directory(tmp_path: Path) -> Iterator[str]:
    yield f"sqlite:///{tmp_path / 'no-such-directory' / 'connections.db'}"


@contextmanager
def sqlite_path_that_is_a_directory(tmp_path: Path) -> Iterator[str]:
    (tmp_path / "data").mkdir()
    yield f"sqlite:///{tmp_path / 'data'}"


@pytest.mark.parametrize(
    "database",
    [refused_postgres, silent_postgres, sqlite_in_a_missing_directory, sqlite_path_that_is_a_directory],
)
def test_serve_stops_with_one_line_when_the_database_cannot_be_reached(
    tmp_path: Path, database: Callable[[Path], Any]
) -> None:
    master_key = MasterKey.generate().to_base64().reveal()
    with database(tmp_path) as url:
        env = clean_env(
            tmp_path,
            SLACK_BOT_TOKEN="xoxb-never-shown-token",
            SLACK_SIGNING_SECRET=SIGNING_SECRET,
            CONNECTIONS_MASTER_KEY=master_key,
            DATABASE_URL=url,
        )
        try:
            result = subprocess.run(
                [EXE, "serve"],
                env=env,
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=START_BOUND,
                check=False,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"serve was still waiting for the database after {START_BOUND} s")

    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("connections-bot: Could not migrate ")
    shown = make_url(url).render_as_string(hide_password=True)
    assert shown in line
    for secret in ("db-Pa55word-never-shown", "xoxb-never-shown-token", SIGNING_SECRET, master_key):
        assert secret not in result.stderr + result.stdout
    assert result.stdout == ""


# --- during a request --------------------------------------------------------------------------------


def _connect_sqlite(database_url: str) -> sqlite3.Connection:
    return sqlite3.connect(sqlite_path(database_url), isolation_level=None)


def _admin_sql(database_url: str, statement: str) -> None:
    if database_url.startswith("sqlite"):
        with _connect_sqlite(database_url) as db:
            db.execute(statement)
        return
    with psycopg.connect(database_url, autocommit=True) as db:
        db.execute(statement)


@contextmanager
def table_taken_away(database_url: str, table: str) -> Iterator[None]:
    """The table is gone while the block runs, as with a broken or half-restored database."""
    _admin_sql(database_url, f"ALTER TABLE {table} RENAME TO {table}_away")
    try:
        yield
    finally:
        _admin_sql(database_url, f"ALTER TABLE {table}_away RENAME TO {table}")


def everything_slack_was_told(bot: Bot) -> str:
    """Every message body, view and response_url post the bot sent to Slack, as one text."""
    calls = [str(c.body) for c in bot.slack.calls]
    hooks = [str(h.body) for h in bot.slack.hooks]
    return "\n".join(calls + hooks)


def assert_nothing_from_the_driver_reached_slack(bot: Bot) -> None:
    told = everything_slack_was_told(bot)
    for leak in ("Traceback", "Error", "sqlalchemy", "_away", "audit_events", "no such table", "relation "):
        assert leak not in told, leak


def assert_told_to_try_again(reply: str) -> None:
    assert "went wrong on our side" in reply and TRY_AGAIN in reply, reply


def new_reply(texts: Callable[[], list[str]], before: int, what: str) -> str:
    wait_until(lambda: len(texts()) > before, what=what)
    return texts()[before]


def command_replies(bot: Bot, text: str, *, count: int) -> list[str]:
    """``/connections <text>`` as the requester: the first ``count`` replies they see."""
    before = len(replies_in_channel(bot, REQUESTER))
    assert bot.sender.command(text).status_code == 200
    wait_until(lambda: len(replies_in_channel(bot, REQUESTER)) >= before + count, what=f"/connections {text}")
    return replies_in_channel(bot, REQUESTER)[before : before + count]


def test_an_approval_that_cannot_be_written_whole_changes_nothing(abot: Bot, cloud_key: CloudKey) -> None:
    connection_id, request = create_pending(abot, cloud_key)
    with table_taken_away(abot.database_url, "audit_events"):
        click(abot, ids.ACTION_APPROVE, connection_id, request, ADMIN)
        reply = new_reply(lambda: replies_to(abot, ADMIN), 0, "the reply to Approve")

    assert_told_to_try_again(reply)
    [connection] = stored(abot.database_url)["connections"]
    assert (connection.status, connection.decided_by) == (Status.PENDING_APPROVAL, None)
    assert not [e for e in stored(abot.database_url)["audit_events"] if e.action == "connection.approved"]
    assert any(b.get("type") == "actions" for b in abot.slack.message_of(request).blocks)
    assert not [d for d in dms_to(abot, REQUESTER) if "approved" in d.lower()]
    assert_nothing_from_the_driver_reached_slack(abot)

    click(abot, ids.ACTION_APPROVE, connection_id, request, ADMIN)
    wait_until(lambda: stored(abot.database_url)["connections"][0].status == Status.ACTIVE, what="approval")


def test_a_rejection_that_cannot_be_written_whole_keeps_the_credential(
    abot: Bot, cloud_key: CloudKey
) -> None:
    connection_id, request = create_pending(abot, cloud_key)
    opened = len(abot.slack.calls_to("views.open"))
    click(abot, ids.ACTION_REJECT, connection_id, request, ADMIN)
    modal_id = str(abot.slack.wait_for("views.open", count=opened + 1)[-1].response["view"]["id"])
    credentials = len(stored(abot.database_url)["credentials"])
    assert credentials > 0

    with table_taken_away(abot.database_url, "audit_events"):
        answer = abot.sender.submit(modal_id, {ids.BLOCK_REASON: "too broad"}, user_id=ADMIN).json()

    # The modal stays open with the reason typed, and says so under it.
    assert answer["response_action"] == "errors"
    assert_told_to_try_again(answer["errors"][ids.BLOCK_REASON])
    after = stored(abot.database_url)
    assert [c.status for c in after["connections"]] == [Status.PENDING_APPROVAL]
    assert len(after["credentials"]) == credentials
    assert_nothing_from_the_driver_reached_slack(abot)

    answer = abot.sender.submit(modal_id, {ids.BLOCK_REASON: "too broad"}, user_id=ADMIN)
    assert answer.status_code == 200 and answer.content in (b"", b"{}")
    rejected = stored(abot.database_url)
    assert [c.status for c in rejected["connections"]] == [Status.REJECTED]
    assert rejected["credentials"] == []


def test_a_reject_click_that_cannot_read_the_request_says_so_and_opens_nothing(
    abot: Bot, cloud_key: CloudKey
) -> None:
    connection_id, request = create_pending(abot, cloud_key)
    opened = len(abot.slack.calls_to("views.open"))
    with table_taken_away(abot.database_url, "connections"):
        click(abot, ids.ACTION_REJECT, connection_id, request, ADMIN)
        reply = new_reply(lambda: replies_to(abot, ADMIN), 0, "the reply to Reject")

    assert_told_to_try_again(reply)
    assert len(abot.slack.calls_to("views.open")) == opened
    assert_nothing_from_the_driver_reached_slack(abot)
    click(abot, ids.ACTION_REJECT, connection_id, request, ADMIN)
    abot.slack.wait_for("views.open", count=opened + 1)


def test_a_retest_that_cannot_be_recorded_records_nothing(abot: Bot) -> None:
    connection_id = store(abot, NAME, new_key(abot), health=Health.UNKNOWN)
    before = row(abot, connection_id)
    with table_taken_away(abot.database_url, "audit_events"):
        started, failed = command_replies(abot, f"test {NAME}", count=2)

    assert "Re-testing" in started
    assert "went wrong on our side while re-testing" in failed and TRY_AGAIN in failed
    after = row(abot, connection_id)
    assert (after.health, after.last_verified_at) == (Health.UNKNOWN, before.last_verified_at)
    assert history(abot, connection_id) == []
    assert_nothing_from_the_driver_reached_slack(abot)

    _, result = command_replies(abot, f"test {NAME}", count=2)
    assert "works" in result
    assert row(abot, connection_id).health == Health.HEALTHY


@pytest.mark.parametrize("text", ["", "list 2", f"status {NAME}", f"remove {NAME}"])
def test_a_command_that_cannot_read_the_database_says_to_try_again(abot: Bot, text: str) -> None:
    store(abot, NAME, new_key(abot))
    with table_taken_away(abot.database_url, "connections"):
        [reply] = command_replies(abot, text, count=1)

    assert_told_to_try_again(reply)
    assert_nothing_from_the_driver_reached_slack(abot)
    [answer] = command_replies(abot, text, count=1)
    assert "went wrong" not in answer


def test_a_page_of_the_list_that_cannot_be_read_says_to_try_again_and_keeps_the_list(abot: Bot) -> None:
    seed(abot.database_url, 21)
    [first] = command_replies(abot, "", count=1)
    assert "Page 1 of 2" in first
    shown = replies_in_channel(abot, REQUESTER)
    [message] = [m for m in abot.slack.visible_messages(CHANNEL_ID, REQUESTER) if m.ephemeral]
    with table_taken_away(abot.database_url, "connections"):
        abot.sender.action(ids.ACTION_PAGE_NEXT, "2", on=message)
        reply = new_reply(lambda: replies_in_channel(abot, REQUESTER), len(shown), "the reply to Next")

    assert_told_to_try_again(reply)
    # Said beside the list, which stays as it was.
    assert abot.slack.message_of(message).blocks == message.blocks
    assert_nothing_from_the_driver_reached_slack(abot)


def test_a_removal_that_cannot_be_written_whole_keeps_the_connection_and_its_credential(
    abot: Bot,
) -> None:
    connection_id = store(abot, NAME, new_key(abot))
    prompt = remove_prompt(abot, NAME, REQUESTER)
    credentials = len(stored(abot.database_url)["credentials"])
    before = len(replies_in_channel(abot, REQUESTER))
    with table_taken_away(abot.database_url, "audit_events"):
        click(abot, ids.ACTION_REMOVE, connection_id, prompt, REQUESTER)
        reply = new_reply(lambda: replies_in_channel(abot, REQUESTER), before, "the reply to Remove")

    assert_told_to_try_again(reply)
    after = stored(abot.database_url)
    assert [c.status for c in after["connections"]] == [Status.ACTIVE]
    assert len(after["credentials"]) == credentials
    assert_nothing_from_the_driver_reached_slack(abot)

    before = len(replies_in_channel(abot, REQUESTER))
    click(abot, ids.ACTION_REMOVE, connection_id, prompt, REQUESTER)
    assert "was removed" in new_reply(lambda: replies_in_channel(abot, REQUESTER), before, "the removal")
    assert stored(abot.database_url)["credentials"] == []


# --- PostgreSQL going away ---------------------------------------------------------------------------


@contextmanager
def postgres_gone(database_url: str) -> Iterator[None]:
    """The database refuses new connections and drops every open one (the bot's pool included),
    as during a failover or a restart, until the block ends."""
    name = make_url(database_url).database
    admin_url = make_url(database_url).set(database="postgres").render_as_string(hide_password=False)
    database = sql.Identifier(str(name))
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(database))
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        try:
            yield
        finally:
            admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(database))


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_when_postgres_goes_away_users_are_told_and_the_bot_recovers_when_it_returns(
    abot: Bot, cloud_key: CloudKey
) -> None:
    connection_id, request = create_pending(abot, cloud_key)
    with postgres_gone(abot.database_url):
        [listing] = command_replies(abot, "", count=1)
        click(abot, ids.ACTION_APPROVE, connection_id, request, ADMIN)
        approval = new_reply(lambda: replies_to(abot, ADMIN), 0, "the reply to Approve")

    assert_told_to_try_again(listing)
    assert_told_to_try_again(approval)
    assert stored(abot.database_url)["connections"][0].status == Status.PENDING_APPROVAL
    assert_nothing_from_the_driver_reached_slack(abot)

    # Back: the pool replaces its dropped connections, and the same actions work.
    [listing] = command_replies(abot, "", count=1)
    assert "awaiting approval" in listing
    click(abot, ids.ACTION_APPROVE, connection_id, request, ADMIN)
    wait_until(lambda: stored(abot.database_url)["connections"][0].status == Status.ACTIVE, what="approval")
    assert "Approved" in visible_text(abot.slack.message_of(request).blocks)
