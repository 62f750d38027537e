"""Column types: timestamps stay aware UTC, enum columns come back as enum members."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import text
from sqlalchemy.exc import StatementError

from bot.domain import Health, Status
from bot.store import Connection, Database
from bot.store.db import is_sqlite

TEAM = "T0000TEAM"


def make_connection(**values: object) -> Connection:
    return Connection(
        team_id=TEAM,
        name="prod-kafka",
        provider="confluent_cloud",
        created_by="U1",
        **values,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    "written",
    [
        datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC),
        datetime(2026, 7, 1, 23, 30, 0, 1, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        datetime(2026, 12, 31, 20, 0, tzinfo=timezone(timedelta(hours=-8))),
    ],
    ids=["utc", "india", "pacific"],
)
async def test_timestamps_round_trip_as_aware_utc(db: Database, written: datetime) -> None:
    connection = make_connection(last_verified_at=written, created_at=written)
    async with db.transaction() as tx:
        await tx.connections.add(connection)

    async with db.read() as tx:
        stored = await tx.connections.get(TEAM, connection.id)
    assert stored is not None
    for value in (stored.last_verified_at, stored.created_at):
        assert value == written  # the same instant
        assert value is not None and value.tzinfo is UTC
        assert value.astimezone(UTC).replace(tzinfo=None) == written.astimezone(UTC).replace(tzinfo=None)


async def test_timestamps_are_stored_as_utc(db: Database, migrated_database_url: str) -> None:
    written = datetime(2026, 7, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    connection = make_connection(created_at=written)
    async with db.transaction() as tx:
        await tx.connections.add(connection)

    async with db.read() as tx:
        hour = await tx.session.scalar(
            text(
                "SELECT strftime('%H', created_at) FROM connections"
                if is_sqlite(migrated_database_url)
                else "SELECT to_char(created_at AT TIME ZONE 'UTC', 'HH24') FROM connections"
            )
        )
    assert hour == "10"


async def test_naive_timestamps_are_refused(db: Database) -> None:
    with pytest.raises(StatementError) as caught:
        async with db.transaction() as tx:
            await tx.connections.add(make_connection(created_at=datetime(2026, 1, 1)))
    assert isinstance(caught.value.orig, ValueError)


async def test_enum_columns_load_as_members(db: Database) -> None:
    connection = make_connection(status=Status.ACTIVE, health=Health.FAILING)
    async with db.transaction() as tx:
        await tx.connections.add(connection)

    async with db.read() as tx:
        stored = await tx.connections.get(TEAM, connection.id)
        raw = (await tx.session.execute(text("SELECT status, health FROM connections"))).one()
    assert stored is not None
    assert type(stored.status) is Status and stored.status is Status.ACTIVE
    assert type(stored.health) is Health and stored.health is Health.FAILING
    assert tuple(raw) == ("active", "failing")


async def test_unknown_enum_value_is_refused_before_the_database(db: Database) -> None:
    with pytest.raises(StatementError) as caught:
        async with db.transaction() as tx:
            await tx.connections.add(make_connection(status="approved"))
    assert isinstance(caught.value.orig, ValueError)
