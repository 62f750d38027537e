"""DATABASE_URL as users write it, and the driver URLs derived from it."""

from __future__ import annotations

import pytest

from bot.store.db import async_url, is_sqlite, safe_url, sync_url
from bot.store.errors import DatabaseUrlError, StoreError

CONVERSIONS = [
    # (user URL, async engine URL, Alembic URL)
    ("sqlite:///connections.db", "sqlite+aiosqlite:///connections.db", "sqlite:///connections.db"),
    ("sqlite:////var/lib/bot/c.db", "sqlite+aiosqlite:////var/lib/bot/c.db", "sqlite:////var/lib/bot/c.db"),
    ("sqlite://", "sqlite+aiosqlite://", "sqlite://"),
    ("sqlite+aiosqlite:///a.db", "sqlite+aiosqlite:///a.db", "sqlite:///a.db"),
    (
        "postgresql://bot:pw@db.internal:5432/connections",
        "postgresql+psycopg://bot:pw@db.internal:5432/connections",
        "postgresql+psycopg://bot:pw@db.internal:5432/connections",
    ),
    (
        "postgres://bot@localhost/c",
        "postgresql+psycopg://bot@localhost/c",
        "postgresql+psycopg://bot@localhost/c",
    ),
    (
        "postgresql+psycopg://bot@localhost/c?sslmode=require",
        "postgresql+psycopg://bot@localhost/c?sslmode=require",
        "postgresql+psycopg://bot@localhost/c?sslmode=require",
    ),
]


@pytest.mark.parametrize(("url", "expected_async", "expected_sync"), CONVERSIONS)
def test_conversion(url: str, expected_async: str, expected_sync: str) -> None:
    assert async_url(url) == expected_async
    assert sync_url(url) == expected_sync


def test_password_with_reserved_characters_survives() -> None:
    assert async_url("postgresql://bot:p%40ss%2Fw@h/db") == "postgresql+psycopg://bot:p%40ss%2Fw@h/db"


def test_is_sqlite() -> None:
    assert is_sqlite("sqlite:///x.db")
    assert not is_sqlite("postgres://u@h/db")


@pytest.mark.parametrize(
    "url",
    [
        "mysql://bot:hunter2-secret@h/db",
        "postgresql+asyncpg://bot:hunter2-secret@h/db",
        "oracle://bot:hunter2-secret@h",
    ],
)
def test_unsupported_database_is_refused_without_echoing_the_password(url: str) -> None:
    with pytest.raises(DatabaseUrlError) as caught:
        sync_url(url)
    message = str(caught.value)
    assert "DATABASE_URL" in message
    assert url.split("://", 1)[0] in message
    assert "hunter2-secret" not in message
    assert isinstance(caught.value, StoreError)


@pytest.mark.parametrize("url", ["", "   ", "not a url with hunter2-secret", "://hunter2-secret@"])
def test_malformed_url_is_refused_without_echoing_it(url: str) -> None:
    with pytest.raises(DatabaseUrlError) as caught:
        async_url(url)
    assert "DATABASE_URL" in str(caught.value)
    assert "hunter2-secret" not in str(caught.value)


def test_safe_url_masks_the_password() -> None:
    assert safe_url("postgres://bot:hunter2-secret@db:5432/c") == "postgres://bot:***@db:5432/c"
    assert safe_url("sqlite:///data/connections.db") == "sqlite:///data/connections.db"
