"""The canary: a known value sealed with the master key, which binds the database to that key; and
the stored rows (the canary, a credential field) as the sealed value and associated data a key opens."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bot.crypto import Cipher, CryptoError, DecryptionError, MasterKey, Sealed, associated_data
from bot.keys.errors import MasterKeyError
from bot.keys.sources import verify_key_opens
from bot.redaction import Secret
from bot.store import CanaryExists, Credential, Database, KeyCanary

__all__ = [
    "CANARY_AAD",
    "CANARY_TEXT",
    "SealedRow",
    "canary_row",
    "canary_sealed_with",
    "credential_row",
    "key_opens_database",
    "sealed_canary",
    "store_canary",
]

logger = logging.getLogger(__name__)

CANARY_AAD = associated_data("connections-bot", "key-canary", 1)
CANARY_TEXT = "connections-bot master-key canary"


@dataclass(frozen=True)
class SealedRow:
    """One stored row's sealed value and the associated data that binds it to the row."""

    sealed: Sealed
    aad: bytes

    def opens_with(self, cipher: Cipher) -> bool:
        """Whether ``cipher`` (one of its keys) opens the row."""
        try:
            cipher.open(self.sealed, self.aad)
        except DecryptionError:
            return False
        return True

    def resealed(self, cipher: Cipher) -> Sealed:
        """The row's value sealed again under ``cipher``'s current key."""
        return cipher.reseal(self.sealed, self.aad)


def sealed_canary(canary: KeyCanary) -> Sealed:
    """The canary row as a :class:`Sealed` value."""
    return Sealed(key_id=canary.key_id, nonce=canary.nonce, ciphertext=canary.ciphertext)


def canary_row(canary: KeyCanary) -> SealedRow:
    return SealedRow(sealed_canary(canary), CANARY_AAD)


def credential_row(row: Credential) -> SealedRow:
    return SealedRow(
        Sealed(key_id=row.key_id, nonce=row.nonce, ciphertext=row.ciphertext),
        associated_data(row.connection_id, row.field, row.version),
    )


async def store_canary(db: Database, cipher: Cipher, location: str) -> None:
    """Bind a database without a canary to ``cipher``'s key (loaded from ``location``)."""
    sealed = cipher.seal(Secret(CANARY_TEXT), CANARY_AAD)
    try:
        async with db.transaction() as tx:
            await tx.key_canary.add(
                KeyCanary(key_id=sealed.key_id, nonce=sealed.nonce, ciphertext=sealed.ciphertext)
            )
    except CanaryExists:
        # Another process initialised the database at the same moment; its key must be ours too.
        theirs = await _read_canary(db)
        if theirs is None:
            raise MasterKeyError("the master-key canary vanished while starting; start again") from None
        verify_key_opens(cipher, sealed_canary(theirs), CANARY_AAD, where=location)
    logger.info("this database is now bound to master key %s", sealed.key_id)


async def key_opens_database(db: Database, cipher: Cipher) -> bool:
    """Whether the master key in use still opens the database's canary (for /healthz)."""
    try:
        canary = await _read_canary(db)
    except Exception:
        return False
    if canary is None:
        return False
    try:
        return cipher.open(sealed_canary(canary), CANARY_AAD).reveal() == CANARY_TEXT
    except CryptoError:
        return False


async def canary_sealed_with(db: Database, key: MasterKey) -> bool:
    """Whether the canary is sealed with ``key``; True when that cannot be read (keep the key)."""
    try:
        canary = await _read_canary(db)
    except Exception:
        return True
    return canary is not None and canary.key_id == key.key_id


async def _read_canary(db: Database) -> KeyCanary | None:
    async with db.read() as tx:
        return await tx.key_canary.get()
