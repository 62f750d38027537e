"""The unit of work: one transaction per use case.

::

    db = Database.from_url(settings.database_url)
    async with db.transaction() as tx:
        await tx.connections.add(connection)
        await tx.audit.add(AuditEvent(...))
    # committed here; rolled back instead if the block raised

Repositories never commit (see :mod:`bot.store.repositories`); leaving the ``async with`` block
does, so a use case's writes land together or not at all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.store.db import create_engine, for_writing
from bot.store.repositories import (
    AuditRepository,
    BulkRetestRepository,
    ConnectionRepository,
    CredentialRepository,
    InFlightRepository,
    KeyCanaryRepository,
    RotationRepository,
    SecretCleanupRepository,
    VerificationRepository,
)
from bot.store.wal import WalTruncation

__all__ = ["Database", "UnitOfWork"]

logger = logging.getLogger(__name__)


class UnitOfWork:
    """A transaction in progress: its session and the repositories bound to it."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.connections = ConnectionRepository(session)
        self.credentials = CredentialRepository(session)
        self.verifications = VerificationRepository(session)
        self.audit = AuditRepository(session)
        self.key_canary = KeyCanaryRepository(session)
        self.rotations = RotationRepository(session)
        self.in_flight = InFlightRepository(session)
        self.bulk_retests = BulkRetestRepository(session)
        self.secret_cleanups = SecretCleanupRepository(session)


class Database:
    """The engine and the sessions made from it."""

    def __init__(self, engine: AsyncEngine, *, wal: WalTruncation | None = None) -> None:
        self.engine = engine
        self.wal = wal or WalTruncation(engine)
        """Empties SQLite's write-ahead log after destroying commits (unused on PostgreSQL)."""
        # expire_on_commit=False: rows stay readable after commit, when services hand them to blocks.
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._write_sessions = async_sessionmaker(for_writing(engine), expire_on_commit=False)

    @classmethod
    def from_url(cls, url: str, *, pool_size: int | None = None) -> Database:
        """A database for a user-style ``DATABASE_URL`` (see :func:`bot.store.db.create_engine`)."""
        return cls(create_engine(url, pool_size=pool_size))

    @asynccontextmanager
    async def transaction(self, *, lock_wait_ms: int | None = None) -> AsyncIterator[UnitOfWork]:
        """One read-write transaction: commits when the block ends, rolls back if it raises.

        ``lock_wait_ms`` bounds how long it waits for a lock another transaction holds (SQLite's
        busy timeout for its BEGIN, PostgreSQL's ``lock_timeout``); past it, the database raises
        an ``OperationalError`` and nothing is written.

        After a commit that destroyed ciphertexts, a SQLite database also empties its write-ahead
        log, so the destroyed rows' old page images do not linger in the ``-wal`` file (deleted
        content in the main file is zeroed by ``secure_delete``, see create_engine); while a
        reader holds the log, it retries in the background (see :mod:`bot.store.wal`)."""
        sessions = self._write_sessions
        if lock_wait_ms is not None:
            writer = for_writing(self.engine, busy_timeout_ms=lock_wait_ms)
            sessions = async_sessionmaker(writer, expire_on_commit=False)
        async with sessions() as session:
            async with session.begin():
                if lock_wait_ms is not None and self.engine.dialect.name == "postgresql":
                    await session.execute(text(f"SET LOCAL lock_timeout = {int(lock_wait_ms):d}"))
                tx = UnitOfWork(session)
                yield tx
            if tx.credentials.destroyed and self.engine.dialect.name == "sqlite":
                await self.wal.after_destroying_commit()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[UnitOfWork]:
        """The repositories for read-only queries. Nothing is committed: closing the session at the
        end of the block rolls back its transaction, and the rows it loaded stay readable (detached)."""
        async with self.sessions() as session:
            yield UnitOfWork(session)

    async def ping(self, timeout: float = 5.0) -> bool:
        """Whether the database answers ``SELECT 1`` within ``timeout`` seconds (for ``/healthz``)."""
        try:
            async with asyncio.timeout(timeout), self.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except (SQLAlchemyError, OSError, TimeoutError) as error:
            # The type only: driver messages can name hosts and users.
            logger.warning("database ping failed: %s", type(error).__name__)
            return False
        return True

    async def dispose(self) -> None:
        """Stop the write-ahead log's retries and close every pooled connection (call once, at
        shutdown)."""
        await self.wal.close()
        await self.engine.dispose()
