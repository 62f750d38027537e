"""``connections-bot rotate-master-key``: every sealed row re-encrypted under a new master key, in
an order that leaves every row readable with a key that still exists, wherever the process dies.
The whole run holds :func:`~bot.keys.slots.rotation_lock`, so two rotations of keys kept in the same
place never overlap, on one database or on two.

1. Load the key as ``serve`` does (the guard also finishes a rotation stopped after its commit).
2. A key in a slot other databases on this machine may read too (the keyring entry, the default key
   file) is about to be replaced: ``confirm`` must agree first (the command asks, or ``--yes``).
3. One transaction, with the canary row locked (PostgreSQL ``SELECT … FOR UPDATE``; SQLite's write
   transaction shuts other writers out anyway): prove the key opens the canary and every
   credential, stage the new key durably in a new slot named after its id, re-seal the canary and
   every credential version with its own associated data (so each stays bound to its connection's
   configuration), record an audit event, commit. A rollback
   that this process sees removes the staged key again.
4. Promote the staged key to the primary slot, only if the canary is sealed with it and the primary
   still holds the old key. A ``CONNECTIONS_MASTER_KEY`` is swapped by the operator; until then a
   start on this machine uses the staged file.

Before the commit the old key opens everything; after it the staged key does until it is promoted.
"""

from __future__ import annotations

import getpass
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from keyring.backend import KeyringBackend

from bot.crypto import Cipher, MasterKey
from bot.domain import SYSTEM_ACTOR
from bot.keys import MasterKeyError, NothingToRotate, PromotionFailed, RotationRefused
from bot.keys.guard import ROTATION_ACTION, SealedRow, canary_sealed_with, guard_master_key, sealed_row
from bot.keys.slots import StagedKey, discard_staged_key, promote_staged_key, rotation_lock, stage_next_key
from bot.keys.sources import ENV_VAR, FILE_ENV_VAR, KeySource, LoadedKey, MasterKeySettings
from bot.store import AuditEvent, Credential, Database, KeyCanary
from bot.store.uow import UnitOfWork

__all__ = ["ALL_WORKSPACES", "FAILPOINTS", "RotationOutcome", "crash_at", "rotate_master_key"]

logger = logging.getLogger(__name__)

FAILPOINTS: Final = ("staged", "resealed", "committed", "promoting")
"""The steps :func:`crash_at` can stop at: the new key staged (before any row changed); every row
re-sealed (before the commit); committed (before the promotion); halfway through the promotion
(keyring: primary written, staged entry not deleted; key file: renamed, directory not fsynced)."""
_KILLED: Final = 137  # the exit status a shell reports for SIGKILL
ALL_WORKSPACES: Final = "*"  # the audit event's team_id: the master key seals every workspace's rows


@dataclass(frozen=True)
class RotationOutcome:
    """What a rotation did. ``key_location``: where the new key is now (for ``CONNECTIONS_MASTER_KEY``
    the staged file ``swap_file`` the operator copies it from). ``already_committed``: an earlier
    rotation of an env key had committed and only the operator's swap is missing."""

    old_key_id: str
    new_key_id: str
    credentials: int
    key_location: str
    swap_file: Path | None = None
    already_committed: bool = False


def crash_at(failpoint: str | None) -> Callable[[str], None]:
    """Fault injection for the kill-safety tests (``CONNECTIONS_FAILPOINT``): a checkpoint that ends
    the process at the named step with ``os._exit``, as a SIGKILL would (no rollback, no cleanup).
    Unset, as it is outside the tests, the checkpoint does nothing."""
    if failpoint is not None and failpoint not in FAILPOINTS:
        raise RotationRefused(f"CONNECTIONS_FAILPOINT must be one of {', '.join(FAILPOINTS)}")

    def checkpoint(step: str) -> None:
        if step == failpoint:
            os._exit(_KILLED)

    return checkpoint


async def rotate_master_key(
    db: Database,
    settings: MasterKeySettings,
    *,
    new_key_file: Path | None = None,
    confirm: Callable[[str], bool] = lambda warning: False,
    checkpoint: Callable[[str], None] = lambda step: None,
    keyring_backend: KeyringBackend | None = None,
    default_key_file: Path | None = None,
) -> RotationOutcome:
    """Re-encrypt every sealed row under a new master key and make it the key in use.

    ``new_key_file``: where a ``CONNECTIONS_MASTER_KEY`` rotation writes the new key (default: its
    staged slot in the config directory). ``confirm`` gets the warning before a shared slot's key is
    replaced; by default it refuses. Raises :class:`RotationRefused` (nothing changed),
    :class:`PromotionFailed` (committed; the new key waits in its staged slot) or another
    :class:`MasterKeyError` from loading or locking the key."""
    async with db.read() as tx:
        empty = await tx.key_canary.get() is None and not await tx.credentials.any_exists()
    if empty:
        # Loading would make a first key, which is serve's job, not a rotation's.
        raise NothingToRotate(
            "nothing to rotate: the database holds no sealed data yet (the first `serve` binds it to a key)"
        )
    with rotation_lock(settings, new_key_file=new_key_file, default_key_file=default_key_file):
        loaded, _ = await guard_master_key(
            db, settings, keyring_backend=keyring_backend, default_key_file=default_key_file
        )
        if loaded.from_next_slot:
            return _awaiting_swap(loaded, settings)
        if new_key_file is not None and loaded.source is not KeySource.ENV:
            raise RotationRefused(
                f"--new-key-file is for a key from {ENV_VAR}; this key comes from {loaded.location}, "
                "and its new key is staged beside it"
            )
        # The keyring entry and the default key file are the same for every database this OS user
        # runs (dev and prod SQLite on one machine): after the promotion the old key is gone from them.
        shared = loaded.source is not KeySource.ENV and settings.master_key_file is None
        if shared and not confirm(
            f"this rotation replaces master key {loaded.key.key_id} in {loaded.location}, which every "
            "database run by this OS user without a key of its own reads; once it is replaced, the old "
            "key is gone and any other database sealed with it can no longer be opened. Before going on, "
            f"give every other database that uses this key {ENV_VAR} or {FILE_ENV_VAR} of its own "
            "(holding the current key), or rotate it right after this one through that setting"
        ):
            raise RotationRefused(
                f"not confirmed: nothing was changed; master key {loaded.key.key_id} stays in "
                f"{loaded.location}"
            )
        staged, credentials = await _reseal_everything(db, loaded, new_key_file, default_key_file, checkpoint)
        return await _promote(db, loaded, staged, credentials, checkpoint)


async def _reseal_everything(
    db: Database,
    loaded: LoadedKey,
    new_key_file: Path | None,
    default_key_file: Path | None,
    checkpoint: Callable[[str], None],
) -> tuple[StagedKey, int]:
    """Step 3: the staged key, and how many credential fields were re-sealed with it."""
    new = MasterKey.generate()
    staged: StagedKey | None = None
    committing = False
    try:
        async with db.transaction() as tx:
            canary, credentials = await _lock_and_prove(tx, Cipher(loaded.key))
            staged = stage_next_key(loaded, new, new_key_file=new_key_file, default_key_file=default_key_file)
            checkpoint("staged")
            resealing = Cipher(new, previous=[loaded.key])
            fresh = resealing.reseal(*sealed_row(canary))
            await tx.key_canary.replace(canary, fresh.key_id, fresh.nonce, fresh.ciphertext)
            for row, found in credentials:
                # With the row's own associated data: its binding to its configuration carries over.
                fresh = resealing.reseal(*found)
                await tx.credentials.replace_ciphertext(row, fresh.key_id, fresh.nonce, fresh.ciphertext)
            await tx.audit.add(_audit_event(loaded, new, staged, len(credentials)))
            checkpoint("resealed")
            committing = True
    except Exception:
        # A failure inside the transaction rolled it back: no row is sealed with the new key, and it
        # is this run's own, so nobody else can need it. A failed COMMIT may still have landed (a
        # connection lost mid-commit), so then the staged key stays for the next start to settle.
        if staged is not None and not committing and not await canary_sealed_with(db, new):
            discard_staged_key(staged)
        elif staged is not None and committing:
            logger.warning(
                "the commit of the re-encryption failed; keeping the staged master key %s in %s until "
                "a start or another run shows which key the data is sealed with",
                new.key_id,
                staged.location,
            )
        raise
    checkpoint("committed")
    logger.info(
        "re-encrypted the key canary and %d credential fields under master key %s (was %s)",
        len(credentials),
        new.key_id,
        loaded.key.key_id,
    )
    return staged, len(credentials)


async def _lock_and_prove(
    tx: UnitOfWork, cipher: Cipher
) -> tuple[KeyCanary, list[tuple[Credential, SealedRow]]]:
    canary = await tx.key_canary.lock()
    if canary is None or canary.key_id not in cipher.key_ids:
        # Another rotation committed between loading the key and taking the lock.
        raise RotationRefused(
            f"the data moved from master key {cipher.key_id} to {canary.key_id if canary else 'nothing'} "
            "while this rotation started (another rotation?); nothing was changed: run it again"
        )
    rows = await tx.credentials.lock_all()
    bindings = await tx.credentials.bindings(rows)
    credentials = [(row, sealed_row(row, bindings)) for row in rows]
    unreadable = [row for row, found in credentials if not found.opens_with(cipher)]
    if unreadable:
        names = sorted({row.connection_id for row in unreadable})
        raise RotationRefused(
            f"{len(unreadable)} of {len(credentials)} stored credential fields do not open with master "
            f"key {cipher.key_id} (connections {', '.join(names[:5])}{', …' if len(names) > 5 else ''}): "
            "damaged, or their connections' settings were changed outside the bot; nothing was changed"
        )
    return canary, credentials


def _audit_event(loaded: LoadedKey, new: MasterKey, staged: StagedKey, credentials: int) -> AuditEvent:
    try:
        os_user: str | None = getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        os_user = None
    return AuditEvent(
        team_id=ALL_WORKSPACES,
        actor=SYSTEM_ACTOR,
        action=ROTATION_ACTION,
        details={
            "from_key_id": loaded.key.key_id,
            "to_key_id": new.key_id,
            "credentials": credentials,
            "key_source": loaded.source.value,
            # Where the new key waits until promoted: the start-up guard names it if the old key
            # is still configured somewhere.
            "staged_in": staged.location,
            "os_user": os_user,
        },
    )


async def _promote(
    db: Database, loaded: LoadedKey, staged: StagedKey, credentials: int, checkpoint: Callable[[str], None]
) -> RotationOutcome:
    location = staged.location
    if loaded.source is not KeySource.ENV:
        try:
            if not await canary_sealed_with(db, staged.key):
                raise MasterKeyError("the key canary is no longer sealed with it (another rotation?)")
            location = promote_staged_key(
                loaded, staged, expected=loaded.key, midway=lambda: checkpoint("promoting")
            ).location
        except MasterKeyError as exc:
            raise PromotionFailed(
                f"every row was sealed with master key {staged.key.key_id}, which stays in "
                f"{staged.location}, but it was not promoted: {exc}; the next start of the bot (or of "
                "this command) moves it into place if it still opens the data"
            ) from None
        logger.info("master key %s replaced %s in %s", staged.key.key_id, loaded.key.key_id, location)
    return RotationOutcome(
        old_key_id=loaded.key.key_id,
        new_key_id=staged.key.key_id,
        credentials=credentials,
        key_location=location,
        swap_file=staged.path if loaded.source is KeySource.ENV else None,
    )


def _awaiting_swap(loaded: LoadedKey, settings: MasterKeySettings) -> RotationOutcome:
    """The key in use came from a committed rotation's staged slot: finish that one first."""
    if loaded.source is not KeySource.ENV or loaded.path is None:
        raise RotationRefused(
            f"the previous rotation's master key {loaded.key.key_id} is still in {loaded.location}, "
            "not yet in the primary slot (see the warning above); fix that first"
        )
    # The guard parsed the variable already: it is well-formed here.
    old = settings.master_key
    return RotationOutcome(
        old_key_id=MasterKey.from_base64(old).key_id if old is not None else "unknown",
        new_key_id=loaded.key.key_id,
        credentials=0,
        key_location=str(loaded.path),
        swap_file=loaded.path,
        already_committed=True,
    )
