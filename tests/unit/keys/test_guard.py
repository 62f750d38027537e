"""The start-up guard after a master-key rotation stopped at each step: it picks the key that opens
the canary, finishes a committed rotation's promotion, and explains a key that opens nothing."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import delete, update

from bot.crypto import Cipher, MasterKey
from bot.keys import InsecureKeyFile, MasterKeyError, MasterKeyMissing, WrongMasterKey
from bot.keys import guard as guard_module
from bot.keys.guard import guard_master_key
from bot.keys.rotation import GivenKey, rotate_master_key
from bot.keys.slots import staged_file_path, staged_username
from bot.keys.sources import KEYRING_SERVICE, KEYRING_USERNAME, KeySource, LoadedKey
from bot.redaction import Secret
from bot.settings import KeySettings
from bot.store import Connection, Credential, Database
from tests.support.key_sources import SOURCES, KeySetup, key_setup
from tests.support.sealed_data import SealedData, legacy_key_id, open_everything, seed_sealed_data


class Stop(BaseException):
    """Stands in for the kill at a step (the subprocess tests kill for real): a BaseException, so
    the rotation's clean-up after an ordinary failure does not run, as it would not after a kill."""


def stop_at(step: str) -> Callable[[str], None]:
    def checkpoint(name: str) -> None:
        if name == step:
            raise Stop(name)

    return checkpoint


@pytest.fixture(params=SOURCES)
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> KeySetup:
    return key_setup(request.param, tmp_path)


@pytest.fixture
async def sealed(setup: KeySetup, migrated_database_url: str) -> SealedData:
    return await seed_sealed_data(migrated_database_url, setup.old)


async def guard(db: Database, setup: KeySetup, settings: KeySettings | None = None) -> LoadedKey:
    loaded, _ = await guard_master_key(
        db,
        settings or setup.settings(),
        keyring_backend=setup.keyring_backend(),
        default_key_file=setup.key_file,
    )
    return loaded


async def rotate_until(db: Database, setup: KeySetup, step: str) -> None:
    with pytest.raises(Stop):
        await rotate_master_key(
            db,
            setup.settings(),
            given=setup.given(),
            confirm=lambda warning: True,
            checkpoint=stop_at(step),
            keyring_backend=setup.keyring_backend(),
            default_key_file=setup.key_file,
        )


@pytest.mark.parametrize("step", ["staged", "resealed"])
async def test_before_the_commit_the_old_key_is_used_and_the_staged_one_left_alone(
    db: Database, migrated_database_url: str, setup: KeySetup, sealed: SealedData, step: str
) -> None:
    await rotate_until(db, setup, step)
    staged = setup.staged()
    # An env key's new key is the operator's: nothing is staged for it.
    assert (staged is None) == (setup.source == "env") and staged != setup.old

    loaded = await guard(db, setup)

    assert loaded.key == setup.old and not loaded.from_next_slot
    # Left in place: a rotation running right now could be about to commit with it.
    assert setup.staged() == staged and setup.primary() == setup.old
    opened = await open_everything(migrated_database_url, setup.old)
    assert opened.canary and opened.values == sealed.plaintexts


@pytest.mark.parametrize("source", ["key_file", "keyring"])
async def test_after_the_commit_a_start_finishes_the_promotion(
    db: Database,
    migrated_database_url: str,
    tmp_path: Path,
    source: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    setup = key_setup(source, tmp_path)
    sealed = await seed_sealed_data(migrated_database_url, setup.old)
    await rotate_until(db, setup, "committed")
    new = setup.staged()
    assert new is not None and setup.primary() == setup.old

    with caplog.at_level(logging.INFO):
        loaded = await guard(db, setup)

    assert loaded.key == new and loaded.source.value == source and not loaded.from_next_slot
    assert setup.primary() == new and setup.staged() is None
    assert "finished a master-key rotation that stopped after its commit" in caplog.text
    opened = await open_everything(migrated_database_url, new)
    assert opened.canary and opened.values == sealed.plaintexts


async def test_a_start_moves_data_sealed_under_the_raw_key_to_the_derived_key(
    db: Database, migrated_database_url: str, setup: KeySetup
) -> None:
    sealed = await seed_sealed_data(migrated_database_url, setup.old, legacy=True)
    before = await open_everything(migrated_database_url, setup.old)
    assert before.values == sealed.plaintexts and before.key_ids == {legacy_key_id(setup.old)}

    loaded = await guard(db, setup)

    assert loaded.key == setup.old
    after = await open_everything(migrated_database_url, setup.old)
    assert after.canary and after.values == sealed.plaintexts
    # No row, the canary included, is left on the raw key after one start.
    assert after.key_ids == {setup.old.key_id}
    assert not set(before.ciphertexts) & set(after.ciphertexts)


@pytest.mark.parametrize("source", ["key_file", "keyring"])
async def test_a_rotation_an_older_version_committed_is_finished_from_its_legacy_named_slot(
    db: Database, migrated_database_url: str, tmp_path: Path, source: str
) -> None:
    """Before HKDF, a rotation named its staged slot and the canary after the new key's legacy id."""
    setup = key_setup(source, tmp_path)
    new = MasterKey.generate()
    sealed = await seed_sealed_data(migrated_database_url, new, legacy=True)
    old_id = legacy_key_id(new)
    if source == "keyring":
        setup.ring.set_password(KEYRING_SERVICE, staged_username(old_id), new.to_base64().reveal())
    else:
        staged_file_path(setup.key_file, old_id).write_text(new.to_base64().reveal())
        staged_file_path(setup.key_file, old_id).chmod(0o600)

    loaded = await guard(db, setup)

    assert loaded.key == new and not loaded.from_next_slot
    assert setup.primary() == new and setup.staged_keys() == []
    opened = await open_everything(migrated_database_url, new)
    assert opened.canary and opened.values == sealed.plaintexts and opened.key_ids == {new.key_id}


@pytest.mark.parametrize("source", ["key_file", "keyring"])
async def test_a_promotion_stopped_halfway_is_finished_or_tidied(
    db: Database, migrated_database_url: str, tmp_path: Path, source: str
) -> None:
    setup = key_setup(source, tmp_path)
    await seed_sealed_data(migrated_database_url, setup.old)
    await rotate_until(db, setup, "promoting")
    new = setup.primary()
    assert new is not None and new != setup.old

    loaded = await guard(db, setup)

    assert loaded.key == new
    assert setup.primary() == new and setup.staged() is None


async def test_after_an_env_rotation_of_an_earlier_version_a_start_uses_its_staged_file(
    db: Database, migrated_database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Earlier versions wrote an env key's new key to a file in the config directory and committed.
    setup = key_setup("env", tmp_path)
    sealed = await seed_sealed_data(migrated_database_url, setup.old)
    await rotate_until(db, setup, "committed")
    new = setup.next
    setup.staged_file(new.key_id).write_text(new.to_base64().reveal())
    setup.staged_file(new.key_id).chmod(0o600)

    loaded = await guard(db, setup)

    assert loaded.key == new and loaded.source is KeySource.ENV and loaded.from_next_slot
    assert loaded.warning is not None
    assert str(setup.staged_file(new.key_id)) in loaded.warning
    assert "CONNECTIONS_MASTER_KEY holds master key" in loaded.warning
    assert setup.old.key_id in loaded.warning and new.key_id in loaded.warning
    # The operator swaps; until then the file stays.
    assert setup.staged_file(new.key_id).exists()
    opened = await open_everything(migrated_database_url, new)
    assert opened.canary and opened.values == sealed.plaintexts

    swapped = await guard(db, setup, setup.settings(env_key=new))
    assert swapped.key == new and not swapped.from_next_slot
    with caplog.at_level(logging.INFO):
        await guard(db, setup, setup.settings(env_key=new))
    assert "delete that file once every instance uses the key" in caplog.text


async def test_an_old_key_after_a_rotation_is_refused_with_what_to_do(
    db: Database, migrated_database_url: str, tmp_path: Path
) -> None:
    setup = key_setup("env", tmp_path)
    await seed_sealed_data(migrated_database_url, setup.old)
    new = MasterKey.generate()
    outcome = await rotate_master_key(
        db, setup.settings(), given=GivenKey(new, "NEW_KEY"), default_key_file=setup.key_file
    )

    with pytest.raises(WrongMasterKey) as caught:
        await guard(db, setup)

    message = str(caught.value)
    assert "rotate-master-key moved them to master key" in message
    assert outcome.new_key_id in message and setup.old.key_id in message
    assert "NEW_KEY" in message and "set CONNECTIONS_MASTER_KEY to the new key" in message
    assert "CONNECTIONS_MASTER_KEY_PREVIOUS to the old one" in message
    assert setup.old.to_base64().reveal() not in message and new.to_base64().reveal() not in message


@pytest.mark.parametrize("source", SOURCES)
async def test_a_previous_key_opens_what_it_sealed_but_never_seals(
    db: Database, migrated_database_url: str, tmp_path: Path, source: str
) -> None:
    # Instances switched to a new key before the rotation: the data is still sealed with the old one.
    setup = key_setup(source, tmp_path)
    sealed = await seed_sealed_data(migrated_database_url, setup.old)
    new = MasterKey.generate()

    loaded, cipher = await guard_master_key(
        db,
        setup.settings(env_key=new, previous=setup.old) if source == "env" else setup.settings(previous=new),
        keyring_backend=setup.keyring_backend(),
        default_key_file=setup.key_file,
    )

    sealing = new if source == "env" else setup.old
    assert loaded.key == sealing and cipher.key_id == sealing.key_id
    other = new if sealing is setup.old else setup.old
    assert cipher.key_ids[0] == sealing.key_id and cipher.previous_key_ids[0] == other.key_id
    assert cipher.seal(Secret("fresh"), b"aad").key_id == sealing.key_id
    opened = await open_everything(migrated_database_url, setup.old)
    assert opened.canary and opened.values == sealed.plaintexts
    # The start changed nothing: every row is still sealed with the old key.
    assert opened.key_ids == {setup.old.key_id}


async def test_a_wrong_key_without_a_rotation_keeps_the_plain_refusal(
    db: Database, migrated_database_url: str, tmp_path: Path
) -> None:
    setup = key_setup("env", tmp_path)
    await seed_sealed_data(migrated_database_url, setup.old)

    with pytest.raises(WrongMasterKey) as caught:
        await guard(db, setup, setup.settings(env_key=MasterKey.generate()))

    assert "does not open the stored credentials" in str(caught.value)
    assert "rotate-master-key" not in str(caught.value)


async def test_an_unsafe_staged_file_is_ignored_while_the_primary_opens_the_data(
    db: Database, migrated_database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    setup = key_setup("key_file", tmp_path)
    await seed_sealed_data(migrated_database_url, setup.old)
    copy = setup.staged_file(setup.old.key_id)
    copy.write_text(setup.old.to_base64().reveal())
    copy.chmod(0o644)

    with caplog.at_level(logging.WARNING):
        loaded = await guard(db, setup)

    assert loaded.key == setup.old
    assert "ignoring the staged master key" in caplog.text


async def test_an_unsafe_staged_file_is_an_error_when_only_it_could_open_the_data(
    db: Database, migrated_database_url: str, tmp_path: Path
) -> None:
    setup = key_setup("key_file", tmp_path)
    await seed_sealed_data(migrated_database_url, setup.old)
    await rotate_until(db, setup, "committed")
    new = setup.staged()
    assert new is not None
    setup.staged_file(new.key_id).chmod(0o644)

    with pytest.raises(InsecureKeyFile):
        await guard(db, setup)

    assert setup.primary() == setup.old  # nothing was promoted from an unsafe file


@pytest.mark.parametrize("source", ["key_file", "keyring"])
async def test_a_lost_primary_is_restored_from_a_committed_rotation_never_made_anew(
    db: Database, migrated_database_url: str, tmp_path: Path, source: str, caplog: pytest.LogCaptureFixture
) -> None:
    setup = key_setup(source, tmp_path)
    sealed = await seed_sealed_data(migrated_database_url, setup.old)
    await rotate_until(db, setup, "committed")
    new = setup.staged()
    assert new is not None
    if source == "keyring":
        setup.ring.delete_password(KEYRING_SERVICE, KEYRING_USERNAME)
    else:
        setup.key_file.unlink()

    with caplog.at_level(logging.WARNING):
        loaded = await guard(db, setup)

    assert loaded.key == new and not loaded.from_next_slot
    assert setup.primary() == new and setup.staged() is None
    assert f"restored master key {new.key_id}" in caplog.text
    opened = await open_everything(migrated_database_url, new)
    assert opened.canary and opened.values == sealed.plaintexts


async def test_a_lost_primary_that_cannot_be_restored_keeps_its_staged_copy(
    db: Database,
    migrated_database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    setup = key_setup("keyring", tmp_path)
    sealed = await seed_sealed_data(migrated_database_url, setup.old)
    await rotate_until(db, setup, "committed")
    new = setup.staged()
    assert new is not None
    setup.ring.delete_password(KEYRING_SERVICE, KEYRING_USERNAME)
    store = setup.ring.set_password

    def refuse_the_primary(service: str, username: str, password: str) -> None:
        if username == KEYRING_USERNAME:
            raise OSError("the keyring is locked")
        store(service, username, password)

    monkeypatch.setattr(setup.ring, "set_password", refuse_the_primary)

    for _ in range(2):  # and the start after it still finds the key
        loaded = await guard(db, setup)
        assert loaded.key == new and loaded.from_next_slot
        assert setup.staged() == new, "the staged slot holds the only copy of the key"
    opened = await open_everything(migrated_database_url, new)
    assert opened.canary and opened.values == sealed.plaintexts


async def test_a_lost_primary_with_no_staged_key_is_still_missing(
    db: Database, migrated_database_url: str, tmp_path: Path
) -> None:
    setup = key_setup("key_file", tmp_path)
    await seed_sealed_data(migrated_database_url, setup.old)
    await rotate_until(db, setup, "staged")  # a staged key that opens nothing
    setup.key_file.unlink()

    with pytest.raises(MasterKeyMissing):
        await guard(db, setup)

    assert not setup.key_file.exists()


async def test_settings_changed_in_the_database_do_not_stop_the_start(
    db: Database, migrated_database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The canary proves the key; a credential whose connection was repointed is that row's
    # problem (its re-test reports it), never a way for a database writer to stop the bot.
    setup = key_setup("env", tmp_path)
    await seed_sealed_data(migrated_database_url, setup.old)
    await guard(db, setup)  # binds every credential in use to its connection's settings
    async with db.transaction() as tx:
        # The seeded pending version belongs to no rotation, so it stays unbound: drop it.
        await tx.session.execute(delete(Credential).where(Credential.version == 2))
        await tx.session.execute(update(Connection).values(config={"rest_endpoint": "https://evil.example"}))

    with caplog.at_level(logging.WARNING):
        loaded = await guard(db, setup)

    assert loaded.key == setup.old
    assert "altered outside the bot" in caplog.text


# --- the rotation lock: every writer of the primary slot holds it -------------------------------


def lock_path(setup: KeySetup) -> Path:
    return setup.key_file.with_name(setup.key_file.name + ".lock")


@contextlib.contextmanager
def held_elsewhere(setup: KeySetup) -> Iterator[bool]:
    """Try the rotation lock as another process would (its own open file description): whether it
    was free; if so it is held for the block."""
    lock_path(setup).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(lock_path(setup), os.O_CREAT | os.O_RDWR, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
        else:
            yield True
    finally:
        os.close(fd)


def first_start_setup(source: str, tmp_path: Path) -> KeySetup:
    """``source`` with its primary slot empty, as on a first start."""
    setup = key_setup(source, tmp_path)
    if source == "keyring":
        setup.ring.delete_password(KEYRING_SERVICE, KEYRING_USERNAME)
    else:
        setup.key_file.unlink()
    return setup


@pytest.mark.parametrize("source", ["key_file", "keyring"])
async def test_a_first_start_holds_the_rotation_lock_until_its_canary_is_committed(
    db: Database, tmp_path: Path, source: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup = first_start_setup(source, tmp_path)
    store = guard_module._store_canary
    free_at_commit: list[bool] = []

    async def store_and_try_the_lock(db: Database, cipher: Cipher, location: str) -> None:
        await store(db, cipher, location)
        with held_elsewhere(setup) as free:
            free_at_commit.append(free)

    monkeypatch.setattr(guard_module, "_store_canary", store_and_try_the_lock)

    loaded = await guard(db, setup)

    assert loaded.created and setup.primary() == loaded.key
    assert free_at_commit == [False], "a second first start could have made its own key meanwhile"
    with held_elsewhere(setup) as free:
        assert free, "released once the database is bound"


async def test_a_first_start_whose_key_was_replaced_in_the_keyring_stops(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup = first_start_setup("keyring", tmp_path)
    other = MasterKey.generate()
    store = guard_module._store_canary

    async def store_then_replaced(db: Database, cipher: Cipher, location: str) -> None:
        await store(db, cipher, location)
        # A writer that does not take the lock (another machine's bot on a shared keyring).
        setup.ring.set_password(KEYRING_SERVICE, KEYRING_USERNAME, other.to_base64().reveal())

    monkeypatch.setattr(guard_module, "_store_canary", store_then_replaced)

    with pytest.raises(MasterKeyError, match=f"holds master key {other.key_id}, not master key") as refused:
        await guard(db, setup)
    assert "key_canaries" in str(refused.value)
    assert other.to_base64().reveal() not in str(refused.value)


async def test_a_start_with_an_existing_key_on_a_fresh_database_takes_no_lock(
    db: Database, tmp_path: Path
) -> None:
    # A key file named by the operator may sit in a folder the bot cannot write: no lock there.
    setup = key_setup("key_file", tmp_path)
    with held_elsewhere(setup) as free:
        assert free
        loaded = await guard(db, setup)
    assert loaded.key == setup.old and not loaded.created


@pytest.mark.parametrize("source", ["key_file", "keyring"])
async def test_a_start_finishes_a_promotion_only_under_the_rotation_lock(
    db: Database,
    migrated_database_url: str,
    tmp_path: Path,
    source: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    setup = key_setup(source, tmp_path)
    sealed = await seed_sealed_data(migrated_database_url, setup.old)
    await rotate_until(db, setup, "committed")
    new = setup.staged()
    assert new is not None
    monkeypatch.setattr(guard_module, "LOCK_WAIT", 0.0)

    with held_elsewhere(setup) as free:
        assert free
        loaded = await guard(db, setup)

    assert loaded.key == new and loaded.from_next_slot, "read from the staged slot, not promoted"
    assert setup.primary() == setup.old and setup.staged() == new
    loaded = await guard(db, setup)  # the lock is free again
    assert loaded.key == new and not loaded.from_next_slot
    assert setup.primary() == new and setup.staged() is None
    opened = await open_everything(migrated_database_url, new)
    assert opened.canary and opened.values == sealed.plaintexts
