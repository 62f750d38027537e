"""Queries, one repository per table.

A repository takes an :class:`~sqlalchemy.ext.asyncio.AsyncSession`, builds statements and may
flush, but never commits: the unit of work (:mod:`bot.store.uow`) owns the transaction, so one use
case's writes land together or not at all. Every query that a Slack user can reach is scoped by
``team_id``.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Collection, Sequence
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Executable, Select, delete, exists, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.crypto import LEGACY_SCHEME, config_digest
from bot.domain import RotationStatus, Status, name_key, utcnow
from bot.store.errors import CanaryExists, MasterKeyMoved, NameTaken, RotationPending
from bot.store.models import (
    IN_FLIGHT_CONNECTION_KEY,
    IN_FLIGHT_NAME_KEY,
    NAME_INDEX,
    ROTATION_PENDING_INDEX,
    AuditEvent,
    BulkRetest,
    Connection,
    Credential,
    InFlightVerification,
    KeyCanary,
    Rotation,
    SecretCleanup,
    VerificationRecord,
)

__all__ = [
    "AuditRepository",
    "BulkRetestRepository",
    "ConnectionRepository",
    "CredentialRepository",
    "InFlightRepository",
    "RotationRepository",
    "SecretCleanupRepository",
    "VerificationRepository",
]

_IN_CHUNK = 500
"""Ids per IN (…) list: well under SQLite's and PostgreSQL's bound-parameter limits."""

_NAME_HOLDING_STATUSES = [status for status in Status if status.holds_name]

T = TypeVar("T")
Request = TypeVar("Request", Connection, Rotation)
Aged = TypeVar("Aged", Connection, Rotation, Credential, VerificationRecord, AuditEvent)
History = TypeVar("History", VerificationRecord, AuditEvent)


def _by_age(model: type[Aged], *conditions: ColumnElement[bool], newest_first: bool = False) -> Select[Aged]:
    """The rows matching ``conditions``, oldest first (newest with ``newest_first``), id breaking ties."""
    order = (model.created_at.desc(), model.id.desc()) if newest_first else (model.created_at, model.id)
    return select(model).where(*conditions).order_by(*order)


class _Repository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def _insert(self, row: object, *keys: str) -> bool:
        """Insert ``row`` now in a savepoint, so the transaction stays usable after a conflict;
        ``False`` (nothing inserted) if it breaks one of the unique ``keys``, or any when none are
        given."""
        try:
            async with self._session.begin_nested():
                self._session.add(row)
        except IntegrityError as error:
            # PostgreSQL (psycopg) names the violated constraint in its diagnostics; SQLite names it
            # in the message ("UNIQUE constraint failed: index '<name>'") or names the constrained
            # columns instead ("table.column"), which is why ``keys`` lists those too.
            named = getattr(getattr(error.orig, "diag", None), "constraint_name", None)
            if not keys or named in keys or any(key in str(error.orig) for key in keys):
                return False
            raise
        return True

    async def _one(self, statement: Select[T], *looked_up: str) -> T | None:
        """The statement's first row, or ``None`` without asking when a looked-up id or name holds
        NUL, which no stored text does (PostgreSQL refuses it in text, and names are checked before
        they are stored): such a lookup finds nothing, rather than fail on PostgreSQL. Ids and names
        come from Slack payloads, so they can hold anything."""
        if any("\x00" in value for value in looked_up):
            return None
        return await self._session.scalar(statement)

    async def _all(self, statement: Select[T]) -> list[T]:
        return list(await self._session.scalars(statement))

    async def _returned(self, statement: Executable) -> bool:
        """Whether ``statement`` (``… RETURNING``) changed a row."""
        return (await self._session.execute(statement)).first() is not None


class _Appending(_Repository, Generic[T]):
    async def add(self, row: T) -> None:
        """Insert ``row`` now, so values the database assigns (an audit event's id) are set; a
        broken constraint (a repeated credential field, for one) is an IntegrityError."""
        self._session.add(row)
        await self._session.flush()


class _RequestRepository(_Repository, Generic[Request]):
    """What connections and rotations share: both wait, as requests, for an admin's decision."""

    _model: type[Request]
    _pending: str

    def _by_id(self, team_id: str, row_id: str) -> Select[Request]:
        return select(self._model).where(self._model.id == row_id, self._model.team_id == team_id)

    async def get(self, team_id: str, row_id: str) -> Request | None:
        """The row with this id in this workspace; ``None`` for another team's id."""
        return await self._one(self._by_id(team_id, row_id), row_id)

    async def transition(
        self, team_id: str, row_id: str, from_status: str, to_status: str, **values: Any
    ) -> bool:
        """Move a row from ``from_status`` to ``to_status`` if, and only if, it is still in
        ``from_status``, setting ``values`` (and ``updated_at`` to now unless given) in the same
        statement. Every status change is this conditional ``UPDATE … WHERE status = :from``: of two
        concurrent identical transitions (two clicks on Approve) exactly one returns ``True``.
        ``False`` also means the row is not in this workspace or does not exist."""
        model = self._model
        changes = {"updated_at": utcnow(), **values, "status": to_status}
        still = update(model).where(model.id == row_id, model.team_id == team_id, model.status == from_status)
        return await self._returned(still.values(changes).returning(model.id))

    async def pending_created_before(self, cutoff: datetime, limit: int) -> list[Request]:
        """Rows of *every* workspace still pending and created before ``cutoff``, oldest first, at
        most ``limit`` of them: for expiry, a system job no Slack user can reach, hence no ``team_id``.
        A range on ``created_at`` with an equality on ``status`` (no function around either), so an
        index on ``(status, created_at)`` serves it."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        model = self._model
        statement = _by_age(model, model.status == self._pending, model.created_at < cutoff)
        return await self._all(statement.limit(limit))


def _holding_name(team_id: str, name: str) -> tuple[ColumnElement[bool], ...]:
    """A connection of the workspace that holds ``name`` (see :attr:`Status.holds_name`), compared
    case-insensitively: rejected, expired and revoked connections do not."""
    return (
        Connection.team_id == team_id,
        Connection.name_key == name_key(name),
        Connection.status.in_(_NAME_HOLDING_STATUSES),
    )


class ConnectionRepository(_RequestRepository[Connection]):
    """Connections, always looked up within one workspace."""

    _model, _pending = Connection, Status.PENDING_APPROVAL

    async def add(self, connection: Connection) -> None:
        """Insert ``connection`` now; raises :class:`NameTaken` if its name is held in the workspace
        (in a savepoint, so the transaction stays usable, for example to audit the failure)."""
        if not await self._insert(connection, NAME_INDEX, "connections.name_key"):
            raise NameTaken(connection.name)

    async def find_by_name(self, team_id: str, name: str) -> Connection | None:
        """The connection currently holding ``name`` in the workspace, if any."""
        return await self._one(select(Connection).where(*_holding_name(team_id, name)), name)

    async def latest_by_name(self, team_id: str, name: str) -> Connection | None:
        """The most recently created connection named ``name`` (case-insensitively) in the
        workspace, in any status: a rejected or expired connection stays findable by its name."""
        conditions = (Connection.team_id == team_id, Connection.name_key == name_key(name))
        return await self._one(_by_age(Connection, *conditions, newest_first=True).limit(1), name)

    async def name_taken(self, team_id: str, name: str) -> bool:
        """Whether a connection holding its name uses ``name`` in the workspace."""
        return bool(await self._one(select(exists().where(*_holding_name(team_id, name))), name))

    async def _count(self, *conditions: ColumnElement[bool]) -> int:
        total = await self._session.scalar(select(func.count()).select_from(Connection).where(*conditions))
        return int(total or 0)

    async def count(self, team_id: str) -> int:
        """How many connections the workspace has, in any status."""
        return await self._count(Connection.team_id == team_id)

    async def count_active(self, team_id: str) -> int:
        return await self._count(Connection.team_id == team_id, Connection.status == Status.ACTIVE)

    async def list_page(self, team_id: str, page: int, size: int) -> tuple[list[Connection], int]:
        """Page ``page`` (from 1) of the workspace's connections, newest first, and the total count."""
        if page < 1 or size < 1:
            raise ValueError("page and size must be at least 1")
        return await self.list_matching(team_id, size, offset=(page - 1) * size)

    async def list_matching(
        self,
        team_id: str,
        limit: int,
        *,
        created_by: str | None = None,
        statuses: Collection[Status] | None = None,
        oldest_first: bool = False,
        offset: int = 0,
    ) -> tuple[list[Connection], int]:
        """At most ``limit`` of the workspace's connections from the ``offset``-th on, newest first
        (oldest with ``oldest_first``), and how many match in all; ``created_by`` keeps one user's
        connections only, ``statuses`` those statuses only."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        conditions = [Connection.team_id == team_id]
        if created_by is not None:
            conditions.append(Connection.created_by == created_by)
        if statuses is not None:
            conditions.append(Connection.status.in_(list(statuses)))
        total = await self._count(*conditions)
        statement = _by_age(Connection, *conditions, newest_first=not oldest_first)
        return await self._all(statement.limit(limit).offset(offset)), total

    async def lock(self, team_id: str, connection_id: str) -> Connection | None:
        """The connection, locked until the transaction ends (``SELECT … FOR UPDATE`` on
        PostgreSQL; SQLite's write transaction already holds the database), so read-modify-write
        of its health by two re-tests at once happens one after the other."""
        statement = self._by_id(team_id, connection_id).with_for_update()
        return await self._one(statement.execution_options(populate_existing=True), connection_id)

    async def repoint_secret(self, connection_id: str, from_version: str, to_version: str) -> bool:
        """Record that the bot wrote ``to_version`` of the connection's secret in its store, if the
        version it knew was still ``from_version`` (an approval lost its decision and wrote the
        version it replaced back); whether it did."""
        statement = (
            update(Connection)
            .where(Connection.id == connection_id, Connection.secret_version == from_version)
            .values(secret_version=to_version)
            .returning(Connection.id)
        )
        return await self._returned(statement)

    async def active_by_store(self) -> dict[str | None, int]:
        """How many active connections of every workspace each secret store holds the credential
        of (None: sealed in this database), for the start-up's warning about unmigrated ones."""
        statement = (
            select(Connection.secret_store, func.count())
            .where(Connection.status == Status.ACTIVE)
            .group_by(Connection.secret_store)
        )
        return {store: int(count) for store, count in (await self._session.execute(statement)).all()}

    async def active(self, team_id: str) -> list[Connection]:
        """Every active connection of the workspace, oldest first (for ``test all``)."""
        active = (Connection.team_id == team_id, Connection.status == Status.ACTIVE)
        return await self._all(_by_age(Connection, *active))

    async def active_everywhere(self) -> list[Connection]:
        """Every active connection of every workspace, oldest first: for ``migrate-secrets``, a
        command of whoever runs the bot that no Slack user can reach, hence no ``team_id``."""
        return await self._all(_by_age(Connection, Connection.status == Status.ACTIVE))

    async def schedule_unscheduled(
        self, now: datetime, interval: timedelta, limit: int, rng: random.Random | None = None
    ) -> int:
        """Give active connections without a next check (just approved, or from before the schedule
        existed) one at a random point within the next ``interval``, so re-tests spread over it
        rather than fall due at once; returns how many. Each update is conditional on the column
        still being empty, so two replicas doing this at once schedule each connection once."""
        draw = rng or random
        unscheduled = Connection.next_check_at.is_(None)
        candidates = select(Connection.id).where(Connection.status == Status.ACTIVE, unscheduled)
        ids = await self._all(candidates.order_by(Connection.created_at, Connection.id).limit(limit))
        scheduled = 0
        for connection_id in ids:
            when = now + interval * draw.random()
            statement = update(Connection).where(Connection.id == connection_id, unscheduled)
            scheduled += await self._returned(statement.values(next_check_at=when).returning(Connection.id))
        return scheduled

    async def _claim(
        self, limit: int, order: Any, *where: ColumnElement[bool], **values: Any
    ) -> list[Connection]:
        """Up to ``limit`` active connections matching ``where``, read ``FOR UPDATE SKIP LOCKED`` in
        ``order``, given ``values``."""
        due = await self._all(
            select(Connection)
            .where(Connection.status == Status.ACTIVE, *where)
            .order_by(order, Connection.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .execution_options(populate_existing=True)
        )
        for connection in due:
            for column, value in values.items():
                setattr(connection, column, value)
        await self._session.flush()
        return due

    async def claim_due(self, now: datetime, interval: timedelta, limit: int) -> list[Connection]:
        """Claim up to ``limit`` active connections of every workspace whose next check is due,
        earliest first, by moving their next check one ``interval`` on; returns them. On PostgreSQL
        the candidates are read ``FOR UPDATE SKIP LOCKED``: replicas claiming at the same moment
        each get different rows, without waiting on each other, and the row locks last until the
        claim commits, so a check runs once per cycle however many processes run the schedule.
        (SQLite ignores the clause; its write transactions are serialised by the database lock,
        which gives the same guarantee on one host.)"""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        next_check = Connection.next_check_at
        return await self._claim(limit, next_check, next_check <= now, next_check_at=now + interval)

    async def claim_rotation_reminders(
        self, now: datetime, older_than: datetime, reminded_before: datetime, limit: int
    ) -> list[Connection]:
        """Claim active connections whose credential was stored before ``older_than`` and whose
        owner was not reminded since ``reminded_before``, marking them reminded now (``SKIP
        LOCKED`` as in :meth:`claim_due`, so each reminder is sent by one replica)."""
        stored, reminded = Connection.credential_created_at, Connection.rotation_reminded_at
        old = (stored < older_than, reminded.is_(None) | (reminded < reminded_before))
        return await self._claim(limit, stored, *old, rotation_reminded_at=now)


class CredentialRepository(_Appending[Credential]):
    """Encrypted credential fields, by connection and version."""

    def __init__(self, session: AsyncSession) -> None:
        super().__init__(session)
        self.destroyed = 0
        """How many ciphertexts this transaction deleted (the unit of work scrubs after commit)."""

    async def for_connections(self, versions: Sequence[tuple[str, int]]) -> dict[str, list[Credential]]:
        """The fields of the given (connection id, version) pairs, by connection id, read in a few
        queries however many connections are asked for."""
        wanted = dict(versions)
        found: dict[str, list[Credential]] = {connection_id: [] for connection_id in wanted}
        ids, order = list(wanted), (Credential.connection_id, Credential.field)
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = Credential.connection_id.in_(ids[start : start + _IN_CHUNK])
            for row in await self._session.scalars(select(Credential).where(chunk).order_by(*order)):
                if wanted.get(row.connection_id) == row.version:
                    found[row.connection_id].append(row)
        return found

    async def any_exists(self) -> bool:
        """Whether the database holds any ciphertext at all (decides if a new master key may be made)."""
        return bool(await self._session.scalar(select(exists().select_from(Credential))))

    async def count_sealed_with(self, key_id: str) -> int:
        """How many credential fields are sealed with the master key ``key_id``."""
        statement = select(func.count()).select_from(Credential).where(Credential.key_id == key_id)
        return int(await self._session.scalar(statement) or 0)

    async def latest(self) -> Credential | None:
        """The most recently stored credential field: a start-up probe that the master key opens."""
        return await self._session.scalar(_by_age(Credential, newest_first=True).limit(1))

    async def _destroy(self, *conditions: ColumnElement[bool]) -> int:
        result = await self._session.execute(delete(Credential).where(*conditions).returning(Credential.id))
        count = len(result.all())
        self.destroyed += count
        return count

    async def delete_other_versions(self, connection_id: str, keep: int) -> int:
        """Destroy every version of a connection's ciphertexts but ``keep``; how many fields went."""
        return await self._destroy(Credential.connection_id == connection_id, Credential.version != keep)

    async def delete_for(self, connection_id: str, version: int | None = None) -> int:
        """Destroy one version's (or every version's) ciphertexts of a connection; how many fields went."""
        one_version = () if version is None else (Credential.version == version,)
        return await self._destroy(Credential.connection_id == connection_id, *one_version)

    async def lock_all(self, *, outdated_for: str | None = None) -> list[Credential]:
        """Every credential field (``outdated_for`` a key id: those sealed before configurations were
        bound or with another key id, such as the key's legacy one), each row locked until the
        transaction ends (PostgreSQL), for re-sealing."""
        outdated = or_(Credential.scheme == LEGACY_SCHEME, Credential.key_id != outdated_for)
        only = (outdated,) if outdated_for is not None else ()
        return await self._all(select(Credential).where(*only).order_by(Credential.id).with_for_update())

    async def bindings(self, rows: Sequence[Credential]) -> dict[tuple[str, int], str]:
        """The :func:`~bot.crypto.config_digest` each (connection id, version) of ``rows`` is bound
        to: the connection's configuration for the version in use, the waiting rotation's for the
        version it would bring in. A version that is neither has none (it opens with nothing)."""
        ids = sorted({row.connection_id for row in rows})
        found: dict[tuple[str, int], str] = {}
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = ids[start : start + _IN_CHUNK]
            providers: dict[str, str] = {}
            for connection in await self._session.scalars(select(Connection).where(Connection.id.in_(chunk))):
                providers[connection.id] = connection.provider
                found[connection.id, connection.credential_version] = config_digest(
                    connection.provider, connection.config
                )
            waiting = (Rotation.connection_id.in_(chunk), Rotation.status == RotationStatus.PENDING_APPROVAL)
            for rotation in await self._session.scalars(select(Rotation).where(*waiting)):
                digest = config_digest(providers.get(rotation.connection_id, ""), rotation.config)
                found.setdefault((rotation.connection_id, rotation.version), digest)
        return found

    async def replace_ciphertext(
        self,
        credential: Credential,
        key_id: str,
        nonce: bytes,
        ciphertext: bytes,
        *,
        scheme: int | None = None,
    ) -> None:
        """Store a re-sealed value in place of the row's ciphertext (sealed with ``scheme``'s
        associated data, if given). The old one counts as destroyed, so the unit of work scrubs
        SQLite's write-ahead log after the commit."""
        credential.key_id, credential.nonce, credential.ciphertext = key_id, nonce, ciphertext
        if scheme is not None:
            credential.scheme = scheme
        self.destroyed += 1


class RotationRepository(_RequestRepository[Rotation]):
    """Credential rotations waiting for, or past, an admin's decision."""

    _model, _pending = Rotation, RotationStatus.PENDING_APPROVAL

    async def add(self, rotation: Rotation) -> None:
        """Insert ``rotation`` now; raises :class:`RotationPending` if the connection already has
        one waiting (in a savepoint, so the transaction stays usable)."""
        if not await self._insert(rotation, ROTATION_PENDING_INDEX, "rotations.connection_id"):
            raise RotationPending(rotation.connection_id)

    async def latest_version(self, connection_id: str) -> int:
        """The highest credential version any rotation of the connection used (0 if none)."""
        statement = select(func.max(Rotation.version)).where(Rotation.connection_id == connection_id)
        return int(await self._session.scalar(statement) or 0)

    async def pending_for(self, team_id: str, connection_id: str) -> Rotation | None:
        """The rotation of this connection waiting for approval, if any."""
        waiting = (
            Rotation.connection_id == connection_id,
            Rotation.status == RotationStatus.PENDING_APPROVAL,
        )
        return await self._one(select(Rotation).where(Rotation.team_id == team_id, *waiting), connection_id)


class KeyCanaryRepository(_Repository):
    """The one sealed canary that ties the database to its master key."""

    async def get(self) -> KeyCanary | None:
        return await self._session.get(KeyCanary, 1)

    async def add(self, canary: KeyCanary) -> None:
        """Insert the canary; raises :class:`CanaryExists` if another process did first."""
        if not await self._insert(canary):
            raise CanaryExists()

    async def lock(self) -> KeyCanary | None:
        """The canary, its row locked until the transaction ends (PostgreSQL; on SQLite the write
        transaction already shuts other writers out), so two master-key rotations cannot interleave."""
        locked = select(KeyCanary).where(KeyCanary.id == 1).with_for_update()
        # populate_existing: a canary this session read before the lock is refreshed, not trusted.
        return await self._session.scalar(locked.execution_options(populate_existing=True))

    async def replace(self, canary: KeyCanary, key_id: str, nonce: bytes, ciphertext: bytes) -> None:
        """The canary re-sealed under another master key."""
        canary.key_id, canary.nonce, canary.ciphertext = key_id, nonce, ciphertext

    async def require_sealing_key(self, key_id: str) -> None:
        """Raise :class:`MasterKeyMoved` unless the canary is sealed with ``key_id``.

        Call it in a transaction that stores new ciphertext: on PostgreSQL the canary row is share-
        locked until the commit, so a master-key rotation (which locks it for update) waits for the
        write or the write sees the rotated key; SQLite's single writer gives the same order."""
        statement = select(KeyCanary.key_id).where(KeyCanary.id == 1).with_for_update(read=True)
        current = await self._session.scalar(statement)
        if current is not None and current != key_id:
            raise MasterKeyMoved(loaded=key_id, current=current)


def _about(model: type[History], team_id: str, connection_id: str) -> Select[History]:
    """The rows about a connection in this workspace, newest first."""
    return _by_age(model, model.team_id == team_id, model.connection_id == connection_id, newest_first=True)


class VerificationRepository(_Appending[VerificationRecord]):
    """The verification history of connections."""

    async def latest_with_trigger(
        self, team_id: str, connection_id: str, trigger: str
    ) -> VerificationRecord | None:
        """The newest verification of a connection that ran for ``trigger`` (e.g. a rotation)."""
        statement = _about(VerificationRecord, team_id, connection_id).limit(1)
        return await self._session.scalar(statement.where(VerificationRecord.trigger == trigger))

    async def recent(self, team_id: str, connection_id: str, limit: int = 10) -> list[VerificationRecord]:
        """The latest ``limit`` verifications of a connection in this workspace, newest first."""
        return await self._all(_about(VerificationRecord, team_id, connection_id).limit(limit))


class AuditRepository(_Appending[AuditEvent]):
    """The audit trail: append (:meth:`add`; the database assigns the ``id``) and read, never update."""

    async def for_connection(self, team_id: str, connection_id: str, limit: int = 50) -> list[AuditEvent]:
        """The latest ``limit`` events about a connection in this workspace, newest first."""
        return await self._all(_about(AuditEvent, team_id, connection_id).limit(limit))

    async def all_ordered(self, *, batch_size: int = 500) -> AsyncIterator[AuditEvent]:
        """Every event of every workspace in the order it was recorded, streamed in batches: use as
        ``async for event in audit.all_ordered(): …`` inside one session."""
        statement = select(AuditEvent).order_by(AuditEvent.id).execution_options(yield_per=batch_size)
        result = await self._session.stream_scalars(statement)
        try:
            async for event in result:
                yield event
        finally:
            await result.close()

    async def latest_with_action(self, action: str) -> AuditEvent | None:
        """The newest event of ``action`` in any workspace (e.g. the last master-key rotation)."""
        statement = (
            select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id.desc()).limit(1)
        )
        return await self._session.scalar(statement)


class InFlightRepository(_Repository):
    """Verifications users are waiting for (see :class:`~bot.store.models.InFlightVerification`).

    Unlike the other repositories, the sweeps here work across workspaces: they are system jobs
    that no Slack user can reach."""

    async def claim(self, row: InFlightVerification) -> bool:
        """Insert ``row`` now; ``False`` (nothing inserted, the transaction still usable) if another
        verification holds the same name in the workspace, or the same connection.

        On PostgreSQL an insert that meets an uncommitted row with the same key waits for that
        transaction to end, so a conflict is seen even between two claims made at the same moment."""
        return await self._insert(
            row,
            IN_FLIGHT_NAME_KEY,
            IN_FLIGHT_CONNECTION_KEY,
            "in_flight_verifications.name_key",
            "in_flight_verifications.connection_id",
        )

    async def release(self, row_id: str) -> bool:
        """Delete the row; ``False`` if it was already gone (a sweep took it as interrupted)."""
        statement = delete(InFlightVerification).where(InFlightVerification.id == row_id)
        return await self._returned(statement.returning(InFlightVerification.id))

    async def take(self, row_id: str) -> InFlightVerification | None:
        """Delete the row and return it as it was; ``None`` if someone else deleted it first, so of
        two sweeps (two replicas) only one tells its user."""
        row = await self._session.get(InFlightVerification, row_id, populate_existing=True)
        return row if row is not None and await self.release(row_id) else None

    async def holds(self, row_id: str) -> bool:
        """Whether the row is still there (no sweep took it, no outcome ended it)."""
        statement = select(InFlightVerification.id).where(InFlightVerification.id == row_id)
        return await self._session.scalar(statement) is not None

    async def on_machine(
        self, host: str, boot_id: str | None, pid_namespace: int | None, limit: int
    ) -> list[InFlightVerification]:
        """Rows of processes on ``host`` in the same boot and pid namespace (an unknown one
        matches only an unknown one), oldest first."""
        statement = select(InFlightVerification).where(
            InFlightVerification.host == host,
            InFlightVerification.boot_id.is_not_distinct_from(boot_id),
            InFlightVerification.pid_namespace.is_not_distinct_from(pid_namespace),
        )
        started = (InFlightVerification.started_at, InFlightVerification.id)
        return await self._all(statement.order_by(*started).limit(limit))

    async def past_deadline(self, now: datetime, limit: int) -> list[InFlightVerification]:
        """Rows of every process and workspace whose deadline is before ``now``, oldest first."""
        by_deadline = (InFlightVerification.deadline, InFlightVerification.id)
        statement = select(InFlightVerification).where(InFlightVerification.deadline < now)
        return await self._all(statement.order_by(*by_deadline).limit(limit))


class BulkRetestRepository(_Repository):
    """The workspaces' running ``test all`` (see :class:`~bot.store.models.BulkRetest`)."""

    async def claim(self, run: BulkRetest, stale_before: datetime) -> BulkRetest | None:
        """Insert ``run`` unless its workspace has one running: ``None`` when taken, else the one
        that holds it. A holder whose heartbeat is older than ``stale_before`` is replaced.

        On PostgreSQL an insert that meets another's uncommitted row waits for it, so of two
        claims at once one wins and the other sees it; SQLite takes them one after the other."""
        stale = BulkRetest.team_id == run.team_id, BulkRetest.heartbeat_at < stale_before
        await self._session.execute(delete(BulkRetest).where(*stale))
        for _ in range(3):  # the holder may end between our insert and our look
            if await self._insert(run, "pk_bulk_retests", "bulk_retests.team_id"):
                return None
            holder = await self._session.get(BulkRetest, run.team_id, populate_existing=True)
            if holder is not None:
                return holder
        raise RuntimeError(f"could not claim the bulk re-test of team {run.team_id}")

    async def progress(self, run: BulkRetest, done: int, now: datetime) -> bool:
        """Record how many are done, as the run's heartbeat; ``False`` if it no longer holds."""
        statement = (
            update(BulkRetest)
            .where(BulkRetest.team_id == run.team_id, BulkRetest.run_id == run.run_id)
            .values(done=done, heartbeat_at=now)
            .returning(BulkRetest.team_id)
        )
        return await self._returned(statement)

    async def release(self, run: BulkRetest) -> None:
        await self._session.execute(
            delete(BulkRetest).where(BulkRetest.team_id == run.team_id, BulkRetest.run_id == run.run_id)
        )


class SecretCleanupRepository(_Repository):
    """Store copies waiting to be deleted (see :class:`~bot.store.models.SecretCleanup`). Across
    workspaces: only ``migrate-secrets`` reads them, never a Slack user."""

    async def add(self, cleanup: SecretCleanup) -> None:
        self._session.add(cleanup)
        await self._session.flush()

    async def pending(self) -> list[SecretCleanup]:
        """Every one, oldest first (a run leaves a few at most: the delete was cut short or refused)."""
        return await self._all(select(SecretCleanup).order_by(SecretCleanup.created_at, SecretCleanup.id))

    async def count(self) -> int:
        return int(await self._session.scalar(select(func.count()).select_from(SecretCleanup)) or 0)

    async def stores(self) -> set[str]:
        """The stores that pending cleanups name."""
        return set(await self._all(select(SecretCleanup.store).distinct()))

    async def remove(self, cleanup_id: str) -> bool:
        """Forget one; ``False`` if another run did first."""
        statement = delete(SecretCleanup).where(SecretCleanup.id == cleanup_id)
        return await self._returned(statement.returning(SecretCleanup.id))

    async def in_use(self, store: str, path: str) -> bool:
        """Whether an active connection's credential lives at ``path`` in ``store`` now (two
        connections of one name, one removed and one new, render the same path): then the copy
        there is not a leftover."""
        held = (Connection.status == Status.ACTIVE, Connection.secret_store == store)
        statement = select(exists().where(*held, Connection.secret_path == path))
        return bool(await self._session.scalar(statement))
