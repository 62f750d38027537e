"""The staged slots of a master-key rotation, and the lock that keeps two rotations apart.

``rotate-master-key`` stages its new key durably before any row changes, in a slot named after the
new key's id, so a staged key is never overwritten: on a machine that runs several databases, a
staged key may be the only copy of what opens another database's data.

* keyring: user ``master-key-next.<key id>`` in the backend that holds ``master-key``;
* key file: ``<key file>.<key id>.next`` beside it, written atomically, fsynced, never replaced;
* ``CONNECTIONS_MASTER_KEY``: ``master.key.<key id>.next`` in the config directory (or a new file
  named by ``--new-key-file``), from which the operator sets the variable.

A start never lists or guesses slots: it reads the one named after the key id the database's
canary is sealed with. After the commit :func:`~bot.keys.promotion.promote_staged_key` moves the
staged key into the primary slot, only if that slot still holds the key the rotation started from
(compare-and-set).

Every rotation holds :func:`rotation_lock` (``fcntl.flock`` on ``<primary key file>.lock``) from
loading the key to the end of the promotion, so two rotations of keys kept in the same place never
overlap. All errors are :class:`MasterKeyError` with messages that name paths and key ids, never keys.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from keyring.backend import KeyringBackend

from bot.crypto import MasterKey
from bot.keys.errors import MasterKeyError, RotationBusy, reason
from bot.keys.key_files import fsync_directory, publish_key_file, read_key_file
from bot.keys.keyrings import KEYRING_SERVICE, keyring_location, read_entry, store_entry, usable_keyring
from bot.keys.sources import (
    FILE_ENV_VAR,
    KeySource,
    LoadedKey,
    MasterKeySettings,
    default_key_file_path,
    keyring_key,
)

__all__ = [
    "KEYRING_NEXT_USERNAME",
    "LOCK_SUFFIX",
    "STAGED_SUFFIX",
    "StagedKey",
    "discard_staged_key",
    "find_staged_for_missing_primary",
    "read_staged_key",
    "rotation_lock",
    "stage_next_key",
    "staged_file_path",
    "staged_username",
    "staging_path",
]

logger = logging.getLogger(__name__)

KEYRING_NEXT_USERNAME = "master-key-next"
STAGED_SUFFIX = ".next"
LOCK_SUFFIX = ".lock"
# Key ids come from the database too (the canary's): only this shape may become part of a file name.
_KEY_ID = re.compile(r"[0-9a-f]{16}")


@dataclass(frozen=True)
class StagedKey:
    """A new master key in its staged slot beside the primary, waiting to be promoted."""

    key: MasterKey
    location: str
    path: Path | None = None
    backend: KeyringBackend | None = field(default=None, repr=False, compare=False)


def staged_file_path(primary: Path, key_id: str) -> Path:
    """``<primary>.<key id>.next``: where a key file (or the default env slot) stages ``key_id``."""
    return primary.with_name(f"{primary.name}.{key_id}{STAGED_SUFFIX}")


def staged_username(key_id: str) -> str:
    """The keyring user that stages ``key_id``."""
    return f"{KEYRING_NEXT_USERNAME}.{key_id}"


def staging_path(
    loaded: LoadedKey, key_id: str, *, new_key_file: Path | None = None, default_key_file: Path | None = None
) -> Path | None:
    """The file that stages ``key_id`` beside ``loaded``, or None for a keyring key."""
    if loaded.source is KeySource.KEYRING:
        return None
    if loaded.source is KeySource.KEY_FILE and loaded.path is not None:
        return staged_file_path(loaded.path, key_id)
    if new_key_file is not None:
        return new_key_file
    return staged_file_path(default_key_file_path(default_key_file), key_id)


def read_staged_key(
    loaded: LoadedKey, key_id: str, *, default_key_file: Path | None = None
) -> StagedKey | None:
    """The key staged for ``key_id`` beside ``loaded``, if there is one.

    Raises :class:`MasterKeyError` when the slot cannot be read or holds no valid key."""
    if not _KEY_ID.fullmatch(key_id):
        return None
    if loaded.source is KeySource.KEYRING and loaded.backend is not None:
        return _read_keyring_slot(loaded.backend, key_id)
    path = staging_path(loaded, key_id, default_key_file=default_key_file)
    return None if path is None else _read_staged_file(path)


def find_staged_for_missing_primary(
    settings: MasterKeySettings,
    key_id: str,
    *,
    keyring_backend: KeyringBackend | None = None,
    default_key_file: Path | None = None,
) -> tuple[LoadedKey, StagedKey] | None:
    """With no primary key anywhere, the key staged for ``key_id`` and the empty primary slot it
    belongs in (its ``key`` is the staged key), looked up where
    :func:`~bot.keys.sources.load_master_key` looks."""
    if settings.master_key is not None or not _KEY_ID.fullmatch(key_id):
        return None
    if settings.master_key_file is not None:
        return _file_pair(settings.master_key_file, key_id, f"{FILE_ENV_VAR}={settings.master_key_file}")
    ring = usable_keyring(keyring_backend)
    for backend in ring.members if ring is not None else []:
        try:
            staged = _read_keyring_slot(backend, key_id)
        except MasterKeyError as exc:
            logger.info("no staged master key in this keyring backend: %s", exc)
            continue
        if staged is not None:
            return keyring_key(staged.key, backend), staged
    path = default_key_file_path(default_key_file)
    return _file_pair(path, key_id, str(path))


def stage_next_key(
    loaded: LoadedKey,
    key: MasterKey,
    *,
    new_key_file: Path | None = None,
    default_key_file: Path | None = None,
) -> StagedKey:
    """Store ``key`` durably in a new staged slot of ``loaded``, named after ``key``'s id.

    Never replaces anything. Raises :class:`MasterKeyError` if the slot exists or does not keep it."""
    backend = loaded.backend
    if loaded.source is KeySource.KEYRING and backend is not None:
        return _stage_in_keyring(backend, key)
    path = staging_path(loaded, key.key_id, new_key_file=new_key_file, default_key_file=default_key_file)
    if path is None:  # pragma: no cover - a keyring key always carries its backend
        raise MasterKeyError("the master key's keyring backend is unknown; nothing was changed")
    publish_key_file(path, key)
    logger.info("staged the new master key %s in %s", key.key_id, path)
    return StagedKey(key=key, location=str(path), path=path)


def discard_staged_key(staged: StagedKey) -> None:
    """Remove a staged key that no row needs: a copy of the primary left by a promotion stopped
    halfway, or this process's own key after its rotation rolled back. Failures are logged."""
    try:
        if staged.backend is not None:
            staged.backend.delete_password(KEYRING_SERVICE, staged_username(staged.key.key_id))
        elif staged.path is not None:
            staged.path.unlink(missing_ok=True)
            fsync_directory(staged.path.parent)
    except Exception as exc:
        logger.warning("could not remove the staged master key in %s: %s", staged.location, reason(exc))


@contextlib.contextmanager
def rotation_lock(
    settings: MasterKeySettings, *, new_key_file: Path | None = None, default_key_file: Path | None = None
) -> Iterator[Path]:
    """Hold ``<primary key file>.lock`` (the named key file's, else the config directory's, which
    also stands for the keyring and ``CONNECTIONS_MASTER_KEY``; beside ``new_key_file`` for a
    ``CONNECTIONS_MASTER_KEY`` rotation that names one, so it needs no config directory) for the
    block; raises :class:`RotationBusy` at once if another process holds it."""
    named = new_key_file if settings.master_key is not None else settings.master_key_file
    primary = named if named is not None else default_key_file_path(default_key_file)
    path = primary.with_name(primary.name + LOCK_SUFFIX)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    except OSError as exc:
        raise MasterKeyError(
            f"cannot open the rotation lock {path}: {exc.strerror}; nothing was changed"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RotationBusy(
                f"another rotate-master-key is running (it holds {path}); nothing was changed: "
                "let it finish, then run this again if needed"
            ) from None
        yield path
    finally:
        # Closing releases the lock; the file stays, as removing it would let two holders in.
        os.close(fd)


def _read_staged_file(path: Path) -> StagedKey | None:
    key = read_key_file(path)
    return None if key is None else StagedKey(key=key, location=str(path), path=path)


def _file_pair(primary: Path, key_id: str, location: str) -> tuple[LoadedKey, StagedKey] | None:
    staged = _read_staged_file(staged_file_path(primary, key_id))
    if staged is None:
        return None
    empty = LoadedKey(
        key=staged.key, source=KeySource.KEY_FILE, created=False, location=location, path=primary
    )
    return empty, staged


def _read_keyring_slot(backend: KeyringBackend, key_id: str) -> StagedKey | None:
    username = staged_username(key_id)
    key = read_entry(backend, username)
    location = keyring_location([backend], username)
    return None if key is None else StagedKey(key=key, location=location, backend=backend)


def _stage_in_keyring(backend: KeyringBackend, key: MasterKey) -> StagedKey:
    username = staged_username(key.key_id)
    location = keyring_location([backend], username)
    try:
        kept = store_entry(backend, username, key)
    except Exception as exc:
        raise MasterKeyError(f"cannot stage the new master key in the {location}: {reason(exc)}") from None
    if not kept:
        raise MasterKeyError(f"the {location} did not keep the new master key; nothing was changed")
    logger.info("staged the new master key %s in the %s", key.key_id, location)
    return StagedKey(key=key, location=location, backend=backend)
