"""The master key: where it comes from (:mod:`~bot.keys.sources`, over the key files and keyring
entries of :mod:`~bot.keys.stores`), its staged slots during a rotation (:mod:`~bot.keys.slots`),
the start-up guard that binds the database to it (:mod:`~bot.keys.guard`), and ``connections-bot
rotate-master-key`` (:mod:`~bot.keys.rotation`). Sealing itself is :mod:`bot.crypto`.

Exception hierarchy (all messages are one line and safe to print: paths and key ids, never keys)::

    CryptoError                    (bot.crypto)
    └── MasterKeyError             the master key cannot be loaded; the bot must not start
        ├── MalformedMasterKey     the env value, keyring entry or key file is not base64 of 32 bytes
        ├── InsecureKeyFile        the key file is readable/writable by others or owned by another user
        ├── MasterKeyMissing       ciphertext exists but no key was found anywhere
        ├── WrongMasterKey         the key found does not open the stored credentials
        ├── RotationBusy           another rotation holds the lock of this key's slot
        ├── RotationRefused        a rotation did not start, or was rolled back: nothing changed
        │   └── NothingToRotate    the database holds no sealed row yet
        └── PromotionFailed        the data moved to the new key, which stays in its staged slot;
                                   the next start finishes the promotion
"""

from bot.crypto import CryptoError


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
    """The data moved to the new key, which stays staged."""
