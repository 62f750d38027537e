"""``connections-bot rotate-master-key``: every sealed row re-encrypted under a new master key, in
an order that leaves every row readable with a key that still exists, wherever the process dies.
The whole run holds :func:`~bot.keys.slots.rotation_lock`, so two rotations of keys kept in the same
place never overlap, on one database or on two.

1. Load the key as ``serve`` does (the guard also finishes a rotation stopped after its commit), with
   ``CONNECTIONS_MASTER_KEY_PREVIOUS`` if set: it opens rows, never seals them.
2. The new key. The bot keeps a keyring or key-file key itself, so it makes the new one and stages
   it durably in a new slot named after its id before any row changes; a key in such a slot that
   other databases on this machine may read too is replaced only once ``confirm`` agrees (the
   command asks, or ``--yes``). A ``CONNECTIONS_MASTER_KEY`` lives in the operator's secret manager,
   which the bot cannot write: its new key must already be kept there, so it is taken from the
   operator (:class:`GivenKey`: a variable or a file they provide), or it is the
   ``CONNECTIONS_MASTER_KEY`` the instances were switched to, with the old key as previous. A new key
   that exists only on the machine running the command would be lost with it (a one-off container),
   and with it every credential: the bot never makes one for ``CONNECTIONS_MASTER_KEY``.
3. One transaction, with the canary row locked (PostgreSQL ``SELECT … FOR UPDATE``; SQLite's write
   transaction shuts other writers out anyway): prove the keys open the canary and every
   credential, re-seal the canary and every credential version with its own associated data (so
   each stays bound to its connection's configuration), record an audit event, commit. A rollback
   that this process sees removes a staged key again.
4. Promote a staged key to the primary slot, only if the canary is sealed with it and the primary
   still holds the old key. A ``CONNECTIONS_MASTER_KEY`` is swapped by the operator.

Before the commit the old key opens everything; after it the new key does.
"""

from __future__ import annotations

import getpass
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from keyring.backend import KeyringBackend

from bot.crypto import Cipher, InvalidMasterKey, MasterKey, Sealed
from bot.domain import SYSTEM_ACTOR
from bot.keys import MalformedMasterKey, MasterKeyError, NothingToRotate, PromotionFailed, RotationRefused
from bot.keys.guard import ROTATION_ACTION, SealedRow, canary_sealed_with, guard_master_key, sealed_row
from bot.keys.slots import StagedKey, discard_staged_key, promote_staged_key, rotation_lock, stage_next_key
from bot.keys.sources import (
    ENV_VAR,
    FILE_ENV_VAR,
    PREVIOUS_ENV_VAR,
    KeySource,
    LoadedKey,
    MasterKeySettings,
    read_key_file,
)
from bot.redaction import Secret
from bot.store import AuditEvent, Credential, Database, KeyCanary
from bot.store.uow import UnitOfWork

__all__ = [
    "ALL_WORKSPACES",
    "FAILPOINTS",
    "GivenKey",
    "RotationOutcome",
    "crash_at",
    "key_from_file",
    "key_from_variable",
    "rotate_master_key",
]

logger = logging.getLogger(__name__)

FAILPOINTS: Final = ("staged", "resealed", "committed", "promoting")
"""The steps :func:`crash_at` can stop at: the new key ready (staged, before any row changed); every
row re-sealed (before the commit); committed (before the promotion); halfway through the promotion
(keyring: primary written, staged entry not deleted; key file: renamed, directory not fsynced)."""
_KILLED: Final = 137  # the exit status a shell reports for SIGKILL
ALL_WORKSPACES: Final = "*"  # the audit event's team_id: the master key seals every workspace's rows


@dataclass(frozen=True)
class GivenKey:
    """A new master key the operator already keeps (in their secret manager): ``where`` names the
    variable or the file it was read from."""

    key: MasterKey
    where: str


@dataclass(frozen=True)
class RotationOutcome:
    """What a rotation did. ``key_location``: where the new key is now. ``kept_in``: for
    ``CONNECTIONS_MASTER_KEY``, where the operator keeps the new key (``CONNECTIONS_MASTER_KEY``
    itself once the instances were switched to it). ``swap_file``: the staged file of a rotation
    made by an earlier version, which wrote an env key's new key to a file. ``already_committed``:
    every row was sealed with the new key already; nothing was re-encrypted."""

    old_key_id: str
    new_key_id: str
    credentials: int
    key_location: str
    kept_in: str | None = None
    swap_file: Path | None = None
    already_committed: bool = False


def key_from_variable(name: str, value: Secret | None) -> GivenKey:
    """The new key in the variable ``name`` (``--new-key-from-env``); raises :class:`MasterKeyError`."""
    if value is None:
        raise RotationRefused(
            f"{name} is not set: set it to the new master key, as kept in your secret manager "
            "(`connections-bot generate-master-key` makes one); nothing was changed"
        )
    try:
        return GivenKey(MasterKey.from_base64(value), name)
    except InvalidMasterKey as exc:
        raise MalformedMasterKey(f"{name} is malformed: {exc}; nothing was changed") from None


def key_from_file(path: Path) -> GivenKey:
    """The new key in the operator's file ``path`` (``--new-key-file``); raises :class:`MasterKeyError`."""
    key = read_key_file(path)
    if key is None:
        raise RotationRefused(
            f"no such file {path}: --new-key-file names a file holding the new master key, kept "
            "where it outlives this machine (`connections-bot generate-master-key` makes one); "
            "nothing was changed"
        )
    return GivenKey(key, str(path))


def crash_at(failpoint: str | None, steps: Sequence[str] = FAILPOINTS) -> Callable[[str], None]:
    """Fault injection for the kill-safety tests (``CONNECTIONS_FAILPOINT``): a checkpoint that ends
    the process at the named step with ``os._exit``, as a SIGKILL would (no rollback, no cleanup).
    ``step:N`` stops the N-th time the step is reached (a command that repeats it, such as
    ``migrate-secrets`` for each connection); ``steps`` are the ones the command has. Unset, as it
    is outside the tests, the checkpoint does nothing."""
    step_name, counted, nth = (failpoint or "").partition(":")
    if failpoint is not None and (step_name not in steps or (counted and not (nth.isdigit() and int(nth)))):
        raise RotationRefused(f"CONNECTIONS_FAILPOINT must be one of {', '.join(steps)}, or one with :N")
    stop_at = int(nth or 1)
    reached = 0

    def checkpoint(step: str) -> None:
        nonlocal reached
        if failpoint is not None and step == step_name:
            reached += 1
            if reached == stop_at:
                os._exit(_KILLED)

    return checkpoint


async def rotate_master_key(
    db: Database,
    settings: MasterKeySettings,
    *,
    given: GivenKey | None = None,
    confirm: Callable[[str], bool] = lambda warning: False,
    checkpoint: Callable[[str], None] = lambda step: None,
    keyring_backend: KeyringBackend | None = None,
    default_key_file: Path | None = None,
) -> RotationOutcome:
    """Re-encrypt every sealed row under a new master key and make it the key in use.

    ``given``: the new key of a ``CONNECTIONS_MASTER_KEY``, which the operator keeps. ``confirm``
    gets the warning before a shared slot's key is replaced; by default it refuses. Raises
    :class:`RotationRefused` (nothing changed), :class:`PromotionFailed` (committed; the new key
    waits in its staged slot) or another :class:`MasterKeyError` from loading or locking the key."""
    async with db.read() as tx:
        empty = await tx.key_canary.get() is None and not await tx.credentials.any_exists()
    if empty:
        # Loading would make a first key, which is serve's job, not a rotation's.
        raise NothingToRotate(
            "nothing to rotate: the database holds no sealed data yet (the first `serve` binds it to a key)"
        )
    with rotation_lock(settings, default_key_file=default_key_file):
        loaded, opening = await guard_master_key(
            db, settings, keyring_backend=keyring_backend, default_key_file=default_key_file
        )
        if loaded.from_next_slot:
            return _awaiting_swap(loaded, settings)
        if loaded.source is KeySource.ENV:
            target = given or _switched_to(loaded, opening)
            return await _rotate_env_key(db, loaded, opening, target, checkpoint)
        if given is not None:
            raise RotationRefused(
                f"--new-key-from-env and --new-key-file are for a key from {ENV_VAR}; this key comes "
                f"from {loaded.location}, and its new key is made and staged beside it"
            )
        # The keyring entry and the default key file are the same for every database this OS user
        # runs (dev and prod SQLite on one machine): after the promotion the old key is gone from them.
        shared = settings.master_key_file is None
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
        new = MasterKey.generate()
        staged, moved = await _reseal_everything(
            db, loaded, opening, new, checkpoint, stage=lambda: stage_next_key(loaded, new)
        )
        assert staged is not None  # a generated key is never the canary's already
        return await _promote(db, loaded, staged, moved.credentials, checkpoint)


def _switched_to(loaded: LoadedKey, opening: Cipher) -> GivenKey:
    """With no new key given, an env key's rotation moves the rows sealed with the previous key to
    ``CONNECTIONS_MASTER_KEY``, which the operator already keeps; without a previous key there is
    nothing safe to rotate to."""
    if opening.previous_key_ids:
        return GivenKey(loaded.key, ENV_VAR)
    raise RotationRefused(
        f"the master key comes from {ENV_VAR}, which only you can change, so the new key must be kept "
        "in your secret manager before any row is sealed with it (a key made here would be lost with "
        "this machine, and every credential with it); nothing was changed. Run `connections-bot "
        "generate-master-key` and store its output, then either run this command with "
        f"--new-key-from-env NAME (a variable holding the new key) or --new-key-file PATH, or set "
        f"{ENV_VAR} to the new key and {PREVIOUS_ENV_VAR} to the old one on every instance and run "
        "this command with them"
    )


async def _rotate_env_key(
    db: Database, loaded: LoadedKey, opening: Cipher, target: GivenKey, checkpoint: Callable[[str], None]
) -> RotationOutcome:
    _, moved = await _reseal_everything(db, loaded, opening, target.key, checkpoint, kept_in=target.where)
    return RotationOutcome(
        old_key_id=moved.from_key_id,
        new_key_id=target.key.key_id,
        credentials=moved.credentials,
        key_location=target.where,
        kept_in=target.where,
        already_committed=moved.from_key_id == target.key.key_id,
    )


@dataclass(frozen=True)
class _Moved:
    from_key_id: str  # what the canary was sealed with: the new key's own id if nothing moved
    credentials: int


async def _reseal_everything(
    db: Database,
    loaded: LoadedKey,
    opening: Cipher,
    new: MasterKey,
    checkpoint: Callable[[str], None],
    *,
    stage: Callable[[], StagedKey] | None = None,
    kept_in: str | None = None,
) -> tuple[StagedKey | None, _Moved]:
    """Step 3: every row opened with ``opening`` and sealed with ``new``, which ``stage`` (a key the
    bot keeps) stores durably first, or which the operator keeps in ``kept_in``."""
    sealing = Cipher(new)
    staged: StagedKey | None = None
    committing = False
    try:
        async with db.transaction() as tx:
            canary, credentials = await _lock_and_prove(tx, opening)
            if canary.key_id == new.key_id:
                # An earlier run committed (the canary moves with every row): nothing left to move.
                return None, _Moved(new.key_id, 0)
            staged = stage() if stage is not None else None
            checkpoint("staged")

            def moved(found: SealedRow) -> Sealed:
                # With the row's own associated data: its binding to its configuration carries over.
                return sealing.seal(opening.open(*found), found.aad)

            fresh = moved(sealed_row(canary))
            old_key_id = canary.key_id
            await tx.key_canary.replace(canary, fresh.key_id, fresh.nonce, fresh.ciphertext)
            for row, found in credentials:
                fresh = moved(found)
                await tx.credentials.replace_ciphertext(row, fresh.key_id, fresh.nonce, fresh.ciphertext)
            where = staged.location if staged is not None else kept_in or ENV_VAR
            await tx.audit.add(_audit_event(loaded, old_key_id, new, where, len(credentials)))
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
        old_key_id,
    )
    return staged, _Moved(old_key_id, len(credentials))


async def _lock_and_prove(
    tx: UnitOfWork, opening: Cipher
) -> tuple[KeyCanary, list[tuple[Credential, SealedRow]]]:
    canary = await tx.key_canary.lock()
    if canary is None or canary.key_id not in opening.key_ids:
        # Another rotation committed between loading the key and taking the lock.
        raise RotationRefused(
            f"the data moved from master key {opening.key_id} to {canary.key_id if canary else 'nothing'} "
            "while this rotation started (another rotation?); nothing was changed: run it again"
        )
    rows = await tx.credentials.lock_all()
    bindings = await tx.credentials.bindings(rows)
    credentials = [(row, sealed_row(row, bindings)) for row in rows]
    unreadable = [row for row, found in credentials if not found.opens_with(opening)]
    if unreadable:
        names = sorted({row.connection_id for row in unreadable})
        raise RotationRefused(
            f"{len(unreadable)} of {len(credentials)} stored credential fields do not open with master "
            f"key {' or '.join(opening.key_ids)} (connections {', '.join(names[:5])}"
            f"{', …' if len(names) > 5 else ''}): damaged, or their connections' settings were changed "
            "outside the bot; nothing was changed"
        )
    return canary, credentials


def _audit_event(
    loaded: LoadedKey, old_key_id: str, new: MasterKey, where: str, credentials: int
) -> AuditEvent:
    try:
        os_user: str | None = getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        os_user = None
    return AuditEvent(
        team_id=ALL_WORKSPACES,
        actor=SYSTEM_ACTOR,
        action=ROTATION_ACTION,
        details={
            "from_key_id": old_key_id,
            "to_key_id": new.key_id,
            "credentials": credentials,
            "key_source": loaded.source.value,
            # Where the new key is kept (staged until promoted, or the operator's variable or
            # file): the start-up guard names it if the old key is still configured somewhere.
            "staged_in": where,
            "os_user": os_user,
        },
    )


async def _promote(
    db: Database, loaded: LoadedKey, staged: StagedKey, credentials: int, checkpoint: Callable[[str], None]
) -> RotationOutcome:
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
