"""Where the master key comes from, and the rule that a new one is never made over existing data.

Lookup order (see DESIGN.md, "Secrets"):

1. ``CONNECTIONS_MASTER_KEY`` (base64 of 32 bytes), for production from a secret manager.
2. ``CONNECTIONS_MASTER_KEY_FILE``, when the operator names a file explicitly.
3. The system keyring (service ``connections-bot``, user ``master-key``), unless its backend does
   not really protect the value (fail, null, plain-text ``keyrings.alt`` backends).
4. A key file in the user's config directory (never beside the database), mode 0600, with a
   warning naming the production options. It is read even when a keyring is usable, so a key made
   on an earlier headless start is never shadowed by a new one.

A key is generated only when the caller says the database holds no ciphertext yet: in the keyring
if one is usable, else in the key file. With ciphertext present and no key found, loading fails.
A rotation stages its new key beside the primary and promotes it after the commit
(:mod:`bot.keys.slots`).
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import platformdirs
from keyring.backend import KeyringBackend

from bot.crypto import Cipher, DecryptionError, InvalidMasterKey, MasterKey, Sealed
from bot.keys import MalformedMasterKey, MasterKeyError, MasterKeyMissing, WrongMasterKey
from bot.keys.stores import (
    KEYRING_SERVICE,
    create_primary_entry,
    keyring_location,
    link_key_file,
    read_key_file,
    read_primary_entry,
    usable_keyring,
)
from bot.redaction import Secret

__all__ = [
    "ENV_VAR",
    "FILE_ENV_VAR",
    "KeySource",
    "LoadedKey",
    "MasterKeySettings",
    "create_key_file",
    "default_key_file_path",
    "keyring_key",
    "load_master_key",
    "verify_key_opens",
]

logger = logging.getLogger(__name__)

ENV_VAR = "CONNECTIONS_MASTER_KEY"
FILE_ENV_VAR = "CONNECTIONS_MASTER_KEY_FILE"


class MasterKeySettings(Protocol):
    """The two settings that say where the master key is (``Settings`` and ``KeySettings`` both fit)."""

    @property
    def master_key(self) -> Secret | None: ...

    @property
    def master_key_file(self) -> Path | None: ...


class KeySource(enum.Enum):
    ENV = "env"
    KEYRING = "keyring"
    KEY_FILE = "key_file"


@dataclass(frozen=True)
class LoadedKey:
    """The master key and where it came from.

    ``location`` says where in words ("CONNECTIONS_MASTER_KEY", a keyring backend, a file path) for
    start-up logs and :func:`verify_key_opens`; ``warning`` is set when production should do better.
    ``backend`` is the keyring backend that holds a keyring key (where its "next" slot lives).
    ``from_next_slot`` marks the key of a committed rotation read from its staged slot because it
    is not (yet) the primary: ``CONNECTIONS_MASTER_KEY`` still holds the old key, or the promotion
    failed. Another rotation must not start then: the operator finishes this one first.
    """

    key: MasterKey
    source: KeySource
    created: bool
    location: str
    warning: str | None = None
    path: Path | None = None
    backend: KeyringBackend | None = field(default=None, repr=False, compare=False)
    from_next_slot: bool = False


def default_key_file_path(given: Path | None = None) -> Path:
    """``master.key`` in the user's config directory, e.g. ``~/.config/connections-bot/master.key``;
    ``given`` instead when a caller (a test) names one."""
    return given if given is not None else platformdirs.user_config_path("connections-bot") / "master.key"


def load_master_key(
    settings: MasterKeySettings,
    *,
    has_ciphertext: bool,
    keyring_backend: KeyringBackend | None = None,
    default_key_file: Path | None = None,
) -> LoadedKey:
    """Find the master key, creating one only if ``has_ciphertext`` is False.

    Raises a :class:`MasterKeyError` subclass with a message fit to print when the bot cannot start.
    Pass ``keyring_backend`` and ``default_key_file`` in tests so the real keyring and config
    directory are never touched.
    """
    if settings.master_key is not None:
        try:
            key = MasterKey.from_base64(settings.master_key)
        except InvalidMasterKey as exc:
            raise MalformedMasterKey(f"{ENV_VAR} is malformed: {exc}") from None
        return LoadedKey(key=key, source=KeySource.ENV, created=False, location=ENV_VAR)

    looked = [f"{ENV_VAR} (not set)"]
    ring: list[KeyringBackend] = []
    if settings.master_key_file is not None:
        # An operator who names a file wants that file, even on a machine with a keyring.
        path, location = settings.master_key_file, f"{FILE_ENV_VAR}={settings.master_key_file}"
        looked.append(f"{location} (no such file)")
    else:
        ring = usable_keyring(keyring_backend)
        found = read_primary_entry(ring)
        if found is not None:
            return keyring_key(*found)
        if ring:
            looked.append(f"{keyring_location(ring)} (no entry)")
        else:
            looked.append(f"system keyring service {KEYRING_SERVICE!r} (no usable backend)")
        path = default_key_file_path(default_key_file)
        location = str(path)
        looked.append(f"key file {path} (no such file)")

    loaded = _from_key_file(path, location)
    if loaded is not None:
        return loaded
    if has_ciphertext:
        raise MasterKeyMissing(
            "the database holds encrypted credentials but no master key was found (looked in: "
            + "; ".join(looked)
            + "); restore the master key that sealed them: the bot will not create a new key over "
            "existing data"
        )
    created = create_primary_entry(ring) if ring else None
    if created is not None:
        return keyring_key(*created, created=True)
    return create_key_file(path, location)


def verify_key_opens(cipher: Cipher, sealed: Sealed, aad: bytes, *, where: str = "the configuration") -> None:
    """Raise :class:`WrongMasterKey` unless ``cipher`` opens one stored row (``sealed`` with ``aad``).

    ``where`` names the key's source (``LoadedKey.location``) in the message.
    """
    if sealed.key_id not in cipher.key_ids:
        raise WrongMasterKey(
            f"the master key from {where} does not open the stored credentials: they were sealed with "
            f"master key {sealed.key_id}, but the loaded key is {cipher.key_id}; restore the key that "
            "sealed them (the bot will not start with a different key)"
        )
    try:
        cipher.open(sealed, aad)
    except DecryptionError:
        raise WrongMasterKey(
            f"the master key from {where} does not open the stored credentials: the key id "
            f"{sealed.key_id} matches but decryption failed, so the stored row is damaged or altered"
        ) from None


def create_key_file(path: Path, location: str) -> LoadedKey:
    """Write a new key to ``path`` (0600, directory 0700), without ever replacing an existing file:
    if another start made one first, that one is the key."""
    key = MasterKey.generate()
    if not link_key_file(path, key):
        winner = _from_key_file(path, location)
        if winner is None:  # pragma: no cover - removed again between link() and open()
            raise MasterKeyError(f"the master key file {path} appeared and vanished; start again")
        return winner
    logger.info("created a new master key %s in %s", key.key_id, path)
    return _file_key(key, path, str(path), created=True)


def keyring_key(key: MasterKey, backend: KeyringBackend, *, created: bool = False) -> LoadedKey:
    """``key`` as the primary key of the keyring ``backend``."""
    location = keyring_location([backend])
    return LoadedKey(key=key, source=KeySource.KEYRING, created=created, location=location, backend=backend)


def _from_key_file(path: Path, location: str) -> LoadedKey | None:
    key = read_key_file(path)
    return None if key is None else _file_key(key, path, location, created=False)


def _file_key(key: MasterKey, path: Path, location: str, *, created: bool) -> LoadedKey:
    warning = (
        f"the master key is kept in the file {path}, protected only by file permissions; "
        f"for production set {ENV_VAR} from a secret manager, or install an encrypted keyring backend "
        "such as keyrings.cryptfile"
    )
    return LoadedKey(
        key=key, source=KeySource.KEY_FILE, created=created, location=location, warning=warning, path=path
    )
