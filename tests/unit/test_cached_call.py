"""CachedCall, which /healthz answers through: one computation per window, shared by everyone
waiting for it, and no failure kept."""

from __future__ import annotations

import asyncio

import pytest

from bot.cached_call import CachedCall


class Check:
    """A health check that counts its runs and can be held open or made to fail."""

    def __init__(self) -> None:
        self.runs = 0
        self.release = asyncio.Event()
        self.release.set()
        self.fail = False

    async def __call__(self) -> int:
        self.runs += 1
        await self.release.wait()
        if self.fail:
            raise ConnectionError("database went away")
        return self.runs


async def test_calls_within_the_window_share_one_run_and_the_next_window_runs_again() -> None:
    now = [100.0]
    check = Check()
    cached = CachedCall(check, ttl=5, clock=lambda: now[0])

    assert [await cached() for _ in range(10)] == [1] * 10
    now[0] = 104.9
    assert await cached() == 1
    now[0] = 105.0
    assert await cached() == 2
    assert check.runs == 2


async def test_callers_arriving_during_a_run_wait_for_that_run() -> None:
    check = Check()
    check.release.clear()
    cached = CachedCall(check, ttl=5)

    waiting = [asyncio.create_task(cached()) for _ in range(25)]
    await asyncio.sleep(0)
    check.release.set()

    assert await asyncio.gather(*waiting) == [1] * 25
    assert check.runs == 1


async def test_one_caller_going_away_does_not_cancel_the_others() -> None:
    check = Check()
    check.release.clear()
    cached = CachedCall(check, ttl=5)
    impatient, patient = asyncio.create_task(cached()), asyncio.create_task(cached())
    await asyncio.sleep(0)
    impatient.cancel()
    check.release.set()

    assert await patient == 1
    with pytest.raises(asyncio.CancelledError):
        await impatient


async def test_a_failure_is_not_kept() -> None:
    check = Check()
    check.fail = True
    cached = CachedCall(check, ttl=5)
    with pytest.raises(ConnectionError):
        await cached()
    check.fail = False
    assert await cached() == 2
