"""Re-tests of connections a secret store holds, on SQLite and PostgreSQL: what is tested is what
the store holds at the moment of the provider call, with the settings stored in the database; a
version written outside the bot is tested and reported; a store that cannot be read gives a result
that says where and why, never an exception into the run.

Below the services everything is real (database, cipher, Confluent provider against the fake); the
store is :class:`MemoryStore`. What people see is rendered with the real blocks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import pytest

from blocks.alerts import health_alert
from blocks.retests import retest_report_message, retest_result_message, status_message
from bot.crypto import Cipher
from bot.domain import (
    STORE_CHECK,
    ChangeKind,
    Health,
    RequestKind,
    RetestReport,
    RetestResult,
    Status,
    StatusReport,
    Verdict,
)
from bot.providers.base import Outcome
from bot.providers.registry import ProviderRegistry
from bot.services.admins import AdminPolicy
from bot.services.approvals import ApprovalService
from bot.services.permissions import RetestPolicy
from bot.services.queries import Queries
from bot.services.retests import RetestService
from bot.services.submissions import Submissions
from bot.store import Database
from tests.fakes.confluent_api import FakeConfluent
from tests.support.block_kit import assert_valid
from tests.support.block_text import as_read, visible_text
from tests.support.databases import dump_database_text
from tests.support.memory_store import MemoryStore
from tests.unit.services.secret_store.conftest import PATH
from tests.unit.services.test_approvals import ADMIN, MemoryDirectory
from tests.unit.services.test_connections import OTHER_TEAM, TEAM, create_request, form
from tests.unit.services.test_expiry import HandClock
from tests.unit.services.test_rotations import audit_text, cloud_account, credentials_of, events_of, row

TESTER = "U0TESTER01"
API_HOST = "api.confluent.test"


class OtherStore(MemoryStore):
    key = "other"
    title = "Other Store"


def retest_service(
    db: Database,
    cipher: Cipher,
    providers: ProviderRegistry,
    http: httpx.AsyncClient,
    clock: HandClock,
    store: MemoryStore | None,
    *,
    concurrency: int = 4,
) -> RetestService:
    policy = RetestPolicy(None, AdminPolicy(frozenset({ADMIN}), None, MemoryDirectory({})))
    return RetestService(
        db, cipher, providers, http, policy, concurrency=concurrency, clock=clock, store=store
    )


@pytest.fixture
def retests(
    db: Database,
    cipher: Cipher,
    providers: ProviderRegistry,
    http: httpx.AsyncClient,
    clock: HandClock,
    store: MemoryStore,
) -> RetestService:
    return retest_service(db, cipher, providers, http, clock, store)


async def retest(retests: RetestService, connection_id: str) -> RetestResult:
    result = await retests.retest_one(TEAM, TESTER, connection_id=connection_id)
    assert isinstance(result, RetestResult), result
    return result


def store_checks(result: RetestResult) -> list[str]:
    return [c.detail for c in result.verification.checks if c.name == STORE_CHECK]


async def status_text(db: Database, providers: ProviderRegistry, name: str = "Prod Kafka") -> str:
    queries = Queries(db, providers, AdminPolicy(frozenset(), None, MemoryDirectory({})))
    report = await queries.status(TEAM, name)
    assert isinstance(report, StatusReport)
    payload = status_message(
        report, providers.find("confluent_cloud"), now=datetime.now(UTC), rotation_days=90
    )
    assert_valid("message", payload)
    return as_read(visible_text(payload))


# --- what is tested ------------------------------------------------------------------------------


async def test_a_retest_reads_the_credential_from_the_store_when_it_calls_the_provider(
    retests: RetestService,
    store: MemoryStore,
    active: str,
    account: tuple[str, str],
    fake: FakeConfluent,
    db: Database,
    providers: ProviderRegistry,
) -> None:
    assert await credentials_of(db, active) == [], "nothing local to fall back on"
    reads = len(store.made("read"))

    result = await retest(retests, active)

    assert result.ok and result.conclusive
    assert store_checks(result) == []
    assert len(store.made("read")) == reads + 1
    assert fake.requests[-1].username == account[0]
    assert {r.host for r in fake.requests} == {API_HOST}
    assert f"*Stored in*\nMemory Store at `{PATH}`" in await status_text(db, providers)


async def test_a_version_written_outside_the_bot_is_tested_and_reported(
    retests: RetestService,
    store: MemoryStore,
    active: str,
    new_account: tuple[str, str],
    fake: FakeConfluent,
    db: Database,
    providers: ProviderRegistry,
) -> None:
    [ours] = store.versions(PATH)
    theirs = store.write_outside(PATH, {"api_key": new_account[0], "api_secret": new_account[1]})

    result = await retest(retests, active)

    assert fake.requests[-1].username == new_account[0], "what the store holds now is what is tested"
    assert result.ok, "the credential there works"
    assert store_checks(result) == [
        f"changed outside the bot (current version {theirs}, the bot wrote {ours.version})"
    ]
    assert result.verification.summary.startswith("Changed outside the bot: ")
    reply = retest_result_message(result, providers.find("confluent_cloud"))
    assert_valid("message", reply)
    shown = as_read(visible_text(reply))
    assert f"⚠️ *{STORE_CHECK}* — changed outside the bot (current version {theirs}" in shown
    assert "Changed outside the bot" in await status_text(db, providers)


async def test_an_alert_about_a_changed_secret_that_fails_says_it_was_changed_outside_the_bot(
    retests: RetestService,
    store: MemoryStore,
    active: str,
    account: tuple[str, str],
    providers: ProviderRegistry,
) -> None:
    store.write_outside(PATH, {"api_key": account[0], "api_secret": "not-the-secret-at-all"})

    result = await retest(retests, active)

    assert not result.ok and result.conclusive
    assert result.change is not None and result.change.kind is ChangeKind.FAILED
    alert = health_alert(result, providers.find("confluent_cloud"))
    assert_valid("message", alert)
    shown = as_read(visible_text(alert))
    assert "Changed outside the bot" in shown
    assert f"{STORE_CHECK}* — changed outside the bot" in shown


async def test_settings_written_into_the_store_are_never_used(
    retests: RetestService, store: MemoryStore, active: str, account: tuple[str, str], fake: FakeConfluent
) -> None:
    store.write_outside(
        PATH,
        {
            "api_key": account[0],
            "api_secret": account[1],
            "rest_endpoint": "https://pkc-evil.evil.example:443",
            "cluster_id": "lkc-evil",
        },
    )
    fake.requests.clear()

    result = await retest(retests, active)

    assert result.ok
    assert {r.host for r in fake.requests} == {API_HOST}, "only the stored settings were used"
    assert len(store_checks(result)) == 1 and "changed outside the bot" in store_checks(result)[0]


async def test_settings_changed_in_the_database_send_the_credential_nowhere(
    retests: RetestService, store: MemoryStore, active: str, fake: FakeConfluent, db: Database
) -> None:
    # With a store, nothing seals the settings to the credential in the database: the secret the
    # bot wrote holds them, and a database whose settings no longer match it is not trusted.
    async with db.transaction() as tx:
        connection = await tx.connections.get(TEAM, active)
        assert connection is not None
        connection.config = {"rest_endpoint": "https://pkc-evil.us-west4.gcp.confluent.cloud:443"}
    fake.requests.clear()

    result = await retest(retests, active)

    assert fake.requests == [], "nothing was sent anywhere"
    assert result.conclusive and not result.ok
    assert store_checks(result) == ["does not match the connection's stored settings"]
    assert "nothing was sent" in result.verification.summary


# --- when the store cannot be read ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("arrange", "why"),
    [(MemoryStore.take_down, "did not answer"), (MemoryStore.deny, "AccessDenied")],
    ids=["down", "denied"],
)
async def test_a_store_that_cannot_be_read_leaves_the_health_as_it_was(
    retests: RetestService,
    store: MemoryStore,
    active: str,
    db: Database,
    providers: ProviderRegistry,
    fake: FakeConfluent,
    arrange: Callable[[MemoryStore, str], None],
    why: str,
) -> None:
    arrange(store, "read")
    fake.requests.clear()

    result = await retest(retests, active)

    assert not result.conclusive, "nothing was said about the credential"
    assert result.change is None
    assert result.verification.outcome is Outcome.UNREACHABLE
    assert PATH in result.verification.summary and why in result.verification.summary
    assert fake.requests == [], "nothing was sent to the provider"
    connection = await row(db, active)
    assert connection.health is Health.HEALTHY and connection.failing_since is None

    reply = retest_result_message(result, providers.find("confluent_cloud"))
    assert_valid("message", reply)
    shown = as_read(visible_text(reply))
    assert "could not be checked" in shown and "health is unchanged" in shown
    assert "rate-limiting" not in shown
    assert "the secret store answers" in shown, "the operator's hint is shown"

    report = await retests.retest_all(TEAM, TESTER)
    assert isinstance(report, RetestReport)
    assert (report.healthy, report.failing, report.inconclusive) == (0, 0, 1)
    summary = as_read(visible_text(retest_report_message(report, providers.by_key())))
    assert "1 inconclusive" in summary and "rate-limited" not in summary


async def test_a_secret_deleted_outside_the_bot_fails_the_connection_and_says_so(
    retests: RetestService, store: MemoryStore, active: str, db: Database, providers: ProviderRegistry
) -> None:
    store.delete_outside(PATH)

    result = await retest(retests, active)

    assert result.conclusive and not result.ok
    assert result.change is not None and result.change.kind is ChangeKind.FAILED
    assert (
        "was deleted outside the bot" in result.verification.summary and PATH in result.verification.summary
    )
    assert (await row(db, active)).health is Health.FAILING
    alert = as_read(visible_text(health_alert(result, providers.find("confluent_cloud"))))
    assert "was deleted outside the bot" in alert


async def test_the_schedule_goes_on_past_a_store_that_is_down(
    retests: RetestService,
    store: MemoryStore,
    active: str,
    clock: HandClock,
    db: Database,
) -> None:
    store.take_down("read")
    async with db.transaction() as tx:
        connection = await tx.connections.get(TEAM, active)
        assert connection is not None
        connection.next_check_at = clock.now

    report = await retests.run_due()

    [result] = report.results
    assert not result.conclusive
    assert (await row(db, active)).health is Health.HEALTHY


async def test_a_connection_in_another_store_is_not_tested_and_says_to_migrate(
    db: Database,
    cipher: Cipher,
    providers: ProviderRegistry,
    http: httpx.AsyncClient,
    clock: HandClock,
    store: MemoryStore,
    active: str,
) -> None:
    for configured, to in ((None, "local"), (OtherStore(), "other")):
        service = retest_service(db, cipher, providers, http, clock, configured)

        result = await retest(service, active)

        assert not result.conclusive and result.change is None
        assert "not set to use the store that holds it" in result.verification.summary
        assert any(f"migrate-secrets --to {to}" in hint for hint in result.verification.hints)
    assert (await row(db, active)).health is Health.HEALTHY


async def test_bulk_re_tests_read_the_store_within_the_bounded_slots(
    db: Database,
    cipher: Cipher,
    providers: ProviderRegistry,
    http: httpx.AsyncClient,
    clock: HandClock,
    store: MemoryStore,
    approvals: ApprovalService,
    submissions: Submissions,
    fake: FakeConfluent,
) -> None:
    for team in (TEAM, OTHER_TEAM):
        for index in range(3):
            request = create_request(f"Kafka {index}", form(*cloud_account(fake)), team_id=team)
            outcome = await submissions.submit(request)
            assert outcome.request_id is not None
            decision = await approvals.approve(RequestKind.CONNECTION, team, outcome.request_id, ADMIN)
            assert decision.verdict is Verdict.DECIDED
    service = retest_service(db, cipher, providers, http, clock, store, concurrency=2)
    store.read_delay = 0.02  # long enough for the runs' reads to overlap, were they not bounded

    reports = await asyncio.gather(service.retest_all(TEAM, TESTER), service.retest_all(OTHER_TEAM, TESTER))

    assert [r.healthy for r in reports if isinstance(r, RetestReport)] == [3, 3]
    assert store.most_reads_in_flight <= 2, "two runs at once share the slots"


# --- secrets -------------------------------------------------------------------------------------


async def test_no_secret_reaches_a_log_an_audit_event_or_a_result(
    retests: RetestService,
    store: MemoryStore,
    active: str,
    account: tuple[str, str],
    new_account: tuple[str, str],
    db: Database,
    caplog: pytest.LogCaptureFixture,
    migrated_database_url: str,
    providers: ProviderRegistry,
) -> None:
    caplog.set_level(logging.DEBUG)
    results = [await retest(retests, active)]
    store.write_outside(PATH, {"api_key": new_account[0], "api_secret": new_account[1]})
    results.append(await retest(retests, active))
    store.take_down("read")
    results.append(await retest(retests, active))

    seen = "\n".join(
        [
            caplog.text,
            audit_text(await events_of(db, active)),
            *(repr(r) for r in results),
            *(visible_text(retest_result_message(r, providers.find("confluent_cloud"))) for r in results),
            dump_database_text(migrated_database_url),
        ]
    )
    for secret in (account[1], new_account[1]):
        assert secret not in seen
    assert Status.ACTIVE is (await row(db, active)).status
