"""A PostgreSQL host that accepts connections and never answers fails a request instead of holding
it (and its user) for good."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest
from sqlalchemy.exc import OperationalError

from bot.store import db as store_db
from bot.store.db import create_engine


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A listening socket that accepts (the kernel completes the handshake) and never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield int(listener.getsockname()[1])


async def test_a_silent_server_fails_the_connection_after_the_timeout(
    silent_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_db, "CONNECT_TIMEOUT_SECONDS", 1)
    engine = create_engine(f"postgresql://bot@127.0.0.1:{silent_port}/bot")
    try:
        # The outer bound only keeps a broken build from hanging the suite; the driver must fail first.
        with pytest.raises(OperationalError):
            await asyncio.wait_for(engine.connect(), timeout=30)
    finally:
        await engine.dispose()


async def test_a_timeout_in_the_url_takes_precedence(
    silent_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_db, "CONNECT_TIMEOUT_SECONDS", 3600)
    engine = create_engine(f"postgresql://bot@127.0.0.1:{silent_port}/bot?connect_timeout=1")
    try:
        with pytest.raises(OperationalError):
            await asyncio.wait_for(engine.connect(), timeout=30)
    finally:
        await engine.dispose()
