"""An async call whose answer is reused for a few seconds, computed once for all who wait."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["CachedCall"]

T = TypeVar("T")


class CachedCall(Generic[T]):
    """``await cached()`` answers what ``compute()`` last returned, for ``ttl`` seconds after it
    returned; then the next caller starts a new computation, and every caller that arrives
    before it ends waits for that same one. A failure is not kept: the next caller tries again."""

    def __init__(
        self, compute: Callable[[], Awaitable[T]], *, ttl: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._compute = compute
        self._ttl = ttl
        self._clock = clock
        self._answer: tuple[float, T] | None = None
        self._running: asyncio.Future[T] | None = None

    async def __call__(self) -> T:
        if self._answer is not None and self._clock() < self._answer[0]:
            return self._answer[1]
        if self._running is None:
            self._running = asyncio.ensure_future(self._refresh())
        # One caller going away (a client disconnecting) must not cancel the others' answer.
        return await asyncio.shield(self._running)

    async def _refresh(self) -> T:
        try:
            value = await self._compute()
            self._answer = (self._clock() + self._ttl, value)
            return value
        finally:
            self._running = None
