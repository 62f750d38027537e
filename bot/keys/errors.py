"""The errors of the master key, and how an exception from elsewhere is named in their messages."""

from __future__ import annotations

from bot.crypto import CryptoError

__all__ = [
    "InsecureKeyFile",
    "MalformedMasterKey",
    "MasterKeyError",
    "MasterKeyMissing",
    "NothingToRotate",
    "PromotionFailed",
    "RotationBusy",
    "RotationRefused",
    "WrongMasterKey",
    "reason",
]


class MasterKeyError(CryptoError):
    """The master key cannot be loaded or does not fit the stored data."""


class MalformedMasterKey(MasterKeyError):
    """A configured key is not base64 of exactly 32 bytes."""


class InsecureKeyFile(MasterKeyError):
    """The key file could be read or changed by someone other than its owner."""


class MasterKeyMissing(MasterKeyError):
    """The database holds ciphertext but no master key was found."""


class WrongMasterKey(MasterKeyError):
    """The loaded master key does not open the stored credentials."""


class RotationBusy(MasterKeyError):
    """Another rotation holds the lock of this key's slot."""


class RotationRefused(MasterKeyError):
    """The rotation did not start, or was rolled back: nothing changed."""


class NothingToRotate(RotationRefused):
    """The database holds no sealed row yet."""


class PromotionFailed(MasterKeyError):
    """The data moved to the new key, which stays staged; the next start finishes the promotion."""


def reason(exc: BaseException) -> str:
    """``exc`` in a few words for a message: a keyring backend's or the file system's."""
    # Only the type and the first line: backend messages are diagnostics, not a place for values.
    first_line = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{type(exc).__name__}: {first_line}" if first_line else type(exc).__name__
