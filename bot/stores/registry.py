"""The secret stores this bot can deliver credentials to, by ``CONNECTIONS_SECRET_STORE``.

The one place outside a store's own module that names stores. Each store module reads its own
settings from the environment (as providers do) through ``from_environment``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from bot.settings import ConfigError, Settings
from bot.stores.aws import AwsSecretsManager
from bot.stores.base import SecretStore
from bot.stores.vault import VaultKV2

__all__ = ["STORES", "build_store"]

StoreFactory = Callable[[Mapping[str, str]], SecretStore]

STORES: dict[str, StoreFactory] = {
    AwsSecretsManager.key: AwsSecretsManager.from_environment,
    VaultKV2.key: VaultKV2.from_environment,
}
"""Each store's key and how it is built from the environment (raises ``ConfigError``)."""


def build_store(settings: Settings) -> SecretStore | None:
    """The configured store, or None for ``local`` (sealed rows in the bot's own database)."""
    if settings.secret_store == "local":
        return None
    factory = STORES.get(settings.secret_store)
    if factory is None:
        raise ConfigError(f"CONNECTIONS_SECRET_STORE={settings.secret_store} is not available in this build")
    return factory(settings.environment)
