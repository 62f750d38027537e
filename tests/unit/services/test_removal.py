"""RemovalService on SQLite and PostgreSQL, over connections made by the real services.

Everything below the service is real (database, cipher, the Confluent provider against
:class:`FakeConfluent`, :class:`AdminPolicy`); only Slack's user groups live in memory.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, text

from bot.domain import Decision, Refusal, Refused, Removal, RequestKind, RotationStatus, Status, Verdict
from bot.providers.registry import ProviderRegistry
from bot.services.admins import UNCHECKED
from bot.services.approvals import ApprovalService
from bot.services.removal import RemovalService
from bot.services.submissions import Submissions
from bot.store import Credential, Database, UnitOfWork
from bot.store.db import create_engine
from bot.store.repositories import ConnectionRepository
from tests.support.databases import dump_database_text
from tests.unit.services import test_rotations as shared
from tests.unit.services.test_approvals import ADMIN, GROUP_MEMBER, OUTSIDER, MemoryDirectory, new_policy
from tests.unit.services.test_connections import OTHER_TEAM, TEAM, create_request, form
from tests.unit.services.test_expiry import HandClock
from tests.unit.services.test_rotations import (
    DECIDE_AT,
    OWNER_ID,
    RACE_TIMEOUT,
    ROTATE_AT,
    TTL,
    by_version,
    credentials_of,
    events_of,
    make_active,
    rotation_row,
    row,
    state,
)

# The rotation tests' fixtures, under the same names.
account = shared.account
active = shared.active
approvals = shared.approvals
clock = shared.clock
directory = shared.directory
new_account = shared.new_account
pending = shared.pending
providers = shared.providers
removal = shared.removal
submissions = shared.submissions

REMOVE_AT = ROTATE_AT + timedelta(hours=1)


async def all_credentials(db: Database) -> list[Credential]:
    async with db.read() as tx:
        return list(await tx.session.scalars(select(Credential)))


# --- who may remove ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "actor", [OWNER_ID, ADMIN, GROUP_MEMBER], ids=["owner", "listed-admin", "group-admin"]
)
async def test_the_owner_or_an_admin_removes_an_active_connection(
    removal: RemovalService,
    active: str,
    account: tuple[str, str],
    db: Database,
    clock: HandClock,
    migrated_database_url: str,
    actor: str,
) -> None:
    clock.now = REMOVE_AT
    allowed = await removal.may_remove(TEAM, actor, connection_id=active)
    assert not isinstance(allowed, Refused) and allowed.id == active

    removed = await removal.remove(TEAM, active, actor)

    assert isinstance(removed, Removal), removed
    assert (removed.removed_by, removed.cancelled_rotation) == (actor, None)
    assert (removed.connection.id, removed.connection.name) == (active, "Prod Kafka")
    assert removed.connection.status is Status.REVOKED
    stored = await row(db, active)
    assert stored.status is Status.REVOKED
    assert (stored.next_check_at, stored.alert_channel, stored.alert_ts) == (None, None, None)
    assert stored.updated_at == REMOVE_AT
    assert await credentials_of(db, active) == []
    [event] = await events_of(db, active, "connection.removed")
    assert (event.team_id, event.actor, event.created_at, event.reason) == (TEAM, actor, REMOVE_AT, None)
    assert (event.before_status, event.after_status) == (Status.ACTIVE, Status.REVOKED)
    assert event.details == {"name": "Prod Kafka", "provider": "confluent_cloud", "ciphertexts_destroyed": 2}
    everything = dump_database_text(migrated_database_url)
    assert account[0] not in everything and account[1] not in everything


async def test_anyone_else_is_refused_and_nothing_changes(
    removal: RemovalService, active: str, db: Database
) -> None:
    before = await state(db, active)

    refused = await removal.remove(TEAM, active, OUTSIDER)
    asked = await removal.may_remove(TEAM, OUTSIDER, name="Prod Kafka")

    for answer in (refused, asked):
        assert isinstance(answer, Refused) and answer.reason is Refusal.NOT_ALLOWED
        assert "can remove it" in answer.message
    assert await state(db, active) == before


async def test_a_failing_directory_refuses_a_group_admin(
    removal: RemovalService, active: str, directory: MemoryDirectory, db: Database
) -> None:
    directory.failure = "timeout"
    before = await state(db, active)

    refused = await removal.remove(TEAM, active, GROUP_MEMBER)

    assert isinstance(refused, Refused) and refused.reason is Refusal.CHECK_FAILED
    assert f"{UNCHECKED}: timeout" in refused.message
    assert await state(db, active) == before
    assert isinstance(await removal.remove(TEAM, active, OWNER_ID), Removal), "the owner needs no lookup"


async def test_unknown_and_other_workspaces_connections_are_not_found(
    removal: RemovalService,
    submissions: Submissions,
    approvals: ApprovalService,
    clock: HandClock,
    account: tuple[str, str],
    active: str,
    db: Database,
) -> None:
    theirs = await make_active(submissions, approvals, clock, account, "Their Kafka", team_id=OTHER_TEAM)
    before = await state(db, theirs)

    answers = [
        await removal.remove(TEAM, theirs, ADMIN),
        await removal.remove(TEAM, str(uuid.uuid4()), ADMIN),
        await removal.may_remove(TEAM, OWNER_ID, name="their kafka"),
        await removal.may_remove(TEAM, OWNER_ID, name="Staging Kafka"),
        await removal.may_remove(OTHER_TEAM, OWNER_ID, connection_id=active),
    ]

    for answer in answers:
        assert isinstance(answer, Refused) and answer.reason is Refusal.NOT_FOUND, answer
        assert answer.message.startswith("There is no ") and "in this workspace" in answer.message
    assert isinstance(answers[3], Refused) and "named “Staging Kafka”" in answers[3].message
    assert await state(db, theirs) == before
    assert (await row(db, active)).status is Status.ACTIVE


async def test_may_remove_finds_a_connection_by_name(removal: RemovalService, active: str) -> None:
    found = await removal.may_remove(TEAM, OWNER_ID, name="  prod   KAFKA")

    assert not isinstance(found, Refused) and found.id == active and found.status is Status.ACTIVE


# --- statuses ------------------------------------------------------------------------------------


async def test_removing_twice_refuses_the_second_time(
    removal: RemovalService, active: str, db: Database, clock: HandClock
) -> None:
    clock.now = REMOVE_AT
    assert isinstance(await removal.remove(TEAM, active, OWNER_ID), Removal)
    after_first = await state(db, active)
    clock.now = REMOVE_AT + timedelta(minutes=1)

    again = await removal.remove(TEAM, active, ADMIN)

    assert isinstance(again, Refused) and again.reason is Refusal.WRONG_STATUS
    assert again.message == "“Prod Kafka” is already revoked; nothing to remove."
    assert await state(db, active) == after_first
    assert len(await events_of(db, active, "connection.removed")) == 1
    # A revoked connection no longer holds its name, so by name it is not found at all.
    by_name = await removal.may_remove(TEAM, OWNER_ID, name="Prod Kafka")
    assert isinstance(by_name, Refused) and by_name.reason is Refusal.NOT_FOUND


async def test_a_connection_awaiting_approval_is_pointed_to_rejection(
    removal: RemovalService, submissions: Submissions, account: tuple[str, str], db: Database
) -> None:
    outcome = await submissions.submit(create_request("Waiting Kafka", form(*account), user_id=OWNER_ID))
    assert outcome.request_id is not None
    before = await state(db, outcome.request_id)

    answers = [
        await removal.remove(TEAM, outcome.request_id, OWNER_ID),
        await removal.remove(TEAM, outcome.request_id, ADMIN),
        await removal.may_remove(TEAM, OWNER_ID, name="waiting kafka"),
    ]

    for answer in answers:
        assert isinstance(answer, Refused) and answer.reason is Refusal.WRONG_STATUS
        assert answer.message == (
            "“Waiting Kafka” still awaits approval; an admin can reject it instead of removing it."
        )
    assert await state(db, outcome.request_id) == before
    assert len(await credentials_of(db, outcome.request_id)) == 2


async def test_a_rejected_connection_has_nothing_to_remove(
    removal: RemovalService,
    submissions: Submissions,
    approvals: ApprovalService,
    account: tuple[str, str],
) -> None:
    outcome = await submissions.submit(create_request("Rejected Kafka", form(*account), user_id=OWNER_ID))
    assert outcome.request_id is not None
    await approvals.reject(RequestKind.CONNECTION, TEAM, outcome.request_id, ADMIN, "wrong org")

    refused = await removal.remove(TEAM, outcome.request_id, OWNER_ID)

    assert isinstance(refused, Refused) and refused.reason is Refusal.WRONG_STATUS
    assert refused.message == "“Rejected Kafka” is already rejected; nothing to remove."


async def test_the_name_can_be_used_again_after_removal(
    removal: RemovalService,
    submissions: Submissions,
    account: tuple[str, str],
    active: str,
    clock: HandClock,
    db: Database,
) -> None:
    assert isinstance(await removal.remove(TEAM, active, OWNER_ID), Removal)
    clock.now = REMOVE_AT

    outcome = await submissions.submit(create_request("prod kafka", form(*account), user_id=OUTSIDER))

    assert outcome.request_id is not None and outcome.request_id != active
    assert (await row(db, outcome.request_id)).status is Status.PENDING_APPROVAL
    found = await removal.may_remove(TEAM, OUTSIDER, name="Prod Kafka")
    assert isinstance(found, Refused) and found.reason is Refusal.WRONG_STATUS
    assert found.message.startswith("“prod kafka” still awaits approval")


# --- a rotation waiting --------------------------------------------------------------------------


async def test_removal_cancels_the_waiting_rotation_and_destroys_every_version(
    removal: RemovalService,
    submissions: Submissions,
    pending: str,
    active: str,
    new_account: tuple[str, str],
    db: Database,
    clock: HandClock,
    migrated_database_url: str,
    approvals: ApprovalService,
) -> None:
    await approvals.record_message(RequestKind.ROTATION, TEAM, pending, "C0ADMINS01", "1700000000.000100")
    assert by_version(await credentials_of(db, active)) == {
        1: ["api_key", "api_secret"],
        2: ["api_key", "api_secret"],
    }

    removed = await removal.remove(TEAM, active, ADMIN)

    assert isinstance(removed, Removal)
    cancelled = removed.cancelled_rotation
    assert cancelled is not None and cancelled.id == pending
    assert cancelled.status is RotationStatus.CANCELLED
    assert (cancelled.decided_by, cancelled.decided_at) == (ADMIN, DECIDE_AT)
    assert cancelled.reason == "the connection was removed"
    assert (cancelled.message_channel, cancelled.message_ts) == ("C0ADMINS01", "1700000000.000100")
    assert cancelled.requested_by == OWNER_ID and cancelled.connection.status is Status.REVOKED
    rotation = await rotation_row(db, pending)
    assert (rotation.status, rotation.decided_by) == (RotationStatus.CANCELLED, ADMIN)
    assert await credentials_of(db, active) == []
    [event] = await events_of(db, active, "connection.removed")
    assert event.details["ciphertexts_destroyed"] == 4
    assert event.details["cancelled_rotation"] == pending
    assert await submissions.pending_rotation(TEAM, active) is None
    assert new_account[1] not in dump_database_text(migrated_database_url)

    clock.now = DECIDE_AT + timedelta(minutes=1)
    late = await approvals.approve(RequestKind.ROTATION, TEAM, pending, ADMIN)
    assert late.verdict is Verdict.ALREADY_DECIDED
    assert late.request is not None and late.request.status is RotationStatus.CANCELLED
    assert (await row(db, active)).credential_version == 1
    assert await credentials_of(db, active) == []
    assert await approvals.expire_overdue(ROTATE_AT + TTL + timedelta(hours=1)) == []


async def test_removal_leaves_other_connections_ciphertexts_alone(
    removal: RemovalService,
    submissions: Submissions,
    approvals: ApprovalService,
    account: tuple[str, str],
    clock: HandClock,
    active: str,
    db: Database,
) -> None:
    kept = await make_active(submissions, approvals, clock, account, "Staging Kafka", at=ROTATE_AT)
    kept_before = [(c.id, bytes(c.ciphertext)) for c in await credentials_of(db, kept)]

    assert isinstance(await removal.remove(TEAM, active, OWNER_ID), Removal)

    assert [(c.id, bytes(c.ciphertext)) for c in await all_credentials(db)] == kept_before
    assert (await row(db, kept)).status is Status.ACTIVE


# --- concurrency ---------------------------------------------------------------------------------


async def test_two_removals_at_once_remove_once(
    removal: RemovalService,
    active: str,
    migrated_database_url: str,
    providers: ProviderRegistry,
    db: Database,
) -> None:
    other_db = Database.from_url(migrated_database_url)
    try:
        other = RemovalService(other_db, providers, new_policy(MemoryDirectory({})))
        answers = await asyncio.gather(
            removal.remove(TEAM, active, OWNER_ID), other.remove(TEAM, active, ADMIN)
        )
    finally:
        await other_db.dispose()

    removed = [a for a in answers if isinstance(a, Removal)]
    refused = [a for a in answers if isinstance(a, Refused)]
    assert (len(removed), len(refused)) == (1, 1), answers
    assert refused[0].reason is Refusal.WRONG_STATUS
    [event] = await events_of(db, active, "connection.removed")
    assert event.actor == removed[0].removed_by


class HeldConnections(ConnectionRepository):
    """Holds the removal's transaction right after its conditional UPDATE of the connection."""

    def __init__(self, tx: UnitOfWork, holding: asyncio.Event, go: asyncio.Event) -> None:
        super().__init__(tx.session)
        self._holding = holding
        self._go = go

    async def transition(self, *args: Any, **kwargs: Any) -> bool:
        won = await super().transition(*args, **kwargs)
        self._holding.set()
        async with asyncio.timeout(RACE_TIMEOUT):
            await self._go.wait()
        return won


class HeldDatabase(Database):
    def __init__(self, url: str, holding: asyncio.Event, go: asyncio.Event) -> None:
        super().__init__(create_engine(url))
        self._holding = holding
        self._go = go

    @asynccontextmanager
    async def transaction(self, *, lock_wait_ms: int | None = None) -> AsyncIterator[UnitOfWork]:
        async with super().transaction(lock_wait_ms=lock_wait_ms) as tx:
            tx.connections = HeldConnections(tx, self._holding, self._go)
            yield tx


async def someone_waits_for_a_lock(db: Database) -> bool:
    async with db.read() as tx:
        waiting = await tx.session.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        )
    return bool(waiting)


@pytest.mark.parametrize(
    "database_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
async def test_an_approval_meeting_a_removal_in_progress_waits_and_finds_the_rotation_cancelled(
    pending: str,
    active: str,
    providers: ProviderRegistry,
    migrated_database_url: str,
    db: Database,
    approvals: ApprovalService,
) -> None:
    holding, go = asyncio.Event(), asyncio.Event()
    held_db = HeldDatabase(migrated_database_url, holding, go)
    try:
        remover = RemovalService(held_db, providers, new_policy(MemoryDirectory({})))
        removing = asyncio.create_task(remover.remove(TEAM, active, OWNER_ID))
        async with asyncio.timeout(RACE_TIMEOUT):
            await holding.wait()  # the connection row is now the removal's
        approving = asyncio.create_task(approvals.approve(RequestKind.ROTATION, TEAM, pending, ADMIN))
        async with asyncio.timeout(RACE_TIMEOUT):
            while not approving.done() and not await someone_waits_for_a_lock(db):
                await asyncio.sleep(0.01)
        go.set()
        answers: list[Removal | Refused | Decision | BaseException] = list(
            await asyncio.gather(removing, approving, return_exceptions=True)
        )
    finally:
        go.set()
        await held_db.dispose()

    assert not [a for a in answers if isinstance(a, BaseException)], answers
    removed, approval = answers
    assert isinstance(removed, Removal) and removed.cancelled_rotation is not None
    assert isinstance(approval, Decision) and approval.verdict is Verdict.ALREADY_DECIDED
    assert (await row(db, active)).status is Status.REVOKED
    assert (await rotation_row(db, pending)).status is RotationStatus.CANCELLED
    assert await credentials_of(db, active) == []
    assert await events_of(db, active, "connection.rotated") == []
