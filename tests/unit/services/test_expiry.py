"""ApprovalService.expire_overdue for new connections on SQLite and PostgreSQL, over connections
submitted through the real Submissions.

Everything below the service is real: the migrated database, the AES-GCM cipher and the Confluent
provider verifying against :class:`FakeConfluent` in-process. Connections are created at known
times by a hand-set clock, and each expiry run is given its own ``now``.

The concurrency tests run two "bot processes": two :class:`Database` objects on one database, each
with its own engine and pool, each behind its own ApprovalService.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta

import httpx
import pytest
from sqlalchemy import select

from bot.crypto import Cipher, MasterKey
from bot.domain import SYSTEM_ACTOR, ApprovalRequest, Decision, RequestKind, Status, Verdict
from bot.providers.confluent_cloud import ConfluentCloud
from bot.providers.registry import ProviderRegistry
from bot.services.admins import AdminPolicy
from bot.services.approvals import BATCH_SIZE, ApprovalService
from bot.services.submissions import Submissions
from bot.store import AuditEvent, Connection, Credential, Database
from bot.store.repositories import ConnectionRepository
from tests.fakes.confluent_api import FakeConfluent, new_api_key, new_api_secret
from tests.support.databases import dump_database_text
from tests.unit.services.test_connections import API, CLUSTER, OTHER_TEAM, START, TEAM, create_request, form

REQUESTER = "U0REQUEST1"
ADMIN = "U0ADMIN001"
TTL = timedelta(hours=72)
CONNECTION = RequestKind.CONNECTION
ROUNDS = 10
"""How many times each race is run: one lucky interleaving must not make the test pass."""


class HandClock:
    """A clock that says what the test last set it to."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class NoDirectory:
    """No admin group is configured in these tests, so nobody may ask this directory."""

    async def members(self, group_id: str) -> frozenset[str]:
        raise AssertionError("no group lookup expected")


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def clock() -> HandClock:
    return HandClock()


@pytest.fixture
def providers() -> ProviderRegistry:
    return ProviderRegistry((ConfluentCloud(api_url=API),))


def admin_policy() -> AdminPolicy:
    return AdminPolicy(frozenset({ADMIN}), None, NoDirectory())


@pytest.fixture
def submissions(
    db: Database, providers: ProviderRegistry, http: httpx.AsyncClient, clock: HandClock
) -> Submissions:
    return Submissions(db, Cipher(MasterKey.generate()), providers, http, admin_policy(), clock=clock)


@pytest.fixture
def approvals(db: Database, providers: ProviderRegistry, clock: HandClock) -> ApprovalService:
    """Decides on requests and, with :meth:`ApprovalService.expire_overdue`, expires them."""
    return ApprovalService(db, providers, admin_policy(), ttl=TTL, clock=clock)


def expirer(
    db: Database, providers: ProviderRegistry, *, ttl: timedelta = TTL, batch_size: int = BATCH_SIZE
) -> ApprovalService:
    """Another ApprovalService (on ``db``), run for its expiry only."""
    return ApprovalService(db, providers, admin_policy(), ttl=ttl, batch_size=batch_size)


@pytest.fixture
def account(fake: FakeConfluent) -> tuple[str, str]:
    key, secret = new_api_key(), new_api_secret()
    fake.add_cloud_key(key, secret, environments=2)
    fake.add_cluster_key(key, secret, cluster_id=CLUSTER, topics=["orders"])
    return key, secret


@pytest.fixture
def create(
    submissions: Submissions, account: tuple[str, str], clock: HandClock
) -> Callable[..., Awaitable[str]]:
    """``await create(name, at=…, team_id=…)``: a verified connection awaiting approval, created
    at ``at``; returns its id."""

    async def make(name: str, *, at: datetime = START, team_id: str = TEAM) -> str:
        clock.now = at
        request = create_request(name, form(*account), team_id=team_id, user_id=REQUESTER)
        outcome = await submissions.submit(request)
        assert outcome.request_id is not None, outcome.verification
        return outcome.request_id

    return make


# --- reading the database ------------------------------------------------------------------------


async def row(db: Database, connection_id: str) -> Connection:
    async with db.read() as tx:
        connection = await tx.session.get(Connection, connection_id)
    assert connection is not None
    return connection


async def credentials_of(db: Database, connection_id: str) -> list[Credential]:
    async with db.read() as tx:
        statement = select(Credential).where(Credential.connection_id == connection_id)
        return list(await tx.session.scalars(statement))


async def events_of(db: Database, connection_id: str, action: str | None = None) -> list[AuditEvent]:
    async with db.read() as tx:
        statement = (
            select(AuditEvent).where(AuditEvent.connection_id == connection_id).order_by(AuditEvent.id)
        )
        events = list(await tx.session.scalars(statement))
    return [e for e in events if action is None or e.action == action]


def request_of(decision: Decision) -> ApprovalRequest:
    assert decision.request is not None, decision
    return decision.request


def ids_of(decisions: list[Decision]) -> list[str]:
    return [request_of(d).connection.id for d in decisions]


# --- which connections expire ----------------------------------------------------------------------


async def test_only_pending_requests_older_than_the_ttl_expire_in_every_workspace(
    approvals: ApprovalService,
    create: Callable[..., Awaitable[str]],
    db: Database,
    clock: HandClock,
) -> None:
    overdue = await create("overdue")
    elsewhere = await create("overdue elsewhere", team_id=OTHER_TEAM)
    approved = await create("approved")
    rejected = await create("rejected")
    young = await create("young", at=START + timedelta(hours=1))
    clock.now = START + timedelta(minutes=5)
    assert (await approvals.approve(CONNECTION, TEAM, approved, ADMIN)).verdict is Verdict.DECIDED
    assert (await approvals.reject(CONNECTION, TEAM, rejected, ADMIN, "wrong key")).verdict is Verdict.DECIDED

    decisions = await approvals.expire_overdue(START + TTL + timedelta(minutes=30))

    assert sorted(ids_of(decisions)) == sorted([overdue, elsewhere])
    statuses = {cid: (await row(db, cid)).status for cid in (overdue, elsewhere, approved, rejected, young)}
    assert statuses == {
        overdue: Status.EXPIRED,
        elsewhere: Status.EXPIRED,
        approved: Status.ACTIVE,
        rejected: Status.REJECTED,
        young: Status.PENDING_APPROVAL,
    }
    assert (await row(db, approved)).decided_by == ADMIN
    assert len(await credentials_of(db, approved)) == 2
    assert len(await credentials_of(db, young)) == 2
    assert await events_of(db, young, "connection.expired") == []


async def test_a_request_expires_only_once_its_ttl_has_fully_passed(
    approvals: ApprovalService, create: Callable[..., Awaitable[str]], db: Database
) -> None:
    connection_id = await create("edge")

    assert await approvals.expire_overdue(START + TTL) == []
    assert (await row(db, connection_id)).status is Status.PENDING_APPROVAL

    assert ids_of(await approvals.expire_overdue(START + TTL + timedelta(microseconds=1))) == [connection_id]


async def test_the_clock_is_read_when_no_time_is_given(
    approvals: ApprovalService, create: Callable[..., Awaitable[str]], clock: HandClock, db: Database
) -> None:
    connection_id = await create("read the clock")
    clock.now = START + TTL - timedelta(seconds=1)
    assert await approvals.expire_overdue() == []
    clock.now = START + TTL + timedelta(seconds=1)
    [decision] = await approvals.expire_overdue()
    assert request_of(decision).decided_at == clock.now == (await row(db, connection_id)).decided_at


# --- what an expiry does ---------------------------------------------------------------------------


async def test_expiry_destroys_the_ciphertext_records_one_event_and_reports_the_request(
    approvals: ApprovalService,
    create: Callable[..., Awaitable[str]],
    db: Database,
    account: tuple[str, str],
    migrated_database_url: str,
) -> None:
    connection_id = await create("Prod Kafka")
    await approvals.record_message(CONNECTION, TEAM, connection_id, "C0ADMINS01", "1700000000.000100")
    assert len(await credentials_of(db, connection_id)) == 2
    described = await approvals.describe(CONNECTION, TEAM, connection_id)
    assert described is not None
    checks = described.checks
    now = START + TTL + timedelta(hours=1)

    [decision] = await approvals.expire_overdue(now)

    expired = request_of(decision)
    assert decision.verdict is Verdict.DECIDED and expired.status is Status.EXPIRED
    assert (expired.decided_by, expired.decided_at, expired.reason) == (None, now, None)
    assert expired.connection.name == "Prod Kafka"
    assert expired.connection.created_by == REQUESTER
    assert checks and expired.checks == checks
    assert (expired.message_channel, expired.message_ts) == ("C0ADMINS01", "1700000000.000100")

    stored = await row(db, connection_id)
    assert (stored.status, stored.decided_by, stored.decided_at) == (Status.EXPIRED, None, now)
    assert stored.decision_reason is None and stored.updated_at == now
    assert await credentials_of(db, connection_id) == []

    events = await events_of(db, connection_id)
    assert [e.action for e in events] == ["connection.created", "connection.expired"]
    event = events[-1]
    assert (event.team_id, event.actor, event.created_at) == (TEAM, SYSTEM_ACTOR, now)
    assert (event.before_status, event.after_status) == (Status.PENDING_APPROVAL, Status.EXPIRED)
    assert event.reason == "not decided within 72 hours"
    assert event.details == {"name": "Prod Kafka", "provider": "confluent_cloud"}

    everything = dump_database_text(migrated_database_url)
    key, secret = account
    assert key not in everything and secret not in everything


async def test_an_expired_request_can_no_longer_be_approved(
    approvals: ApprovalService, create: Callable[..., Awaitable[str]], db: Database
) -> None:
    connection_id = await create("too late")
    now = START + TTL + timedelta(hours=1)
    await approvals.expire_overdue(now)

    late = await approvals.approve(CONNECTION, TEAM, connection_id, ADMIN)

    assert late.verdict is Verdict.ALREADY_DECIDED and request_of(late).status is Status.EXPIRED
    assert (request_of(late).decided_by, request_of(late).decided_at) == (None, now)
    assert (await row(db, connection_id)).status is Status.EXPIRED
    assert await events_of(db, connection_id, "connection.approved") == []


async def test_an_hour_is_named_in_the_singular(
    db: Database, providers: ProviderRegistry, create: Callable[..., Awaitable[str]]
) -> None:
    connection_id = await create("one hour")
    service = expirer(db, providers, ttl=timedelta(hours=1))
    await service.expire_overdue(START + timedelta(hours=2))
    [event] = await events_of(db, connection_id, "connection.expired")
    assert event.reason == "not decided within 1 hour"


def test_a_ttl_that_is_not_positive_is_refused(db: Database, providers: ProviderRegistry) -> None:
    with pytest.raises(ValueError, match="ttl"):
        expirer(db, providers, ttl=timedelta(0))
    with pytest.raises(ValueError, match="batch_size"):
        expirer(db, providers, ttl=TTL, batch_size=0)


async def test_each_run_expires_a_bounded_batch_oldest_first(
    db: Database, providers: ProviderRegistry, create: Callable[..., Awaitable[str]]
) -> None:
    created = [await create(f"c{i}", at=START + timedelta(minutes=i)) for i in range(3)]
    service = expirer(db, providers, ttl=TTL, batch_size=2)
    now = START + TTL + timedelta(hours=1)

    assert ids_of(await service.expire_overdue(now)) == created[:2]
    assert (await row(db, created[2])).status is Status.PENDING_APPROVAL
    assert ids_of(await service.expire_overdue(now)) == created[2:]
    assert await service.expire_overdue(now) == []


# --- exactly once ----------------------------------------------------------------------------------


async def test_a_second_run_finds_nothing_left_to_do(
    approvals: ApprovalService, create: Callable[..., Awaitable[str]], db: Database
) -> None:
    connection_id = await create("once")
    first = START + TTL + timedelta(hours=1)

    assert ids_of(await approvals.expire_overdue(first)) == [connection_id]
    assert await approvals.expire_overdue(first + timedelta(hours=1)) == []

    assert (await row(db, connection_id)).decided_at == first
    assert len(await events_of(db, connection_id, "connection.expired")) == 1


@pytest.fixture
async def second_db(migrated_database_url: str) -> AsyncIterator[Database]:
    """Another "bot process" on the same database: its own engine and pool."""
    other = Database.from_url(migrated_database_url)
    try:
        yield other
    finally:
        await other.dispose()


async def test_a_replica_that_loses_the_transition_does_not_report_the_connection(
    db: Database,
    second_db: Database,
    providers: ProviderRegistry,
    create: Callable[..., Awaitable[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Between this replica's query and its transitions, the other replica expires everything.
    created = [await create(f"c{i}") for i in range(3)]
    now = START + TTL + timedelta(hours=1)
    mine, theirs = expirer(db, providers), expirer(second_db, providers)
    query = ConnectionRepository.pending_created_before
    other_run: list[list[str]] = []

    async def query_then_lose_the_race(
        self: ConnectionRepository, cutoff: datetime, limit: int
    ) -> list[Connection]:
        found = await query(self, cutoff, limit)
        if not other_run:
            monkeypatch.setattr(ConnectionRepository, "pending_created_before", query)
            other_run.append(ids_of(await theirs.expire_overdue(now)))
        return found

    monkeypatch.setattr(ConnectionRepository, "pending_created_before", query_then_lose_the_race)

    assert await mine.expire_overdue(now) == []
    assert sorted(other_run[0]) == sorted(created)
    for connection_id in created:
        assert len(await events_of(db, connection_id, "connection.expired")) == 1
        assert (await row(db, connection_id)).status is Status.EXPIRED


async def test_two_replicas_expiring_at_once_report_each_connection_exactly_once(
    db: Database,
    second_db: Database,
    providers: ProviderRegistry,
    create: Callable[..., Awaitable[str]],
) -> None:
    replicas = (expirer(db, providers), expirer(second_db, providers))
    for round_ in range(ROUNDS):
        start = START + timedelta(days=round_)
        created = [await create(f"r{round_} c{i}", at=start) for i in range(4)]
        now = start + TTL + timedelta(hours=1)

        first, second = await asyncio.gather(*(replica.expire_overdue(now) for replica in replicas))

        reported = ids_of(first) + ids_of(second)
        assert sorted(reported) == sorted(created), f"round {round_}"
        for connection_id in created:
            assert len(await events_of(db, connection_id, "connection.expired")) == 1
            assert await credentials_of(db, connection_id) == []


async def test_an_approval_racing_the_expiry_leaves_exactly_one_outcome(
    db: Database,
    second_db: Database,
    providers: ProviderRegistry,
    approvals: ApprovalService,
    create: Callable[..., Awaitable[str]],
    clock: HandClock,
) -> None:
    expiry = expirer(second_db, providers)
    for round_ in range(ROUNDS):
        start = START + timedelta(days=round_)
        connection_id = await create(f"race {round_}", at=start)
        now = start + TTL + timedelta(hours=1)
        # The click comes just inside the time to live (one past it expires the request itself,
        # see below), the expiry run after it.
        clock.now = start + TTL - timedelta(seconds=1)

        approval, expired = await asyncio.gather(
            approvals.approve(CONNECTION, TEAM, connection_id, ADMIN), expiry.expire_overdue(now)
        )

        status = (await row(db, connection_id)).status
        approved_events = await events_of(db, connection_id, "connection.approved")
        expired_events = await events_of(db, connection_id, "connection.expired")
        if status is Status.ACTIVE:
            assert approval.verdict is Verdict.DECIDED and expired == []
            assert (len(approved_events), len(expired_events)) == (1, 0)
            assert len(await credentials_of(db, connection_id)) == 2
        else:
            assert status is Status.EXPIRED, f"round {round_}: {status}"
            assert approval.verdict is Verdict.ALREADY_DECIDED and ids_of(expired) == [connection_id]
            assert (len(approved_events), len(expired_events)) == (0, 1)
            assert await credentials_of(db, connection_id) == []


async def test_a_click_on_an_overdue_request_expires_it_instead_of_approving(
    db: Database,
    approvals: ApprovalService,
    create: Callable[..., Awaitable[str]],
    clock: HandClock,
) -> None:
    connection_id = await create("late", at=START)
    clock.now = START + TTL  # the periodic job has not run yet

    decision = await approvals.approve(CONNECTION, TEAM, connection_id, ADMIN)

    assert decision.verdict is Verdict.EXPIRED and request_of(decision).status is Status.EXPIRED
    assert (await row(db, connection_id)).status is Status.EXPIRED
    assert await events_of(db, connection_id, "connection.approved") == []
    assert len(await events_of(db, connection_id, "connection.expired")) == 1
    assert await credentials_of(db, connection_id) == []
    # A request still inside its time is approved as usual.
    fresh = await create("fresh", at=START + TTL)
    assert (await approvals.approve(CONNECTION, TEAM, fresh, ADMIN)).verdict is Verdict.DECIDED
