"""Finding the master key: env, keyring, key file, and never a new key over existing data."""

from __future__ import annotations

import base64
import logging
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import keyring.backends.chainer
import keyring.backends.fail
import keyring.backends.kwallet
import keyring.backends.libsecret
import keyring.backends.macOS
import keyring.backends.null
import keyring.backends.SecretService
import keyring.backends.Windows
import keyring.errors
import pytest
from keyring.backend import KeyringBackend

from bot.crypto import Cipher, MasterKey, Sealed, associated_data
from bot.keys import InsecureKeyFile, MalformedMasterKey, MasterKeyError, MasterKeyMissing, WrongMasterKey
from bot.keys.guard import verify_key_opens
from bot.keys.sources import (
    KEYRING_SERVICE,
    KEYRING_USERNAME,
    KeySource,
    LoadedKey,
    create_key_file,
    default_key_file_path,
    load_master_key,
    trust_test_backend,
    usable_keyring,
)
from bot.redaction import Secret
from bot.settings import Settings

ENTRY = (KEYRING_SERVICE, KEYRING_USERNAME)


@trust_test_backend
class MemoryKeyring(KeyringBackend):
    """A keyring that keeps values in a dict, like an OS keyring would keep them safely."""

    priority = 1

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.values: dict[tuple[str, str], str] = {}
        self.writes = 0

    def get_password(self, service: str, username: str) -> str | None:
        return self.values.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.writes += 1
        self.values[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self.values.pop((service, username), None)


class PlaintextKeyring(MemoryKeyring):
    """Stands in for keyrings.alt's PlaintextKeyring (not installed here)."""


class UnencryptedAltFileKeyring(MemoryKeyring):
    """A keyrings.alt file backend without encryption."""


UnencryptedAltFileKeyring.__module__ = "keyrings.alt.file"


class EncryptedKeyring(MemoryKeyring):
    """keyrings.alt's encrypted file backend protects its values with a password."""


EncryptedKeyring.__module__ = "keyrings.alt.file"


class Keyring(MemoryKeyring):
    """Claims the module and name of the Secret Service backend without being it."""


Keyring.__module__ = "keyring.backends.SecretService"


class CryptFileKeyring(MemoryKeyring):
    """Named like keyrings.cryptfile's backend, from another module."""


CryptFileKeyring.__module__ = "my_backends.cryptfile"


class SecretServiceSubclass(keyring.backends.SecretService.Keyring):
    """Inherits from an accepted backend, and may store values anywhere."""


@trust_test_backend
class LockedKeyring(MemoryKeyring):
    def get_password(self, service: str, username: str) -> str | None:
        raise keyring.errors.KeyringLocked("Failed to unlock the collection")


@trust_test_backend
class BrokenKeyring(MemoryKeyring):
    def get_password(self, service: str, username: str) -> str | None:
        raise RuntimeError("dbus went away")


@trust_test_backend
class ReadOnlyKeyring(MemoryKeyring):
    def set_password(self, service: str, username: str, password: str) -> None:
        raise keyring.errors.PasswordSetError("read only")


@trust_test_backend
class RacedKeyring(MemoryKeyring):
    """Another start writes its key to the entry just after this one found it empty."""

    def __init__(self, theirs: MasterKey) -> None:
        super().__init__()
        self.theirs = theirs

    def get_password(self, service: str, username: str) -> str | None:
        value = super().get_password(service, username)
        if value is None and not self.writes:
            self.set_password(service, username, self.theirs.to_base64().reveal())
        return value


@trust_test_backend
class ForgetfulKeyring(MemoryKeyring):
    """Accepts writes and keeps nothing."""

    def set_password(self, service: str, username: str, password: str) -> None:
        self.writes += 1


def chainer_of(*members: KeyringBackend) -> KeyringBackend:
    chained = list(members)

    class Chain(keyring.backends.chainer.ChainerBackend):
        backends = chained

    return Chain()  # type: ignore[no-untyped-call]


def fail_keyring() -> KeyringBackend:
    """keyring's stand-in when no backend is installed: every call raises NoKeyringError."""
    return keyring.backends.fail.Keyring()  # type: ignore[no-untyped-call]


def null_keyring() -> KeyringBackend:
    """keyring's backend that silently discards everything."""
    return keyring.backends.null.Keyring()  # type: ignore[no-untyped-call]


def settings(**overrides: object) -> Settings:
    return Settings(slack_bot_token=Secret("xoxb-test-token"), **overrides)  # type: ignore[arg-type]


def write_key_file(path: Path, key: MasterKey, mode: int = 0o600) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.write_text(key.to_base64().reveal() + "\n")
    path.chmod(mode)


def assert_no_key_material(text: str, *keys: MasterKey) -> None:
    for key in keys:
        raw = base64.b64decode(key.to_base64().reveal())
        assert key.to_base64().reveal() not in text
        assert raw.hex() not in text


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    return tmp_path / "config" / "connections-bot" / "master.key"


@pytest.fixture
def ring() -> MemoryKeyring:
    return MemoryKeyring()


@pytest.fixture
def umask_zero() -> Iterator[None]:
    # With no umask, the modes on disk are exactly the ones the code asked for.
    previous = os.umask(0)
    yield
    os.umask(previous)


# --- CONNECTIONS_MASTER_KEY ----------------------------------------------------------------------


def test_env_key_wins_over_keyring_and_file(ring: MemoryKeyring, key_file: Path) -> None:
    env_key, ring_key, file_key = MasterKey.generate(), MasterKey.generate(), MasterKey.generate()
    ring.values[ENTRY] = ring_key.to_base64().reveal()
    write_key_file(key_file, file_key)

    loaded = load_master_key(
        settings(master_key=env_key.to_base64()),
        has_ciphertext=True,
        keyring_backend=ring,
        default_key_file=key_file,
    )

    assert loaded.key == env_key
    assert loaded.source is KeySource.ENV
    assert loaded.created is False
    assert loaded.warning is None
    assert loaded.location == "CONNECTIONS_MASTER_KEY"


@pytest.mark.parametrize(
    "value",
    [
        "this-is-not-a-master-key-but-keep-it-quiet",
        base64.b64encode(b"sixteen-byte-key").decode(),
        base64.b64encode(b"k" * 48).decode(),
    ],
)
def test_malformed_env_key_is_an_error_that_does_not_echo_it(
    value: str, ring: MemoryKeyring, key_file: Path
) -> None:
    with pytest.raises(MalformedMasterKey) as caught:
        load_master_key(
            settings(master_key=Secret(value)),
            has_ciphertext=False,
            keyring_backend=ring,
            default_key_file=key_file,
        )

    message = str(caught.value)
    assert "CONNECTIONS_MASTER_KEY" in message
    assert "32 bytes" in message
    assert value not in message
    assert value not in repr(caught.value)
    assert "\n" not in message
    # A bad env key is a configuration mistake; falling back would hide it and create a second key.
    assert ring.values == {}
    assert not key_file.exists()


# --- keyring -------------------------------------------------------------------------------------


def test_empty_keyring_gets_a_new_key_when_there_is_no_ciphertext(
    ring: MemoryKeyring, key_file: Path
) -> None:
    loaded = load_master_key(
        settings(), has_ciphertext=False, keyring_backend=ring, default_key_file=key_file
    )

    assert loaded.source is KeySource.KEYRING
    assert loaded.created is True
    assert loaded.warning is None
    assert ring.values[ENTRY] == loaded.key.to_base64().reveal()
    assert "connections-bot" in loaded.location and "MemoryKeyring" in loaded.location
    assert not key_file.exists()
    assert not key_file.parent.exists()


def test_keyring_key_is_returned_next_time(ring: MemoryKeyring, key_file: Path) -> None:
    first = load_master_key(settings(), has_ciphertext=False, keyring_backend=ring, default_key_file=key_file)

    second = load_master_key(settings(), has_ciphertext=True, keyring_backend=ring, default_key_file=key_file)

    assert second.key == first.key
    assert second.source is KeySource.KEYRING
    assert second.created is False
    assert ring.writes == 1


def test_empty_keyring_with_ciphertext_never_creates_a_key(ring: MemoryKeyring, key_file: Path) -> None:
    with pytest.raises(MasterKeyMissing) as caught:
        load_master_key(settings(), has_ciphertext=True, keyring_backend=ring, default_key_file=key_file)

    message = str(caught.value)
    assert "encrypted credentials" in message
    assert "no master key was found" in message
    assert "will not create a new key" in message
    assert "CONNECTIONS_MASTER_KEY" in message
    assert "MemoryKeyring" in message
    assert str(key_file) in message
    assert ring.writes == 0
    assert not key_file.exists()


def test_empty_keyring_with_ciphertext_falls_through_to_the_key_file(
    ring: MemoryKeyring, key_file: Path
) -> None:
    file_key = MasterKey.generate()
    write_key_file(key_file, file_key)

    loaded = load_master_key(settings(), has_ciphertext=True, keyring_backend=ring, default_key_file=key_file)

    assert loaded.key == file_key
    assert loaded.source is KeySource.KEY_FILE
    assert ring.writes == 0


def test_existing_key_file_is_not_shadowed_by_a_new_keyring_key(ring: MemoryKeyring, key_file: Path) -> None:
    # A key made on an earlier headless start stays the key after a keyring appears.
    file_key = MasterKey.generate()
    write_key_file(key_file, file_key)

    loaded = load_master_key(
        settings(), has_ciphertext=False, keyring_backend=ring, default_key_file=key_file
    )

    assert loaded.key == file_key
    assert ring.values == {}


def test_malformed_keyring_entry_is_an_error_and_is_left_alone(ring: MemoryKeyring, key_file: Path) -> None:
    junk = "definitely-not-a-master-key-value"
    ring.values[ENTRY] = junk

    with pytest.raises(MalformedMasterKey) as caught:
        load_master_key(settings(), has_ciphertext=False, keyring_backend=ring, default_key_file=key_file)

    assert junk not in str(caught.value)
    assert "keyring" in str(caught.value)
    assert ring.values[ENTRY] == junk
    assert not key_file.exists()


@pytest.mark.parametrize(
    "backend",
    [
        pytest.param(fail_keyring(), id="fail"),
        pytest.param(null_keyring(), id="null"),
        pytest.param(PlaintextKeyring(), id="plaintext"),
        pytest.param(UnencryptedAltFileKeyring(), id="keyrings.alt.file"),
        pytest.param(EncryptedKeyring(), id="keyrings.alt.file-encrypted-not-listed"),
        pytest.param(Keyring(), id="borrowed-module-and-name"),
        pytest.param(CryptFileKeyring(), id="allowed-name-other-module"),
        pytest.param(SecretServiceSubclass(), id="subclass-of-allowed"),
        pytest.param(chainer_of(PlaintextKeyring(), null_keyring()), id="chainer-all-refused"),
        pytest.param(chainer_of(), id="empty-chainer"),
    ],
)
def test_backends_that_do_not_protect_values_are_refused(
    backend: KeyringBackend, key_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.keys")

    loaded = load_master_key(
        settings(), has_ciphertext=False, keyring_backend=backend, default_key_file=key_file
    )

    assert loaded.source is KeySource.KEY_FILE
    assert loaded.created is True
    assert key_file.exists()
    if isinstance(backend, MemoryKeyring):
        assert backend.values == {}
    assert "no usable keyring" in caplog.text
    if isinstance(backend, MemoryKeyring | keyring.backends.SecretService.Keyring):
        assert "not one of the backends known to encrypt what they store" in caplog.text
    assert_no_key_material(caplog.text, loaded.key)


@pytest.mark.parametrize(
    "backend",
    [
        keyring.backends.SecretService.Keyring,
        keyring.backends.libsecret.Keyring,
        keyring.backends.macOS.Keyring,
        keyring.backends.Windows.WinVaultKeyring,
        keyring.backends.kwallet.DBusKeyring,
    ],
)
def test_the_encrypting_system_backends_are_accepted(backend: type[KeyringBackend]) -> None:
    instance = backend()  # type: ignore[no-untyped-call]

    assert usable_keyring(instance) == [instance]


def test_plaintext_backend_is_not_read_even_when_it_holds_a_key(key_file: Path) -> None:
    plaintext = PlaintextKeyring()
    plaintext.values[ENTRY] = MasterKey.generate().to_base64().reveal()

    with pytest.raises(MasterKeyMissing):
        load_master_key(settings(), has_ciphertext=True, keyring_backend=plaintext, default_key_file=key_file)


def test_chainer_uses_only_its_protecting_members(key_file: Path) -> None:
    plaintext, safe = PlaintextKeyring(), MemoryKeyring()
    plaintext.values[ENTRY] = MasterKey.generate().to_base64().reveal()

    loaded = load_master_key(
        settings(),
        has_ciphertext=False,
        keyring_backend=chainer_of(plaintext, safe),
        default_key_file=key_file,
    )

    assert loaded.source is KeySource.KEYRING
    assert loaded.created is True
    assert safe.values[ENTRY] == loaded.key.to_base64().reveal()
    assert plaintext.values[ENTRY] != loaded.key.to_base64().reveal()
    assert plaintext.writes == 0


@pytest.mark.parametrize(
    ("backend", "reason"),
    [(LockedKeyring(), "KeyringLocked"), (BrokenKeyring(), "RuntimeError")],
)
def test_backend_errors_mean_no_usable_keyring(
    backend: MemoryKeyring, reason: str, key_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.keys")

    loaded = load_master_key(
        settings(), has_ciphertext=False, keyring_backend=backend, default_key_file=key_file
    )

    assert loaded.source is KeySource.KEY_FILE
    assert backend.writes == 0
    infos = [r for r in caplog.records if r.levelno == logging.INFO and reason in r.getMessage()]
    assert infos


@pytest.mark.parametrize("backend", [ReadOnlyKeyring(), ForgetfulKeyring()], ids=["read-only", "forgetful"])
def test_a_keyring_that_does_not_keep_the_new_key_is_not_used(backend: MemoryKeyring, key_file: Path) -> None:
    loaded = load_master_key(
        settings(), has_ciphertext=False, keyring_backend=backend, default_key_file=key_file
    )

    assert loaded.source is KeySource.KEY_FILE
    assert backend.values == {}
    assert MasterKey.from_base64(key_file.read_text()) == loaded.key


def test_default_keyring_is_asked_when_none_is_passed(
    monkeypatch: pytest.MonkeyPatch, ring: MemoryKeyring, key_file: Path
) -> None:
    monkeypatch.setattr(keyring, "get_keyring", lambda: ring)

    loaded = load_master_key(settings(), has_ciphertext=False, default_key_file=key_file)

    assert loaded.source is KeySource.KEYRING
    assert ENTRY in ring.values


# --- key file ------------------------------------------------------------------------------------


@pytest.mark.usefixtures("umask_zero")
def test_key_file_is_created_private_in_a_private_directory(key_file: Path) -> None:
    loaded = load_master_key(
        settings(),
        has_ciphertext=False,
        keyring_backend=fail_keyring(),
        default_key_file=key_file,
    )

    assert loaded.source is KeySource.KEY_FILE
    assert loaded.created is True
    assert loaded.path == key_file
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    content = key_file.read_text()
    assert content.endswith("\n") and content.count("\n") == 1
    assert MasterKey.from_base64(content) == loaded.key
    assert [p.name for p in key_file.parent.iterdir()] == ["master.key"]


def test_key_file_is_read_back_with_a_warning(key_file: Path) -> None:
    fail = fail_keyring()
    created = load_master_key(
        settings(), has_ciphertext=False, keyring_backend=fail, default_key_file=key_file
    )

    again = load_master_key(settings(), has_ciphertext=True, keyring_backend=fail, default_key_file=key_file)

    assert again.key == created.key
    assert again.created is False
    for loaded in (created, again):
        assert loaded.warning is not None
        assert "\n" not in loaded.warning
        assert str(key_file) in loaded.warning
        assert "CONNECTIONS_MASTER_KEY" in loaded.warning
        assert "secret manager" in loaded.warning
        assert "keyrings.cryptfile" in loaded.warning
        assert_no_key_material(loaded.warning, loaded.key)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o602, 0o660, 0o644])
def test_key_file_open_to_group_or_others_is_refused(key_file: Path, mode: int) -> None:
    file_key = MasterKey.generate()
    write_key_file(key_file, file_key, mode)

    with pytest.raises(InsecureKeyFile) as caught:
        load_master_key(
            settings(),
            has_ciphertext=True,
            keyring_backend=fail_keyring(),
            default_key_file=key_file,
        )

    message = str(caught.value)
    assert f"chmod 600 {key_file}" in message
    assert_no_key_material(message, file_key)
    assert key_file.read_text().strip() == file_key.to_base64().reveal()


def test_key_file_owned_by_another_user_is_refused(key_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file_key = MasterKey.generate()
    write_key_file(key_file, file_key)
    owner = key_file.stat().st_uid
    monkeypatch.setattr(os, "getuid", lambda: owner + 1)

    with pytest.raises(InsecureKeyFile) as caught:
        load_master_key(
            settings(),
            has_ciphertext=True,
            keyring_backend=fail_keyring(),
            default_key_file=key_file,
        )

    assert "owned by another user" in str(caught.value)
    assert_no_key_material(str(caught.value), file_key)


def load_from_file(key_file: Path) -> LoadedKey:
    fail = fail_keyring()
    return load_master_key(settings(), has_ciphertext=False, keyring_backend=fail, default_key_file=key_file)


def test_a_fifo_at_the_key_path_is_refused_without_waiting_for_a_writer(key_file: Path) -> None:
    key_file.parent.mkdir(mode=0o700, parents=True)
    os.mkfifo(key_file, 0o600)
    outcome: list[BaseException] = []

    def load() -> None:
        try:
            load_from_file(key_file)
        except BaseException as exc:
            outcome.append(exc)

    # In a thread, so that a start that blocks on the FIFO fails this test instead of hanging it.
    reader = threading.Thread(target=load, daemon=True)
    reader.start()
    reader.join(timeout=30)
    if reader.is_alive():
        os.close(os.open(key_file, os.O_WRONLY | os.O_NONBLOCK))  # lets the blocked open() return
        pytest.fail("reading a FIFO at the key path blocked")
    assert len(outcome) == 1 and isinstance(outcome[0], MasterKeyError)
    assert f"the master key file {key_file} is not a regular file" in str(outcome[0])


def test_a_symlink_at_the_key_path_is_refused(key_file: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.key"
    write_key_file(target, MasterKey.generate())
    key_file.parent.mkdir(mode=0o700, parents=True)
    key_file.symlink_to(target)

    with pytest.raises(InsecureKeyFile) as caught:
        load_from_file(key_file)

    assert f"the master key file {key_file} is a symbolic link" in str(caught.value)
    assert_no_key_material(str(caught.value))


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702, 0o720])
@pytest.mark.parametrize("key_exists", [True, False])
def test_a_key_folder_others_may_write_to_without_the_sticky_bit_is_refused(
    key_file: Path, mode: int, key_exists: bool
) -> None:
    file_key = MasterKey.generate()
    write_key_file(key_file, file_key)
    if not key_exists:
        key_file.unlink()  # a new key would be made in that folder
    key_file.parent.chmod(mode)

    with pytest.raises(InsecureKeyFile) as caught:
        load_from_file(key_file)

    assert f"the folder {key_file.parent} of the master key file is writable by group or others" in str(
        caught.value
    )
    assert f"chmod go-w {key_file.parent}" in str(caught.value)
    assert_no_key_material(str(caught.value), file_key)
    assert [p.name for p in key_file.parent.iterdir()] == (["master.key"] if key_exists else [])


def test_a_sticky_folder_like_tmp_is_accepted(key_file: Path) -> None:
    file_key = MasterKey.generate()
    write_key_file(key_file, file_key)
    key_file.parent.chmod(0o1777)

    assert load_from_file(key_file).key == file_key


def test_a_key_folder_owned_by_another_user_is_refused(
    key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file.parent.mkdir(mode=0o700, parents=True)
    if os.getuid() == 0:  # a folder root owns is accepted: give it to someone else
        os.chown(key_file.parent, 4242, -1)
    else:
        monkeypatch.setattr(os, "getuid", lambda: key_file.parent.stat().st_uid + 1)

    with pytest.raises(InsecureKeyFile) as caught:
        load_from_file(key_file)

    message = str(caught.value)
    assert f"the folder {key_file.parent} of the master key file is owned by another user" in message
    assert not key_file.exists()


def test_malformed_key_file_is_an_error_and_is_never_overwritten(key_file: Path) -> None:
    junk = "this-is-not-a-valid-master-key-at-all\n"
    key_file.parent.mkdir(parents=True)
    key_file.write_text(junk)
    key_file.chmod(0o600)

    with pytest.raises(MalformedMasterKey) as caught:
        load_master_key(
            settings(),
            has_ciphertext=False,
            keyring_backend=fail_keyring(),
            default_key_file=key_file,
        )

    assert str(key_file) in str(caught.value)
    assert junk.strip() not in str(caught.value)
    assert key_file.read_text() == junk


def test_ciphertext_and_no_key_anywhere_is_an_error_and_creates_nothing(key_file: Path) -> None:
    with pytest.raises(MasterKeyMissing) as caught:
        load_master_key(
            settings(),
            has_ciphertext=True,
            keyring_backend=fail_keyring(),
            default_key_file=key_file,
        )

    message = str(caught.value)
    assert "database holds encrypted credentials but no master key was found" in message
    assert "CONNECTIONS_MASTER_KEY" in message
    assert "no usable backend" in message
    assert str(key_file) in message
    assert "will not create a new key" in message
    assert "\n" not in message
    assert not key_file.exists()
    assert not key_file.parent.exists()
    assert isinstance(caught.value, MasterKeyError)


def test_configured_key_file_is_used_even_with_a_keyring(
    tmp_path: Path, ring: MemoryKeyring, key_file: Path
) -> None:
    configured = tmp_path / "secrets" / "bot.key"

    created = load_master_key(
        settings(master_key_file=configured),
        has_ciphertext=False,
        keyring_backend=ring,
        default_key_file=key_file,
    )
    again = load_master_key(
        settings(master_key_file=configured),
        has_ciphertext=True,
        keyring_backend=ring,
        default_key_file=key_file,
    )

    assert created.source is again.source is KeySource.KEY_FILE
    assert created.created and not again.created
    assert again.key == created.key
    assert "CONNECTIONS_MASTER_KEY_FILE" in again.location
    assert MasterKey.from_base64(configured.read_text()) == created.key
    assert ring.values == {}
    assert not key_file.exists()


def test_configured_key_file_missing_with_ciphertext_is_an_error(tmp_path: Path, ring: MemoryKeyring) -> None:
    configured = tmp_path / "secrets" / "bot.key"

    with pytest.raises(MasterKeyMissing) as caught:
        load_master_key(settings(master_key_file=configured), has_ciphertext=True, keyring_backend=ring)

    assert f"CONNECTIONS_MASTER_KEY_FILE={configured}" in str(caught.value)
    assert not configured.exists()


def test_default_key_file_lives_in_the_user_config_directory(isolated_home: Path) -> None:
    path = default_key_file_path()

    assert path == isolated_home / ".config" / "connections-bot" / "master.key"


def test_without_a_test_path_the_key_file_goes_to_the_user_config_directory(isolated_home: Path) -> None:
    loaded = load_master_key(settings(), has_ciphertext=False, keyring_backend=fail_keyring())

    assert loaded.path == isolated_home / ".config" / "connections-bot" / "master.key"
    assert MasterKey.from_base64(loaded.path.read_text()) == loaded.key


def test_creating_never_replaces_an_existing_key_file(key_file: Path) -> None:
    # Two bots starting at once: the second must adopt the first one's key, not overwrite it.
    first = MasterKey.generate()
    write_key_file(key_file, first)

    loaded = create_key_file(key_file, str(key_file))

    assert loaded.key == first
    assert loaded.created is False
    assert MasterKey.from_base64(key_file.read_text()) == first
    assert [p.name for p in key_file.parent.iterdir()] == ["master.key"]


def test_loaded_key_repr_shows_no_key_material(ring: MemoryKeyring, key_file: Path) -> None:
    loaded = load_master_key(
        settings(), has_ciphertext=False, keyring_backend=ring, default_key_file=key_file
    )

    assert_no_key_material(repr(loaded), loaded.key)
    assert loaded.key.key_id in repr(loaded)


# --- verify_key_opens ----------------------------------------------------------------------------

AAD = associated_data("conn-1", "api_secret", 1)


def test_verify_key_opens_accepts_the_right_key() -> None:
    key = MasterKey.generate()
    sealed = Cipher(key).seal(Secret("stored-api-secret-value"), AAD)

    verify_key_opens(Cipher(key), sealed, AAD, where="CONNECTIONS_MASTER_KEY")
    old = MasterKey.generate()
    verify_key_opens(Cipher(old, previous=(key,)), sealed, AAD)


def test_verify_key_opens_names_both_key_ids_on_a_mismatch() -> None:
    stored_with, loaded = MasterKey.generate(), MasterKey.generate()
    sealed = Cipher(stored_with).seal(Secret("stored-api-secret-value"), AAD)

    with pytest.raises(WrongMasterKey) as caught:
        verify_key_opens(Cipher(loaded), sealed, AAD, where="CONNECTIONS_MASTER_KEY")

    message = str(caught.value)
    assert message.startswith(
        "the master key from CONNECTIONS_MASTER_KEY does not open the stored credentials"
    )
    assert stored_with.key_id in message
    assert loaded.key_id in message
    assert "stored-api-secret-value" not in message
    assert_no_key_material(message, stored_with, loaded)


def test_verify_key_opens_reports_a_damaged_row_when_the_key_id_matches() -> None:
    key = MasterKey.generate()
    sealed = Cipher(key).seal(Secret("stored-api-secret-value"), AAD)
    damaged = Sealed(sealed.key_id, sealed.nonce, bytes([sealed.ciphertext[0] ^ 1]) + sealed.ciphertext[1:])

    with pytest.raises(WrongMasterKey) as caught:
        verify_key_opens(Cipher(key), damaged, AAD, where="key file /tmp/x")

    message = str(caught.value)
    assert "the master key from key file /tmp/x does not open the stored credentials" in message
    assert "damaged" in message
    assert key.key_id in message
    assert_no_key_material(message, key)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_a_new_key_never_replaces_an_entry_another_start_just_wrote(key_file: Path) -> None:
    theirs = MasterKey.generate()
    ring = RacedKeyring(theirs)

    loaded = load_master_key(
        settings(), has_ciphertext=False, keyring_backend=ring, default_key_file=key_file
    )

    assert loaded.key == theirs and not loaded.created
    assert ring.values[ENTRY] == theirs.to_base64().reveal() and ring.writes == 1
    assert not key_file.exists()
