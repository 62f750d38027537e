"""Promotion: after a rotation's commit, its staged key becomes the primary key of its slot, but
only over the key the rotation started from (compare-and-set)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from keyring.backend import KeyringBackend

from bot.crypto import MasterKey
from bot.keys.errors import MasterKeyError, reason
from bot.keys.key_files import fsync_directory, read_key_file
from bot.keys.keyrings import KEYRING_SERVICE, KEYRING_USERNAME, keyring_location, read_entry, store_entry
from bot.keys.slots import StagedKey, staged_username
from bot.keys.sources import ENV_VAR, KeySource, LoadedKey

__all__ = ["promote_staged_key"]

logger = logging.getLogger(__name__)


def promote_staged_key(
    loaded: LoadedKey,
    staged: StagedKey,
    *,
    expected: MasterKey | None,
    midway: Callable[[], None] = lambda: None,
) -> LoadedKey:
    """Make ``staged`` the primary key of ``loaded``'s slot and empty the staged slot, but only if the
    primary still holds ``expected`` (None: is empty) or already holds ``staged``.

    Keyring: write ``master-key``, check it, then delete the staged entry; key file: rename the staged
    file over the primary and fsync the directory. ``midway`` runs between the two halves (a
    fault-injection point for tests). A key from ``CONNECTIONS_MASTER_KEY`` cannot be promoted: only
    the operator can change the variable. Raises :class:`MasterKeyError` if the primary holds another
    key or does not take this one; the staged copy is then left where it was.
    """
    backend = loaded.backend
    if loaded.source is KeySource.KEYRING and backend is not None:
        _promote_in_keyring(backend, staged, expected, midway)
        return LoadedKey(
            key=staged.key, source=KeySource.KEYRING, created=False, location=loaded.location, backend=backend
        )
    if loaded.source is KeySource.KEY_FILE and loaded.path is not None and staged.path is not None:
        _promote_key_file(loaded.path, staged, expected, midway)
        return LoadedKey(
            key=staged.key,
            source=KeySource.KEY_FILE,
            created=False,
            location=loaded.location,
            warning=loaded.warning,
            path=loaded.path,
        )
    raise MasterKeyError(f"a master key from {ENV_VAR} is replaced by setting {ENV_VAR}, not by the bot")


def _refuse_a_changed_primary(
    where: str, current: MasterKey | None, expected: MasterKey | None, staged: StagedKey
) -> None:
    if current == expected:
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
        backend.delete_password(KEYRING_SERVICE, staged_username(staged.key.key_id))
    except Exception as exc:
        logger.warning("could not delete the %s entry: %s", staged.location, reason(exc))


def _promote_key_file(
    primary: Path, staged: StagedKey, expected: MasterKey | None, midway: Callable[[], None]
) -> None:
    assert staged.path is not None
    current = read_key_file(primary)
    if not os.path.lexists(staged.path):
        if current == staged.key:
            return  # another process (a starting bot) finished this promotion first
        raise MasterKeyError(f"the staged master key {staged.path} vanished before it replaced {primary}")
    if current != staged.key:
        _refuse_a_changed_primary(str(primary), current, expected, staged)
    try:
        # rename() replaces the primary in one step: a crash leaves the old file or the new one.
        os.replace(staged.path, primary)
    except FileNotFoundError:
        # Another process finished this promotion between the check and the rename.
        if read_key_file(primary) != staged.key:
            raise MasterKeyError(
                f"the staged master key {staged.path} vanished before it replaced {primary}"
            ) from None
        return
    except OSError as exc:
        raise MasterKeyError(
            f"cannot move {staged.path} over {primary} ({exc.strerror}); the new key stays in {staged.path}"
        ) from None
    midway()
    fsync_directory(primary.parent)
