"""Alembic environment for connections-bot.

The database URL comes, in order, from ``config.attributes["url"]`` (set by
:func:`bot.store.migrate.alembic_config`), or ``DATABASE_URL`` in the environment or in ``.env``
(for developers running ``alembic`` by hand), or the bot's default SQLite file. Only the URL is read:
no Slack token is needed to migrate. A live connection in ``config.attributes["connection"]`` is
used as is (Alembic cookbook, "Sharing a Connection across one or more programmatic migration
commands").
"""

from __future__ import annotations

import os
from logging.config import fileConfig

from alembic import context
from dotenv import dotenv_values
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.pool import NullPool

import bot.store.models  # noqa: F401  (defines the tables on Base.metadata)
from bot.settings import DEFAULT_DATABASE_URL
from bot.store.db import Base, sync_url

config = context.config
target_metadata = Base.metadata

# Any constant works, as long as every migrating process uses the same one.
_POSTGRES_MIGRATION_LOCK = 7_406_215_921

if config.config_file_name is not None:
    # Only under the alembic CLI: the bot configures its own logging and must keep its filters.
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _url() -> str:
    url = config.attributes.get("url")
    if url:
        return str(url)
    user_url = os.environ.get("DATABASE_URL") or dotenv_values(".env").get("DATABASE_URL")
    return sync_url(user_url or DEFAULT_DATABASE_URL)


def run_migrations_offline() -> None:
    """Emit the SQL to stdout (``alembic upgrade head --sql``) without connecting."""
    url = _url()
    context.configure(
        url=url,
        target_metadata=target_metadata,
        compare_type=True,
        render_as_batch=url.startswith("sqlite"),
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        # SQLite cannot ALTER most things; batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Two processes starting at once: the second waits, then finds nothing left to do.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _POSTGRES_MIGRATION_LOCK})
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations on a live connection: the one passed in, or a new one."""
    shared = config.attributes.get("connection")
    if shared is not None:
        _run(shared)
        return
    engine = create_engine(_url(), poolclass=NullPool, hide_parameters=True)
    try:
        with engine.connect() as connection:
            _run(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
