"""Snowflake key pairs: reading a pasted PKCS#8 PEM, its public-key fingerprint, and the key-pair
JWT the SQL API takes (specs/snowflake/README.md §2 and §3).

Everything here is offline and raises :class:`KeyProblem` with a message that is safe to show:
never a byte of the key or the passphrase, never the text of a cryptography exception.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dh, dsa, ec, ed448, ed25519, rsa, x448, x25519
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from bot.providers._shared import unquote

MIN_RSA_BITS = 2048
JWT_LIFETIME_SECONDS = 60
"""Snowflake refuses a JWT that arrives more than 60 s after its ``iat`` (LFD 394302), so one is
minted per request and a longer ``exp`` would buy nothing."""
KEY_CACHE_SECONDS = 300.0
"""How long an opened key stays in memory at most. Long enough for one submission (validation,
the hint, the probe) and a bulk re-test to open each key once; short enough that a key nobody
uses is not kept in the clear for the life of the process."""
MAX_KDF_ROUNDS = 250_000
"""The most PBKDF2 rounds we run to open an encrypted key. Measured with cryptography 50 / OpenSSL
3.0 on the bot's host: 250,000 rounds take about 27 ms with HMAC-SHA256 (OpenSSL's default PRF, for
which it uses 2048 rounds) and about 72 ms with HMAC-SHA512, the slowest PRF; 600,000 took 65 ms and
174 ms. A key asking for more would stall whoever opens it."""
_MAX_SCRYPT_WORK = 2**20  # N * r * p; OpenSSL's default (N=16384, r=8, p=1) is 2**17
_MAX_PEM_CHARS = 16_000

_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]{1,40})-----(.*?)-----END \1-----", re.DOTALL)
_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")

MAKE_KEY = (
    "openssl genrsa 2048 | openssl pkcs8 -topk8 -v2 aes-256-cbc -out rsa_key.p8 "
    "(or -nocrypt instead of -v2 aes-256-cbc for a key without a passphrase)"
)
_TO_PKCS8 = (
    "Convert it to PKCS#8 with openssl pkcs8 -topk8 -v2 aes-256-cbc -in rsa_key.pem -out rsa_key.p8 "
    "(or -nocrypt for no passphrase) and paste rsa_key.p8; the fingerprint stays the same."
)
_NOT_RSA = "Snowflake key-pair sign-in here needs an RSA key of at least 2048 bits. Create one with "


class KeyProblem(ValueError):
    """A pasted key that can't be used; ``field`` is the form field to show ``message`` on."""

    def __init__(self, message: str, field: str = "private_key") -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class KeyPair:
    """A loaded RSA private key and what identifies it publicly."""

    private_key: rsa.RSAPrivateKey = field(repr=False)
    fingerprint: str
    """``SHA256:<base64>``, what ``DESC USER`` shows as RSA_PUBLIC_KEY_FP."""


def fingerprint_of(public_key: PublicKeyTypes) -> str:
    """``SHA256:`` + base64 of the SHA-256 of the DER SubjectPublicKeyInfo (README §2)."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "SHA256:" + base64.b64encode(hashlib.sha256(der).digest()).decode()


def normalise_pem(text: str) -> str:
    """Undo what copying does to a PEM: surrounding quotes, ``\\r``, literal ``\\n`` escapes (from
    an .env file or JSON), and a body whose line breaks became spaces (a one-line field)."""
    text = unquote(text).replace("\r", "").replace("\\n", "\n")

    def rewrap(match: re.Match[str]) -> str:
        label, body = match.group(1), match.group(2)
        if ":" in body:  # RFC 1421 headers (an encrypted PKCS#1 key): leave it for the check to name
            return match.group(0)
        joined = "".join(body.split())
        lines = [joined[i : i + 64] for i in range(0, len(joined), 64)]
        return "\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----"])

    return _BLOCK.sub(rewrap, text)


def load_key_pair(pem: str, passphrase: str, *, checked: bool = True) -> KeyPair:
    """Read a PKCS#8 RSA private key (encrypted or not); raise :class:`KeyProblem` saying why not.

    ``checked=False`` skips cryptography's consistency check of the RSA key (about 30 ms of CPU,
    on the event loop): only for a key the offline checks already loaded with it, i.e. at
    verification and for the credential's hint, never for a key seen for the first time."""
    if len(pem) > _MAX_PEM_CHARS:
        raise KeyProblem("That is far longer than a private key; paste only the key file.")
    blocks = _BLOCK.findall(pem)
    if not blocks:
        raise KeyProblem(_no_pem_problem(pem))
    if len(blocks) > 1:
        labels = ", ".join(label for label, _ in blocks)
        raise KeyProblem(f"Paste only the private key: this holds {len(blocks)} PEM blocks ({labels}).")
    label, body = blocks[0]
    encrypted = _check_label(label)
    try:
        der = base64.b64decode("".join(body.split()), validate=True)
    except (binascii.Error, ValueError):
        raise KeyProblem(_DAMAGED) from None
    if encrypted and not passphrase:
        raise KeyProblem(
            "This key is encrypted (BEGIN ENCRYPTED PRIVATE KEY): enter its passphrase.", "passphrase"
        )
    if not encrypted and passphrase:
        raise KeyProblem("This key is not encrypted: leave the passphrase empty.", "passphrase")
    if encrypted and (too_costly := kdf_problem(der)):
        raise KeyProblem(too_costly)
    try:
        key = serialization.load_der_private_key(
            der, passphrase.encode() if encrypted else None, unsafe_skip_rsa_key_validation=not checked
        )
    except UnsupportedAlgorithm:
        raise KeyProblem(
            "This key is encrypted with a cipher we can't open. Re-encrypt it with "
            "openssl pkcs8 -topk8 -v2 aes-256-cbc -in rsa_key.p8 -out rsa_key_new.p8 and paste that.",
        ) from None
    except (ValueError, TypeError):
        if encrypted:
            wrong = "This passphrase doesn't open the key. Check it for typos: it is case-sensitive."
            raise KeyProblem(wrong, "passphrase") from None
        raise KeyProblem(_DAMAGED) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KeyProblem(f"This is {_kind_of(key)}. {_NOT_RSA}{MAKE_KEY}.")
    if key.key_size < MIN_RSA_BITS:
        raise KeyProblem(
            f"This RSA key has {key.key_size} bits; Snowflake needs at least {MIN_RSA_BITS}. "
            f"Create a new one with {MAKE_KEY}.",
        )
    return KeyPair(key, fingerprint_of(key.public_key()))


class KeyCache:
    """Loaded key pairs, so a stored key is opened (its PBKDF2 run) once, not on every verification.

    Entries are keyed by an HMAC-SHA256 of the PEM and the passphrase under a random key of this
    cache: neither text is kept, and the digest can't be tested against guessed passphrases
    outside the process. At most ``size`` entries; the least recently used goes first. An entry
    lives ``ttl`` seconds from its loading at most (by ``clock``), however often it is used, and is
    dropped at the cache's next use after that; :meth:`forget` and :meth:`forget_fingerprint` drop
    one at once. Safe to use from worker threads."""

    def __init__(
        self, size: int = 256, ttl: float = KEY_CACHE_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.size, self.ttl = size, ttl
        self._clock = clock
        self._salt = secrets.token_bytes(32)
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def digest(self, pem: str, passphrase: str) -> bytes:
        mac = hmac.new(self._salt, digestmod=hashlib.sha256)
        for part in (pem.encode(), passphrase.encode()):
            mac.update(len(part).to_bytes(8, "big"))  # so no split of the same bytes collides
            mac.update(part)
        return mac.digest()

    def peek(self, pem: str, passphrase: str, *, checked: bool = False) -> KeyPair | None:
        """The cached key pair, or None; ``checked`` asks for one loaded with the RSA check."""
        digest = self.digest(pem, passphrase)
        with self._lock:
            self._drop_expired()
            found = self._entries.get(digest)
            if found is None or (checked and not found.checked):
                return None
            self._entries.move_to_end(digest)
            return found.pair

    def load(self, pem: str, passphrase: str, *, checked: bool = True) -> KeyPair:
        """:func:`load_key_pair`, answered from the cache when it can be. Problems aren't cached."""
        if (found := self.peek(pem, passphrase, checked=checked)) is not None:
            return found
        pair = load_key_pair(pem, passphrase, checked=checked)
        with self._lock:
            self._entries[self.digest(pem, passphrase)] = _Entry(pair, checked, self._clock() + self.ttl)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return pair

    def forget(self, pem: str, passphrase: str) -> None:
        """Drop the key pair of this PEM and passphrase, if cached."""
        digest = self.digest(pem, passphrase)
        with self._lock:
            self._entries.pop(digest, None)
            self._drop_expired()

    def forget_fingerprint(self, fingerprint: str) -> None:
        """Drop every cached key pair whose public key has this fingerprint (however it was encrypted)."""
        with self._lock:
            for digest in [d for d, entry in self._entries.items() if entry.pair.fingerprint == fingerprint]:
                del self._entries[digest]
            self._drop_expired()

    def _drop_expired(self) -> None:
        now = self._clock()
        for digest in [d for d, entry in self._entries.items() if entry.expires <= now]:
            del self._entries[digest]

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"KeyCache({len(self)} of {self.size})"


@dataclass(frozen=True)
class _Entry:
    pair: KeyPair
    checked: bool
    """Whether it was loaded with cryptography's RSA consistency check."""
    expires: float


_DAMAGED = (
    "This key can't be read: it may be cut short or changed by copying. Paste the whole .p8 file "
    "again, from -----BEGIN to -----END."
)


def _no_pem_problem(pem: str) -> str:
    if "-----BEGIN" in pem:
        return "The key is cut short: its -----END … line is missing. Paste the whole file."
    if _TOKEN_SHAPE.fullmatch(pem):  # a JWT's shape, which a programmatic access token has
        return "This looks like a programmatic access token: paste it in the token field instead."
    return (
        "Paste the whole PEM file, with its -----BEGIN PRIVATE KEY----- and -----END PRIVATE KEY----- "
        "lines (BEGIN ENCRYPTED PRIVATE KEY for a key with a passphrase)."
    )


def _check_label(label: str) -> bool:
    """Whether the PEM label is an encrypted PKCS#8 key; raise for every label but PKCS#8's."""
    if label == "PRIVATE KEY":
        return False
    if label == "ENCRYPTED PRIVATE KEY":
        return True
    if label == "RSA PRIVATE KEY":
        raise KeyProblem(f"This key is in the older PKCS#1 format (BEGIN RSA PRIVATE KEY). {_TO_PKCS8}")
    if label in ("PUBLIC KEY", "RSA PUBLIC KEY"):
        raise KeyProblem(
            "This is the public key. Paste the private key here; the public key is the one an "
            "admin registers with ALTER USER … SET RSA_PUBLIC_KEY.",
        )
    if label == "OPENSSH PRIVATE KEY":
        raise KeyProblem(
            f"This is an OpenSSH key. Snowflake needs a PKCS#8 PEM RSA key: create one with {MAKE_KEY}.",
        )
    if label in ("EC PRIVATE KEY", "DSA PRIVATE KEY"):
        kind = "an elliptic-curve (EC) key" if label.startswith("EC") else "a DSA key"
        raise KeyProblem(f"This is {kind}. {_NOT_RSA}{MAKE_KEY}.")
    raise KeyProblem(f"This is a {label.lower()}, not a private key. Paste the private key (.p8) file.")


def _kind_of(key: object) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return "an elliptic-curve (EC) key"
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return "an EdDSA key"
    if isinstance(key, dsa.DSAPrivateKey):
        return "a DSA key"
    if isinstance(key, x25519.X25519PrivateKey | x448.X448PrivateKey | dh.DHPrivateKey):
        return "a key-agreement key"
    return "not an RSA key"


_PBES2 = "1.2.840.113549.1.5.13"
_PBKDF2 = "1.2.840.113549.1.5.12"
_SCRYPT = "1.3.6.1.4.1.11591.4.11"
# PBES1 (PKCS#5 v1.5) and PKCS#12 PBE schemes: their parameters are {salt, iterations}.
_PBES1_PREFIXES = ("1.2.840.113549.1.5.", "1.2.840.113549.1.12.1.")
_SEQUENCE, _OCTET_STRING, _INTEGER, _OID = 0x30, 0x04, 0x02, 0x06


def kdf_problem(der: bytes) -> str | None:
    """Refuse an EncryptedPrivateKeyInfo whose key derivation would take too long to run.

    Reads just enough DER to find the iteration count (PBKDF2, PBES1, PKCS#12) or the scrypt
    parameters. Anything it can't read is left to cryptography, which rejects malformed input."""
    try:
        oid, params = _algorithm(der, _children(der, *_only(der))[0])
        pbes2 = oid == _PBES2
        if pbes2:  # the key derivation is the first element of PBES2's parameters
            oid, params = _algorithm(der, _children(der, params[1], params[2])[0])
        values = [_integer(der, c) for c in _children(der, params[1], params[2]) if c[0] == _INTEGER]
    except (IndexError, ValueError):
        return None
    if pbes2 and oid == _SCRYPT and len(values) >= 3:
        return _TOO_COSTLY if values[0] * values[1] * values[2] > _MAX_SCRYPT_WORK else None
    counted = oid == _PBKDF2 if pbes2 else oid.startswith(_PBES1_PREFIXES)
    return _TOO_COSTLY if counted and values and values[0] > MAX_KDF_ROUNDS else None


_TOO_COSTLY = (
    f"This key's encryption asks for more work than we run (over {MAX_KDF_ROUNDS:,} rounds). "
    "Re-encrypt it with openssl pkcs8 -topk8 -v2 aes-256-cbc -in rsa_key.p8 -out rsa_key_new.p8 "
    "and paste that."
)

_Node = tuple[int, int, int]
"""A DER element: tag, start of its contents, end of its contents."""


def _read(der: bytes, pos: int, limit: int) -> _Node:
    tag, length = der[pos], der[pos + 1]
    pos += 2
    if length & 0x80:
        size = length & 0x7F
        if not 1 <= size <= 4:
            raise ValueError("unsupported DER length")
        length = int.from_bytes(der[pos : pos + size], "big")
        pos += size
    if pos + length > limit:
        raise ValueError("DER element overruns its parent")
    return tag, pos, pos + length


def _only(der: bytes) -> tuple[int, int]:
    tag, start, end = _read(der, 0, len(der))
    if tag != _SEQUENCE:
        raise ValueError("not a SEQUENCE")
    return start, end


def _children(der: bytes, start: int, end: int) -> list[_Node]:
    nodes: list[_Node] = []
    pos = start
    while pos < end:
        node = _read(der, pos, end)
        nodes.append(node)
        pos = node[2]
    return nodes


def _algorithm(der: bytes, node: _Node) -> tuple[str, _Node]:
    """An AlgorithmIdentifier: its OID in dotted form and its parameters element."""
    if node[0] != _SEQUENCE:
        raise ValueError("not an AlgorithmIdentifier")
    oid_node, params = _children(der, node[1], node[2])[:2]
    if oid_node[0] != _OID or params[0] != _SEQUENCE:
        raise ValueError("not an AlgorithmIdentifier")
    return _oid(der[oid_node[1] : oid_node[2]]), params


def _oid(content: bytes) -> str:
    arcs: list[int] = []
    value = 0
    for byte in content:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    if not arcs:
        raise ValueError("empty OID")
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in [first, arcs[0] - 40 * first, *arcs[1:]])


def _integer(der: bytes, node: _Node) -> int:
    return int.from_bytes(der[node[1] : node[2]], "big", signed=True)


def mint_jwt(key: KeyPair, account: str, user: str, now: int) -> str:
    """A key-pair JWT for ``user`` on ``account`` (already in its JWT form), valid for a minute."""
    qualified = f"{account}.{user.upper()}"
    payload = {
        "iss": f"{qualified}.{key.fingerprint}",
        "sub": qualified,
        "iat": now,
        "exp": now + JWT_LIFETIME_SECONDS,
    }
    return jwt.encode(payload, key.private_key, algorithm="RS256")
