"""SQLite's write-ahead log is emptied after ciphertexts are destroyed, even while a reader holds it."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest

from bot.store import Database
from bot.store.db import create_engine
from bot.store.wal import WalTruncation
from tests.support.databases import raw_sqlite_bytes
from tests.unit.store.test_credentials import make_credential, stored_connection


class SteppedSleep:
    """An injected sleep that returns only when the test lets it, one call at a time."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self._asleep: asyncio.Queue[asyncio.Future[None]] = asyncio.Queue()

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._asleep.put_nowait(wake)
        await wake

    async def asleep(self) -> asyncio.Future[None]:
        """Wait for the retry to be asleep; what wakes it."""
        async with asyncio.timeout(10):  # a bound for a broken retry loop, not a measurement
            return await self._asleep.get()

    async def wake_next(self) -> None:
        (await self.asleep()).set_result(None)


@pytest.fixture
def path(tmp_path: Path, migrated_sqlite_template: Path) -> Path:
    database = tmp_path / "connections.db"
    shutil.copyfile(migrated_sqlite_template, database)
    return database


@pytest.fixture
def sleep() -> SteppedSleep:
    return SteppedSleep()


@pytest.fixture
async def db(path: Path, sleep: SteppedSleep) -> AsyncIterator[Database]:
    engine = create_engine(f"sqlite:///{path}")
    database = Database(engine, wal=WalTruncation(engine, sleep=sleep))
    try:
        yield database
    finally:
        await database.dispose()


@contextmanager
def reading(path: Path) -> Iterator[sqlite3.Connection]:
    """Another connection in the middle of a read (a backup, a ``sqlite3`` shell, a slow report)."""
    with closing(sqlite3.connect(path, isolation_level=None)) as connection:
        connection.execute("BEGIN")
        connection.execute("SELECT count(*) FROM credentials").fetchone()
        yield connection


async def store_two_versions(db: Database) -> tuple[str, bytes, bytes]:
    connection = await stored_connection(db)
    doomed, kept = os.urandom(48), os.urandom(48)
    async with db.transaction() as tx:
        for version, ciphertext in ((1, doomed), (2, kept)):
            credential = make_credential(connection, "api_secret", version)
            credential.ciphertext = ciphertext
            await tx.credentials.add(credential)
    return connection.id, doomed, kept


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "bot.store.wal" and r.levelno >= logging.WARNING
    ]


async def test_a_reader_delays_the_scrub_with_one_warning_and_the_retries_finish_it(
    db: Database, path: Path, sleep: SteppedSleep, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.store.wal")
    connection_id, doomed, kept = await store_two_versions(db)
    with reading(path) as reader:
        async with db.transaction() as tx:
            assert await tx.credentials.delete_other_versions(connection_id, keep=2) == 1
        assert doomed in raw_sqlite_bytes(path)  # the reader's snapshot holds the old pages
        [warning] = warnings_of(caplog)
        assert "(busy)" in warning and "destroyed ciphertexts stay in the database files" in warning

        # A second destroying commit in the same episode adds no warning: the retry covers it.
        async with db.transaction() as tx:
            assert await tx.credentials.delete_for(connection_id, version=2) == 1
        await sleep.wake_next()  # still held: the retry backs off
        await sleep.wake_next()
        last_sleep = await sleep.asleep()
        assert len(warnings_of(caplog)) == 1
        assert doomed in raw_sqlite_bytes(path)

        reader.execute("ROLLBACK")
        last_sleep.set_result(None)
        await db.wal.settled()
    raw = raw_sqlite_bytes(path)
    assert doomed not in raw and kept not in raw
    assert path.with_name(path.name + "-wal").stat().st_size == 0
    assert sleep.delays == [1.0, 2.0, 4.0]
    assert "SQLite write-ahead log emptied after 4 tries" in caplog.messages


async def test_shutdown_stops_the_retries_and_says_what_may_remain(
    db: Database, path: Path, sleep: SteppedSleep, caplog: pytest.LogCaptureFixture
) -> None:
    connection_id, _doomed, _kept = await store_two_versions(db)
    with reading(path):
        async with db.transaction() as tx:
            await tx.credentials.delete_other_versions(connection_id, keep=2)
        await sleep.wake_next()
        await sleep.asleep()

        await db.wal.close()
    assert sleep.delays == [1.0, 2.0]  # asleep before its third try, and never woken
    assert "closing with the SQLite write-ahead log not yet emptied" in warnings_of(caplog)[-1]
