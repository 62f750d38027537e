"""Shared pytest fixtures.

Database fixtures live in ``tests/support/databases.py`` (see its docstring) and are imported here
so every test can ask for them by name:

* ``database_url`` – a fresh, empty SQLite file or PostgreSQL database per test (both, parametrised);
* ``migrated_database_url`` – the same, migrated to head;
* ``db`` – a ``bot.store.Database`` on it.
"""

from tests.support.databases import (  # noqa: F401  (fixtures are found by name)
    database_url,
    db,
    migrated_database_url,
    migrated_postgres_template,
    migrated_sqlite_template,
    postgres_admin_url,
)
from tests.support.moto_server import aws_server  # noqa: F401  (a session fixture per worker)
from tests.support.openbao_server import openbao_server  # noqa: F401  (a session fixture per worker)
