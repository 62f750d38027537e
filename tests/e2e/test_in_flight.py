"""Verifications in flight: two people submitting one name at once (and two rotations of one
connection), a SIGTERM while a verification runs and a crash (SIGKILL) in the middle of one, with
``connections-bot serve`` as a real process, and a verification that overran its deadline.

What the user sees is read from the fake Slack; what was stored, from the database.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import signal
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy import update as sa_update

from bot import ids
from bot.app import SHUTDOWN_DRAIN_SECONDS
from bot.crypto import Cipher, MasterKey
from bot.settings import Settings
from bot.store import Database
from bot.store.models import InFlightVerification
from tests.e2e.conftest import SIGNING_SECRET, CloudKey, running_bot
from tests.e2e.helpers import form_values, open_create_form, stored, visible_text, wait_for_result, wait_until
from tests.e2e.test_rotation import open_rotation_by_command
from tests.fakes.confluent_api import FakeConfluent, new_api_key, new_api_secret
from tests.fakes.slack_api import FakeSlack
from tests.support.processes import clean_env, serving
from tests.support.seeding import Seed, seed_connections
from tests.support.slack_requests import SlackSender

SECOND_USER = "U0SECOND01"
ADMIN_CHANNEL = "C0ADMINS01"
DRAINING = "shutting down; finishing 1 task(s) in flight"
RACE_ROUNDS = 3
"""Races run per database: one lucky interleaving must not make the test pass."""


def in_flight(database_url: str) -> list[InFlightVerification]:
    async def read() -> list[InFlightVerification]:
        db = Database.from_url(database_url)
        try:
            async with db.read() as tx:
                return list(await tx.session.scalars(select(InFlightVerification)))
        finally:
            await db.dispose()

    return asyncio.run(read())


def actions(database_url: str) -> list[str]:
    return [event.action for event in stored(database_url)["audit_events"]]


def updates_of(slack: FakeSlack, view_id: str) -> list[Any]:
    return [c for c in slack.calls_to("views.update") if c.body.get("view_id") == view_id]


def refuses_connections(url: str) -> bool:
    try:
        httpx.get(f"{url}/healthz", timeout=1)
    except httpx.ConnectError:
        return True
    except httpx.TransportError:  # accepted just before the listener closed, then dropped
        return False
    return False


def serve_env(
    tmp_path: Path, slack: FakeSlack, confluent_url: str, database_url: str, master_key: MasterKey
) -> dict[str, str]:
    return clean_env(
        tmp_path,
        SLACK_BOT_TOKEN=slack.bot_token,
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_API_URL=slack.api_url,
        CONFLUENT_CLOUD_API_URL=confluent_url,
        DATABASE_URL=database_url,
        CONNECTIONS_MASTER_KEY=master_key.to_base64().reveal(),
        CONNECTIONS_ADMIN_CHANNEL=ADMIN_CHANNEL,
        LOG_LEVEL="INFO",
    )


def submit_held(
    slack: FakeSlack, sender: SlackSender, confluent: FakeConfluent, name: str, key: CloudKey
) -> str:
    """Open the create form, submit it while Confluent holds every request, and wait until the
    verification waits at Confluent; the modal's view id (it shows "Verifying…")."""
    view_id = open_create_form(slack, sender)
    confluent.hold()
    answer = sender.submit(view_id, form_values(name, key.key, key.secret)).json()
    assert answer["response_action"] == "update"
    assert "Verifying" in visible_text(slack.views[view_id])
    wait_until(lambda: confluent.held >= 1, timeout=10, what="the verification to reach Confluent")
    return view_id


# --- the name race -------------------------------------------------------------------------------


def test_two_submissions_of_one_name_at_once_get_one_verification(
    bot_settings: Settings,
    fake_slack: FakeSlack,
    fake_confluent: tuple[FakeConfluent, str],
    captured_logs: io.StringIO,
    cloud_key: CloudKey,
) -> None:
    confluent = fake_confluent[0]
    names = [f"Prod Kafka {round_}" for round_ in range(RACE_ROUNDS)]
    with (
        running_bot(bot_settings, fake_slack, confluent, captured_logs) as bot,
        SlackSender(bot.url, signing_secret=SIGNING_SECRET, fake=fake_slack, user_id=SECOND_USER) as second,
    ):
        for name in names:
            race_one_name(fake_slack, confluent, [bot.sender, second], name, cloud_key)
        database_url = bot.database_url

    assert sorted(c.name.casefold() for c in stored(database_url)["connections"]) == [
        n.casefold() for n in names
    ]
    assert in_flight(database_url) == []


def race_one_name(
    slack: FakeSlack, confluent: FakeConfluent, senders: list[SlackSender], name: str, key: CloudKey
) -> None:
    """Two users submit ``name`` (spelt differently) at the same moment: one is verified, the other
    is told at once, on the form's name field."""
    views = [open_create_form(slack, sender) for sender in senders]
    spellings = [name, name.upper()]
    # Held at Confluent: the winner is still verifying when the loser is answered.
    confluent.hold()
    answers = run_at_once(
        [
            partial(sender.submit, view_id, form_values(spelling, key.key, key.secret))
            for sender, view_id, spelling in zip(senders, views, spellings, strict=True)
        ]
    )
    responses = [answer.json()["response_action"] for answer in answers]
    assert sorted(responses) == ["errors", "update"]
    won, lost = views[responses.index("update")], views[responses.index("errors")]
    error = slack.view_errors[lost]
    assert set(error) == {ids.BLOCK_NAME}
    assert "being registered right now" in error[ids.BLOCK_NAME]
    assert "Verifying" in visible_text(slack.views[won])
    confluent.release()
    assert "awaits an admin's approval" in visible_text(wait_for_result(slack, won))
    assert updates_of(slack, lost) == []


def test_two_rotations_of_one_connection_at_once_get_one_verification(
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
    keys = [CloudKey(new_api_key(), new_api_secret()) for _ in range(2)]
    for key in keys:
        confluent.add_cloud_key(key.key, key.secret, environments=1)
    with running_bot(bot_settings, fake_slack, confluent, captured_logs) as bot:
        # The owner opened the form twice (two tabs) and submits both at once.
        views = [open_rotation_by_command(bot, "Prod Kafka") for _ in keys]
        confluent.hold()
        answers = run_at_once(
            [
                partial(bot.sender.submit, view_id, {"api_key": key.key, "api_secret": key.secret})
                for view_id, key in zip(views, keys, strict=True)
            ]
        )
        responses = [answer.json()["response_action"] for answer in answers]
        assert sorted(responses) == ["errors", "update"]
        won, lost = views[responses.index("update")], views[responses.index("errors")]
        [(block, message)] = fake_slack.view_errors[lost].items()
        assert block == "api_key" and "being checked right now" in message
        confluent.release()
        assert "await an admin's approval" in visible_text(wait_for_result(fake_slack, won))
        database_url = bot.database_url
    assert updates_of(fake_slack, lost) == []
    assert in_flight(database_url) == []


def run_at_once(calls: list[Callable[[], httpx.Response]]) -> list[httpx.Response]:
    """Run each call on its own thread, released together; their results in order."""
    barrier = threading.Barrier(len(calls))
    results: list[httpx.Response | BaseException | None] = [None] * len(calls)

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = calls[index]()
        except BaseException as exc:
            results[index] = exc

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    answers = []
    for result in results:
        if isinstance(result, BaseException):
            raise result
        assert result is not None, "a submission did not finish"
        answers.append(result)
    return answers


# --- SIGTERM -------------------------------------------------------------------------------------


def test_sigterm_stops_taking_requests_and_finishes_the_verification_in_flight(
    tmp_path: Path,
    migrated_database_url: str,
    fake_slack: FakeSlack,
    fake_confluent: tuple[FakeConfluent, str],
    cloud_key: CloudKey,
) -> None:
    confluent, confluent_url = fake_confluent
    env = serve_env(tmp_path, fake_slack, confluent_url, migrated_database_url, MasterKey.generate())
    log = tmp_path / "serve.log"
    try:
        with (
            serving(env, tmp_path, log=log) as (url, process),
            SlackSender(url, signing_secret=SIGNING_SECRET, fake=fake_slack) as sender,
        ):
            view_id = submit_held(fake_slack, sender, confluent, "Prod Kafka", cloud_key)
            process.send_signal(signal.SIGTERM)

            wait_until(lambda: refuses_connections(url), timeout=10, what="the server to stop listening")
            # Requests are done with; the drain of the work they left has begun.
            wait_until(lambda: DRAINING in log.read_text(), timeout=10, what="the drain to start")
            # Still running: it waits for the verification, and the user still sees "Verifying…".
            assert process.poll() is None
            assert updates_of(fake_slack, view_id) == []

            confluent.release()
            wait_until(
                lambda: len(updates_of(fake_slack, view_id)) == 1,
                timeout=SHUTDOWN_DRAIN_SECONDS,
                what="the verification's result",
            )
            result = visible_text(fake_slack.views[view_id])
            returncode = process.wait(timeout=SHUTDOWN_DRAIN_SECONDS + 5)
    finally:
        confluent.release()

    assert "awaits an admin's approval" in result
    # uvicorn re-raises the SIGTERM it handled once it has shut down, as servers do (see test_cli).
    assert returncode in (0, -signal.SIGTERM)
    output = log.read_text()
    assert "stopped" in output
    assert [c.name for c in stored(migrated_database_url)["connections"]] == ["Prod Kafka"]
    assert in_flight(migrated_database_url) == []
    assert cloud_key.secret not in output


# --- a crash -------------------------------------------------------------------------------------


def test_a_verification_cut_short_by_a_crash_is_reported_at_the_next_start(
    tmp_path: Path,
    migrated_database_url: str,
    fake_slack: FakeSlack,
    fake_confluent: tuple[FakeConfluent, str],
    cloud_key: CloudKey,
) -> None:
    confluent, confluent_url = fake_confluent
    env = serve_env(tmp_path, fake_slack, confluent_url, migrated_database_url, MasterKey.generate())
    try:
        with (
            serving(env, tmp_path, log=tmp_path / "first.log") as (url, process),
            SlackSender(url, signing_secret=SIGNING_SECRET, fake=fake_slack) as sender,
        ):
            view_id = submit_held(fake_slack, sender, confluent, "Prod Kafka", cloud_key)
            process.kill()
            process.wait(timeout=10)
    finally:
        confluent.release()

    # What the crash left: the claim on the name, and nothing else.
    [claim] = in_flight(migrated_database_url)
    assert (claim.name, claim.view_id, claim.pid) == ("Prod Kafka", view_id, process.pid)
    assert not any(stored(migrated_database_url).values())
    assert updates_of(fake_slack, view_id) == []

    with serving(env, tmp_path, log=tmp_path / "second.log") as (url, restarted):
        shown = visible_text(wait_for_result(fake_slack, view_id))
        assert "restarted before it finished checking" in shown and "nothing was saved" in shown
        # Try again keeps what the user typed, bar the secrets.
        assert ids.ACTION_TRY_AGAIN in str(fake_slack.views[view_id]["blocks"])
        assert in_flight(migrated_database_url) == []
        rows = stored(migrated_database_url)
        assert rows["connections"] == rows["credentials"] == rows["verifications"] == []
        [event] = rows["audit_events"]
        assert (event.action, event.actor, event.details) == (
            "connection.create_interrupted",
            sender.user_id,
            {"provider": "confluent_cloud", "name": "Prod Kafka"},
        )
        assert cloud_key.key not in str(event.details) and cloud_key.secret not in str(event.reason)

        # The name is free again.
        with SlackSender(url, signing_secret=SIGNING_SECRET, fake=fake_slack) as again:
            retry = open_create_form(fake_slack, again)
            answer = again.submit(retry, form_values("prod kafka", cloud_key.key, cloud_key.secret))
            assert answer.json()["response_action"] == "update"
            assert "awaits an admin's approval" in visible_text(wait_for_result(fake_slack, retry))
        assert restarted.poll() is None

    assert actions(migrated_database_url) == ["connection.create_interrupted", "connection.created"]
    assert [c.name for c in stored(migrated_database_url)["connections"]] == ["prod kafka"]


def test_a_verification_past_its_deadline_is_reported_by_any_replica_and_its_late_outcome_dropped(
    bot_settings: Settings,
    fake_slack: FakeSlack,
    fake_confluent: tuple[FakeConfluent, str],
    captured_logs: io.StringIO,
    cloud_key: CloudKey,
) -> None:
    confluent = fake_confluent[0]
    settings = dataclasses.replace(bot_settings, expiry_check_seconds=0.2)
    try:
        with running_bot(settings, fake_slack, confluent, captured_logs) as bot:
            view_id = submit_held(fake_slack, bot.sender, confluent, "Prod Kafka", cloud_key)
            # As if a replica on another host had started it long ago and then died.
            make_overdue_elsewhere(bot.database_url)

            shown = visible_text(wait_for_result(fake_slack, view_id))
            assert "restarted before it finished checking" in shown and "nothing was saved" in shown
            assert in_flight(bot.database_url) == []

            # The verification answers after all: too late, it must neither store nor contradict.
            requests_before = len(confluent.requests)
            confluent.release()
            wait_until(lambda: len(confluent.requests) > requests_before, what="Confluent to answer")
            wait_until(lambda: "outcome was dropped" in bot.log_text(), what="the late outcome")
            database_url = bot.database_url
    finally:
        confluent.release()

    assert len(updates_of(fake_slack, view_id)) == 1
    assert not fake_slack.visible_messages(view_id, bot.sender.user_id)
    assert actions(database_url) == ["connection.create_interrupted"]
    assert stored(database_url)["connections"] == []


def make_overdue_elsewhere(database_url: str) -> None:
    async def update() -> None:
        db = Database.from_url(database_url)
        try:
            async with db.transaction() as tx:
                await tx.session.execute(
                    sa_update(InFlightVerification).values(
                        host="replica-that-died",
                        pid=1,
                        deadline=datetime.now(UTC) - timedelta(seconds=1),
                    )
                )
        finally:
            await db.dispose()

    asyncio.run(update())
