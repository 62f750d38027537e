"""InFlightRepository on SQLite and PostgreSQL: names reserved while verifying, one rotation check per
connection, release and take, and the sweeps' queries."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from bot.store import AuditEvent, Database
from bot.store.models import InFlightKind, InFlightVerification

TEAM = "T0000TEAM"
OTHER_TEAM = "T0000OTHR"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def creating(name: str, team_id: str = TEAM, **values: Any) -> InFlightVerification:
    defaults: dict[str, Any] = {
        "team_id": team_id,
        "user_id": "U0000USER",
        "kind": InFlightKind.CREATE,
        "provider": "confluent_cloud",
        "name": name,
        "view_id": "V0000VIEW",
        "host": "bot-1",
        "pid": 4242,
        "instance": "instance-a",
        "started_at": NOW,
        "deadline": NOW + timedelta(minutes=3),
    }
    return InFlightVerification(**(defaults | values))


def rotating(connection_id: str, name: str = "prod-kafka", **values: Any) -> InFlightVerification:
    return creating(name, kind=InFlightKind.ROTATION, connection_id=connection_id, **values)


async def claim(db: Database, row: InFlightVerification) -> bool:
    async with db.transaction() as tx:
        return await tx.in_flight.claim(row)


async def row_count(db: Database) -> int:
    async with db.read() as tx:
        return int(await tx.session.scalar(select(func.count()).select_from(InFlightVerification)) or 0)


async def test_a_name_is_reserved_per_workspace_whatever_its_case_and_spacing(db: Database) -> None:
    assert await claim(db, creating("Prod Kafka"))
    assert not await claim(db, creating("prod   KAFKA"))
    assert not await claim(db, creating("PROD KAFKA", user_id="U0000OTHR"))
    assert await claim(db, creating("prod kafka", team_id=OTHER_TEAM))
    assert await claim(db, creating("staging kafka"))
    assert await row_count(db) == 3


async def test_a_refused_claim_leaves_the_transaction_usable(db: Database) -> None:
    assert await claim(db, creating("prod-kafka"))
    async with db.transaction() as tx:
        assert not await tx.in_flight.claim(creating("PROD-KAFKA"))
        await tx.audit.add(AuditEvent(team_id=TEAM, actor="U0000USER", action="test.after_conflict"))
    async with db.read() as tx:
        assert await tx.session.scalar(select(AuditEvent.action)) == "test.after_conflict"
    assert await row_count(db) == 1


async def test_release_frees_the_name_and_reports_a_row_already_gone(db: Database) -> None:
    first = creating("prod-kafka")
    assert await claim(db, first)
    async with db.transaction() as tx:
        assert await tx.in_flight.release(first.id)
    async with db.transaction() as tx:
        assert not await tx.in_flight.release(first.id)
    assert await claim(db, creating("Prod-Kafka"))


async def test_one_rotation_of_a_connection_is_verified_at_a_time(db: Database) -> None:
    assert await claim(db, rotating("c-1"))
    assert not await claim(db, rotating("c-1", user_id="U0000ADMN"))
    assert await claim(db, rotating("c-2"))
    # A rotation holds no name: a new connection of the same name is a different question.
    assert await claim(db, creating("prod-kafka"))
    assert await row_count(db) == 3


async def test_a_rotation_claim_in_one_workspace_never_blocks_another(db: Database) -> None:
    # A rotation form's connection id is the client's to send: the same id (or the same form, sent
    # again) in another workspace must not hold up a rotation here.
    assert await claim(db, rotating("c-1", team_id=OTHER_TEAM))
    assert await claim(db, rotating("c-1"))
    assert not await claim(db, rotating("c-1", user_id="U0000ADMN"))
    assert await row_count(db) == 2


async def test_a_row_must_say_what_it_verifies(db: Database) -> None:
    with pytest.raises(IntegrityError):
        async with db.transaction() as tx:
            await tx.in_flight.claim(creating("prod-kafka", kind=InFlightKind.ROTATION))
    with pytest.raises(IntegrityError):
        async with db.transaction() as tx:
            await tx.in_flight.claim(creating("prod-kafka", connection_id="c-1"))
    assert await row_count(db) == 0


async def test_of_simultaneous_claims_of_one_name_exactly_one_wins(db: Database) -> None:
    rows = [creating(name, user_id=f"U000000{index}") for index, name in enumerate(["Orders", "orders"] * 4)]

    async def claim_while_others_do(row: InFlightVerification) -> bool:
        async with db.transaction() as tx:
            won = await tx.in_flight.claim(row)
            await asyncio.sleep(0.01)  # hold the transaction open while the others try
            return won

    results = await asyncio.gather(*(claim_while_others_do(row) for row in rows))
    assert sorted(results) == [False] * 7 + [True]
    assert await row_count(db) == 1


async def test_take_returns_the_row_once(db: Database) -> None:
    row = creating("prod-kafka", config={"cluster_id": "lkc-1"})
    assert await claim(db, row)
    async with db.transaction() as tx:
        taken = await tx.in_flight.take(row.id)
    assert taken is not None
    assert (taken.name, taken.user_id, taken.view_id, taken.config) == (
        "prod-kafka",
        "U0000USER",
        "V0000VIEW",
        {"cluster_id": "lkc-1"},
    )
    async with db.transaction() as tx:
        assert await tx.in_flight.take(row.id) is None
    assert await row_count(db) == 0


BOOT = "0b5e7c1a-4f2d-4e8b-9a6c-3d2f1e0a9b8c"
NAMESPACE = 4026531836
"""The inode of Linux's first pid namespace: above 2**31, as most are."""


async def test_the_sweep_queries_find_rows_by_machine_and_by_deadline(db: Database) -> None:
    machine = {"boot_id": BOOT, "pid_namespace": NAMESPACE}
    here_old = creating(
        "a", started_at=NOW - timedelta(minutes=10), deadline=NOW - timedelta(minutes=7), **machine
    )
    here_new = creating("b", **machine)
    elsewhere_old = creating("c", host="bot-2", deadline=NOW - timedelta(seconds=1), **machine)
    elsewhere_new = creating("d", host="bot-2", **machine)
    # Same host name, other pid namespace (a container beside us) or other boot, or neither known.
    beside = creating("e", boot_id=BOOT, pid_namespace=NAMESPACE + 1)
    before_reboot = creating("f", boot_id="another-boot", pid_namespace=NAMESPACE)
    unknown = creating("g")
    for row in (here_new, elsewhere_new, here_old, elsewhere_old, beside, before_reboot, unknown):
        assert await claim(db, row)

    async with db.read() as tx:
        rows = tx.in_flight
        assert [r.name for r in await rows.on_machine("bot-1", BOOT, NAMESPACE, 10)] == ["a", "b"]
        assert [r.name for r in await rows.on_machine("bot-1", BOOT, NAMESPACE, 1)] == ["a"]
        assert [r.pid_namespace for r in await rows.on_machine("bot-1", BOOT, NAMESPACE, 1)] == [NAMESPACE]
        assert [r.name for r in await rows.on_machine("bot-1", None, None, 10)] == ["g"]
        assert [r.name for r in await rows.past_deadline(NOW, 10)] == ["a", "c"]
        assert [r.name for r in await rows.past_deadline(NOW - timedelta(minutes=8), 10)] == []


async def test_holds_tells_whether_a_row_is_still_there(db: Database) -> None:
    row = creating("prod-kafka")
    assert await claim(db, row)
    async with db.read() as tx:
        assert await tx.in_flight.holds(row.id)
    async with db.transaction() as tx:
        assert await tx.in_flight.release(row.id)
    async with db.read() as tx:
        assert not await tx.in_flight.holds(row.id)
