"""A resolver to give :class:`bot.outbound.Policy` instead of the system's: it answers every lookup
with the addresses a test chose (or fails as told) and remembers what it was asked."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

__all__ = ["PUBLIC_IP", "FakeResolver"]

PUBLIC_IP = "52.10.20.30"
"""A public address (in a cloud provider's range) that no test ever connects to."""


@dataclass
class FakeResolver:
    """Answers every lookup with ``addresses``, or raises ``error``; remembers what was asked."""

    addresses: list[str] = field(default_factory=lambda: [PUBLIC_IP])
    error: BaseException | None = None
    hang: bool = False
    asked: list[tuple[str, int]] = field(default_factory=list)

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append((host, port))
        if self.hang:
            await asyncio.Event().wait()
        if self.error is not None:
            raise self.error
        return self.addresses
