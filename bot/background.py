"""Work that runs after Slack has been answered.

Slack allows 3 seconds for an acknowledgement, so listeners ack first and hand slow work (a
provider call, then a ``views.update``) to :class:`Background`. Keeping a strong reference to each
task matters: the event loop only holds weak ones, and a collected task would leave a user's modal
on "Verifying…" forever. At most ``limit`` run at once: a burst waits in order, as coroutines not
yet started, instead of growing without bound; ``spawn`` itself never waits, so an ack never does.
``drain()`` lets a shutdown finish what is in flight.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Coroutine
from typing import Any

__all__ = ["CANCEL_GRACE_SECONDS", "DEFAULT_LIMIT", "Background"]

logger = logging.getLogger(__name__)

CANCEL_GRACE_SECONDS = 1.0
"""How long cancelled work may take to finish its last words before the drain returns."""
DEFAULT_LIMIT = 256
"""Tasks running at once; far above what a workspace asks for, so only a flood ever queues."""


class Background:
    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._tasks: set[asyncio.Task[Any]] = set()
        self._queued: deque[tuple[Coroutine[Any, Any, Any], str]] = deque()

    def spawn(self, work: Coroutine[Any, Any, Any], *, name: str) -> None:
        """Run ``work`` in the background, now or once a running task ends; its result is
        dropped, its failure logged."""
        self._queued.append((work, name))
        self._start_queued()

    def _start_queued(self, *, unbounded: bool = False) -> None:
        loop = asyncio.get_running_loop()
        while self._queued and (unbounded or len(self._tasks) < self.limit):
            work, name = self._queued.popleft()
            task = loop.create_task(work, name=name)
            self._tasks.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        self._start_queued()
        if task.cancelled():
            logger.warning("background task %s was cancelled", task.get_name())
            return
        error = task.exception()
        if error is not None:
            # Each job handles its own expected failures; anything here is a bug worth a traceback.
            logger.error("background task %s failed", task.get_name(), exc_info=error)

    @property
    def running(self) -> int:
        return len(self._tasks)

    @property
    def pending(self) -> int:
        """Running and queued."""
        return len(self._tasks) + len(self._queued)

    async def drain(self, timeout: float) -> None:
        """Wait for in-flight work up to ``timeout`` seconds, then cancel what is left."""
        # Queued work starts now, whatever the limit: nothing new comes in, and each piece of
        # work has its own last words for its user if it is cut short, which it can only say
        # once started.
        self._start_queued(unbounded=True)
        if not self._tasks:
            return
        _done, still_running = await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in still_running:
            task.cancel()
        if still_running:
            await asyncio.wait(still_running, timeout=CANCEL_GRACE_SECONDS)
