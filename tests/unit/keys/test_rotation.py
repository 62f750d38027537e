"""``rotate_master_key``: every row moves to the new key in one transaction, or none does."""

from __future__ import annotations

import asyncio
import base64
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from bot.crypto import Cipher, MasterKey, associated_data
from bot.keys import NothingToRotate, RotationBusy, RotationRefused
from bot.keys.guard import ROTATION_ACTION
from bot.keys.rotation import ALL_WORKSPACES, FAILPOINTS, GivenKey, crash_at, rotate_master_key
from bot.redaction import Secret
from bot.settings import KeySettings
from bot.store import Credential, Database
from bot.store.migrate import upgrade_to_head
from tests.support.databases import dump_database_text, raw_sqlite_bytes, sqlite_path
from tests.support.key_sources import SOURCES, KeySetup, key_setup
from tests.support.sealed_data import SealedData, open_everything, seed_sealed_data


@pytest.fixture(params=SOURCES)
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> KeySetup:
    return key_setup(request.param, tmp_path)


@pytest.fixture
async def sealed(setup: KeySetup, migrated_database_url: str) -> SealedData:
    return await seed_sealed_data(migrated_database_url, setup.old)


async def rotate(db: Database, setup: KeySetup, given: GivenKey | None = None) -> MasterKey:
    """Rotate as an operator would (an env key to the key kept ready for it), and return the new
    key from wherever it now lives."""
    outcome = await rotate_master_key(
        db,
        setup.settings(),
        given=given or setup.given(),
        confirm=lambda warning: True,
        keyring_backend=setup.keyring_backend(),
        default_key_file=setup.key_file,
    )
    new = setup.next if setup.source == "env" else setup.primary()
    assert new is not None and new.key_id == outcome.new_key_id
    return new


async def test_a_rotation_moves_every_row_to_the_new_key_and_retires_the_old_one(
    db: Database, migrated_database_url: str, setup: KeySetup, sealed: SealedData
) -> None:
    before = await open_everything(migrated_database_url, setup.old)

    new = await rotate(db, setup)

    after = await open_everything(migrated_database_url, new)
    assert after.canary and after.values == sealed.plaintexts
    assert after.key_ids == {new.key_id}
    old_only = await open_everything(migrated_database_url, setup.old)
    assert not old_only.canary and old_only.values == {}
    # Fresh nonces: no old ciphertext is left anywhere in a row.
    assert not set(before.ciphertexts) & set(after.ciphertexts)
    # An env key's new key is the operator's: the bot wrote it nowhere.
    assert setup.staged_keys() == []


async def test_the_rotation_is_audited_without_any_secret(
    db: Database, migrated_database_url: str, setup: KeySetup, sealed: SealedData
) -> None:
    new = await rotate(db, setup)

    async with db.read() as tx:
        event = await tx.audit.latest_with_action(ROTATION_ACTION)
    assert event is not None
    assert event.team_id == ALL_WORKSPACES and event.actor == "system" and event.connection_id is None
    assert event.details["from_key_id"] == setup.old.key_id
    assert event.details["to_key_id"] == new.key_id
    assert event.details["credentials"] == len(sealed.plaintexts)
    assert event.details["key_source"] == setup.source

    dump = dump_database_text(migrated_database_url)
    for key in (setup.old, new):
        assert key.to_base64().reveal() not in dump
        assert base64.b64decode(key.to_base64().reveal()).hex() not in dump
    for secret in sealed.secrets():
        assert secret not in dump


async def test_old_ciphertexts_are_gone_from_the_sqlite_files(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'connections.db'}"
    upgrade_to_head(url)
    setup = key_setup("key_file", tmp_path)
    await seed_sealed_data(url, setup.old)
    before = await open_everything(url, setup.old)
    db = Database.from_url(url)
    try:
        await rotate(db, setup)
    finally:
        await db.dispose()

    raw = raw_sqlite_bytes(sqlite_path(url))
    assert not [c for c in before.ciphertexts if c in raw]


async def test_a_row_the_key_does_not_open_stops_the_rotation_before_anything_changes(
    db: Database, migrated_database_url: str, setup: KeySetup, sealed: SealedData
) -> None:
    connection_id = next(iter(sealed.plaintexts))[0]
    stranger = Cipher(MasterKey.generate()).seal(
        Secret("sealed elsewhere"), associated_data(connection_id, "x", 1)
    )
    async with db.transaction() as tx:
        await tx.credentials.add(
            Credential(
                team_id="T1",
                connection_id=connection_id,
                version=1,
                field="x",
                key_id=stranger.key_id,
                nonce=stranger.nonce,
                ciphertext=stranger.ciphertext,
                # Older than the rest, so the start-up probe (the newest row) does not see it.
                created_at=datetime(2020, 1, 1, tzinfo=UTC),
            )
        )
    before = await open_everything(migrated_database_url, setup.old)

    with pytest.raises(RotationRefused) as caught:
        await rotate(db, setup)

    assert "1 of 9 stored credential fields do not open" in str(caught.value)
    assert connection_id in str(caught.value) and "nothing was changed" in str(caught.value)
    after = await open_everything(migrated_database_url, setup.old)
    assert after == before
    assert setup.staged() is None and setup.primary() == setup.old


async def test_an_empty_database_has_nothing_to_rotate(db: Database, tmp_path: Path) -> None:
    setup = key_setup("key_file", tmp_path)

    with pytest.raises(NothingToRotate):
        await rotate(db, setup)

    assert setup.staged() is None and setup.primary() == setup.old


async def test_a_given_new_key_is_only_for_an_env_key(
    db: Database, migrated_database_url: str, tmp_path: Path
) -> None:
    setup = key_setup("keyring", tmp_path)
    await seed_sealed_data(migrated_database_url, setup.old)

    with pytest.raises(RotationRefused, match="--new-key-from-env and --new-key-file are for a key from"):
        await rotate(db, setup, given=GivenKey(MasterKey.generate(), "NEW"))

    assert setup.staged() is None and setup.primary() == setup.old


async def test_an_env_key_is_never_rotated_to_a_key_only_this_machine_would_have(
    db: Database, migrated_database_url: str, tmp_path: Path
) -> None:
    setup = key_setup("env", tmp_path)
    sealed = await seed_sealed_data(migrated_database_url, setup.old)
    before = await open_everything(migrated_database_url, setup.old)

    with pytest.raises(RotationRefused) as caught:
        await rotate_master_key(db, setup.settings(), default_key_file=setup.key_file)

    message = str(caught.value)
    assert "nothing was changed" in message and "generate-master-key" in message
    assert "--new-key-from-env NAME" in message and "CONNECTIONS_MASTER_KEY_PREVIOUS" in message
    assert await open_everything(migrated_database_url, setup.old) == before
    assert before.values == sealed.plaintexts
    assert setup.staged_keys() == []


async def test_an_env_key_switched_with_a_previous_key_is_rotated_to_itself(
    db: Database, migrated_database_url: str, tmp_path: Path
) -> None:
    # The instances run with the new key and the old one as previous; the rotation moves the rows.
    setup = key_setup("env", tmp_path)
    sealed = await seed_sealed_data(migrated_database_url, setup.old)
    switched = setup.settings(env_key=setup.next, previous=setup.old)

    outcome = await rotate_master_key(db, switched, default_key_file=setup.key_file)

    assert (outcome.old_key_id, outcome.new_key_id) == (setup.old.key_id, setup.next.key_id)
    assert outcome.kept_in == "CONNECTIONS_MASTER_KEY" and not outcome.already_committed
    assert (await open_everything(migrated_database_url, setup.next)).values == sealed.plaintexts
    assert (await open_everything(migrated_database_url, setup.old)).values == {}
    again = await rotate_master_key(db, switched, default_key_file=setup.key_file)
    assert again.already_committed and again.credentials == 0


async def test_an_env_rotation_that_committed_is_not_rotated_again(
    db: Database, migrated_database_url: str, tmp_path: Path
) -> None:
    setup = key_setup("env", tmp_path)
    sealed = await seed_sealed_data(migrated_database_url, setup.old)
    first = await rotate_master_key(
        db, setup.settings(), given=setup.given(), default_key_file=setup.key_file
    )
    assert first.kept_in == "CONNECTIONS_MASTER_KEY_NEXT" and first.credentials == len(sealed.plaintexts)

    # The same command again, the instances switched: nothing moves.
    switched = setup.settings(env_key=setup.next, previous=setup.old)
    again = await rotate_master_key(db, switched, given=setup.given(), default_key_file=setup.key_file)

    assert again.already_committed and again.new_key_id == setup.next.key_id
    opened = await open_everything(migrated_database_url, setup.next)
    assert opened.values == sealed.plaintexts and opened.key_ids == {setup.next.key_id}


async def test_an_env_rotation_staged_by_an_earlier_version_waits_for_its_swap(
    db: Database, migrated_database_url: str, tmp_path: Path
) -> None:
    # Earlier versions wrote an env key's new key to a file in the config directory and committed.
    setup = key_setup("env", tmp_path)
    await seed_sealed_data(migrated_database_url, setup.old)
    await rotate_master_key(db, setup.settings(), given=setup.given(), default_key_file=setup.key_file)
    staged = setup.staged_file(setup.next.key_id)
    staged.parent.mkdir(parents=True, exist_ok=True)
    staged.write_text(setup.next.to_base64().reveal())
    staged.chmod(0o600)

    again = await rotate_master_key(db, setup.settings(), default_key_file=setup.key_file)

    assert again.already_committed and again.swap_file == staged
    assert again.new_key_id == setup.next.key_id and again.old_key_id == setup.old.key_id


def test_an_unknown_failpoint_is_refused() -> None:
    with pytest.raises(RotationRefused, match="CONNECTIONS_FAILPOINT"):
        crash_at("after-commit")
    for malformed in ("committed:", "committed:0", "committed:x", "committed:-1", ":2"):
        with pytest.raises(RotationRefused, match="CONNECTIONS_FAILPOINT"):
            crash_at(malformed)
    with pytest.raises(RotationRefused, match="CONNECTIONS_FAILPOINT"):
        crash_at("staged", steps=("written", "committed"))


class Exited(BaseException):
    pass


def test_a_failpoint_with_a_count_stops_the_nth_time_its_step_is_reached(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def exit_now(status: int) -> None:
        raise Exited(status)

    monkeypatch.setattr(os, "_exit", exit_now)
    checkpoint = crash_at("committed:3", steps=("written", "committed"))
    for step in ("written", "committed", "written", "committed", "written"):
        checkpoint(step)
    with pytest.raises(Exited):
        checkpoint("committed")

    unset = crash_at(None)
    for step in FAILPOINTS:
        unset(step)
    first = crash_at("staged")
    with pytest.raises(Exited):
        first("staged")


@pytest.mark.postgres
async def test_two_rotations_at_once_on_postgresql_cannot_interleave(
    postgres_admin_url: object, tmp_path: Path, migrated_database_url: str
) -> None:
    if not migrated_database_url.startswith("postgresql"):
        pytest.skip("SQLite's write transaction (BEGIN IMMEDIATE) already queues writers")
    setup = key_setup("key_file", tmp_path)
    sealed = await seed_sealed_data(migrated_database_url, setup.old)
    holding, release = threading.Event(), threading.Event()

    def hold_after_staging(step: str) -> None:
        if step == "staged":
            holding.set()
            release.wait(30)

    async def first_rotation() -> str:
        db = Database.from_url(migrated_database_url)
        try:
            outcome = await rotate_master_key(
                db,
                KeySettings(master_key_file=setup.key_file),
                checkpoint=hold_after_staging,
                default_key_file=setup.key_file,
            )
        finally:
            await db.dispose()
        return outcome.new_key_id

    # The first rotation runs on a loop of its own, so its checkpoint can block while it holds the lock.
    first = asyncio.get_running_loop().run_in_executor(None, asyncio.run, first_rotation())
    await asyncio.to_thread(holding.wait, 30)
    second_db = Database.from_url(migrated_database_url)
    try:
        # A copy of the key in another directory, so another lock file: only the row lock stands
        # between the two.
        copy = tmp_path / "elsewhere" / "master.key"
        copy.parent.mkdir()
        copy.write_text(setup.key_file.read_text())
        copy.chmod(0o600)
        second = asyncio.ensure_future(
            rotate_master_key(second_db, KeySettings(master_key_file=copy), default_key_file=copy)
        )
        await wait_for_a_lock_wait(migrated_database_url)
        release.set()
        first_key_id = await first
        with pytest.raises(RotationRefused, match="while this rotation started"):
            await second
    finally:
        release.set()
        await second_db.dispose()

    new = setup.primary()
    assert new is not None and new.key_id == first_key_id and setup.staged() is None
    opened = await open_everything(migrated_database_url, new)
    assert opened.canary and opened.values == sealed.plaintexts


async def wait_for_a_lock_wait(url: str) -> None:
    """Poll until a session of this database waits for a row lock (the second rotation)."""
    deadline = time.monotonic() + 30
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as connection:
        while time.monotonic() < deadline:
            cursor = await connection.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            row = await cursor.fetchone()
            if row is not None and row[0] > 0:
                return
            await asyncio.sleep(0.02)
    raise AssertionError("the second rotation never waited for the first one's lock")


@pytest.mark.parametrize("source", ["keyring", "key_file"])
async def test_a_key_in_a_shared_slot_is_not_replaced_without_confirmation(
    db: Database, migrated_database_url: str, tmp_path: Path, source: str
) -> None:
    setup = key_setup(source, tmp_path)
    sealed = await seed_sealed_data(migrated_database_url, setup.old)
    before = await open_everything(migrated_database_url, setup.old)
    warnings: list[str] = []

    def decline(warning: str) -> bool:
        warnings.append(warning)
        return False

    with pytest.raises(RotationRefused, match="not confirmed: nothing was changed"):
        await rotate_master_key(
            db,
            setup.settings(),
            confirm=decline,
            keyring_backend=setup.keyring_backend(),
            default_key_file=setup.key_file,
        )

    [warning] = warnings
    location = "'master-key'" if source == "keyring" else str(setup.key_file)
    assert location in warning and setup.old.key_id in warning
    assert "CONNECTIONS_MASTER_KEY_FILE" in warning and "every other database" in warning
    assert setup.old.to_base64().reveal() not in warning
    assert await open_everything(migrated_database_url, setup.old) == before
    assert before.values == sealed.plaintexts
    assert setup.primary() == setup.old and setup.staged() is None


@pytest.mark.parametrize("source", ["env", "named_key_file"])
async def test_a_key_of_the_databases_own_is_rotated_without_asking(
    db: Database, migrated_database_url: str, tmp_path: Path, source: str
) -> None:
    old = MasterKey.generate()
    await seed_sealed_data(migrated_database_url, old)
    named = tmp_path / "secrets" / "bot.key"
    if source == "env":
        settings = KeySettings(master_key=old.to_base64())
    else:
        named.parent.mkdir()
        named.write_text(old.to_base64().reveal())
        named.chmod(0o600)
        settings = KeySettings(master_key_file=named)

    def must_not_ask(warning: str) -> bool:
        raise AssertionError(f"asked: {warning}")

    outcome = await rotate_master_key(
        db,
        settings,
        given=GivenKey(MasterKey.generate(), "NEW") if source == "env" else None,
        confirm=must_not_ask,
        default_key_file=tmp_path / "config" / "master.key",
    )

    assert outcome.old_key_id == old.key_id and outcome.new_key_id != old.key_id


@pytest.mark.parametrize("source", ["keyring", "key_file"])
async def test_a_second_rotation_while_one_is_promoting_is_turned_away(
    migrated_database_url: str, tmp_path: Path, source: str
) -> None:
    setup = key_setup(source, tmp_path)
    sealed = await seed_sealed_data(migrated_database_url, setup.old)
    second_tries: list[BaseException | str] = []

    async def rotation(checkpoint: Callable[[str], None] = lambda step: None) -> str:
        db = Database.from_url(migrated_database_url)
        try:
            outcome = await rotate_master_key(
                db,
                setup.settings(),
                confirm=lambda warning: True,
                checkpoint=checkpoint,
                keyring_backend=setup.keyring_backend(),
                default_key_file=setup.key_file,
            )
        finally:
            await db.dispose()
        return outcome.new_key_id

    def second_rotation_between_commit_and_promotion(step: str) -> None:
        # Another process's rotation, started while this one's new key waits to be promoted; its
        # thread is joined here, so it runs to its end while this one is stopped.
        if step == "committed":
            worker = threading.Thread(target=lambda: second_tries.append(try_a_rotation()))
            worker.start()
            worker.join(60)

    def try_a_rotation() -> BaseException | str:
        try:
            return asyncio.run(rotation())
        except RotationBusy as busy:
            return busy

    first = await asyncio.to_thread(asyncio.run, rotation(second_rotation_between_commit_and_promotion))

    [second] = second_tries
    assert isinstance(second, RotationBusy), second
    assert "another rotate-master-key is running" in str(second)
    new = setup.primary()
    assert new is not None and new.key_id == first and setup.staged() is None
    opened = await open_everything(migrated_database_url, new)
    assert opened.canary and opened.values == sealed.plaintexts
