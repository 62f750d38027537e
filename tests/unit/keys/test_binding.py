"""``upgrade_sealed_rows`` on SQLite and PostgreSQL: rows sealed before configurations were bound
are re-sealed bound to the configuration their version is used with, once; a bound row marked
legacy again by a database writer opens with neither associated data and is not bound again. Rows
sealed under the raw master key move to the derived key, unless the data moved to another key."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from bot.crypto import (
    BOUND_SCHEME,
    LEGACY_SCHEME,
    Cipher,
    DecryptionError,
    MasterKey,
    Sealed,
    associated_data,
    config_digest,
)
from bot.domain import Status
from bot.keys.binding import upgrade_sealed_rows
from bot.keys.guard import CANARY_AAD
from bot.redaction import Secret
from bot.store import Connection, Credential, Database, Rotation
from tests.support.sealed_data import legacy_key_id, open_everything, seed_sealed_data

IN_USE = {"rest_endpoint": "https://pkc-in-use.example.com", "cluster_id": "lkc-use1"}
ROTATED_TO = {"rest_endpoint": "https://pkc-next.example.com", "cluster_id": "lkc-next1"}


async def legacy_connection(db: Database, cipher: Cipher) -> str:
    """An active connection and its waiting rotation, both sealed as the bot sealed them before."""
    async with db.transaction() as tx:
        connection = Connection(
            team_id="T1", name="prod", provider="confluent_cloud", created_by="U1", status=Status.ACTIVE
        )
        connection.config = IN_USE
        await tx.connections.add(connection)
        rotation = Rotation(team_id="T1", connection_id=connection.id, version=2, requested_by="U1")
        rotation.config = ROTATED_TO
        await tx.rotations.add(rotation)
        for version in (1, 2):
            sealed = cipher.seal(
                Secret(f"secret-{version}"), associated_data(connection.id, "api_secret", version)
            )
            await tx.credentials.add(
                Credential(
                    team_id="T1",
                    connection_id=connection.id,
                    version=version,
                    field="api_secret",
                    key_id=sealed.key_id,
                    nonce=sealed.nonce,
                    ciphertext=sealed.ciphertext,
                )
            )
        return connection.id


async def credentials(db: Database) -> dict[int, Credential]:
    async with db.read() as tx:
        return {c.version: c for c in await tx.session.scalars(select(Credential))}


def opens(cipher: Cipher, row: Credential, config: dict[str, str] | None) -> str | None:
    digest = None if config is None else config_digest("confluent_cloud", config)
    aad = associated_data(row.connection_id, row.field, row.version, digest)
    try:
        return cipher.open(Sealed(row.key_id, row.nonce, row.ciphertext), aad).reveal()
    except DecryptionError:
        return None


async def test_legacy_rows_are_bound_to_the_configuration_of_their_version_once(db: Database) -> None:
    cipher = Cipher(MasterKey.generate())
    await legacy_connection(db, cipher)

    assert await upgrade_sealed_rows(db, cipher, CANARY_AAD) == 2
    assert await upgrade_sealed_rows(db, cipher, CANARY_AAD) == 0

    rows = await credentials(db)
    assert {row.scheme for row in rows.values()} == {BOUND_SCHEME}
    # The version in use is bound to the connection's settings, the waiting one to the rotation's
    # (which approval copies to the connection).
    assert opens(cipher, rows[1], IN_USE) == "secret-1"
    assert opens(cipher, rows[2], ROTATED_TO) == "secret-2"
    assert opens(cipher, rows[1], ROTATED_TO) is None
    assert opens(cipher, rows[1], None) is None  # the legacy associated data no longer opens it


async def test_a_bound_row_marked_legacy_again_is_neither_opened_nor_bound_again(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    cipher = Cipher(MasterKey.generate())
    connection_id = await legacy_connection(db, cipher)
    await upgrade_sealed_rows(db, cipher, CANARY_AAD)
    # A database writer repoints the connection and tries to pass its credential off as legacy,
    # so that the next start would bind it to the new endpoint.
    async with db.transaction() as tx:
        await tx.session.execute(
            update(Connection)
            .where(Connection.id == connection_id)
            .values(config={"rest_endpoint": "https://evil"})
        )
        await tx.session.execute(update(Credential).values(scheme=LEGACY_SCHEME))

    assert await upgrade_sealed_rows(db, cipher, CANARY_AAD) == 0

    rows = await credentials(db)
    assert {row.scheme for row in rows.values()} == {LEGACY_SCHEME}
    assert opens(cipher, rows[1], None) is None
    assert opens(cipher, rows[1], {"rest_endpoint": "https://evil"}) is None
    assert "does not open" in caplog.text


async def test_rows_sealed_under_the_raw_key_move_to_the_derived_key_once(
    db: Database, migrated_database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    key = MasterKey.generate()
    sealed = await seed_sealed_data(migrated_database_url, key, legacy=True)

    # Six bound fields and the two of a version no rotation waits for (moved, left unbound).
    assert await upgrade_sealed_rows(db, Cipher(key), CANARY_AAD) == 8
    assert await upgrade_sealed_rows(db, Cipher(key), CANARY_AAD) == 0

    opened = await open_everything(migrated_database_url, key)
    assert opened.canary and opened.values == sealed.plaintexts
    assert opened.key_ids == {key.key_id} != {legacy_key_id(key)}
    assert "belongs to no version in use" in caplog.text


async def test_nothing_moves_once_the_data_belongs_to_another_key(
    db: Database, migrated_database_url: str
) -> None:
    """A rotation that committed after the guard ran: the start's cipher holds the old key only."""
    key, other = MasterKey.generate(), MasterKey.generate()
    await seed_sealed_data(migrated_database_url, key, legacy=True)
    before = await open_everything(migrated_database_url, key)

    assert await upgrade_sealed_rows(db, Cipher(other), CANARY_AAD) == 0

    assert await open_everything(migrated_database_url, key) == before
