"""Queries.status on SQLite and PostgreSQL: one connection by name, its history, a rotation waiting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.domain import (
    HISTORY_SHOWN,
    Refusal,
    Refused,
    Removal,
    RequestKind,
    RotationStatus,
    Status,
    StatusReport,
    Trigger,
)
from bot.providers.base import Check, Outcome, Verification
from bot.providers.registry import ProviderRegistry
from bot.redaction import mask_hint
from bot.services.approvals import ApprovalService
from bot.services.queries import Queries
from bot.services.removal import RemovalService
from bot.services.submissions import Submissions
from bot.store import Database, VerificationRecord
from tests.unit.services import test_rotations as shared
from tests.unit.services.test_approvals import ADMIN, OUTSIDER, MemoryDirectory, new_policy
from tests.unit.services.test_connections import OTHER_TEAM, TEAM, create_request, form
from tests.unit.services.test_expiry import HandClock
from tests.unit.services.test_rotations import (
    DECIDE_AT,
    OWNER_ID,
    ROTATE_AT,
    make_active,
    new_values,
    request_ok,
)

# The rotation tests' fixtures, under the same names.
account = shared.account
active = shared.active
approvals = shared.approvals
clock = shared.clock
directory = shared.directory
new_account = shared.new_account
providers = shared.providers
removal = shared.removal
submissions = shared.submissions


@pytest.fixture
def status(db: Database, providers: ProviderRegistry, directory: MemoryDirectory) -> Queries:
    return Queries(db, providers, new_policy(directory))


async def report(status: Queries, name: str, team_id: str = TEAM) -> StatusReport:
    found = await status.status(team_id, name)
    assert isinstance(found, StatusReport), found
    return found


async def add_record(
    db: Database,
    connection_id: str,
    at: datetime,
    *,
    trigger: str,
    actor: str | None,
    outcome: Outcome = Outcome.OK,
    summary: str = "fine",
    latency_ms: int = 5,
) -> None:
    verification = Verification(
        outcome=outcome,
        summary=summary,
        checks=(Check("Cloud API key", True),),
        hints=(),
        latency_ms=latency_ms,
    )
    record = VerificationRecord.from_verification(
        verification, team_id=TEAM, connection_id=connection_id, trigger=trigger, actor=actor
    )
    record.created_at = at
    async with db.transaction() as tx:
        await tx.verifications.add(record)


# --- history and the waiting rotation ------------------------------------------------------------


async def test_the_status_shows_the_history_newest_first_and_the_rotation_waiting(
    status: Queries,
    submissions: Submissions,
    active: str,
    account: tuple[str, str],
    new_account: tuple[str, str],
) -> None:
    rotation_id = await request_ok(submissions, active, new_values(new_account), actor=ADMIN)

    found = await report(status, "  PROD   kafka ")

    assert found.connection.id == active and found.connection.name == "Prod Kafka"
    assert found.connection.status is Status.ACTIVE
    assert found.connection.key_hint == mask_hint(account[0])
    assert found.failing_since is None
    assert [(h.trigger, h.actor, h.outcome) for h in found.history] == [
        (Trigger.ROTATION, ADMIN, Outcome.OK),
        (Trigger.CREATE, OWNER_ID, Outcome.OK),
    ]
    assert found.history[0].at > found.history[1].at
    assert all(h.ok and h.summary for h in found.history)
    waiting = found.pending_rotation
    assert waiting is not None and waiting.id == rotation_id
    assert (waiting.status, waiting.requested_by, waiting.requested_at) == (
        RotationStatus.PENDING_APPROVAL,
        ADMIN,
        ROTATE_AT,
    )
    assert waiting.new_key_hint == mask_hint(new_account[0])
    assert waiting.checks, "the new credential's checks"


async def test_only_the_latest_ten_verifications_are_shown(
    status: Queries, active: str, db: Database
) -> None:
    # Later than the creation's own record, whose time is the real clock's.
    base = datetime.now(UTC) + timedelta(days=1)
    triggers = ["schedule", "retest", "rotation", "bulk"]  # "bulk": written by some newer bot
    for i in range(12):
        await add_record(
            db,
            active,
            base + timedelta(hours=i),
            trigger=triggers[i % 4],
            actor=None if i % 4 == 0 else f"U0ACTOR{i:03d}",
            outcome=Outcome.OK if i % 2 == 0 else Outcome.UNAUTHORIZED,
            summary=f"check {i}",
            latency_ms=i,
        )

    found = await report(status, "Prod Kafka")

    assert HISTORY_SHOWN == 10
    shown = list(range(11, 1, -1))
    assert [h.summary for h in found.history] == [f"check {i}" for i in shown]
    assert [h.at for h in found.history] == [base + timedelta(hours=i) for i in shown]
    assert [h.latency_ms for h in found.history] == shown
    expected_triggers = {0: Trigger.SCHEDULE, 1: Trigger.RETEST, 2: Trigger.ROTATION, 3: Trigger.RETEST}
    assert [h.trigger for h in found.history] == [expected_triggers[i % 4] for i in shown]
    assert [h.actor for h in found.history] == [None if i % 4 == 0 else f"U0ACTOR{i:03d}" for i in shown]
    assert [h.ok for h in found.history] == [i % 2 == 0 for i in shown]
    assert found.pending_rotation is None


async def test_failing_since_is_reported(status: Queries, active: str, db: Database) -> None:
    since = ROTATE_AT - timedelta(hours=3)
    async with db.transaction() as tx:
        row = await tx.connections.get(TEAM, active)
        assert row is not None
        row.failing_since = since

    assert (await report(status, "Prod Kafka")).failing_since == since


async def test_after_the_approval_no_rotation_waits_and_the_new_key_shows(
    status: Queries,
    submissions: Submissions,
    active: str,
    new_account: tuple[str, str],
    clock: HandClock,
    approvals: ApprovalService,
) -> None:
    rotation_id = await request_ok(submissions, active, new_values(new_account))
    clock.now = DECIDE_AT
    await approvals.approve(RequestKind.ROTATION, TEAM, rotation_id, ADMIN)

    found = await report(status, "Prod Kafka")

    assert found.pending_rotation is None
    assert found.connection.key_hint == mask_hint(new_account[0])
    assert found.connection.credential_created_at == DECIDE_AT
    assert [h.trigger for h in found.history] == [Trigger.ROTATION, Trigger.CREATE]


# --- finding the connection ----------------------------------------------------------------------


async def test_unknown_names_and_other_workspaces_connections_are_not_found(
    status: Queries,
    submissions: Submissions,
    approvals: ApprovalService,
    account: tuple[str, str],
    clock: HandClock,
    active: str,
) -> None:
    await make_active(submissions, approvals, clock, account, "Their Kafka", team_id=OTHER_TEAM)

    for team_id, name in [(TEAM, "Staging Kafka"), (TEAM, "Their Kafka"), (OTHER_TEAM, "Prod Kafka")]:
        refused = await status.status(team_id, name)
        assert isinstance(refused, Refused), (team_id, name)
        assert refused.reason is Refusal.NOT_FOUND
        assert refused.message.startswith(f"There is no connection named “{name}” in this workspace.")
    assert (await report(status, "their kafka", OTHER_TEAM)).connection.name == "Their Kafka"


async def test_a_removed_connection_is_still_found_by_name(
    status: Queries,
    submissions: Submissions,
    removal: RemovalService,
    active: str,
    new_account: tuple[str, str],
) -> None:
    await request_ok(submissions, active, new_values(new_account))
    assert isinstance(await removal.remove(TEAM, active, OWNER_ID), Removal)

    found = await report(status, "Prod Kafka")

    assert found.connection.id == active and found.connection.status is Status.REVOKED
    assert found.pending_rotation is None, "the removal cancelled it"
    assert [h.trigger for h in found.history] == [Trigger.ROTATION, Trigger.CREATE]


async def test_the_newest_connection_of_a_name_is_shown(
    status: Queries,
    removal: RemovalService,
    submissions: Submissions,
    account: tuple[str, str],
    active: str,
    clock: HandClock,
) -> None:
    assert isinstance(await removal.remove(TEAM, active, OWNER_ID), Removal)
    clock.now = ROTATE_AT + timedelta(days=1)
    outcome = await submissions.submit(create_request("PROD KAFKA", form(*account), user_id=OUTSIDER))
    assert outcome.request_id is not None

    found = await report(status, "prod kafka")

    assert found.connection.id == outcome.request_id
    assert (found.connection.name, found.connection.status) == ("PROD KAFKA", Status.PENDING_APPROVAL)
    assert [(h.trigger, h.actor) for h in found.history] == [(Trigger.CREATE, OUTSIDER)]
