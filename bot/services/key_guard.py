"""Binding the database to one master key.

On first use the bot seals a known value (the canary) with its master key and stores it. Every
start then proves, before serving a request, that the configured key opens that canary and the
newest stored credential; ``/healthz`` repeats the canary check. A second host that made a key of
its own, a mistyped ``CONNECTIONS_MASTER_KEY`` or a restored database with another key's data are
all refused with a message that says so, instead of sealing new rows under a key nobody else has.
"""

from __future__ import annotations

import logging

from bot.crypto import Cipher, CryptoError, Sealed, associated_data
from bot.master_key import LoadedKey, MasterKeyError, load_master_key, verify_key_opens
from bot.redaction import Secret
from bot.settings import Settings
from bot.store import CanaryExists, Database, KeyCanary
from bot.store.repositories import CredentialRepository, KeyCanaryRepository

__all__ = ["guard_master_key", "key_opens_database"]

logger = logging.getLogger(__name__)

_CANARY_AAD = associated_data("connections-bot", "key-canary", 1)
_CANARY_TEXT = "connections-bot master-key canary"


async def guard_master_key(db: Database, settings: Settings) -> tuple[LoadedKey, Cipher]:
    """Load the master key and prove it opens the database's data; raises :class:`MasterKeyError`.

    A key is only ever created while the database holds neither a canary nor a credential."""
    async with db.read() as session:
        canary = await KeyCanaryRepository(session).get()
        latest = await CredentialRepository(session).latest()
    loaded = load_master_key(settings, has_ciphertext=canary is not None or latest is not None)
    cipher = Cipher(loaded.key)
    if canary is not None:
        verify_key_opens(cipher, _sealed(canary), _CANARY_AAD, where=loaded.location)
    if latest is not None:
        verify_key_opens(
            cipher,
            Sealed(key_id=latest.key_id, nonce=latest.nonce, ciphertext=latest.ciphertext),
            associated_data(latest.connection_id, latest.field, latest.version),
            where=loaded.location,
        )
    if canary is None:
        await _store_canary(db, cipher, loaded)
    return loaded, cipher


async def _store_canary(db: Database, cipher: Cipher, loaded: LoadedKey) -> None:
    sealed = cipher.seal(Secret(_CANARY_TEXT), _CANARY_AAD)
    try:
        async with db.transaction() as tx:
            await tx.key_canary.add(
                KeyCanary(key_id=sealed.key_id, nonce=sealed.nonce, ciphertext=sealed.ciphertext)
            )
    except CanaryExists:
        # Another process initialised the database at the same moment; its key must be ours too.
        async with db.read() as session:
            theirs = await KeyCanaryRepository(session).get()
        if theirs is None:
            raise MasterKeyError("the master-key canary vanished while starting; start again") from None
        verify_key_opens(cipher, _sealed(theirs), _CANARY_AAD, where=loaded.location)
    logger.info("this database is now bound to master key %s", sealed.key_id)


async def key_opens_database(db: Database, cipher: Cipher) -> bool:
    """Whether the master key in use still opens the database's canary (for /healthz)."""
    try:
        async with db.read() as session:
            canary = await KeyCanaryRepository(session).get()
    except Exception:
        return False
    if canary is None:
        return False
    try:
        return cipher.open(_sealed(canary), _CANARY_AAD).reveal() == _CANARY_TEXT
    except CryptoError:
        return False


def _sealed(canary: KeyCanary) -> Sealed:
    return Sealed(key_id=canary.key_id, nonce=canary.nonce, ciphertext=canary.ciphertext)
