"""Work that runs after Slack has been answered.

Slack allows 3 seconds for an acknowledgement, so listeners ack first and hand slow work (a
provider call, then a ``views.update``) to :class:`Background`. Keeping a strong reference to each
task matters: the event loop only holds weak ones, and a collected task would leave a user's modal
on "Verifying…" forever. ``drain()`` lets a shutdown finish what is in flight.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

__all__ = ["CANCEL_GRACE_SECONDS", "Background"]

logger = logging.getLogger(__name__)

CANCEL_GRACE_SECONDS = 1.0
"""How long cancelled work may take to finish its last words before the drain returns."""


class Background:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, work: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        """Run ``work`` in the background; its result is dropped, its failure logged."""
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            logger.warning("background task %s was cancelled", task.get_name())
            return
        error = task.exception()
        if error is not None:
            # Each job handles its own expected failures; anything here is a bug worth a traceback.
            logger.error("background task %s failed", task.get_name(), exc_info=error)

    @property
    def pending(self) -> int:
        return len(self._tasks)

    async def drain(self, timeout: float) -> None:
        """Wait for in-flight work up to ``timeout`` seconds, then cancel what is left."""
        if not self._tasks:
            return
        _done, still_running = await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in still_running:
            task.cancel()
        if still_running:
            await asyncio.wait(still_running, timeout=CANCEL_GRACE_SECONDS)
