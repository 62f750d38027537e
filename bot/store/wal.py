"""Emptying SQLite's write-ahead log after ciphertexts were destroyed, until it is done.

``PRAGMA wal_checkpoint(TRUNCATE)`` does not raise when another connection (a backup, a
``sqlite3`` shell, a slow read) holds an older snapshot: it answers ``busy`` and leaves the
destroyed rows' old pages in the ``-wal`` file and, until they are copied over, in the main file.
So a busy answer starts an episode: one warning, then retries on a timer with backoff, in a task
of their own so no request waits for them, until a checkpoint completes or the database closes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Final

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.store.db import SQLITE_BUSY_TIMEOUT_MS

__all__ = ["CHECKPOINT_BUSY_MS", "RETRY_FIRST_SECONDS", "RETRY_MAX_SECONDS", "WalTruncation"]

logger = logging.getLogger(__name__)

CHECKPOINT_BUSY_MS: Final = 100
"""How long one truncation may wait for readers to finish: it holds every writer back meanwhile
(a click's ack among them), so it tries briefly and leaves the rest to the retries."""
RETRY_FIRST_SECONDS: Final = 1.0
RETRY_MAX_SECONDS: Final = 60.0


class WalTruncation:
    """Truncates the write-ahead log of a SQLite ``engine`` now, or retries until it can."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        first_delay: float = RETRY_FIRST_SECONDS,
        max_delay: float = RETRY_MAX_SECONDS,
    ) -> None:
        self._engine = engine
        self._sleep = sleep
        self._first_delay = first_delay
        self._max_delay = max_delay
        self._retrying: asyncio.Task[None] | None = None

    async def after_destroying_commit(self) -> None:
        """Truncate now; if that fails, warn once and keep retrying in the background."""
        if self._retrying is not None:
            return  # the scheduled retry truncates this commit's pages as well
        failure = await self._truncate()
        if failure is None or self._retrying is not None:  # another commit may have started it meanwhile
            return
        logger.warning(
            "could not empty the SQLite write-ahead log (%s): destroyed ciphertexts stay in the "
            "database files until it can; retrying every %.0f s at most",
            failure,
            self._max_delay,
        )
        self._retrying = asyncio.get_running_loop().create_task(self._retry(), name="sqlite-wal-truncation")

    async def settled(self) -> None:
        """Wait until the pending retries, if any, have emptied the log."""
        if self._retrying is not None:
            await asyncio.shield(self._retrying)

    async def close(self) -> None:
        """Stop retrying (at shutdown); says so if destroyed ciphertexts may remain in the files."""
        task, self._retrying = self._retrying, None
        if task is None:
            return
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        logger.warning(
            "closing with the SQLite write-ahead log not yet emptied: destroyed ciphertexts may remain "
            "in the database files until the next checkpoint"
        )

    async def _retry(self) -> None:
        delay, tries = self._first_delay, 1
        while True:
            await self._sleep(delay)
            tries += 1
            if await self._truncate() is None:
                logger.info("SQLite write-ahead log emptied after %d tries", tries)
                self._retrying = None
                return
            delay = min(delay * 2, self._max_delay)

    async def _truncate(self) -> str | None:
        """One checkpoint; None once it completed, else why not ("busy": SQLite's ``busy`` column,
        set while another connection reads an older snapshot)."""
        try:
            async with self._engine.connect() as connection:
                await connection.exec_driver_sql(f"PRAGMA busy_timeout={CHECKPOINT_BUSY_MS:d}")
                try:
                    result = await connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
                    busy = result.one()[0]  # then the log's frames, and how many were copied
                finally:
                    await connection.exec_driver_sql(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS:d}")
        except (SQLAlchemyError, OSError) as error:
            return type(error).__name__  # the type only: driver messages can name files
        return "busy" if busy else None
