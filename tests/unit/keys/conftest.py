"""Keep these tests away from the real keyring and the real config directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import keyring
import keyring.backends.fail
import pytest
from keyring.backend import KeyringBackend


def _fail_keyring() -> KeyringBackend:
    return keyring.backends.fail.Keyring()  # type: ignore[no-untyped-call]


@pytest.fixture(autouse=True)
def isolated_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """A throwaway HOME and XDG config dir, and a keyring that answers nothing, for every test.

    Tests pass their own backend and key file; this is the net under them if one forgets.
    """
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setattr(keyring, "get_keyring", _fail_keyring)
    yield home
