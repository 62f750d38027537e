"""Database fixtures and helpers: every test gets its own fresh SQLite file or PostgreSQL database.

Fixtures (wired in ``tests/conftest.py``):

* ``database_url`` – parametrised over ``sqlite`` and ``postgresql``; a user-style URL
  (``sqlite:///…`` or ``postgresql://…``) to an empty database made for this test and dropped after.
  PostgreSQL comes from ``TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``);
  when it is unreachable those tests are skipped, unless ``CONNECTIONS_TEST_REQUIRE_POSTGRES=1``
  (set in CI), which makes them fail instead.
* ``migrated_database_url`` – the same, migrated to head.
* ``db`` – a :class:`bot.store.Database` on the migrated database, disposed after the test.

Helpers for tests that look for leaked secrets: :func:`dump_database_text` (every row of every
table as text) and :func:`raw_sqlite_bytes` (the SQLite files as bytes, write-ahead log included).
"""

from __future__ import annotations

import os
import secrets
import shutil
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import URL, create_engine, inspect, literal_column, make_url, select, table
from sqlalchemy.pool import NullPool

from bot.store.db import sync_url
from bot.store.migrate import upgrade_to_head
from bot.store.uow import Database

__all__ = [
    "database_url",
    "db",
    "dump_database_text",
    "migrated_database_url",
    "postgres_admin_url",
    "raw_sqlite_bytes",
    "sqlite_path",
]

DEFAULT_TEST_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
_REQUIRE_POSTGRES = "CONNECTIONS_TEST_REQUIRE_POSTGRES"


def _libpq_url(url: URL) -> str:
    """``url`` as psycopg's own connect() wants it (no SQLAlchemy driver suffix)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_admin_url() -> URL:
    """The PostgreSQL server used to create per-test databases; skips (or fails in CI) if it is down."""
    url = make_url(os.environ.get("TEST_POSTGRES_URL") or DEFAULT_TEST_POSTGRES_URL)
    try:
        with psycopg.connect(_libpq_url(url), connect_timeout=5) as connection:
            connection.execute("SELECT 1")
    except psycopg.Error as error:
        reason = (
            f"PostgreSQL at {url.host}:{url.port or 5432} is unreachable "
            f"({type(error).__name__}); set TEST_POSTGRES_URL to run the PostgreSQL store tests"
        )
        if os.environ.get(_REQUIRE_POSTGRES) == "1":
            pytest.fail(f"{reason}; {_REQUIRE_POSTGRES}=1 requires them", pytrace=False)
        pytest.skip(reason)
    return url


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    ]
)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A user-style URL to a new, empty database that is removed after the test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'connections.db'}"
        return

    admin_url: URL = request.getfixturevalue("postgres_admin_url")
    name = f"cbtest_{secrets.token_hex(6)}"
    with psycopg.connect(_libpq_url(admin_url), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _libpq_url(admin_url.set(database=name))
    finally:
        with psycopg.connect(_libpq_url(admin_url), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def migrated_sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to head once per session, for :func:`migrated_database_url` to copy."""
    path = tmp_path_factory.mktemp("template") / "migrated.db"
    upgrade_to_head(f"sqlite:///{path}")
    with sqlite3.connect(path) as connection:  # everything into the main file, so a copy is whole
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


@pytest.fixture(scope="session")
def migrated_postgres_template(postgres_admin_url: URL) -> Iterator[str]:
    """A PostgreSQL database migrated to head once per session, for :func:`migrated_database_url`
    to clone with ``CREATE DATABASE … TEMPLATE``."""
    name = f"cbtest_template_{secrets.token_hex(6)}"
    with psycopg.connect(_libpq_url(postgres_admin_url), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        upgrade_to_head(_libpq_url(postgres_admin_url.set(database=name)))
        yield name
    finally:
        with psycopg.connect(_libpq_url(postgres_admin_url), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def migrated_database_url(request: pytest.FixtureRequest, database_url: str) -> str:
    """``database_url`` with every migration applied: a copy of a database migrated once per
    session (running Alembic for every test cost most of the suite's time). The migrations
    themselves are tested from an empty database in ``tests/unit/store/test_migrations.py``."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        shutil.copyfile(request.getfixturevalue("migrated_sqlite_template"), sqlite_path(database_url))
        return database_url
    template = request.getfixturevalue("migrated_postgres_template")
    admin_url: URL = request.getfixturevalue("postgres_admin_url")
    with psycopg.connect(_libpq_url(admin_url), autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(url.database)))
        admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(url.database), sql.Identifier(template)
            )
        )
    return database_url


@pytest.fixture
async def db(migrated_database_url: str) -> AsyncIterator[Database]:
    """A :class:`Database` on a freshly migrated database."""
    database = Database.from_url(migrated_database_url)
    try:
        yield database
    finally:
        await database.dispose()


def _text(value: object) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        # Decoded, so a secret stored as raw bytes is as findable as one stored as text.
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


def dump_database_text(url: str) -> str:
    """Every row of every table (``alembic_version`` included) as text, one line per row.

    Tests search the result for secrets that should never have been stored in the clear.
    """
    engine = create_engine(sync_url(url), poolclass=NullPool)
    lines: list[str] = []
    try:
        with engine.connect() as connection:
            for name in sorted(inspect(connection).get_table_names()):
                for row in connection.execute(
                    select(literal_column("*")).select_from(table(name))
                ).mappings():
                    cells = "\t".join(f"{column}={_text(value)}" for column, value in row.items())
                    lines.append(f"{name}\t{cells}")
    finally:
        engine.dispose()
    return "\n".join(lines)


def sqlite_path(url: str) -> Path:
    """The file behind a ``sqlite:///…`` URL."""
    database = make_url(url).database
    if not database or database == ":memory:":
        raise ValueError("not a SQLite file URL")
    return Path(database)


def raw_sqlite_bytes(path: str | os.PathLike[str]) -> bytes:
    """The raw bytes of a SQLite database and its ``-wal`` and ``-journal`` files, concatenated.

    Recently written pages live in the write-ahead log until a checkpoint, so a search for a leaked
    secret has to include it.
    """
    base = Path(path)
    parts = [base, base.with_name(base.name + "-wal"), base.with_name(base.name + "-journal")]
    return b"".join(part.read_bytes() for part in parts if part.is_file())
