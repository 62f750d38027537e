"""The leak-search helpers in tests/support/databases.py find what was stored."""

from __future__ import annotations

import secrets

from bot.store import AuditEvent, Connection, Credential, Database
from bot.store.db import is_sqlite
from tests.support.databases import dump_database_text, raw_sqlite_bytes, sqlite_path


async def test_dump_and_raw_bytes_contain_stored_values(db: Database, migrated_database_url: str) -> None:
    in_text = f"needle-text-{secrets.token_hex(4)}"
    in_json = f"needle-json-{secrets.token_hex(4)}"
    in_bytes = f"needle-bytes-{secrets.token_hex(4)}"
    never_stored = f"needle-absent-{secrets.token_hex(4)}"
    connection = Connection(
        team_id="T1", name=in_text, provider="confluent_cloud", created_by="U1", config={"x": in_json}
    )
    async with db.transaction() as tx:
        await tx.connections.add(connection)
        await tx.credentials.add(
            Credential(
                team_id="T1",
                connection_id=connection.id,
                version=1,
                field="api_secret",
                key_id="k1",
                nonce=b"\x00" * 12,
                ciphertext=in_bytes.encode(),
            )
        )
        await tx.audit.add(AuditEvent(team_id="T1", actor="system", action="test.dump"))

    dump = dump_database_text(migrated_database_url)
    for needle in (in_text, in_json, in_bytes, "test.dump"):
        assert needle in dump
    assert never_stored not in dump

    if is_sqlite(migrated_database_url):
        raw = raw_sqlite_bytes(sqlite_path(migrated_database_url))
        for needle in (in_text, in_json, in_bytes):
            assert needle.encode() in raw
        assert never_stored.encode() not in raw
