"""Log lines that anyone on the internet can cause, at a rate that cannot fill a disk."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["LogThrottle"]


@dataclass
class _Window:
    opens_again_at: float
    held_back: int = 0


class LogThrottle:
    """At most one WARNING per key every ``interval`` seconds; the next line that gets through
    says how many were held back meanwhile. Keys are a small fixed set (reasons), never input."""

    def __init__(
        self, logger: logging.Logger, *, interval: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._windows: dict[str, _Window] = {}

    def warning(self, key: str, message: str, *args: object) -> None:
        now = self._clock()
        window = self._windows.get(key)
        if window is not None and now < window.opens_again_at:
            window.held_back += 1
            return
        self._windows[key] = _Window(now + self._interval)
        if window is not None and window.held_back:
            message += " (%d more like it since the last such line were not logged)"
            args = (*args, window.held_back)
        self._logger.warning(message, *args)
