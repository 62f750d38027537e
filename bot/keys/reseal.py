"""The transaction of a master-key rotation: with the canary row locked, prove the key opens every
row, stage the new key, re-seal the canary and every credential under it and record the rotation.

Before the commit the old key opens everything and the staged key seals nothing; after it the
staged key opens everything until it is promoted."""

from __future__ import annotations

import getpass
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bot.crypto import Cipher, MasterKey
from bot.domain import SYSTEM_ACTOR
from bot.keys.canary import canary_row, canary_sealed_with, credential_row
from bot.keys.errors import RotationRefused
from bot.keys.guard import ROTATION_ACTION
from bot.keys.slots import StagedKey, discard_staged_key, stage_next_key
from bot.keys.sources import LoadedKey
from bot.store import AuditEvent, Credential, Database, KeyCanary
from bot.store.uow import UnitOfWork

__all__ = ["ALL_WORKSPACES", "reseal_everything"]

logger = logging.getLogger(__name__)

ALL_WORKSPACES: Final = "*"
"""The ``team_id`` of the rotation's audit event: the master key seals every workspace's rows."""


async def reseal_everything(
    db: Database,
    loaded: LoadedKey,
    cipher: Cipher,
    new_key_file: Path | None,
    default_key_file: Path | None,
    checkpoint: Callable[[str], None],
) -> tuple[StagedKey, int]:
    """Stage a new key and re-seal every row with it in one transaction; the staged count."""
    new = MasterKey.generate()
    staged: StagedKey | None = None
    committing = False
    try:
        async with db.transaction() as tx:
            rows = await _lock_and_prove(tx, cipher)
            staged = stage_next_key(loaded, new, new_key_file=new_key_file, default_key_file=default_key_file)
            checkpoint("staged")
            await _reseal(tx, Cipher(new, previous=[loaded.key]), rows)
            await tx.audit.add(_audit_event(loaded, new, staged, len(rows.credentials)))
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
        len(rows.credentials),
        new.key_id,
        loaded.key.key_id,
    )
    return staged, len(rows.credentials)


@dataclass(frozen=True)
class _Rows:
    canary: KeyCanary
    credentials: list[Credential]


async def _lock_and_prove(tx: UnitOfWork, cipher: Cipher) -> _Rows:
    """Lock the canary, then check that ``cipher`` opens it and every credential field."""
    canary = await tx.key_canary.lock()
    if canary is None or canary.key_id != cipher.key_id:
        # Another rotation committed between loading the key and taking the lock.
        moved_to = canary.key_id if canary is not None else "nothing"
        raise RotationRefused(
            f"the data moved from master key {cipher.key_id} to {moved_to} while this rotation "
            "started (another rotation?); nothing was changed: run it again"
        )
    credentials = await tx.credentials.lock_all()
    unreadable = [row for row in credentials if not credential_row(row).opens_with(cipher)]
    if unreadable:
        names = sorted({row.connection_id for row in unreadable})
        raise RotationRefused(
            f"{len(unreadable)} of {len(credentials)} stored credential fields do not open with master "
            f"key {cipher.key_id} (connections {', '.join(names[:5])}{', …' if len(names) > 5 else ''}); "
            "nothing was changed"
        )
    return _Rows(canary=canary, credentials=credentials)


async def _reseal(tx: UnitOfWork, cipher: Cipher, rows: _Rows) -> None:
    canary = canary_row(rows.canary).resealed(cipher)
    await tx.key_canary.replace(rows.canary, canary.key_id, canary.nonce, canary.ciphertext)
    for row in rows.credentials:
        sealed = credential_row(row).resealed(cipher)
        await tx.credentials.replace_ciphertext(row, sealed.key_id, sealed.nonce, sealed.ciphertext)


def _audit_event(loaded: LoadedKey, new: MasterKey, staged: StagedKey, credentials: int) -> AuditEvent:
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
            "os_user": _os_user(),
        },
    )


def _os_user() -> str | None:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        return None
