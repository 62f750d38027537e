"""start_services and /healthz with a secret store (an in-memory one stands in for AWS or Vault):
the store is checked like the database and the master key, closed at shutdown, and a start warns
about active connections whose credential is not where the bot now keeps credentials."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import keyring
import keyring.backends.fail
import pytest
from keyring.backend import KeyringBackend

from bot.app import BotApp
from bot.domain import Status
from bot.runtime import start_services
from bot.store import Connection
from tests.support.memory_store import MemoryStore
from tests.unit.test_runtime import get_healthz, new_key, settings_for


@pytest.fixture(autouse=True)
def no_keyring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home" / ".config"))
    previous: KeyringBackend = keyring.get_keyring()
    keyring.set_keyring(keyring.backends.fail.Keyring())  # type: ignore[no-untyped-call]
    try:
        yield
    finally:
        keyring.set_keyring(previous)


def app_with(database_url: str, slack_api_url: str, store: MemoryStore, cache_seconds: float = 0) -> BotApp:
    settings = settings_for(database_url, CONNECTIONS_MASTER_KEY=new_key(), SLACK_API_URL=slack_api_url)
    return BotApp(settings, health_cache_seconds=cache_seconds, store=store)


async def test_health_reports_whether_the_store_answers_and_accepts_the_bot(
    migrated_database_url: str, slack_api_url: str
) -> None:
    store = MemoryStore()
    app = app_with(migrated_database_url, slack_api_url, store)
    await app.start()
    try:
        working = await get_healthz(app)
        assert working.status_code == 200
        assert working.json() == {"status": "ok", "database": "ok", "master_key": "ok", "secret_store": "ok"}

        for arrange in (store.deny, store.take_down):
            store.restore()
            arrange("check")
            failing = await get_healthz(app)
            assert failing.status_code == 503
            assert failing.json()["secret_store"] == "failing"
            assert failing.json()["database"] == "ok"
    finally:
        await app.stop()
    assert store.closed, "closed at shutdown"


async def test_the_store_check_is_cached_with_the_rest(
    migrated_database_url: str, slack_api_url: str
) -> None:
    store = MemoryStore()
    app = app_with(migrated_database_url, slack_api_url, store, cache_seconds=60)
    await app.start()
    try:
        for _ in range(3):
            assert (await get_healthz(app)).status_code == 200
    finally:
        await app.stop()
    assert len(store.made("check")) == 1


async def test_a_local_bot_reports_no_store(migrated_database_url: str) -> None:
    services = await start_services(settings_for(migrated_database_url, CONNECTIONS_MASTER_KEY=new_key()))
    try:
        assert services.store is None
        assert "secret_store" not in await services.healthy()
    finally:
        await services.close()


def active_connection(name: str, secret_store: str | None) -> Connection:
    return Connection(
        team_id="T0000TEAM",
        name=name,
        provider="confluent_cloud",
        created_by="U0000USER",
        status=Status.ACTIVE,
        secret_store=secret_store,
        secret_path=None if secret_store is None else f"connections/T0000TEAM/confluent_cloud/{name}",
        secret_version=None if secret_store is None else "1",
    )


async def test_a_start_warns_about_credentials_the_configured_store_does_not_hold(
    migrated_database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    key = new_key()
    settings = settings_for(migrated_database_url, CONNECTIONS_MASTER_KEY=key)
    services = await start_services(settings)
    try:
        async with services.db.transaction() as tx:
            await tx.connections.add(active_connection("in-vault", "vault"))
            await tx.connections.add(active_connection("in-memory", "memory"))
            await tx.connections.add(active_connection("sealed-here", None))
    finally:
        await services.close()

    caplog.set_level(logging.WARNING)
    services = await start_services(settings, store=MemoryStore())
    await services.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        "1 active connection(s) have their credential in another secret store" in w
        and "migrate-secrets --to memory" in w
        for w in warnings
    ), warnings
    assert any(
        "1 active connection(s) still have their credential sealed in the bot's database" in w
        for w in warnings
    ), warnings

    caplog.clear()
    services = await start_services(settings)
    await services.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        "2 active connection(s) have their credential in another secret store" in w
        and "migrate-secrets --to local" in w
        for w in warnings
    ), warnings
    assert not any("sealed in the bot's database" in w for w in warnings)
