"""CredentialRepository, and what deleting a connection takes with it."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from bot.providers.base import Outcome
from bot.store import AuditEvent, Connection, Credential, Database, VerificationRecord
from bot.store.db import is_sqlite
from tests.support.databases import raw_sqlite_bytes, sqlite_path

TEAM = "T0000TEAM"


def make_connection(name: str = "prod-kafka") -> Connection:
    return Connection(team_id=TEAM, name=name, provider="confluent_cloud", created_by="U0000USER")


def make_credential(
    connection: Connection, field: str = "api_secret", version: int = 1, **values: object
) -> Credential:
    return Credential(
        team_id=TEAM,
        connection_id=connection.id,
        version=version,
        field=field,
        key_id="k1",
        nonce=f"{field}{version}".encode().ljust(12, b"\x00"),
        ciphertext=f"sealed:{field}:{version}".encode(),
        **values,  # type: ignore[arg-type]
    )


async def stored_connection(db: Database, name: str = "prod-kafka") -> Connection:
    connection = make_connection(name)
    async with db.transaction() as tx:
        await tx.connections.add(connection)
    return connection


async def test_for_connections_returns_the_fields_of_the_version_asked_for(db: Database) -> None:
    connection = await stored_connection(db)
    async with db.transaction() as tx:
        for version in (1, 2):
            for field in ("api_secret", "api_key"):
                await tx.credentials.add(make_credential(connection, field, version))

    async with db.read() as tx:
        fields = (await tx.credentials.for_connections([(connection.id, 2)]))[connection.id]
    assert [(c.field, c.version, c.ciphertext) for c in fields] == [
        ("api_key", 2, b"sealed:api_key:2"),
        ("api_secret", 2, b"sealed:api_secret:2"),
    ]
    assert all(isinstance(c.nonce, bytes) and len(c.nonce) == 12 for c in fields)


async def test_one_field_per_connection_and_version(db: Database) -> None:
    connection = await stored_connection(db)
    async with db.transaction() as tx:
        await tx.credentials.add(make_credential(connection, "api_secret", 1))

    with pytest.raises(IntegrityError):
        async with db.transaction() as tx:
            await tx.credentials.add(make_credential(connection, "api_secret", 1))

    async with db.transaction() as tx:  # a new version of the same field is fine
        await tx.credentials.add(make_credential(connection, "api_secret", 2))


def test_credential_repr_shows_no_key_material() -> None:
    credential = make_credential(make_connection())
    assert "sealed:" not in repr(credential)
    assert "nonce" not in repr(credential)


async def test_any_exists_and_latest(db: Database) -> None:
    async with db.read() as tx:
        repository = tx.credentials
        assert await repository.any_exists() is False
        assert await repository.latest() is None

    connection = await stored_connection(db)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    async with db.transaction() as tx:
        await tx.credentials.add(
            make_credential(connection, "b_newest", created_at=start + timedelta(hours=2))
        )
        await tx.credentials.add(make_credential(connection, "a_oldest", created_at=start))
        await tx.credentials.add(
            make_credential(connection, "c_middle", created_at=start + timedelta(hours=1))
        )

    async with db.read() as tx:
        repository = tx.credentials
        assert await repository.any_exists() is True
        latest = await repository.latest()
        assert latest is not None and latest.field == "b_newest"
        stored = await tx.session.scalars(select(Credential).order_by(Credential.id))
        assert sorted(c.field for c in stored) == ["a_oldest", "b_newest", "c_middle"]


async def test_delete_for_one_version_or_all(db: Database) -> None:
    connection, other = await stored_connection(db), await stored_connection(db, "other")
    async with db.transaction() as tx:
        for version in (1, 2):
            for field in ("api_key", "api_secret"):
                await tx.credentials.add(make_credential(connection, field, version))
        await tx.credentials.add(make_credential(other, "api_secret", 1))

    async with db.transaction() as tx:
        assert await tx.credentials.delete_for(connection.id, version=1) == 2
    async with db.read() as tx:
        repository = tx.credentials
        assert (await repository.for_connections([(connection.id, 1)]))[connection.id] == []
        assert len((await repository.for_connections([(connection.id, 2)]))[connection.id]) == 2

    async with db.transaction() as tx:
        assert await tx.credentials.delete_for(connection.id) == 2
    async with db.read() as tx:
        remaining = list(await tx.session.scalars(select(Credential).order_by(Credential.id)))
    assert [(c.connection_id, c.field) for c in remaining] == [(other.id, "api_secret")]


async def test_deleting_a_connection_cascades_but_keeps_the_audit_trail(db: Database) -> None:
    connection, kept = await stored_connection(db), await stored_connection(db, "kept")
    async with db.transaction() as tx:
        for owner in (connection, kept):
            await tx.credentials.add(make_credential(owner))
            await tx.verifications.add(
                VerificationRecord(
                    team_id=TEAM,
                    connection_id=owner.id,
                    outcome=Outcome.OK,
                    summary="ok",
                    latency_ms=5,
                    trigger="create",
                )
            )
        await tx.audit.add(
            AuditEvent(
                team_id=TEAM, actor="U0000USER", action="connection.created", connection_id=connection.id
            )
        )

    async with db.transaction() as tx:
        loaded = await tx.connections.get(TEAM, connection.id)
        assert loaded is not None
        await tx.session.delete(loaded)

    async with db.read() as tx:
        credentials = list(await tx.session.scalars(select(Credential).order_by(Credential.id)))
        assert [c.connection_id for c in credentials] == [kept.id]
        assert await tx.verifications.recent(TEAM, connection.id) == []
        assert len(await tx.verifications.recent(TEAM, kept.id)) == 1
        audit = await tx.audit.for_connection(TEAM, connection.id)
        assert [event.action for event in audit] == ["connection.created"]
        assert await tx.session.scalar(select(func.count()).select_from(Connection)) == 1


async def test_destroyed_ciphertexts_leave_no_trace_in_the_sqlite_files(
    db: Database, migrated_database_url: str
) -> None:
    if not is_sqlite(migrated_database_url):
        pytest.skip("PostgreSQL's files are the server's; only SQLite's can be read here")
    connection = await stored_connection(db)
    doomed = os.urandom(48)
    kept = os.urandom(48)
    async with db.transaction() as tx:
        for version, ciphertext in ((1, doomed), (2, kept)):
            credential = make_credential(connection, "api_secret", version)
            credential.ciphertext = ciphertext
            await tx.credentials.add(credential)
    path = sqlite_path(migrated_database_url)
    assert doomed in raw_sqlite_bytes(path)

    async with db.transaction() as tx:
        assert await tx.credentials.delete_other_versions(connection.id, keep=2) == 1

    # Neither in the database's free pages (secure_delete) nor in the write-ahead log.
    raw = raw_sqlite_bytes(path)
    assert doomed not in raw
    assert kept in raw


def postgres_table_pages(admin: psycopg.Connection[tuple[bytes]]) -> bytes:
    """Every page of the credentials table and of its TOAST table, as PostgreSQL holds them."""
    rows = admin.execute(
        """
        SELECT get_raw_page(relation::text, page)
        FROM (
            SELECT 'credentials'::regclass AS relation
            UNION ALL SELECT reltoastrelid::regclass FROM pg_class WHERE oid = 'credentials'::regclass
        ) AS tables,
        LATERAL generate_series(
            0, pg_relation_size(relation) / current_setting('block_size')::int - 1
        ) AS page
        """
    )
    return b"".join(page for (page,) in rows)


@pytest.mark.parametrize("size", [48, 4000], ids=["in-row", "toasted"])
async def test_on_postgresql_only_vacuum_full_removes_destroyed_ciphertexts_from_the_table(
    db: Database, migrated_database_url: str, size: int
) -> None:
    """What README's "Secrets" section says of PostgreSQL (the WAL, and so archives, replicas and
    base backups, keep the ciphertext whatever is vacuumed; that is not tested here)."""
    if is_sqlite(migrated_database_url):
        pytest.skip("SQLite scrubs on commit (test above)")
    connection = await stored_connection(db)
    kept, doomed = os.urandom(size), os.urandom(size)
    async with db.transaction() as tx:
        for version, ciphertext in ((1, kept), (2, doomed)):
            credential = make_credential(connection, "api_secret", version)
            credential.ciphertext = ciphertext
            await tx.credentials.add(credential)
    async with db.transaction() as tx:  # the newer version goes, as when a rotation is rejected
        assert await tx.credentials.delete_for(connection.id, version=2) == 1

    with psycopg.connect(migrated_database_url, autocommit=True) as admin:
        admin.execute("CREATE EXTENSION IF NOT EXISTS pageinspect")
        admin.execute("VACUUM credentials")
        # VACUUM frees the row's space without overwriting it.
        assert doomed[:32] in postgres_table_pages(admin)
        admin.execute("VACUUM FULL credentials")
        pages = postgres_table_pages(admin)
    assert doomed[:32] not in pages
    assert kept[:32] in pages
