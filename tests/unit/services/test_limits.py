"""Per-user limits on submissions, re-tests and rotations, on a clock the test moves."""

from __future__ import annotations

import types
from collections.abc import Iterator

import pytest
from limits.aio.storage import memory

from bot.domain import Refusal
from bot.services.limits import Action, UserLimits

TEAM, USER, OTHER_USER = "T0000TEAM", "U0000USER", "U0000OTHER"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    """One clock for the limiter and for the storage of the ``limits`` library (which reads
    ``time.time`` itself)."""
    clock = Clock()
    monkeypatch.setattr(memory, "time", types.SimpleNamespace(time=clock.time))
    yield clock


def limits(clock: Clock, n: int = 2) -> UserLimits:
    return UserLimits({action: n for action in Action}, clock=clock.time)


async def test_past_the_limit_a_user_is_told_how_long_to_wait(clock: Clock) -> None:
    limiter = limits(clock)
    assert await limiter.take(Action.RETEST, TEAM, USER) is None
    clock.now += 20
    assert await limiter.take(Action.RETEST, TEAM, USER) is None
    clock.now += 10

    refused = await limiter.take(Action.RETEST, TEAM, USER)

    assert refused is not None and refused.reason is Refusal.TOO_MANY
    # The first of the two leaves the moving minute 30 s from now.
    assert refused.message == "You've started 2 re-tests in the last minute; try again in 30 s."


async def test_the_window_moves_and_a_refusal_is_not_counted(clock: Clock) -> None:
    limiter = limits(clock)
    for _ in range(2):
        assert await limiter.take(Action.SUBMISSION, TEAM, USER) is None
    clock.now += 59
    assert await limiter.take(Action.SUBMISSION, TEAM, USER) is not None
    clock.now += 2
    # A minute after the first two, both slots are free again, refusals notwithstanding.
    assert await limiter.take(Action.SUBMISSION, TEAM, USER) is None
    assert await limiter.take(Action.SUBMISSION, TEAM, USER) is None


async def test_each_user_and_each_action_has_its_own_count(clock: Clock) -> None:
    limiter = limits(clock, n=1)
    assert await limiter.take(Action.ROTATION, TEAM, USER) is None
    rotation = await limiter.take(Action.ROTATION, TEAM, USER)
    assert rotation is not None
    assert rotation.message == "You've submitted 1 rotation in the last minute; try again in 60 s."
    assert await limiter.take(Action.ROTATION, TEAM, OTHER_USER) is None
    assert await limiter.take(Action.ROTATION, "T0000OTHER", USER) is None
    assert await limiter.take(Action.SUBMISSION, TEAM, USER) is None
    submission = await limiter.take(Action.SUBMISSION, TEAM, USER)
    assert submission is not None and "submitted 1 new connection in" in submission.message
