"""A keyring backend that a test and a ``connections-bot`` subprocess share through one JSON file.

Select it in the subprocess with ``PYTHON_KEYRING_BACKEND=tests.support.file_keyring.SharedFileKeyring``
and point ``CONNECTIONS_TEST_KEYRING_FILE`` at the file (see :func:`keyring_env`); in the test, build
``SharedFileKeyring(path)`` on the same file.

It stands in for an operating-system keyring. Like the in-memory keyrings of the unit tests it does
not protect what it holds (the file is only 0600), so the bot would refuse it: it is accepted only
because this module, when imported (by a test, or by keyring in a subprocess that selected it),
passes it to :func:`bot.keys.sources.trust_test_backend`. No setting can do that, and the module
lives under ``tests/``, which no installed package ships.

Every write replaces the file atomically, so a process killed mid-write leaves the old entries or
the new ones, as a real keyring daemon would.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from jaraco.classes import properties
from keyring.backend import KeyringBackend
from keyring.errors import PasswordDeleteError

from bot.keys.sources import trust_test_backend

__all__ = ["FILE_ENV_VAR", "SharedFileKeyring", "keyring_env"]

FILE_ENV_VAR = "CONNECTIONS_TEST_KEYRING_FILE"


def keyring_env(path: Path) -> dict[str, str]:
    """The variables that make a subprocess use :class:`SharedFileKeyring` on ``path``."""
    return {
        "PYTHON_KEYRING_BACKEND": f"{__name__}.{SharedFileKeyring.__name__}",
        FILE_ENV_VAR: str(path),
    }


@trust_test_backend
class SharedFileKeyring(KeyringBackend):
    """Entries as ``{"service\\x00username": password}`` in one JSON file."""

    @properties.classproperty
    def priority(cls) -> float:
        # Viable only where a test selected it: keyring's auto-detection instantiates every viable
        # subclass it has seen imported, and would otherwise pick this one without a file.
        if FILE_ENV_VAR not in os.environ:
            raise RuntimeError(f"{FILE_ENV_VAR} is not set")
        return 1

    def __init__(self, path: Path | None = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.path = path if path is not None else Path(os.environ[FILE_ENV_VAR])

    def entries(self) -> dict[str, str]:
        try:
            return dict(json.loads(self.path.read_text()))
        except FileNotFoundError:
            return {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.entries().get(_name(service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        entries = self.entries()
        entries[_name(service, username)] = password
        self._write(entries)

    def delete_password(self, service: str, username: str) -> None:
        entries = self.entries()
        if entries.pop(_name(service, username), None) is None:
            raise PasswordDeleteError("no such entry")
        self._write(entries)

    def _write(self, entries: dict[str, str]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(entries, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)


def _name(service: str, username: str) -> str:
    return f"{service}\x00{username}"
