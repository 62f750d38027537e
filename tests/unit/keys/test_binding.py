"""``bind_legacy_credentials`` on SQLite and PostgreSQL: rows sealed before configurations were bound
are re-sealed bound to the configuration their version is used with, once; a bound row marked
legacy again by a database writer opens with neither associated data and is not bound again."""

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
from bot.keys.binding import bind_legacy_credentials
from bot.redaction import Secret
from bot.store import Connection, Credential, Database, Rotation

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

    assert await bind_legacy_credentials(db, cipher) == 2
    assert await bind_legacy_credentials(db, cipher) == 0

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
    await bind_legacy_credentials(db, cipher)
    # A database writer repoints the connection and tries to pass its credential off as legacy,
    # so that the next start would bind it to the new endpoint.
    async with db.transaction() as tx:
        await tx.session.execute(
            update(Connection)
            .where(Connection.id == connection_id)
            .values(config={"rest_endpoint": "https://evil"})
        )
        await tx.session.execute(update(Credential).values(scheme=LEGACY_SCHEME))

    assert await bind_legacy_credentials(db, cipher) == 0

    rows = await credentials(db)
    assert {row.scheme for row in rows.values()} == {LEGACY_SCHEME}
    assert opens(cipher, rows[1], None) is None
    assert opens(cipher, rows[1], {"rest_endpoint": "https://evil"}) is None
    assert "does not open" in caplog.text
