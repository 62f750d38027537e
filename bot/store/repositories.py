"""Queries, one repository per table.

A repository takes an :class:`~sqlalchemy.ext.asyncio.AsyncSession`, builds statements and may
flush, but never commits: the unit of work (:mod:`bot.store.uow`) owns the transaction, so one use
case's writes land together or not at all. Every query that a Slack user can reach is scoped by
``team_id``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from datetime import datetime
from typing import Any

from sqlalchemy import delete, exists, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.domain import Status, name_key
from bot.store.db import utcnow
from bot.store.errors import CanaryExists, NameTaken
from bot.store.models import NAME_INDEX, AuditEvent, Connection, Credential, KeyCanary, VerificationRecord

__all__ = [
    "AuditRepository",
    "ConnectionRepository",
    "CredentialRepository",
    "VerificationRepository",
]


def _is_name_conflict(error: IntegrityError) -> bool:
    # PostgreSQL (psycopg) names the violated constraint in its diagnostics; SQLite names an
    # expression index in the message: "UNIQUE constraint failed: index '<name>'".
    diag = getattr(error.orig, "diag", None)
    if diag is not None and getattr(diag, "constraint_name", None) == NAME_INDEX:
        return True
    # SQLite names the index's columns rather than the index.
    message = str(error.orig)
    return NAME_INDEX in message or "connections.name_key" in message


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
        statement = select(Connection).where(Connection.id == connection_id, Connection.team_id == team_id)
        return await self._session.scalar(statement)

    async def find_by_name(self, team_id: str, name: str) -> Connection | None:
        """The connection currently holding ``name`` (case-insensitively) in the workspace, if any."""
        statement = select(Connection).where(
            Connection.team_id == team_id,
            Connection.name_key == name_key(name),
            Connection.status.in_(_name_holding_statuses()),
        )
        return await self._session.scalar(statement)

    async def latest_by_name(self, team_id: str, name: str) -> Connection | None:
        """The most recently created connection named ``name`` (case-insensitively) in the
        workspace, in any status: a rejected or expired connection stays findable by its name."""
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
        ``from_status``; ``values`` sets other columns in the same statement.

        One conditional ``UPDATE … WHERE status = :from``: of two concurrent identical transitions
        (two clicks on Approve) exactly one returns ``True``. ``False`` also means the connection is
        not in this workspace or does not exist. ``updated_at`` is set to now unless ``values``
        sets it.
        """
        statement = (
            update(Connection)
            .where(
                Connection.id == connection_id,
                Connection.team_id == team_id,
                Connection.status == from_status,
            )
            .values({"updated_at": utcnow(), **values, "status": to_status})
            .returning(Connection.id)
        )
        result = await self._session.execute(statement)
        return result.first() is not None

    async def pending_created_before(self, cutoff: datetime, limit: int) -> list[Connection]:
        """Connections of *every* workspace still awaiting approval and created before ``cutoff``,
        oldest first, at most ``limit`` of them.

        For expiry, a system job that no Slack user can reach, hence no ``team_id``. A plain range
        on ``created_at`` with an equality on ``status`` (no function around either column), so an
        index on ``(status, created_at)`` can serve it; ``limit`` keeps each run bounded.
        """
        if limit < 1:
            raise ValueError("limit must be at least 1")
        statement = (
            select(Connection)
            .where(Connection.status == Status.PENDING_APPROVAL, Connection.created_at < cutoff)
            .order_by(Connection.created_at, Connection.id)
            .limit(limit)
        )
        return list(await self._session.scalars(statement))


def _name_holding_statuses() -> list[Status]:
    return [status for status in Status if status.holds_name]


class CredentialRepository:
    """Encrypted credential fields, by connection and version."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, credential: Credential) -> None:
        """Insert ``credential`` now (a repeated connection, version and field is an IntegrityError)."""
        self._session.add(credential)
        await self._session.flush()

    async def for_version(self, connection_id: str, version: int) -> list[Credential]:
        """The fields of one credential version, ordered by field name."""
        statement = (
            select(Credential)
            .where(Credential.connection_id == connection_id, Credential.version == version)
            .order_by(Credential.field)
        )
        return list(await self._session.scalars(statement))

    async def any_exists(self) -> bool:
        """Whether the database holds any ciphertext at all (decides if a new master key may be made)."""
        return bool(await self._session.scalar(select(exists().select_from(Credential))))

    async def latest(self) -> Credential | None:
        """The most recently stored credential field: a start-up probe that the master key opens."""
        statement = select(Credential).order_by(Credential.created_at.desc(), Credential.id.desc()).limit(1)
        return await self._session.scalar(statement)

    async def list_all(self) -> list[Credential]:
        """Every credential field, in a stable order (for re-encryption under a new master key)."""
        return list(await self._session.scalars(select(Credential).order_by(Credential.id)))

    async def delete_for(self, connection_id: str, version: int | None = None) -> int:
        """Destroy the ciphertexts of one version (or of every version) of a connection.

        Returns how many fields were deleted.
        """
        statement = delete(Credential).where(Credential.connection_id == connection_id)
        if version is not None:
            statement = statement.where(Credential.version == version)
        result = await self._session.execute(statement.returning(Credential.id))
        return len(result.all())


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


class VerificationRepository:
    """The verification history of connections."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, record: VerificationRecord) -> None:
        """Insert ``record`` now."""
        self._session.add(record)
        await self._session.flush()

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
