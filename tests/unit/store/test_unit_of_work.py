"""Database.transaction(), read(), ping() and the SQLite connection settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from bot.providers.base import Outcome
from bot.store import AuditEvent, Connection, Credential, Database, NameTaken, VerificationRecord

TEAM = "T0000TEAM"


def make_connection(name: str = "prod-kafka") -> Connection:
    return Connection(team_id=TEAM, name=name, provider="confluent_cloud", created_by="U0000USER")


def make_credential(connection: Connection, field: str = "api_secret") -> Credential:
    return Credential(
        team_id=TEAM,
        connection_id=connection.id,
        version=1,
        field=field,
        key_id="k1",
        nonce=b"\x00" * 12,
        ciphertext=b"\x01" * 32,
    )


async def row_counts(db: Database) -> dict[str, int]:
    counts = {}
    async with db.read() as tx:
        for model in (Connection, Credential, VerificationRecord, AuditEvent):
            counts[model.__tablename__] = (
                await tx.session.execute(select(func.count()).select_from(model))
            ).scalar_one()
    return counts


class Boom(Exception):
    pass


async def test_transaction_commits_every_write_together(db: Database) -> None:
    connection = make_connection()
    async with db.transaction() as tx:
        await tx.connections.add(connection)
        await tx.credentials.add(make_credential(connection))
        await tx.verifications.add(
            VerificationRecord(
                team_id=TEAM,
                connection_id=connection.id,
                outcome=Outcome.OK,
                summary="ok",
                latency_ms=12,
                trigger="create",
            )
        )
        await tx.audit.add(AuditEvent(team_id=TEAM, actor="U0000USER", action="connection.created"))

    assert await row_counts(db) == {"connections": 1, "credentials": 1, "verifications": 1, "audit_events": 1}


async def test_exception_rolls_back_everything(db: Database) -> None:
    connection = make_connection()
    with pytest.raises(Boom):
        async with db.transaction() as tx:
            await tx.connections.add(connection)
            await tx.credentials.add(make_credential(connection))
            await tx.audit.add(AuditEvent(team_id=TEAM, actor="U0000USER", action="connection.created"))
            raise Boom

    assert await row_counts(db) == {"connections": 0, "credentials": 0, "verifications": 0, "audit_events": 0}


async def test_name_taken_leaves_the_transaction_usable(db: Database) -> None:
    async with db.transaction() as tx:
        await tx.connections.add(make_connection("prod"))

    async with db.transaction() as tx:
        with pytest.raises(NameTaken):
            await tx.connections.add(make_connection("PROD"))
        await tx.audit.add(
            AuditEvent(
                team_id=TEAM, actor="U0000USER", action="connection.create_failed", reason="name taken"
            )
        )

    counts = await row_counts(db)
    assert (counts["connections"], counts["audit_events"]) == (1, 1)


async def test_read_session_commits_nothing(db: Database) -> None:
    async with db.read() as tx:
        tx.session.add(make_connection())
        await tx.session.flush()

    assert (await row_counts(db))["connections"] == 0


async def test_rows_stay_readable_after_the_block(db: Database) -> None:
    connection = make_connection("kept")
    async with db.transaction() as tx:
        await tx.connections.add(connection)
    async with db.read() as tx:
        loaded = await tx.session.get(Connection, connection.id)

    assert loaded is not None and loaded.name == "kept"


async def test_foreign_keys_are_enforced(db: Database) -> None:
    orphan = make_credential(make_connection())  # its connection was never stored
    with pytest.raises(IntegrityError):
        async with db.transaction() as tx:
            await tx.credentials.add(orphan)


async def sqlite_settings(url: str) -> tuple[str, int, int]:
    database = Database.from_url(url)
    try:
        async with database.engine.connect() as connection:
            journal_mode = (await connection.execute(text("PRAGMA journal_mode"))).scalar_one()
            foreign_keys = (await connection.execute(text("PRAGMA foreign_keys"))).scalar_one()
            busy_timeout = (await connection.execute(text("PRAGMA busy_timeout"))).scalar_one()
    finally:
        await database.dispose()
    return str(journal_mode).lower(), int(foreign_keys), int(busy_timeout)


async def test_sqlite_file_uses_wal_foreign_keys_and_a_busy_timeout(tmp_path: Path) -> None:
    journal_mode, foreign_keys, busy_timeout = await sqlite_settings(f"sqlite:///{tmp_path / 'c.db'}")
    assert (journal_mode, foreign_keys) == ("wal", 1)
    assert busy_timeout > 0


async def test_sqlite_in_memory_keeps_its_journal_mode(tmp_path: Path) -> None:
    journal_mode, foreign_keys, _ = await sqlite_settings("sqlite://")
    assert (journal_mode, foreign_keys) == ("memory", 1)


async def test_ping_answers_for_a_live_database(db: Database) -> None:
    assert await db.ping() is True


async def test_ping_is_false_for_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    garbage = tmp_path / "connections.db"
    garbage.write_bytes(b"this is not a SQLite database" * 200)
    database = Database.from_url(f"sqlite:///{garbage}")
    try:
        assert await database.ping() is False
    finally:
        await database.dispose()


async def test_ping_is_false_when_postgresql_is_unreachable() -> None:
    database = Database.from_url("postgresql://postgres@127.0.0.1:1/none")
    try:
        assert await database.ping() is False
    finally:
        await database.dispose()
