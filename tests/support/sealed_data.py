"""Sealed rows for the master-key tests: a canary and credentials stored as the bot stores them
(or as it stored them before the master key's uses were derived with HKDF), and a reading of which
of them a given key opens."""

from __future__ import annotations

import base64
import hmac
import os
from dataclasses import dataclass, field
from hashlib import sha256

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select

from bot.crypto import Cipher, CryptoError, MasterKey, Sealed, associated_data
from bot.keys.guard import CANARY_AAD, CANARY_TEXT, sealed_canary, sealed_row
from bot.redaction import Secret
from bot.store import Credential, Database, KeyCanary
from tests.fakes.confluent_api import new_api_key, new_api_secret
from tests.support.seeding import Seed, seed_connections

__all__ = [
    "LegacyCipher",
    "Opened",
    "SealedData",
    "legacy_key_id",
    "open_everything",
    "raw_key",
    "seed_sealed_data",
]

RowId = tuple[str, str, int]
"""(connection id, field, version): what a ciphertext's associated data binds it to."""


@dataclass(frozen=True)
class SealedData:
    """What was stored: each credential field's plain text by row."""

    plaintexts: dict[RowId, str] = field(repr=False)

    def secrets(self) -> list[str]:
        return sorted(set(self.plaintexts.values()))


@dataclass(frozen=True)
class Opened:
    """What some keys open: whether the canary opens, each field that opens, and the key ids stored."""

    canary: bool
    values: dict[RowId, str] = field(repr=False)
    key_ids: set[str]
    ciphertexts: list[bytes] = field(repr=False)


def raw_key(key: MasterKey) -> bytes:
    return base64.b64decode(key.to_base64().reveal())


def legacy_key_id(key: MasterKey) -> str:
    """The key id as the bot derived it before HKDF, written out here rather than taken from the
    bot: HMAC-SHA256 of a fixed label under the raw key, 8 bytes in hex."""
    return hmac.new(raw_key(key), b"connections-bot key id", sha256).digest()[:8].hex()


class LegacyCipher(Cipher):
    """Seals as the bot did before HKDF: AES-256-GCM under the raw master key, named by
    :func:`legacy_key_id`."""

    __slots__ = ("_legacy",)

    def __init__(self, key: MasterKey) -> None:
        super().__init__(key)
        self._legacy = (legacy_key_id(key), AESGCM(raw_key(key)))

    def seal(self, secret: Secret, aad: bytes) -> Sealed:
        key_id, aead = self._legacy
        nonce = os.urandom(12)
        return Sealed(key_id, nonce, aead.encrypt(nonce, secret.reveal().encode("utf-8"), aad))


async def seed_sealed_data(
    url: str, key: MasterKey, *, connections: int = 3, legacy: bool = False
) -> SealedData:
    """``connections`` Confluent connections (key and secret) sealed with ``key``, a second,
    pending credential version of the first one, and the key canary; ``url`` must be migrated.
    ``legacy``: every row sealed under the raw key, as before HKDF (:class:`LegacyCipher`)."""
    cipher = LegacyCipher(key) if legacy else Cipher(key)
    seeds = [Seed(name=f"prod-{n}", key=new_api_key(), secret=new_api_secret()) for n in range(connections)]
    ids = await seed_connections(url, cipher, seeds)
    plaintexts: dict[RowId, str] = {}
    for connection_id, seed in zip(ids, seeds, strict=True):
        plaintexts[(connection_id, "api_key", 1)] = seed.key
        plaintexts[(connection_id, "api_secret", 1)] = seed.secret
    pending = {"api_key": new_api_key(), "api_secret": new_api_secret()}
    db = Database.from_url(url)
    try:
        async with db.transaction() as tx:
            for name, value in pending.items():
                row: RowId = (ids[0], name, 2)
                sealed = cipher.seal(Secret(value), associated_data(*row))
                await tx.credentials.add(
                    Credential(
                        team_id=seeds[0].team_id,
                        connection_id=ids[0],
                        version=2,
                        field=name,
                        key_id=sealed.key_id,
                        nonce=sealed.nonce,
                        ciphertext=sealed.ciphertext,
                    )
                )
                plaintexts[row] = value
            canary = cipher.seal(Secret(CANARY_TEXT), CANARY_AAD)
            await tx.key_canary.add(
                KeyCanary(key_id=canary.key_id, nonce=canary.nonce, ciphertext=canary.ciphertext)
            )
    finally:
        await db.dispose()
    return SealedData(plaintexts=plaintexts)


async def open_everything(url: str, *keys: MasterKey) -> Opened:
    """Which stored rows ``keys`` open (a row that opens with none of them is left out)."""
    db = Database.from_url(url)
    try:
        async with db.read() as tx:
            canary = await tx.key_canary.get()
            rows = list(await tx.session.scalars(select(Credential).order_by(Credential.id)))
            bindings = await tx.credentials.bindings(rows)
    finally:
        await db.dispose()
    ciphers = [Cipher(key) for key in keys]
    values: dict[RowId, str] = {}
    for row in rows:
        row_id: RowId = (row.connection_id, row.field, row.version)
        value = _open_with_any(ciphers, *sealed_row(row, bindings))
        if value is not None:
            values[row_id] = value
    canary_text = None if canary is None else _open_with_any(ciphers, sealed_canary(canary), CANARY_AAD)
    return Opened(
        canary=canary_text == CANARY_TEXT,
        values=values,
        key_ids={row.key_id for row in rows} | ({canary.key_id} if canary is not None else set()),
        ciphertexts=[bytes(row.ciphertext) for row in rows],
    )


def _open_with_any(ciphers: list[Cipher], sealed: Sealed, aad: bytes) -> str | None:
    for cipher in ciphers:
        try:
            return cipher.open(sealed, aad).reveal()
        except CryptoError:
            continue
    return None
