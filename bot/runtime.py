"""Wiring: from settings to the running services, and the start-up checks that guard the data."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx

from bot.background import Background
from bot.crypto import Cipher
from bot.master_key import LoadedKey, MasterKeyError
from bot.providers.registry import ProviderRegistry, build_registry
from bot.services.connections import ConnectionService
from bot.services.key_guard import guard_master_key, key_opens_database
from bot.settings import Settings
from bot.store.uow import Database

__all__ = ["PROVIDER_TIMEOUT_SECONDS", "Services", "StartupError", "start_services"]

logger = logging.getLogger(__name__)

PROVIDER_TIMEOUT_SECONDS = 10.0


class StartupError(Exception):
    """The bot must not start; the message is one line, safe to print, and says what to do."""


@dataclass
class Services:
    settings: Settings
    db: Database
    cipher: Cipher
    key: LoadedKey
    providers: ProviderRegistry
    http: httpx.AsyncClient
    background: Background
    connections: ConnectionService
    stoppers: list[Callable[[], Awaitable[object]]] = field(default_factory=list)
    """Run first at shutdown, to stop taking new work (close the Socket Mode connection)."""
    closers: list[Callable[[], Awaitable[object]]] = field(default_factory=list)
    """Run after the drain, to release what the work used."""
    extra_health: dict[str, Callable[[], Awaitable[bool]]] = field(default_factory=dict)
    """Further /healthz checks by name (the Socket Mode connection)."""

    async def healthy(self) -> dict[str, bool]:
        """What /healthz reports: the database answers, and the master key opens its canary."""
        database = await self.db.ping()
        checks = {
            "database": database,
            "master_key": database and await key_opens_database(self.db, self.cipher),
        }
        for name, check in self.extra_health.items():
            checks[name] = await check()
        return checks

    async def close(self, drain_seconds: float = 10.0) -> None:
        """Stop taking work, finish (or, past ``drain_seconds``, cancel) after-ack work, then
        release connections."""
        for stop in self.stoppers:
            await stop()
        await self.background.drain(drain_seconds)
        for close in reversed(self.closers):
            await close()
        await self.http.aclose()
        await self.db.dispose()


async def start_services(settings: Settings, *, http: httpx.AsyncClient | None = None) -> Services:
    """Open the database, load the master key (refusing one that does not open stored data) and
    build the services. Migrations must already be applied."""
    db = Database.from_url(settings.database_url)
    try:
        loaded, cipher = await guard_master_key(db, settings)
    except MasterKeyError as exc:
        await db.dispose()
        raise StartupError(str(exc)) from None
    except BaseException:
        await db.dispose()
        raise
    if loaded.warning:
        logger.warning("%s", loaded.warning)
    logger.info("master key %s loaded from %s", loaded.key.key_id, loaded.location)
    client = http or httpx.AsyncClient(
        timeout=httpx.Timeout(PROVIDER_TIMEOUT_SECONDS),
        headers={"User-Agent": "connections-bot"},
        follow_redirects=False,
    )
    providers = build_registry(settings)
    return Services(
        settings=settings,
        db=db,
        cipher=cipher,
        key=loaded,
        providers=providers,
        http=client,
        background=Background(),
        connections=ConnectionService(db, cipher, providers, client),
    )
