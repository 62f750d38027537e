"""Where the master key comes from, and the rule that a new one is never made over existing data.

Lookup order (see DESIGN.md, "Secrets"):

1. ``CONNECTIONS_MASTER_KEY`` (base64 of 32 bytes), for production from a secret manager.
2. ``CONNECTIONS_MASTER_KEY_FILE``, when the operator names a file explicitly.
3. The system keyring (service ``connections-bot``, user ``master-key``), if its backend is one
   known to encrypt what it stores (:data:`TRUSTED_KEYRING_BACKENDS`).
4. A key file in the user's config directory (never beside the database), mode 0600, with a
   warning naming the production options. It is read even when a keyring is usable, so a key made
   on an earlier headless start is never shadowed by a new one.

A key is generated only when the caller says the database holds no ciphertext yet: in the keyring
if one is usable, else in the key file. With ciphertext present and no key found, loading fails.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import logging
import os
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TypeVar

import keyring
import keyring.backends.chainer
import keyring.backends.fail
import keyring.backends.null
import platformdirs
from keyring.backend import KeyringBackend

from bot.crypto import InvalidMasterKey, MasterKey
from bot.keys import InsecureKeyFile, MalformedMasterKey, MasterKeyError, MasterKeyMissing
from bot.settings import KeySettings, Settings

__all__ = [
    "ENV_VAR",
    "FILE_ENV_VAR",
    "KEYRING_SERVICE",
    "KEYRING_USERNAME",
    "PREVIOUS_ENV_VAR",
    "TRUSTED_KEYRING_BACKENDS",
    "KeySource",
    "LoadedKey",
    "MasterKeySettings",
    "create_key_file",
    "default_key_file_path",
    "fsync_directory",
    "keyring_key",
    "keyring_location",
    "link_key_file",
    "load_master_key",
    "load_previous_key",
    "read_entry",
    "read_key_file",
    "reason",
    "store_entry",
    "trust_test_backend",
    "usable_keyring",
]

logger = logging.getLogger(__name__)

ENV_VAR = "CONNECTIONS_MASTER_KEY"
FILE_ENV_VAR = "CONNECTIONS_MASTER_KEY_FILE"
PREVIOUS_ENV_VAR = "CONNECTIONS_MASTER_KEY_PREVIOUS"
KEYRING_SERVICE = "connections-bot"
KEYRING_USERNAME = "master-key"


MasterKeySettings = Settings | KeySettings


class KeySource(enum.Enum):
    ENV = "env"
    KEYRING = "keyring"
    KEY_FILE = "key_file"


@dataclass(frozen=True)
class LoadedKey:
    """The master key and where it came from: ``location`` in words; ``warning`` when production
    should do better; ``backend``, a keyring key's (where its staged slot lives). ``from_next_slot``:
    read from a committed rotation's staged slot, as the primary does not hold it (yet); another
    rotation must not start until the operator finishes that one."""

    key: MasterKey
    source: KeySource
    location: str
    created: bool = False
    warning: str | None = None
    path: Path | None = None
    backend: KeyringBackend | None = field(default=None, repr=False, compare=False)
    from_next_slot: bool = False


def default_key_file_path(given: Path | None = None) -> Path:
    """``master.key`` in the user's config directory (``given`` instead, when a test names one)."""
    return given if given is not None else platformdirs.user_config_path("connections-bot") / "master.key"


def load_master_key(
    settings: MasterKeySettings,
    *,
    has_ciphertext: bool,
    keyring_backend: KeyringBackend | None = None,
    default_key_file: Path | None = None,
) -> LoadedKey:
    """Find the master key, creating one only if ``has_ciphertext`` is False; raises a
    :class:`MasterKeyError` fit to print. Tests pass ``keyring_backend`` and ``default_key_file``."""
    if settings.master_key is not None:
        try:
            key = MasterKey.from_base64(settings.master_key)
        except InvalidMasterKey as exc:
            raise MalformedMasterKey(f"{ENV_VAR} is malformed: {exc}") from None
        return LoadedKey(key=key, source=KeySource.ENV, location=ENV_VAR)

    looked = [f"{ENV_VAR} (not set)"]
    ring: list[KeyringBackend] = []
    if settings.master_key_file is not None:
        # An operator who names a file wants that file, even on a machine with a keyring.
        path, location = settings.master_key_file, f"{FILE_ENV_VAR}={settings.master_key_file}"
        looked.append(f"{location} (no such file)")
    else:
        ring = usable_keyring(keyring_backend)
        found = _read_primary_entry(ring)
        if found is not None:
            return found
        unusable = f"system keyring service {KEYRING_SERVICE!r} (no usable backend)"
        looked.append(f"{keyring_location(ring)} (no entry)" if ring else unusable)
        path = default_key_file_path(default_key_file)
        location = str(path)
        looked.append(f"key file {path} (no such file)")

    loaded = _from_key_file(path, location)
    if loaded is not None:
        return loaded
    if has_ciphertext:
        raise MasterKeyMissing(
            "the database holds encrypted credentials but no master key was found (looked in: "
            + "; ".join(looked)
            + "); restore the master key that sealed them: the bot will not create a new key over "
            "existing data"
        )
    return (_create_primary_entry(ring) if ring else None) or create_key_file(path, location)


def load_previous_key(settings: MasterKeySettings) -> MasterKey | None:
    """``CONNECTIONS_MASTER_KEY_PREVIOUS``: a key that opens rows sealed before a rotation (so
    instances can be switched one at a time, and a backup from before stays readable), never one
    that seals. Raises :class:`MalformedMasterKey`."""
    if settings.master_key_previous is None:
        return None
    try:
        return MasterKey.from_base64(settings.master_key_previous)
    except InvalidMasterKey as exc:
        raise MalformedMasterKey(f"{PREVIOUS_ENV_VAR} is malformed: {exc}") from None


def create_key_file(path: Path, location: str) -> LoadedKey:
    """Write a new key to ``path`` (0600, directory 0700), without ever replacing an existing file:
    if another start made one first, that one is the key."""
    key = MasterKey.generate()
    if not link_key_file(path, key):
        winner = _from_key_file(path, location)
        if winner is None:  # pragma: no cover - removed again between link() and open()
            raise MasterKeyError(f"the master key file {path} appeared and vanished; start again")
        return winner
    logger.info("created a new master key %s in %s", key.key_id, path)
    return _file_key(key, path, str(path), created=True)


def keyring_key(key: MasterKey, backend: KeyringBackend, *, created: bool = False) -> LoadedKey:
    location = keyring_location([backend])
    return LoadedKey(key=key, source=KeySource.KEYRING, created=created, location=location, backend=backend)


def _from_key_file(path: Path, location: str) -> LoadedKey | None:
    key = read_key_file(path)
    return None if key is None else _file_key(key, path, location, created=False)


def _file_key(key: MasterKey, path: Path, location: str, *, created: bool) -> LoadedKey:
    warning = (
        f"the master key is kept in the file {path}, protected only by file permissions; "
        f"for production set {ENV_VAR} from a secret manager, or install an encrypted keyring backend "
        "such as keyrings.cryptfile"
    )
    return LoadedKey(
        key=key, source=KeySource.KEY_FILE, created=created, location=location, warning=warning, path=path
    )


def reason(exc: BaseException) -> str:
    """A keyring backend's or the file system's ``exc`` in a few words for a message: only its type
    and first line, as backend messages are diagnostics, not a place for values."""
    first_line = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{type(exc).__name__}: {first_line}" if first_line else type(exc).__name__


def read_key_file(path: Path) -> MasterKey | None:
    """The key in ``path``, or None if there is no such file; refuses unsafe files and folders.

    Opened without following a symlink and without blocking (a FIFO at ``path`` would otherwise
    hang the start before it could be refused), inside its folder opened first, so the checks
    and the read are about the same objects."""
    try:
        folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise MasterKeyError(
            f"cannot open the folder of the master key file {path}: {exc.strerror}"
        ) from None
    try:
        try:
            fd = os.open(path.name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW, dir_fd=folder)
        except FileNotFoundError:
            _check_folder(folder, path)  # the key would be created there
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise InsecureKeyFile(
                    f"the master key file {path} is a symbolic link; name the file itself"
                ) from None
            raise MasterKeyError(f"cannot read the master key file {path}: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as handle:
            _check_file(os.fstat(handle.fileno()), path)
            _check_folder(folder, path)
            content = handle.read(4096)
    finally:
        os.close(folder)
    try:
        return MasterKey.from_base64(content.decode("ascii"))
    except (InvalidMasterKey, UnicodeDecodeError) as exc:
        problem = exc if isinstance(exc, InvalidMasterKey) else "it is not text"
        raise MalformedMasterKey(f"the master key file {path} is malformed: {problem}") from None


def _check_file(info: os.stat_result, path: Path) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise MasterKeyError(f"the master key file {path} is not a regular file")
    if info.st_uid != os.getuid():
        raise InsecureKeyFile(
            f"the master key file {path} is owned by another user (uid {info.st_uid}); "
            f"it must belong to the user running the bot (uid {os.getuid()})"
        )
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InsecureKeyFile(
            f"the master key file {path} is accessible by group or others "
            f"(mode {stat.S_IMODE(info.st_mode):o}); run `chmod 600 {path}`"
        )


def _check_folder(folder: int, path: Path) -> None:
    """Refuse a folder where another user could delete or replace the key: one they own, or one
    they may write to without the sticky bit (which, as on /tmp, keeps a name to its owner)."""
    info = os.fstat(folder)
    if info.st_uid not in (os.getuid(), 0):
        raise InsecureKeyFile(
            f"the folder {path.parent} of the master key file is owned by another user (uid "
            f"{info.st_uid}); keep the key in a folder of the user running the bot (uid {os.getuid()})"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not info.st_mode & stat.S_ISVTX:
        raise InsecureKeyFile(
            f"the folder {path.parent} of the master key file is writable by group or others "
            f"(mode {stat.S_IMODE(info.st_mode):o}), so another user could delete the key; "
            f"run `chmod go-w {path.parent}`"
        )


def link_key_file(path: Path, key: MasterKey) -> bool:
    """``key`` in the new file ``path`` (0600, directory 0700), complete or not at all; False if
    ``path`` exists already. OSErrors pass through."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Written and flushed under a temporary name first, so a reader never sees half a key.
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(key.to_base64().reveal().encode("ascii") + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        # link() fails if the name exists, unlike rename(): a racing start cannot replace a key.
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    fsync_directory(path.parent)
    return True


def fsync_directory(directory: Path) -> None:
    """Make the names in ``directory`` durable (losing a key after a crash would lose every
    credential); failures are ignored, as not every file system can."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def usable_keyring(given: KeyringBackend | None) -> list[KeyringBackend]:
    """The keyring's backends that may hold the master key (one, or a chainer's accepted members);
    none (logged at INFO) when none protects stored values."""
    try:
        backend = given if given is not None else keyring.get_keyring()
    except Exception as exc:
        logger.info("no usable keyring: %s", reason(exc))
        return []
    members = backend.backends if isinstance(backend, keyring.backends.chainer.ChainerBackend) else None
    accepted = []
    for candidate in list(members) if members is not None else [backend]:
        if (refusal := _refusal(candidate)) is None:
            accepted.append(candidate)
        else:
            logger.info("not using keyring backend %s: %s", _class_name(candidate), refusal)
    if not accepted:
        logger.info("no usable keyring: no backend that protects stored values")
    return accepted


def keyring_location(backends: list[KeyringBackend], username: str = KEYRING_USERNAME) -> str:
    names = ", ".join(_class_name(b) for b in backends)
    return f"system keyring service {KEYRING_SERVICE!r} user {username!r} ({names})"


def _read_primary_entry(ring: list[KeyringBackend]) -> LoadedKey | None:
    """The key in the first of ``ring``'s backends that has one; backends that fail to answer are
    removed from ``ring``."""
    for backend in list(ring):
        try:
            value = backend.get_password(KEYRING_SERVICE, KEYRING_USERNAME)
        except Exception as exc:
            logger.info("not using keyring backend %s: %s", _class_name(backend), reason(exc))
            ring.remove(backend)
            continue
        if value is not None:
            key = _parse(value, keyring_location([backend]), "; fix or delete that entry")
            return keyring_key(key, backend)
    return None


def _create_primary_entry(ring: list[KeyringBackend]) -> LoadedKey | None:
    """A new key stored in the first backend that keeps it, never over an entry that is no longer
    empty (another start's key, which is then the key); None if none does."""
    key = MasterKey.generate()
    for backend in ring:
        if (winner := read_entry(backend, KEYRING_USERNAME)) is not None:
            return keyring_key(winner, backend)
        try:
            kept = store_entry(backend, KEYRING_USERNAME, key)
        except Exception as exc:
            logger.info(
                "keyring backend %s cannot store the master key: %s", _class_name(backend), reason(exc)
            )
            continue
        # A backend that accepts a value and then loses it would strand every row sealed with it.
        if not kept:
            logger.info("keyring backend %s did not keep the master key; not using it", _class_name(backend))
            with contextlib.suppress(Exception):
                backend.delete_password(KEYRING_SERVICE, KEYRING_USERNAME)
            continue
        logger.info("created a new master key %s in the %s", key.key_id, keyring_location([backend]))
        return keyring_key(key, backend, created=True)
    return None


def read_entry(backend: KeyringBackend, username: str) -> MasterKey | None:
    """The key in the entry ``username`` of ``backend``, or None if there is none; raises
    :class:`MasterKeyError` if the backend does not answer or the entry is malformed."""
    location = keyring_location([backend], username)
    try:
        value = backend.get_password(KEYRING_SERVICE, username)
    except Exception as exc:
        raise MasterKeyError(f"cannot read the {location} entry: {reason(exc)}") from None
    return None if value is None else _parse(value, location)


def store_entry(backend: KeyringBackend, username: str, key: MasterKey) -> bool:
    """Write ``key`` to the entry ``username`` of ``backend`` and read it back: whether it was kept.
    The backend's own errors pass through."""
    encoded = key.to_base64().reveal()
    backend.set_password(KEYRING_SERVICE, username, encoded)
    return bool(backend.get_password(KEYRING_SERVICE, username) == encoded)


def _parse(value: str, location: str, advice: str = "") -> MasterKey:
    try:
        return MasterKey.from_base64(value)
    except InvalidMasterKey as exc:
        raise MalformedMasterKey(f"the {location} entry is malformed: {exc}{advice}") from None


# The backends that keep values encrypted at rest, by module and class: a denylist let through
# any backend with an unlisted name, so only these are used, and only these exact classes.
TRUSTED_KEYRING_BACKENDS: Final = frozenset(
    {
        "keyring.backends.SecretService.Keyring",  # Secret Service (GNOME Keyring, KeePassXC, …)
        "keyring.backends.libsecret.Keyring",  # the same store through libsecret
        "keyring.backends.macOS.Keyring",  # macOS Keychain
        "keyring.backends.Windows.WinVaultKeyring",  # Windows Credential Locker
        "keyring.backends.kwallet.DBusKeyring",  # KWallet
        "keyrings.cryptfile.cryptfile.CryptFileKeyring",  # a file encrypted with a passphrase
    }
)

_test_backends: set[type[KeyringBackend]] = set()
_Backend = TypeVar("_Backend", bound=type[KeyringBackend])


def trust_test_backend(cls: _Backend) -> _Backend:
    """Accept ``cls`` too: for the tests' stand-ins for an OS keyring, which protect nothing. Only
    code can call this (no setting widens the list), and nothing in ``bot`` does."""
    _test_backends.add(cls)
    return cls


def _refusal(backend: KeyringBackend) -> str | None:
    """Why ``backend`` must not hold the master key, or None if it may."""
    cls = type(backend)
    if cls in _test_backends:
        return None
    if isinstance(backend, keyring.backends.fail.Keyring):
        return "it is the fail backend (no keyring is installed)"
    if isinstance(backend, keyring.backends.null.Keyring):
        return "it is the null backend, which discards values"
    module = sys.modules.get(cls.__module__)
    # The module must really hold this class: a look-alike that borrowed the name is refused.
    if _class_name(backend) in TRUSTED_KEYRING_BACKENDS and getattr(module, cls.__qualname__, None) is cls:
        return None
    known = ", ".join(sorted(TRUSTED_KEYRING_BACKENDS))
    return f"it is not one of the backends known to encrypt what they store: {known}"


def _class_name(backend: KeyringBackend) -> str:
    return f"{type(backend).__module__}.{type(backend).__qualname__}"
