"""Submissions of new connections, and the list of them (Queries), on SQLite and PostgreSQL, with the
real Confluent provider against the fake API.

Everything below the service is real: the database (migrated per test), the AES-GCM cipher, the
provider and its HTTP calls, which reach :class:`FakeConfluent` in-process through ASGITransport.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import select

from bot.crypto import Cipher, DecryptionError, MasterKey, Sealed, associated_data, config_digest
from bot.domain import NAME_FIELD, NAME_MAX_LENGTH, PAGE_SIZE, Health, RequestKind, Status
from bot.providers.base import Outcome
from bot.providers.confluent_cloud import ConfluentCloud
from bot.providers.registry import ProviderRegistry
from bot.redaction import Secret
from bot.services.admins import AdminPolicy
from bot.services.queries import Queries
from bot.services.submissions import Submission, SubmissionOutcome, Submissions
from bot.store import AuditEvent, Connection, Credential, Database, VerificationRecord
from tests.fakes.confluent_api import FakeConfluent, new_api_key, new_api_secret
from tests.support.databases import dump_database_text
from tests.unit.providers.test_confluent_cloud import confluent
from tests.unit.services.conftest import API

REST = "https://pkc-abcde.us-west4.gcp.confluent.cloud:443"
CLUSTER = "lkc-abc123"
TEAM = "T0000TEAM"
OTHER_TEAM = "T0000OTHR"
USER = "U0000USER"
START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

M = TypeVar("M")
NO_SETTINGS = config_digest("confluent_cloud", {})
"""What a connection made without a cluster is bound to."""


class TickingClock:
    """A clock that moves one second forward on every reading, so rows get distinct, known times."""

    def __init__(self, start: datetime = START) -> None:
        self.now = start - timedelta(seconds=1)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture
def clock() -> TickingClock:
    return TickingClock()


@pytest.fixture
def provider() -> ConfluentCloud:
    return confluent(api_url=API)


class NoDirectory:
    """No admin group is configured here, so nobody may ask this directory."""

    async def members(self, group_id: str) -> frozenset[str]:
        raise AssertionError("no group lookup expected")


@pytest.fixture
def admins() -> AdminPolicy:
    return AdminPolicy(frozenset(), None, NoDirectory())


@pytest.fixture
def service(
    db: Database,
    cipher: Cipher,
    provider: ConfluentCloud,
    http: httpx.AsyncClient,
    admins: AdminPolicy,
    clock: TickingClock,
) -> Submissions:
    return Submissions(db, cipher, ProviderRegistry((provider,)), http, admins, clock=clock)


@pytest.fixture
def queries(db: Database, provider: ConfluentCloud, admins: AdminPolicy) -> Queries:
    return Queries(db, ProviderRegistry((provider,)), admins)


@pytest.fixture
def account(fake: FakeConfluent) -> tuple[str, str]:
    """A key/secret pair that the fake accepts on the Cloud API and on cluster ``CLUSTER``."""
    key, secret = new_api_key(), new_api_secret()
    fake.add_cloud_key(key, secret, environments=2)
    fake.add_cluster_key(key, secret, cluster_id=CLUSTER, topics=["orders"])
    return key, secret


def form(key: str, secret: str, endpoint: str = "", cluster: str = "") -> dict[str, str | Secret]:
    return {
        "api_key": Secret(key),
        "api_secret": Secret(secret),
        "rest_endpoint": endpoint,
        "cluster_id": cluster,
    }


def create_request(
    name: str,
    values: dict[str, str | Secret],
    team_id: str = TEAM,
    user_id: str = USER,
    *,
    provider: ConfluentCloud | None = None,
    claim_id: str | None = None,
) -> Submission:
    """The submission of a new Confluent Cloud connection."""
    return Submission(
        kind=RequestKind.CONNECTION,
        team_id=team_id,
        user_id=user_id,
        provider=provider or confluent(api_url=API),
        name=name,
        values=values,
        claim_id=claim_id,
    )


def stored(outcome: SubmissionOutcome) -> bool:
    """Whether the submission was stored (as the approval request of a new connection)."""
    return outcome.request_id is not None


async def all_rows(db: Database, model: type[M]) -> list[M]:
    async with db.read() as tx:
        return list(await tx.session.scalars(select(model)))


async def create_ok(service: Submissions, name: str, values: dict[str, str | Secret], **kw: Any) -> str:
    outcome = await service.submit(create_request(name, values, **kw))
    assert outcome.verification is not None
    assert outcome.verification.outcome is Outcome.OK, outcome.verification.summary
    assert outcome.request_id is not None
    return outcome.request_id


def sealed_of(credential: Credential) -> Sealed:
    return Sealed(key_id=credential.key_id, nonce=credential.nonce, ciphertext=credential.ciphertext)


# --- check_form ----------------------------------------------------------------------------------


async def test_check_form_accepts_good_input_and_returns_cleaned_values(
    service: Submissions, provider: ConfluentCloud, fake: FakeConfluent
) -> None:
    key, secret = new_api_key(), new_api_secret()
    values: dict[str, str | Secret] = {
        "api_key": Secret(f"  {key}\n"),
        "api_secret": Secret(f"\t{secret}  "),
        "rest_endpoint": f"  {REST}/ ",
        "cluster_id": f" {CLUSTER} ",
    }

    checked = await service.check(
        RequestKind.CONNECTION, TEAM, provider, "  Production   Confluent\tCloud ", values
    )

    assert checked.ok, checked.problems
    assert checked.problems == {}
    assert checked.name == "Production Confluent Cloud"
    assert isinstance(checked.values["api_key"], Secret)
    assert isinstance(checked.values["api_secret"], Secret)
    assert checked.values["api_key"] == Secret(key)
    assert checked.values["api_secret"] == Secret(secret)
    assert checked.values["rest_endpoint"] == REST
    assert checked.values["cluster_id"] == CLUSTER
    assert fake.requests == [], "check_form must not call the provider"


@pytest.mark.parametrize("name", ["", "   ", "\t \n"])
async def test_check_form_requires_a_name(service: Submissions, provider: ConfluentCloud, name: str) -> None:
    checked = await service.check(
        RequestKind.CONNECTION, TEAM, provider, name, form(new_api_key(), new_api_secret())
    )

    assert not checked.ok
    assert set(checked.problems) == {NAME_FIELD}
    assert "name" in checked.problems[NAME_FIELD].lower()


async def test_check_form_limits_the_name_length(service: Submissions, provider: ConfluentCloud) -> None:
    values = form(new_api_key(), new_api_secret())

    longest = await service.check(RequestKind.CONNECTION, TEAM, provider, "n" * NAME_MAX_LENGTH, values)
    too_long = await service.check(
        RequestKind.CONNECTION, TEAM, provider, "n" * (NAME_MAX_LENGTH + 1), values
    )
    # The limit applies after whitespace is collapsed, so padding does not count.
    padded = await service.check(
        RequestKind.CONNECTION, TEAM, provider, "  " + "n" * NAME_MAX_LENGTH + "  ", values
    )

    assert longest.ok, longest.problems
    assert set(too_long.problems) == {NAME_FIELD}
    assert str(NAME_MAX_LENGTH) in too_long.problems[NAME_FIELD]
    assert padded.ok, padded.problems


@pytest.mark.parametrize("status", [Status.PENDING_APPROVAL, Status.ACTIVE])
async def test_check_form_reports_a_name_taken_in_another_case(
    service: Submissions,
    provider: ConfluentCloud,
    account: tuple[str, str],
    db: Database,
    status: Status,
) -> None:
    connection_id = await create_ok(service, "Prod Kafka", form(*account))
    if status is not Status.PENDING_APPROVAL:
        async with db.transaction() as tx:
            assert await tx.connections.transition(TEAM, connection_id, Status.PENDING_APPROVAL, status)

    checked = await service.check(RequestKind.CONNECTION, TEAM, provider, "  PROD   kafka ", form(*account))

    assert set(checked.problems) == {NAME_FIELD}
    assert "already exists" in checked.problems[NAME_FIELD]
    assert checked.name == "PROD kafka"


async def test_check_form_frees_the_name_of_a_rejected_connection(
    service: Submissions, provider: ConfluentCloud, account: tuple[str, str], db: Database
) -> None:
    connection_id = await create_ok(service, "Prod Kafka", form(*account))
    async with db.transaction() as tx:
        assert await tx.connections.transition(TEAM, connection_id, Status.PENDING_APPROVAL, Status.REJECTED)

    checked = await service.check(RequestKind.CONNECTION, TEAM, provider, "prod kafka", form(*account))

    assert checked.ok, checked.problems


async def test_check_form_ignores_names_in_other_workspaces(
    service: Submissions, provider: ConfluentCloud, account: tuple[str, str]
) -> None:
    await create_ok(service, "Prod Kafka", form(*account), team_id=OTHER_TEAM)

    checked = await service.check(RequestKind.CONNECTION, TEAM, provider, "Prod Kafka", form(*account))

    assert checked.ok, checked.problems


async def test_check_form_passes_the_providers_problems_through(
    service: Submissions, provider: ConfluentCloud
) -> None:
    checked = await service.check(
        RequestKind.CONNECTION, TEAM, provider, "Prod Kafka", form("not-a-key", new_api_secret())
    )

    assert set(checked.problems) == {"api_key"}
    assert checked.problems["api_key"] == provider.validate(checked.values)["api_key"]


async def test_check_form_reports_name_and_field_problems_together(
    service: Submissions, provider: ConfluentCloud
) -> None:
    checked = await service.check(
        RequestKind.CONNECTION, TEAM, provider, " ", form("not-a-key", new_api_secret())
    )

    assert set(checked.problems) == {NAME_FIELD, "api_key"}


# --- create ----------------------------------------------------------------------------------------


async def test_create_stores_one_pending_connection_with_sealed_credentials(
    service: Submissions,
    account: tuple[str, str],
    cipher: Cipher,
    db: Database,
    migrated_database_url: str,
) -> None:
    key, secret = account

    outcome = await service.submit(create_request("Prod Kafka", form(key, secret, REST, CLUSTER)))

    assert stored(outcome) and outcome.problem is None
    assert outcome.verification is not None and outcome.verification.outcome is Outcome.OK
    [connection] = await all_rows(db, Connection)
    assert connection.id == outcome.request_id
    assert (connection.team_id, connection.name, connection.provider, connection.created_by) == (
        TEAM,
        "Prod Kafka",
        "confluent_cloud",
        USER,
    )
    assert connection.status is Status.PENDING_APPROVAL
    assert connection.health is Health.HEALTHY
    assert connection.last_verified_at == START
    assert connection.created_at == START
    assert connection.key_hint == f"{key[:4]}…{key[-4:]}"
    assert connection.config == {"rest_endpoint": REST, "cluster_id": CLUSTER}
    assert connection.credential_version == 1

    credentials = await all_rows(db, Credential)
    assert sorted(c.field for c in credentials) == ["api_key", "api_secret"]
    submitted = {"api_key": key, "api_secret": secret}
    for credential in credentials:
        assert (credential.connection_id, credential.team_id, credential.version) == (connection.id, TEAM, 1)
        assert credential.key_id == cipher.key_id
        assert secret.encode() not in credential.ciphertext
        # Bound to the settings it was submitted with.
        bound_to = config_digest("confluent_cloud", {"rest_endpoint": REST, "cluster_id": CLUSTER})
        opened = cipher.open(
            sealed_of(credential), associated_data(connection.id, credential.field, 1, bound_to)
        )
        assert opened.reveal() == submitted[credential.field]

    [verification] = await all_rows(db, VerificationRecord)
    assert (verification.connection_id, verification.team_id) == (connection.id, TEAM)
    assert verification.outcome is Outcome.OK
    assert (verification.trigger, verification.actor) == ("create", USER)
    assert verification.summary == outcome.verification.summary

    [event] = await all_rows(db, AuditEvent)
    assert (event.action, event.connection_id, event.team_id, event.actor) == (
        "connection.created",
        connection.id,
        TEAM,
        USER,
    )
    assert event.after_status == Status.PENDING_APPROVAL
    assert event.details == {"provider": "confluent_cloud", "name": "Prod Kafka"}

    stored_text = dump_database_text(migrated_database_url)
    assert secret not in stored_text
    assert key not in stored_text


async def test_create_binds_each_ciphertext_to_its_own_connection_and_field(
    service: Submissions, account: tuple[str, str], cipher: Cipher, db: Database
) -> None:
    first = await create_ok(service, "Prod Kafka", form(*account))
    second = await create_ok(service, "Staging Kafka", form(*account))
    by_row = {(c.connection_id, c.field): c for c in await all_rows(db, Credential)}

    secret_of_first = sealed_of(by_row[(first, "api_secret")])
    assert (
        cipher.open(secret_of_first, associated_data(first, "api_secret", 1, NO_SETTINGS)).reveal()
        == account[1]
    )
    with pytest.raises(DecryptionError):
        cipher.open(secret_of_first, associated_data(second, "api_secret", 1, NO_SETTINGS))
    with pytest.raises(DecryptionError):
        cipher.open(secret_of_first, associated_data(first, "api_key", 1, NO_SETTINGS))
    with pytest.raises(DecryptionError):
        cipher.open(secret_of_first, associated_data(first, "api_secret", 2, NO_SETTINGS))
    with pytest.raises(DecryptionError):
        Cipher(MasterKey.generate()).open(
            secret_of_first, associated_data(first, "api_secret", 1, NO_SETTINGS)
        )
    # Bound to its settings too: pointed at another endpoint, or read as a legacy row, it does not open.
    elsewhere = config_digest("confluent_cloud", {"rest_endpoint": "https://elsewhere.example"})
    for other in (
        associated_data(first, "api_secret", 1, elsewhere),
        associated_data(first, "api_secret", 1),
    ):
        with pytest.raises(DecryptionError):
            cipher.open(secret_of_first, other)


async def test_create_with_a_cloud_key_stores_no_cluster_config(
    service: Submissions, account: tuple[str, str], db: Database
) -> None:
    await create_ok(service, "Prod Kafka", form(*account))

    [connection] = await all_rows(db, Connection)
    assert connection.config == {}


async def test_create_with_a_wrong_secret_stores_only_an_audit_event(
    service: Submissions,
    account: tuple[str, str],
    db: Database,
    migrated_database_url: str,
) -> None:
    key, _ = account
    wrong = new_api_secret()

    outcome = await service.submit(create_request("Prod Kafka", form(key, wrong)))

    assert not stored(outcome)
    assert outcome.request_id is None and outcome.problem is None
    assert outcome.verification is not None
    assert outcome.verification.outcome is Outcome.UNAUTHORIZED
    assert outcome.verification.hints
    assert any("rejected the key/secret" in hint for hint in outcome.verification.hints)
    assert await all_rows(db, Connection) == []
    assert await all_rows(db, Credential) == []
    assert await all_rows(db, VerificationRecord) == []
    [event] = await all_rows(db, AuditEvent)
    assert (event.action, event.team_id, event.actor, event.connection_id) == (
        "connection.create_failed",
        TEAM,
        USER,
        None,
    )
    assert event.reason == Outcome.UNAUTHORIZED.value
    assert event.details == {"provider": "confluent_cloud", "name": "Prod Kafka"}
    stored_text = dump_database_text(migrated_database_url)
    assert wrong not in stored_text
    assert key not in stored_text


async def test_a_name_taken_between_check_and_store_saves_nothing(
    service: Submissions, account: tuple[str, str], cipher: Cipher, db: Database
) -> None:
    first = await service.submit(create_request("Prod Kafka", form(*account)))

    second = await service.submit(create_request("PROD KAFKA", form(*account)))

    assert stored(first)
    assert not stored(second)
    assert second.verification is not None
    assert second.verification.outcome is Outcome.OK, "the credentials themselves were fine"
    assert second.problem is not None and "PROD KAFKA" in second.problem
    assert "Nothing was saved" in second.problem
    [connection] = await all_rows(db, Connection)
    assert (connection.id, connection.name) == (first.request_id, "Prod Kafka")
    credentials = await all_rows(db, Credential)
    assert {c.connection_id for c in credentials} == {first.request_id}
    assert len(credentials) == 2
    for credential in credentials:
        cipher.open(sealed_of(credential), associated_data(connection.id, credential.field, 1, NO_SETTINGS))
    assert [v.connection_id for v in await all_rows(db, VerificationRecord)] == [first.request_id]
    assert [(e.action, e.connection_id) for e in await all_rows(db, AuditEvent)] == [
        ("connection.created", first.request_id)
    ]


async def test_two_concurrent_creates_of_one_name_store_exactly_one(
    service: Submissions, account: tuple[str, str], fake: FakeConfluent, db: Database
) -> None:
    # Both verifications are held at the fake until both are in flight, so both pass the provider
    # before either stores: only the database's unique name index can decide between them.
    fake.hold()
    racing = [
        asyncio.create_task(service.submit(create_request(name, form(*account), user_id=user)))
        for name, user in (("Prod Kafka", "U0000AAAA"), ("prod kafka", "U0000BBBB"))
    ]
    try:
        await fake.wait_until_held(2)
    finally:
        fake.release()
    outcomes: list[SubmissionOutcome] = await asyncio.gather(*racing)

    assert sorted(stored(o) for o in outcomes) == [False, True]
    [winner] = [o for o in outcomes if stored(o)]
    [loser] = [o for o in outcomes if not stored(o)]
    assert loser.problem is not None
    [connection] = await all_rows(db, Connection)
    assert connection.id == winner.request_id
    assert {c.connection_id for c in await all_rows(db, Credential)} == {winner.request_id}


# --- list_connections ------------------------------------------------------------------------------


async def test_list_connections_pages_newest_first_within_the_team(
    service: Submissions, queries: Queries, account: tuple[str, str]
) -> None:
    created: list[str] = []
    for index in range(25):
        created.append(await create_ok(service, f"Kafka {index:02d}", form(*account)))
        if index % 5 == 0:  # interleaved, so another team's rows sit between ours in time
            await create_ok(service, f"Kafka {index:02d}", form(*account), team_id=OTHER_TEAM)
    newest_first = list(reversed(created))

    first = await queries.list_connections(TEAM, 1)
    second = await queries.list_connections(TEAM, 2)
    beyond = await queries.list_connections(TEAM, 99)
    zeroth = await queries.list_connections(TEAM, 0)

    assert PAGE_SIZE == 20
    assert (first.number, first.total, first.size) == (1, 25, PAGE_SIZE)
    assert [c.id for c in first.items] == newest_first[:20]
    assert [c.name for c in first.items[:2]] == ["Kafka 24", "Kafka 23"]
    assert (second.number, second.total) == (2, 25)
    assert [c.id for c in second.items] == newest_first[20:]
    assert (beyond.number, [c.id for c in beyond.items]) == (2, newest_first[20:])
    assert (zeroth.number, [c.id for c in zeroth.items]) == (1, newest_first[:20])
    assert first.has_next and not first.has_previous
    assert second.has_previous and not second.has_next

    other = await queries.list_connections(OTHER_TEAM, 1)
    assert other.total == 5
    assert not {c.id for c in other.items} & set(created)


@pytest.mark.parametrize("page", [2**63, 10**20], ids=["2**63", "10**20"])
async def test_list_connections_clamps_a_page_number_too_large_for_the_database(
    service: Submissions, queries: Queries, account: tuple[str, str], page: int
) -> None:
    connection_id = await create_ok(service, "Prod Kafka", form(*account))

    listing = await queries.list_connections(TEAM, page)

    assert (listing.number, [c.id for c in listing.items]) == (1, [connection_id])


async def test_list_connections_summarises_each_connection(
    service: Submissions, queries: Queries, account: tuple[str, str]
) -> None:
    key, _ = account
    connection_id = await create_ok(service, "Prod Kafka", form(*account))

    page = await queries.list_connections(TEAM)

    [summary] = page.items
    assert summary.id == connection_id
    assert (summary.name, summary.provider_key, summary.provider_title) == (
        "Prod Kafka",
        "confluent_cloud",
        "Confluent Cloud",
    )
    assert (summary.status, summary.health) == (Status.PENDING_APPROVAL, Health.HEALTHY)
    assert (summary.created_by, summary.created_at, summary.last_verified_at) == (USER, START, START)
    assert summary.key_hint == f"{key[:4]}…{key[-4:]}"


async def test_list_connections_of_an_empty_workspace(queries: Queries) -> None:
    page = await queries.list_connections(TEAM, 3)

    assert (page.items, page.number, page.total) == ((), 1, 0)


async def test_list_connections_keeps_rows_of_a_provider_no_longer_offered(
    queries: Queries, db: Database
) -> None:
    async with db.transaction() as tx:
        await tx.connections.add(
            Connection(team_id=TEAM, name="Old one", provider="retired_provider", created_by=USER)
        )

    [summary] = (await queries.list_connections(TEAM)).items

    assert (summary.provider_key, summary.provider_title) == ("retired_provider", "retired_provider")


async def test_names_ignore_case_beyond_ascii(
    service: Submissions,
    provider: ConfluentCloud,
    account: tuple[str, str],
    migrated_database_url: str,
    request: pytest.FixtureRequest,
) -> None:
    await create_ok(service, "Ärger Kafka", form(*account))

    checked = await service.check(RequestKind.CONNECTION, TEAM, provider, "ärger kafka", form(*account))
    second = await service.submit(create_request("ärger kafka", form(*account)))

    assert set(checked.problems) == {NAME_FIELD}
    assert not stored(second) and second.problem is not None
