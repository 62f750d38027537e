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
from typing import Any

from sqlalchemy import delete, exists, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.domain import RotationStatus, Status, name_key
from bot.store.db import utcnow
from bot.store.errors import CanaryExists, MasterKeyMoved, NameTaken, RotationPending
from bot.store.models import (
    IN_FLIGHT_CONNECTION_KEY,
    IN_FLIGHT_NAME_KEY,
    NAME_INDEX,
    ROTATION_PENDING_INDEX,
    AuditEvent,
    Connection,
    Credential,
    InFlightVerification,
    KeyCanary,
    Rotation,
    VerificationRecord,
)

__all__ = [
    "AuditRepository",
    "ConnectionRepository",
    "CredentialRepository",
    "InFlightRepository",
    "RotationRepository",
    "VerificationRepository",
]

_IN_CHUNK = 500
"""Ids per IN (…) list: well under SQLite's and PostgreSQL's bound-parameter limits."""


def _is_name_conflict(error: IntegrityError) -> bool:
    # PostgreSQL (psycopg) names the violated constraint in its diagnostics; SQLite names an
    # expression index in the message: "UNIQUE constraint failed: index '<name>'".
    diag = getattr(error.orig, "diag", None)
    if diag is not None and getattr(diag, "constraint_name", None) == NAME_INDEX:
        return True
    # SQLite names the index's columns rather than the index.
    message = str(error.orig)
    return NAME_INDEX in message or "connections.name_key" in message


def _unstorable(*values: str) -> bool:
    """Whether a looked-up id or name holds NUL, which no stored text does (PostgreSQL refuses it
    in text, and names are checked before they are stored): such a lookup finds nothing, rather
    than fail on PostgreSQL. Ids and names come from Slack payloads, so they can hold anything."""
    return any("\x00" in value for value in values)


class ConnectionRepository:
    """Connections, always looked up within one workspace."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, connection: Connection) -> None:
        """Insert ``connection`` now; raises :class:`NameTaken` if its name is held in the workspace.

        The insert runs in a savepoint, so after :class:`NameTaken` the surrounding transaction is
        still usable (for example to record the failure in the audit log).
        """
        try:
            async with self._session.begin_nested():
                self._session.add(connection)
        except IntegrityError as error:
            if _is_name_conflict(error):
                raise NameTaken(connection.name) from None
            raise

    async def get(self, team_id: str, connection_id: str) -> Connection | None:
        """The connection with this id in this workspace; ``None`` for another team's id."""
        if _unstorable(connection_id):
            return None
        statement = select(Connection).where(Connection.id == connection_id, Connection.team_id == team_id)
        return await self._session.scalar(statement)

    async def find_by_name(self, team_id: str, name: str) -> Connection | None:
        """The connection currently holding ``name`` (case-insensitively) in the workspace, if any."""
        if _unstorable(name):
            return None
        statement = select(Connection).where(
            Connection.team_id == team_id,
            Connection.name_key == name_key(name),
            Connection.status.in_(_name_holding_statuses()),
        )
        return await self._session.scalar(statement)

    async def latest_by_name(self, team_id: str, name: str) -> Connection | None:
        """The most recently created connection named ``name`` (case-insensitively) in the
        workspace, in any status: a rejected or expired connection stays findable by its name."""
        if _unstorable(name):
            return None
        statement = (
            select(Connection)
            .where(Connection.team_id == team_id, Connection.name_key == name_key(name))
            .order_by(Connection.created_at.desc(), Connection.id.desc())
            .limit(1)
        )
        return await self._session.scalar(statement)

    async def name_taken(self, team_id: str, name: str) -> bool:
        """Whether a connection holding its name (see :attr:`Status.holds_name`) uses ``name``,
        compared case-insensitively. Rejected, expired and revoked connections do not count."""
        if _unstorable(name):
            return False
        statement = select(
            exists().where(
                Connection.team_id == team_id,
                Connection.name_key == name_key(name),
                Connection.status.in_(_name_holding_statuses()),
            )
        )
        return bool(await self._session.scalar(statement))

    async def count(self, team_id: str) -> int:
        """How many connections the workspace has, in any status."""
        total = await self._session.scalar(
            select(func.count()).select_from(Connection).where(Connection.team_id == team_id)
        )
        return int(total or 0)

    async def list_page(
        self,
        team_id: str,
        page: int,
        size: int,
        *,
        statuses: Collection[Status] | None = None,
    ) -> tuple[list[Connection], int]:
        """Page ``page`` (from 1) of the workspace's connections, newest first, and the total count.

        ``statuses`` limits the list to those statuses; by default every connection is listed.
        """
        if page < 1 or size < 1:
            raise ValueError("page and size must be at least 1")
        conditions = [Connection.team_id == team_id]
        if statuses is not None:
            conditions.append(Connection.status.in_(list(statuses)))
        total = await self._session.scalar(select(func.count()).select_from(Connection).where(*conditions))
        statement = (
            select(Connection)
            .where(*conditions)
            .order_by(Connection.created_at.desc(), Connection.id.desc())
            .limit(size)
            .offset((page - 1) * size)
        )
        rows = await self._session.scalars(statement)
        return list(rows), int(total or 0)

    async def list_matching(
        self,
        team_id: str,
        limit: int,
        *,
        created_by: str | None = None,
        statuses: Collection[Status] | None = None,
        oldest_first: bool = False,
    ) -> tuple[list[Connection], int]:
        """At most ``limit`` of the workspace's connections, newest first (oldest first with
        ``oldest_first``), and how many match in all.

        ``created_by`` keeps one user's connections only; ``statuses`` keeps those statuses only.
        """
        if limit < 1:
            raise ValueError("limit must be at least 1")
        conditions = [Connection.team_id == team_id]
        if created_by is not None:
            conditions.append(Connection.created_by == created_by)
        if statuses is not None:
            conditions.append(Connection.status.in_(list(statuses)))
        total = await self._session.scalar(select(func.count()).select_from(Connection).where(*conditions))
        order = (
            (Connection.created_at.asc(), Connection.id.asc())
            if oldest_first
            else (Connection.created_at.desc(), Connection.id.desc())
        )
        statement = select(Connection).where(*conditions).order_by(*order).limit(limit)
        return list(await self._session.scalars(statement)), int(total or 0)

    async def transition(
        self,
        team_id: str,
        connection_id: str,
        from_status: Status,
        to_status: Status,
        **values: Any,
    ) -> bool:
        """Move a connection from ``from_status`` to ``to_status`` if, and only if, it is still in
        ``from_status``; ``values`` sets other columns in the same statement (see :func:`_transition`)."""
        return await _transition(
            self._session, Connection, team_id, connection_id, from_status, to_status, values
        )

    async def pending_created_before(self, cutoff: datetime, limit: int) -> list[Connection]:
        """Connections awaiting approval since before ``cutoff`` (see :func:`_pending_before`)."""
        return await _pending_before(self._session, Connection, Status.PENDING_APPROVAL, cutoff, limit)

    async def lock(self, team_id: str, connection_id: str) -> Connection | None:
        """The connection, locked until the transaction ends (``SELECT … FOR UPDATE`` on
        PostgreSQL; SQLite's write transaction already holds the database), so read-modify-write
        of its health by two re-tests at once happens one after the other."""
        if _unstorable(connection_id):
            return None
        statement = (
            select(Connection)
            .where(Connection.id == connection_id, Connection.team_id == team_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        return await self._session.scalar(statement)

    async def active(self, team_id: str) -> list[Connection]:
        """Every active connection of the workspace, oldest first (for ``test all``)."""
        statement = (
            select(Connection)
            .where(Connection.team_id == team_id, Connection.status == Status.ACTIVE)
            .order_by(Connection.created_at, Connection.id)
        )
        return list(await self._session.scalars(statement))

    async def count_active(self, team_id: str) -> int:
        total = await self._session.scalar(
            select(func.count())
            .select_from(Connection)
            .where(Connection.team_id == team_id, Connection.status == Status.ACTIVE)
        )
        return int(total or 0)

    async def schedule_unscheduled(
        self, now: datetime, interval: timedelta, limit: int, rng: random.Random | None = None
    ) -> int:
        """Give active connections that have no next check yet (just approved, or from before the
        schedule existed) one at a random point within the next ``interval``, so re-tests are
        spread over the interval rather than all due at once. Returns how many it scheduled.

        Each update is conditional on the column still being empty, so two replicas doing this at
        once schedule each connection once."""
        draw = rng or random
        ids = list(
            await self._session.scalars(
                select(Connection.id)
                .where(Connection.status == Status.ACTIVE, Connection.next_check_at.is_(None))
                .order_by(Connection.created_at, Connection.id)
                .limit(limit)
            )
        )
        scheduled = 0
        for connection_id in ids:
            when = now + interval * draw.random()
            result = await self._session.execute(
                update(Connection)
                .where(Connection.id == connection_id, Connection.next_check_at.is_(None))
                .values(next_check_at=when)
                .returning(Connection.id)
            )
            scheduled += result.first() is not None
        return scheduled

    async def claim_due(self, now: datetime, interval: timedelta, limit: int) -> list[Connection]:
        """Claim up to ``limit`` active connections of every workspace whose next check is due,
        earliest first, by moving their next check one ``interval`` on; returns them.

        On PostgreSQL the candidates are read with ``FOR UPDATE SKIP LOCKED``: replicas claiming at
        the same moment each get different rows, without waiting on each other, and the row locks
        last until the claim commits, so a check runs once per cycle in total, however many
        processes run the schedule. (SQLite ignores the clause; its write transactions are
        serialised by the database lock, which gives the same guarantee on one host.)"""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        due = list(
            await self._session.scalars(
                select(Connection)
                .where(Connection.status == Status.ACTIVE, Connection.next_check_at <= now)
                .order_by(Connection.next_check_at, Connection.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
                .execution_options(populate_existing=True)
            )
        )
        for connection in due:
            connection.next_check_at = now + interval
        await self._session.flush()
        return due

    async def claim_rotation_reminders(
        self, now: datetime, older_than: datetime, reminded_before: datetime, limit: int
    ) -> list[Connection]:
        """Claim active connections whose credential was stored before ``older_than`` and whose
        owner was not reminded since ``reminded_before``, marking them reminded now (``SKIP
        LOCKED`` as in :meth:`claim_due`, so each reminder is sent by one replica)."""
        reminded = Connection.rotation_reminded_at
        due = list(
            await self._session.scalars(
                select(Connection)
                .where(
                    Connection.status == Status.ACTIVE,
                    Connection.credential_created_at < older_than,
                    (reminded.is_(None)) | (reminded < reminded_before),
                )
                .order_by(Connection.credential_created_at, Connection.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
                .execution_options(populate_existing=True)
            )
        )
        for connection in due:
            connection.rotation_reminded_at = now
        await self._session.flush()
        return due


def _name_holding_statuses() -> list[Status]:
    return [status for status in Status if status.holds_name]


class CredentialRepository:
    """Encrypted credential fields, by connection and version."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session
        self.destroyed = 0
        """How many ciphertexts this transaction deleted (the unit of work scrubs after commit)."""

    async def add(self, credential: Credential) -> None:
        """Insert ``credential`` now (a repeated connection, version and field is an IntegrityError)."""
        self._session.add(credential)
        await self._session.flush()

    async def for_connections(self, versions: Sequence[tuple[str, int]]) -> dict[str, list[Credential]]:
        """The fields of the given (connection id, version) pairs, by connection id, read in a few
        queries however many connections are asked for."""
        wanted = dict(versions)
        found: dict[str, list[Credential]] = {connection_id: [] for connection_id in wanted}
        ids = list(wanted)
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = ids[start : start + _IN_CHUNK]
            rows = await self._session.scalars(
                select(Credential)
                .where(Credential.connection_id.in_(chunk))
                .order_by(Credential.connection_id, Credential.field)
            )
            for row in rows:
                if wanted.get(row.connection_id) == row.version:
                    found[row.connection_id].append(row)
        return found

    async def any_exists(self) -> bool:
        """Whether the database holds any ciphertext at all (decides if a new master key may be made)."""
        return bool(await self._session.scalar(select(exists().select_from(Credential))))

    async def latest(self) -> Credential | None:
        """The most recently stored credential field: a start-up probe that the master key opens."""
        statement = select(Credential).order_by(Credential.created_at.desc(), Credential.id.desc()).limit(1)
        return await self._session.scalar(statement)

    async def delete_other_versions(self, connection_id: str, keep: int) -> int:
        """Destroy every version of a connection's ciphertexts but ``keep``; how many fields went."""
        statement = delete(Credential).where(
            Credential.connection_id == connection_id, Credential.version != keep
        )
        result = await self._session.execute(statement.returning(Credential.id))
        count = len(result.all())
        self.destroyed += count
        return count

    async def delete_for(self, connection_id: str, version: int | None = None) -> int:
        """Destroy the ciphertexts of one version (or of every version) of a connection.

        Returns how many fields were deleted.
        """
        statement = delete(Credential).where(Credential.connection_id == connection_id)
        if version is not None:
            statement = statement.where(Credential.version == version)
        result = await self._session.execute(statement.returning(Credential.id))
        count = len(result.all())
        self.destroyed += count
        return count

    async def lock_all(self) -> list[Credential]:
        """Every credential field, each row locked until the transaction ends (PostgreSQL), for
        re-sealing under a new master key."""
        statement = select(Credential).order_by(Credential.id).with_for_update()
        return list(await self._session.scalars(statement))

    async def replace_ciphertext(
        self, credential: Credential, key_id: str, nonce: bytes, ciphertext: bytes
    ) -> None:
        """Store a re-sealed value in place of the row's ciphertext. The old one counts as destroyed,
        so the unit of work scrubs SQLite's write-ahead log after the commit."""
        credential.key_id, credential.nonce, credential.ciphertext = key_id, nonce, ciphertext
        self.destroyed += 1


class RotationRepository:
    """Credential rotations waiting for, or past, an admin's decision."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, rotation: Rotation) -> None:
        """Insert ``rotation`` now; raises :class:`RotationPending` if the connection already has
        one waiting (in a savepoint, so the transaction stays usable)."""
        try:
            async with self._session.begin_nested():
                self._session.add(rotation)
        except IntegrityError as error:
            message = str(error.orig)
            diag = getattr(error.orig, "diag", None)
            if (
                getattr(diag, "constraint_name", None) == ROTATION_PENDING_INDEX
                or ROTATION_PENDING_INDEX in message
                or "rotations.connection_id" in message
            ):
                raise RotationPending(rotation.connection_id) from None
            raise

    async def get(self, team_id: str, rotation_id: str) -> Rotation | None:
        if _unstorable(rotation_id):
            return None
        statement = select(Rotation).where(Rotation.id == rotation_id, Rotation.team_id == team_id)
        return await self._session.scalar(statement)

    async def latest_version(self, connection_id: str) -> int:
        """The highest credential version any rotation of the connection used (0 if none)."""
        value = await self._session.scalar(
            select(func.max(Rotation.version)).where(Rotation.connection_id == connection_id)
        )
        return int(value or 0)

    async def pending_for(self, team_id: str, connection_id: str) -> Rotation | None:
        """The rotation of this connection waiting for approval, if any."""
        if _unstorable(connection_id):
            return None
        statement = select(Rotation).where(
            Rotation.team_id == team_id,
            Rotation.connection_id == connection_id,
            Rotation.status == RotationStatus.PENDING_APPROVAL,
        )
        return await self._session.scalar(statement)

    async def transition(
        self,
        team_id: str,
        rotation_id: str,
        from_status: RotationStatus,
        to_status: RotationStatus,
        **values: Any,
    ) -> bool:
        """Conditional status change, as :meth:`ConnectionRepository.transition`."""
        return await _transition(
            self._session, Rotation, team_id, rotation_id, from_status, to_status, values
        )

    async def pending_created_before(self, cutoff: datetime, limit: int) -> list[Rotation]:
        """Rotations waiting since before ``cutoff`` (see :func:`_pending_before`)."""
        return await _pending_before(self._session, Rotation, RotationStatus.PENDING_APPROVAL, cutoff, limit)


async def _transition(
    session: AsyncSession,
    model: type[Connection] | type[Rotation],
    team_id: str,
    row_id: str,
    from_status: str,
    to_status: str,
    values: dict[str, Any],
) -> bool:
    """The one conditional ``UPDATE … WHERE status = :from`` of every status change: of two
    concurrent identical transitions (two clicks on Approve) exactly one returns ``True``. ``False``
    also means the row is not in this workspace or does not exist. ``updated_at`` is set to now
    unless ``values`` sets it."""
    statement = (
        update(model)
        .where(model.id == row_id, model.team_id == team_id, model.status == from_status)
        .values({"updated_at": utcnow(), **values, "status": to_status})
        .returning(model.id)
    )
    return (await session.execute(statement)).first() is not None


async def _pending_before(
    session: AsyncSession,
    model: type[Connection] | type[Rotation],
    pending: str,
    cutoff: datetime,
    limit: int,
) -> list[Any]:
    """Rows of *every* workspace still ``pending`` and created before ``cutoff``, oldest first, at
    most ``limit`` of them: for expiry, a system job no Slack user can reach, hence no ``team_id``.
    A range on ``created_at`` with an equality on ``status`` (no function around either), so an index
    on ``(status, created_at)`` serves it."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    statement = (
        select(model)
        .where(model.status == pending, model.created_at < cutoff)
        .order_by(model.created_at, model.id)
        .limit(limit)
    )
    return list(await session.scalars(statement))


class KeyCanaryRepository:
    """The one sealed canary that ties the database to its master key."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self) -> KeyCanary | None:
        return await self._session.get(KeyCanary, 1)

    async def add(self, canary: KeyCanary) -> None:
        """Insert the canary; raises :class:`CanaryExists` if another process did first."""
        try:
            async with self._session.begin_nested():
                self._session.add(canary)
        except IntegrityError:
            raise CanaryExists() from None

    async def lock(self) -> KeyCanary | None:
        """The canary, its row locked until the transaction ends (PostgreSQL; on SQLite the write
        transaction already shuts other writers out), so two master-key rotations cannot interleave."""
        return await self._session.scalar(select(KeyCanary).where(KeyCanary.id == 1).with_for_update())

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


class VerificationRepository:
    """The verification history of connections."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, record: VerificationRecord) -> None:
        """Insert ``record`` now."""
        self._session.add(record)
        await self._session.flush()

    async def latest_with_trigger(
        self, team_id: str, connection_id: str, trigger: str
    ) -> VerificationRecord | None:
        """The newest verification of a connection that ran for ``trigger`` (e.g. a rotation)."""
        statement = (
            select(VerificationRecord)
            .where(
                VerificationRecord.team_id == team_id,
                VerificationRecord.connection_id == connection_id,
                VerificationRecord.trigger == trigger,
            )
            .order_by(VerificationRecord.created_at.desc(), VerificationRecord.id.desc())
            .limit(1)
        )
        return await self._session.scalar(statement)

    async def recent(self, team_id: str, connection_id: str, limit: int = 10) -> list[VerificationRecord]:
        """The latest ``limit`` verifications of a connection in this workspace, newest first."""
        statement = (
            select(VerificationRecord)
            .where(VerificationRecord.team_id == team_id, VerificationRecord.connection_id == connection_id)
            .order_by(VerificationRecord.created_at.desc(), VerificationRecord.id.desc())
            .limit(limit)
        )
        return list(await self._session.scalars(statement))


class AuditRepository:
    """The audit trail: append and read, never update."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, event: AuditEvent) -> None:
        """Append ``event`` now (its ``id`` is assigned by the database)."""
        self._session.add(event)
        await self._session.flush()

    async def for_connection(self, team_id: str, connection_id: str, limit: int = 50) -> list[AuditEvent]:
        """The latest ``limit`` events about a connection in this workspace, newest first."""
        statement = (
            select(AuditEvent)
            .where(AuditEvent.team_id == team_id, AuditEvent.connection_id == connection_id)
            .order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc())
            .limit(limit)
        )
        return list(await self._session.scalars(statement))

    async def all_ordered(self, *, batch_size: int = 500) -> AsyncIterator[AuditEvent]:
        """Every event of every workspace in the order it was recorded, streamed in batches.

        Use as ``async for event in audit.all_ordered(): …`` inside one session.
        """
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


def _is_in_flight_conflict(error: IntegrityError) -> bool:
    # As _is_name_conflict: PostgreSQL names the constraint, SQLite names the constrained columns.
    diag = getattr(error.orig, "diag", None)
    if getattr(diag, "constraint_name", None) in (IN_FLIGHT_NAME_KEY, IN_FLIGHT_CONNECTION_KEY):
        return True
    message = str(error.orig)
    return any(
        marker in message
        for marker in (
            IN_FLIGHT_NAME_KEY,
            IN_FLIGHT_CONNECTION_KEY,
            "in_flight_verifications.name_key",
            "in_flight_verifications.connection_id",
        )
    )


class InFlightRepository:
    """Verifications users are waiting for (see :class:`~bot.store.models.InFlightVerification`).

    Unlike the other repositories, the sweeps here work across workspaces: they are system jobs
    that no Slack user can reach."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def claim(self, row: InFlightVerification) -> bool:
        """Insert ``row`` now; ``False`` (and nothing inserted) if another verification holds the
        same name in the workspace, or the same connection.

        On PostgreSQL an insert that meets an uncommitted row with the same key waits for that
        transaction to end, so a conflict is seen even between two claims made at the same moment.
        The insert runs in a savepoint: after ``False`` the transaction is still usable."""
        try:
            async with self._session.begin_nested():
                self._session.add(row)
        except IntegrityError as error:
            if _is_in_flight_conflict(error):
                return False
            raise
        return True

    async def release(self, row_id: str) -> bool:
        """Delete the row; ``False`` if it was already gone (a sweep took it as interrupted)."""
        result = await self._session.execute(
            delete(InFlightVerification)
            .where(InFlightVerification.id == row_id)
            .returning(InFlightVerification.id)
        )
        return result.first() is not None

    async def take(self, row_id: str) -> InFlightVerification | None:
        """Delete the row and return it as it was; ``None`` if someone else deleted it first, so of
        two sweeps (two replicas) only one tells its user."""
        row = await self._session.get(InFlightVerification, row_id, populate_existing=True)
        if row is None or not await self.release(row_id):
            return None
        return row

    async def holds(self, row_id: str) -> bool:
        """Whether the row is still there (no sweep took it, no outcome ended it)."""
        found = await self._session.scalar(
            select(InFlightVerification.id).where(InFlightVerification.id == row_id)
        )
        return found is not None

    async def on_machine(
        self, host: str, boot_id: str | None, pid_namespace: int | None, limit: int
    ) -> list[InFlightVerification]:
        """Rows of processes on ``host`` in the same boot and pid namespace (an unknown one
        matches only an unknown one), oldest first."""
        statement = (
            select(InFlightVerification)
            .where(
                InFlightVerification.host == host,
                InFlightVerification.boot_id.is_not_distinct_from(boot_id),
                InFlightVerification.pid_namespace.is_not_distinct_from(pid_namespace),
            )
            .order_by(InFlightVerification.started_at, InFlightVerification.id)
            .limit(limit)
        )
        return list(await self._session.scalars(statement))

    async def past_deadline(self, now: datetime, limit: int) -> list[InFlightVerification]:
        """Rows of every process and workspace whose deadline is before ``now``, oldest first."""
        statement = (
            select(InFlightVerification)
            .where(InFlightVerification.deadline < now)
            .order_by(InFlightVerification.deadline, InFlightVerification.id)
            .limit(limit)
        )
        return list(await self._session.scalars(statement))
