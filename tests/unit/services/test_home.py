"""Queries.home on SQLite and PostgreSQL: whose connections a Home tab lists, and which requests
waiting for a decision it shows to whom.

Rows are written straight into the migrated database (the create flow has its own tests); the admin
policy is the real :class:`AdminPolicy` over an in-memory user group directory that a test can make
fail the way Slack does.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.domain import HOME_ITEMS_MAX, Health, Status
from bot.providers.base import Outcome
from bot.providers.confluent_cloud import ConfluentCloud
from bot.providers.registry import ProviderRegistry
from bot.services.admins import UNCHECKED, AdminPolicy, DirectoryUnavailable
from bot.services.queries import Queries
from bot.store import Connection, Database, VerificationRecord

TEAM = "T0000TEAM"
OTHER_TEAM = "T0000OTHR"
USER = "U0000USER"
OTHER_USER = "U0000OTHR"
ADMIN = "U0ADMIN001"
GROUP = "S0ADMINS01"
GROUP_MEMBER = "U0GROUPM01"
START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class MemoryDirectory:
    """Slack user groups in memory; set ``failure`` to make every lookup fail as Slack would."""

    def __init__(self, groups: dict[str, set[str]]) -> None:
        self.groups = groups
        self.failure: str | None = None

    async def members(self, group_id: str) -> frozenset[str]:
        if self.failure is not None:
            raise DirectoryUnavailable(self.failure)
        return frozenset(self.groups.get(group_id, set()))


@pytest.fixture
def directory() -> MemoryDirectory:
    return MemoryDirectory({GROUP: {GROUP_MEMBER}})


@pytest.fixture
def providers() -> ProviderRegistry:
    return ProviderRegistry((ConfluentCloud(api_url="https://api.confluent.test"),))


@pytest.fixture
def home(db: Database, providers: ProviderRegistry, directory: MemoryDirectory) -> Queries:
    # No caching: a failure set by a test takes effect at the next check.
    return Queries(db, providers, AdminPolicy(frozenset({ADMIN}), GROUP, directory, ttl_seconds=0))


class Rows:
    """Writes connections with distinct, increasing creation times (one minute apart)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.minutes = 0

    async def add(
        self,
        name: str,
        *,
        team_id: str = TEAM,
        created_by: str = USER,
        status: Status = Status.PENDING_APPROVAL,
        checks: list[dict[str, object]] | None = None,
    ) -> str:
        self.minutes += 1
        connection = Connection(
            team_id=team_id,
            name=name,
            provider="confluent_cloud",
            created_by=created_by,
            status=status,
            health=Health.HEALTHY,
            key_hint="ABCD…WXYZ",
            created_at=START + timedelta(minutes=self.minutes),
        )
        async with self.db.transaction() as tx:
            await tx.connections.add(connection)
            if checks is not None:
                await tx.verifications.add(
                    VerificationRecord(
                        team_id=team_id,
                        connection_id=connection.id,
                        outcome=Outcome.OK,
                        summary="ok",
                        latency_ms=12,
                        trigger="create",
                        checks=checks,
                        created_at=START + timedelta(minutes=self.minutes),
                    )
                )
        return connection.id


@pytest.fixture
def rows(db: Database) -> Rows:
    return Rows(db)


async def test_a_user_sees_only_their_own_connections_in_this_workspace_newest_first(
    home: Queries, rows: Rows
) -> None:
    first = await rows.add("first", status=Status.ACTIVE)
    await rows.add("someone else's", created_by=OTHER_USER)
    second = await rows.add("second", status=Status.REJECTED)
    await rows.add("mine elsewhere", team_id=OTHER_TEAM)

    data = await home.home(TEAM, USER)

    assert [c.id for c in data.connections] == [second, first]
    assert [c.status for c in data.connections] == [Status.REJECTED, Status.ACTIVE]
    assert data.connections_total == 2
    assert data.connections[0].provider_title == "Confluent Cloud"
    assert data.connections[0].key_hint == "ABCD…WXYZ"


async def test_a_user_with_no_connections_gets_an_empty_list(home: Queries, rows: Rows) -> None:
    await rows.add("not mine", created_by=OTHER_USER)
    data = await home.home(TEAM, USER)
    assert data.connections == () and data.connections_total == 0


async def test_an_admin_sees_every_pending_request_of_the_workspace_oldest_first_with_its_checks(
    home: Queries, rows: Rows
) -> None:
    checks: list[dict[str, object]] = [
        {"name": "Cloud API key accepted", "passed": True, "detail": "3 environments"},
        {"name": "Cluster reachable", "passed": False, "detail": "not allowed"},
    ]
    older = await rows.add("older", checks=checks)
    await rows.add("approved already", status=Status.ACTIVE)
    newer = await rows.add("newer", created_by=OTHER_USER)
    await rows.add("other workspace", team_id=OTHER_TEAM)

    data = await home.home(TEAM, ADMIN)

    assert data.is_admin and not data.admin_check_failed
    assert [p.connection.id for p in data.pending] == [older, newer]
    assert data.pending_total == 2
    assert [(c.name, c.passed, c.detail) for c in data.pending[0].checks] == [
        ("Cloud API key accepted", True, "3 environments"),
        ("Cluster reachable", False, "not allowed"),
    ]
    assert data.pending[1].checks == ()
    assert data.connections == ()  # the admin asked for none


async def test_the_checks_shown_are_those_of_the_latest_verification(
    home: Queries, rows: Rows, db: Database
) -> None:
    connection_id = await rows.add("retested", checks=[{"name": "old", "passed": False, "detail": ""}])
    async with db.transaction() as tx:
        await tx.verifications.add(
            VerificationRecord(
                team_id=TEAM,
                connection_id=connection_id,
                outcome=Outcome.OK,
                summary="ok",
                latency_ms=9,
                trigger="retest",
                checks=[{"name": "new", "passed": True, "detail": "fine"}],
                created_at=START + timedelta(hours=5),
            )
        )
    [request] = (await home.home(TEAM, ADMIN)).pending
    assert [c.name for c in request.checks] == ["new"]


async def test_a_member_of_the_admin_group_is_an_admin(home: Queries, rows: Rows) -> None:
    pending = await rows.add("waiting")
    data = await home.home(TEAM, GROUP_MEMBER)
    assert data.is_admin
    assert [p.connection.id for p in data.pending] == [pending]


async def test_someone_else_sees_no_pending_request(home: Queries, rows: Rows) -> None:
    await rows.add("waiting", created_by=OTHER_USER)
    data = await home.home(TEAM, USER)
    assert not data.is_admin and not data.admin_check_failed
    assert data.pending == () and data.pending_total == 0


async def test_when_admin_rights_cannot_be_checked_no_request_is_shown_and_the_reason_is_kept(
    home: Queries, rows: Rows, directory: MemoryDirectory
) -> None:
    mine = await rows.add("mine", created_by=GROUP_MEMBER)
    await rows.add("waiting")
    directory.failure = "missing_scope"

    data = await home.home(TEAM, GROUP_MEMBER)

    assert not data.is_admin and data.admin_check_failed
    assert data.admin_why.startswith(UNCHECKED) and "missing_scope" in data.admin_why
    assert data.pending == () and data.pending_total == 0
    # The user's own connections do not depend on Slack.
    assert [c.id for c in data.connections] == [mine]


async def test_a_listed_admin_needs_no_group_lookup_even_when_slack_fails(
    home: Queries, rows: Rows, directory: MemoryDirectory
) -> None:
    await rows.add("waiting")
    directory.failure = "ratelimited"
    data = await home.home(TEAM, ADMIN)
    assert data.is_admin and not data.admin_check_failed and len(data.pending) == 1


async def test_both_lists_stop_at_the_limit_and_count_the_rest(home: Queries, rows: Rows) -> None:
    extra = 3
    own = [await rows.add(f"own {i}", created_by=ADMIN) for i in range(HOME_ITEMS_MAX + extra)]
    pending = [await rows.add(f"asked {i}") for i in range(HOME_ITEMS_MAX + extra)]

    data = await home.home(TEAM, ADMIN)

    # Own: the newest; pending: the oldest (the admin's own requests are pending too, and older).
    assert [c.id for c in data.connections] == own[::-1][:HOME_ITEMS_MAX]
    assert data.connections_total == HOME_ITEMS_MAX + extra
    assert [p.connection.id for p in data.pending] == own[:HOME_ITEMS_MAX]
    assert data.pending_total == len(own) + len(pending)


@pytest.mark.parametrize("allowed", [False, True])
async def test_the_self_approval_setting_reaches_the_view(
    db: Database, providers: ProviderRegistry, directory: MemoryDirectory, allowed: bool
) -> None:
    policy = AdminPolicy(frozenset({ADMIN}), None, directory)
    data = await Queries(db, providers, policy, allow_self_approval=allowed).home(TEAM, ADMIN)
    assert data.allow_self_approval is allowed


async def test_a_limit_below_one_is_refused(db: Database, providers: ProviderRegistry) -> None:
    policy = AdminPolicy(frozenset(), None, MemoryDirectory({}))
    with pytest.raises(ValueError):
        Queries(db, providers, policy, home_limit=0)
