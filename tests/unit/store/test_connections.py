"""ConnectionRepository on SQLite and PostgreSQL: team scoping, names, paging, transitions."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.domain import Health, Status
from bot.store import Connection, Database, NameTaken

TEAM = "T0000TEAM"
OTHER_TEAM = "T0000OTHR"


def make_connection(name: str = "prod-kafka", team_id: str = TEAM, **values: Any) -> Connection:
    return Connection(
        team_id=team_id, name=name, provider="confluent_cloud", created_by="U0000USER", **values
    )


async def add(db: Database, *connections: Connection) -> None:
    async with db.transaction() as tx:
        for connection in connections:
            await tx.connections.add(connection)


async def set_status(db: Database, connection: Connection, status: Status) -> None:
    async with db.transaction() as tx:
        assert await tx.connections.transition(TEAM, connection.id, connection.status, status)


def test_id_and_defaults_are_set_at_construction() -> None:
    first, second = make_connection(), make_connection()
    assert first.id and second.id and first.id != second.id
    assert first.status is Status.PENDING_APPROVAL
    assert first.health is Health.UNKNOWN
    assert first.credential_version == 1
    assert first.created_at.tzinfo is UTC


async def test_get_returns_the_row_only_within_its_team(db: Database) -> None:
    connection = make_connection(config={"cluster_id": "lkc-123"}, key_hint="ABCD…WXYZ")
    await add(db, connection)

    async with db.read() as tx:
        repository = tx.connections
        found = await repository.get(TEAM, connection.id)
        assert found is not None
        assert (found.name, found.provider, found.config, found.key_hint) == (
            "prod-kafka",
            "confluent_cloud",
            {"cluster_id": "lkc-123"},
            "ABCD…WXYZ",
        )
        assert found.status is Status.PENDING_APPROVAL
        assert await repository.get(OTHER_TEAM, connection.id) is None
        assert await repository.get(TEAM, "no-such-id") is None


async def test_name_taken_is_case_insensitive_and_per_team(db: Database) -> None:
    await add(db, make_connection("Prod-Kafka"))

    async with db.read() as tx:
        repository = tx.connections
        assert await repository.name_taken(TEAM, "prod-kafka")
        assert await repository.name_taken(TEAM, "PROD-KAFKA")
        assert not await repository.name_taken(TEAM, "prod-kafka-2")
        assert not await repository.name_taken(OTHER_TEAM, "prod-kafka")


@pytest.mark.parametrize("released_by", [Status.REJECTED, Status.EXPIRED])
async def test_name_is_released_when_the_holder_leaves_pending(db: Database, released_by: Status) -> None:
    holder = make_connection("analytics")
    await add(db, holder)
    await set_status(db, holder, released_by)

    async with db.read() as tx:
        repository = tx.connections
        assert not await repository.name_taken(TEAM, "Analytics")
        assert await repository.find_by_name(TEAM, "analytics") is None


async def test_active_connection_still_holds_its_name(db: Database) -> None:
    holder = make_connection("analytics")
    await add(db, holder)
    await set_status(db, holder, Status.ACTIVE)

    async with db.read() as tx:
        repository = tx.connections
        assert await repository.name_taken(TEAM, "ANALYTICS")
        found = await repository.find_by_name(TEAM, "ANALYTICS")
        assert found is not None and found.id == holder.id


@pytest.mark.parametrize("duplicate", ["prod-kafka", "PROD-KAFKA", "Prod-Kafka"])
async def test_unique_index_refuses_a_second_holder(db: Database, duplicate: str) -> None:
    await add(db, make_connection("prod-kafka"))

    with pytest.raises(NameTaken) as caught:
        await add(db, make_connection(duplicate))
    assert caught.value.name == duplicate
    assert duplicate in str(caught.value)

    async with db.read() as tx:
        _, total = await tx.connections.list_page(TEAM, 1, 20)
    assert total == 1


async def test_unique_index_applies_within_one_transaction(db: Database) -> None:
    with pytest.raises(NameTaken):
        await add(db, make_connection("dup"), make_connection("DUP"))


async def test_same_name_in_another_team_is_allowed(db: Database) -> None:
    await add(db, make_connection("shared"), make_connection("shared", team_id=OTHER_TEAM))

    async with db.read() as tx:
        repository = tx.connections
        assert await repository.name_taken(TEAM, "shared")
        assert await repository.name_taken(OTHER_TEAM, "shared")


@pytest.mark.parametrize("released_by", [Status.REJECTED, Status.REVOKED])
async def test_name_can_be_reused_after_the_holder_is_released(db: Database, released_by: Status) -> None:
    first = make_connection("reusable")
    await add(db, first)
    if released_by is Status.REVOKED:
        await set_status(db, first, Status.ACTIVE)
        first.status = Status.ACTIVE
    await set_status(db, first, released_by)

    second = make_connection("Reusable")
    await add(db, second)

    async with db.read() as tx:
        repository = tx.connections
        holder = await repository.find_by_name(TEAM, "reusable")
        assert holder is not None and holder.id == second.id
        _, total = await repository.list_page(TEAM, 1, 20)
    assert total == 2


async def test_list_page_is_newest_first_with_totals(db: Database) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    ours = [make_connection(f"conn-{i:02d}", created_at=start + timedelta(minutes=i)) for i in range(25)]
    theirs = make_connection("conn-other", team_id=OTHER_TEAM, created_at=start + timedelta(days=1))
    await add(db, *ours, theirs)

    async with db.read() as tx:
        repository = tx.connections
        first, total_first = await repository.list_page(TEAM, page=1, size=20)
        second, total_second = await repository.list_page(TEAM, page=2, size=20)
        beyond, total_beyond = await repository.list_page(TEAM, page=3, size=20)

    assert [c.name for c in first] == [f"conn-{i:02d}" for i in range(24, 4, -1)]
    assert [c.name for c in second] == [f"conn-{i:02d}" for i in range(4, -1, -1)]
    assert beyond == []
    assert total_first == total_second == total_beyond == 25


async def test_list_page_breaks_ties_by_id(db: Database) -> None:
    moment = datetime(2026, 3, 1, tzinfo=UTC)
    low = make_connection("low", id="00000000-0000-4000-8000-000000000001", created_at=moment)
    high = make_connection("high", id="ffffffff-0000-4000-8000-000000000001", created_at=moment)
    await add(db, low, high)

    async with db.read() as tx:
        page, _ = await tx.connections.list_page(TEAM, 1, 20)
    assert [c.name for c in page] == ["high", "low"]


async def test_list_matching_can_filter_by_status(db: Database) -> None:
    pending, active = make_connection("pending"), make_connection("active")
    await add(db, pending, active)
    await set_status(db, active, Status.ACTIVE)

    async with db.read() as tx:
        page, total = await tx.connections.list_matching(TEAM, 20, statuses=[Status.ACTIVE])
    assert [c.name for c in page] == ["active"]
    assert total == 1


@pytest.mark.parametrize(("page", "size"), [(0, 20), (1, 0), (-1, 5)])
async def test_list_page_rejects_nonsense_paging(db: Database, page: int, size: int) -> None:
    async with db.read() as tx:
        with pytest.raises(ValueError):
            await tx.connections.list_page(TEAM, page, size)


async def test_transition_succeeds_once(db: Database) -> None:
    long_ago = datetime(2020, 1, 1, tzinfo=UTC)
    connection = make_connection(updated_at=long_ago)
    await add(db, connection)
    verified_at = datetime(2026, 2, 3, 4, 5, 6, tzinfo=UTC)

    async with db.transaction() as tx:
        first = await tx.connections.transition(
            TEAM,
            connection.id,
            Status.PENDING_APPROVAL,
            Status.ACTIVE,
            health=Health.HEALTHY,
            last_verified_at=verified_at,
        )
    async with db.transaction() as tx:
        second = await tx.connections.transition(TEAM, connection.id, Status.PENDING_APPROVAL, Status.ACTIVE)

    assert (first, second) == (True, False)
    async with db.read() as tx:
        stored = await tx.connections.get(TEAM, connection.id)
    assert stored is not None
    assert stored.status is Status.ACTIVE
    assert stored.health is Health.HEALTHY
    assert stored.last_verified_at == verified_at
    assert stored.updated_at > long_ago


async def test_transition_refuses_wrong_status_and_other_team(db: Database) -> None:
    connection = make_connection()
    await add(db, connection)

    async with db.transaction() as tx:
        wrong_from = await tx.connections.transition(TEAM, connection.id, Status.ACTIVE, Status.REVOKED)
        other_team = await tx.connections.transition(
            OTHER_TEAM, connection.id, Status.PENDING_APPROVAL, Status.ACTIVE
        )
        missing = await tx.connections.transition(TEAM, "no-such-id", Status.PENDING_APPROVAL, Status.ACTIVE)

    assert (wrong_from, other_team, missing) == (False, False, False)
    async with db.read() as tx:
        stored = await tx.connections.get(TEAM, connection.id)
    assert stored is not None and stored.status is Status.PENDING_APPROVAL


async def test_transition_updates_a_row_already_loaded_in_the_session(db: Database) -> None:
    connection = make_connection()
    await add(db, connection)

    async with db.transaction() as tx:
        loaded = await tx.connections.get(TEAM, connection.id)
        assert loaded is not None
        assert await tx.connections.transition(TEAM, connection.id, Status.PENDING_APPROVAL, Status.REJECTED)
        again = await tx.connections.get(TEAM, connection.id)
    assert again is not None and again.status is Status.REJECTED


async def test_concurrent_double_click_has_one_winner(db: Database) -> None:
    connection = make_connection()
    await add(db, connection)
    first_has_read = asyncio.Event()

    async def approve(wait_for: asyncio.Event | None) -> bool:
        # A service reads the connection, then moves it conditionally.
        if wait_for is not None:
            await wait_for.wait()
        async with db.transaction() as tx:
            current = await tx.connections.get(TEAM, connection.id)
            assert current is not None
            if wait_for is None:
                first_has_read.set()
                await asyncio.sleep(0)
            return await tx.connections.transition(
                TEAM, connection.id, Status.PENDING_APPROVAL, Status.ACTIVE
            )

    results = await asyncio.gather(approve(None), approve(first_has_read))
    assert sorted(results) == [False, True]


async def test_transition_can_set_updated_at_itself(db: Database) -> None:
    connection = make_connection()
    await add(db, connection)
    decided_at = datetime(2026, 5, 6, 7, 8, 9, tzinfo=UTC)

    async with db.transaction() as tx:
        assert await tx.connections.transition(
            TEAM, connection.id, Status.PENDING_APPROVAL, Status.EXPIRED, updated_at=decided_at
        )
    async with db.read() as tx:
        stored = await tx.connections.get(TEAM, connection.id)
    assert stored is not None and (stored.status, stored.updated_at) == (Status.EXPIRED, decided_at)
