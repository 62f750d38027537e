"""The master key: where it comes from, its staged slots during a rotation, the start-up guard that
binds the database to it, and ``connections-bot rotate-master-key``. Sealing itself is
:mod:`bot.crypto`.

Modules, from the bottom up: ``errors``; ``key_files`` and ``keyrings`` (the two stores);
``sources`` (the lookup order, and the :class:`LoadedKey` it yields); ``slots`` (staged keys, the
rotation lock) and ``promotion``; ``canary`` and ``guard`` (binding the database to a key);
``reseal`` and ``rotation`` (the command). A module uses only public names of the others.

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

from bot.keys.canary import key_opens_database
from bot.keys.errors import (
    InsecureKeyFile,
    MalformedMasterKey,
    MasterKeyError,
    MasterKeyMissing,
    NothingToRotate,
    PromotionFailed,
    RotationBusy,
    RotationRefused,
    WrongMasterKey,
)
from bot.keys.guard import guard_master_key
from bot.keys.rotation import FAILPOINTS, RotationOutcome, crash_at, rotate_master_key
from bot.keys.sources import (
    ENV_VAR,
    FILE_ENV_VAR,
    KeySource,
    LoadedKey,
    MasterKeySettings,
    default_key_file_path,
    load_master_key,
    verify_key_opens,
)

__all__ = [
    "ENV_VAR",
    "FAILPOINTS",
    "FILE_ENV_VAR",
    "InsecureKeyFile",
    "KeySource",
    "LoadedKey",
    "MalformedMasterKey",
    "MasterKeyError",
    "MasterKeyMissing",
    "MasterKeySettings",
    "NothingToRotate",
    "PromotionFailed",
    "RotationBusy",
    "RotationOutcome",
    "RotationRefused",
    "WrongMasterKey",
    "crash_at",
    "default_key_file_path",
    "guard_master_key",
    "key_opens_database",
    "load_master_key",
    "rotate_master_key",
    "verify_key_opens",
]
