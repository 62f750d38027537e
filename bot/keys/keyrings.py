"""The system keyring: which backends may hold the master key (none that discards values or keeps
them in plain text), and reading and writing its entries."""

from __future__ import annotations

import contextlib
import logging

import keyring
import keyring.backends.fail
import keyring.backends.null
from keyring.backend import KeyringBackend

from bot.crypto import InvalidMasterKey, MasterKey
from bot.keys.errors import MalformedMasterKey, MasterKeyError, reason

__all__ = [
    "KEYRING_SERVICE",
    "KEYRING_USERNAME",
    "UsableKeyring",
    "keyring_location",
    "read_entry",
    "store_entry",
    "usable_keyring",
]

logger = logging.getLogger(__name__)

KEYRING_SERVICE = "connections-bot"
KEYRING_USERNAME = "master-key"


class UsableKeyring:
    """The accepted backends of a keyring (one, or a chainer's accepted members) as one store."""

    def __init__(self, backends: list[KeyringBackend]) -> None:
        self._backends = backends

    @property
    def usable(self) -> bool:
        return bool(self._backends)

    @property
    def members(self) -> list[KeyringBackend]:
        return list(self._backends)

    @property
    def location(self) -> str:
        return keyring_location(self._backends)

    def read(self) -> tuple[MasterKey, KeyringBackend] | None:
        """The stored key and its backend, if one has it; backends that fail to answer are dropped."""
        answering = []
        for backend in self._backends:
            try:
                value = backend.get_password(KEYRING_SERVICE, KEYRING_USERNAME)
            except Exception as exc:
                logger.info("not using keyring backend %s: %s", _class_name(backend), reason(exc))
                continue
            if value is not None:
                advice = "; fix or delete that entry"
                return _parse(value, keyring_location([backend]), advice), backend
            answering.append(backend)
        self._backends = answering
        return None

    def create(self) -> tuple[MasterKey, KeyringBackend] | None:
        """A new key stored in the first backend that keeps it, and that backend; None if none does."""
        key = MasterKey.generate()
        for backend in self._backends:
            try:
                kept = store_entry(backend, KEYRING_USERNAME, key)
            except Exception as exc:
                logger.info(
                    "keyring backend %s cannot store the master key: %s", _class_name(backend), reason(exc)
                )
                continue
            # A backend that accepts a value and then loses it would strand every row sealed with it.
            if not kept:
                logger.info(
                    "keyring backend %s did not keep the master key; not using it", _class_name(backend)
                )
                with contextlib.suppress(Exception):
                    backend.delete_password(KEYRING_SERVICE, KEYRING_USERNAME)
                continue
            logger.info("created a new master key %s in the %s", key.key_id, keyring_location([backend]))
            return key, backend
        return None


def keyring_location(backends: list[KeyringBackend], username: str = KEYRING_USERNAME) -> str:
    """The entry ``username`` of these backends, in words."""
    names = ", ".join(_class_name(b) for b in backends)
    return f"system keyring service {KEYRING_SERVICE!r} user {username!r} ({names})"


def read_entry(backend: KeyringBackend, username: str) -> MasterKey | None:
    """The key in the entry ``username`` of ``backend``, or None if there is none.

    Raises :class:`MasterKeyError` if the backend does not answer or the entry is malformed."""
    location = keyring_location([backend], username)
    try:
        value = backend.get_password(KEYRING_SERVICE, username)
    except Exception as exc:
        raise MasterKeyError(f"cannot read the {location} entry: {reason(exc)}") from None
    return None if value is None else _parse(value, location)


def store_entry(backend: KeyringBackend, username: str, key: MasterKey) -> bool:
    """Write ``key`` to the entry ``username`` of ``backend`` and read it back: whether it was kept.
    The backend's own errors pass through."""
    encoded = key.to_base64()
    backend.set_password(KEYRING_SERVICE, username, encoded.reveal())
    kept: str | None = backend.get_password(KEYRING_SERVICE, username)
    return kept == encoded.reveal()


def usable_keyring(given: KeyringBackend | None) -> UsableKeyring | None:
    """The keyring's accepted backends, or None (logged at INFO) when none protects stored values."""
    try:
        backend = given if given is not None else keyring.get_keyring()
    except Exception as exc:
        logger.info("no usable keyring: %s", reason(exc))
        return None
    members = getattr(backend, "backends", None) if _is_chainer(backend) else None
    candidates: list[KeyringBackend] = list(members) if members is not None else [backend]
    accepted = []
    for candidate in candidates:
        refusal = _refusal(candidate)
        if refusal is None:
            accepted.append(candidate)
        else:
            logger.info("not using keyring backend %s: %s", _class_name(candidate), refusal)
    if not accepted:
        logger.info("no usable keyring: no backend that protects stored values")
        return None
    return UsableKeyring(accepted)


def _parse(value: str, location: str, advice: str = "") -> MasterKey:
    try:
        return MasterKey.from_base64(value)
    except InvalidMasterKey as exc:
        raise MalformedMasterKey(f"the {location} entry is malformed: {exc}{advice}") from None


def _is_chainer(backend: KeyringBackend) -> bool:
    return any(cls.__name__ == "ChainerBackend" for cls in type(backend).__mro__)


def _refusal(backend: KeyringBackend) -> str | None:
    """Why ``backend`` must not hold the master key, or None if it may."""
    if isinstance(backend, keyring.backends.fail.Keyring):
        return "it is the fail backend (no keyring is installed)"
    if isinstance(backend, keyring.backends.null.Keyring):
        return "it is the null backend, which discards values"
    mro = type(backend).__mro__
    if any("plaintext" in cls.__name__.lower() for cls in mro):
        return "it stores values in plain text"
    module = type(backend).__module__
    if module.startswith(("keyrings.alt.file", "keyrings.alt.pyfs")) and not any(
        cls.__name__.startswith("Encrypted") for cls in mro
    ):
        return "it is an unencrypted keyrings.alt file backend"
    inner = getattr(backend, "_keyring", None)  # keyrings.alt.multi wraps another backend
    if isinstance(inner, KeyringBackend):
        return _refusal(inner)
    return None


def _class_name(backend: KeyringBackend) -> str:
    cls = type(backend)
    return f"{cls.__module__}.{cls.__qualname__}"
