"""The staged slots of a master-key rotation: staging a new key beside the primary, never over
anything, and promoting it only over the key the rotation started from."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.crypto import MasterKey
from bot.keys import InsecureKeyFile, MasterKeyError, RotationBusy
from bot.keys.slots import (
    KEYRING_NEXT_USERNAME,
    discard_staged_key,
    find_staged_for_missing_primary,
    promote_staged_key,
    read_staged_key,
    rotation_lock,
    stage_next_key,
    staged_file_path,
    staged_username,
    staging_path,
)
from bot.keys.sources import (
    KEYRING_SERVICE,
    KEYRING_USERNAME,
    KeySource,
    LoadedKey,
    load_master_key,
    trust_test_backend,
)
from bot.settings import KeySettings
from tests.support.file_keyring import SharedFileKeyring


def write_key(path: Path, key: MasterKey, mode: int = 0o600) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.write_text(key.to_base64().reveal() + "\n")
    path.chmod(mode)


def file_key(path: Path) -> MasterKey:
    return MasterKey.from_base64(path.read_text())


@pytest.fixture
def umask_zero() -> Iterator[None]:
    # With no umask, the modes on disk are exactly the ones the code asked for.
    previous = os.umask(0)
    yield
    os.umask(previous)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    return tmp_path / "config" / "connections-bot" / "master.key"


@pytest.fixture
def ring(tmp_path: Path) -> SharedFileKeyring:
    return SharedFileKeyring(tmp_path / "keyring.json")


def keyring_entry(ring: SharedFileKeyring, username: str) -> MasterKey | None:
    value = ring.get_password(KEYRING_SERVICE, username)
    return None if value is None else MasterKey.from_base64(value)


def loaded_from_keyring(ring: SharedFileKeyring, key_file: Path) -> LoadedKey:
    return load_master_key(
        KeySettings(), has_ciphertext=True, keyring_backend=ring, default_key_file=key_file
    )


def loaded_from_file(key_file: Path) -> LoadedKey:
    return load_master_key(KeySettings(), has_ciphertext=True, default_key_file=key_file)


def loaded_from_env(key: MasterKey) -> LoadedKey:
    return load_master_key(KeySettings(master_key=key.to_base64()), has_ciphertext=True)


# --- keyring -------------------------------------------------------------------------------------


def test_a_keyring_key_is_staged_in_an_entry_of_its_own_and_promoted_over_the_primary(
    ring: SharedFileKeyring, key_file: Path
) -> None:
    old, new = MasterKey.generate(), MasterKey.generate()
    ring.set_password(KEYRING_SERVICE, KEYRING_USERNAME, old.to_base64().reveal())
    loaded = loaded_from_keyring(ring, key_file)

    staged = stage_next_key(loaded, new)

    assert keyring_entry(ring, staged_username(new.key_id)) == new
    assert keyring_entry(ring, KEYRING_USERNAME) == old
    assert f"{KEYRING_NEXT_USERNAME}.{new.key_id}" in staged.location
    assert read_staged_key(loaded, new.key_id) == staged

    seen_midway: list[tuple[MasterKey | None, MasterKey | None]] = []
    promoted = promote_staged_key(
        loaded,
        staged,
        expected=old,
        midway=lambda: seen_midway.append(
            (keyring_entry(ring, KEYRING_USERNAME), keyring_entry(ring, staged_username(new.key_id)))
        ),
    )

    # Primary written first, the staged entry deleted after: never a moment without the new key.
    assert seen_midway == [(new, new)]
    assert keyring_entry(ring, KEYRING_USERNAME) == new
    assert keyring_entry(ring, staged_username(new.key_id)) is None
    assert promoted.key == new and promoted.source is KeySource.KEYRING
    assert not key_file.parent.exists()


def test_a_second_staged_keyring_key_leaves_the_first_alone(ring: SharedFileKeyring, key_file: Path) -> None:
    ring.set_password(KEYRING_SERVICE, KEYRING_USERNAME, MasterKey.generate().to_base64().reveal())
    loaded = loaded_from_keyring(ring, key_file)
    first, second = MasterKey.generate(), MasterKey.generate()

    stage_next_key(loaded, first)
    stage_next_key(loaded, second)

    assert keyring_entry(ring, staged_username(first.key_id)) == first
    assert keyring_entry(ring, staged_username(second.key_id)) == second


def test_a_keyring_promotion_is_refused_once_the_primary_holds_another_key(
    ring: SharedFileKeyring, key_file: Path
) -> None:
    old, mine, theirs = MasterKey.generate(), MasterKey.generate(), MasterKey.generate()
    ring.set_password(KEYRING_SERVICE, KEYRING_USERNAME, old.to_base64().reveal())
    loaded = loaded_from_keyring(ring, key_file)
    staged = stage_next_key(loaded, mine)
    # Another rotation promoted its key meanwhile; writing ours over it would lose it.
    ring.set_password(KEYRING_SERVICE, KEYRING_USERNAME, theirs.to_base64().reveal())

    with pytest.raises(
        MasterKeyError, match=f"holds master key {theirs.key_id}, not master key {old.key_id}"
    ):
        promote_staged_key(loaded, staged, expected=old)

    assert keyring_entry(ring, KEYRING_USERNAME) == theirs
    assert keyring_entry(ring, staged_username(mine.key_id)) == mine


@trust_test_backend
class ForgetfulPrimary(SharedFileKeyring):
    """Accepts a new primary entry and keeps the old one."""

    def set_password(self, service: str, username: str, password: str) -> None:
        if username != KEYRING_USERNAME or self.get_password(service, username) is None:
            super().set_password(service, username, password)


def test_a_keyring_that_does_not_keep_the_promoted_key_leaves_it_staged(
    tmp_path: Path, key_file: Path
) -> None:
    ring = ForgetfulPrimary(tmp_path / "keyring.json")
    old, new = MasterKey.generate(), MasterKey.generate()
    ring.set_password(KEYRING_SERVICE, KEYRING_USERNAME, old.to_base64().reveal())
    loaded = loaded_from_keyring(ring, key_file)
    staged = stage_next_key(loaded, new)

    with pytest.raises(MasterKeyError, match=KEYRING_NEXT_USERNAME):
        promote_staged_key(loaded, staged, expected=old)

    assert keyring_entry(ring, staged_username(new.key_id)) == new


def test_a_staged_keyring_copy_of_the_primary_is_discarded(ring: SharedFileKeyring, key_file: Path) -> None:
    key = MasterKey.generate()
    ring.set_password(KEYRING_SERVICE, KEYRING_USERNAME, key.to_base64().reveal())
    ring.set_password(KEYRING_SERVICE, staged_username(key.key_id), key.to_base64().reveal())
    loaded = loaded_from_keyring(ring, key_file)
    staged = read_staged_key(loaded, key.key_id)
    assert staged is not None

    discard_staged_key(staged)

    assert keyring_entry(ring, staged_username(key.key_id)) is None
    assert keyring_entry(ring, KEYRING_USERNAME) == key


def test_a_staged_keyring_key_is_found_when_the_primary_entry_is_gone(
    ring: SharedFileKeyring, key_file: Path
) -> None:
    new = MasterKey.generate()
    ring.set_password(KEYRING_SERVICE, staged_username(new.key_id), new.to_base64().reveal())

    found = find_staged_for_missing_primary(
        KeySettings(), new.key_id, keyring_backend=ring, default_key_file=key_file
    )

    assert found is not None
    empty, staged = found
    assert staged.key == new and empty.source is KeySource.KEYRING
    promote_staged_key(empty, staged, expected=None)
    assert keyring_entry(ring, KEYRING_USERNAME) == new
    assert keyring_entry(ring, staged_username(new.key_id)) is None


# --- key file ------------------------------------------------------------------------------------


@pytest.mark.usefixtures("umask_zero")
def test_a_key_file_key_is_staged_in_a_private_sibling_and_renamed_over_the_primary(key_file: Path) -> None:
    old, new, other = MasterKey.generate(), MasterKey.generate(), MasterKey.generate()
    write_key(key_file, old)
    other_file = staged_file_path(key_file, other.key_id)
    write_key(other_file, other)  # staged by another rotation: never touched
    loaded = loaded_from_file(key_file)

    staged = stage_next_key(loaded, new)

    next_file = key_file.with_name(f"master.key.{new.key_id}.next")
    assert staged.path == next_file == staging_path(loaded, new.key_id)
    assert file_key(next_file) == new
    assert stat.S_IMODE(next_file.stat().st_mode) == 0o600
    assert file_key(key_file) == old
    assert sorted(p.name for p in key_file.parent.iterdir()) == sorted(
        ["master.key", next_file.name, other_file.name]
    )

    renamed_midway: list[bool] = []
    promoted = promote_staged_key(
        loaded, staged, expected=old, midway=lambda: renamed_midway.append(not next_file.exists())
    )

    assert renamed_midway == [True]
    assert file_key(key_file) == new
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert not next_file.exists()
    assert file_key(other_file) == other
    assert promoted.key == new and promoted.path == key_file and promoted.warning


def test_an_explicit_key_file_stages_beside_itself(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "bot.key"
    write_key(path, MasterKey.generate())
    loaded = load_master_key(KeySettings(master_key_file=path), has_ciphertext=True)
    new = MasterKey.generate()

    staged = stage_next_key(loaded, new)

    assert staged.path == tmp_path / "secrets" / f"bot.key.{new.key_id}.next"


def test_a_promotion_another_process_finished_first_is_accepted(key_file: Path) -> None:
    old, new = MasterKey.generate(), MasterKey.generate()
    write_key(key_file, old)
    loaded = loaded_from_file(key_file)
    staged = stage_next_key(loaded, new)
    promote_staged_key(loaded, staged, expected=old)

    again = promote_staged_key(loaded, staged, expected=old)

    assert again.key == new and file_key(key_file) == new


def test_a_key_file_promotion_is_refused_once_the_primary_holds_another_key(key_file: Path) -> None:
    old, mine, theirs = MasterKey.generate(), MasterKey.generate(), MasterKey.generate()
    write_key(key_file, old)
    loaded = loaded_from_file(key_file)
    staged = stage_next_key(loaded, mine)
    write_key(key_file, theirs)

    with pytest.raises(MasterKeyError, match="was not promoted"):
        promote_staged_key(loaded, staged, expected=old)

    assert file_key(key_file) == theirs
    assert staged.path is not None and file_key(staged.path) == mine


def test_a_vanished_staged_file_that_was_not_promoted_is_an_error(key_file: Path) -> None:
    old = MasterKey.generate()
    write_key(key_file, old)
    loaded = loaded_from_file(key_file)
    staged = stage_next_key(loaded, MasterKey.generate())
    assert staged.path is not None
    staged.path.unlink()

    with pytest.raises(MasterKeyError, match="vanished"):
        promote_staged_key(loaded, staged, expected=old)


def test_a_staged_file_open_to_others_is_refused(key_file: Path) -> None:
    write_key(key_file, MasterKey.generate())
    new = MasterKey.generate()
    write_key(staged_file_path(key_file, new.key_id), new, mode=0o644)

    with pytest.raises(InsecureKeyFile):
        read_staged_key(loaded_from_file(key_file), new.key_id)


def test_a_key_id_that_is_not_a_key_id_names_no_file(key_file: Path) -> None:
    write_key(key_file, MasterKey.generate())
    # Key ids are also read from the database, which must not steer the bot to another file.
    write_key(key_file.parent / "x", MasterKey.generate())

    assert read_staged_key(loaded_from_file(key_file), "/../x") is None


def test_a_staging_directory_that_cannot_be_written_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    loaded = loaded_from_env(MasterKey.generate())

    with pytest.raises(MasterKeyError, match=f"cannot write the new master key to {blocker / 'master.key'}"):
        stage_next_key(loaded, MasterKey.generate(), default_key_file=blocker / "master.key")


# --- CONNECTIONS_MASTER_KEY ----------------------------------------------------------------------


def test_an_env_key_is_staged_in_the_config_directory_by_default(isolated_home: Path) -> None:
    loaded = loaded_from_env(MasterKey.generate())
    new = MasterKey.generate()

    staged = stage_next_key(loaded, new)

    assert staged.path == isolated_home / ".config" / "connections-bot" / f"master.key.{new.key_id}.next"
    assert file_key(staged.path) == new
    assert stat.S_IMODE(staged.path.stat().st_mode) == 0o600
    assert read_staged_key(loaded, new.key_id) == staged


def test_a_staged_file_is_never_replaced(isolated_home: Path) -> None:
    new = MasterKey.generate()
    slot = isolated_home / ".config" / "connections-bot" / f"master.key.{new.key_id}.next"
    slot.parent.mkdir(parents=True)
    slot.write_text("not a key\n")
    loaded = loaded_from_env(MasterKey.generate())

    with pytest.raises(MasterKeyError, match="already exists"):
        stage_next_key(loaded, new)

    assert slot.read_text() == "not a key\n"


def test_an_env_key_cannot_be_promoted_by_the_bot(tmp_path: Path) -> None:
    old = MasterKey.generate()
    loaded = loaded_from_env(old)
    staged = stage_next_key(loaded, MasterKey.generate(), default_key_file=tmp_path / "master.key")

    with pytest.raises(MasterKeyError, match="CONNECTIONS_MASTER_KEY"):
        promote_staged_key(loaded, staged, expected=old)


# --- the rotation lock ---------------------------------------------------------------------------


def try_the_lock_elsewhere(key_file: Path, *, wait: float = 0.0) -> BaseException | None:
    """What taking the lock from another thread does: another open file description, as another
    process has, and none of this thread's held locks."""
    outcome: list[BaseException | None] = []

    def take() -> None:
        try:
            with rotation_lock(KeySettings(), default_key_file=key_file, wait=wait):
                outcome.append(None)
        except RotationBusy as busy:
            outcome.append(busy)

    worker = threading.Thread(target=take)
    worker.start()
    worker.join()
    return outcome[0]


def test_a_second_holder_of_the_rotation_lock_is_turned_away(key_file: Path) -> None:
    with rotation_lock(KeySettings(), default_key_file=key_file) as held:
        assert held == key_file.with_name("master.key.lock")
        busy = try_the_lock_elsewhere(key_file)
        assert isinstance(busy, RotationBusy) and "another rotate-master-key is running" in str(busy)
        assert str(held) in str(busy)

    assert try_the_lock_elsewhere(key_file) is None  # released


def test_a_waiting_start_gives_up_with_what_to_do(key_file: Path) -> None:
    with rotation_lock(KeySettings(), default_key_file=key_file) as held:
        busy = try_the_lock_elsewhere(key_file, wait=0.05)
    assert isinstance(busy, RotationBusy) and str(held) in str(busy)
    assert "start again once it is done" in str(busy)


def test_the_holder_of_the_lock_takes_it_again_inside_its_block(key_file: Path) -> None:
    # The rotation holds it while its own start-up guard may finish a promotion under it.
    with rotation_lock(KeySettings(), default_key_file=key_file) as held:
        with rotation_lock(KeySettings(), default_key_file=key_file, wait=0.0) as again:
            assert again == held
        assert isinstance(try_the_lock_elsewhere(key_file), RotationBusy), "still held by the outer block"
    assert try_the_lock_elsewhere(key_file) is None


def test_a_named_key_file_is_locked_beside_itself(tmp_path: Path, key_file: Path) -> None:
    named = tmp_path / "secrets" / "bot.key"
    with rotation_lock(KeySettings(master_key_file=named), default_key_file=key_file) as held:
        assert held == tmp_path / "secrets" / "bot.key.lock"
        with rotation_lock(KeySettings(), default_key_file=key_file):
            pass  # another slot, another lock


def test_no_slot_message_or_repr_holds_key_material(ring: SharedFileKeyring, key_file: Path) -> None:
    old, new = MasterKey.generate(), MasterKey.generate()
    ring.set_password(KEYRING_SERVICE, KEYRING_USERNAME, old.to_base64().reveal())
    loaded = loaded_from_keyring(ring, key_file)
    staged = stage_next_key(loaded, new)

    text = f"{loaded!r} {staged!r} {staged.location} {loaded.location}"

    for key in (old, new):
        assert key.to_base64().reveal() not in text
