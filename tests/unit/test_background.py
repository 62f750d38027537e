"""Background work after an ack: kept alive, failures logged, drained on shutdown."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bot.background import Background


async def test_spawned_work_runs_to_completion() -> None:
    background = Background()
    done = asyncio.Event()

    async def work() -> None:
        await asyncio.sleep(0)
        done.set()

    background.spawn(work(), name="work")
    await asyncio.wait_for(done.wait(), 5)
    await asyncio.sleep(0)
    assert background.pending == 0


async def test_a_failure_is_logged_with_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    background = Background()

    async def broken() -> None:
        raise RuntimeError("boom")

    with caplog.at_level(logging.ERROR, logger="bot.background"):
        task = background.spawn(broken(), name="broken")
        await asyncio.wait([task])
        await asyncio.sleep(0)
    assert any("broken" in r.getMessage() and r.exc_info for r in caplog.records)


async def test_drain_waits_then_cancels_what_is_left() -> None:
    background = Background()
    finished = asyncio.Event()

    async def quick() -> None:
        await asyncio.sleep(0.01)
        finished.set()

    async def stuck() -> None:
        await asyncio.Event().wait()

    background.spawn(quick(), name="quick")
    slow = background.spawn(stuck(), name="stuck")
    await background.drain(timeout=0.2)
    assert finished.is_set()
    assert slow.cancelled()
