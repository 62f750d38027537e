"""How often one person may start work that calls a provider: submissions (new connections),
re-tests and rotations, each counted per workspace and user over a moving minute.

The limits are set high enough that nobody working by hand meets them; they stop a script (or a
held-down Enter key) from making the bot call providers and write rows without end. They are
checked before anything is written or any provider is called.

Counted in the memory of each process, with the ``limits`` library's moving window: a check costs
no database round trip on the way to Slack's 3-second ack, and nothing is left to clean up. With
several replicas behind one URL a person can reach at most the limit on each of them; one ``test
all`` per workspace, which must hold across replicas, is claimed in the database instead
(:mod:`bot.services.retests`).
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from limits import RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter

from bot.domain import Refusal, Refused

__all__ = ["Action", "UserLimits"]


class Action(enum.Enum):
    SUBMISSION = "submission"
    RETEST = "retest"
    ROTATION = "rotation"


_SAID = {
    Action.SUBMISSION: ("submitted", "new connection"),
    Action.RETEST: ("started", "re-test"),
    Action.ROTATION: ("submitted", "rotation"),
}


@dataclass
class UserLimits:
    """``per_minute[action]`` starts of each action per user; ``clock`` must be the one the
    ``limits`` storage reads (``time.time``), and is injectable for tests that move both."""

    per_minute: Mapping[Action, int]
    clock: Callable[[], float] = time.time
    _limiter: MovingWindowRateLimiter = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # The namespace keeps actions apart: the library keys a count by amount and period.
        self._items = {
            action: RateLimitItemPerMinute(n, namespace=action.value) for action, n in self.per_minute.items()
        }
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    async def take(self, action: Action, team_id: str, user_id: str) -> Refused | None:
        """Count one ``action`` by the user, or, past the limit, say when they may try again
        (and count nothing)."""
        item = self._items[action]
        if await self._limiter.hit(item, team_id, user_id):
            return None
        stats = await self._limiter.get_window_stats(item, team_id, user_id)
        wait = max(1, math.ceil(stats.reset_time - self.clock()))
        verb, noun = _SAID[action]
        count = f"{item.amount} {noun}" + ("" if item.amount == 1 else "s")
        return Refused(
            Refusal.TOO_MANY,
            f"You've {verb} {count} in the last minute; try again in {wait} s.",
        )
