"""start_services and Services on SQLite and PostgreSQL: the master-key guard and /healthz.

The database is real and migrated, the master key is real, and the one credential these tests
store is verified by the real Confluent provider against the fake API (in-process).
"""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import keyring
import keyring.backends.fail
import pytest
from keyring.backend import KeyringBackend
from sqlalchemy import update

from bot.app import BotApp
from bot.crypto import Cipher, MasterKey, associated_data
from bot.domain import RequestKind
from bot.keys.rotation import GivenKey, rotate_master_key
from bot.keys.sources import KeySource, default_key_file_path
from bot.providers.base import Outcome
from bot.providers.confluent_cloud import ConfluentCloud
from bot.redaction import Secret
from bot.runtime import StartupError, start_services
from bot.services.submissions import Submission
from bot.settings import Settings
from bot.store import Database, KeyCanary
from tests.fakes.confluent_api import FakeConfluent, new_api_key, new_api_secret
from tests.support.sealed_data import seed_sealed_data
from tests.unit.conftest import RUNTIME_BOT_TOKEN

API = "https://api.confluent.test"
UNREACHABLE_DATABASE = "postgresql://postgres@127.0.0.1:1/none"


def new_key() -> str:
    return MasterKey.generate().to_base64().reveal()


def settings_for(database_url: str, **extra: str) -> Settings:
    return Settings.from_mapping(
        {
            "SLACK_BOT_TOKEN": RUNTIME_BOT_TOKEN,
            "SLACK_SIGNING_SECRET": "runtime-test-signing-secret",
            "CONFLUENT_CLOUD_API_URL": API,
            "DATABASE_URL": database_url,
            **extra,
        }
    )


@pytest.fixture(autouse=True)
def isolated_key_stores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A throwaway config directory and a keyring that holds nothing, restored afterwards."""
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    previous: KeyringBackend = keyring.get_keyring()
    keyring.set_keyring(keyring.backends.fail.Keyring())  # type: ignore[no-untyped-call]
    try:
        yield home
    finally:
        keyring.set_keyring(previous)


@pytest.fixture
def fake() -> FakeConfluent:
    return FakeConfluent()


@pytest.fixture
async def confluent_http(fake: FakeConfluent) -> AsyncIterator[httpx.AsyncClient]:
    # start_services takes ownership: Services.close() closes it; closing twice is harmless.
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=fake.app), base_url=API) as client:
        yield client


async def store_a_credential(
    database_url: str, key: str, fake: FakeConfluent, http: httpx.AsyncClient
) -> tuple[str, str]:
    """Start with ``key``, create one verified connection, and shut down; returns its key and secret."""
    api_key, api_secret = new_api_key(), new_api_secret()
    fake.add_cloud_key(api_key, api_secret)
    services = await start_services(settings_for(database_url, CONNECTIONS_MASTER_KEY=key), http=http)
    try:
        outcome = await services.submissions.submit(
            Submission(
                kind=RequestKind.CONNECTION,
                team_id="T0000TEAM",
                user_id="U0000USER",
                provider=services.providers.get("confluent_cloud"),
                name="Prod Kafka",
                values={"api_key": Secret(api_key), "api_secret": Secret(api_secret)},
            )
        )
    finally:
        await services.close()
    assert outcome.verification is not None
    assert outcome.verification.outcome is Outcome.OK and outcome.stored
    return api_key, api_secret


# --- start-up --------------------------------------------------------------------------------------


async def test_starts_on_an_empty_database(migrated_database_url: str) -> None:
    key = new_key()

    services = await start_services(settings_for(migrated_database_url, CONNECTIONS_MASTER_KEY=key))
    try:
        assert services.key.source is KeySource.ENV
        assert services.key.key == MasterKey.from_base64(key)
        assert services.cipher.key_id == MasterKey.from_base64(key).key_id
        provider = services.providers.get("confluent_cloud")
        assert isinstance(provider, ConfluentCloud) and provider.api_url == API
        page = await services.queries.list_connections("T0000TEAM")
        assert page.total == 0
    finally:
        await services.close()


async def test_starts_again_with_the_key_that_sealed_the_credentials(
    migrated_database_url: str, fake: FakeConfluent, confluent_http: httpx.AsyncClient
) -> None:
    key = new_key()
    await store_a_credential(migrated_database_url, key, fake, confluent_http)

    services = await start_services(settings_for(migrated_database_url, CONNECTIONS_MASTER_KEY=key))
    try:
        assert (await services.queries.list_connections("T0000TEAM")).total == 1
    finally:
        await services.close()


async def test_refuses_a_key_that_does_not_open_the_stored_credentials(
    migrated_database_url: str, fake: FakeConfluent, confluent_http: httpx.AsyncClient
) -> None:
    key_a, key_b = new_key(), new_key()
    await store_a_credential(migrated_database_url, key_a, fake, confluent_http)

    with pytest.raises(StartupError) as raised:
        await start_services(settings_for(migrated_database_url, CONNECTIONS_MASTER_KEY=key_b))

    message = str(raised.value)
    assert "does not open the stored credentials" in message
    assert "\n" not in message
    for key in (key_a, key_b):
        assert key not in message
        assert base64.b64decode(key).hex() not in message
    # The ids are there to tell the operator which key to restore.
    assert MasterKey.from_base64(key_a).key_id in message
    assert MasterKey.from_base64(key_b).key_id in message
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


async def test_refuses_to_make_a_new_key_over_stored_credentials(
    migrated_database_url: str,
    fake: FakeConfluent,
    confluent_http: httpx.AsyncClient,
    tmp_path: Path,
) -> None:
    key_a = new_key()
    await store_a_credential(migrated_database_url, key_a, fake, confluent_http)
    key_file = tmp_path / "keys" / "master.key"

    with pytest.raises(StartupError) as raised:
        await start_services(settings_for(migrated_database_url, CONNECTIONS_MASTER_KEY_FILE=str(key_file)))

    message = str(raised.value)
    assert "no master key was found" in message
    assert str(key_file) in message
    assert key_a not in message
    assert not key_file.exists()
    assert not key_file.parent.exists()


async def test_refuses_without_any_key_source_over_stored_credentials(
    migrated_database_url: str,
    fake: FakeConfluent,
    confluent_http: httpx.AsyncClient,
    isolated_key_stores: Path,
) -> None:
    await store_a_credential(migrated_database_url, new_key(), fake, confluent_http)

    with pytest.raises(StartupError, match="no master key was found"):
        await start_services(settings_for(migrated_database_url))

    assert default_key_file_path().is_relative_to(isolated_key_stores)
    assert not default_key_file_path().exists()


async def test_makes_a_key_file_when_nothing_is_stored_yet(
    migrated_database_url: str, tmp_path: Path
) -> None:
    # The other side of the refusal above: without ciphertext a missing key file is created.
    key_file = tmp_path / "keys" / "master.key"

    services = await start_services(
        settings_for(migrated_database_url, CONNECTIONS_MASTER_KEY_FILE=str(key_file))
    )
    try:
        assert services.key.source is KeySource.KEY_FILE and services.key.created
        assert key_file.stat().st_mode & 0o777 == 0o600
        assert MasterKey.from_base64(key_file.read_text()) == services.key.key
    finally:
        await services.close()


# --- health ----------------------------------------------------------------------------------------


def served_app(database_url: str, slack_api_url: str) -> BotApp:
    """The app with its health answered afresh on every call, so each change shows at once."""
    settings = settings_for(database_url, CONNECTIONS_MASTER_KEY=new_key(), SLACK_API_URL=slack_api_url)
    return BotApp(settings, health_cache_seconds=0)


async def get_healthz(app: BotApp) -> httpx.Response:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://bot.test"
    ) as client:
        return await client.get("/healthz")


async def test_health_reports_a_database_that_went_away(
    migrated_database_url: str, slack_api_url: str
) -> None:
    app = served_app(migrated_database_url, slack_api_url)
    services = await app.start()
    try:
        assert await services.healthy() == {"database": True, "master_key": True}
        working = await get_healthz(app)
        assert working.status_code == 200
        assert working.json() == {"status": "ok", "database": "ok", "master_key": "ok"}

        await services.db.dispose()
        services.db = Database.from_url(UNREACHABLE_DATABASE)

        # Without the database the key cannot be shown to open anything, so both fail.
        assert await services.healthy() == {"database": False, "master_key": False}
        failing = await get_healthz(app)
        assert failing.status_code == 503
        assert failing.json() == {"status": "unavailable", "database": "failing", "master_key": "failing"}
    finally:
        await app.stop()


async def test_health_reports_a_key_that_no_longer_opens_the_database(
    migrated_database_url: str, slack_api_url: str
) -> None:
    app = served_app(migrated_database_url, slack_api_url)
    services = await app.start()
    try:
        assert (await get_healthz(app)).status_code == 200
        # Someone restores the database of another installation under this running bot.
        other = Cipher(MasterKey.generate())
        sealed = other.seal(
            Secret("connections-bot master-key canary"), associated_data("connections-bot", "key-canary", 1)
        )
        async with services.db.transaction() as tx:
            await tx.session.execute(
                update(KeyCanary).values(
                    key_id=sealed.key_id, nonce=sealed.nonce, ciphertext=sealed.ciphertext
                )
            )
        failing = await get_healthz(app)
        assert failing.status_code == 503
        assert failing.json() == {"status": "unavailable", "database": "ok", "master_key": "failing"}
    finally:
        await app.stop()


async def test_health_and_the_start_log_say_whether_the_previous_key_is_needed(
    migrated_database_url: str, slack_api_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    old, new = MasterKey.generate(), MasterKey.generate()
    await seed_sealed_data(migrated_database_url, old)
    # Switched to the new key before the rotation: the old one opens the data, the new one seals.
    settings = settings_for(
        migrated_database_url,
        CONNECTIONS_MASTER_KEY=new.to_base64().reveal(),
        CONNECTIONS_MASTER_KEY_PREVIOUS=old.to_base64().reveal(),
        SLACK_API_URL=slack_api_url,
    )
    app = BotApp(settings, health_cache_seconds=0)
    with caplog.at_level(logging.INFO):
        services = await app.start()
    try:
        assert (
            "CONNECTIONS_MASTER_KEY_PREVIOUS (master key" in caplog.text and "is still needed" in caplog.text
        )
        needed = await get_healthz(app)
        assert needed.status_code == 200
        assert needed.json() == {
            "status": "ok",
            "database": "ok",
            "master_key": "ok",
            "previous_master_key": "needed",
        }

        await rotate_master_key(services.db, settings, given=GivenKey(new, "CONNECTIONS_MASTER_KEY"))

        removable = await get_healthz(app)
        assert removable.status_code == 200 and removable.json()["previous_master_key"] == "removable"
    finally:
        await app.stop()


async def test_a_second_host_with_its_own_key_is_refused_before_any_credential_exists(
    migrated_database_url: str,
) -> None:
    first = await start_services(settings_for(migrated_database_url, CONNECTIONS_MASTER_KEY=new_key()))
    await first.close()
    with pytest.raises(StartupError, match="does not open"):
        await start_services(settings_for(migrated_database_url, CONNECTIONS_MASTER_KEY=new_key()))


async def test_a_start_that_breaks_unexpectedly_fails_the_servers_lifespan(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Left unanswered, uvicorn takes lifespan for unsupported and serves an app that never started.
    async def broken(settings: Settings) -> None:
        raise RuntimeError("the driver said: user=bot password=not-for-the-server")

    monkeypatch.setattr("bot.app.start_services", broken)
    app = BotApp(settings_for(f"sqlite:///{tmp_path / 'unused.db'}"))
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "lifespan.startup"}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)

    assert sent == [{"type": "lifespan.startup.failed", "message": "could not start (RuntimeError)"}]
    assert app.services is None
