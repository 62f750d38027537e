"""Sealing and opening credential fields, and the master key's safe surface."""

from __future__ import annotations

import base64
import json
import pickle
import traceback
from dataclasses import FrozenInstanceError

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.crypto import (
    AAD_FORMAT,
    KEY_SIZE,
    NONCE_SIZE,
    Cipher,
    CryptoError,
    DecryptionError,
    InvalidMasterKey,
    MasterKey,
    Sealed,
    associated_data,
)
from bot.redaction import Secret

PLAINTEXT = "cflt-api-secret-QmFzZTY0U2VjcmV0VmFsdWU9"
AAD = associated_data("conn-123", "api_secret", 1)


def key_forms(key: MasterKey) -> list[str]:
    """Every spelling of the key that must never show up in output."""
    raw = base64.b64decode(key.to_base64().reveal())
    return [
        key.to_base64().reveal(),
        base64.urlsafe_b64encode(raw).decode(),
        base64.b64encode(raw).decode().rstrip("="),
        raw.hex(),
        raw.hex().upper(),
        repr(raw),
        str(raw),
    ]


def assert_leaks_nothing(text: str, key: MasterKey, *plain: str) -> None:
    for form in key_forms(key):
        assert form not in text
    for value in plain:
        assert value not in text


def exception_text(exc: BaseException) -> str:
    """What a traceback would print, chained causes included."""
    return "".join(traceback.format_exception(exc)) + repr(exc)


def flip(data: bytes, index: int) -> bytes:
    changed = bytearray(data)
    changed[index] ^= 0x01
    return bytes(changed)


@pytest.fixture
def key() -> MasterKey:
    return MasterKey.generate()


@pytest.fixture
def cipher(key: MasterKey) -> Cipher:
    return Cipher(key)


# --- round trip and nonces ---------------------------------------------------------------------


@pytest.mark.parametrize("value", [PLAINTEXT, "x", "", "päss wörd ✓ 🔑", "a" * 10_000])
def test_round_trip(cipher: Cipher, value: str) -> None:
    sealed = cipher.seal(Secret(value), AAD)

    opened = cipher.open(sealed, AAD)

    assert isinstance(opened, Secret)
    assert opened.reveal() == value


def test_sealed_records_key_id_nonce_and_tagged_ciphertext(key: MasterKey, cipher: Cipher) -> None:
    sealed = cipher.seal(Secret(PLAINTEXT), AAD)

    assert sealed.key_id == key.key_id
    assert len(sealed.nonce) == NONCE_SIZE
    # GCM adds a 16-byte tag and does not pad.
    assert len(sealed.ciphertext) == len(PLAINTEXT.encode()) + 16
    assert PLAINTEXT.encode() not in sealed.ciphertext


def test_every_seal_uses_a_fresh_nonce(cipher: Cipher) -> None:
    seals = [cipher.seal(Secret(PLAINTEXT), AAD) for _ in range(50)]

    assert len({s.nonce for s in seals}) == len(seals)
    assert len({s.ciphertext for s in seals}) == len(seals)
    assert all(cipher.open(s, AAD).reveal() == PLAINTEXT for s in seals)


def test_sealed_is_immutable(cipher: Cipher) -> None:
    sealed = cipher.seal(Secret(PLAINTEXT), AAD)

    with pytest.raises(FrozenInstanceError):
        sealed.key_id = "other"  # type: ignore[misc]


def test_open_accepts_memoryview_columns(cipher: Cipher) -> None:
    # Database drivers may hand back buffers rather than bytes.
    sealed = cipher.seal(Secret(PLAINTEXT), AAD)
    from_db = Sealed(sealed.key_id, memoryview(sealed.nonce), memoryview(sealed.ciphertext))  # type: ignore[arg-type]

    assert cipher.open(from_db, AAD).reveal() == PLAINTEXT


# --- tampering and misplaced ciphertexts ---------------------------------------------------------


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda s: Sealed(s.key_id, flip(s.nonce, 0), s.ciphertext), id="nonce"),
        pytest.param(lambda s: Sealed(s.key_id, s.nonce, flip(s.ciphertext, 0)), id="ciphertext"),
        pytest.param(
            lambda s: Sealed(s.key_id, s.nonce, flip(s.ciphertext, len(s.ciphertext) - 1)), id="tag"
        ),
        pytest.param(lambda s: Sealed(s.key_id, s.nonce, s.ciphertext[:-1]), id="truncated"),
        pytest.param(lambda s: Sealed(s.key_id, s.nonce, s.ciphertext + b"\x00"), id="extended"),
        pytest.param(lambda s: Sealed(s.key_id, s.nonce[:-1], s.ciphertext), id="short-nonce"),
        pytest.param(lambda s: Sealed(s.key_id, s.nonce, b""), id="empty"),
    ],
)
def test_tampered_value_does_not_open(cipher: Cipher, key: MasterKey, tamper: object) -> None:
    sealed = cipher.seal(Secret(PLAINTEXT), AAD)
    tampered = tamper(sealed)  # type: ignore[operator]

    with pytest.raises(DecryptionError) as caught:
        cipher.open(tampered, AAD)

    assert_leaks_nothing(exception_text(caught.value), key, PLAINTEXT, sealed.ciphertext.hex())


@pytest.mark.parametrize(
    "other_aad",
    [
        pytest.param(associated_data("conn-124", "api_secret", 1), id="connection"),
        pytest.param(associated_data("conn-123", "api_key", 1), id="field"),
        pytest.param(associated_data("conn-123", "api_secret", 2), id="version"),
        pytest.param(b"", id="empty"),
    ],
)
def test_ciphertext_moved_to_another_row_does_not_open(cipher: Cipher, other_aad: bytes) -> None:
    sealed = cipher.seal(Secret(PLAINTEXT), AAD)

    with pytest.raises(DecryptionError, match="another connection, field or version"):
        cipher.open(sealed, other_aad)
    assert cipher.open(sealed, AAD).reveal() == PLAINTEXT


def test_wrong_key_with_a_forged_key_id_does_not_open(cipher: Cipher) -> None:
    sealed = cipher.seal(Secret(PLAINTEXT), AAD)
    other = MasterKey.generate()
    relabelled = Sealed(other.key_id, sealed.nonce, sealed.ciphertext)

    with pytest.raises(DecryptionError):
        Cipher(other).open(relabelled, AAD)


def test_unknown_key_id_is_refused_and_both_ids_named(key: MasterKey, cipher: Cipher) -> None:
    other = MasterKey.generate()
    sealed = Cipher(other).seal(Secret(PLAINTEXT), AAD)

    with pytest.raises(DecryptionError) as caught:
        cipher.open(sealed, AAD)

    message = str(caught.value)
    assert other.key_id in message
    assert key.key_id in message
    assert_leaks_nothing(exception_text(caught.value), key, PLAINTEXT)
    assert_leaks_nothing(exception_text(caught.value), other, PLAINTEXT)


def test_errors_share_a_base_class() -> None:
    assert issubclass(DecryptionError, CryptoError)
    assert issubclass(InvalidMasterKey, CryptoError)


# --- previous keys and reseal ------------------------------------------------------------------


def test_previous_keys_open_old_rows_and_reseal_moves_them_to_the_current_key() -> None:
    old, new = MasterKey.generate(), MasterKey.generate()
    old_row = Cipher(old).seal(Secret(PLAINTEXT), AAD)
    rotating = Cipher(new, previous=(old,))

    assert rotating.open(old_row, AAD).reveal() == PLAINTEXT
    resealed = rotating.reseal(old_row, AAD)

    assert resealed.key_id == new.key_id != old_row.key_id
    assert Cipher(new).open(resealed, AAD).reveal() == PLAINTEXT
    with pytest.raises(DecryptionError):
        Cipher(old).open(resealed, AAD)


def test_seal_always_uses_the_current_key() -> None:
    old, new = MasterKey.generate(), MasterKey.generate()
    rotating = Cipher(new, previous=[old])

    assert rotating.key_id == new.key_id
    assert rotating.key_ids[:2] == (new.key_id, old.key_id)
    assert rotating.seal(Secret(PLAINTEXT), AAD).key_id == new.key_id


def test_reseal_keeps_the_row_binding() -> None:
    old, new = MasterKey.generate(), MasterKey.generate()
    old_row = Cipher(old).seal(Secret(PLAINTEXT), AAD)
    other_aad = associated_data("conn-999", "api_secret", 1)

    with pytest.raises(DecryptionError):
        Cipher(new, previous=(old,)).reseal(old_row, other_aad)
    resealed = Cipher(new, previous=(old,)).reseal(old_row, AAD)
    with pytest.raises(DecryptionError):
        Cipher(new).open(resealed, other_aad)


# --- the master key ------------------------------------------------------------------------------


def test_generated_keys_differ_and_round_trip_through_base64() -> None:
    first, second = MasterKey.generate(), MasterKey.generate()

    assert first != second
    assert first.key_id != second.key_id
    encoded = first.to_base64()
    assert isinstance(encoded, Secret)
    assert len(base64.b64decode(encoded.reveal())) == KEY_SIZE
    assert MasterKey.from_base64(encoded.reveal()) == first
    assert MasterKey.from_base64(encoded) == first
    assert MasterKey.from_base64(f"  {encoded.reveal()}\n") == first


def test_key_id_is_derived_stable_and_not_the_key() -> None:
    raw = bytes(range(KEY_SIZE))
    key = MasterKey(raw)

    assert key.key_id == MasterKey(raw).key_id
    assert len(key.key_id) == 16
    int(key.key_id, 16)
    assert key.key_id not in raw.hex()
    assert key.key_id != MasterKey(bytes(KEY_SIZE)).key_id


def test_same_bytes_give_equal_keys_and_ciphers_that_open_each_other() -> None:
    raw = bytes(range(KEY_SIZE))
    sealed = Cipher(MasterKey(raw)).seal(Secret(PLAINTEXT), AAD)

    assert Cipher(MasterKey(raw)).open(sealed, AAD).reveal() == PLAINTEXT


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("definitely not base64 !!! secretish", id="not-base64"),
        pytest.param(base64.b64encode(b"k" * 16).decode(), id="16-bytes"),
        pytest.param(base64.b64encode(b"k" * 31).decode(), id="31-bytes"),
        pytest.param(base64.b64encode(b"k" * 33).decode(), id="33-bytes"),
        pytest.param(base64.b64encode(b"k" * 32).decode().rstrip("="), id="missing-padding"),
        pytest.param("", id="empty"),
    ],
)
def test_malformed_base64_key_is_refused_without_echoing_it(text: str) -> None:
    with pytest.raises(InvalidMasterKey) as caught:
        MasterKey.from_base64(text)

    rendered = exception_text(caught.value)
    assert "base64" in str(caught.value)
    assert "32 bytes" in str(caught.value)
    if text:
        assert text not in rendered
    # The decoder's own error is not chained on, so a traceback shows only our message.
    assert "During handling" not in rendered
    assert "direct cause" not in rendered


@pytest.mark.parametrize("raw", [b"", b"x" * 31, b"x" * 33])
def test_master_key_needs_exactly_32_bytes(raw: bytes) -> None:
    with pytest.raises(InvalidMasterKey):
        MasterKey(raw)


def test_nothing_prints_the_key_or_the_plaintext(key: MasterKey, cipher: Cipher) -> None:
    previous = MasterKey.generate()
    rotating = Cipher(key, previous=(previous,))
    sealed = cipher.seal(Secret(PLAINTEXT), AAD)

    for shown in (repr(key), str(key), f"{key}", repr(rotating), str(rotating), repr(sealed), str(sealed)):
        assert_leaks_nothing(shown, key, PLAINTEXT)
        assert_leaks_nothing(shown, previous, PLAINTEXT)
        assert sealed.ciphertext.hex() not in shown
        assert sealed.nonce.hex() not in shown
    assert key.key_id in repr(key)
    assert key.key_id in repr(rotating) and previous.key_id in repr(rotating)
    assert key.key_id in repr(sealed)


@pytest.mark.parametrize("value", [MasterKey(bytes(KEY_SIZE)), Cipher(MasterKey(bytes(KEY_SIZE)))])
def test_keys_and_ciphers_refuse_pickling(value: object) -> None:
    with pytest.raises(TypeError):
        pickle.dumps(value)


# --- associated data ---------------------------------------------------------------------------


def test_associated_data_is_tagged_with_the_format() -> None:
    decoded = json.loads(associated_data("conn-1", "api_key", 3))

    assert decoded == [AAD_FORMAT, "conn-1", "api_key", 3]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("a|b", "c", 1), ("a", "b|c", 1)),
        (("a,b", "c", 1), ("a", "b,c", 1)),
        (('a","b', "c", 1), ("a", 'b","c', 1)),
        (("a\\", "b", 1), ("a", "\\b", 1)),
        (("a", "b", 12), ("a", "b1", 2)),
        (("a:b", "c", 1), ("a", "b:c", 1)),
        (("a\x00b", "c", 1), ("a", "b\x00c", 1)),
        (("conn", "field", 1), ("conn", "field", 10)),
    ],
)
def test_associated_data_separates_tricky_triples(
    first: tuple[str, str, int], second: tuple[str, str, int]
) -> None:
    assert associated_data(*first) != associated_data(*second)


_tricky_text = st.text(alphabet='ab|,:"\\\x00[]é', min_size=1, max_size=6)


@given(st.lists(st.tuples(_tricky_text, _tricky_text, st.integers(0, 20)), unique=True, max_size=30))
def test_associated_data_is_injective(triples: list[tuple[str, str, int]]) -> None:
    encodings = {associated_data(*t) for t in triples}

    assert len(encodings) == len(triples)


@pytest.mark.parametrize(
    "args",
    [
        ("", "api_key", 1),
        ("conn", "", 1),
        ("conn", "api_key", -1),
        ("conn", "api_key", True),
        ("conn", "k", "1"),
    ],
)
def test_associated_data_rejects_bad_parts(args: tuple[object, object, object]) -> None:
    with pytest.raises(ValueError):
        associated_data(*args)  # type: ignore[arg-type]
