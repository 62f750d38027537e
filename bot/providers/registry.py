"""The providers this bot offers, in the order their cards appear.

The registry is the one place outside a provider's own module that names providers: it builds
each from the settings it needs.
"""

from __future__ import annotations

from collections.abc import Iterator

from bot.providers.base import Provider
from bot.providers.confluent_cloud import ConfluentCloud
from bot.providers.redshift import Redshift
from bot.providers.snowflake import Snowflake
from bot.settings import Settings

__all__ = ["PROVIDERS", "ProviderRegistry", "UnknownProvider", "build_registry"]


class UnknownProvider(LookupError):
    """A provider key that no plug-in declares (a stale button, or tampering)."""


class ProviderRegistry:
    def __init__(self, providers: tuple[Provider, ...]) -> None:
        keys = [p.key for p in providers]
        if len(set(keys)) != len(keys):
            raise ValueError(f"duplicate provider keys: {keys}")
        self._providers = providers

    def __iter__(self) -> Iterator[Provider]:
        return iter(self._providers)

    def __len__(self) -> int:
        return len(self._providers)

    def find(self, key: str) -> Provider | None:
        """The provider registered under ``key``, or None (a connection of a removed provider)."""
        return next((provider for provider in self._providers if provider.key == key), None)

    def forget(self, key: str, hint: str | None) -> None:
        """Tell the provider under ``key`` that the credential ``hint`` identifies was destroyed."""
        if (provider := self.find(key)) is not None:
            provider.forget(hint)

    def by_key(self) -> dict[str, Provider]:
        return {provider.key: provider for provider in self}

    def get(self, key: str) -> Provider:
        if (provider := self.find(key)) is None:
            raise UnknownProvider(key)
        return provider


PROVIDERS: tuple[type[Provider], ...] = (ConfluentCloud, Snowflake, Redshift)


def build_registry(settings: Settings) -> ProviderRegistry:
    """Each provider built from its own settings in the environment; raises ``ConfigError``
    (naming the variable) for a malformed one."""
    return ProviderRegistry(tuple(provider.from_environment(settings.environment) for provider in PROVIDERS))
