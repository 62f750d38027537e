"""The database plumbing: URL handling, the async engine, the declarative base and column types.

Users write plain URLs in ``DATABASE_URL`` (``sqlite:///connections.db``,
``postgresql://user@host/db``, ``postgres://…``). The bot runs on async drivers (aiosqlite,
psycopg 3) and Alembic on sync ones (sqlite3, psycopg 3), so both forms are derived here.
"""

from __future__ import annotations

import enum
from contextlib import closing
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

from sqlalchemy import URL, DateTime, MetaData, String, event, make_url
from sqlalchemy.engine import Connection as SyncConnection
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import DeclarativeBase, MappedAsDataclass
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.types import TypeDecorator

from bot.store.errors import DatabaseUrlError

__all__ = [
    "NAMING_CONVENTION",
    "SQLITE_BUSY_TIMEOUT_MS",
    "Base",
    "StrEnumType",
    "UtcDateTime",
    "async_url",
    "create_engine",
    "for_writing",
    "is_sqlite",
    "safe_url",
    "sync_url",
]

SQLITE_BUSY_TIMEOUT_MS: Final = 15_000
"""How long a SQLite connection waits for another writer before giving up with "database is locked"."""
CONNECT_TIMEOUT_SECONDS: Final = 10
"""How long PostgreSQL may take to accept a connection before the request fails (and says so)."""

_KINDS: Final = {
    **dict.fromkeys(("sqlite", "sqlite+pysqlite", "sqlite+aiosqlite"), "sqlite"),
    **dict.fromkeys(("postgresql", "postgres", "postgresql+psycopg"), "postgresql"),
}
_SUPPORTED: Final = "use sqlite:///path.db or postgresql://user@host/db"

# The execution option that asks the SQLite "begin" hook for a write transaction (see for_writing).
_SQLITE_BEGIN_OPTION: Final = "connections_bot_sqlite_begin"
# The execution option that gives one transaction its own SQLite busy timeout (see for_writing).
_SQLITE_BUSY_OPTION: Final = "connections_bot_sqlite_busy_ms"

NAMING_CONVENTION: Final = {
    "ix": "ix_%(column_0_label)s",
    # column_0_N_name rather than column_0_name: the multi-column unique keys stay readable.
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _parse(url: str) -> URL:
    # Error messages name the scheme at most: the URL itself may carry a password.
    if not url or not url.strip():
        raise DatabaseUrlError(f"DATABASE_URL is empty; {_SUPPORTED}")
    try:
        return make_url(url.strip())
    except ArgumentError:
        raise DatabaseUrlError(f"DATABASE_URL is not a valid database URL; {_SUPPORTED}") from None


def _kind(parsed: URL) -> str:
    scheme = parsed.drivername.lower()
    if scheme not in _KINDS:
        raise DatabaseUrlError(f"DATABASE_URL uses {scheme!r}, which the bot does not support; {_SUPPORTED}")
    return _KINDS[scheme]


def _with_driver(url: str, sqlite_driver: str) -> str:
    parsed = _parse(url)
    driver = sqlite_driver if _kind(parsed) == "sqlite" else "postgresql+psycopg"
    return parsed.set(drivername=driver).render_as_string(hide_password=False)


def async_url(url: str) -> str:
    """The URL for the bot's async engine: ``sqlite+aiosqlite://…`` or ``postgresql+psycopg://…``.
    It keeps any password from ``url`` (do not log it); raises :class:`DatabaseUrlError` for
    anything but SQLite and PostgreSQL."""
    return _with_driver(url, "sqlite+aiosqlite")


def sync_url(url: str) -> str:
    """As :func:`async_url`, for Alembic's sync engine: ``sqlite://…`` or ``postgresql+psycopg://…``."""
    return _with_driver(url, "sqlite")


def safe_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, for log lines and error messages."""
    return _parse(url).render_as_string(hide_password=True)


def is_sqlite(url: str) -> bool:
    """Whether ``url`` names a SQLite database (raises :class:`DatabaseUrlError` if unsupported)."""
    return _kind(_parse(url)) == "sqlite"


def create_engine(url: str, *, pool_size: int | None = None) -> AsyncEngine:
    """The bot's async engine for a user-style ``DATABASE_URL``.

    SQLite gets foreign keys (off by default there), a busy timeout, WAL journaling for files (so
    readers are not blocked while the bot writes) and real transactions: SQLAlchemy emits ``BEGIN``
    itself, because the sqlite3 module's legacy mode skips it for SELECT and SAVEPOINT.
    PostgreSQL gets ``pool_pre_ping`` so a restarted server does not fail the next request. Both
    keep ``pool_size`` connections open (SQLAlchemy's default, 5, when not given).
    Statement parameters are kept out of logs and exception messages.
    """
    parsed = _parse(url)
    # Connections above pool_size are closed as soon as they are returned; a pool that holds as
    # many as the re-tests that record at once avoids a new connection (and, on SQLite, a new
    # thread and its PRAGMAs) per result.
    sizing: dict[str, Any] = {"pool_size": pool_size} if pool_size is not None else {}
    if _kind(parsed) == "postgresql":
        # A host that accepts the connection and never answers would hold a request (and its user)
        # for good; a URL's own connect_timeout wins.
        timeout = {} if "connect_timeout" in parsed.query else {"connect_timeout": CONNECT_TIMEOUT_SECONDS}
        return create_async_engine(
            async_url(url),
            pool_pre_ping=True,
            hide_parameters=True,
            connect_args=timeout,
            # The claims and locks are reasoned about under READ COMMITTED (each statement sees the
            # latest commits); a server whose default is stricter would turn races into errors.
            isolation_level="READ COMMITTED",
            **sizing,
        )

    # A file; an in-memory database lives in one connection (a static pool, which takes no size).
    wal = bool(parsed.database) and parsed.database != ":memory:" and parsed.query.get("mode") != "memory"
    engine = create_async_engine(async_url(url), hide_parameters=True, **(sizing if wal else {}))

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        dbapi_connection.isolation_level = None  # the "begin" hook below owns BEGIN
        with closing(dbapi_connection.cursor()) as cursor:
            cursor.execute("PRAGMA foreign_keys=ON")
            # Deleted rows (destroyed ciphertexts) are overwritten with zeros, not left in free pages.
            cursor.execute("PRAGMA secure_delete=ON")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS:d}")
            if wal:
                cursor.execute("PRAGMA journal_mode=WAL")

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: SyncConnection) -> None:
        options = connection.get_execution_options()
        # Set before every BEGIN, so a transaction that asked for a shorter wait leaves none behind.
        busy_ms = int(options.get(_SQLITE_BUSY_OPTION, SQLITE_BUSY_TIMEOUT_MS))
        connection.exec_driver_sql(f"PRAGMA busy_timeout={busy_ms:d}")
        connection.exec_driver_sql(f"BEGIN {options.get(_SQLITE_BEGIN_OPTION, '')}".strip())

    return engine


def for_writing(engine: AsyncEngine, *, busy_timeout_ms: int | None = None) -> AsyncEngine:
    """The same engine (and pool), with SQLite transactions started as ``BEGIN IMMEDIATE``.

    A deferred SQLite transaction that reads and then writes fails at once with "database is
    locked" if another connection committed in between; taking the write lock at BEGIN makes
    concurrent writers queue behind the busy timeout instead (``busy_timeout_ms``, or
    :data:`SQLITE_BUSY_TIMEOUT_MS`). PostgreSQL ignores the options.
    """
    busy = {} if busy_timeout_ms is None else {_SQLITE_BUSY_OPTION: busy_timeout_ms}
    return engine.execution_options(**{_SQLITE_BEGIN_OPTION: "IMMEDIATE"}, **busy)


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp that goes in and comes out timezone-aware in UTC on SQLite and PostgreSQL.

    SQLite has no time zones (it stores text), so values are normalised to UTC and stored without
    an offset; PostgreSQL stores ``timestamptz``. Naive datetimes are refused rather than guessed.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("UtcDateTime needs a timezone-aware datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


E = TypeVar("E", bound=enum.StrEnum)


class StrEnumType(TypeDecorator[E]):
    """A string column read back as members of a :class:`enum.StrEnum`.

    The allowed values are enforced by a named CHECK constraint on the table, not by a native
    enum type, so adding a value is an ordinary migration on both databases.
    """

    impl = String
    cache_ok = True

    def __init__(self, enum_cls: type[E], length: int = 32) -> None:
        super().__init__(length)
        self.enum_cls = enum_cls

    def process_bind_param(self, value: E | str | None, dialect: Dialect) -> str | None:
        # Unknown values are rejected here so the CHECK constraint is a second line, not the first.
        return None if value is None else self.enum_cls(value).value

    def process_result_value(self, value: Any | None, dialect: Dialect) -> E | None:
        return None if value is None else self.enum_cls(value)


class Base(MappedAsDataclass, DeclarativeBase, kw_only=True, eq=False):
    """The declarative base for every table.

    Models are dataclasses so constructors are typed and defaults such as the id are filled in at
    construction (callers compute a ciphertext's associated data before anything is flushed).
    ``eq=False`` keeps identity equality and hashing, as the ORM expects.
    """

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
