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
        background.spawn(broken(), name="broken")
        await background.drain(timeout=5)
    assert any("broken" in r.getMessage() and r.exc_info for r in caplog.records)


async def test_drain_waits_then_cancels_what_is_left() -> None:
    background = Background()
    finished = asyncio.Event()

    async def quick() -> None:
        await asyncio.sleep(0.01)
        finished.set()

    cancelled = asyncio.Event()

    async def stuck() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    background.spawn(quick(), name="quick")
    background.spawn(stuck(), name="stuck")
    await background.drain(timeout=0.2)
    assert finished.is_set()
    assert cancelled.is_set()


async def test_work_beyond_the_limit_queues_instead_of_starting() -> None:
    background = Background(limit=2)
    gate = asyncio.Event()
    started: list[int] = []

    async def work(n: int) -> None:
        started.append(n)
        await gate.wait()

    for n in range(5):
        background.spawn(work(n), name=f"work-{n}")
    await asyncio.sleep(0.01)
    # Two running, three waiting as coroutines: no task exists for them yet.
    assert started == [0, 1]
    assert (background.running, background.pending) == (2, 5)
    assert len([t for t in asyncio.all_tasks() if t.get_name().startswith("work-")]) == 2

    gate.set()
    await background.drain(timeout=5)
    assert started == [0, 1, 2, 3, 4]  # in the order they came
    assert background.pending == 0


async def test_a_drain_starts_queued_work_so_it_can_say_its_last_words() -> None:
    background = Background(limit=1)
    told: list[str] = []

    async def verification(name: str) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            told.append(name)  # "interrupted, nothing was saved"
            raise

    background.spawn(verification("first"), name="first")
    background.spawn(verification("queued"), name="queued")
    await background.drain(timeout=0.05)
    assert sorted(told) == ["first", "queued"]
