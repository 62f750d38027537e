"""Where the master key comes from, and the rule that a new one is never made over existing data.

Lookup order (see DESIGN.md, "Secrets"):

1. ``CONNECTIONS_MASTER_KEY`` (base64 of 32 bytes), for production from a secret manager.
2. ``CONNECTIONS_MASTER_KEY_FILE``, when the operator names a file explicitly.
3. The system keyring (service ``connections-bot``, user ``master-key``), unless its backend does
   not really protect the value (fail, null, plain-text ``keyrings.alt`` backends).
4. A key file in the user's config directory (never beside the database), mode 0600, with a
   warning naming the production options. It is read even when a keyring is usable, so a key made
   on an earlier headless start is never shadowed by a new one.

A key is generated only when the caller says the database holds no ciphertext yet: in the keyring
if one is usable, else in the key file. With ciphertext present and no key found, loading fails.

Rotation (``connections-bot rotate-master-key``) stages its new key beside the primary and promotes
it after the commit: see :mod:`bot.keys.slots`.

Exception hierarchy (all messages are one line and safe to print: paths and key ids, never keys)::

    CryptoError                    (bot.crypto)
    └── MasterKeyError             the master key cannot be loaded; the bot must not start
        ├── MalformedMasterKey     the env value, keyring entry or key file is not base64 of 32 bytes
        ├── InsecureKeyFile        the key file is readable/writable by others or owned by another user
        ├── MasterKeyMissing       ciphertext exists but no key was found anywhere
        └── WrongMasterKey         the key found does not open the stored credentials
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import keyring
import keyring.backends.fail
import keyring.backends.null
import platformdirs
from keyring.backend import KeyringBackend

from bot.crypto import Cipher, CryptoError, DecryptionError, InvalidMasterKey, MasterKey, Sealed
from bot.redaction import Secret

__all__ = [
    "ENV_VAR",
    "FILE_ENV_VAR",
    "KEYRING_SERVICE",
    "KEYRING_USERNAME",
    "InsecureKeyFile",
    "KeySource",
    "LoadedKey",
    "MalformedMasterKey",
    "MasterKeyError",
    "MasterKeyMissing",
    "MasterKeySettings",
    "WrongMasterKey",
    "default_key_file_path",
    "load_master_key",
    "verify_key_opens",
]

logger = logging.getLogger(__name__)

ENV_VAR = "CONNECTIONS_MASTER_KEY"
FILE_ENV_VAR = "CONNECTIONS_MASTER_KEY_FILE"
KEYRING_SERVICE = "connections-bot"
KEYRING_USERNAME = "master-key"
_APP_DIR_NAME = "connections-bot"
_KEY_FILE_NAME = "master.key"


class MasterKeyError(CryptoError):
    """The master key cannot be loaded or does not fit the stored data."""


class MalformedMasterKey(MasterKeyError):
    """A configured key is not base64 of exactly 32 bytes."""


class InsecureKeyFile(MasterKeyError):
    """The key file could be read or changed by someone other than its owner."""


class MasterKeyMissing(MasterKeyError):
    """The database holds ciphertext but no master key was found."""


class WrongMasterKey(MasterKeyError):
    """The loaded master key does not open the stored credentials."""


class MasterKeySettings(Protocol):
    """The two settings that say where the master key is (``Settings`` and ``KeySettings`` both fit)."""

    @property
    def master_key(self) -> Secret | None: ...

    @property
    def master_key_file(self) -> Path | None: ...


class KeySource(enum.Enum):
    ENV = "env"
    KEYRING = "keyring"
    KEY_FILE = "key_file"


@dataclass(frozen=True)
class LoadedKey:
    """The master key and where it came from.

    ``location`` says where in words ("CONNECTIONS_MASTER_KEY", a keyring backend, a file path) for
    start-up logs and :func:`verify_key_opens`; ``warning`` is set when production should do better.
    ``backend`` is the keyring backend that holds a keyring key (where its "next" slot lives).
    ``from_next_slot`` marks the key of a committed rotation read from its staged slot because it
    is not (yet) the primary: ``CONNECTIONS_MASTER_KEY`` still holds the old key, or the promotion
    failed. Another rotation must not start then: the operator finishes this one first.
    """

    key: MasterKey
    source: KeySource
    created: bool
    location: str
    warning: str | None = None
    path: Path | None = None
    backend: KeyringBackend | None = field(default=None, repr=False, compare=False)
    from_next_slot: bool = False


def default_key_file_path() -> Path:
    """``master.key`` in the user's config directory, e.g. ``~/.config/connections-bot/master.key``."""
    return platformdirs.user_config_path(_APP_DIR_NAME) / _KEY_FILE_NAME


def load_master_key(
    settings: MasterKeySettings,
    *,
    has_ciphertext: bool,
    keyring_backend: KeyringBackend | None = None,
    default_key_file: Path | None = None,
) -> LoadedKey:
    """Find the master key, creating one only if ``has_ciphertext`` is False.

    Raises a :class:`MasterKeyError` subclass with a message fit to print when the bot cannot start.
    Pass ``keyring_backend`` and ``default_key_file`` in tests so the real keyring and config
    directory are never touched.
    """
    if settings.master_key is not None:
        try:
            key = MasterKey.from_base64(settings.master_key)
        except InvalidMasterKey as exc:
            raise MalformedMasterKey(f"{ENV_VAR} is malformed: {exc}") from None
        return LoadedKey(key=key, source=KeySource.ENV, created=False, location=ENV_VAR)

    looked = [f"{ENV_VAR} (not set)"]
    if settings.master_key_file is not None:
        # An operator who names a file wants that file, even on a machine with a keyring.
        path = settings.master_key_file
        loaded = _read_key_file(path, f"{FILE_ENV_VAR}={path}")
        if loaded is not None:
            return loaded
        looked.append(f"{FILE_ENV_VAR}={path} (no such file)")
        _refuse_to_create(has_ciphertext, looked)
        return _create_key_file(path, f"{FILE_ENV_VAR}={path}")

    ring = _usable_keyring(keyring_backend)
    if ring is not None:
        loaded = ring.read()
        if loaded is not None:
            return loaded
    if ring is not None and ring.usable:
        looked.append(f"{ring.location} (no entry)")
    else:
        ring = None
        looked.append(f"system keyring service {KEYRING_SERVICE!r} (no usable backend)")

    path = default_key_file if default_key_file is not None else default_key_file_path()
    loaded = _read_key_file(path, str(path))
    if loaded is not None:
        return loaded
    looked.append(f"key file {path} (no such file)")

    _refuse_to_create(has_ciphertext, looked)
    if ring is not None:
        created = ring.create()
        if created is not None:
            return created
    return _create_key_file(path, str(path))


def verify_key_opens(cipher: Cipher, sealed: Sealed, aad: bytes, *, where: str = "the configuration") -> None:
    """Raise :class:`WrongMasterKey` unless ``cipher`` opens one stored row (``sealed`` with ``aad``).

    ``where`` names the key's source (``LoadedKey.location``) in the message.
    """
    if sealed.key_id not in cipher.key_ids:
        raise WrongMasterKey(
            f"the master key from {where} does not open the stored credentials: they were sealed with "
            f"master key {sealed.key_id}, but the loaded key is {cipher.key_id}; restore the key that "
            "sealed them (the bot will not start with a different key)"
        )
    try:
        cipher.open(sealed, aad)
    except DecryptionError:
        raise WrongMasterKey(
            f"the master key from {where} does not open the stored credentials: the key id "
            f"{sealed.key_id} matches but decryption failed, so the stored row is damaged or altered"
        ) from None


def _refuse_to_create(has_ciphertext: bool, looked: list[str]) -> None:
    if has_ciphertext:
        raise MasterKeyMissing(
            "the database holds encrypted credentials but no master key was found (looked in: "
            + "; ".join(looked)
            + "); restore the master key that sealed them: the bot will not create a new key over "
            "existing data"
        )


# --- keyring -------------------------------------------------------------------------------------


class _Keyring:
    """The accepted backends of a keyring (one, or a chainer's accepted members) as one store."""

    def __init__(self, backends: list[KeyringBackend]) -> None:
        self._backends = backends

    @property
    def usable(self) -> bool:
        return bool(self._backends)

    @property
    def members(self) -> list[KeyringBackend]:
        return list(self._backends)

    @property
    def location(self) -> str:
        return _keyring_location(self._backends)

    def read(self) -> LoadedKey | None:
        """The stored key, if a backend has one; backends that fail to answer are dropped."""
        answering = []
        for backend in self._backends:
            try:
                value = backend.get_password(KEYRING_SERVICE, KEYRING_USERNAME)
            except Exception as exc:
                logger.info("not using keyring backend %s: %s", _class_name(backend), _reason(exc))
                continue
            if value is not None:
                return _parse_keyring_value(value, backend)
            answering.append(backend)
        self._backends = answering
        return None

    def create(self) -> LoadedKey | None:
        """Store a new key in the first backend that keeps it; None if none does."""
        key = MasterKey.generate()
        encoded = key.to_base64()
        for backend in self._backends:
            try:
                backend.set_password(KEYRING_SERVICE, KEYRING_USERNAME, encoded.reveal())
                stored = backend.get_password(KEYRING_SERVICE, KEYRING_USERNAME)
            except Exception as exc:
                logger.info(
                    "keyring backend %s cannot store the master key: %s", _class_name(backend), _reason(exc)
                )
                continue
            # A backend that accepts a value and then loses it would strand every row sealed with it.
            if stored != encoded.reveal():
                logger.info(
                    "keyring backend %s did not keep the master key; not using it", _class_name(backend)
                )
                with contextlib.suppress(Exception):
                    backend.delete_password(KEYRING_SERVICE, KEYRING_USERNAME)
                continue
            location = _keyring_location([backend])
            logger.info("created a new master key %s in the %s", key.key_id, location)
            return LoadedKey(
                key=key, source=KeySource.KEYRING, created=True, location=location, backend=backend
            )
        return None


def _parse_keyring_value(value: str, backend: KeyringBackend) -> LoadedKey:
    location = _keyring_location([backend])
    try:
        key = MasterKey.from_base64(value)
    except InvalidMasterKey as exc:
        raise MalformedMasterKey(
            f"the {location} entry is malformed: {exc}; fix or delete that entry"
        ) from None
    return LoadedKey(key=key, source=KeySource.KEYRING, created=False, location=location, backend=backend)


def _keyring_location(backends: list[KeyringBackend], username: str = KEYRING_USERNAME) -> str:
    names = ", ".join(_class_name(b) for b in backends)
    return f"system keyring service {KEYRING_SERVICE!r} user {username!r} ({names})"


def _usable_keyring(given: KeyringBackend | None) -> _Keyring | None:
    """The keyring's accepted backends, or None (logged at INFO) when none protects stored values."""
    try:
        backend = given if given is not None else keyring.get_keyring()
    except Exception as exc:
        logger.info("no usable keyring: %s", _reason(exc))
        return None
    members = getattr(backend, "backends", None) if _is_chainer(backend) else None
    candidates: list[KeyringBackend] = list(members) if members is not None else [backend]
    accepted = []
    for candidate in candidates:
        refusal = _refusal(candidate)
        if refusal is None:
            accepted.append(candidate)
        else:
            logger.info("not using keyring backend %s: %s", _class_name(candidate), refusal)
    if not accepted:
        logger.info("no usable keyring: no backend that protects stored values")
        return None
    return _Keyring(accepted)


def _is_chainer(backend: KeyringBackend) -> bool:
    return any(cls.__name__ == "ChainerBackend" for cls in type(backend).__mro__)


def _refusal(backend: KeyringBackend) -> str | None:
    """Why ``backend`` must not hold the master key, or None if it may."""
    if isinstance(backend, keyring.backends.fail.Keyring):
        return "it is the fail backend (no keyring is installed)"
    if isinstance(backend, keyring.backends.null.Keyring):
        return "it is the null backend, which discards values"
    mro = type(backend).__mro__
    if any("plaintext" in cls.__name__.lower() for cls in mro):
        return "it stores values in plain text"
    module = type(backend).__module__
    if module.startswith(("keyrings.alt.file", "keyrings.alt.pyfs")) and not any(
        cls.__name__.startswith("Encrypted") for cls in mro
    ):
        return "it is an unencrypted keyrings.alt file backend"
    inner = getattr(backend, "_keyring", None)  # keyrings.alt.multi wraps another backend
    if isinstance(inner, KeyringBackend):
        return _refusal(inner)
    return None


def _class_name(backend: KeyringBackend) -> str:
    cls = type(backend)
    return f"{cls.__module__}.{cls.__qualname__}"


def _reason(exc: BaseException) -> str:
    # Only the type and the first line: backend messages are diagnostics, not a place for values.
    first_line = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{type(exc).__name__}: {first_line}" if first_line else type(exc).__name__


# --- key file ------------------------------------------------------------------------------------


def _file_warning(path: Path) -> str:
    return (
        f"the master key is kept in the file {path}, protected only by file permissions; "
        f"for production set {ENV_VAR} from a secret manager, or install an encrypted keyring backend "
        "such as keyrings.cryptfile"
    )


def _read_key_file(path: Path, location: str) -> LoadedKey | None:
    """The key in ``path``, or None if there is no such file; refuses unsafe files."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise MasterKeyError(f"cannot read the master key file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
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
        content = handle.read(4096)
    try:
        key = MasterKey.from_base64(content.decode("ascii"))
    except (InvalidMasterKey, UnicodeDecodeError) as exc:
        problem = exc if isinstance(exc, InvalidMasterKey) else "it is not text"
        raise MalformedMasterKey(f"the master key file {path} is malformed: {problem}") from None
    return LoadedKey(
        key=key,
        source=KeySource.KEY_FILE,
        created=False,
        location=location,
        warning=_file_warning(path),
        path=path,
    )


def _write_temporary_key_file(path: Path, key: MasterKey) -> Path:
    """``key`` in a new private file beside ``path``, flushed to disk, for a link or rename to
    publish under ``path``: a reader never sees half a key."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(key.to_base64().reveal().encode("ascii") + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return tmp


def _create_key_file(path: Path, location: str) -> LoadedKey:
    """Write a new key to ``path`` (0600, directory 0700), without ever replacing an existing file."""
    key = MasterKey.generate()
    tmp = _write_temporary_key_file(path, key)
    try:
        try:
            # link() fails if the name exists, unlike rename(): a racing start cannot replace a key.
            os.link(tmp, path)
        except FileExistsError:
            winner = _read_key_file(path, location)
            if winner is None:  # pragma: no cover - removed again between link() and open()
                raise MasterKeyError(
                    f"the master key file {path} appeared and vanished; start again"
                ) from None
            return winner
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    _fsync_directory(path.parent)
    logger.info("created a new master key %s in %s", key.key_id, path)
    return LoadedKey(
        key=key,
        source=KeySource.KEY_FILE,
        created=True,
        location=str(path),
        warning=_file_warning(path),
        path=path,
    )


def _fsync_directory(directory: Path) -> None:
    # Makes the new name durable: losing the key after a crash would lose every credential.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
