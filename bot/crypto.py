"""Envelope encryption of credential fields.

Every credential field is sealed on its own with AES-256-GCM under the master key, with a fresh
12-byte nonce and with associated data that binds the ciphertext to its row (connection id, field
name, version): a ciphertext copied to another row fails to open. Each :class:`Sealed` value records
the id of the key that sealed it, so a :class:`Cipher` holding the current key and older ones can
open rows sealed before a master-key rotation and :meth:`Cipher.reseal` them under the current key.

The associated data also binds the credential to the connection's non-secret configuration (its
provider and fields such as the REST endpoint), through :func:`config_digest`. Someone who can
write to the database but does not hold the master key cannot point a stored credential at another
host: the changed configuration no longer matches, the credential does not open, and it is never
sent anywhere. The digest goes into the associated data rather than into a MAC stored beside the
row because then nothing else has to be kept right: master-key rotation re-seals with the same
associated data and carries the binding over, and there is no second key or tag to derive, rotate,
strip or replay. A row's scheme (:data:`LEGACY_SCHEME` for rows sealed before the binding existed,
:data:`BOUND_SCHEME`) is stored beside it and only says which associated data to try: marking a
bound row legacy does not downgrade it, because the ciphertext opens only with the associated data
it was sealed with (see :mod:`bot.keys.binding` for the upgrade of legacy rows at start-up).

The master key itself seals nothing and names nothing: each use gets its own key, derived with HKDF
(SHA-256) under a label of :data:`DERIVATION_LABELS` through :meth:`MasterKey.derive` — AES-256-GCM
under :data:`SEALING_LABEL`, the key id under :data:`KEY_ID_LABEL`, the audit chain under
:data:`AUDIT_CHAIN_LABEL` — so no two uses ever share key material. A new use adds its own label
there. Rows sealed before the derivation (AES-GCM under the raw key) carry the *legacy key id*
(:attr:`MasterKey.legacy_key_id`, the old HMAC of the raw key), so the key id is also the row's
format: a :class:`Cipher` maps the derived id to the derived key and the legacy id to the raw key,
and seals only under the derived one. A database writer who swaps one id for the other only changes
which key is tried: a GCM ciphertext opens under the one key it was sealed with, so the row then
opens with neither and no row can be made to open with weaker properties than it was sealed with.
Every start re-seals legacy rows under the derived key (:mod:`bot.keys.binding`), and a master-key
rotation re-seals every row.

Exception hierarchy::

    CryptoError                 base class; every message is safe to print (ids only, never key
                                material, plain text or ciphertext)
    ├── InvalidMasterKey        a master key that is not exactly 32 bytes (or not base64 of them)
    └── DecryptionError         a ciphertext that does not open: wrong or unknown key, tampered
                                nonce/ciphertext/tag, or associated data of another row

:mod:`bot.keys` extends ``CryptoError`` with the errors of finding the master key.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from hashlib import sha256
from typing import NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from bot.redaction import Secret

__all__ = [
    "AAD_FORMAT",
    "AUDIT_CHAIN_LABEL",
    "BOUND_AAD_FORMAT",
    "BOUND_SCHEME",
    "DERIVATION_LABELS",
    "KEY_ID_LABEL",
    "KEY_SIZE",
    "LEGACY_SCHEME",
    "NONCE_SIZE",
    "SEALING_LABEL",
    "Cipher",
    "CryptoError",
    "DecryptionError",
    "InvalidMasterKey",
    "MasterKey",
    "Sealed",
    "associated_data",
    "config_digest",
]

KEY_SIZE = 32
NONCE_SIZE = 12
AAD_FORMAT = "connections-bot/v1"
BOUND_AAD_FORMAT = "connections-bot/v2"
LEGACY_SCHEME = 1
"""A credential row sealed with :data:`AAD_FORMAT` (row only), before configurations were bound."""
BOUND_SCHEME = 2
"""A credential row sealed with :data:`BOUND_AAD_FORMAT`: row and configuration."""
SEALING_LABEL = "connections-bot sealing v1"
"""HKDF label of the AES-256-GCM key that seals credentials and the key canary."""
KEY_ID_LABEL = "connections-bot key id v1"
"""HKDF label of the bytes behind :attr:`MasterKey.key_id`."""
AUDIT_CHAIN_LABEL = "connections-bot audit-chain v1"
"""HKDF label reserved for the key of the audit log's hash chain."""
DERIVATION_LABELS = frozenset({SEALING_LABEL, KEY_ID_LABEL, AUDIT_CHAIN_LABEL})
"""Every label :meth:`MasterKey.derive` accepts: one per use, never shared between two."""
_LEGACY_KEY_ID_LABEL = b"connections-bot key id"  # HMAC-SHA256 under the raw key, before HKDF
_KEY_ID_BYTES = 8
_TAG_SIZE = 16


class CryptoError(Exception):
    """Base class of this module's errors; the message never holds key material or plain text."""


class InvalidMasterKey(CryptoError, ValueError):
    """The master key is not base64 of exactly 32 bytes."""


class DecryptionError(CryptoError):
    """A sealed value could not be opened with the keys this cipher holds."""


class MasterKey:
    """The 32-byte key-encryption key. ``repr`` shows only its :attr:`key_id`.

    The id is derived one way (HKDF under :data:`KEY_ID_LABEL`), so it can be stored beside every
    ciphertext and shown in messages without revealing anything about the key.
    """

    __slots__ = ("_key", "_key_id")

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes | bytearray) or len(key) != KEY_SIZE:
            raise InvalidMasterKey(f"a master key must be exactly {KEY_SIZE} bytes")
        self._key = bytes(key)
        self._key_id = self.derive(KEY_ID_LABEL)[:_KEY_ID_BYTES].hex()

    @classmethod
    def generate(cls) -> MasterKey:
        """A new random key from the operating system's CSPRNG."""
        return cls(os.urandom(KEY_SIZE))

    @classmethod
    def from_base64(cls, text: str | Secret) -> MasterKey:
        """Parse standard base64 (surrounding whitespace allowed); raises :class:`InvalidMasterKey`."""
        value = text.reveal() if isinstance(text, Secret) else text
        try:
            raw = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            # `from None`: the decoder's own message is dropped so nothing about the input travels on.
            raise InvalidMasterKey(_base64_hint("it is not valid base64")) from None
        if len(raw) != KEY_SIZE:
            raise InvalidMasterKey(_base64_hint(f"it decodes to {len(raw)} bytes"))
        return cls(raw)

    def to_base64(self) -> Secret:
        """The key as base64, wrapped so it is masked in logs; ``reveal()`` it to store it."""
        return Secret(base64.b64encode(self._key).decode("ascii"))

    def derive(self, label: str) -> bytes:
        """The 32-byte key of one use of the master key: HKDF-SHA256 with ``label`` as its info
        (no salt: the master key is already uniformly random). ``label`` must be one of
        :data:`DERIVATION_LABELS`, so two uses cannot end up with the same key by accident."""
        if label not in DERIVATION_LABELS:
            raise ValueError(f"{label!r} is not a registered key-derivation label")
        return HKDF(algorithm=SHA256(), length=KEY_SIZE, salt=None, info=label.encode("ascii")).derive(
            self._key
        )

    @property
    def key_id(self) -> str:
        """16 hex characters identifying this key; safe to store and show."""
        return self._key_id

    @property
    def legacy_key_id(self) -> str:
        """The id rows sealed under the raw key (before the derivation) carry: HMAC-SHA256 of a
        fixed label under the raw key. Only recognised, never written."""
        return hmac.new(self._key, _LEGACY_KEY_ID_LABEL, sha256).digest()[:_KEY_ID_BYTES].hex()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MasterKey):
            return NotImplemented
        return hmac.compare_digest(self._key, other._key)

    def __hash__(self) -> int:
        return hash(("MasterKey", self._key_id))

    def __repr__(self) -> str:
        return f"MasterKey(key_id={self._key_id!r})"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("a MasterKey cannot be pickled")


def _base64_hint(problem: str) -> str:
    return (
        f"the master key must be the base64 encoding of exactly {KEY_SIZE} bytes, but {problem} "
        f"(create one with `openssl rand -base64 {KEY_SIZE}`)"
    )


@dataclass(frozen=True, repr=False)
class Sealed:
    """One encrypted field as the store keeps it: key id, nonce, and ciphertext with the GCM tag."""

    key_id: str
    nonce: bytes
    ciphertext: bytes

    def __repr__(self) -> str:
        return (
            f"Sealed(key_id={self.key_id!r}, nonce=<{len(self.nonce)} bytes>, "
            f"ciphertext=<{len(self.ciphertext)} bytes>)"
        )


def config_digest(provider: str, config: Mapping[str, object]) -> str:
    """SHA-256 (hex) of a connection's provider and non-secret fields, canonically encoded: JSON
    with sorted keys, values as text, so the same settings always give the same digest."""
    canonical = [AAD_FORMAT, provider, {str(k): str(v) for k, v in config.items()}]
    encoded = json.dumps(canonical, ensure_ascii=True, sort_keys=True, separators=(",", ":"))
    return sha256(encoded.encode("ascii")).hexdigest()


def associated_data(connection_id: str, field: str, version: int, config: str | None = None) -> bytes:
    """The bytes that bind a ciphertext to its row and, given ``config`` (a :func:`config_digest`),
    to the configuration it may be used with; without it, the legacy form of rows sealed before.

    A JSON array with a format tag: JSON quotes and escapes every string, so no two different
    tuples encode to the same bytes (a separator inside an id cannot shift a boundary).
    """
    if not isinstance(connection_id, str) or not connection_id:
        raise ValueError("connection_id must be a non-empty string")
    if not isinstance(field, str) or not field:
        raise ValueError("field must be a non-empty string")
    # bool is an int subclass; True would otherwise encode as `true` and pass as a version.
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ValueError("version must be a non-negative integer")
    payload: list[object] = [AAD_FORMAT, connection_id, field, version]
    if config is not None:
        payload = [BOUND_AAD_FORMAT, connection_id, field, version, config]
    return json.dumps(payload, ensure_ascii=True, separators=(",", ":")).encode("ascii")


class Cipher:
    """Seals with the current master key's sealing key; opens with whichever held key sealed the
    value.

    ``previous`` keys exist for master-key rotation: rows sealed under them still open, and
    :meth:`reseal` moves a row to the current key. Each key also opens the rows it sealed before
    the derivation, under its legacy id (see the module's docstring).
    """

    __slots__ = ("_aeads", "_current_id", "_previous_ids")

    def __init__(self, current: MasterKey, previous: Iterable[MasterKey] = ()) -> None:
        keys = (current, *previous)
        self._current_id = current.key_id
        self._aeads: dict[str, AESGCM] = {}
        for key in keys:
            self._aeads.setdefault(key.key_id, AESGCM(key.derive(SEALING_LABEL)))
        for key in keys:
            self._aeads.setdefault(key.legacy_key_id, AESGCM(key._key))
        own = (current.key_id, current.legacy_key_id)
        # Each previous key's id first, then the legacy ids of the rows it sealed before derivation.
        self._previous_ids = tuple(
            dict.fromkeys(
                [key.key_id for key in previous if key.key_id not in own]
                + [key.legacy_key_id for key in previous if key.legacy_key_id not in own]
            )
        )

    @property
    def key_id(self) -> str:
        """The id of the key that :meth:`seal` uses."""
        return self._current_id

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Ids of every key this cipher can open with, the current one first, legacy ids last."""
        return tuple(self._aeads)

    @property
    def previous_key_ids(self) -> tuple[str, ...]:
        """Ids (derived and legacy) of the previous keys alone: rows sealed under them are what a
        rotation still has to move."""
        return self._previous_ids

    def seal(self, secret: Secret, aad: bytes) -> Sealed:
        """Encrypt ``secret`` under the current key with a fresh random nonce."""
        nonce = os.urandom(NONCE_SIZE)
        ciphertext = self._aeads[self._current_id].encrypt(nonce, secret.reveal().encode("utf-8"), aad)
        return Sealed(key_id=self._current_id, nonce=nonce, ciphertext=ciphertext)

    def open(self, sealed: Sealed, aad: bytes) -> Secret:
        """Decrypt ``sealed``; raises :class:`DecryptionError` if it does not authenticate."""
        aead = self._aeads.get(sealed.key_id)
        if aead is None:
            raise DecryptionError(
                f"the value was sealed with master key {sealed.key_id!r}, which is not loaded "
                f"(loaded: {', '.join(self._aeads)})"
            )
        nonce, ciphertext = bytes(sealed.nonce), bytes(sealed.ciphertext)
        if len(nonce) != NONCE_SIZE or len(ciphertext) < _TAG_SIZE:
            raise DecryptionError("the sealed value is malformed (wrong nonce or ciphertext length)")
        try:
            plaintext = aead.decrypt(nonce, ciphertext, aad)
        except InvalidTag:
            raise DecryptionError(
                f"the value sealed with master key {sealed.key_id!r} did not authenticate: its nonce or "
                "ciphertext was altered, or it belongs to another connection, field or version"
            ) from None
        try:
            return Secret(plaintext.decode("utf-8"))
        except UnicodeDecodeError:
            raise DecryptionError("the decrypted value is not UTF-8 text") from None

    def reseal(self, sealed: Sealed, aad: bytes) -> Sealed:
        """Open ``sealed`` with whichever key sealed it and seal it again under the current key."""
        return self.seal(self.open(sealed, aad), aad)

    def __repr__(self) -> str:
        previous = tuple(k for k in self._aeads if k != self._current_id)
        return f"Cipher(key_id={self._current_id!r}, previous={previous!r})"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Cipher cannot be pickled")
