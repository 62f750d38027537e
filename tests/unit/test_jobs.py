"""Periodic: runs a job again and again, survives its failures, and stops cleanly.

Waits are bounded by ``HANG_GUARD`` only so that a broken runner fails the test instead of hanging
it; nothing here asserts how long anything took.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from starlette.types import ASGIApp, Message, Scope

from bot.app import BotApp
from bot.jobs import EXPIRY_JOB, periodic
from bot.jobs.periodic import Periodic
from bot.runtime import start_services
from bot.settings import ConfigError, Settings
from tests.unit.test_runtime import new_key, settings_for

HANG_GUARD = 5.0
INTERVAL = 0.01


@pytest.fixture(autouse=True)
def no_first_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(periodic, "FIRST_RUN_DELAY_SECONDS", 0.0)


class Counter:
    """A job that counts its runs and wakes waiters when ``target`` runs have happened."""

    def __init__(self, target: int, fail_on: frozenset[int] = frozenset()) -> None:
        self.runs = 0
        self.target = target
        self.fail_on = fail_on
        self.reached = asyncio.Event()

    async def __call__(self) -> None:
        self.runs += 1
        if self.runs >= self.target:
            self.reached.set()
        if self.runs in self.fail_on:
            raise RuntimeError(f"run {self.runs} broke")


async def test_runs_the_job_again_and_again_until_stopped() -> None:
    job = Counter(target=3)
    periodic = Periodic("counting", INTERVAL, job)
    periodic.start()
    assert periodic.running

    await asyncio.wait_for(job.reached.wait(), HANG_GUARD)
    await asyncio.wait_for(periodic.stop(), HANG_GUARD)

    assert not periodic.running
    runs = job.runs
    assert runs >= 3
    await asyncio.sleep(INTERVAL * 5)
    assert job.runs == runs


async def test_a_failing_run_is_logged_with_its_traceback_and_the_next_run_still_comes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    job = Counter(target=4, fail_on=frozenset({1, 3}))
    periodic = Periodic("flaky", INTERVAL, job)
    with caplog.at_level(logging.ERROR, logger="bot.jobs.periodic"):
        periodic.start()
        await asyncio.wait_for(job.reached.wait(), HANG_GUARD)
        await periodic.stop()

    failures = [r for r in caplog.records if r.name == "bot.jobs.periodic" and "flaky" in r.getMessage()]
    assert len(failures) == 2
    assert all(r.exc_info is not None and isinstance(r.exc_info[1], RuntimeError) for r in failures)
    assert [str(r.exc_info[1]) for r in failures if r.exc_info] == ["run 1 broke", "run 3 broke"]


async def test_stop_ends_a_long_wait_at_once() -> None:
    job = Counter(target=1)
    periodic = Periodic("hourly", 3600, job)
    periodic.start()
    await asyncio.wait_for(job.reached.wait(), HANG_GUARD)  # the first run, then an hour's wait

    await asyncio.wait_for(periodic.stop(), HANG_GUARD)

    assert not periodic.running and job.runs == 1


async def test_stop_lets_a_run_in_progress_finish() -> None:
    started, release = asyncio.Event(), asyncio.Event()
    finished: list[bool] = []

    async def job() -> None:
        started.set()
        await release.wait()
        finished.append(True)

    periodic = Periodic("slow", INTERVAL, job, grace_seconds=HANG_GUARD * 2)
    periodic.start()
    await asyncio.wait_for(started.wait(), HANG_GUARD)

    stopping = asyncio.create_task(periodic.stop())
    for _ in range(10):
        await asyncio.sleep(0)
    assert not stopping.done() and finished == []
    release.set()
    await asyncio.wait_for(stopping, HANG_GUARD)

    assert finished == [True] and not periodic.running


async def test_stop_cancels_a_run_that_outlasts_the_grace_period() -> None:
    started = asyncio.Event()
    cancelled: list[bool] = []

    async def job() -> None:
        started.set()
        try:
            await asyncio.Event().wait()  # never set
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    periodic = Periodic("stuck", INTERVAL, job, grace_seconds=0.01)
    periodic.start()
    await asyncio.wait_for(started.wait(), HANG_GUARD)

    await asyncio.wait_for(periodic.stop(), HANG_GUARD)

    assert cancelled == [True] and not periodic.running


async def test_stop_before_start_and_twice_is_harmless_and_a_runner_starts_once() -> None:
    job = Counter(target=1)
    idle = Periodic("idle", INTERVAL, job)
    await idle.stop()
    assert not idle.running and job.runs == 0

    periodic = Periodic("once", INTERVAL, job)
    periodic.start()
    with pytest.raises(RuntimeError, match="already started"):
        periodic.start()
    await periodic.stop()
    await periodic.stop()
    assert not periodic.running


async def test_jitter_still_runs_the_job() -> None:
    job = Counter(target=2)
    periodic = Periodic("jittery", INTERVAL, job, jitter=INTERVAL)
    periodic.start()
    await asyncio.wait_for(job.reached.wait(), HANG_GUARD)
    await periodic.stop()
    assert job.runs >= 2


@pytest.mark.parametrize(("interval", "jitter", "grace"), [(0, 0, 1), (-1, 0, 1), (1, -0.5, 1), (1, 0, -1)])
def test_nonsense_timings_are_refused(interval: float, jitter: float, grace: float) -> None:
    async def job() -> None:
        return None

    with pytest.raises(ValueError):
        Periodic("bad", interval, job, jitter=jitter, grace_seconds=grace)


# --- wiring: the setting, and only a serving process runs the expiry job ------------------------


def expiry_runners() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name() == f"periodic:{EXPIRY_JOB}" and not t.done()]


def test_the_check_interval_is_a_setting_with_a_default_and_is_checked() -> None:
    base = {"SLACK_BOT_TOKEN": "xoxb-0000-test", "SLACK_SIGNING_SECRET": "test-signing-secret"}
    assert Settings.from_mapping(base).expiry_check_seconds == 300.0
    assert (
        Settings.from_mapping({**base, "CONNECTIONS_EXPIRY_CHECK_SECONDS": "0.2"}).expiry_check_seconds == 0.2
    )
    for bad in ("0", "-1", "soon", "nan", "inf"):
        with pytest.raises(ConfigError, match="CONNECTIONS_EXPIRY_CHECK_SECONDS"):
            Settings.from_mapping({**base, "CONNECTIONS_EXPIRY_CHECK_SECONDS": bad})


@asynccontextmanager
async def serving(app: ASGIApp) -> AsyncIterator[None]:
    """Start ``app``'s lifespan as a server would; shut it down when the block ends."""
    incoming: asyncio.Queue[Message] = asyncio.Queue()
    outgoing: asyncio.Queue[Message] = asyncio.Queue()

    async def send(message: Message) -> None:
        await outgoing.put(message)

    scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}

    async def run() -> None:
        await app(scope, incoming.get, send)

    server = asyncio.create_task(run())
    await incoming.put({"type": "lifespan.startup"})
    assert (await asyncio.wait_for(outgoing.get(), HANG_GUARD))["type"] == "lifespan.startup.complete"
    yield
    await incoming.put({"type": "lifespan.shutdown"})
    assert (await asyncio.wait_for(outgoing.get(), HANG_GUARD))["type"] == "lifespan.shutdown.complete"
    await asyncio.wait_for(server, HANG_GUARD)


async def test_starting_the_services_alone_runs_no_job(migrated_database_url: str) -> None:
    services = await start_services(settings_for(migrated_database_url, CONNECTIONS_MASTER_KEY=new_key()))
    try:
        assert expiry_runners() == []
        assert not any(isinstance(getattr(stop, "__self__", None), Periodic) for stop in services.stoppers)
    finally:
        await services.close()


async def test_the_served_app_runs_the_job_while_it_serves(
    migrated_database_url: str, slack_api_url: str
) -> None:
    app = BotApp(
        settings_for(migrated_database_url, CONNECTIONS_MASTER_KEY=new_key(), SLACK_API_URL=slack_api_url)
    )
    async with serving(app):
        assert len(expiry_runners()) == 1
    assert expiry_runners() == []


async def test_the_app_started_as_serve_starts_it_runs_the_job_until_it_stops(
    migrated_database_url: str, slack_api_url: str
) -> None:
    # `connections-bot serve` starts the app itself before the server's lifespan (which then finds
    # it started): the job runs from that start on, and stops with the app.
    app = BotApp(
        settings_for(migrated_database_url, CONNECTIONS_MASTER_KEY=new_key(), SLACK_API_URL=slack_api_url)
    )
    await app.start()
    try:
        assert len(expiry_runners()) == 1
        async with serving(app):
            assert len(expiry_runners()) == 1
    finally:
        await app.stop()
    assert expiry_runners() == []
