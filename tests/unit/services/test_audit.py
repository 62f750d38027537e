"""AuditService on SQLite and PostgreSQL: who may read a connection's history, which connection a
name finds, what the history holds, and the JSON Lines export.

The database is real and migrated. Most events are written directly, with known times, so ordering
and limits can be checked exactly; the last tests write them through the real create, approve and
reject use cases (against :class:`FakeConfluent` in-process) to check the trail end to end.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from bot.crypto import Cipher, MasterKey
from bot.domain import AuditHistory, RequestKind, Status, Verdict, Visibility
from bot.providers.base import Outcome
from bot.providers.confluent_cloud import ConfluentCloud
from bot.providers.registry import ProviderRegistry
from bot.services.admins import LISTED, MEMBER, UNCHECKED, AdminPolicy, DirectoryUnavailable
from bot.services.approvals import ApprovalService
from bot.services.audit import EXPORT_KEYS, HISTORY_LIMIT, AuditService, export_events
from bot.services.submissions import Submissions
from bot.store import AuditEvent, Connection, Database
from tests.fakes.confluent_api import FakeConfluent, new_api_key, new_api_secret
from tests.unit.services.test_connections import API, OTHER_TEAM, TEAM, TickingClock, create_request, form

ADMIN = "U0ADMIN001"
SECOND_ADMIN = "U0ADMIN002"
REQUESTER = "U0REQUEST1"
OUTSIDER = "U0OUTSID01"
GROUP = "S0ADMINS01"
GROUP_MEMBER = "U0GROUPM01"
NAME = "Production Confluent Cloud"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class MemoryDirectory:
    """Slack user groups in memory; set ``failure`` to make lookups fail as Slack would."""

    def __init__(self, groups: dict[str, set[str]]) -> None:
        self.groups = groups
        self.failure: str | None = None

    async def members(self, group_id: str) -> frozenset[str]:
        if self.failure is not None:
            raise DirectoryUnavailable(self.failure)
        return frozenset(self.groups.get(group_id, set()))


class UntouchableDatabase:
    """Stands in for the database where a test proves it is never asked anything."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the database was used ({name}) before the admin check refused")


@pytest.fixture
def directory() -> MemoryDirectory:
    return MemoryDirectory({GROUP: {GROUP_MEMBER}})


@pytest.fixture
def policy(directory: MemoryDirectory) -> AdminPolicy:
    return AdminPolicy(frozenset({ADMIN, SECOND_ADMIN}), GROUP, directory, ttl_seconds=0)


@pytest.fixture
def providers() -> ProviderRegistry:
    return ProviderRegistry((ConfluentCloud(api_url=API),))


@pytest.fixture
def audit(db: Database, providers: ProviderRegistry, policy: AdminPolicy) -> AuditService:
    return AuditService(db, providers, policy)


async def add_connection(
    db: Database,
    name: str = NAME,
    *,
    team_id: str = TEAM,
    status: Status = Status.PENDING_APPROVAL,
    created_at: datetime = T0,
) -> str:
    connection = Connection(
        team_id=team_id,
        name=name,
        provider="confluent_cloud",
        created_by=REQUESTER,
        status=status,
        created_at=created_at,
        updated_at=created_at,
    )
    async with db.transaction() as tx:
        await tx.connections.add(connection)
    return connection.id


async def add_events(
    db: Database,
    connection_id: str | None,
    count: int,
    *,
    team_id: str = TEAM,
    start: datetime = T0,
    actor: str = ADMIN,
    action: str = "connection.note",
) -> list[int]:
    """``count`` events one minute apart, reasons "event 0", "event 1", …; returns their ids."""
    events = [
        AuditEvent(
            team_id=team_id,
            actor=actor,
            action=action,
            connection_id=connection_id,
            before_status=Status.PENDING_APPROVAL,
            after_status=Status.ACTIVE,
            reason=f"event {i}",
            details={"n": i},
            created_at=start + timedelta(minutes=i),
        )
        for i in range(count)
    ]
    async with db.transaction() as tx:
        for event in events:
            await tx.audit.add(event)
    return [event.id for event in events]


def shown(history: AuditHistory) -> AuditHistory:
    assert history.visibility is Visibility.SHOWN, history
    assert history.connection is not None
    return history


# --- history -------------------------------------------------------------------------------------


async def test_history_shows_the_latest_20_of_25_events_newest_first(
    db: Database, audit: AuditService
) -> None:
    connection_id = await add_connection(db)
    ids = await add_events(db, connection_id, 25)

    history = shown(await audit.history(TEAM, ADMIN, NAME))

    assert HISTORY_LIMIT == history.limit == 20
    assert [e.id for e in history.events] == list(reversed(ids))[:20]
    assert [e.reason for e in history.events] == [f"event {i}" for i in range(24, 4, -1)]
    assert [e.created_at for e in history.events] == sorted(
        (e.created_at for e in history.events), reverse=True
    )
    assert history.more is True
    assert history.connection is not None and history.connection.id == connection_id
    assert history.admin is not None and history.admin.why == LISTED


async def test_a_short_history_is_whole_and_says_there_is_no_more(db: Database, audit: AuditService) -> None:
    connection_id = await add_connection(db)
    ids = await add_events(db, connection_id, 3)

    history = shown(await audit.history(TEAM, ADMIN, NAME))

    assert [e.id for e in history.events] == list(reversed(ids))
    assert history.more is False
    [first] = [e for e in history.events if e.id == ids[0]]
    assert (first.actor, first.before_status, first.after_status, first.details) == (
        ADMIN,
        Status.PENDING_APPROVAL,
        Status.ACTIVE,
        {"n": 0},
    )


async def test_a_smaller_limit_is_honoured(db: Database, audit: AuditService) -> None:
    connection_id = await add_connection(db)
    ids = await add_events(db, connection_id, 5)
    history = shown(await audit.history(TEAM, ADMIN, NAME, limit=2))
    assert [e.id for e in history.events] == [ids[4], ids[3]]
    assert history.more is True
    with pytest.raises(ValueError):
        await audit.history(TEAM, ADMIN, NAME, limit=0)


async def test_a_connection_without_events_is_found_with_an_empty_history(
    db: Database, audit: AuditService
) -> None:
    await add_connection(db)
    history = shown(await audit.history(TEAM, ADMIN, NAME))
    assert history.events == () and history.more is False


async def test_the_name_is_found_whatever_its_case_and_spacing(db: Database, audit: AuditService) -> None:
    connection_id = await add_connection(db)
    await add_events(db, connection_id, 1)
    history = shown(await audit.history(TEAM, ADMIN, "  production   CONFLUENT cloud "))
    assert history.connection is not None and history.connection.name == NAME
    assert len(history.events) == 1


async def test_an_unknown_name_is_not_found(db: Database, audit: AuditService) -> None:
    await add_connection(db)
    history = await audit.history(TEAM, ADMIN, "Staging")
    assert history.visibility is Visibility.NOT_FOUND
    assert (history.name, history.connection, history.events) == ("Staging", None, ())


async def test_another_workspaces_connection_and_events_are_invisible(
    db: Database, audit: AuditService
) -> None:
    theirs = await add_connection(db, team_id=OTHER_TEAM)
    await add_events(db, theirs, 4, team_id=OTHER_TEAM)

    assert (await audit.history(TEAM, ADMIN, NAME)).visibility is Visibility.NOT_FOUND

    ours = await add_connection(db)
    our_ids = await add_events(db, ours, 2)
    history = shown(await audit.history(TEAM, ADMIN, NAME))
    assert history.connection is not None and history.connection.id == ours
    assert sorted(e.id for e in history.events) == our_ids
    assert {e.team_id for e in history.events} == {TEAM}


async def test_a_rejected_connection_is_still_found_by_its_name(db: Database, audit: AuditService) -> None:
    rejected = await add_connection(db, status=Status.REJECTED)
    await add_events(db, rejected, 2)
    history = shown(await audit.history(TEAM, ADMIN, NAME.lower()))
    assert history.connection is not None
    assert (history.connection.id, history.connection.status) == (rejected, Status.REJECTED)


async def test_the_connection_holding_the_name_wins_over_older_ones(
    db: Database, audit: AuditService
) -> None:
    await add_connection(db, status=Status.REJECTED, created_at=T0)
    await add_connection(db, status=Status.EXPIRED, created_at=T0 + timedelta(days=1))
    holder = await add_connection(db, status=Status.ACTIVE, created_at=T0 + timedelta(days=2))
    history = shown(await audit.history(TEAM, ADMIN, NAME))
    assert history.connection is not None and history.connection.id == holder


async def test_without_a_holder_the_most_recent_connection_of_that_name_is_shown(
    db: Database, audit: AuditService
) -> None:
    await add_connection(db, status=Status.REJECTED, created_at=T0)
    latest = await add_connection(db, status=Status.EXPIRED, created_at=T0 + timedelta(days=1))
    await add_connection(db, "Another", status=Status.REJECTED, created_at=T0 + timedelta(days=2))
    history = shown(await audit.history(TEAM, ADMIN, NAME))
    assert history.connection is not None
    assert (history.connection.id, history.connection.status) == (latest, Status.EXPIRED)


async def test_a_member_of_the_admin_group_may_read(db: Database, audit: AuditService) -> None:
    await add_connection(db)
    history = shown(await audit.history(TEAM, GROUP_MEMBER, NAME))
    assert history.admin is not None and history.admin.why == MEMBER


async def test_a_non_admin_is_refused_without_the_database_being_asked(
    providers: ProviderRegistry, policy: AdminPolicy
) -> None:
    service = AuditService(UntouchableDatabase(), providers, policy)  # type: ignore[arg-type]
    history = await service.history(TEAM, OUTSIDER, NAME)
    assert history.visibility is Visibility.NOT_ADMIN
    assert (history.connection, history.events) == (None, ())
    assert history.admin is not None and not history.admin.allowed and not history.admin.failed_closed


async def test_when_slack_cannot_say_who_is_in_the_group_the_answer_is_no(
    audit: AuditService, providers: ProviderRegistry, policy: AdminPolicy, directory: MemoryDirectory
) -> None:
    directory.failure = "ratelimited"
    service = AuditService(UntouchableDatabase(), providers, policy)  # type: ignore[arg-type]
    history = await service.history(TEAM, GROUP_MEMBER, NAME)
    assert history.visibility is Visibility.ADMIN_CHECK_FAILED
    assert history.admin is not None and history.admin.why == f"{UNCHECKED}: ratelimited"
    # A listed admin needs no lookup, so a failing directory does not lock them out.
    assert (await audit.history(TEAM, ADMIN, NAME)).visibility is Visibility.NOT_FOUND


# --- export --------------------------------------------------------------------------------------


def parse_lines(text: str) -> list[dict[str, Any]]:
    assert text == "" or text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


async def test_export_writes_every_team_as_json_lines_in_recorded_order(
    db: Database, audit: AuditService
) -> None:
    ours = await add_connection(db)
    theirs = await add_connection(db, team_id=OTHER_TEAM)
    # Interleaved, and with times that do not follow the ids: the export follows the ids.
    first = await add_events(db, ours, 2, start=T0 + timedelta(hours=1))
    second = await add_events(db, theirs, 2, team_id=OTHER_TEAM, start=T0)
    third = await add_events(db, None, 1, action="connection.create_failed", actor=REQUESTER)
    out = io.StringIO()

    count = await export_events(db, out)

    records = parse_lines(out.getvalue())
    assert count == len(records) == 5
    assert [r["id"] for r in records] == first + second + third
    assert all(list(r) == list(EXPORT_KEYS) for r in records)
    assert [r["team_id"] for r in records] == [TEAM, TEAM, OTHER_TEAM, OTHER_TEAM, TEAM]
    assert [r["connection_id"] for r in records] == [ours, ours, theirs, theirs, None]
    assert records[0]["reason"] == "event 0" and records[0]["details"] == {"n": 0}
    assert (records[0]["before_status"], records[0]["after_status"]) == ("pending_approval", "active")
    assert records[4]["action"] == "connection.create_failed" and records[4]["actor"] == REQUESTER
    times = [r["time"] for r in records]
    assert all(t.endswith("Z") for t in times)
    parsed = [datetime.fromisoformat(t) for t in times]
    assert all(p.utcoffset() == timedelta(0) for p in parsed)
    assert parsed == [
        T0 + timedelta(hours=1),
        T0 + timedelta(hours=1, minutes=1),
        T0,
        T0 + timedelta(minutes=1),
        T0,
    ]


async def test_export_streams_across_batches_and_writes_bytes_to_a_binary_stream(db: Database) -> None:
    connection_id = await add_connection(db)
    ids = await add_events(db, connection_id, 7)
    out = io.BytesIO()

    count = await export_events(db, out, batch_size=2)

    assert count == 7
    records = parse_lines(out.getvalue().decode("ascii"))
    assert [r["id"] for r in records] == ids


async def test_export_keeps_one_event_per_line_whatever_a_reason_holds(db: Database) -> None:
    connection_id = await add_connection(db)
    async with db.transaction() as tx:
        await tx.audit.add(
            AuditEvent(
                team_id=TEAM,
                actor=ADMIN,
                action="connection.rejected",
                connection_id=connection_id,
                reason='two\nlines, "quotes" and ünïcödé ✅',
                created_at=T0,
            )
        )
    out = io.StringIO()
    assert await export_events(db, out) == 1
    text = out.getvalue()
    assert text.count("\n") == 1 and text.isascii()
    assert parse_lines(text)[0]["reason"] == 'two\nlines, "quotes" and ünïcödé ✅'


async def test_an_empty_log_exports_nothing(db: Database) -> None:
    out = io.StringIO()
    assert await export_events(db, out) == 0
    assert out.getvalue() == ""


# --- the trail written by the real use cases ------------------------------------------------------


async def test_create_approve_and_reject_leave_a_trail_without_a_secret(
    db: Database,
    audit: AuditService,
    providers: ProviderRegistry,
    policy: AdminPolicy,
    fake: FakeConfluent,
    http: httpx.AsyncClient,
) -> None:
    clock = TickingClock()
    submissions = Submissions(db, Cipher(MasterKey.generate()), providers, http, policy, clock=clock)
    approvals = ApprovalService(db, providers, policy, ttl=timedelta(hours=72), clock=clock)
    key, secret = new_api_key(), new_api_secret()
    fake.add_cloud_key(key, secret, environments=1)

    async def create(name: str) -> str:
        outcome = await submissions.submit(create_request(name, form(key, secret), user_id=REQUESTER))
        assert outcome.verification is not None
        assert outcome.verification.outcome is Outcome.OK and outcome.request_id is not None
        return outcome.request_id

    approved = await create(NAME)
    assert (await approvals.approve(RequestKind.CONNECTION, TEAM, approved, ADMIN)).verdict is Verdict.DECIDED
    rejected = await create("Staging")
    rejection = await approvals.reject(RequestKind.CONNECTION, TEAM, rejected, ADMIN, "Use a service account")
    assert rejection.verdict is Verdict.DECIDED
    wrong_secret = new_api_secret()
    failed = await submissions.submit(create_request("Typo", form(key, wrong_secret), user_id=REQUESTER))
    assert failed.verification is not None and failed.verification.outcome is Outcome.UNAUTHORIZED

    history = shown(await audit.history(TEAM, SECOND_ADMIN, NAME))
    assert [(e.action, e.actor, e.before_status, e.after_status) for e in history.events] == [
        ("connection.approved", ADMIN, Status.PENDING_APPROVAL, Status.ACTIVE),
        ("connection.created", REQUESTER, None, Status.PENDING_APPROVAL),
    ]
    staging = shown(await audit.history(TEAM, SECOND_ADMIN, "staging"))
    assert staging.events[0].action == "connection.rejected"
    assert staging.events[0].reason == "Use a service account"

    out = io.StringIO()
    count = await export_events(db, out)
    text = out.getvalue()
    assert [r["action"] for r in parse_lines(text)] == [
        "connection.created",
        "connection.approved",
        "connection.created",
        "connection.rejected",
        "connection.create_failed",
    ]
    assert count == 5
    for value in (key, secret, wrong_secret):
        assert value not in text
