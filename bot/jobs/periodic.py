"""A small in-process runner for the bot's periodic jobs.

Why not a cron library (APScheduler and the like): the jobs run inside the serving process on its
event loop, and need no job store, calendar or misfire policy. Nor do they need a lock across
replicas: every replica runs them, and the database decides who does what (conditional updates,
``SKIP LOCKED`` claims), so a duplicate run finds nothing left to do. Jitter keeps replicas
started together by a deploy from querying the database at the same instant.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

__all__ = ["FIRST_RUN_DELAY_SECONDS", "STOP_GRACE_SECONDS", "Periodic"]

logger = logging.getLogger(__name__)

FIRST_RUN_DELAY_SECONDS = 5.0
"""The longest wait before the first run: long enough for the server to finish starting."""
STOP_GRACE_SECONDS = 10.0
"""How long :meth:`Periodic.stop` lets a run in progress finish before cancelling it."""


class Periodic:
    """Runs ``job`` every ``interval_seconds`` (plus up to ``jitter`` seconds, drawn anew each
    time) on the running event loop, from :meth:`start` until :meth:`stop`.

    The first run comes after ``min(interval_seconds, FIRST_RUN_DELAY_SECONDS)`` plus jitter. Runs
    never overlap: the next wait starts when a run ends. A run that raises is logged with its
    traceback and the schedule goes on.
    """

    def __init__(
        self,
        name: str,
        interval_seconds: float,
        job: Callable[[], Awaitable[None]],
        *,
        jitter: float = 0.0,
        grace_seconds: float = STOP_GRACE_SECONDS,
    ) -> None:
        if interval_seconds <= 0:
            raise ValueError("interval_seconds must be more than 0")
        if jitter < 0 or grace_seconds < 0:
            raise ValueError("jitter and grace_seconds must not be negative")
        self.name = name
        self._interval = interval_seconds
        self._job = job
        self._jitter = jitter
        self._grace = grace_seconds
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Schedule the runs on the running event loop; a runner starts once."""
        if self._task is not None:
            raise RuntimeError(f"periodic job {self.name} was already started")
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"periodic:{self.name}")

    async def stop(self) -> None:
        """Run no more. A wait ends at once; a run in progress gets ``grace_seconds`` to finish
        (cut short, a run could have committed work it has not yet reported), then is cancelled.
        Returns when the runner has ended; calling it again, or before :meth:`start`, does nothing."""
        self._stopping.set()
        task = self._task
        if task is None or task.done():
            return
        await asyncio.wait({task}, timeout=self._grace)
        if not task.done():
            logger.warning(
                "periodic job %s still running after %.1f s; cancelling it", self.name, self._grace
            )
            task.cancel()
            await asyncio.wait({task})

    async def _loop(self) -> None:
        delay = min(self._interval, FIRST_RUN_DELAY_SECONDS)
        while not await self._stopped_within(delay + self._jitter * random.random()):
            try:
                await self._job()
            except Exception:
                logger.exception("periodic job %s failed; next run in %.1f s", self.name, self._interval)
            delay = self._interval

    async def _stopped_within(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except TimeoutError:
            return False
        return True
