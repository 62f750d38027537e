"""The two stores a master key is kept in besides the environment.

* Key files: one is read only when it is private to this user; a new one is written under a
  temporary name, fsynced and published with link(), which never replaces a file, then made
  durable with an fsync of its directory.
* The system keyring: only backends that protect stored values may hold a key (not the fail or null
  backends, nor plain-text ``keyrings.alt`` ones); an entry written is read back before it is trusted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from pathlib import Path

import keyring
import keyring.backends.fail
import keyring.backends.null
from keyring.backend import KeyringBackend

from bot.crypto import InvalidMasterKey, MasterKey
from bot.keys import InsecureKeyFile, MalformedMasterKey, MasterKeyError

__all__ = [
    "KEYRING_SERVICE",
    "KEYRING_USERNAME",
    "create_primary_entry",
    "fsync_directory",
    "keyring_location",
    "link_key_file",
    "read_entry",
    "read_key_file",
    "read_primary_entry",
    "reason",
    "store_entry",
    "usable_keyring",
]

logger = logging.getLogger(__name__)

KEYRING_SERVICE = "connections-bot"
KEYRING_USERNAME = "master-key"


def reason(exc: BaseException) -> str:
    """``exc`` in a few words for a message: a keyring backend's or the file system's."""
    # Only the type and the first line: backend messages are diagnostics, not a place for values.
    first_line = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{type(exc).__name__}: {first_line}" if first_line else type(exc).__name__


# --- key files -----------------------------------------------------------------------------------


def read_key_file(path: Path) -> MasterKey | None:
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
        return MasterKey.from_base64(content.decode("ascii"))
    except (InvalidMasterKey, UnicodeDecodeError) as exc:
        problem = exc if isinstance(exc, InvalidMasterKey) else "it is not text"
        raise MalformedMasterKey(f"the master key file {path} is malformed: {problem}") from None


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
    """Make the names in ``directory`` durable; failures are ignored (not every file system can)."""
    # Losing the key after a crash would lose every credential.
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


# --- keyring -------------------------------------------------------------------------------------


def usable_keyring(given: KeyringBackend | None) -> list[KeyringBackend]:
    """The keyring's backends that may hold the master key (one, or a chainer's accepted members);
    none (logged at INFO) when none protects stored values."""
    try:
        backend = given if given is not None else keyring.get_keyring()
    except Exception as exc:
        logger.info("no usable keyring: %s", reason(exc))
        return []
    members = getattr(backend, "backends", None) if _is_chainer(backend) else None
    accepted = []
    for candidate in list(members) if members is not None else [backend]:
        refusal = _refusal(candidate)
        if refusal is None:
            accepted.append(candidate)
        else:
            logger.info("not using keyring backend %s: %s", _class_name(candidate), refusal)
    if not accepted:
        logger.info("no usable keyring: no backend that protects stored values")
    return accepted


def keyring_location(backends: list[KeyringBackend], username: str = KEYRING_USERNAME) -> str:
    """The entry ``username`` of these backends, in words."""
    names = ", ".join(_class_name(b) for b in backends)
    return f"system keyring service {KEYRING_SERVICE!r} user {username!r} ({names})"


def read_primary_entry(ring: list[KeyringBackend]) -> tuple[MasterKey, KeyringBackend] | None:
    """The key in the first of ``ring``'s backends that has one, and that backend; backends that fail
    to answer are removed from ``ring``."""
    for backend in list(ring):
        try:
            value = backend.get_password(KEYRING_SERVICE, KEYRING_USERNAME)
        except Exception as exc:
            logger.info("not using keyring backend %s: %s", _class_name(backend), reason(exc))
            ring.remove(backend)
            continue
        if value is not None:
            return _parse(value, keyring_location([backend]), "; fix or delete that entry"), backend
    return None


def create_primary_entry(ring: list[KeyringBackend]) -> tuple[MasterKey, KeyringBackend] | None:
    """A new key stored in the first backend that keeps it, and that backend; None if none does."""
    key = MasterKey.generate()
    for backend in ring:
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
        return key, backend
    return None


def read_entry(backend: KeyringBackend, username: str) -> MasterKey | None:
    """The key in the entry ``username`` of ``backend``, or None if there is none.

    Raises :class:`MasterKeyError` if the backend does not answer or the entry is malformed."""
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
    kept: str | None = backend.get_password(KEYRING_SERVICE, username)
    return kept == encoded


def _parse(value: str, location: str, advice: str = "") -> MasterKey:
    try:
        return MasterKey.from_base64(value)
    except InvalidMasterKey as exc:
        raise MalformedMasterKey(f"the {location} entry is malformed: {exc}{advice}") from None


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
