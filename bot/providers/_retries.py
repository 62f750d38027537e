"""Retrying an HTTP provider's "not now" (429) and failures (5xx), shared by the HTTP plug-ins.

Each provider subclasses :class:`RetryPolicy` with its own defaults (how many tries its API's
documentation recommends); the arithmetic of a jittered back-off and the reading of
``Retry-After`` are the same for all.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

__all__ = ["RetryPolicy", "retry_after"]


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try when a provider says "not now" (429), fails (5xx) or doesn't answer."""

    rate_limit_retries: int = 1
    server_error_retries: int = 1
    timeout_retries: int = 0
    backoff: tuple[float, ...] = (1.0, 2.0)
    """Seconds to wait before retry n, when the response does not say."""
    jitter: float = 0.25
    """Up to this fraction is added to each backoff step, so callers that failed together spread out."""
    max_retry_after: float = 30.0
    """The longest ``Retry-After`` worth waiting for; past it we give up at once, as rate_limited."""
    rng: Callable[[], float] = field(default=random.random, repr=False)

    def backoff_delay(self, retry: int) -> float:
        step = self.backoff[min(retry, len(self.backoff) - 1)]
        return step * (1 + self.jitter * self.rng())


def retry_after(response: httpx.Response) -> float | None:
    """The seconds a response's ``Retry-After`` asks for (a number; HTTP dates are not used by
    these APIs), or None when it says nothing usable."""
    try:
        return max(0.0, float(response.headers.get("retry-after", "")))
    except ValueError:
        return None
