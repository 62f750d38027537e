"""The secret-store plug-in contract: where an approved credential lives.

A store keeps one secret per connection at a path (see :mod:`bot.stores.paths`), as a JSON object
of the provider's fields, in versions. The bot writes a version when an admin approves a connection
or a rotation, reads the current version to re-test it, and deletes the secret when the connection
is removed. Pipelines read the same secret with their own identities.

To add a store: subclass :class:`SecretStore` in a module of this package, list it in
:mod:`bot.stores.registry`, and subclass the contract suite in ``tests/unit/stores/contract.py``.

Every method is a coroutine that never blocks the event loop (a synchronous client runs in the
store's own threads) and raises only :class:`StoreError`, whose message is safe to show an admin:
it names the path and the store's error code, never a value that was sent.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field

from bot.redaction import Secret

__all__ = [
    "SecretStore",
    "StoreCheck",
    "StoreError",
    "StoreFailure",
    "StoredSecret",
    "Written",
    "store_title",
]


class StoreFailure(enum.StrEnum):
    """Why a store call failed, as the services act on it."""

    DENIED = "denied"
    """The store's policy refuses the bot (AWS AccessDenied, Vault 403): an operator must fix it."""
    NOT_FOUND = "not_found"
    """No secret (or no current version) at the path, or it is scheduled for deletion."""
    CONFLICT = "conflict"
    """The current version is not the one expected: someone else changed the secret meanwhile, or
    the path holds a secret the bot did not write for this connection."""
    UNREACHABLE = "unreachable"
    """The store did not answer (network, timeout, TLS, Vault sealed): trying again may work."""
    REFUSED = "refused"
    """Any other refusal (throttling, an invalid request, a KMS key the store cannot use)."""


class StoreError(Exception):
    """A store call that failed. ``str()`` is one line for an admin or a log: the path, the store's
    own error code and what it means, never a secret (stores build it from codes, not bodies)."""

    def __init__(self, failure: StoreFailure, message: str, *, code: str = "") -> None:
        super().__init__(message)
        self.failure = failure
        self.code = code
        """The store's own name for the error (``AccessDeniedException``, ``403``), for logs."""


@dataclass(frozen=True)
class Written:
    """A version the bot wrote: the store's id for it (AWS VersionId, Vault's version number)."""

    version: str


@dataclass(frozen=True)
class StoredSecret:
    """The current version of a secret: its fields, every value wrapped as a :class:`Secret`
    (whoever unwraps one drops it after use), and the store's id for the version."""

    version: str
    fields: Mapping[str, Secret] = field(repr=False)


@dataclass(frozen=True)
class StoreCheck:
    """What ``/healthz`` reports about the store: it answers, and it accepts the bot's identity.
    ``detail`` says why not, in one safe line."""

    reachable: bool
    authenticated: bool
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.reachable and self.authenticated


_TITLES: dict[str, str] = {}
"""Each store class's title by its key, as the classes declare them (see ``__init_subclass__``)."""


def store_title(key: str) -> str:
    """How a person names the store ``key`` ("AWS Secrets Manager"): its class's title, or the key
    itself for a store this process does not know (a connection written by a newer build)."""
    return _TITLES.get(key, key)


class SecretStore(ABC):
    """One secret store. Instances are shared by every task of the process."""

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        # A store declares its key and title as class attributes, so messages about a connection
        # can name the store that holds it without building one.
        key, title = cls.__dict__.get("key"), cls.__dict__.get("title")
        if isinstance(key, str) and isinstance(title, str):
            _TITLES[key] = title

    key: str
    """As ``CONNECTIONS_SECRET_STORE`` names it: ``aws``, ``vault``."""
    title: str
    """As a person names it: "AWS Secrets Manager"."""

    @abstractmethod
    async def write(
        self,
        path: str,
        fields: Mapping[str, str | Secret],
        *,
        token: str,
        replaces: str | None,
        metadata: Mapping[str, str],
    ) -> Written:
        """Write ``fields`` as the new current version of the secret at ``path``.

        ``replaces`` is the version the bot last wrote there (None: the bot never wrote there, so
        the path must be free, or hold only what this same call wrote before). If the current
        version is another one, nothing is written and :attr:`StoreFailure.CONFLICT` is raised.

        ``token`` names this write (32–64 characters from ``[A-Za-z0-9-]``): calling again with the
        same token and the same fields, after a crash or a lost answer, returns the version the
        first call made instead of making a second one.

        ``metadata`` (non-secret: provider, connection id, owner, approver, time) becomes the
        store's tags or custom metadata."""

    @abstractmethod
    async def read(self, path: str) -> StoredSecret:
        """The current version of the secret at ``path`` (:attr:`StoreFailure.NOT_FOUND` if none)."""

    @abstractmethod
    async def delete(self, path: str) -> None:
        """Delete the secret at ``path`` with every version (as the store's settings say: AWS keeps
        it recoverable for a window). Deleting a path that holds nothing is not an error."""

    @abstractmethod
    async def check(self) -> StoreCheck:
        """Whether the store answers and accepts the bot's identity, without reading a secret."""

    def where(self, path: str) -> str:
        """The secret's location as a person references it (shown in Slack and the audit log)."""
        return f"{self.title} `{path}`"

    async def close(self) -> None:  # noqa: B027 - a store with nothing to release keeps the default
        """Release connections and threads at shutdown."""
