"""The master key: where it comes from (``sources``), its staged slots during a rotation (``slots``),
the start-up guard that binds the database to it (``guard``), and ``connections-bot
rotate-master-key`` (``rotation``). Sealing itself is :mod:`bot.crypto`.

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
        └── PromotionFailed        the data moved to the new key, which stays in its staged slot
"""

from bot.crypto import CryptoError


class MasterKeyError(CryptoError): ...


class MalformedMasterKey(MasterKeyError): ...


class InsecureKeyFile(MasterKeyError): ...


class MasterKeyMissing(MasterKeyError): ...


class WrongMasterKey(MasterKeyError): ...


class RotationBusy(MasterKeyError): ...


class RotationRefused(MasterKeyError): ...


class NothingToRotate(RotationRefused): ...


class PromotionFailed(MasterKeyError): ...
