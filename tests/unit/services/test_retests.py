"""RetestService on SQLite and PostgreSQL: re-testing one connection, a whole workspace, and the
connections the health schedule says are due.

Below the service everything is real: the migrated database, the AES-GCM cipher, and the Confluent
provider verifying against :class:`FakeConfluent` in-process. Tests about the worker pool (how
many provider calls run at once, how a 429 holds every worker back) use a scripted provider
instead, which answers per stored token and counts the calls in flight. The wall clock, the
monotonic clock and ``sleep`` are all fakes, so nothing here waits for real time to pass.

Connections are stored directly (row plus sealed credential fields, as Submissions stores
them), so each test chooses their status, health and schedule.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, select

from bot.crypto import Cipher
from bot.domain import (
    SYSTEM_ACTOR,
    ChangeKind,
    Health,
    HealthChange,
    Refusal,
    Refused,
    RetestReport,
    RetestResult,
    Status,
)
from bot.providers._confluent_errors import CLOUD_FORBIDDEN_HINTS
from bot.providers.base import FieldValues, FormField, FormSection, Outcome, Probe, Provider
from bot.providers.confluent_cloud import ConfluentCloud, RetryPolicy
from bot.providers.registry import ProviderRegistry
from bot.redaction import Secret
from bot.services import retests
from bot.services.admins import AdminPolicy, DirectoryUnavailable
from bot.services.permissions import RetestPolicy
from bot.services.records import sealed_field
from bot.services.retests import CLAIM_LEASE, RATE_LIMIT_REQUEUES, BulkRunning, RetestFailed, RetestService
from bot.store import AuditEvent, Connection, Database, VerificationRecord
from bot.store.models import BulkRetest
from tests.fakes.confluent_api import FakeConfluent, new_api_key, new_api_secret
from tests.support.databases import dump_database_text
from tests.unit.services.conftest import API
from tests.unit.services.test_connections import OTHER_TEAM, START, TEAM

REQUESTER = "U0REQUEST1"
TESTER = "U0TESTER01"
OTHER_TESTER = "U0TESTER02"
THIRD_TEAM = "T0000THIRD"
ADMIN = "U0ADMIN001"
ONCALL_GROUP = "S0ONCALL01"
ALERT_CHANNEL = "C0ALERTS01"
ALERT_TS = "1772366400.000100"
INTERVAL = timedelta(hours=6)
REMINDER_EVERY = timedelta(hours=12)
ENVIRONMENTS = "/org/v2/environments"
WAIT_LIMIT = 5.0
"""Seconds a test waits for the service to reach a state before it fails instead of hanging."""


# --- doubles -------------------------------------------------------------------------------------


class HandClock:
    """A wall clock that says what the test last set it to."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class FakeTime:
    """The service's monotonic clock and ``sleep``. A sleep moves the clock on by what was asked,
    unless ``gate`` is set: then sleepers wait for the test to open it (and to set the clock)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []
        self.gate: asyncio.Event | None = None
        self.sleeping = 0

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if self.gate is None:
            self.now += seconds
        else:
            self.sleeping += 1
            try:
                await asyncio.wait_for(self.gate.wait(), WAIT_LIMIT)
            finally:
                self.sleeping -= 1
        await asyncio.sleep(0)


def answer(outcome: Outcome, retry_after: float | None = None) -> Probe:
    hints = ("Grant the role.",) if outcome is Outcome.FORBIDDEN else ()
    return Probe(outcome, f"Scripted {outcome.value}.", hints=hints, retry_after=retry_after)


OK = answer(Outcome.OK)


class ScriptedProvider(Provider):
    """Answers each stored ``token`` as scripted (the last answer repeats; OK if none) and logs
    every call: when it started and ended on the fake monotonic clock, and how many overlapped."""

    key = "scripted"
    title = "Scripted"
    description = "Answers as the test says."
    hint_field = "token"
    sections = (FormSection("Account", (FormField("token", "Token", "A token.", secret=True),)),)

    def __init__(self, timer: FakeTime) -> None:
        self.timer = timer
        self.answers: dict[str, list[Probe]] = {}
        self.events: list[tuple[str, str, float]] = []
        """("start" | "end", token, monotonic time), in the order they happened."""
        self.in_flight = 0
        self.most_in_flight = 0
        self.crowd: int | None = None
        """When set, calls wait until this many are in flight at once (then none waits again)."""
        self.crowded = asyncio.Event()
        self.during: Callable[[str], Awaitable[None]] | None = None
        """Run inside every call, between the request and the answer."""

    def script(self, token: str, *answers: Probe) -> None:
        self.answers[token] = list(answers)

    def tokens_called(self) -> list[str]:
        return [token for kind, token, _ in self.events if kind == "start"]

    def validate(self, values: FieldValues) -> dict[str, str]:
        return {}

    async def probe(self, values: FieldValues, http: httpx.AsyncClient) -> Probe:
        token = values["token"]
        assert isinstance(token, Secret)
        plain = token.reveal()
        self.events.append(("start", plain, self.timer.monotonic()))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.crowd is not None:
                if self.in_flight >= self.crowd:
                    self.crowded.set()
                await asyncio.wait_for(self.crowded.wait(), WAIT_LIMIT)
            if self.during is not None:
                await self.during(plain)
            await asyncio.sleep(0)
            queued = self.answers.get(plain, [])
            result = queued.pop(0) if len(queued) > 1 else (queued[0] if queued else OK)
        finally:
            self.in_flight -= 1
        self.events.append(("end", plain, self.timer.monotonic()))
        return result


class MemoryDirectory:
    """Slack user groups in memory; ``failure`` makes every lookup fail as Slack would."""

    def __init__(self, groups: dict[str, set[str]]) -> None:
        self.groups = groups
        self.failure: str | None = None

    async def members(self, group_id: str) -> frozenset[str]:
        if self.failure is not None:
            raise DirectoryUnavailable(self.failure)
        return frozenset(self.groups.get(group_id, set()))


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def clock() -> HandClock:
    return HandClock()


@pytest.fixture
def timer() -> FakeTime:
    return FakeTime()


@pytest.fixture
def scripted(timer: FakeTime) -> ScriptedProvider:
    return ScriptedProvider(timer)


@pytest.fixture
def providers(scripted: ScriptedProvider) -> ProviderRegistry:
    # No retries inside the provider: every 429 reaches the service, whose own pause is under test.
    confluent = ConfluentCloud(api_url=API, retry=RetryPolicy(rate_limit_retries=0, server_error_retries=0))
    return ProviderRegistry((confluent, scripted))


def open_policy() -> RetestPolicy:
    return RetestPolicy(None, AdminPolicy(frozenset({ADMIN}), None, MemoryDirectory({})))


ServiceFactory = Callable[..., RetestService]


@pytest.fixture
def make_service(
    db: Database,
    cipher: Cipher,
    providers: ProviderRegistry,
    http: httpx.AsyncClient,
    clock: HandClock,
    timer: FakeTime,
) -> ServiceFactory:
    def make(
        *, concurrency: int = 4, policy: RetestPolicy | None = None, database: Database | None = None
    ) -> RetestService:
        return RetestService(
            database or db,
            cipher,
            providers,
            http,
            policy or open_policy(),
            interval=INTERVAL,
            concurrency=concurrency,
            reminder_every=REMINDER_EVERY,
            clock=clock,
            sleep=timer.sleep,
            monotonic=timer.monotonic,
        )

    return make


@pytest.fixture
def service(make_service: ServiceFactory) -> RetestService:
    return make_service()


@pytest.fixture
def account(fake: FakeConfluent) -> tuple[str, str]:
    """A Cloud API key and secret the fake accepts."""
    key, secret = new_api_key(), new_api_secret()
    fake.add_cloud_key(key, secret, environments=2)
    return key, secret


Store = Callable[..., Awaitable[str]]


@pytest.fixture
def store(db: Database, cipher: Cipher) -> Store:
    """``await store(name, {field: secret}, provider=…, status=…, …)``: a connection with its
    sealed credential, as Submissions stores one; returns its id."""

    async def make(
        name: str,
        secrets: dict[str, str],
        *,
        provider: str = "scripted",
        team_id: str = TEAM,
        status: Status = Status.ACTIVE,
        health: Health = Health.HEALTHY,
        created_at: datetime = START,
        **values: Any,
    ) -> str:
        connection = Connection(
            team_id=team_id,
            name=name,
            provider=provider,
            created_by=REQUESTER,
            status=status,
            health=health,
            key_hint="ABCD…WXYZ",
            created_at=created_at,
            updated_at=created_at,
            last_verified_at=created_at,
            credential_created_at=created_at,
            **values,
        )
        async with db.transaction() as tx:
            await tx.connections.add(connection)
            for field_name, value in secrets.items():
                sealed = sealed_field(
                    cipher, connection, connection.config, field_name, 1, Secret(value), created_at
                )
                await tx.credentials.add(sealed)
        return connection.id

    return make


@pytest.fixture
def store_confluent(store: Store, account: tuple[str, str]) -> Store:
    """``await store_confluent(name, …)``: a Confluent connection holding ``account``."""
    key, secret = account

    async def make(name: str, **kw: Any) -> str:
        return await store(name, {"api_key": key, "api_secret": secret}, provider="confluent_cloud", **kw)

    return make


# --- reading the database ------------------------------------------------------------------------


async def row(db: Database, connection_id: str) -> Connection:
    async with db.read() as tx:
        found = await tx.session.get(Connection, connection_id)
    assert found is not None
    return found


async def history(db: Database, connection_id: str) -> list[VerificationRecord]:
    async with db.read() as tx:
        statement = (
            select(VerificationRecord)
            .where(VerificationRecord.connection_id == connection_id)
            .order_by(VerificationRecord.created_at, VerificationRecord.id)
        )
        return list(await tx.session.scalars(statement))


async def events(db: Database, connection_id: str | None = None) -> list[AuditEvent]:
    async with db.read() as tx:
        statement = select(AuditEvent).order_by(AuditEvent.id)
        if connection_id is not None:
            statement = statement.where(AuditEvent.connection_id == connection_id)
        return list(await tx.session.scalars(statement))


async def retest(service: RetestService, connection_id: str, actor: str = TESTER) -> RetestResult:
    result = await service.retest_one(TEAM, actor, connection_id=connection_id)
    assert isinstance(result, RetestResult), result
    return result


async def retest_all(service: RetestService, actor: str = TESTER, team_id: str = TEAM) -> RetestReport:
    report = await service.retest_all(team_id, actor)
    assert isinstance(report, RetestReport), report
    return report


async def until(condition: Callable[[], bool], what: str) -> None:
    """Let the service run until ``condition`` holds (it needs real I/O, hence the short naps)."""
    async with asyncio.timeout(WAIT_LIMIT):
        while not condition():
            await asyncio.sleep(0.005)
    assert condition(), what


# --- one connection ------------------------------------------------------------------------------


async def test_retest_by_name_verifies_the_stored_credential(
    service: RetestService,
    store_confluent: Store,
    fake: FakeConfluent,
    clock: HandClock,
    account: tuple[str, str],
    db: Database,
) -> None:
    connection_id = await store_confluent("Prod Kafka")
    clock.now = START + timedelta(hours=1)

    result = await service.retest_one(TEAM, TESTER, name="  PROD   kafka ")

    assert isinstance(result, RetestResult)
    assert result.ok and result.conclusive
    assert result.change is None
    assert result.team_id == TEAM
    assert result.verification.outcome is Outcome.OK
    assert "accepted the Cloud API key" in result.verification.summary
    summary = result.connection
    assert (summary.id, summary.name, summary.status, summary.health) == (
        connection_id,
        "Prod Kafka",
        Status.ACTIVE,
        Health.HEALTHY,
    )
    assert summary.last_verified_at == clock.now
    [request] = fake.requests_to(ENVIRONMENTS)
    assert (request.username, request.authenticated) == (account[0], True)
    assert (await row(db, connection_id)).last_verified_at == clock.now


async def test_retest_by_id_verifies_the_stored_credential(
    service: RetestService, store_confluent: Store, fake: FakeConfluent
) -> None:
    connection_id = await store_confluent("Prod Kafka")

    result = await retest(service, connection_id)

    assert result.ok and result.change is None
    assert result.connection.id == connection_id
    assert len(fake.requests_to(ENVIRONMENTS)) == 1


async def test_a_revoked_key_turns_the_connection_failing_with_one_failed_change(
    service: RetestService,
    store_confluent: Store,
    fake: FakeConfluent,
    clock: HandClock,
    db: Database,
    account: tuple[str, str],
) -> None:
    connection_id = await store_confluent("Prod Kafka")
    fake.revoke_key(account[0])
    failed_at = START + timedelta(hours=1)
    clock.now = failed_at

    first = await retest(service, connection_id)

    assert first.verification.outcome is Outcome.UNAUTHORIZED
    assert not first.ok and first.conclusive
    assert first.change == HealthChange(ChangeKind.FAILED, failing_since=failed_at)
    assert first.connection.health is Health.FAILING

    clock.now = failed_at + timedelta(hours=1)
    second = await retest(service, connection_id)

    assert second.verification.outcome is Outcome.UNAUTHORIZED
    assert second.change is None
    assert second.connection.health is Health.FAILING
    stored = await row(db, connection_id)
    assert (stored.health, stored.failing_since, stored.alerted_at) == (Health.FAILING, failed_at, failed_at)
    assert stored.last_verified_at == clock.now
    assert stored.status is Status.ACTIVE


async def test_a_connection_that_stays_failing_is_reminded_about_once_per_reminder_period(
    service: RetestService,
    store_confluent: Store,
    fake: FakeConfluent,
    clock: HandClock,
    db: Database,
    account: tuple[str, str],
) -> None:
    connection_id = await store_confluent("Prod Kafka")
    fake.revoke_key(account[0])
    failed_at = START + timedelta(hours=1)
    clock.now = failed_at
    assert (await retest(service, connection_id)).change == HealthChange(ChangeKind.FAILED, failed_at)
    await service.record_alert(TEAM, connection_id, ALERT_CHANNEL, ALERT_TS)

    clock.now = failed_at + REMINDER_EVERY - timedelta(seconds=1)
    assert (await retest(service, connection_id)).change is None

    clock.now = failed_at + REMINDER_EVERY
    reminder = await retest(service, connection_id)
    assert reminder.change == HealthChange(ChangeKind.STILL_FAILING, failed_at, ALERT_CHANNEL, ALERT_TS)

    clock.now = failed_at + REMINDER_EVERY + timedelta(hours=1)
    assert (await retest(service, connection_id)).change is None
    stored = await row(db, connection_id)
    assert stored.alerted_at == failed_at + REMINDER_EVERY
    assert (stored.alert_channel, stored.alert_ts, stored.failing_since) == (
        ALERT_CHANNEL,
        ALERT_TS,
        failed_at,
    )


async def test_recovery_follows_up_on_the_alert_and_clears_it(
    service: RetestService,
    store_confluent: Store,
    fake: FakeConfluent,
    clock: HandClock,
    db: Database,
    account: tuple[str, str],
) -> None:
    connection_id = await store_confluent("Prod Kafka")
    fake.revoke_key(account[0])
    failed_at = START + timedelta(hours=1)
    clock.now = failed_at
    await retest(service, connection_id)
    await service.record_alert(TEAM, connection_id, ALERT_CHANNEL, ALERT_TS)
    fake.add_cloud_key(*account)
    clock.now = failed_at + timedelta(hours=3)

    recovered = await retest(service, connection_id)

    assert recovered.ok
    assert recovered.change == HealthChange(ChangeKind.RECOVERED, failed_at, ALERT_CHANNEL, ALERT_TS)
    assert recovered.connection.health is Health.HEALTHY
    stored = await row(db, connection_id)
    assert stored.health is Health.HEALTHY
    assert (stored.failing_since, stored.alert_channel, stored.alert_ts, stored.alerted_at) == (
        None,
        None,
        None,
        None,
    )
    assert stored.last_verified_at == clock.now

    clock.now += timedelta(hours=1)
    assert (await retest(service, connection_id)).change is None


async def test_recovery_without_a_recorded_alert_message_still_follows_up(
    service: RetestService,
    store_confluent: Store,
    fake: FakeConfluent,
    clock: HandClock,
    account: tuple[str, str],
) -> None:
    connection_id = await store_confluent("Prod Kafka")
    fake.revoke_key(account[0])
    await retest(service, connection_id)
    fake.add_cloud_key(*account)

    recovered = await retest(service, connection_id)

    assert recovered.change == HealthChange(ChangeKind.RECOVERED, START, None, None)


async def test_record_alert_is_ignored_unless_the_connection_is_failing_in_that_workspace(
    service: RetestService,
    store_confluent: Store,
    fake: FakeConfluent,
    db: Database,
    account: tuple[str, str],
) -> None:
    connection_id = await store_confluent("Prod Kafka")

    await service.record_alert(TEAM, connection_id, ALERT_CHANNEL, ALERT_TS)
    assert (await row(db, connection_id)).alert_channel is None

    fake.revoke_key(account[0])
    await retest(service, connection_id)
    await service.record_alert(OTHER_TEAM, connection_id, ALERT_CHANNEL, ALERT_TS)
    await service.record_alert(TEAM, "no-such-id", ALERT_CHANNEL, ALERT_TS)
    assert (await row(db, connection_id)).alert_channel is None

    await service.record_alert(TEAM, connection_id, ALERT_CHANNEL, ALERT_TS)
    stored = await row(db, connection_id)
    assert (stored.alert_channel, stored.alert_ts) == (ALERT_CHANNEL, ALERT_TS)


async def test_a_forbidden_key_fails_and_keeps_the_rbac_hints(
    service: RetestService,
    store_confluent: Store,
    fake: FakeConfluent,
    db: Database,
    account: tuple[str, str],
) -> None:
    connection_id = await store_confluent("Prod Kafka")
    fake.cloud_accounts[account[0]].role = False

    result = await retest(service, connection_id)

    assert result.verification.outcome is Outcome.FORBIDDEN
    assert "lacks permission" in result.verification.summary
    assert result.verification.hints == CLOUD_FORBIDDEN_HINTS
    assert result.change is not None and result.change.kind is ChangeKind.FAILED
    [record] = await history(db, connection_id)
    assert record.outcome is Outcome.FORBIDDEN
    assert record.hints == list(CLOUD_FORBIDDEN_HINTS)


@pytest.mark.parametrize("health", [Health.HEALTHY, Health.FAILING])
async def test_a_rate_limited_result_leaves_the_health_as_it_was(
    service: RetestService,
    store_confluent: Store,
    fake: FakeConfluent,
    clock: HandClock,
    timer: FakeTime,
    db: Database,
    health: Health,
) -> None:
    failing = health is Health.FAILING
    # A failing connection last alerted about long ago: a conclusive failure would remind.
    connection_id = await store_confluent(
        "Prod Kafka",
        health=health,
        failing_since=START if failing else None,
        alerted_at=START if failing else None,
    )
    fake.fail_next(ENVIRONMENTS, 429, times=RATE_LIMIT_REQUEUES + 1, retry_after=4)
    clock.now = START + 2 * REMINDER_EVERY

    result = await retest(service, connection_id)

    assert result.verification.outcome is Outcome.RATE_LIMITED
    assert not result.conclusive and not result.ok
    assert result.change is None
    assert result.connection.health is health
    stored = await row(db, connection_id)
    assert (stored.health, stored.last_verified_at) == (health, START)
    assert stored.alerted_at == (START if failing else None)
    # Tried again after the pause the provider asked for, then given up on as inconclusive.
    assert len(fake.requests_to(ENVIRONMENTS)) == RATE_LIMIT_REQUEUES + 1
    assert timer.sleeps == [4.0] * RATE_LIMIT_REQUEUES
    [record] = await history(db, connection_id)
    assert (record.outcome, record.trigger, record.actor) == (Outcome.RATE_LIMITED, "retest", TESTER)


async def test_a_pending_connection_can_be_retested_but_never_alerts(
    service: RetestService,
    store_confluent: Store,
    fake: FakeConfluent,
    clock: HandClock,
    db: Database,
    account: tuple[str, str],
) -> None:
    connection_id = await store_confluent("Pending Kafka", status=Status.PENDING_APPROVAL)

    healthy = await retest(service, connection_id)
    assert healthy.ok and healthy.change is None
    assert healthy.connection.status is Status.PENDING_APPROVAL

    fake.revoke_key(account[0])
    failed_at = START + timedelta(hours=1)
    clock.now = failed_at
    failing = await retest(service, connection_id)
    assert failing.verification.outcome is Outcome.UNAUTHORIZED
    assert failing.change is None
    assert failing.connection.health is Health.FAILING

    clock.now = failed_at + 3 * REMINDER_EVERY
    assert (await retest(service, connection_id)).change is None
    stored = await row(db, connection_id)
    assert (stored.health, stored.failing_since, stored.alerted_at) == (Health.FAILING, failed_at, None)

    fake.add_cloud_key(*account)
    recovered = await retest(service, connection_id)
    assert recovered.ok and recovered.change is None
    assert (await row(db, connection_id)).failing_since is None


@pytest.mark.parametrize("status", [Status.REJECTED, Status.REVOKED, Status.EXPIRED])
async def test_a_connection_without_usable_credentials_is_refused(
    service: RetestService, store_confluent: Store, fake: FakeConfluent, db: Database, status: Status
) -> None:
    connection_id = await store_confluent("Old Kafka", status=status)

    by_name = await service.retest_one(TEAM, TESTER, name="old kafka")
    by_id = await service.retest_one(TEAM, TESTER, connection_id=connection_id)

    for refused in (by_name, by_id):
        assert isinstance(refused, Refused)
        assert refused.reason is Refusal.WRONG_STATUS
        assert "Old Kafka" in refused.message and status.label in refused.message
    assert fake.requests == []
    assert await history(db, connection_id) == []
    assert await events(db, connection_id) == []


async def test_unknown_names_and_other_workspaces_connections_are_not_found(
    service: RetestService, store_confluent: Store, fake: FakeConfluent, db: Database
) -> None:
    elsewhere = await store_confluent("Their Kafka", team_id=OTHER_TEAM)

    unknown = await service.retest_one(TEAM, TESTER, name="No Such Kafka")
    by_their_name = await service.retest_one(TEAM, TESTER, name="Their Kafka")
    by_their_id = await service.retest_one(TEAM, TESTER, connection_id=elsewhere)

    assert isinstance(unknown, Refused) and unknown.reason is Refusal.NOT_FOUND
    assert "“No Such Kafka”" in unknown.message
    assert isinstance(by_their_name, Refused) and by_their_name.reason is Refusal.NOT_FOUND
    assert isinstance(by_their_id, Refused) and by_their_id.reason is Refusal.NOT_FOUND
    assert "Their Kafka" not in by_their_id.message
    assert fake.requests == []
    assert await history(db, elsewhere) == []


async def test_a_connection_removed_during_its_retest_is_reported_as_not_found(
    service: RetestService, store: Store, scripted: ScriptedProvider, db: Database
) -> None:
    connection_id = await store("Doomed", {"token": "doomed-token-1"})

    async def remove(_token: str) -> None:
        async with db.transaction() as tx:
            await tx.session.execute(delete(Connection).where(Connection.id == connection_id))

    scripted.during = remove

    refused = await service.retest_one(TEAM, TESTER, connection_id=connection_id)

    assert isinstance(refused, Refused) and refused.reason is Refusal.NOT_FOUND
    assert "removed" in refused.message
    assert await events(db, connection_id) == []


async def test_a_result_for_a_credential_revoked_or_rotated_meanwhile_changes_no_health(
    service: RetestService, store: Store, scripted: ScriptedProvider, db: Database
) -> None:
    revoked = await store("Revoked meanwhile", {"token": "revoked-token-1"})
    rotated = await store("Rotated meanwhile", {"token": "rotated-token-1"})
    scripted.script("revoked-token-1", answer(Outcome.UNAUTHORIZED))
    scripted.script("rotated-token-1", answer(Outcome.UNAUTHORIZED))

    async def change_them(token: str) -> None:
        async with db.transaction() as tx:
            if token == "revoked-token-1":
                assert await tx.connections.transition(TEAM, revoked, Status.ACTIVE, Status.REVOKED)
            else:
                locked = await tx.connections.lock(TEAM, rotated)
                assert locked is not None
                locked.credential_version = 2

    scripted.during = change_them

    after_revoke = await retest(service, revoked)
    after_rotation = await retest(service, rotated)

    assert after_revoke.change is None and after_revoke.connection.status is Status.REVOKED
    assert after_revoke.connection.health is Health.HEALTHY
    assert after_rotation.change is None and after_rotation.connection.health is Health.HEALTHY
    for connection_id in (revoked, rotated):
        stored = await row(db, connection_id)
        assert (stored.health, stored.failing_since, stored.alerted_at) == (Health.HEALTHY, None, None)
        [record] = await history(db, connection_id)
        assert record.outcome is Outcome.UNAUTHORIZED


async def test_a_connection_of_a_removed_provider_gets_a_plain_answer(
    service: RetestService, store: Store, db: Database
) -> None:
    connection_id = await store("Legacy", {"token": "legacy-token-1"}, provider="retired_provider")

    result = await retest(service, connection_id)

    assert result.verification.outcome is Outcome.PROVIDER_ERROR
    assert "retired_provider" in result.verification.summary
    assert result.connection.provider_title == "retired_provider"
    assert len(await history(db, connection_id)) == 1


# --- who may re-test -------------------------------------------------------------------------------


async def test_someone_not_on_call_may_not_retest_and_nothing_is_called(
    make_service: ServiceFactory, store_confluent: Store, fake: FakeConfluent, db: Database
) -> None:
    directory = MemoryDirectory({ONCALL_GROUP: {"U0ONCALL01"}})
    oncall = AdminPolicy(frozenset(), ONCALL_GROUP, directory, ttl_seconds=0)
    admins = AdminPolicy(frozenset({ADMIN}), None, directory, ttl_seconds=0)
    service = make_service(policy=RetestPolicy(oncall, admins))
    connection_id = await store_confluent("Prod Kafka")

    one = await service.retest_one(TEAM, TESTER, connection_id=connection_id)
    every = await service.retest_all(TEAM, TESTER)
    assert isinstance(one, Refused) and one.reason is Refusal.NOT_ALLOWED
    assert isinstance(every, Refused) and every.reason is Refusal.NOT_ALLOWED
    assert await service.may_retest(TESTER) == one

    directory.failure = "missing_scope"
    failed = await service.retest_one(TEAM, "U0ONCALL01", connection_id=connection_id)
    assert isinstance(failed, Refused) and failed.reason is Refusal.CHECK_FAILED

    assert fake.requests == []
    assert await history(db, connection_id) == []
    assert await events(db, connection_id) == []

    directory.failure = None
    assert await service.may_retest("U0ONCALL01") is None
    assert await service.may_retest(ADMIN) is None
    assert isinstance(await service.retest_one(TEAM, ADMIN, connection_id=connection_id), RetestResult)


# --- history and audit -----------------------------------------------------------------------------


async def test_a_manual_retest_is_recorded_in_the_history_and_the_audit_trail(
    service: RetestService,
    store_confluent: Store,
    fake: FakeConfluent,
    clock: HandClock,
    db: Database,
    account: tuple[str, str],
) -> None:
    connection_id = await store_confluent("Prod Kafka")
    clock.now = START + timedelta(hours=1)
    healthy = await retest(service, connection_id)
    fake.revoke_key(account[0])
    clock.now = START + timedelta(hours=2)
    failing = await retest(service, connection_id)

    records = await history(db, connection_id)
    assert [(r.trigger, r.actor, r.outcome) for r in records] == [
        ("retest", TESTER, Outcome.OK),
        ("retest", TESTER, Outcome.UNAUTHORIZED),
    ]
    assert records[1].summary == failing.verification.summary

    trail = await events(db, connection_id)
    assert [e.action for e in trail] == ["connection.retested", "connection.retested"]
    first, second = trail
    assert (first.team_id, first.actor, first.reason, first.created_at) == (
        TEAM,
        TESTER,
        "ok",
        START + timedelta(hours=1),
    )
    assert (first.before_status, first.after_status) == (Status.ACTIVE, Status.ACTIVE)
    assert first.details == {
        "name": "Prod Kafka",
        "provider": "confluent_cloud",
        "health_before": "healthy",
        "health_after": "healthy",
        "latency_ms": healthy.verification.latency_ms,
    }
    assert (second.actor, second.reason) == (TESTER, "unauthorized")
    assert (second.details["health_before"], second.details["health_after"]) == ("healthy", "failing")


async def test_the_schedule_records_history_without_an_actor_and_audits_only_health_changes(
    service: RetestService,
    store_confluent: Store,
    fake: FakeConfluent,
    clock: HandClock,
    db: Database,
    account: tuple[str, str],
) -> None:
    connection_id = await store_confluent("Prod Kafka", next_check_at=START)
    fake.revoke_key(account[0])

    kinds: list[ChangeKind | None] = []
    for step in range(4):
        if step == 3:
            fake.add_cloud_key(*account)
        clock.now = START + step * INTERVAL
        [result] = (await service.run_due()).results
        kinds.append(result.change.kind if result.change else None)

    # Failed, stayed failing, reminded (12 hours on), recovered.
    assert kinds == [ChangeKind.FAILED, None, ChangeKind.STILL_FAILING, ChangeKind.RECOVERED]
    records = await history(db, connection_id)
    assert [(r.trigger, r.actor) for r in records] == [("schedule", None)] * 4
    trail = await events(db, connection_id)
    assert [(e.action, e.actor, e.reason) for e in trail] == [
        ("connection.health_changed", SYSTEM_ACTOR, "unauthorized"),
        ("connection.health_changed", SYSTEM_ACTOR, "ok"),
    ]
    failed, recovered = trail
    assert failed.created_at == START and recovered.created_at == START + 3 * INTERVAL
    assert failed.details == {
        "name": "Prod Kafka",
        "provider": "confluent_cloud",
        "health_before": "healthy",
        "health_after": "failing",
        "trigger": "schedule",
    }
    assert (recovered.details["health_before"], recovered.details["health_after"]) == ("failing", "healthy")


# --- the whole workspace ---------------------------------------------------------------------------


async def test_retest_all_covers_the_workspaces_active_connections_failing_first(
    make_service: ServiceFactory, store: Store, scripted: ScriptedProvider, db: Database
) -> None:
    service = make_service(concurrency=2)
    scripted.script("alpha-token", OK)
    scripted.script("bravo-token", answer(Outcome.UNAUTHORIZED))
    scripted.script("charlie-token", answer(Outcome.RATE_LIMITED, retry_after=1))
    scripted.script("delta-token", OK)
    scripted.script("echo-token", answer(Outcome.FORBIDDEN))
    for minutes, name in enumerate(["delta", "echo", "alpha", "charlie", "Bravo"]):
        await store(name, {"token": f"{name.lower()}-token"}, created_at=START + timedelta(minutes=minutes))
    await store("pending", {"token": "pending-token"}, status=Status.PENDING_APPROVAL)
    await store("rejected", {"token": "rejected-token"}, status=Status.REJECTED)
    await store("elsewhere", {"token": "elsewhere-token"}, team_id=OTHER_TEAM)

    report = await retest_all(service)

    assert [r.connection.name for r in report.results] == ["Bravo", "echo", "charlie", "alpha", "delta"]
    assert (report.failing, report.inconclusive, report.healthy) == (2, 1, 2)
    assert all(r.team_id == TEAM for r in report.results)
    called = scripted.tokens_called()
    assert set(called) == {"alpha-token", "bravo-token", "charlie-token", "delta-token", "echo-token"}
    assert called.count("charlie-token") == RATE_LIMIT_REQUEUES + 1
    assert len(report.results) == 5
    assert [e.action for e in await events(db)] == ["connection.retested"] * 5


async def test_retest_all_of_an_empty_workspace_reports_nothing(
    service: RetestService, scripted: ScriptedProvider
) -> None:
    report = await retest_all(service)

    assert report.results == ()
    assert (report.failing, report.inconclusive, report.healthy) == (0, 0, 0)
    assert scripted.events == []


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_retest_all_never_runs_more_provider_calls_at_once_than_the_bound(
    make_service: ServiceFactory, store: Store, scripted: ScriptedProvider, concurrency: int
) -> None:
    service = make_service(concurrency=concurrency)
    # The first calls wait until the bound is reached, so a pool that ran fewer would fail too.
    scripted.crowd = concurrency
    for i in range(8):
        await store(f"c{i}", {"token": f"token-{i}"}, created_at=START + timedelta(minutes=i))

    report = await retest_all(service)

    assert report.healthy == 8
    assert scripted.most_in_flight == concurrency
    assert sorted(scripted.tokens_called()) == sorted(f"token-{i}" for i in range(8))


async def test_a_rate_limit_holds_every_worker_back_and_the_connection_is_tried_again(
    make_service: ServiceFactory, store: Store, scripted: ScriptedProvider, timer: FakeTime, db: Database
) -> None:
    service = make_service(concurrency=3)
    timer.gate = asyncio.Event()
    limited = await store("limited", {"token": "token-0"}, created_at=START)
    for i in range(1, 6):
        await store(f"c{i}", {"token": f"token-{i}"}, created_at=START + timedelta(minutes=i))
    scripted.script("token-0", answer(Outcome.RATE_LIMITED, retry_after=5), OK)

    run = asyncio.create_task(service.retest_all(TEAM, TESTER))
    await until(lambda: timer.sleeping == 3, "every worker pauses")

    # While every worker waits, no call starts after the 429 came back.
    answered = scripted.events.index(("end", "token-0", 100.0))
    assert [kind for kind, _, _ in scripted.events[answered:]] == ["end"] * len(scripted.events[answered:])
    assert timer.sleeps == [5.0, 5.0, 5.0]

    timer.now = 105.0
    timer.gate.set()
    report = await run

    assert isinstance(report, RetestReport)
    assert report.healthy == 6 and report.failing == 0 and report.inconclusive == 0
    later = [(token, at) for kind, token, at in scripted.events[answered:] if kind == "start"]
    assert later and all(at >= 105.0 for _, at in later)
    assert scripted.tokens_called().count("token-0") == 2
    [record] = await history(db, limited)
    assert record.outcome is Outcome.OK


@pytest.mark.parametrize("asked", [3600.0, float("inf"), float("nan")])
async def test_a_rate_limit_asking_for_too_long_a_wait_is_recorded_instead_of_holding_the_run(
    service: RetestService,
    store: Store,
    scripted: ScriptedProvider,
    timer: FakeTime,
    db: Database,
    asked: float,
) -> None:
    limited = await store("limited", {"token": "limited"}, created_at=START)
    await store("fine", {"token": "fine"}, created_at=START + timedelta(minutes=1))
    scripted.script("limited", answer(Outcome.RATE_LIMITED, retry_after=asked))

    report = await retest_all(service)

    # No pause at all: the others go on, and the limited one is reported as inconclusive.
    assert timer.sleeps == []
    assert (report.healthy, report.inconclusive) == (1, 1)
    assert scripted.tokens_called().count("limited") == 1
    assert [r.outcome for r in await history(db, limited)] == [Outcome.RATE_LIMITED]


async def test_runs_at_once_share_one_bound_on_provider_calls(
    make_service: ServiceFactory, store: Store, scripted: ScriptedProvider
) -> None:
    service = make_service(concurrency=2)
    teams = (TEAM, OTHER_TEAM, THIRD_TEAM)  # one `test all` per workspace at a time
    for team_id in teams:
        for i in range(3):
            await store(f"c{i}", {"token": f"{team_id}-{i}"}, team_id=team_id)

    async def slow(_token: str) -> None:
        for _ in range(5):
            await asyncio.sleep(0)

    scripted.during = slow
    reports = await asyncio.gather(*(retest_all(service, team_id=team_id) for team_id in teams))

    assert [r.healthy for r in reports] == [3, 3, 3]
    # Three runs of two workers each, but never more than two provider calls in flight.
    assert scripted.most_in_flight == 2


async def hold_bulk(scripted: ScriptedProvider) -> asyncio.Event:
    """Hold every provider call whose token starts with "held" until the returned event is set."""
    release = asyncio.Event()

    async def held(token: str) -> None:
        if token.startswith("held"):
            await asyncio.wait_for(release.wait(), WAIT_LIMIT)

    scripted.during = held
    return release


async def test_a_second_test_all_is_told_the_running_one_and_retests_nothing(
    make_service: ServiceFactory, store: Store, scripted: ScriptedProvider, db: Database, clock: HandClock
) -> None:
    # Two services on one database: two replicas, which share nothing else.
    first, second = make_service(), make_service(database=db)
    for i in range(3):
        await store(f"c{i}", {"token": f"held-{i}"})
    release = await hold_bulk(scripted)
    running = asyncio.create_task(first.retest_all(TEAM, TESTER))
    await until(lambda: scripted.in_flight == 3, "the first run's calls to be held")

    clock.now = START + timedelta(seconds=20)
    told = await second.retest_all(TEAM, OTHER_TESTER)
    also_told = await first.retest_all(TEAM, OTHER_TESTER)

    assert told == also_told == BulkRunning(started_by=TESTER, started_at=START, total=3, done=0)
    release.set()
    report = await running
    assert isinstance(report, RetestReport) and report.healthy == 3
    # Each connection was re-tested once; and the claim ended with the run.
    assert sorted(scripted.tokens_called()) == ["held-0", "held-1", "held-2"]
    assert (await retest_all(second)).healthy == 3


async def test_a_running_test_all_records_its_progress_for_the_next_one_to_read(
    make_service: ServiceFactory,
    store: Store,
    scripted: ScriptedProvider,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(retests, "BULK_HEARTBEAT_SECONDS", 0.01)
    service = make_service(concurrency=1)
    await store("a", {"token": "quick"}, created_at=START)
    await store("b", {"token": "held"}, created_at=START + timedelta(minutes=1))
    release = await hold_bulk(scripted)
    running = asyncio.create_task(service.retest_all(TEAM, TESTER))
    await until(lambda: scripted.in_flight == 1 and "held" in scripted.tokens_called(), "the held call")

    async def progress() -> int:
        told = await service.retest_all(TEAM, OTHER_TESTER)
        assert isinstance(told, BulkRunning), told
        return told.done

    async with asyncio.timeout(WAIT_LIMIT):
        while await progress() != 1:
            await asyncio.sleep(0.01)
    release.set()
    await running


async def test_a_test_all_left_by_a_dead_process_is_taken_over_once_stale(
    service: RetestService, store: Store, db: Database, clock: HandClock
) -> None:
    await store("a", {"token": "a"})
    async with db.transaction() as tx:
        dead = BulkRetest(
            team_id=TEAM, started_by=OTHER_TESTER, started_at=START, heartbeat_at=START, total=1
        )
        assert await tx.bulk_retests.claim(dead, START - timedelta(hours=1)) is None

    clock.now = START + retests.BULK_STALE_AFTER - timedelta(seconds=1)
    assert isinstance(await service.retest_all(TEAM, TESTER), BulkRunning)
    clock.now = START + retests.BULK_STALE_AFTER + timedelta(seconds=1)
    assert (await retest_all(service)).healthy == 1


async def test_one_retest_is_not_held_up_by_a_bulk_run_that_fills_every_slot(
    make_service: ServiceFactory, store: Store, scripted: ScriptedProvider
) -> None:
    service = make_service(concurrency=1)
    await store("bulk", {"token": "held"})
    wanted = await store("wanted", {"token": "wanted"})
    release = await hold_bulk(scripted)
    running = asyncio.create_task(service.retest_all(TEAM, TESTER))
    await until(lambda: scripted.in_flight == 1, "the bulk slot to be taken")

    result = await retest(service, wanted)  # would wait for the bulk slot before the fix

    assert result.ok and scripted.in_flight == 1
    release.set()
    await running


async def test_each_result_is_handed_on_as_soon_as_it_is_recorded(
    service: RetestService, store: Store, scripted: ScriptedProvider, db: Database
) -> None:
    first = await store("first", {"token": "first"}, created_at=START)
    await store("second", {"token": "second"}, created_at=START + timedelta(minutes=1))
    scripted.script("first", answer(Outcome.UNAUTHORIZED))
    seen: list[tuple[str, str]] = []

    async def on_result(result: RetestResult) -> None:
        # Called after the result's transaction: the row already says so.
        seen.append((result.connection.name, (await row(db, result.connection.id)).health.value))
        if result.connection.id == first:
            raise RuntimeError("a broken announcer must not lose the other results")

    report = await service.retest_all(TEAM, TESTER, on_result=on_result)

    assert isinstance(report, RetestReport)
    assert sorted(seen) == [("first", "failing"), ("second", "healthy")]
    assert (report.healthy, report.failing) == (1, 1)


async def test_retry_after_from_confluent_pauses_the_run_and_the_retry_succeeds(
    make_service: ServiceFactory,
    store: Store,
    fake: FakeConfluent,
    timer: FakeTime,
    db: Database,
) -> None:
    service = make_service(concurrency=1)
    first_key, second_key = new_api_key(), new_api_key()
    ids = []
    for minutes, key in enumerate([first_key, second_key]):
        secret = new_api_secret()
        fake.add_cloud_key(key, secret)
        ids.append(
            await store(
                f"kafka {minutes}",
                {"api_key": key, "api_secret": secret},
                provider="confluent_cloud",
                created_at=START + timedelta(minutes=minutes),
            )
        )
    fake.fail_next(ENVIRONMENTS, 429, retry_after=7)

    report = await retest_all(service)

    assert [r.verification.outcome for r in report.results] == [Outcome.OK, Outcome.OK]
    assert (report.healthy, report.failing, report.inconclusive) == (2, 0, 0)
    assert [r.username for r in fake.requests_to(ENVIRONMENTS)] == [first_key, second_key, first_key]
    assert timer.sleeps == [7.0]
    assert report.elapsed_ms == 7000
    for connection_id in ids:
        assert [r.outcome for r in await history(db, connection_id)] == [Outcome.OK]


async def test_a_provider_that_crashes_does_not_stop_the_others(
    service: RetestService,
    store: Store,
    scripted: ScriptedProvider,
    caplog: pytest.LogCaptureFixture,
) -> None:
    crashing = await store("crashing", {"token": "crash-token"})
    await store("fine", {"token": "fine-token"})

    async def crash(token: str) -> None:
        if token == "crash-token":
            raise RuntimeError("provider bug")

    scripted.during = crash

    report = await retest_all(service)

    assert [r.connection.name for r in report.results] == ["fine"]
    assert f"re-testing connection {crashing} failed" in caplog.text


async def test_a_crash_while_retesting_one_is_an_error_not_a_missing_connection(
    service: RetestService,
    store: Store,
    scripted: ScriptedProvider,
    caplog: pytest.LogCaptureFixture,
) -> None:
    connection_id = await store("crashing", {"token": "crash-token-with-secret-text"})

    async def crash(token: str) -> None:
        raise RuntimeError(f"provider bug quoting {token}")

    scripted.during = crash

    with pytest.raises(RetestFailed):
        await service.retest_one(TEAM, TESTER, connection_id=connection_id)
    # The log says where it broke, never what the exception said (it could quote a credential).
    assert "RuntimeError at" in caplog.text
    assert "crash-token-with-secret-text" not in caplog.text


# --- two processes at once -------------------------------------------------------------------------

ROUNDS = 5
"""How many times the race is run: one lucky interleaving must not make the test pass."""


async def test_two_processes_finishing_at_once_report_a_failure_once(
    make_service: ServiceFactory,
    store: Store,
    scripted: ScriptedProvider,
    db: Database,
    migrated_database_url: str,
) -> None:
    other = Database.from_url(migrated_database_url)
    try:
        services = [make_service(), make_service(database=other)]
        for round_number in range(ROUNDS):
            token = f"race-token-{round_number}"
            connection_id = await store(f"race {round_number}", {"token": token})
            scripted.script(token, answer(Outcome.UNAUTHORIZED))
            both_answered = asyncio.Barrier(2)

            async def meet(_token: str, barrier: asyncio.Barrier = both_answered) -> None:
                async with asyncio.timeout(WAIT_LIMIT):
                    await barrier.wait()

            scripted.during = meet
            results = await asyncio.gather(*(retest(s, connection_id) for s in services))

            changes = sorted((r.change.kind.value if r.change else "none") for r in results)
            assert changes == ["failed", "none"], round_number
            assert len(await history(db, connection_id)) == 2
            assert (await row(db, connection_id)).health is Health.FAILING
    finally:
        await other.dispose()


# --- the schedule --------------------------------------------------------------------------------


async def test_run_due_retests_exactly_the_due_connections_once(
    service: RetestService, store: Store, scripted: ScriptedProvider, clock: HandClock, db: Database
) -> None:
    now = START + timedelta(days=1)
    clock.now = now
    ids = {
        "late": await store("late", {"token": "late"}, next_check_at=now - timedelta(hours=3)),
        "elsewhere": await store(
            "elsewhere", {"token": "elsewhere"}, team_id=OTHER_TEAM, next_check_at=now - timedelta(hours=1)
        ),
        "on time": await store("on time", {"token": "on time"}, next_check_at=now),
        "not yet": await store("not yet", {"token": "not yet"}, next_check_at=now + timedelta(minutes=1)),
        "new": await store("new", {"token": "new"}),
        "pending": await store(
            "pending",
            {"token": "pending"},
            status=Status.PENDING_APPROVAL,
            next_check_at=now - timedelta(days=1),
        ),
        "revoked": await store(
            "revoked", {"token": "revoked"}, status=Status.REVOKED, next_check_at=now - timedelta(days=1)
        ),
    }

    report = await service.run_due()

    assert sorted(r.connection.name for r in report.results) == ["elsewhere", "late", "on time"]
    assert {r.team_id for r in report.results} == {TEAM, OTHER_TEAM}
    assert sorted(scripted.tokens_called()) == ["elsewhere", "late", "on time"]
    for name in ("late", "elsewhere", "on time"):
        stored = await row(db, ids[name])
        assert stored.next_check_at == now + INTERVAL, name
        assert stored.last_verified_at == now, name
        assert [(r.trigger, r.actor) for r in await history(db, ids[name])] == [("schedule", None)]
    scheduled = (await row(db, ids["new"])).next_check_at
    assert scheduled is not None and now <= scheduled < now + INTERVAL
    assert (await row(db, ids["not yet"])).next_check_at == now + timedelta(minutes=1)
    assert (await row(db, ids["pending"])).next_check_at == now - timedelta(days=1)

    again = await service.run_due()

    assert again.results == ()
    assert len(scripted.tokens_called()) == 3


async def test_run_due_takes_a_bounded_batch_earliest_first(
    service: RetestService, store: Store, scripted: ScriptedProvider, clock: HandClock
) -> None:
    for hours, name in [(1, "b"), (3, "a"), (2, "c")]:
        await store(name, {"token": name}, next_check_at=START - timedelta(hours=hours))

    first = await service.run_due(limit=2)
    second = await service.run_due(limit=2)
    third = await service.run_due(limit=2)

    assert sorted(r.connection.name for r in first.results) == ["a", "c"]
    assert [r.connection.name for r in second.results] == ["b"]
    assert third.results == ()
    assert sorted(scripted.tokens_called()) == ["a", "b", "c"]


async def test_a_claim_is_a_lease_until_the_result_sets_the_next_check(
    make_service: ServiceFactory, store: Store, scripted: ScriptedProvider, clock: HandClock, db: Database
) -> None:
    service = make_service(concurrency=1)
    due = await store("due", {"token": "due"}, next_check_at=START - timedelta(minutes=1))
    leased: list[datetime | None] = []

    async def look(_token: str) -> None:
        # While the check runs, the row is only leased to this process, not a whole interval.
        leased.append((await row(db, due)).next_check_at)

    scripted.during = look
    await service.run_due()

    assert leased == [START + CLAIM_LEASE]
    assert (await row(db, due)).next_check_at == START + INTERVAL


async def test_the_schedule_claims_a_few_at_a_time_up_to_its_limit(
    make_service: ServiceFactory, store: Store, scripted: ScriptedProvider, caplog: pytest.LogCaptureFixture
) -> None:
    service = make_service(concurrency=2)
    for i in range(9):
        await store(f"c{i}", {"token": f"t{i}"}, next_check_at=START - timedelta(minutes=10 - i))

    with caplog.at_level(logging.INFO, logger="bot.services.retests"):
        report = await service.run_due(limit=7)

    assert len(report.results) == 7
    claims = [int(m.split()[1]) for m in caplog.messages if m.endswith("due on the schedule")]
    assert claims == [4, 3]
    assert sorted(scripted.tokens_called()) == sorted(f"t{i}" for i in range(7))


# --- secrets -------------------------------------------------------------------------------------


async def test_the_stored_secret_appears_in_no_log_result_row_or_target(
    make_service: ServiceFactory,
    store_confluent: Store,
    fake: FakeConfluent,
    clock: HandClock,
    db: Database,
    account: tuple[str, str],
    migrated_database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    key, secret = account
    service = make_service(concurrency=2)
    healthy = await store_confluent("Healthy", next_check_at=START)
    limited = await store_confluent("Limited", created_at=START + timedelta(minutes=1))
    outputs: list[object] = []

    outputs.append(await retest(service, healthy))
    fake.fail_next(ENVIRONMENTS, 429, times=RATE_LIMIT_REQUEUES + 1, retry_after=1)
    outputs.append(await retest(service, limited))
    fake.cloud_accounts[key].role = False
    outputs.append(await retest_all(service))
    fake.revoke_key(key)
    outputs.append(await service.run_due())
    clock.now = START + INTERVAL
    outputs.append(await service.run_due())
    # What the workers are handed (private, but it is what an error report would show).
    async with db.read() as tx:
        rows = [await tx.connections.get(TEAM, connection_id) for connection_id in (healthy, limited)]
        targets = await service._targets(tx, [r for r in rows if r is not None])
    outputs.extend(targets)
    records = [*await history(db, healthy), *await history(db, limited)]
    outputs.extend(records)
    outputs.extend(await events(db))

    assert len(targets) == 2 and len(records) == 7
    assert {r.outcome for r in records} == {
        Outcome.OK,
        Outcome.RATE_LIMITED,
        Outcome.FORBIDDEN,
        Outcome.UNAUTHORIZED,
    }
    basic = base64.b64encode(f"{key}:{secret}".encode()).decode()
    shown = "\n".join([caplog.text, *map(repr, outputs), dump_database_text(migrated_database_url)])
    assert healthy in shown and limited in shown and "confluent" in caplog.text
    for value in (secret, key, basic):
        assert value not in shown
