"""Each use of the master key has its own key, derived with HKDF under its own label; rows sealed
under the raw key before the derivation still open, under their legacy key id only."""

from __future__ import annotations

import hmac
from hashlib import sha256

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from bot.crypto import (
    AUDIT_CHAIN_LABEL,
    DERIVATION_LABELS,
    KEY_ID_LABEL,
    SEALING_LABEL,
    Cipher,
    DecryptionError,
    MasterKey,
    Sealed,
    associated_data,
)
from bot.redaction import Secret
from tests.support.sealed_data import LegacyCipher, legacy_key_id, raw_key

PLAINTEXT = "cflt-api-secret-QmFzZTY0U2VjcmV0VmFsdWU9"
AAD = associated_data("conn-123", "api_secret", 1, "digest")


def hkdf(raw: bytes, info: bytes) -> bytes:
    """RFC 5869 HKDF-SHA256 without salt, written out here rather than taken from the bot."""
    return HKDF(algorithm=SHA256(), length=32, salt=None, info=info).derive(raw)


@pytest.fixture
def key() -> MasterKey:
    return MasterKey.generate()


def test_a_sealed_value_does_not_open_with_the_raw_master_key(key: MasterKey) -> None:
    sealed = Cipher(key).seal(Secret(PLAINTEXT), AAD)

    with pytest.raises(InvalidTag):
        AESGCM(raw_key(key)).decrypt(sealed.nonce, sealed.ciphertext, AAD)
    sealing_key = hkdf(raw_key(key), b"connections-bot sealing v1")
    assert AESGCM(sealing_key).decrypt(sealed.nonce, sealed.ciphertext, AAD).decode() == PLAINTEXT


def test_the_key_id_is_derived_under_its_own_label_not_the_old_hmac(key: MasterKey) -> None:
    raw = raw_key(key)

    assert key.key_id == hkdf(raw, b"connections-bot key id v1")[:8].hex()
    assert key.key_id != hmac.new(raw, b"connections-bot key id", sha256).digest()[:8].hex()
    assert key.legacy_key_id == legacy_key_id(key) != key.key_id


def test_every_use_has_its_own_label_and_its_own_key(key: MasterKey) -> None:
    assert {SEALING_LABEL, KEY_ID_LABEL, AUDIT_CHAIN_LABEL} <= DERIVATION_LABELS
    assert AUDIT_CHAIN_LABEL == "connections-bot audit-chain v1"
    derived = [key.derive(label) for label in sorted(DERIVATION_LABELS)]

    assert len(set(derived)) == len(DERIVATION_LABELS)
    assert raw_key(key) not in derived
    assert all(len(value) == 32 for value in derived)
    assert key.derive(AUDIT_CHAIN_LABEL) == MasterKey(raw_key(key)).derive(AUDIT_CHAIN_LABEL)
    assert key.derive(AUDIT_CHAIN_LABEL) != MasterKey.generate().derive(AUDIT_CHAIN_LABEL)


@pytest.mark.parametrize("label", ["", "connections-bot key id", "connections-bot sealing v2"])
def test_an_unregistered_label_is_refused(key: MasterKey, label: str) -> None:
    with pytest.raises(ValueError, match="not a registered key-derivation label"):
        key.derive(label)


def test_a_legacy_row_opens_under_its_legacy_id_and_reseal_moves_it(key: MasterKey) -> None:
    legacy = LegacyCipher(key).seal(Secret(PLAINTEXT), AAD)
    assert legacy.key_id == legacy_key_id(key)

    assert Cipher(key).open(legacy, AAD).reveal() == PLAINTEXT
    moved = Cipher(key).reseal(legacy, AAD)
    assert moved.key_id == key.key_id
    with pytest.raises(InvalidTag):
        AESGCM(raw_key(key)).decrypt(moved.nonce, moved.ciphertext, AAD)


def test_a_rotation_cipher_opens_the_previous_keys_legacy_rows_and_seals_derived() -> None:
    old, new = MasterKey.generate(), MasterKey.generate()
    legacy = LegacyCipher(old).seal(Secret(PLAINTEXT), AAD)
    rotating = Cipher(new, previous=[old])

    assert set(rotating.key_ids) == {new.key_id, old.key_id, new.legacy_key_id, old.legacy_key_id}
    moved = rotating.reseal(legacy, AAD)
    assert moved.key_id == new.key_id
    assert Cipher(new).open(moved, AAD).reveal() == PLAINTEXT


def test_swapping_the_id_for_the_other_format_opens_nothing(key: MasterKey) -> None:
    """The id only says which key to try: a GCM ciphertext opens under the key it was sealed with."""
    cipher = Cipher(key)
    derived = cipher.seal(Secret(PLAINTEXT), AAD)
    legacy = LegacyCipher(key).seal(Secret(PLAINTEXT), AAD)

    for forged in (
        Sealed(key.legacy_key_id, derived.nonce, derived.ciphertext),
        Sealed(key.key_id, legacy.nonce, legacy.ciphertext),
    ):
        with pytest.raises(DecryptionError):
            cipher.open(forged, AAD)
