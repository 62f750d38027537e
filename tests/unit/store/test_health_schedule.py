"""The health schedule's queries on SQLite and PostgreSQL: active connections, row locks, spreading
unscheduled connections over the interval, claiming due checks and rotation reminders once, and
reading the credential version in use.

The concurrency tests (PostgreSQL only) open two :class:`Database` objects on one database, each
with its own engine and pool, as two bot processes would, and claim inside open transactions.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from bot.domain import Status
from bot.store import Connection, Credential, Database
from bot.store import repositories as repositories_module
from bot.store.db import is_sqlite

TEAM = "T0000TEAM"
OTHER_TEAM = "T0000OTHR"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
INTERVAL = timedelta(hours=6)
LOCK_TIMEOUT = "2s"
"""How long a PostgreSQL statement may wait for a row lock in these tests before it fails: the
claims under test must never wait at all, and a test that would hang fails instead."""


def make_connection(
    name: str,
    *,
    team_id: str = TEAM,
    status: Status = Status.ACTIVE,
    created_at: datetime = NOW - timedelta(days=30),
    **values: Any,
) -> Connection:
    return Connection(
        team_id=team_id,
        name=name,
        provider="confluent_cloud",
        created_by="U0000USER",
        status=status,
        created_at=created_at,
        **values,
    )


def make_credential(connection: Connection, field: str, version: int) -> Credential:
    return Credential(
        team_id=connection.team_id,
        connection_id=connection.id,
        version=version,
        field=field,
        key_id="k1",
        nonce=f"{field}{version}".encode().ljust(12, b"\x00"),
        ciphertext=f"sealed:{field}:{version}".encode(),
    )


async def add(db: Database, *connections: Connection) -> None:
    async with db.transaction() as tx:
        for connection in connections:
            await tx.connections.add(connection)


async def reload(db: Database, connection_id: str) -> Connection:
    async with db.read() as tx:
        found = await tx.session.get(Connection, connection_id)
    assert found is not None
    return found


async def next_checks(db: Database) -> dict[str, datetime | None]:
    async with db.read() as tx:
        rows = await tx.session.scalars(select(Connection))
        return {row.name: row.next_check_at for row in rows}


class Draws(random.Random):
    """A random source that returns the given values in turn."""

    def __init__(self, *values: float) -> None:
        super().__init__(0)
        self._values = list(values)

    def random(self) -> float:
        return self._values.pop(0)


@pytest.fixture
def postgres_url(migrated_database_url: str) -> str:
    if is_sqlite(migrated_database_url):
        pytest.skip("SQLite has no row locks: its write transactions queue behind the database lock")
    return migrated_database_url


@pytest.fixture
async def second_db(postgres_url: str) -> AsyncIterator[Database]:
    """Another process's view of the same PostgreSQL database: its own engine and pool."""
    database = Database.from_url(postgres_url)
    try:
        yield database
    finally:
        await database.dispose()


# --- active connections ---------------------------------------------------------------------------


async def test_active_lists_the_workspaces_active_connections_oldest_first(db: Database) -> None:
    await add(
        db,
        make_connection("newer", created_at=NOW - timedelta(days=1)),
        make_connection("older", created_at=NOW - timedelta(days=2)),
        make_connection("pending", status=Status.PENDING_APPROVAL),
        make_connection("rejected", status=Status.REJECTED),
        make_connection("revoked", status=Status.REVOKED),
        make_connection("elsewhere", team_id=OTHER_TEAM),
    )

    async with db.read() as tx:
        repository = tx.connections
        assert [c.name for c in await repository.active(TEAM)] == ["older", "newer"]
        assert await repository.count_active(TEAM) == 2
        assert [c.name for c in await repository.active(OTHER_TEAM)] == ["elsewhere"]
        assert await repository.count_active(OTHER_TEAM) == 1
        assert await repository.count_active("T0000NONE") == 0


# --- lock -----------------------------------------------------------------------------------------


async def test_lock_returns_the_row_only_within_its_workspace(db: Database) -> None:
    connection = make_connection("locked", alert_channel="C0ALERTS1")
    await add(db, connection)

    async with db.transaction() as tx:
        assert await tx.connections.lock(OTHER_TEAM, connection.id) is None
        assert await tx.connections.lock(TEAM, "no-such-id") is None
        locked = await tx.connections.lock(TEAM, connection.id)
        assert locked is not None
        assert (locked.id, locked.name, locked.alert_channel) == (connection.id, "locked", "C0ALERTS1")


async def test_lock_reads_past_a_stale_copy_in_the_session(db: Database, second_db: Database) -> None:
    connection = make_connection("refreshed")
    await add(db, connection)

    async with db.transaction() as tx:
        stale = await tx.connections.get(TEAM, connection.id)
        assert stale is not None and stale.alert_ts is None
        async with second_db.transaction() as writer:
            row = await writer.connections.get(TEAM, connection.id)
            assert row is not None
            row.alert_ts = "1700000000.000100"
        locked = await tx.connections.lock(TEAM, connection.id)

    assert locked is stale
    assert locked.alert_ts == "1700000000.000100"


async def test_lock_holds_the_row_until_the_transaction_ends(db: Database, second_db: Database) -> None:
    connection = make_connection("held")
    await add(db, connection)

    async with db.transaction() as tx:
        assert await tx.connections.lock(TEAM, connection.id) is not None
        with pytest.raises(DBAPIError, match="lock timeout"):
            async with second_db.transaction() as other:
                await other.session.execute(text("SET LOCAL lock_timeout = '50ms'"))
                await other.connections.lock(TEAM, connection.id)

    async with second_db.transaction() as other:
        await other.session.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
        assert await other.connections.lock(TEAM, connection.id) is not None


# --- schedule_unscheduled ---------------------------------------------------------------------------


async def test_schedule_unscheduled_spreads_active_connections_over_one_interval(db: Database) -> None:
    already = NOW + timedelta(hours=2)
    await add(
        db,
        make_connection("first", created_at=NOW - timedelta(days=3)),
        make_connection("second", created_at=NOW - timedelta(days=2)),
        make_connection("scheduled", next_check_at=already),
        make_connection("pending", status=Status.PENDING_APPROVAL),
        make_connection("revoked", status=Status.REVOKED),
        make_connection("elsewhere", team_id=OTHER_TEAM, created_at=NOW - timedelta(days=1)),
    )

    async with db.transaction() as tx:
        scheduled = await tx.connections.schedule_unscheduled(NOW, INTERVAL, 10, Draws(0.0, 0.5, 0.999))

    assert scheduled == 3
    assert await next_checks(db) == {
        "first": NOW,
        "second": NOW + INTERVAL / 2,
        "elsewhere": NOW + INTERVAL * 0.999,
        "scheduled": already,
        "pending": None,
        "revoked": None,
    }


async def test_schedule_unscheduled_with_the_default_random_source_stays_within_the_interval(
    db: Database,
) -> None:
    await add(db, *(make_connection(f"c{i:02d}") for i in range(12)))

    async with db.transaction() as tx:
        assert await tx.connections.schedule_unscheduled(NOW, INTERVAL, 100) == 12

    times = await next_checks(db)
    assert len(times) == 12
    for name, when in times.items():
        assert when is not None, name
        assert NOW <= when < NOW + INTERVAL, (name, when)


async def test_schedule_unscheduled_takes_at_most_limit_oldest_first_and_never_twice(db: Database) -> None:
    await add(
        db,
        make_connection("a", created_at=NOW - timedelta(days=3)),
        make_connection("b", created_at=NOW - timedelta(days=2)),
        make_connection("c", created_at=NOW - timedelta(days=1)),
    )

    async with db.transaction() as tx:
        assert await tx.connections.schedule_unscheduled(NOW, INTERVAL, 2, Draws(0.1, 0.2)) == 2
    assert await next_checks(db) == {"a": NOW + INTERVAL * 0.1, "b": NOW + INTERVAL * 0.2, "c": None}

    later = NOW + timedelta(hours=1)
    async with db.transaction() as tx:
        assert await tx.connections.schedule_unscheduled(later, INTERVAL, 10, Draws(0.3)) == 1
    async with db.transaction() as tx:
        assert await tx.connections.schedule_unscheduled(later, INTERVAL, 10, Draws()) == 0
    assert await next_checks(db) == {
        "a": NOW + INTERVAL * 0.1,
        "b": NOW + INTERVAL * 0.2,
        "c": later + INTERVAL * 0.3,
    }


# --- claim_due --------------------------------------------------------------------------------------


async def add_due(db: Database) -> None:
    await add(
        db,
        make_connection("late", next_check_at=NOW - timedelta(hours=3)),
        make_connection("later", team_id=OTHER_TEAM, next_check_at=NOW - timedelta(hours=2)),
        make_connection("just due", next_check_at=NOW),
        make_connection("due", next_check_at=NOW - timedelta(hours=1)),
        make_connection("not yet", next_check_at=NOW + timedelta(microseconds=1)),
        make_connection("unscheduled"),
        make_connection("pending", status=Status.PENDING_APPROVAL, next_check_at=NOW - timedelta(days=1)),
        make_connection("revoked", status=Status.REVOKED, next_check_at=NOW - timedelta(days=1)),
    )


async def test_claim_due_returns_due_active_rows_earliest_first_and_moves_them_on(db: Database) -> None:
    await add_due(db)

    async with db.transaction() as tx:
        claimed = await tx.connections.claim_due(NOW, INTERVAL, 10)
        assert [c.next_check_at for c in claimed] == [NOW + INTERVAL] * 4

    assert [c.name for c in claimed] == ["late", "later", "due", "just due"]
    times = await next_checks(db)
    assert {name: times[name] for name in ("late", "later", "due", "just due")} == {
        "late": NOW + INTERVAL,
        "later": NOW + INTERVAL,
        "due": NOW + INTERVAL,
        "just due": NOW + INTERVAL,
    }
    assert times["not yet"] == NOW + timedelta(microseconds=1)
    assert times["unscheduled"] is None
    assert times["pending"] == times["revoked"] == NOW - timedelta(days=1)


async def test_a_second_claim_at_the_same_instant_gets_nothing(db: Database) -> None:
    await add_due(db)

    async with db.transaction() as tx:
        first = await tx.connections.claim_due(NOW, INTERVAL, 3)
    async with db.transaction() as tx:
        second = await tx.connections.claim_due(NOW, INTERVAL, 3)
    async with db.transaction() as tx:
        third = await tx.connections.claim_due(NOW, INTERVAL, 3)

    assert [c.name for c in first] == ["late", "later", "due"]
    assert [c.name for c in second] == ["just due"]
    assert third == []


async def test_a_claim_is_due_again_one_interval_later(db: Database) -> None:
    await add(db, make_connection("periodic", next_check_at=NOW))

    async with db.transaction() as tx:
        assert len(await tx.connections.claim_due(NOW, INTERVAL, 10)) == 1
    async with db.transaction() as tx:
        assert await tx.connections.claim_due(NOW + INTERVAL - timedelta(seconds=1), INTERVAL, 10) == []
    async with db.transaction() as tx:
        [again] = await tx.connections.claim_due(NOW + INTERVAL, INTERVAL, 10)
    assert again.next_check_at == NOW + 2 * INTERVAL


async def test_a_claim_that_rolls_back_leaves_the_rows_due(db: Database) -> None:
    await add(db, make_connection("retry me", next_check_at=NOW))

    with pytest.raises(RuntimeError):
        async with db.transaction() as tx:
            assert len(await tx.connections.claim_due(NOW, INTERVAL, 10)) == 1
            raise RuntimeError("the process died before the claim committed")

    async with db.transaction() as tx:
        assert [c.name for c in await tx.connections.claim_due(NOW, INTERVAL, 10)] == ["retry me"]


async def test_claim_due_needs_a_positive_limit(db: Database) -> None:
    async with db.transaction() as tx:
        with pytest.raises(ValueError, match="limit"):
            await tx.connections.claim_due(NOW, INTERVAL, 0)


async def test_concurrent_claims_from_two_processes_get_disjoint_rows_without_waiting(
    db: Database, second_db: Database
) -> None:
    await add_due(db)

    async with db.transaction() as tx:
        await tx.session.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
        first = await tx.connections.claim_due(NOW, INTERVAL, 2)
        # The first claim is still open (its rows locked, not yet moved on for anybody else).
        async with second_db.transaction() as other:
            await other.session.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
            second = await other.connections.claim_due(NOW, INTERVAL, 10)

    assert [c.name for c in first] == ["late", "later"]
    assert [c.name for c in second] == ["due", "just due"]
    async with db.transaction() as tx:
        assert await tx.connections.claim_due(NOW, INTERVAL, 10) == []


async def test_a_claim_while_another_holds_every_due_row_gets_nothing_and_does_not_wait(
    db: Database, second_db: Database
) -> None:
    await add_due(db)

    async with db.transaction() as tx:
        first = await tx.connections.claim_due(NOW, INTERVAL, 10)
        async with second_db.transaction() as other:
            await other.session.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
            second = await other.connections.claim_due(NOW, INTERVAL, 10)

    assert len(first) == 4
    assert second == []


# --- claim_rotation_reminders ---------------------------------------------------------------------

OLDER_THAN = NOW - timedelta(days=90)
REMINDED_BEFORE = NOW - timedelta(days=7)


async def add_rotation_candidates(db: Database) -> None:
    await add(
        db,
        make_connection("oldest", credential_created_at=NOW - timedelta(days=400)),
        make_connection("old elsewhere", team_id=OTHER_TEAM, credential_created_at=NOW - timedelta(days=300)),
        make_connection(
            "reminded long ago",
            credential_created_at=NOW - timedelta(days=200),
            rotation_reminded_at=REMINDED_BEFORE - timedelta(seconds=1),
        ),
        make_connection("old", credential_created_at=OLDER_THAN - timedelta(seconds=1)),
        make_connection(
            "reminded lately",
            credential_created_at=NOW - timedelta(days=500),
            rotation_reminded_at=REMINDED_BEFORE,
        ),
        make_connection("young", credential_created_at=OLDER_THAN),
        make_connection("no date"),
        make_connection(
            "old pending", status=Status.PENDING_APPROVAL, credential_created_at=NOW - timedelta(days=400)
        ),
        make_connection(
            "old revoked", status=Status.REVOKED, credential_created_at=NOW - timedelta(days=400)
        ),
    )


async def test_claim_rotation_reminders_claims_old_unreminded_active_connections_once(db: Database) -> None:
    await add_rotation_candidates(db)

    async with db.transaction() as tx:
        first = await tx.connections.claim_rotation_reminders(NOW, OLDER_THAN, REMINDED_BEFORE, 3)
    async with db.transaction() as tx:
        second = await tx.connections.claim_rotation_reminders(NOW, OLDER_THAN, REMINDED_BEFORE, 3)
    async with db.transaction() as tx:
        third = await tx.connections.claim_rotation_reminders(NOW, OLDER_THAN, REMINDED_BEFORE, 3)

    assert [c.name for c in first] == ["oldest", "old elsewhere", "reminded long ago"]
    assert [c.name for c in second] == ["old"]
    assert third == []
    async with db.read() as tx:
        reminded = {c.name: c.rotation_reminded_at for c in await tx.session.scalars(select(Connection))}
    assert reminded == {
        "oldest": NOW,
        "old elsewhere": NOW,
        "reminded long ago": NOW,
        "old": NOW,
        "reminded lately": REMINDED_BEFORE,
        "young": None,
        "no date": None,
        "old pending": None,
        "old revoked": None,
    }


async def test_a_reminded_connection_is_claimed_again_after_the_pause(db: Database) -> None:
    await add(db, make_connection("aging", credential_created_at=NOW - timedelta(days=400)))
    async with db.transaction() as tx:
        assert len(await tx.connections.claim_rotation_reminders(NOW, OLDER_THAN, REMINDED_BEFORE, 10)) == 1

    week = timedelta(days=7)
    async with db.transaction() as tx:
        almost = NOW + week - timedelta(seconds=1)
        assert await tx.connections.claim_rotation_reminders(almost, OLDER_THAN, almost - week, 10) == []
    async with db.transaction() as tx:
        later = NOW + week + timedelta(seconds=1)
        [again] = await tx.connections.claim_rotation_reminders(later, OLDER_THAN, later - week, 10)
    assert again.rotation_reminded_at == later


async def test_concurrent_rotation_reminder_claims_get_disjoint_rows_without_waiting(
    db: Database, second_db: Database
) -> None:
    await add_rotation_candidates(db)

    async with db.transaction() as tx:
        first = await tx.connections.claim_rotation_reminders(NOW, OLDER_THAN, REMINDED_BEFORE, 2)
        async with second_db.transaction() as other:
            await other.session.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
            second = await other.connections.claim_rotation_reminders(NOW, OLDER_THAN, REMINDED_BEFORE, 10)

    assert [c.name for c in first] == ["oldest", "old elsewhere"]
    assert [c.name for c in second] == ["reminded long ago", "old"]
    async with db.transaction() as tx:
        assert await tx.connections.claim_rotation_reminders(NOW, OLDER_THAN, REMINDED_BEFORE, 10) == []


# --- credentials by version -------------------------------------------------------------------------


async def store_versions(db: Database, connection: Connection, *versions: int) -> None:
    async with db.transaction() as tx:
        await tx.connections.add(connection)
        for version in versions:
            for field in ("api_secret", "api_key"):
                await tx.credentials.add(make_credential(connection, field, version))


async def test_for_connections_returns_only_the_requested_version_of_each(db: Database) -> None:
    rotated = make_connection("rotated", credential_version=2)
    rotating = make_connection("rotating")
    plain = make_connection("plain")
    bare = make_connection("bare")
    await store_versions(db, rotated, 1, 2)
    await store_versions(db, rotating, 1, 2)  # version 2 waits for approval
    await store_versions(db, plain, 1)
    await add(db, bare)

    async with db.read() as tx:
        found = await tx.credentials.for_connections(
            [(rotated.id, 2), (rotating.id, 1), (plain.id, 1), (bare.id, 1)]
        )

    def fields(connection: Connection) -> list[tuple[str, int, bytes]]:
        return [(c.field, c.version, c.ciphertext) for c in found[connection.id]]

    assert set(found) == {rotated.id, rotating.id, plain.id, bare.id}
    assert fields(rotated) == [("api_key", 2, b"sealed:api_key:2"), ("api_secret", 2, b"sealed:api_secret:2")]
    assert fields(rotating) == [
        ("api_key", 1, b"sealed:api_key:1"),
        ("api_secret", 1, b"sealed:api_secret:1"),
    ]
    assert fields(plain) == [("api_key", 1, b"sealed:api_key:1"), ("api_secret", 1, b"sealed:api_secret:1")]
    assert fields(bare) == []


async def test_for_connections_reads_many_connections_in_chunks(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(repositories_module, "_IN_CHUNK", 2)
    connections = [make_connection(f"c{i}") for i in range(5)]
    for connection in connections:
        await store_versions(db, connection, 1)

    async with db.read() as tx:
        found = await tx.credentials.for_connections([(c.id, 1) for c in connections])

    assert {connection_id: len(fields) for connection_id, fields in found.items()} == {
        c.id: 2 for c in connections
    }
    assert all(c.connection_id == connection_id for connection_id, fs in found.items() for c in fs)


async def test_for_connections_of_nothing_is_empty(db: Database) -> None:
    async with db.read() as tx:
        assert await tx.credentials.for_connections([]) == {}


async def test_delete_other_versions_keeps_only_the_one_in_use(db: Database) -> None:
    rotated = make_connection("rotated", credential_version=3)
    untouched = make_connection("untouched")
    await store_versions(db, rotated, 1, 2, 3)
    await store_versions(db, untouched, 1, 2)

    async with db.transaction() as tx:
        assert await tx.credentials.delete_other_versions(rotated.id, 3) == 4
    async with db.transaction() as tx:
        assert await tx.credentials.delete_other_versions(rotated.id, 3) == 0

    async with db.read() as tx:
        repository = tx.credentials
        assert [
            (c.field, c.version) for c in (await repository.for_connections([(rotated.id, 3)]))[rotated.id]
        ] == [
            ("api_key", 3),
            ("api_secret", 3),
        ]
        assert (await repository.for_connections([(rotated.id, 1)]))[rotated.id] == []
        assert (await repository.for_connections([(rotated.id, 2)]))[rotated.id] == []
        assert len((await repository.for_connections([(untouched.id, 1)]))[untouched.id]) == 2
        assert len((await repository.for_connections([(untouched.id, 2)]))[untouched.id]) == 2
