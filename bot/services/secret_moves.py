"""Moving every active connection's credential, in every workspace, to one secret store
(``connections-bot migrate-secrets --to aws|vault|local``).

For each active connection not in the target yet:

1. read the credential where it is: its sealed rows (``local``), opened bound to the connection's
   settings as a re-test opens them, or the current version in its store, which must be the
   version the bot wrote there (a version written outside the bot is not the bot's to move);
2. write it to the target: a store gets the provider's fields as one secret at the connection's
   path, with the write token of (connection, credential version), so a write repeated after a
   crash returns the version the first one made; ``local`` seals the fields in step 3;
3. one transaction, the connection locked: if it is still active, on the same credential version
   and still where step 1 read it, point it at the target (``local``: seal its rows), destroy the
   local rows when it came from ``local``, record the store copy it came from as a
   :class:`~bot.store.models.SecretCleanup`, and audit ``connection.secret_moved``. Otherwise it
   changed meanwhile (rotated, removed, moved by another run): nothing is changed, and what step 2
   wrote is recorded for deletion instead;
4. delete the copy the credential came from, and forget its cleanup row.

A process stopped anywhere leaves every credential readable where its connection points: before
step 3's commit the source is untouched (a target copy is written again with the same token);
after it, the cleanup row makes the next run (which finishes pending cleanups first) delete the
source copy. A store that refuses one connection is reported with its path and reason, and the
others go on.

No Slack here: the command prints the report (so failures are only logged at INFO).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from bot.crypto import Cipher, DecryptionError, Sealed, associated_data, config_digest
from bot.domain import SYSTEM_ACTOR, Status, utcnow
from bot.redaction import Secret
from bot.services.records import audit_event, seal_credential
from bot.store import Connection, Credential, Database, MasterKeyMoved
from bot.store.models import SecretCleanup
from bot.stores.base import SecretStore, StoreError, StoreFailure, Written
from bot.stores.paths import PathTemplate
from bot.stores.tokens import write_token

__all__ = [
    "FAILPOINTS",
    "LOCAL",
    "MOVED_ACTION",
    "CleanupLeft",
    "MoveFailure",
    "MovePlan",
    "MoveReport",
    "Outcome",
    "SecretMover",
    "stores_in_use",
]

logger = logging.getLogger(__name__)

LOCAL: Final = "local"
"""The credential sealed in the bot's own database (``Connection.secret_store`` is None)."""
MOVED_ACTION: Final = "connection.secret_moved"
FAILPOINTS: Final = ("written", "committed")
"""Where the crash tests stop a run (``CONNECTIONS_FAILPOINT=written:N`` or ``committed:N``): after
the N-th write to the target and before its commit, or after the N-th commit and before the
source copy is deleted."""
_DATABASE: Final = "the bot's database"

Checkpoint = Callable[[str], None]


class Outcome(enum.StrEnum):
    """What happened to one connection, as the report counts it."""

    MOVED = "moved"
    ALREADY = "already"
    CHANGED = "changed"
    """Rotated, removed or moved by someone else while it was being moved: a next run moves it."""
    FAILED = "failed"


@dataclass(frozen=True)
class MoveFailure:
    """A connection whose credential stayed where it was, and why (one line, never a value)."""

    team_id: str
    connection_id: str
    name: str
    where: str
    """Where it was to be read or written: "AWS Secrets Manager `connections/…`"."""
    reason: str


@dataclass(frozen=True)
class CleanupLeft:
    """A store copy that no connection uses but that could not be deleted yet: the next run tries
    again (``reason`` says why), or, when ``kept``, never will (it changed outside the bot)."""

    where: str
    reason: str
    kept: bool = False


@dataclass
class MoveReport:
    """What a run did: ``already`` were in the target before it; ``changed`` changed while they
    were moved (run again); ``cleaned`` copies left by an earlier run that it deleted."""

    target: str
    moved: int = 0
    already: int = 0
    changed: int = 0
    failed: list[MoveFailure] = field(default_factory=list)
    cleaned: int = 0
    left: list[CleanupLeft] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every credential moved or was there already, and no copy was left behind."""
        return not self.failed and not self.left


@dataclass(frozen=True)
class MovePlan:
    """What a run would do (``--dry-run``): how many credentials would move from each store, how
    many are in the target already, and how many copies from an earlier run wait to be deleted."""

    target: str
    to_move: Mapping[str, int]
    already: int
    cleanups: int

    @property
    def moving(self) -> int:
        return sum(self.to_move.values())


class _Refused(Exception):
    """One connection cannot be moved; the message is safe to print."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(reason)
        self.where = where
        self.reason = reason


@dataclass(frozen=True)
class _Found:
    """A connection as read before its move: where its credential is, and the settings it is
    bound to. Compared again, under the row's lock, before anything changes."""

    team_id: str
    connection_id: str
    name: str
    provider: str
    owner: str
    approved_by: str | None
    approved_at: datetime | None
    version: int
    config: dict[str, str]
    store: str
    path: str | None
    store_version: str | None

    @classmethod
    def of(cls, row: Connection) -> _Found:
        return cls(
            team_id=row.team_id,
            connection_id=row.id,
            name=row.name,
            provider=row.provider,
            owner=row.created_by,
            approved_by=row.decided_by,
            approved_at=row.decided_at,
            version=row.credential_version,
            config={str(k): str(v) for k, v in row.config.items()},
            store=row.secret_store or LOCAL,
            path=row.secret_path,
            store_version=row.secret_version,
        )

    @property
    def named(self) -> tuple[str, str, str]:
        return self.team_id, self.connection_id, self.name

    def still(self, row: Connection | None) -> bool:
        """Whether ``row`` is the connection as it was read: active, same version, same place."""
        return (
            row is not None
            and row.status is Status.ACTIVE
            and row.credential_version == self.version
            and (row.secret_store or LOCAL, row.secret_path, row.secret_version)
            == (self.store, self.path, self.store_version)
        )


async def stores_in_use(db: Database) -> set[str]:
    """The stores that active connections and pending cleanups name (``local`` left out): a run
    needs each of them configured."""
    async with db.read() as tx:
        rows = await tx.connections.active_everywhere()
        cleanups = await tx.secret_cleanups.stores()
    return {row.secret_store for row in rows if row.secret_store} | cleanups


@dataclass
class SecretMover:
    """Moves credentials between ``local`` and the ``stores`` (by their ``CONNECTIONS_SECRET_STORE``
    key). ``cipher`` opens and seals local rows; None when the database is bound to no key yet
    (then a move from or to ``local`` is refused). ``checkpoint`` is called at each of
    :data:`FAILPOINTS`."""

    db: Database
    cipher: Cipher | None
    stores: Mapping[str, SecretStore]
    paths: PathTemplate
    clock: Callable[[], datetime] = utcnow
    checkpoint: Checkpoint = lambda step: None

    def where(self, store: str, path: str | None) -> str:
        """A credential's place as a person reads it."""
        if store == LOCAL:
            return _DATABASE
        found = self.stores.get(store)
        if path is None:
            return found.title if found is not None else f"the {store} store"
        return found.where(path) if found is not None else f"the {store} store `{path}`"

    # --- what a run would do ----------------------------------------------------------------------

    async def plan(self, target: str) -> MovePlan:
        """What :meth:`move_all` would do now, reading nothing secret and changing nothing."""
        async with self.db.read() as tx:
            rows = await tx.connections.active_everywhere()
            cleanups = await tx.secret_cleanups.count()
        to_move: dict[str, int] = {}
        for row in rows:
            source = row.secret_store or LOCAL
            if source != target:
                to_move[source] = to_move.get(source, 0) + 1
        return MovePlan(target, to_move, len(rows) - sum(to_move.values()), cleanups)

    # --- the run ----------------------------------------------------------------------------------

    async def move_all(
        self,
        target: str,
        *,
        on_start: Callable[[int], None] | None = None,
        on_each: Callable[[Outcome], object] | None = None,
    ) -> MoveReport:
        """Finish the cleanups an earlier run left, then move every active connection's credential
        to ``target``, one connection after the other. ``on_start`` gets how many connections
        there are, ``on_each`` each one's :class:`Outcome`."""
        if target != LOCAL and target not in self.stores:
            raise ValueError(f"no {target} store was given")
        report = MoveReport(target)
        await self.finish_cleanups(report)
        async with self.db.read() as tx:
            ids = [(row.team_id, row.id) for row in await tx.connections.active_everywhere()]
        if on_start is not None:
            on_start(len(ids))
        for team_id, connection_id in ids:
            outcome = await self._move(team_id, connection_id, target, report)
            if outcome is Outcome.MOVED:
                report.moved += 1
            elif outcome is Outcome.ALREADY:
                report.already += 1
            elif outcome is Outcome.CHANGED:
                report.changed += 1
            if on_each is not None:
                on_each(outcome)
        return report

    async def _move(self, team_id: str, connection_id: str, target: str, report: MoveReport) -> Outcome:
        async with self.db.read() as tx:
            row = await tx.connections.get(team_id, connection_id)
            if row is None or row.status is not Status.ACTIVE:
                return Outcome.CHANGED  # removed or revoked since the list was read
            found = _Found.of(row)
            if found.store == target:
                return Outcome.ALREADY
            sealed: list[Credential] = []
            if found.store == LOCAL:
                wanted = [(found.connection_id, found.version)]
                sealed = (await tx.credentials.for_connections(wanted))[found.connection_id]
                if not sealed:
                    # On PostgreSQL a rotation approved between the two reads leaves a version
                    # without rows: read the row again rather than report a missing credential.
                    await tx.session.refresh(row)
                    if not found.still(row):
                        return Outcome.CHANGED
        fields: dict[str, str | Secret] = {}
        written: Written | None = None
        path: str | None = None
        try:
            fields = await self._read(found, sealed)
            if target != LOCAL:
                path = self._path(found, target)
                written = await self._write(found, target, path, fields)
            self.checkpoint("written")
            outcome, cleanup = await self._commit(found, target, path, written, fields)
        except _Refused as refused:
            report.failed.append(MoveFailure(*found.named, refused.where, refused.reason))
            logger.info("moving the credential of %s failed: %s", found.connection_id, refused.reason)
            return Outcome.FAILED
        finally:
            fields.clear()  # the plain text lives for the move only
        if outcome is Outcome.MOVED:
            self.checkpoint("committed")
            logger.info("moved the credential of %s from %s to %s", found.connection_id, found.store, target)
        if cleanup is not None:
            await self._clean(cleanup, report)
        return outcome

    def _path(self, found: _Found, target: str) -> str:
        try:
            return self.paths.render(
                team=found.team_id,
                provider=found.provider,
                name=found.name,
                connection_id=found.connection_id,
            )
        except ValueError as exc:
            raise _Refused(self.where(target, None), f"CONNECTIONS_SECRET_PATH {exc}") from None

    async def _read(self, found: _Found, sealed: list[Credential]) -> dict[str, str | Secret]:
        """The provider's fields (the settings as text, the secrets wrapped), as a store keeps them."""
        settings: dict[str, str | Secret] = {name: value for name, value in found.config.items() if value}
        if found.store == LOCAL:
            return settings | self._open(found, sealed)
        store = self._store(found.store, found.path)
        where = self.where(found.store, found.path)
        if not found.path:
            raise _Refused(where, "the connection names no path in its store")
        try:
            current = await store.read(found.path)
        except StoreError as exc:
            raise _Refused(where, str(exc)) from None
        if current.version != found.store_version:
            raise _Refused(
                where,
                f"its current version ({current.version}) is not the one the bot wrote "
                f"({found.store_version}): it was changed outside the bot, and is left where it is",
            )
        for name, value in found.config.items():
            stored = current.fields.get(name)
            if value and (stored is None or stored.reveal() != value):
                raise _Refused(where, f"its {name} is not the connection's: it was changed outside the bot")
        return settings | {name: value for name, value in current.fields.items() if name not in settings}

    def _open(self, found: _Found, sealed: list[Credential]) -> dict[str, str | Secret]:
        cipher = self._cipher()
        if not sealed:
            raise _Refused(_DATABASE, "it has no sealed credential in the bot's database")
        bound_to = config_digest(found.provider, found.config)
        opened: dict[str, str | Secret] = {}
        for row in sealed:
            try:
                # Bound whatever a row's scheme says, as a re-test opens it: the start-up guard
                # (which this command runs too) binds every legacy row that opens.
                aad = associated_data(row.connection_id, row.field, row.version, bound_to)
                opened[row.field] = cipher.open(Sealed(row.key_id, row.nonce, row.ciphertext), aad)
            except DecryptionError:
                raise _Refused(
                    _DATABASE,
                    "its sealed credential does not open for its stored settings: they or it were "
                    "changed outside the bot",
                ) from None
        return opened

    async def _write(
        self, found: _Found, target: str, path: str, fields: Mapping[str, str | Secret]
    ) -> Written:
        metadata = {"provider": found.provider, "connection-id": found.connection_id, "owner": found.owner}
        if found.approved_by:
            metadata["approved-by"] = found.approved_by
        if found.approved_at is not None:
            metadata["approved-at"] = found.approved_at.isoformat()
        try:
            return await self.stores[target].write(
                path,
                fields,
                token=write_token(found.connection_id, found.version),
                replaces=None,
                metadata=metadata,
            )
        except StoreError as exc:
            raise _Refused(self.where(target, path), str(exc)) from None

    async def _commit(
        self,
        found: _Found,
        target: str,
        path: str | None,
        written: Written | None,
        fields: Mapping[str, str | Secret],
    ) -> tuple[Outcome, SecretCleanup | None]:
        """Step 3: moved or changed meanwhile, and the store copy to delete now (recorded in the
        same transaction): the source's when the connection moved, what was written to the target
        for it when it changed meanwhile."""
        now = self.clock()
        try:
            async with self.db.transaction() as tx:
                row = await tx.connections.lock(found.team_id, found.connection_id)
                if row is None or not found.still(row):
                    if written is None or path is None:
                        return Outcome.CHANGED, None
                    left = _cleanup(found, target, path, written.version, now)
                    await tx.secret_cleanups.add(left)
                    return Outcome.CHANGED, left
                if target == LOCAL:
                    secrets = {
                        name: value if isinstance(value, Secret) else Secret(value)
                        for name, value in fields.items()
                        if name not in found.config
                    }
                    # Rows of this version cannot be in use (the store held it): left by someone else.
                    await tx.credentials.delete_for(row.id, found.version)
                    await seal_credential(tx, self._cipher(), secrets, row, found.version, found.config, now)
                    row.secret_store = row.secret_path = row.secret_version = None
                else:
                    assert written is not None and path is not None
                    row.secret_store, row.secret_path, row.secret_version = target, path, written.version
                cleanup: SecretCleanup | None = None
                if found.store == LOCAL:
                    await tx.credentials.delete_for(row.id, found.version)
                else:
                    assert found.path is not None
                    cleanup = _cleanup(found, found.store, found.path, found.store_version, now)
                    await tx.secret_cleanups.add(cleanup)
                details = {
                    "from_store": found.store,
                    "from_path": found.path,
                    "to_store": target,
                    "to_path": path,
                }
                event = audit_event(
                    row.team_id,
                    SYSTEM_ACTOR,
                    MOVED_ACTION,
                    now,
                    connection=row,
                    before=row.status,
                    after=row.status,
                    details=details,
                )
                await tx.audit.add(event)
                return Outcome.MOVED, cleanup
        except MasterKeyMoved as exc:
            raise _Refused(_DATABASE, str(exc)) from None

    # --- the copies left behind -------------------------------------------------------------------

    async def finish_cleanups(self, report: MoveReport) -> None:
        """Delete every store copy an earlier run recorded and did not delete (it stopped between
        its commit and the delete, or the store refused the delete)."""
        async with self.db.read() as tx:
            pending = await tx.secret_cleanups.pending()
        for cleanup in pending:
            if await self._clean(cleanup, report):
                report.cleaned += 1

    async def _clean(self, cleanup: SecretCleanup, report: MoveReport) -> bool:
        """Delete one recorded copy and forget its row; whether the store deleted something.

        Not deleted, the row forgotten all the same: when an active connection's credential lives
        at that path now (a connection of the same name, which renders the same path), or when the
        current version there is not the one the bot wrote (someone changed it outside the bot:
        reported, as theirs to delete). Kept for the next run: when the store fails."""
        where = self.where(cleanup.store, cleanup.path)
        store = self.stores.get(cleanup.store)
        if store is None:
            report.left.append(CleanupLeft(where, f"the {cleanup.store} store is not configured"))
            return False
        async with self.db.read() as tx:
            in_use = await tx.secret_cleanups.in_use(cleanup.store, cleanup.path)
        deleted = kept = False
        try:
            current = None if in_use else await _current_version(store, cleanup.path)
            kept = current is not None and cleanup.version is not None and current != cleanup.version
            if current is not None and not kept:
                await store.delete(cleanup.path)
                deleted = True
        except StoreError as exc:
            report.left.append(CleanupLeft(where, str(exc)))
            logger.info("could not delete the copy at %s yet: %s", where, exc)
            return False
        if kept:
            reason = "its current version was written outside the bot since; delete it once nobody uses it"
            report.left.append(CleanupLeft(where, reason, kept=True))
            logger.info("the copy at %s was not deleted: %s", where, reason)
        async with self.db.transaction() as tx:
            await tx.secret_cleanups.remove(cleanup.id)
        return deleted

    # --- inside -----------------------------------------------------------------------------------

    def _store(self, key: str, path: str | None) -> SecretStore:
        store = self.stores.get(key)
        if store is None:
            raise _Refused(self.where(key, path), f"the {key} store is not configured")
        return store

    def _cipher(self) -> Cipher:
        if self.cipher is None:
            raise _Refused(_DATABASE, "the database is bound to no master key yet: start the bot once first")
        return self.cipher


async def _current_version(store: SecretStore, path: str) -> str | None:
    """The version at ``path`` now, or None when nothing is there."""
    try:
        current = await store.read(path)
    except StoreError as exc:
        if exc.failure is StoreFailure.NOT_FOUND:
            return None
        raise
    return current.version  # its fields are dropped unread


def _cleanup(found: _Found, store: str, path: str, version: str | None, now: datetime) -> SecretCleanup:
    return SecretCleanup(
        team_id=found.team_id,
        connection_id=found.connection_id,
        store=store,
        path=path,
        version=version,
        created_at=now,
    )
