"""ApprovalService deciding on new connections, on SQLite and PostgreSQL, over connections submitted
through the real Submissions.

Everything below the service is real: the migrated database, the AES-GCM cipher, the Confluent
provider verifying against :class:`FakeConfluent` in-process, and :class:`AdminPolicy`. Only the
directory of Slack user groups is an in-memory stand-in, so a test can make it fail.

The concurrency tests run two "bot processes": two :class:`Database` objects on the same
PostgreSQL database, each with its own engine and pool, each behind its own ApprovalService.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from bot.crypto import Cipher
from bot.domain import REASON_MAX_LENGTH, ApprovalRequest, Decision, RequestKind, Status, Verdict
from bot.providers.base import Check, Outcome, Verification
from bot.providers.confluent_cloud import ConfluentCloud
from bot.providers.registry import ProviderRegistry
from bot.services.admins import LISTED, MEMBER, NOT_ADMIN, UNCHECKED, AdminPolicy, DirectoryUnavailable
from bot.services.approvals import ApprovalService
from bot.services.submissions import Submissions
from bot.store import AuditEvent, Connection, Credential, Database, UnitOfWork, VerificationRecord
from bot.store.db import create_engine
from bot.store.repositories import ConnectionRepository
from tests.fakes.confluent_api import FakeConfluent, new_api_key, new_api_secret
from tests.support.databases import dump_database_text
from tests.unit.services.test_connections import (
    API,
    CLUSTER,
    OTHER_TEAM,
    TEAM,
    TickingClock,
    create_request,
    form,
)

REQUESTER = "U0REQUEST1"
ADMIN = "U0ADMIN001"
SECOND_ADMIN = "U0ADMIN002"
GROUP = "S0ADMINS01"
GROUP_MEMBER = "U0GROUPM01"
OUTSIDER = "U0OUTSID01"
LISTED_ADMINS = frozenset({ADMIN, SECOND_ADMIN})
TTL = timedelta(hours=72)
"""The approval time to live; no request here lives that long."""
CONNECTION = RequestKind.CONNECTION

ROUNDS = 20
"""How many times each race is run: one lucky interleaving must not make the test pass."""

RACE_TIMEOUT = 10.0
"""Seconds a racer waits for the other at a barrier before the test fails instead of hanging."""


class MemoryDirectory:
    """Slack user groups in memory; set ``failure`` to make every lookup fail as Slack would."""

    def __init__(self, groups: dict[str, set[str]]) -> None:
        self.groups = groups
        self.failure: str | None = None
        self.lookups = 0

    async def members(self, group_id: str) -> frozenset[str]:
        self.lookups += 1
        if self.failure is not None:
            raise DirectoryUnavailable(self.failure)
        if group_id not in self.groups:
            raise DirectoryUnavailable("no_such_subteam")
        return frozenset(self.groups[group_id])


def new_policy(directory: MemoryDirectory) -> AdminPolicy:
    # No caching: every check asks the directory, so a failure set by a test takes effect at once.
    return AdminPolicy(LISTED_ADMINS, GROUP, directory, ttl_seconds=0)


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def clock() -> TickingClock:
    return TickingClock()


@pytest.fixture
def providers() -> ProviderRegistry:
    return ProviderRegistry((ConfluentCloud(api_url=API),))


@pytest.fixture
def directory() -> MemoryDirectory:
    return MemoryDirectory({GROUP: {GROUP_MEMBER}})


@pytest.fixture
def submissions(
    db: Database,
    cipher: Cipher,
    providers: ProviderRegistry,
    http: httpx.AsyncClient,
    directory: MemoryDirectory,
    clock: TickingClock,
) -> Submissions:
    return Submissions(db, cipher, providers, http, new_policy(directory), clock=clock)


@pytest.fixture
def approvals(
    db: Database, providers: ProviderRegistry, directory: MemoryDirectory, clock: TickingClock
) -> ApprovalService:
    return ApprovalService(db, providers, new_policy(directory), ttl=TTL, clock=clock)


@pytest.fixture
def account(fake: FakeConfluent) -> tuple[str, str]:
    """A key/secret pair that the fake accepts on the Cloud API and on cluster ``CLUSTER``."""
    key, secret = new_api_key(), new_api_secret()
    fake.add_cloud_key(key, secret, environments=2)
    fake.add_cluster_key(key, secret, cluster_id=CLUSTER, topics=["orders"])
    return key, secret


@dataclass(frozen=True)
class Created:
    id: str
    verification: Verification


async def create_pending(
    submissions: Submissions,
    account: tuple[str, str],
    name: str = "Prod Kafka",
    *,
    user_id: str = REQUESTER,
    team_id: str = TEAM,
) -> Created:
    outcome = await submissions.submit(create_request(name, form(*account), team_id=team_id, user_id=user_id))
    assert outcome.verification is not None
    assert outcome.verification.outcome is Outcome.OK, outcome.verification.summary
    assert outcome.request_id is not None
    return Created(outcome.request_id, outcome.verification)


@pytest.fixture
async def pending(submissions: Submissions, account: tuple[str, str]) -> Created:
    """A verified connection asked for by ``REQUESTER``, waiting for approval."""
    return await create_pending(submissions, account)


def request_of(decision: Decision) -> ApprovalRequest:
    """The request a decision (or a refusal) shows."""
    assert decision.request is not None, decision
    return decision.request


# --- reading the database ------------------------------------------------------------------------


async def row(db: Database, connection_id: str) -> Connection:
    async with db.read() as tx:
        connection = await tx.session.get(Connection, connection_id)
    assert connection is not None
    return connection


async def credentials_of(db: Database, connection_id: str) -> list[Credential]:
    async with db.read() as tx:
        statement = (
            select(Credential).where(Credential.connection_id == connection_id).order_by(Credential.id)
        )
        return list(await tx.session.scalars(statement))


async def events_of(db: Database, connection_id: str) -> list[AuditEvent]:
    async with db.read() as tx:
        statement = (
            select(AuditEvent).where(AuditEvent.connection_id == connection_id).order_by(AuditEvent.id)
        )
        return list(await tx.session.scalars(statement))


async def decisions_of(db: Database, connection_id: str) -> list[AuditEvent]:
    """The approval and rejection events of a connection, oldest first."""
    return [
        event
        for event in await events_of(db, connection_id)
        if event.action in ("connection.approved", "connection.rejected")
    ]


async def state(db: Database, connection_id: str) -> dict[str, Any]:
    """Every column of the connection, its ciphertexts and its audit trail, for "nothing changed"."""
    connection = await row(db, connection_id)
    return {
        "connection": {
            column.key: getattr(connection, column.key) for column in Connection.__table__.columns
        },
        "credentials": [
            (c.id, c.field, bytes(c.ciphertext)) for c in await credentials_of(db, connection_id)
        ],
        "events": [(e.id, e.action) for e in await events_of(db, connection_id)],
    }


def audit_text(events: list[AuditEvent]) -> str:
    return "\n".join(
        repr((e.actor, e.action, e.before_status, e.after_status, e.reason, e.details)) for e in events
    )


# --- approve -------------------------------------------------------------------------------------


async def test_a_listed_admin_approves_once_and_the_decision_is_recorded(
    approvals: ApprovalService,
    pending: Created,
    db: Database,
    clock: TickingClock,
    account: tuple[str, str],
    migrated_database_url: str,
) -> None:
    credentials_before = [(c.id, bytes(c.ciphertext)) for c in await credentials_of(db, pending.id)]
    decided_at = clock.now + timedelta(seconds=1)  # the service reads the clock once per decision

    decision = await approvals.approve(CONNECTION, TEAM, pending.id, ADMIN)

    assert decision.verdict is Verdict.DECIDED
    request = request_of(decision)
    assert request.status is Status.ACTIVE
    assert (request.decided_by, request.decided_at, request.reason) == (ADMIN, decided_at, None)
    assert decision.admin is not None and (decision.admin.allowed, decision.admin.why) == (True, LISTED)
    assert request.connection.id == pending.id
    assert request.checks == pending.verification.checks

    stored = await row(db, pending.id)
    assert stored.status is Status.ACTIVE
    assert (stored.decided_by, stored.decided_at, stored.decision_reason) == (ADMIN, decided_at, None)
    assert stored.updated_at == decided_at
    assert len(credentials_before) == 2
    assert [(c.id, bytes(c.ciphertext)) for c in await credentials_of(db, pending.id)] == credentials_before

    events = await events_of(db, pending.id)
    assert [e.action for e in events] == ["connection.created", "connection.approved"]
    approved = events[-1]
    assert (approved.team_id, approved.actor, approved.connection_id) == (TEAM, ADMIN, pending.id)
    assert (approved.before_status, approved.after_status) == (Status.PENDING_APPROVAL, Status.ACTIVE)
    assert approved.reason is None
    assert approved.created_at == decided_at
    assert approved.details == {"name": "Prod Kafka", "provider": "confluent_cloud", "admin": LISTED}

    key, secret = account
    assert key not in audit_text(events) and secret not in audit_text(events)
    stored_text = dump_database_text(migrated_database_url)
    assert key not in stored_text and secret not in stored_text


async def test_a_member_of_the_admin_group_may_approve(
    approvals: ApprovalService, pending: Created, db: Database, directory: MemoryDirectory
) -> None:
    decision = await approvals.approve(CONNECTION, TEAM, pending.id, GROUP_MEMBER)

    assert decision.verdict is Verdict.DECIDED
    assert decision.admin is not None and decision.admin.why == MEMBER
    assert directory.lookups == 1
    stored = await row(db, pending.id)
    assert (stored.status, stored.decided_by) == (Status.ACTIVE, GROUP_MEMBER)
    [event] = await decisions_of(db, pending.id)
    assert (event.actor, event.details["admin"]) == (GROUP_MEMBER, MEMBER)


# --- reject --------------------------------------------------------------------------------------


async def test_a_rejection_stores_the_reason_and_destroys_the_ciphertexts(
    approvals: ApprovalService,
    pending: Created,
    db: Database,
    clock: TickingClock,
    account: tuple[str, str],
    migrated_database_url: str,
) -> None:
    assert len(await credentials_of(db, pending.id)) == 2
    decided_at = clock.now + timedelta(seconds=1)

    decision = await approvals.reject(
        CONNECTION, TEAM, pending.id, ADMIN, "  \n The key belongs to the wrong org.\t "
    )

    reason = "The key belongs to the wrong org."
    assert decision.verdict is Verdict.DECIDED
    request = request_of(decision)
    assert request.status is Status.REJECTED
    assert (request.decided_by, request.decided_at, request.reason) == (ADMIN, decided_at, reason)
    assert request.checks == pending.verification.checks

    stored = await row(db, pending.id)
    assert stored.status is Status.REJECTED
    assert (stored.decided_by, stored.decided_at, stored.decision_reason) == (ADMIN, decided_at, reason)
    assert await credentials_of(db, pending.id) == []
    async with db.read() as tx:
        assert list(await tx.session.scalars(select(Credential))) == [], "no ciphertext left anywhere"

    events = await events_of(db, pending.id)
    assert [e.action for e in events] == ["connection.created", "connection.rejected"]
    rejected = events[-1]
    assert (rejected.actor, rejected.connection_id, rejected.reason) == (ADMIN, pending.id, reason)
    assert (rejected.before_status, rejected.after_status) == (Status.PENDING_APPROVAL, Status.REJECTED)
    assert rejected.created_at == decided_at
    key, secret = account
    assert key not in audit_text(events) and secret not in audit_text(events)
    stored_text = dump_database_text(migrated_database_url)
    assert key not in stored_text and secret not in stored_text


async def test_a_rejection_keeps_only_the_other_connections_ciphertexts(
    approvals: ApprovalService, submissions: Submissions, account: tuple[str, str], db: Database
) -> None:
    rejected = await create_pending(submissions, account, "Prod Kafka")
    kept = await create_pending(submissions, account, "Staging Kafka")
    kept_before = [c.id for c in await credentials_of(db, kept.id)]

    await approvals.reject(CONNECTION, TEAM, rejected.id, ADMIN, "duplicate")

    assert await credentials_of(db, rejected.id) == []
    assert [c.id for c in await credentials_of(db, kept.id)] == kept_before
    assert len(kept_before) == 2


async def test_a_long_reason_is_trimmed_then_capped(
    approvals: ApprovalService, pending: Created, db: Database
) -> None:
    long_reason = "  " + "x" * (REASON_MAX_LENGTH + 100) + "  "

    decision = await approvals.reject(CONNECTION, TEAM, pending.id, ADMIN, long_reason)

    assert request_of(decision).reason == "x" * REASON_MAX_LENGTH
    assert (await row(db, pending.id)).decision_reason == "x" * REASON_MAX_LENGTH
    [event] = await decisions_of(db, pending.id)
    assert event.reason == "x" * REASON_MAX_LENGTH


@pytest.mark.parametrize("reason", ["", "   ", "\n\t "], ids=["empty", "spaces", "whitespace"])
async def test_a_rejection_without_a_reason_is_refused_and_changes_nothing(
    approvals: ApprovalService, pending: Created, db: Database, reason: str
) -> None:
    before = await state(db, pending.id)

    with pytest.raises(ValueError, match="reason"):
        await approvals.reject(CONNECTION, TEAM, pending.id, ADMIN, reason)

    assert await state(db, pending.id) == before
    assert (await row(db, pending.id)).status is Status.PENDING_APPROVAL


# --- refusals ------------------------------------------------------------------------------------


def approve(service: ApprovalService, team_id: str, connection_id: str, actor: str) -> Awaitable[Decision]:
    return service.approve(CONNECTION, team_id, connection_id, actor)


def reject(service: ApprovalService, team_id: str, connection_id: str, actor: str) -> Awaitable[Decision]:
    return service.reject(CONNECTION, team_id, connection_id, actor, "not needed")


DECIDERS = [pytest.param(approve, id="approve"), pytest.param(reject, id="reject")]
Decider = Callable[[ApprovalService, str, str, str], Awaitable[Decision]]


@pytest.mark.parametrize("decide", DECIDERS)
async def test_someone_who_is_not_an_admin_changes_nothing(
    approvals: ApprovalService, pending: Created, db: Database, decide: Decider
) -> None:
    before = await state(db, pending.id)

    decision = await decide(approvals, TEAM, pending.id, OUTSIDER)

    assert decision.verdict is Verdict.NOT_ADMIN
    assert decision.admin is not None
    assert (decision.admin.allowed, decision.admin.why, decision.admin.failed_closed) == (
        False,
        NOT_ADMIN,
        False,
    )
    assert decision.request is None, "a non-admin learns nothing about the connection"
    assert await state(db, pending.id) == before


@pytest.mark.parametrize("decide", DECIDERS)
async def test_when_the_directory_cannot_be_asked_the_decision_is_refused(
    approvals: ApprovalService, pending: Created, db: Database, directory: MemoryDirectory, decide: Decider
) -> None:
    directory.failure = "ratelimited"
    before = await state(db, pending.id)

    decision = await decide(approvals, TEAM, pending.id, GROUP_MEMBER)

    assert decision.verdict is Verdict.ADMIN_CHECK_FAILED
    assert decision.admin is not None
    assert not decision.admin.allowed and decision.admin.failed_closed
    assert decision.admin.why == f"{UNCHECKED}: ratelimited"
    assert directory.lookups == 1
    assert await state(db, pending.id) == before

    directory.failure = None
    assert (await decide(approvals, TEAM, pending.id, GROUP_MEMBER)).verdict is Verdict.DECIDED


@pytest.mark.parametrize("decide", DECIDERS)
async def test_the_requester_cannot_decide_on_their_own_connection(
    approvals: ApprovalService,
    submissions: Submissions,
    account: tuple[str, str],
    db: Database,
    decide: Decider,
) -> None:
    own = await create_pending(submissions, account, user_id=ADMIN)
    before = await state(db, own.id)

    decision = await decide(approvals, TEAM, own.id, ADMIN)

    assert decision.verdict is Verdict.SELF_APPROVAL
    assert request_of(decision).connection.created_by == ADMIN
    assert request_of(decision).decided_by is None
    assert await state(db, own.id) == before


async def test_self_approval_is_allowed_when_configured(
    db: Database,
    providers: ProviderRegistry,
    directory: MemoryDirectory,
    submissions: Submissions,
    account: tuple[str, str],
    clock: TickingClock,
) -> None:
    permissive = ApprovalService(
        db, providers, new_policy(directory), ttl=TTL, allow_self_approval=True, clock=clock
    )
    own = await create_pending(submissions, account, user_id=ADMIN)

    decision = await permissive.approve(CONNECTION, TEAM, own.id, ADMIN)

    assert decision.verdict is Verdict.DECIDED
    stored = await row(db, own.id)
    assert (stored.status, stored.created_by, stored.decided_by) == (Status.ACTIVE, ADMIN, ADMIN)
    [event] = await decisions_of(db, own.id)
    assert event.actor == ADMIN


@pytest.mark.parametrize("decide", DECIDERS)
async def test_another_workspaces_connection_is_not_found(
    approvals: ApprovalService,
    submissions: Submissions,
    account: tuple[str, str],
    db: Database,
    decide: Decider,
) -> None:
    theirs = await create_pending(submissions, account, team_id=OTHER_TEAM)
    before = await state(db, theirs.id)

    decision = await decide(approvals, TEAM, theirs.id, ADMIN)

    assert decision.verdict is Verdict.NOT_FOUND
    assert decision.request is None, "no connection, no checks"
    assert await state(db, theirs.id) == before


@pytest.mark.parametrize("decide", DECIDERS)
async def test_an_unknown_id_is_not_found(
    approvals: ApprovalService, pending: Created, db: Database, decide: Decider
) -> None:
    before = await state(db, pending.id)

    decision = await decide(approvals, TEAM, str(uuid.uuid4()), ADMIN)

    assert decision.verdict is Verdict.NOT_FOUND
    assert decision.request is None
    assert await state(db, pending.id) == before
    async with db.read() as tx:
        assert len(list(await tx.session.scalars(select(AuditEvent)))) == 1, "only the creation"


# --- exactly once --------------------------------------------------------------------------------


@pytest.mark.parametrize("second_actor", [ADMIN, SECOND_ADMIN], ids=["double-click", "another-admin"])
async def test_a_second_approval_learns_who_decided_first(
    approvals: ApprovalService, pending: Created, db: Database, second_actor: str
) -> None:
    first = await approvals.approve(CONNECTION, TEAM, pending.id, ADMIN)
    after_first = await state(db, pending.id)

    second = await approvals.approve(CONNECTION, TEAM, pending.id, second_actor)

    assert first.verdict is Verdict.DECIDED
    assert second.verdict is Verdict.ALREADY_DECIDED
    shown = request_of(second)
    assert shown.status is Status.ACTIVE
    assert (shown.decided_by, shown.decided_at) == (ADMIN, request_of(first).decided_at)
    assert shown.decided_at is not None
    assert shown.checks == pending.verification.checks
    assert await state(db, pending.id) == after_first
    assert len(await decisions_of(db, pending.id)) == 1


async def test_a_rejection_after_an_approval_changes_nothing(
    approvals: ApprovalService, pending: Created, db: Database
) -> None:
    first = await approvals.approve(CONNECTION, TEAM, pending.id, ADMIN)
    after_first = await state(db, pending.id)

    late = await approvals.reject(CONNECTION, TEAM, pending.id, SECOND_ADMIN, "too late")

    assert late.verdict is Verdict.ALREADY_DECIDED
    shown = request_of(late)
    assert (shown.status, shown.decided_by, shown.decided_at, shown.reason) == (
        Status.ACTIVE,
        ADMIN,
        request_of(first).decided_at,
        None,
    )
    assert await state(db, pending.id) == after_first
    assert len(await credentials_of(db, pending.id)) == 2


async def test_an_approval_after_a_rejection_names_the_rejection(
    approvals: ApprovalService, pending: Created, db: Database
) -> None:
    first = await approvals.reject(CONNECTION, TEAM, pending.id, ADMIN, "wrong org")
    after_first = await state(db, pending.id)

    late = await approvals.approve(CONNECTION, TEAM, pending.id, SECOND_ADMIN)

    assert late.verdict is Verdict.ALREADY_DECIDED
    shown = request_of(late)
    assert (shown.status, shown.decided_by, shown.decided_at, shown.reason) == (
        Status.REJECTED,
        ADMIN,
        request_of(first).decided_at,
        "wrong org",
    )
    assert await state(db, pending.id) == after_first


async def test_a_requester_who_is_an_admin_clicking_after_the_decision_learns_who_decided(
    approvals: ApprovalService, submissions: Submissions, account: tuple[str, str], db: Database
) -> None:
    own = await create_pending(submissions, account, user_id=GROUP_MEMBER)
    first = await approvals.approve(CONNECTION, TEAM, own.id, ADMIN)
    after_first = await state(db, own.id)

    # "You cannot approve your own" would be beside the point once someone else has decided.
    late = await approvals.approve(CONNECTION, TEAM, own.id, GROUP_MEMBER)

    assert late.verdict is Verdict.ALREADY_DECIDED
    assert (request_of(late).decided_by, request_of(late).decided_at) == (ADMIN, request_of(first).decided_at)
    assert await state(db, own.id) == after_first


# --- may_decide ----------------------------------------------------------------------------------


async def test_may_decide_allows_an_admin_without_deciding(
    approvals: ApprovalService, pending: Created, db: Database
) -> None:
    before = await state(db, pending.id)

    decision = await approvals.may_decide(CONNECTION, TEAM, pending.id, ADMIN)

    assert decision.verdict is Verdict.ALLOWED
    assert decision.admin is not None and decision.admin.why == LISTED
    assert await state(db, pending.id) == before
    assert (await row(db, pending.id)).status is Status.PENDING_APPROVAL


async def test_may_decide_reports_every_refusal_without_changing_anything(
    approvals: ApprovalService,
    submissions: Submissions,
    account: tuple[str, str],
    pending: Created,
    directory: MemoryDirectory,
    db: Database,
) -> None:
    own = await create_pending(submissions, account, "Own Kafka", user_id=ADMIN)
    theirs = await create_pending(submissions, account, team_id=OTHER_TEAM)
    decided = await create_pending(submissions, account, "Decided Kafka")
    first = await approvals.approve(CONNECTION, TEAM, decided.id, SECOND_ADMIN)
    ids = (pending.id, own.id, theirs.id, decided.id)
    before = [await state(db, connection_id) for connection_id in ids]

    not_admin = await approvals.may_decide(CONNECTION, TEAM, pending.id, OUTSIDER)
    self_approval = await approvals.may_decide(CONNECTION, TEAM, own.id, ADMIN)
    other_team = await approvals.may_decide(CONNECTION, TEAM, theirs.id, ADMIN)
    unknown = await approvals.may_decide(CONNECTION, TEAM, str(uuid.uuid4()), ADMIN)
    already = await approvals.may_decide(CONNECTION, TEAM, decided.id, ADMIN)
    directory.failure = "timeout"
    unchecked = await approvals.may_decide(CONNECTION, TEAM, pending.id, GROUP_MEMBER)

    assert not_admin.verdict is Verdict.NOT_ADMIN
    assert self_approval.verdict is Verdict.SELF_APPROVAL
    assert other_team.verdict is Verdict.NOT_FOUND
    assert unknown.verdict is Verdict.NOT_FOUND
    assert already.verdict is Verdict.ALREADY_DECIDED
    assert (request_of(already).decided_by, request_of(already).decided_at) == (
        SECOND_ADMIN,
        request_of(first).decided_at,
    )
    assert unchecked.verdict is Verdict.ADMIN_CHECK_FAILED
    assert unchecked.admin is not None and unchecked.admin.failed_closed
    assert [await state(db, connection_id) for connection_id in ids] == before


# --- the request and where it was posted ---------------------------------------------------------


async def test_request_describes_the_pending_connection_and_its_checks(
    approvals: ApprovalService, pending: Created, account: tuple[str, str]
) -> None:
    key, _ = account

    described = await approvals.describe(CONNECTION, TEAM, pending.id)

    assert described is not None
    summary = described.connection
    assert (summary.id, summary.name, summary.provider_key, summary.provider_title) == (
        pending.id,
        "Prod Kafka",
        "confluent_cloud",
        "Confluent Cloud",
    )
    assert (summary.status, summary.created_by) == (Status.PENDING_APPROVAL, REQUESTER)
    assert summary.key_hint == f"{key[:4]}…{key[-4:]}"
    assert described.checks
    assert described.checks == pending.verification.checks
    assert (described.decided_by, described.decided_at, described.reason) == (None, None, None)
    assert (described.message_channel, described.message_ts) == (None, None)


async def test_request_shows_the_checks_of_the_latest_verification(
    approvals: ApprovalService, pending: Created, db: Database
) -> None:
    later = Verification(
        outcome=Outcome.OK,
        summary="Still works",
        checks=(Check("Cloud API", True, "2 environments"), Check("Kafka REST", False, "no cluster")),
        hints=(),
        latency_ms=12,
    )
    record = VerificationRecord.from_verification(
        later, team_id=TEAM, connection_id=pending.id, trigger="retest"
    )
    record.created_at = datetime.now(UTC) + timedelta(hours=1)
    async with db.transaction() as tx:
        await tx.verifications.add(record)

    described = await approvals.describe(CONNECTION, TEAM, pending.id)

    assert described is not None
    assert described.checks == later.checks
    assert described.checks != pending.verification.checks


async def test_request_does_not_describe_another_workspaces_connection(
    approvals: ApprovalService, submissions: Submissions, account: tuple[str, str]
) -> None:
    theirs = await create_pending(submissions, account, team_id=OTHER_TEAM)

    assert await approvals.describe(CONNECTION, TEAM, theirs.id) is None
    assert await approvals.describe(CONNECTION, TEAM, str(uuid.uuid4())) is None
    assert await approvals.describe(CONNECTION, OTHER_TEAM, theirs.id) is not None


async def test_the_request_message_is_remembered_for_every_later_decision(
    approvals: ApprovalService, submissions: Submissions, account: tuple[str, str], pending: Created
) -> None:
    rejected = await create_pending(submissions, account, "Staging Kafka")
    await approvals.record_message(CONNECTION, TEAM, pending.id, "C0ADMINS01", "1700000000.000100")
    await approvals.record_message(CONNECTION, TEAM, rejected.id, "C0ADMINS01", "1700000000.000200")

    described = await approvals.describe(CONNECTION, TEAM, pending.id)
    approved = await approvals.approve(CONNECTION, TEAM, pending.id, ADMIN)
    again = await approvals.approve(CONNECTION, TEAM, pending.id, SECOND_ADMIN)
    refused = await approvals.reject(CONNECTION, TEAM, rejected.id, ADMIN, "duplicate")

    assert described is not None
    for request in (described, request_of(approved), request_of(again)):
        assert (request.message_channel, request.message_ts) == ("C0ADMINS01", "1700000000.000100")
    assert (request_of(refused).message_channel, request_of(refused).message_ts) == (
        "C0ADMINS01",
        "1700000000.000200",
    )


async def test_recording_the_message_of_another_workspaces_connection_does_nothing(
    approvals: ApprovalService, submissions: Submissions, account: tuple[str, str], db: Database
) -> None:
    theirs = await create_pending(submissions, account, team_id=OTHER_TEAM)
    before = await state(db, theirs.id)

    await approvals.record_message(CONNECTION, TEAM, theirs.id, "C0ADMINS01", "1700000000.000100")

    assert await state(db, theirs.id) == before
    described = await approvals.describe(CONNECTION, OTHER_TEAM, theirs.id)
    assert described is not None and described.message_channel is None


# --- concurrency: two bot processes on one database ----------------------------------------------


class GatedConnections(ConnectionRepository):
    """A connection repository whose row locks wait at a shared barrier and whose transitions
    report their result.

    With both racers held here, each has already read the connection as pending and passed every
    check inside its own transaction; only the conditional UPDATE can now decide between them.
    (A decision locks the connection row right before its UPDATE, so a racer held at the UPDATE
    itself would keep the other waiting for the lock, never at the barrier.)"""

    def __init__(self, tx: UnitOfWork, gate: asyncio.Barrier, results: list[bool]) -> None:
        super().__init__(tx.session)
        self._gate = gate
        self._results = results

    async def lock(self, team_id: str, connection_id: str) -> Connection | None:
        async with asyncio.timeout(RACE_TIMEOUT):
            await self._gate.wait()
        return await super().lock(team_id, connection_id)

    async def transition(self, *args: Any, **kwargs: Any) -> bool:
        won = await super().transition(*args, **kwargs)
        self._results.append(won)
        return won


class GatedDatabase(Database):
    """A bot process's database whose decisions meet the other process's before the UPDATE."""

    def __init__(self, url: str, gate: asyncio.Barrier, results: list[bool]) -> None:
        super().__init__(create_engine(url))
        self._gate = gate
        self._results = results

    @asynccontextmanager
    async def transaction(self, *, lock_wait_ms: int | None = None) -> AsyncIterator[UnitOfWork]:
        async with super().transaction(lock_wait_ms=lock_wait_ms) as tx:
            tx.connections = GatedConnections(tx, self._gate, self._results)
            yield tx


@asynccontextmanager
async def two_processes(
    url: str, providers: ProviderRegistry, clock: TickingClock, *, gated: bool
) -> AsyncIterator[tuple[list[ApprovalService], list[bool]]]:
    """Two ApprovalServices, each with its own Database (engine and pool) and admin policy, both
    connected before the test starts them; plus the results of their UPDATEs when ``gated``."""
    results: list[bool] = []
    gate = asyncio.Barrier(2)
    databases = [GatedDatabase(url, gate, results) if gated else Database.from_url(url) for _ in range(2)]
    try:
        for database in databases:
            assert await database.ping(), "each process connects before the race"
        services = [
            ApprovalService(
                database, providers, new_policy(MemoryDirectory({GROUP: set()})), ttl=TTL, clock=clock
            )
            for database in databases
        ]
        yield services, results
    finally:
        for database in databases:
            await database.dispose()


async def race(*calls: Callable[[], Awaitable[Decision]]) -> list[Decision]:
    """Run ``calls`` together: each starts only once all are scheduled and waiting."""
    start = asyncio.Barrier(len(calls))

    async def racer(call: Callable[[], Awaitable[Decision]]) -> Decision:
        async with asyncio.timeout(RACE_TIMEOUT):
            await start.wait()
        return await call()

    return list(await asyncio.gather(*(racer(call) for call in calls)))


def winner_and_loser(decisions: list[Decision]) -> tuple[Decision, Decision]:
    assert sorted(d.verdict.value for d in decisions) == sorted(
        [Verdict.DECIDED.value, Verdict.ALREADY_DECIDED.value]
    ), [d.verdict for d in decisions]
    [winner] = [d for d in decisions if d.verdict is Verdict.DECIDED]
    [loser] = [d for d in decisions if d.verdict is Verdict.ALREADY_DECIDED]
    return winner, loser


async def assert_one_approval(db: Database, connection_id: str, decisions: list[Decision]) -> None:
    winner, loser = (request_of(decision) for decision in winner_and_loser(decisions))
    assert winner.decided_by in LISTED_ADMINS
    assert (loser.decided_by, loser.decided_at, loser.status) == (
        winner.decided_by,
        winner.decided_at,
        Status.ACTIVE,
    ), "the loser is told who decided, and when"
    stored = await row(db, connection_id)
    assert (stored.status, stored.decided_by, stored.decided_at) == (
        Status.ACTIVE,
        winner.decided_by,
        winner.decided_at,
    )
    [event] = await decisions_of(db, connection_id)
    assert (event.action, event.actor) == ("connection.approved", winner.decided_by)


RACES = pytest.mark.parametrize(
    ("database_url", "gated"),
    [
        # SQLite's BEGIN IMMEDIATE queues the second writer behind the first, so the loser
        # already reads the decision; racers held inside their transactions would deadlock there.
        pytest.param("sqlite", False, id="sqlite-started-together"),
        pytest.param("postgresql", False, id="postgresql-started-together", marks=pytest.mark.postgres),
        pytest.param("postgresql", True, id="postgresql-held-before-the-update", marks=pytest.mark.postgres),
    ],
    indirect=["database_url"],
)


@RACES
async def test_two_admins_approving_at_once_from_two_processes_decide_once(
    submissions: Submissions,
    account: tuple[str, str],
    providers: ProviderRegistry,
    clock: TickingClock,
    db: Database,
    migrated_database_url: str,
    gated: bool,
) -> None:
    async with two_processes(migrated_database_url, providers, clock, gated=gated) as (services, results):
        first, second = services
        for round_number in range(ROUNDS):
            created = await create_pending(submissions, account, f"Kafka {round_number:02d}")

            decisions = await race(
                partial(first.approve, CONNECTION, TEAM, created.id, ADMIN),
                partial(second.approve, CONNECTION, TEAM, created.id, SECOND_ADMIN),
            )

            await assert_one_approval(db, created.id, decisions)
            if gated:
                # Both passed their checks; the conditional UPDATE alone made one of them lose.
                assert sorted(results) == [False, True]
                results.clear()


@RACES
async def test_an_approval_and_a_rejection_at_once_make_exactly_one_decision(
    submissions: Submissions,
    account: tuple[str, str],
    providers: ProviderRegistry,
    clock: TickingClock,
    db: Database,
    migrated_database_url: str,
    gated: bool,
) -> None:
    async with two_processes(migrated_database_url, providers, clock, gated=gated) as (services, results):
        approver, rejecter = services
        for round_number in range(ROUNDS):
            created = await create_pending(submissions, account, f"Kafka {round_number:02d}")

            decisions = await race(
                partial(approver.approve, CONNECTION, TEAM, created.id, ADMIN),
                partial(rejecter.reject, CONNECTION, TEAM, created.id, SECOND_ADMIN, "not needed"),
            )

            # Which side wins is up to the scheduler; either is correct, but only one.
            winner, loser = (request_of(decision) for decision in winner_and_loser(decisions))
            rejected = winner.status is Status.REJECTED
            assert winner.status in (Status.ACTIVE, Status.REJECTED)
            assert (winner.decided_by, winner.reason) == (
                (SECOND_ADMIN, "not needed") if rejected else (ADMIN, None)
            )
            assert (loser.status, loser.decided_by, loser.decided_at, loser.reason) == (
                winner.status,
                winner.decided_by,
                winner.decided_at,
                winner.reason,
            )
            stored = await row(db, created.id)
            assert (stored.status, stored.decided_by) == (winner.status, winner.decided_by)
            [event] = await decisions_of(db, created.id)
            assert (event.action, event.actor) == (
                ("connection.rejected", SECOND_ADMIN) if rejected else ("connection.approved", ADMIN)
            )
            credentials = await credentials_of(db, created.id)
            assert len(credentials) == (0 if rejected else 2), "ciphertexts go with a rejection only"
            if gated:
                assert sorted(results) == [False, True]
                results.clear()
