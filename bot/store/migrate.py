"""Running the Alembic migrations from the bot's own code (``connections-bot migrate``, tests).

The Alembic configuration is built in code rather than read from ``alembic.ini``, so an installed
bot needs no ini file; ``alembic.ini`` at the repository root is only for developers running
``alembic`` by hand. Migrations use sync drivers; call these functions from a thread (for example
``await asyncio.to_thread(upgrade_to_head, url)``) when an event loop is running.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.pool import NullPool

import bot
from bot.store.db import CONNECT_TIMEOUT_SECONDS, safe_url, sync_url
from bot.store.errors import MigrationError

__all__ = [
    "alembic_config",
    "current_revision",
    "head_revision",
    "is_at_head",
    "migrations_directory",
    "upgrade_to_head",
]

FILE_TEMPLATE = "%%(year)d-%%(month).2d-%%(day).2d_%%(slug)s"


def migrations_directory() -> Path:
    """Where the migration scripts are: ``bot/migrations`` in an installed wheel, else the
    repository's ``migrations`` directory."""
    packaged = Path(bot.__file__).resolve().parent / "migrations"
    if (packaged / "env.py").is_file():
        return packaged
    return Path(__file__).resolve().parents[2] / "migrations"


def alembic_config(url: str) -> Config:
    """An Alembic configuration for a user-style ``DATABASE_URL``. The sync URL travels in
    ``config.attributes["url"]`` (read by ``migrations/env.py``), not in the ini options, so a
    password with ``%`` in it needs no escaping and is never written out."""
    config = Config()
    config.set_main_option("script_location", str(migrations_directory()))
    config.set_main_option("file_template", FILE_TEMPLATE)
    config.attributes["url"] = _migration_url(url)
    return config


def _migration_url(url: str) -> str:
    """The sync URL for migrations. On PostgreSQL it has a connect timeout (unless ``DATABASE_URL``
    sets one): a server that accepts the connection but never answers (a hung host, a firewall
    dropping packets) would otherwise stall start-up for good."""
    parsed = make_url(sync_url(url))
    if parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
        parsed = parsed.update_query_dict({"connect_timeout": str(CONNECT_TIMEOUT_SECONDS)})
    return parsed.render_as_string(hide_password=False)


@contextmanager
def _reported(url: str, doing: str) -> Iterator[None]:
    """Turn driver and Alembic failures into :class:`MigrationError` naming the database (password
    masked) and the first line of the driver's message (no SQL, no parameters)."""
    try:
        yield
    except (SQLAlchemyError, CommandError, OSError) as error:
        cause = (error.orig or error) if isinstance(error, DBAPIError) else error
        lines = str(cause).strip().splitlines()
        first = f"{type(cause).__name__}: {lines[0]}" if lines else type(cause).__name__
        raise MigrationError(f"Could not {doing} {safe_url(url)}: {first}") from error


def upgrade_to_head(url: str) -> None:
    """Apply every pending migration (none when the database is at head). Raises
    :class:`DatabaseUrlError` for an unusable URL and :class:`MigrationError` when the database
    cannot be reached or a migration fails (PostgreSQL rolls the whole upgrade back)."""
    config = alembic_config(url)
    with _reported(url, "migrate"):
        command.upgrade(config, "head")


def head_revision() -> str | None:
    """The newest revision among the migration scripts."""
    return ScriptDirectory(str(migrations_directory())).get_current_head()


@contextmanager
def _migration_context(url: str) -> Iterator[MigrationContext]:
    with _reported(url, "read the schema revision of"):
        engine = create_sync_engine(_migration_url(url), poolclass=NullPool, hide_parameters=True)
        try:
            with engine.connect() as connection:
                yield MigrationContext.configure(connection)
        finally:
            engine.dispose()


def current_revision(url: str) -> str | None:
    """The revision the database is at, ``None`` if never migrated; :class:`MigrationError` if unreachable."""
    with _migration_context(url) as context:
        return context.get_current_revision()


def is_at_head(url: str) -> bool:
    """Whether the database schema matches the newest migration (the bot refuses to run otherwise);
    :class:`MigrationError` if the database cannot be reached."""
    script = ScriptDirectory.from_config(alembic_config(url))
    with _migration_context(url) as context:
        heads = context.get_current_heads()
    return set(heads) == set(script.get_heads())
