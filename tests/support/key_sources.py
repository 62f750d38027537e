"""The three places a master key can come from, set up in a temporary directory, for the rotation
tests: ``CONNECTIONS_MASTER_KEY``, the key file in the config directory, and a keyring (the shared
file keyring, so that a ``connections-bot`` subprocess sees the same entries as the test)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bot.crypto import MasterKey
from bot.keys.rotation import GivenKey
from bot.keys.slots import KEYRING_NEXT_USERNAME, STAGED_SUFFIX, staged_file_path
from bot.keys.sources import KEYRING_SERVICE, KEYRING_USERNAME
from bot.settings import KeySettings
from tests.support.file_keyring import SharedFileKeyring, keyring_env

__all__ = ["NEXT_VAR", "SOURCES", "KeySetup", "key_setup"]

SOURCES = ("env", "key_file", "keyring")
NEXT_VAR = "CONNECTIONS_MASTER_KEY_NEXT"
"""Where an operator exposes the new key of an env rotation, from their secret manager."""


@dataclass
class KeySetup:
    """One key source holding ``old``. ``home`` is the HOME of the test (and of any subprocess).
    ``next``: the new key an operator keeps ready for an env key's rotation (in :data:`NEXT_VAR`)."""

    source: str
    old: MasterKey
    home: Path
    ring: SharedFileKeyring
    next: MasterKey = field(default_factory=MasterKey.generate)

    @property
    def key_file(self) -> Path:
        """The key file in the config directory (``XDG_CONFIG_HOME`` is ``home/config``)."""
        return self.home / "config" / "connections-bot" / "master.key"

    def staged_file(self, key_id: str) -> Path:
        """Where a key file's, or an env key's, rotation stages the key ``key_id`` by default."""
        return staged_file_path(self.key_file, key_id)

    def settings(self, env_key: MasterKey | None = None, previous: MasterKey | None = None) -> KeySettings:
        """The settings an in-process start would read (``env_key`` replaces an env source's key;
        ``previous``: ``CONNECTIONS_MASTER_KEY_PREVIOUS``)."""
        before = previous.to_base64() if previous is not None else None
        if self.source != "env":
            return KeySettings(master_key_previous=before)
        return KeySettings(master_key=(env_key or self.old).to_base64(), master_key_previous=before)

    def given(self) -> GivenKey | None:
        """What ``--new-key-from-env`` gives an env rotation: :attr:`next`."""
        return GivenKey(self.next, NEXT_VAR) if self.source == "env" else None

    def rotate_args(self) -> list[str]:
        """The ``rotate-master-key`` options an operator passes for this source."""
        return ["--new-key-from-env", NEXT_VAR] if self.source == "env" else []

    def env(self, env_key: MasterKey | None = None, previous: MasterKey | None = None) -> dict[str, str]:
        """The variables a subprocess needs for this source (add them to ``clean_env``)."""
        before = {"CONNECTIONS_MASTER_KEY_PREVIOUS": previous.to_base64().reveal()} if previous else {}
        if self.source == "env":
            return {
                "CONNECTIONS_MASTER_KEY": (env_key or self.old).to_base64().reveal(),
                NEXT_VAR: self.next.to_base64().reveal(),
                **before,
            }
        if self.source == "keyring":
            return {**keyring_env(self.ring.path), **before}
        return before

    def keyring_backend(self) -> SharedFileKeyring | None:
        """The backend for an in-process load: None (the test's fail keyring) unless a keyring."""
        return self.ring if self.source == "keyring" else None

    def primary(self, env_key: MasterKey | None = None) -> MasterKey | None:
        """The key in the primary slot now."""
        if self.source == "env":
            return env_key or self.old
        if self.source == "keyring":
            return _entry(self.ring, KEYRING_USERNAME)
        return _read(self.key_file)

    def staged_keys(self) -> list[MasterKey]:
        """Every key in a staged slot now."""
        if self.source == "keyring":
            prefix = f"{KEYRING_SERVICE}\x00{KEYRING_NEXT_USERNAME}."
            return [
                MasterKey.from_base64(v)
                for k, v in sorted(self.ring.entries().items())
                if k.startswith(prefix)
            ]
        pattern = f"{self.key_file.name}.*{STAGED_SUFFIX}"
        return [MasterKey.from_base64(p.read_text()) for p in sorted(self.key_file.parent.glob(pattern))]

    def staged(self) -> MasterKey | None:
        """The one key in a staged slot now, if any."""
        keys = self.staged_keys()
        assert len(keys) <= 1, f"{len(keys)} staged keys"
        return keys[0] if keys else None


def key_setup(source: str, home: Path) -> KeySetup:
    """``source`` holding a fresh key under ``home``."""
    setup = KeySetup(
        source=source, old=MasterKey.generate(), home=home, ring=SharedFileKeyring(home / "keyring.json")
    )
    encoded = setup.old.to_base64().reveal()
    if source == "keyring":
        setup.ring.set_password(KEYRING_SERVICE, KEYRING_USERNAME, encoded)
    elif source == "key_file":
        setup.key_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        setup.key_file.write_text(encoded + "\n")
        setup.key_file.chmod(0o600)
    return setup


def _entry(ring: SharedFileKeyring, username: str) -> MasterKey | None:
    value = ring.get_password(KEYRING_SERVICE, username)
    return None if value is None else MasterKey.from_base64(value)


def _read(path: Path) -> MasterKey | None:
    return MasterKey.from_base64(path.read_text()) if path.exists() else None
