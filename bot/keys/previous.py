"""Whether ``CONNECTIONS_MASTER_KEY_PREVIOUS`` is still needed: a previous key opens rows sealed
before a rotation (it never seals), so it is needed while any row of the database is sealed with
it, and only a backup taken before the rotation needs it after that. The start log and /healthz say
which, so an operator knows when a rotation's last step may be taken."""

from __future__ import annotations

import logging
from typing import Final

from bot.crypto import Cipher
from bot.keys.sources import PREVIOUS_ENV_VAR
from bot.store import Database

__all__ = ["NEEDED", "REMOVABLE", "log_previous_key", "previous_key_state", "rows_sealed_with_previous"]

logger = logging.getLogger(__name__)

NEEDED: Final = "needed"
REMOVABLE: Final = "removable"


async def rows_sealed_with_previous(db: Database, cipher: Cipher) -> int | None:
    """How many rows (the canary and credential fields) only ``cipher``'s previous keys open;
    None if it holds no previous key."""
    previous = cipher.previous_key_ids
    if not previous:
        return None
    async with db.read() as tx:
        canary = await tx.key_canary.get()
        count = sum([await tx.credentials.count_sealed_with(key_id) for key_id in previous])
    return count + (canary is not None and canary.key_id in previous)


async def previous_key_state(db: Database, cipher: Cipher) -> str | None:
    """/healthz's ``previous_master_key``: ``needed``, ``removable``, ``unknown`` (the database did
    not answer), or None without a previous key. Never a failure: a needed key is the plan."""
    try:
        rows = await rows_sealed_with_previous(db, cipher)
    except Exception:
        return "unknown"
    return None if rows is None else NEEDED if rows else REMOVABLE


async def log_previous_key(db: Database, cipher: Cipher) -> None:
    """The start log's line on the previous key, if one is set."""
    rows = await rows_sealed_with_previous(db, cipher)
    if rows is None:
        return
    previous = cipher.previous_key_ids[0]  # the key set as previous, by its id
    if rows:
        logger.warning(
            "%s (master key %s) is still needed: %d sealed rows open only with it; once every instance "
            "runs with master key %s, run `connections-bot rotate-master-key` to move them",
            PREVIOUS_ENV_VAR,
            previous,
            rows,
            cipher.key_id,
        )
    else:
        logger.info(
            "%s (master key %s) opens no row of this database: remove it from every instance (keep the "
            "key itself as long as you keep a backup taken before the rotation)",
            PREVIOUS_ENV_VAR,
            previous,
        )
