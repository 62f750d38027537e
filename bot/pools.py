"""The HTTP clients for provider calls: one pool for verifications a person waits for (a new
connection, a rotation, one re-test) and one for bulk re-tests (``test all``, the schedule).

Separate pools, so a bulk run can never hold every connection an interactive verification needs.
On the interactive pool at most ``per_host`` requests go to one host (``host:port``) at once and
the others wait their turn, so forms pointed at one slow host cannot take the whole pool either.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

__all__ = ["HostSlots", "PerHostClient", "provider_client"]


@dataclass
class _Host:
    slots: asyncio.Semaphore
    users: int = 0
    """Requests running or waiting; the entry goes when none is left, so hosts seen once (every
    form can name its own) do not accumulate."""


@dataclass
class HostSlots:
    """At most ``per_host`` holders per host at once; the others wait in order."""

    per_host: int
    _hosts: dict[str, _Host] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        if self.per_host < 1:
            raise ValueError("per_host must be at least 1")

    def in_flight(self, host: str) -> int:
        """Holders of ``host``'s slots and those waiting for one."""
        found = self._hosts.get(host)
        return 0 if found is None else found.users

    @asynccontextmanager
    async def slot(self, host: str) -> AsyncIterator[None]:
        entry = self._hosts.setdefault(host, _Host(asyncio.Semaphore(self.per_host)))
        entry.users += 1
        try:
            async with entry.slots:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._hosts[host]


class PerHostClient(httpx.AsyncClient):
    """An ``AsyncClient`` whose requests take one of their host's :class:`HostSlots` from the send
    until the response is read (every provider call reads it whole: none streams)."""

    def __init__(self, *, per_host: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hosts = HostSlots(per_host)

    async def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        async with self.hosts.slot(request.url.netloc.decode("ascii")):
            return await super().send(request, **kwargs)


def provider_client(connections: int, *, timeout: float, per_host: int | None = None) -> httpx.AsyncClient:
    """A client for provider calls with a pool of ``connections``, all kept alive (httpx keeps 20
    alive by default: a bulk re-test above 20 would open a new TLS connection per call);
    ``per_host`` caps the requests to one host at once (see :class:`PerHostClient`)."""
    options: dict[str, Any] = {
        "limits": httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        "timeout": httpx.Timeout(timeout),
        "headers": {"User-Agent": "connections-bot"},
        "follow_redirects": False,
    }
    return httpx.AsyncClient(**options) if per_host is None else PerHostClient(per_host=per_host, **options)
