"""RotationReminders on SQLite and PostgreSQL, over connections made and rotated by the real services.

Credentials get their age from a hand-set clock; each ``due()`` reads the same clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import pytest

from bot.domain import Reminder, Removal, RequestKind, Status
from bot.providers.registry import ProviderRegistry
from bot.services.approvals import ApprovalService
from bot.services.reminders import REMIND_EVERY, RotationReminders
from bot.services.removal import RemovalService
from bot.services.submissions import Submissions
from bot.store import Connection, Database, UnitOfWork
from bot.store.db import create_engine
from bot.store.repositories import ConnectionRepository
from tests.unit.services import test_rotations as shared
from tests.unit.services.test_approvals import ADMIN, SECOND_ADMIN
from tests.unit.services.test_connections import OTHER_TEAM, START, TEAM, create_request, form
from tests.unit.services.test_expiry import HandClock
from tests.unit.services.test_rotations import RACE_TIMEOUT, make_active, request_ok, row

# The rotation tests' fixtures, under the same names.
account = shared.account
approvals = shared.approvals
clock = shared.clock
directory = shared.directory
new_account = shared.new_account
providers = shared.providers
removal = shared.removal
submissions = shared.submissions

ROTATION_DAYS = 90
DUE_AT = START + timedelta(days=ROTATION_DAYS + 1)
"""When credentials stored at ``START`` (or a minute later) are due for a reminder."""


@pytest.fixture
def reminders(db: Database, providers: ProviderRegistry, clock: HandClock) -> RotationReminders:
    return RotationReminders(db, providers, rotation_days=ROTATION_DAYS, clock=clock)


def ids(reminders: list[Reminder]) -> list[str]:
    return [r.connection.id for r in reminders]


async def due_at(reminders: RotationReminders, clock: HandClock, when: datetime) -> list[str]:
    clock.now = when
    return ids(await reminders.due())


# --- which connections are due -------------------------------------------------------------------


async def test_only_active_connections_with_an_old_credential_are_due(
    reminders: RotationReminders,
    submissions: Submissions,
    approvals: ApprovalService,
    removal: RemovalService,
    account: tuple[str, str],
    clock: HandClock,
    db: Database,
) -> None:
    old = await make_active(submissions, approvals, clock, account, "Old Kafka")
    elsewhere = await make_active(submissions, approvals, clock, account, "Their Kafka", team_id=OTHER_TEAM)
    young = await make_active(
        submissions, approvals, clock, account, "Young Kafka", at=START + timedelta(days=2)
    )
    removed = await make_active(submissions, approvals, clock, account, "Removed Kafka")
    assert isinstance(await removal.remove(TEAM, removed, ADMIN), Removal)
    clock.now = START
    waiting = await submissions.submit(create_request("Waiting Kafka", form(*account)))
    turned_down = await submissions.submit(create_request("Rejected Kafka", form(*account)))
    assert waiting.request_id is not None and turned_down.request_id is not None
    await approvals.reject(RequestKind.CONNECTION, TEAM, turned_down.request_id, ADMIN, "wrong org")
    now = DUE_AT

    clock.now = now
    due = await reminders.due()

    assert sorted((r.team_id, r.connection.id) for r in due) == sorted([(TEAM, old), (OTHER_TEAM, elsewhere)])
    for reminder in due:
        assert reminder.age_days == ROTATION_DAYS + 1
        assert reminder.connection.status is Status.ACTIVE
        assert reminder.connection.credential_created_at == START
        assert (await row(db, reminder.connection.id)).rotation_reminded_at == now
    assert {r.connection.name for r in due} == {"Old Kafka", "Their Kafka"}
    for connection_id in (young, removed, waiting.request_id, turned_down.request_id):
        assert (await row(db, connection_id)).rotation_reminded_at is None
    # The young one's turn comes when its own credential is old enough.
    assert await due_at(reminders, clock, START + timedelta(days=2 + ROTATION_DAYS, seconds=1)) == [young]


async def test_a_credential_is_due_only_once_it_is_strictly_older_than_the_limit(
    reminders: RotationReminders,
    submissions: Submissions,
    approvals: ApprovalService,
    account: tuple[str, str],
    clock: HandClock,
) -> None:
    connection_id = await make_active(submissions, approvals, clock, account)

    assert await due_at(reminders, clock, START + timedelta(days=ROTATION_DAYS)) == []
    assert await due_at(reminders, clock, START + timedelta(days=ROTATION_DAYS, microseconds=1)) == [
        connection_id
    ]


async def test_the_owner_is_reminded_at_most_once_per_interval(
    reminders: RotationReminders,
    submissions: Submissions,
    approvals: ApprovalService,
    account: tuple[str, str],
    clock: HandClock,
    db: Database,
) -> None:
    connection_id = await make_active(submissions, approvals, clock, account)
    assert timedelta(days=7) == REMIND_EVERY, "the default this test relies on"

    assert await due_at(reminders, clock, DUE_AT) == [connection_id]
    assert await due_at(reminders, clock, DUE_AT) == [], "claimed: not twice in one run"
    assert await due_at(reminders, clock, DUE_AT + timedelta(days=3)) == []
    assert await due_at(reminders, clock, DUE_AT + timedelta(days=7)) == []
    clock.now = DUE_AT + timedelta(days=8)
    [again] = await reminders.due()
    assert again.connection.id == connection_id and again.age_days == ROTATION_DAYS + 1 + 8
    assert (await row(db, connection_id)).rotation_reminded_at == DUE_AT + timedelta(days=8)
    assert await due_at(reminders, clock, DUE_AT + timedelta(days=11)) == []


async def test_the_interval_can_be_set(
    db: Database,
    providers: ProviderRegistry,
    submissions: Submissions,
    approvals: ApprovalService,
    account: tuple[str, str],
    clock: HandClock,
) -> None:
    daily = RotationReminders(db, providers, rotation_days=0.5, every=timedelta(days=1), clock=clock)
    connection_id = await make_active(submissions, approvals, clock, account)

    assert daily.rotation_days == 0.5
    assert await due_at(daily, clock, START + timedelta(hours=13)) == [connection_id]
    assert await due_at(daily, clock, START + timedelta(hours=36)) == []
    assert await due_at(daily, clock, START + timedelta(hours=38)) == [connection_id]


def test_the_age_limit_must_be_positive(db: Database, providers: ProviderRegistry) -> None:
    for days in (0, -1):
        with pytest.raises(ValueError, match="rotation_days"):
            RotationReminders(db, providers, rotation_days=days)
    assert RotationReminders(db, providers, rotation_days=90).rotation_days == 90


async def test_each_run_claims_a_bounded_batch_oldest_first(
    reminders: RotationReminders,
    submissions: Submissions,
    approvals: ApprovalService,
    account: tuple[str, str],
    clock: HandClock,
) -> None:
    created = [
        await make_active(submissions, approvals, clock, account, f"Kafka {i}", at=START + timedelta(hours=i))
        for i in range(3)
    ]
    clock.now = DUE_AT + timedelta(days=1)

    assert ids(await reminders.due(limit=2)) == created[:2]
    assert ids(await reminders.due(limit=2)) == created[2:]
    assert await reminders.due(limit=2) == []


# --- rotation resets the age ---------------------------------------------------------------------


async def test_an_approved_rotation_starts_the_count_again(
    reminders: RotationReminders,
    submissions: Submissions,
    approvals: ApprovalService,
    account: tuple[str, str],
    new_account: tuple[str, str],
    clock: HandClock,
    db: Database,
) -> None:
    connection_id = await make_active(submissions, approvals, clock, account)
    assert await due_at(reminders, clock, DUE_AT) == [connection_id]
    clock.now = DUE_AT + timedelta(days=1)
    rotation_id = await request_ok(submissions, connection_id, form(*new_account))
    rotated_at = DUE_AT + timedelta(days=1, hours=2)
    clock.now = rotated_at

    await approvals.approve(RequestKind.ROTATION, TEAM, rotation_id, ADMIN)

    stored = await row(db, connection_id)
    assert (stored.credential_created_at, stored.rotation_reminded_at) == (rotated_at, None)
    assert await due_at(reminders, clock, rotated_at + timedelta(days=8)) == []
    assert await due_at(reminders, clock, rotated_at + timedelta(days=ROTATION_DAYS)) == []
    clock.now = rotated_at + timedelta(days=ROTATION_DAYS, seconds=1)
    [reminder] = await reminders.due()
    assert reminder.connection.id == connection_id and reminder.age_days == ROTATION_DAYS
    assert reminder.connection.credential_created_at == rotated_at


async def test_a_rejected_rotation_does_not_reset_the_count(
    reminders: RotationReminders,
    submissions: Submissions,
    approvals: ApprovalService,
    account: tuple[str, str],
    new_account: tuple[str, str],
    clock: HandClock,
    db: Database,
) -> None:
    connection_id = await make_active(submissions, approvals, clock, account)
    assert await due_at(reminders, clock, DUE_AT) == [connection_id]
    rotation_id = await request_ok(submissions, connection_id, form(*new_account))
    clock.now = DUE_AT + timedelta(hours=1)
    await approvals.reject(RequestKind.ROTATION, TEAM, rotation_id, SECOND_ADMIN, "wrong org")

    assert (await row(db, connection_id)).credential_created_at == START
    assert await due_at(reminders, clock, DUE_AT + timedelta(days=8)) == [connection_id]


# --- two bot processes ---------------------------------------------------------------------------


async def test_two_processes_claiming_at_once_remind_each_owner_once(
    reminders: RotationReminders,
    submissions: Submissions,
    approvals: ApprovalService,
    account: tuple[str, str],
    providers: ProviderRegistry,
    clock: HandClock,
    migrated_database_url: str,
) -> None:
    created = [await make_active(submissions, approvals, clock, account, f"Kafka {i}") for i in range(6)]
    other_db = Database.from_url(migrated_database_url)
    try:
        other = RotationReminders(other_db, providers, rotation_days=ROTATION_DAYS, clock=clock)
        for round_number in range(5):
            clock.now = DUE_AT + (REMIND_EVERY + timedelta(days=1)) * round_number
            claimed: list[str] = []
            while True:
                first, second = await asyncio.gather(reminders.due(limit=4), other.due(limit=4))
                if not first and not second:
                    break
                claimed += ids(first) + ids(second)
            assert sorted(claimed) == sorted(created), f"round {round_number}: each once"
    finally:
        await other_db.dispose()


class HeldClaims(ConnectionRepository):
    """Holds the transaction that claimed reminders open until the test lets it commit."""

    def __init__(self, tx: UnitOfWork, claimed: asyncio.Event, commit: asyncio.Event) -> None:
        super().__init__(tx.session)
        self._claimed = claimed
        self._commit = commit

    async def claim_rotation_reminders(self, *args: Any, **kwargs: Any) -> list[Connection]:
        rows = await super().claim_rotation_reminders(*args, **kwargs)
        self._claimed.set()
        async with asyncio.timeout(RACE_TIMEOUT):
            await self._commit.wait()
        return rows


class HeldDatabase(Database):
    def __init__(self, url: str, claimed: asyncio.Event, commit: asyncio.Event) -> None:
        super().__init__(create_engine(url))
        self._claimed = claimed
        self._commit = commit

    @asynccontextmanager
    async def transaction(self, *, lock_wait_ms: int | None = None) -> AsyncIterator[UnitOfWork]:
        async with super().transaction(lock_wait_ms=lock_wait_ms) as tx:
            tx.connections = HeldClaims(tx, self._claimed, self._commit)
            yield tx


@pytest.mark.parametrize(
    "database_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
async def test_a_claim_in_progress_is_skipped_by_the_other_process(
    reminders: RotationReminders,
    submissions: Submissions,
    approvals: ApprovalService,
    account: tuple[str, str],
    providers: ProviderRegistry,
    clock: HandClock,
    migrated_database_url: str,
    db: Database,
) -> None:
    created = [
        await make_active(submissions, approvals, clock, account, f"Kafka {i}", at=START + timedelta(hours=i))
        for i in range(4)
    ]
    clock.now = DUE_AT + timedelta(days=1)
    claimed, commit = asyncio.Event(), asyncio.Event()
    held_db = HeldDatabase(migrated_database_url, claimed, commit)
    try:
        holder = RotationReminders(held_db, providers, rotation_days=ROTATION_DAYS, clock=clock)
        holding = asyncio.create_task(holder.due(limit=2))
        async with asyncio.timeout(RACE_TIMEOUT):
            await claimed.wait()  # two rows are claimed and locked, not yet committed

        meanwhile = await reminders.due()

        commit.set()
        held = await holding
    finally:
        commit.set()
        await held_db.dispose()

    assert ids(held) == created[:2]
    assert ids(meanwhile) == created[2:], "the claimed rows are skipped, not waited for or taken twice"
    assert await reminders.due() == []
    for connection_id in created:
        assert (await row(db, connection_id)).rotation_reminded_at == clock.now
