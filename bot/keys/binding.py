"""Binding the credentials sealed before configurations were bound to their connections' settings.

Rows sealed by an older version of the bot (:data:`~bot.crypto.LEGACY_SCHEME`) carry associated data
that names only their row. The migration that introduced the scheme cannot bind them: migrations run
without the master key. So every start does it, right after the guard proved the key, in one
transaction: each legacy row that opens is re-sealed with the bound associated data of the
configuration its version is used with (:meth:`CredentialRepository.bindings`) and marked
:data:`~bot.crypto.BOUND_SCHEME`. A row that does not open is left as it is and logged; its re-test
reports it.

A database writer cannot undo this: a bound row marked legacy again does not open with the legacy
associated data (GCM authenticates the associated data it was sealed with), so it is neither used nor
bound again. What the scheme cannot tell is a legacy ciphertext copied back from a backup taken
before the upgrade: it opens, and the next start binds it to the settings it then finds. Keep
backups as safe as the database.
"""

from __future__ import annotations

import logging

from bot.crypto import BOUND_SCHEME, Cipher, DecryptionError, Sealed, associated_data
from bot.store import Database

__all__ = ["bind_legacy_credentials"]

logger = logging.getLogger(__name__)


async def bind_legacy_credentials(db: Database, cipher: Cipher) -> int:
    """Re-seal every legacy credential row that opens, bound to its configuration; how many."""
    async with db.transaction() as tx:
        rows = await tx.credentials.lock_all(legacy_only=True)
        bindings = await tx.credentials.bindings(rows)
        resealed = []
        for row in rows:
            digest = bindings.get((row.connection_id, row.version))
            try:
                secret = cipher.open(Sealed(row.key_id, row.nonce, row.ciphertext), row.aad(""))
            except DecryptionError:
                digest = None
            if digest is None:
                logger.warning(
                    "credential field %r of connection %s (version %d) does not open or belongs to no "
                    "version in use; it was left unbound and will not be used",
                    row.field,
                    row.connection_id,
                    row.version,
                )
                continue
            resealed.append(
                (row, cipher.seal(secret, associated_data(row.connection_id, row.field, row.version, digest)))
            )
        if not resealed:
            return 0
        # Only now: a start racing a master-key rotation has nothing to write in most cases.
        await tx.key_canary.require_sealing_key(cipher.key_id)
        for row, fresh in resealed:
            await tx.credentials.replace_ciphertext(
                row, fresh.key_id, fresh.nonce, fresh.ciphertext, scheme=BOUND_SCHEME
            )
    logger.info(
        "bound %d credential field(s) sealed before this version to their connections' settings",
        len(resealed),
    )
    return len(resealed)
