"""Bringing rows sealed by an older version of the bot to the current format, at every start.

Two formats changed, and the migrations that introduced them could not upgrade the rows, as
migrations run without the master key. So every start does it, right after the guard proved the
key, in one transaction:

* rows sealed before configurations were bound (:data:`~bot.crypto.LEGACY_SCHEME`) carry associated
  data that names only their row: each one that opens is re-sealed with the bound associated data of
  the configuration its version is used with (:meth:`CredentialRepository.bindings`) and marked
  :data:`~bot.crypto.BOUND_SCHEME`;
* rows sealed under the raw master key (the canary and credentials that carry the key's legacy id,
  see :mod:`bot.crypto`) are re-sealed under the derived sealing key, so after one start no row
  depends on the raw key; a legacy row with no configuration to bind to keeps its associated data.

A row that does not open is left as it is and logged; its re-test reports it.

A database writer cannot undo this: a bound row marked legacy again does not open with the legacy
associated data, and a row given its key's legacy id back is tried with the raw key and does not open
either (GCM authenticates the key and associated data it was sealed with), so it is neither used nor
upgraded again. What the markers cannot tell is a legacy ciphertext copied back from a backup taken
before the upgrade: it opens, and the next start binds it to the settings it then finds. Keep
backups as safe as the database.
"""

from __future__ import annotations

import logging

from bot.crypto import BOUND_SCHEME, Cipher, DecryptionError, Sealed, associated_data
from bot.store import Credential, Database

__all__ = ["upgrade_sealed_rows"]

logger = logging.getLogger(__name__)


async def upgrade_sealed_rows(db: Database, cipher: Cipher, canary_aad: bytes) -> int:
    """Re-seal, in the current format, the key canary (``canary_aad``: its associated data) and every
    credential row of an older format that opens; how many credential rows."""
    async with db.transaction() as tx:
        rows = await tx.credentials.lock_all(outdated_for=cipher.key_id)
        canary = await tx.key_canary.get()
        if not rows and (canary is None or canary.key_id == cipher.key_id):
            return 0  # most starts: nothing to write, so no lock that a serving replica would wait on
        # Locked only now, as a rotation locks it: a rotation that committed since the guard ran
        # moved the data to a key this cipher does not hold, and then nothing here is ours to touch.
        canary = await tx.key_canary.lock()
        # Nor is data still sealed with a previous key (instances switched before the rotation):
        # moving it is the rotation's job, and instances not yet switched must still open it.
        if canary is not None and (
            canary.key_id not in cipher.key_ids or canary.key_id in cipher.previous_key_ids
        ):
            return 0
        if canary is not None and canary.key_id != cipher.key_id:
            moved = cipher.reseal(Sealed(canary.key_id, canary.nonce, canary.ciphertext), canary_aad)
            await tx.key_canary.replace(canary, moved.key_id, moved.nonce, moved.ciphertext)
        bindings = await tx.credentials.bindings(rows)
        resealed = 0
        for row in rows:
            digest = bindings.get((row.connection_id, row.version))
            fresh = _upgraded(cipher, row, digest)
            if fresh is not None:
                scheme = BOUND_SCHEME if digest is not None else None
                await tx.credentials.replace_ciphertext(
                    row, fresh.key_id, fresh.nonce, fresh.ciphertext, scheme=scheme
                )
                resealed += 1
    if resealed:
        logger.info(
            "re-sealed %d credential field(s) stored by an older version in the current format", resealed
        )
    return resealed


def _upgraded(cipher: Cipher, row: Credential, digest: str | None) -> Sealed | None:
    """``row`` re-sealed under the current key, bound to ``digest`` if there is one; None if it does
    not open or is already in the current format."""
    try:
        secret = cipher.open(Sealed(row.key_id, row.nonce, row.ciphertext), row.aad(digest or ""))
    except DecryptionError:
        logger.warning(
            "credential field %r of connection %s (version %d) does not open; it was left as it is and "
            "will not be used",
            row.field,
            row.connection_id,
            row.version,
        )
        return None
    if digest is None and row.scheme != BOUND_SCHEME:
        logger.warning(
            "credential field %r of connection %s (version %d) belongs to no version in use; it was "
            "left unbound and will not be used",
            row.field,
            row.connection_id,
            row.version,
        )
        if row.key_id == cipher.key_id:
            return None
    # Without a digest, the legacy associated data the row was sealed with.
    return cipher.seal(secret, associated_data(row.connection_id, row.field, row.version, digest))
