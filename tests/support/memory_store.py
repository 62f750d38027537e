"""A secret store in memory, as strict as design says a store is, for the services' tests.

It keeps each path's versions, honours write tokens (the same token and fields again return the
version they made) and check-and-set (``replaces``), records every call the bot makes (never a
value), and can be told to refuse the bot (DENIED), to be down (UNREACHABLE), or to have a new
version written by someone else (:meth:`MemoryStore.write_outside`), as a person with the AWS or
Vault CLI would. ``tests/unit/stores/test_memory.py`` holds it to the contract every store passes.

It is keyed ``memory`` and registered nowhere in the bot: tests hand it to the services.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from bot.redaction import Secret
from bot.stores.base import SecretStore, StoreCheck, StoredSecret, StoreError, StoreFailure, Written

__all__ = ["OPERATIONS", "Call", "MemoryStore", "StoredVersion"]

OPERATIONS = ("write", "read", "delete", "check")
_TOKEN = re.compile(r"[A-Za-z0-9-]{32,64}")
_DENIED_CODE = "AccessDenied"
_DOWN_CODE = "ConnectTimeout"


@dataclass(frozen=True)
class Call:
    """One call the bot made: what and where, never a value."""

    operation: str
    path: str = ""
    token: str | None = None
    replaces: str | None = None


@dataclass(frozen=True)
class StoredVersion:
    """One version of a secret: its fields (secret values wrapped), who wrote it and how."""

    version: str
    fields: dict[str, Secret] = field(repr=False)
    token: str | None
    """The write token the bot gave; None for a version written outside the bot."""
    metadata: dict[str, str]

    def plain(self) -> dict[str, str]:
        return {name: value.reveal() for name, value in self.fields.items()}


@dataclass
class _Secret:
    versions: list[StoredVersion] = field(default_factory=list)
    deleted: bool = False

    @property
    def current(self) -> StoredVersion | None:
        return None if self.deleted or not self.versions else self.versions[-1]


class MemoryStore(SecretStore):
    """See the module docstring. ``after_write``, when set, runs once a write is stored and
    before it returns (to make something happen between the write and the decision)."""

    key = "memory"
    title = "Memory Store"

    def __init__(self) -> None:
        self._secrets: dict[str, _Secret] = {}
        self._numbers = itertools.count(1)
        self._failing: dict[str, tuple[StoreFailure, str]] = {}
        self.calls: list[Call] = []
        self.after_write: Callable[[], Awaitable[None]] | None = None
        self.read_delay = 0.0
        """Seconds a read takes (so that reads overlap, for tests of how many run at once)."""
        self.reads_in_flight = 0
        self.most_reads_in_flight = 0
        self.closed = False

    def __repr__(self) -> str:
        return f"MemoryStore({len(self._secrets)} paths)"

    # --- what a test arranges ---------------------------------------------------------------

    def deny(self, *operations: str) -> None:
        """The store's policy refuses the bot for ``operations`` (every one when none are given)."""
        self._fail(operations, StoreFailure.DENIED, _DENIED_CODE)

    def take_down(self, *operations: str) -> None:
        """The store stops answering ``operations`` (every one when none are given)."""
        self._fail(operations, StoreFailure.UNREACHABLE, _DOWN_CODE)

    def restore(self) -> None:
        """Answer every call again."""
        self._failing.clear()

    def _fail(self, operations: tuple[str, ...], failure: StoreFailure, code: str) -> None:
        for operation in operations or OPERATIONS:
            if operation not in OPERATIONS:
                raise ValueError(f"no such operation: {operation}")
            self._failing[operation] = (failure, code)

    def write_outside(self, path: str, fields: Mapping[str, str]) -> str:
        """A new current version written by someone else (the AWS or Vault CLI): no token, no
        check-and-set. Returns its version."""
        entry = self._secrets.setdefault(path, _Secret())
        if entry.deleted:
            entry.versions, entry.deleted = [], False
        return self._append(entry, {k: Secret(v) for k, v in fields.items()}, None, {})

    def delete_outside(self, path: str) -> None:
        """The secret deleted by someone else."""
        if path in self._secrets:
            self._secrets[path].deleted = True

    # --- what a test reads ------------------------------------------------------------------

    def current(self, path: str) -> StoredVersion | None:
        """The current version at ``path`` (None when there is none), without recording a call."""
        entry = self._secrets.get(path)
        return None if entry is None else entry.current

    def versions(self, path: str) -> list[StoredVersion]:
        """Every version at ``path`` since it was last created, oldest first."""
        entry = self._secrets.get(path)
        return [] if entry is None or entry.deleted else list(entry.versions)

    def paths(self) -> list[str]:
        """The paths that hold a secret now."""
        return sorted(path for path, entry in self._secrets.items() if entry.current is not None)

    def made(self, operation: str) -> list[Call]:
        return [call for call in self.calls if call.operation == operation]

    # --- the store --------------------------------------------------------------------------

    async def write(
        self,
        path: str,
        fields: Mapping[str, str | Secret],
        *,
        token: str,
        replaces: str | None,
        metadata: Mapping[str, str],
    ) -> Written:
        await self._enter(Call("write", path, token, replaces), f"the bot may not write `{path}`")
        if not _TOKEN.fullmatch(token):
            raise StoreError(
                StoreFailure.REFUSED, f"the write to `{path}` was refused: invalid token", code="InvalidToken"
            )
        values = {
            name: value if isinstance(value, Secret) else Secret(value) for name, value in fields.items()
        }
        entry = self._secrets.setdefault(path, _Secret())
        current = entry.current
        if current is not None and current.token == token:
            if current.fields != values:
                raise StoreError(
                    StoreFailure.CONFLICT,
                    f"`{path}` holds other values under the same write token",
                    code="ResourceExists",
                )
            return Written(current.version)  # a retry of a write that was made
        if replaces is None and current is not None:
            raise StoreError(
                StoreFailure.CONFLICT,
                f"`{path}` holds a secret the bot did not write for this connection",
                code="ResourceExists",
            )
        if replaces is not None and (current is None or current.version != replaces):
            raise StoreError(
                StoreFailure.CONFLICT,
                f"`{path}` was changed outside the bot: its current version is not {replaces}",
                code="CheckAndSetMismatch",
            )
        if entry.deleted:  # a deleted path is used again from scratch
            entry.versions, entry.deleted = [], False
        version = self._append(entry, values, token, dict(metadata))
        if self.after_write is not None:
            await self.after_write()
        return Written(version)

    async def read(self, path: str) -> StoredSecret:
        self.reads_in_flight += 1
        self.most_reads_in_flight = max(self.most_reads_in_flight, self.reads_in_flight)
        try:
            await self._enter(Call("read", path), f"the bot may not read `{path}`")
            if self.read_delay:
                await asyncio.sleep(self.read_delay)
        finally:
            self.reads_in_flight -= 1
        current = self.current(path)
        if current is None:
            raise StoreError(StoreFailure.NOT_FOUND, f"there is no secret at `{path}`", code="NotFound")
        # A copy of each value: whoever reads one drops it after use, as with a real store.
        return StoredSecret(current.version, {k: Secret(v.reveal()) for k, v in current.fields.items()})

    async def delete(self, path: str) -> None:
        await self._enter(Call("delete", path), f"the bot may not delete `{path}`")
        if path in self._secrets:
            self._secrets[path].deleted = True

    async def check(self) -> StoreCheck:
        self.calls.append(Call("check"))
        await asyncio.sleep(0)
        failing = self._failing.get("check")
        if failing is None:
            return StoreCheck(reachable=True, authenticated=True)
        if failing[0] is StoreFailure.UNREACHABLE:
            return StoreCheck(reachable=False, authenticated=False, detail=f"no answer ({failing[1]})")
        return StoreCheck(reachable=True, authenticated=False, detail=f"the bot is refused ({failing[1]})")

    async def close(self) -> None:
        self.closed = True

    # --- inside -----------------------------------------------------------------------------

    async def _enter(self, call: Call, refused: str) -> None:
        """Record the call, let others run (a real store answers later), and fail as arranged."""
        self.calls.append(call)
        await asyncio.sleep(0)
        failing = self._failing.get(call.operation)
        if failing is None:
            return
        failure, code = failing
        if failure is StoreFailure.UNREACHABLE:
            raise StoreError(failure, f"the secret store did not answer for `{call.path}`: {code}", code=code)
        raise StoreError(failure, f"{refused}: {code}", code=code)

    def _append(
        self, entry: _Secret, values: dict[str, Secret], token: str | None, metadata: dict[str, str]
    ) -> str:
        version = f"v{next(self._numbers)}"
        entry.versions.append(StoredVersion(version, values, token, metadata))
        return version
