"""The staged slots of a master-key rotation, their promotion, and the rotation lock.

A rotation stages its new key durably before any row changes, in a slot named after the new key's
id, so a staged key is never overwritten: on a machine that runs several databases, a staged key
may be the only copy of what opens another database's data.

* keyring: user ``master-key-next.<key id>`` in the backend that holds ``master-key``;
* key file: ``<key file>.<key id>.next`` beside it, written atomically, fsynced, never replaced;
* ``CONNECTIONS_MASTER_KEY``: nothing. Its new key comes from the operator, who keeps it. Earlier
  versions wrote it to ``master.key.<key id>.next`` in the config directory; a start still reads
  that file, for a rotation made by one of them.

A start never lists or guesses slots: it reads the one named after the key id the database's
canary is sealed with. A promotion is a compare-and-set over the key the rotation started from,
made under :func:`rotation_lock`, which every writer of a primary slot holds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

from keyring.backend import KeyringBackend

from bot.crypto import MasterKey
from bot.keys import MasterKeyError, RotationBusy
from bot.keys.sources import (
    ENV_VAR,
    FILE_ENV_VAR,
    KEYRING_SERVICE,
    KEYRING_USERNAME,
    KeySource,
    LoadedKey,
    MasterKeySettings,
    default_key_file_path,
    fsync_directory,
    keyring_key,
    keyring_location,
    link_key_file,
    read_entry,
    read_key_file,
    reason,
    store_entry,
    usable_keyring,
)

__all__ = [
    "KEYRING_NEXT_USERNAME",
    "STAGED_SUFFIX",
    "StagedKey",
    "discard_staged_key",
    "find_staged_for_missing_primary",
    "promote_staged_key",
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
# Key ids come from the database too (the canary's): only this shape may become part of a file name.
_KEY_ID = re.compile(r"[0-9a-f]{16}")
_LOCK_POLL = 0.02  # seconds between tries while waiting for the lock
# The locks this task holds already: taking one again from inside its block goes on at once.
_HELD: ContextVar[frozenset[Path]] = ContextVar("held_master_key_locks", default=frozenset())


@dataclass(frozen=True)
class StagedKey:
    """A new master key in its staged slot beside the primary, waiting to be promoted."""

    key: MasterKey
    location: str
    path: Path | None = None
    backend: KeyringBackend | None = field(default=None, repr=False, compare=False)
    username: str = field(default="", compare=False)
    """The keyring entry's user: named after the id the slot was staged under, which for a slot an
    older version staged is the key's legacy id, not its id."""


def staged_file_path(primary: Path, key_id: str) -> Path:
    """``<primary>.<key id>.next``: where a key file (or the default env slot) stages ``key_id``."""
    return primary.with_name(f"{primary.name}.{key_id}{STAGED_SUFFIX}")


def staged_username(key_id: str) -> str:
    return f"{KEYRING_NEXT_USERNAME}.{key_id}"


def staging_path(loaded: LoadedKey, key_id: str, *, default_key_file: Path | None = None) -> Path:
    """The file that stages ``key_id`` beside ``loaded``, a key file's or an env key's."""
    if loaded.source is KeySource.KEY_FILE and loaded.path is not None:
        return staged_file_path(loaded.path, key_id)
    return staged_file_path(default_key_file_path(default_key_file), key_id)


def read_staged_key(
    loaded: LoadedKey, key_id: str, *, default_key_file: Path | None = None
) -> StagedKey | None:
    """The key staged for ``key_id`` beside ``loaded``, if any; MasterKeyError if it is unreadable."""
    if not _KEY_ID.fullmatch(key_id):
        return None
    if loaded.backend is not None:  # a keyring key
        return _read_keyring_slot(loaded.backend, key_id)
    return _read_staged_file(staging_path(loaded, key_id, default_key_file=default_key_file))


def find_staged_for_missing_primary(
    settings: MasterKeySettings,
    key_id: str,
    *,
    keyring_backend: KeyringBackend | None = None,
    default_key_file: Path | None = None,
) -> tuple[LoadedKey, StagedKey] | None:
    """With no primary key anywhere, the key staged for ``key_id`` and the empty primary slot it
    belongs in (its ``key`` is the staged key), looked up where ``load_master_key`` looks."""
    named = settings.master_key_file
    if settings.master_key is not None or not _KEY_ID.fullmatch(key_id):
        return None
    for backend in usable_keyring(keyring_backend) if named is None else []:
        try:
            staged = _read_keyring_slot(backend, key_id)
        except MasterKeyError as exc:
            logger.info("no staged master key in this keyring backend: %s", exc)
            continue
        if staged is not None:
            return keyring_key(staged.key, backend), staged
    primary = named if named is not None else default_key_file_path(default_key_file)
    staged = _read_staged_file(staged_file_path(primary, key_id))
    if staged is None:
        return None
    location = f"{FILE_ENV_VAR}={named}" if named is not None else str(primary)
    return LoadedKey(key=staged.key, source=KeySource.KEY_FILE, location=location, path=primary), staged


def stage_next_key(loaded: LoadedKey, key: MasterKey, *, default_key_file: Path | None = None) -> StagedKey:
    """Store ``key`` durably in a new staged slot of ``loaded``, named after ``key``'s id, never over
    anything; raises :class:`MasterKeyError` if the slot exists or does not keep it."""
    if loaded.backend is not None:  # a keyring key
        slot = keyring_location([loaded.backend], staged_username(key.key_id))
        try:
            kept = store_entry(loaded.backend, staged_username(key.key_id), key)
        except Exception as exc:
            raise MasterKeyError(f"cannot stage the new master key in the {slot}: {reason(exc)}") from None
        if not kept:
            raise MasterKeyError(f"the {slot} did not keep the new master key; nothing was changed")
        logger.info("staged the new master key %s in the %s", key.key_id, slot)
        return StagedKey(key=key, location=slot, backend=loaded.backend, username=staged_username(key.key_id))
    path = staging_path(loaded, key.key_id, default_key_file=default_key_file)
    try:
        linked = not os.path.lexists(path) and link_key_file(path, key)
    except OSError as exc:
        raise MasterKeyError(
            f"cannot write the new master key to {path}: {exc.strerror}; nothing was changed"
        ) from None
    if not linked:
        raise MasterKeyError(
            f"{path} already exists; choose a new file for the new key (nothing was changed)"
        )
    logger.info("staged the new master key %s in %s", key.key_id, path)
    return StagedKey(key=key, location=str(path), path=path)


def promote_staged_key(
    loaded: LoadedKey,
    staged: StagedKey,
    *,
    expected: MasterKey | None,
    midway: Callable[[], None] = lambda: None,
) -> LoadedKey:
    """Make ``staged`` the primary key of ``loaded``'s slot and empty the staged slot, only if the
    primary still holds ``expected`` (None: is empty) or already holds ``staged``. Keyring: write
    ``master-key``, check it, then delete the staged entry; key file: rename the staged file over the
    primary, then fsync the directory; ``midway`` runs between the two halves (for tests). Only the
    operator can replace a ``CONNECTIONS_MASTER_KEY``. Raises :class:`MasterKeyError` if the primary
    holds another key or does not take this one; the staged copy then stays where it was."""
    if loaded.backend is not None:  # a keyring key
        _promote_in_keyring(loaded.backend, staged, expected, midway)
    elif loaded.source is KeySource.KEY_FILE and loaded.path is not None and staged.path is not None:
        _promote_key_file(loaded.path, staged.path, staged, expected, midway)
    else:
        raise MasterKeyError(f"a master key from {ENV_VAR} is replaced by setting {ENV_VAR}, not by the bot")
    return dataclasses.replace(loaded, key=staged.key, created=False, from_next_slot=False)


def discard_staged_key(staged: StagedKey) -> None:
    """Remove a staged key that no row needs: a copy of the primary left by a promotion stopped
    halfway, or this process's own key after its rotation rolled back. Failures are logged."""
    try:
        if staged.backend is not None:
            staged.backend.delete_password(KEYRING_SERVICE, staged.username)
        elif staged.path is not None:
            staged.path.unlink(missing_ok=True)
            fsync_directory(staged.path.parent)
    except Exception as exc:
        logger.warning("could not remove the staged master key in %s: %s", staged.location, reason(exc))


@contextlib.contextmanager
def rotation_lock(
    settings: MasterKeySettings, *, default_key_file: Path | None = None, wait: float = 0.0
) -> Iterator[Path]:
    """Hold ``<primary key file>.lock`` (the named key file's, else the config directory's, which
    also stands for the keyring and ``CONNECTIONS_MASTER_KEY``) for the block. Every writer of a
    primary slot holds it: a rotation, a first start from key creation through the canary's commit,
    a start that finishes a promotion. Raises :class:`RotationBusy` if another process still holds
    it after ``wait`` seconds. A block inside one that holds it (the rotation's own start-up guard)
    holds it already."""
    named = None if settings.master_key is not None else settings.master_key_file
    primary = named if named is not None else default_key_file_path(default_key_file)
    path = primary.with_name(primary.name + ".lock")
    if path in _HELD.get():
        yield path
        return
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    except OSError as exc:
        raise MasterKeyError(
            f"cannot open the master-key lock {path}: {exc.strerror}; nothing was changed"
        ) from None
    try:
        _flock(fd, path, wait)
        held = _HELD.set(_HELD.get() | {path})
        try:
            yield path
        finally:
            _HELD.reset(held)
    finally:
        # Closing releases the lock; the file stays, as removing it would let two holders in.
        os.close(fd)


def _flock(fd: int, path: Path, wait: float) -> None:
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                break
            time.sleep(_LOCK_POLL)
    if not wait:
        raise RotationBusy(
            f"another rotate-master-key is running (it holds {path}); nothing was changed: "
            "let it finish, then run this again if needed"
        )
    raise RotationBusy(
        f"another process (a rotate-master-key, or a start binding a database to a new key) has held "
        f"{path} for {wait:.0f}s; nothing was changed: start again once it is done"
    )


def _read_staged_file(path: Path) -> StagedKey | None:
    key = read_key_file(path)
    return None if key is None else StagedKey(key=key, location=str(path), path=path)


def _read_keyring_slot(backend: KeyringBackend, key_id: str) -> StagedKey | None:
    username = staged_username(key_id)
    key = read_entry(backend, username)
    slot = keyring_location([backend], username)
    return None if key is None else StagedKey(key=key, location=slot, backend=backend, username=username)


def _refuse_a_changed_primary(
    where: str, current: MasterKey | None, expected: MasterKey | None, staged: StagedKey
) -> None:
    if current in (expected, staged.key):
        return
    holds = f"master key {current.key_id}" if current is not None else "no key"
    wanted = f"master key {expected.key_id}" if expected is not None else "no key"
    raise MasterKeyError(
        f"{where} holds {holds}, not {wanted} as when this rotation started (another rotation or a "
        f"manual change?); master key {staged.key.key_id} was not promoted and stays in {staged.location}"
    )


def _promote_in_keyring(
    backend: KeyringBackend, staged: StagedKey, expected: MasterKey | None, midway: Callable[[], None]
) -> None:
    location = keyring_location([backend])
    current = read_entry(backend, KEYRING_USERNAME)
    if current != staged.key:
        _refuse_a_changed_primary(f"the {location}", current, expected, staged)
        try:
            kept = store_entry(backend, KEYRING_USERNAME, staged.key)
        except Exception as exc:
            raise MasterKeyError(
                f"cannot write master key {staged.key.key_id} to the {location} ({reason(exc)}); "
                f"it stays in the {staged.location}"
            ) from None
        if not kept:
            raise MasterKeyError(
                f"the {location} did not keep master key {staged.key.key_id}; "
                f"it stays in the {staged.location}"
            )
    midway()
    try:
        backend.delete_password(KEYRING_SERVICE, staged.username)
    except Exception as exc:
        logger.warning("could not delete the %s entry: %s", staged.location, reason(exc))


def _promote_key_file(
    primary: Path, path: Path, staged: StagedKey, expected: MasterKey | None, midway: Callable[[], None]
) -> None:
    vanished = f"the staged master key {path} vanished before it replaced {primary}"
    current = read_key_file(primary)
    if not os.path.lexists(path):
        if current == staged.key:
            return  # another process (a starting bot) finished this promotion first
        raise MasterKeyError(vanished)
    _refuse_a_changed_primary(str(primary), current, expected, staged)
    try:
        # rename() replaces the primary in one step: a crash leaves the old file or the new one.
        os.replace(path, primary)
    except FileNotFoundError:
        # Another process finished this promotion between the check and the rename.
        if read_key_file(primary) != staged.key:
            raise MasterKeyError(vanished) from None
        return
    except OSError as exc:
        raise MasterKeyError(
            f"cannot move {path} over {primary} ({exc.strerror}); the new key stays in {path}"
        ) from None
    midway()
    fsync_directory(primary.parent)
