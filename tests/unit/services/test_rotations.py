"""Rotations on SQLite and PostgreSQL: submitted through Submissions, decided and expired by
ApprovalService (``RequestKind.ROTATION``), over active connections made by the real services.

Everything below the service is real: the migrated database, the AES-GCM cipher, the Confluent
provider verifying against :class:`FakeConfluent` in-process, and :class:`AdminPolicy` over an
in-memory directory of Slack user groups. Times come from a hand-set clock.

The concurrency tests run two "bot processes": two :class:`Database` objects on one database, each
with its own engine and pool, each behind its own ApprovalService.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from bot.crypto import Cipher, DecryptionError, Sealed, associated_data, config_digest
from bot.domain import (
    REASON_MAX_LENGTH,
    SYSTEM_ACTOR,
    Decision,
    Refusal,
    Refused,
    RequestKind,
    RotationStatus,
    Status,
    Trigger,
    Verdict,
)
from bot.providers.base import Outcome
from bot.providers.confluent_cloud import ConfluentCloud
from bot.providers.registry import ProviderRegistry
from bot.redaction import Secret, mask_hint
from bot.services.admins import LISTED, MEMBER, UNCHECKED
from bot.services.approvals import ApprovalService
from bot.services.removal import RemovalService
from bot.services.submissions import (
    ROTATED_MEANWHILE,
    RotationTarget,
    Submission,
    SubmissionOutcome,
    Submissions,
)
from bot.store import AuditEvent, Connection, Credential, Database, Rotation, UnitOfWork, VerificationRecord
from bot.store.db import create_engine
from bot.store.repositories import RotationRepository
from tests.fakes.confluent_api import FakeConfluent, new_api_key, new_api_secret
from tests.support.databases import dump_database_text
from tests.unit.providers.test_confluent_cloud import confluent
from tests.unit.services.test_approvals import (
    ADMIN,
    GROUP,
    GROUP_MEMBER,
    OUTSIDER,
    REQUESTER,
    SECOND_ADMIN,
    MemoryDirectory,
    new_policy,
)
from tests.unit.services.test_connections import (
    API,
    CLUSTER,
    OTHER_TEAM,
    REST,
    START,
    TEAM,
    create_request,
    form,
    stored,
)
from tests.unit.services.test_expiry import HandClock

OWNER_ID = REQUESTER
"""Who added the connections below (not an admin)."""
TTL = timedelta(hours=72)
APPROVED_AT = START + timedelta(minutes=1)
ROTATE_AT = START + timedelta(days=30)
DECIDE_AT = ROTATE_AT + timedelta(hours=2)
ROUNDS = 10
"""How many times each race is run: one lucky interleaving must not make the test pass."""
RACE_TIMEOUT = 10.0

Values = dict[str, str | Secret]
CONNECTION = RequestKind.CONNECTION
ROTATION = RequestKind.ROTATION


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def clock() -> HandClock:
    return HandClock()


@pytest.fixture
def providers() -> ProviderRegistry:
    return ProviderRegistry((confluent(api_url=API),))


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
    clock: HandClock,
) -> Submissions:
    """New connections and rotations, submitted."""
    return Submissions(db, cipher, providers, http, new_policy(directory), clock=clock)


@pytest.fixture
def approvals(
    db: Database, providers: ProviderRegistry, directory: MemoryDirectory, clock: HandClock
) -> ApprovalService:
    """Decisions on new connections and on rotations, and their expiry."""
    return ApprovalService(db, providers, new_policy(directory), ttl=TTL, clock=clock)


@pytest.fixture
def removal(
    db: Database, providers: ProviderRegistry, directory: MemoryDirectory, clock: HandClock
) -> RemovalService:
    return RemovalService(db, providers, new_policy(directory), clock=clock)


def cloud_account(fake: FakeConfluent, *, cluster: bool = False) -> tuple[str, str]:
    """A fresh key/secret that the fake accepts on the Cloud API (and on ``CLUSTER`` if asked)."""
    key, secret = new_api_key(), new_api_secret()
    fake.add_cloud_key(key, secret, environments=2)
    if cluster:
        fake.add_cluster_key(key, secret, cluster_id=CLUSTER, topics=["orders"])
    return key, secret


@pytest.fixture
def account(fake: FakeConfluent) -> tuple[str, str]:
    """The credential the connections are created with."""
    return cloud_account(fake)


@pytest.fixture
def new_account(fake: FakeConfluent) -> tuple[str, str]:
    """The credential rotations bring in; it also works on cluster ``CLUSTER``."""
    return cloud_account(fake, cluster=True)


@pytest.fixture
def spare_account(fake: FakeConfluent) -> tuple[str, str]:
    """Yet another working credential."""
    return cloud_account(fake)


def new_values(account: tuple[str, str]) -> Values:
    """The rotation form for ``account``, with the cluster that the old credential did not name."""
    return form(*account, REST, CLUSTER)


async def make_active(
    submissions: Submissions,
    approvals: ApprovalService,
    clock: HandClock,
    account: tuple[str, str],
    name: str = "Prod Kafka",
    *,
    owner: str = OWNER_ID,
    team_id: str = TEAM,
    at: datetime = START,
) -> str:
    """An active connection added by ``owner`` at ``at`` and approved a minute later; its id."""
    clock.now = at
    outcome = await submissions.submit(create_request(name, form(*account), team_id=team_id, user_id=owner))
    assert outcome.request_id is not None, outcome.verification
    clock.now = at + timedelta(minutes=1)
    approver = SECOND_ADMIN if owner == ADMIN else ADMIN
    decision = await approvals.approve(CONNECTION, team_id, outcome.request_id, approver)
    assert decision.verdict is Verdict.DECIDED
    return outcome.request_id


@pytest.fixture
async def active(
    submissions: Submissions, approvals: ApprovalService, clock: HandClock, account: tuple[str, str]
) -> str:
    """An active connection "Prod Kafka" of ``OWNER_ID``; the clock then stands at ``ROTATE_AT``."""
    connection_id = await make_active(submissions, approvals, clock, account)
    clock.now = ROTATE_AT
    return connection_id


def rotation(
    connection_id: str,
    values: Values,
    *,
    actor: str = OWNER_ID,
    team_id: str = TEAM,
    name: str = "Prod Kafka",
    provider: ConfluentCloud | None = None,
    claim_id: str | None = None,
) -> Submission:
    """The submission of new credentials for the connection (``name`` is only shown)."""
    return Submission(
        kind=ROTATION,
        team_id=team_id,
        user_id=actor,
        provider=provider or confluent(api_url=API),
        name=name,
        values=values,
        connection_id=connection_id,
        claim_id=claim_id,
    )


async def rotate(
    submissions: Submissions,
    connection_id: str,
    values: Values,
    *,
    actor: str = OWNER_ID,
    team_id: str = TEAM,
) -> SubmissionOutcome:
    return await submissions.submit(rotation(connection_id, values, actor=actor, team_id=team_id))


async def request_ok(
    submissions: Submissions,
    connection_id: str,
    values: Values,
    *,
    actor: str = OWNER_ID,
    team_id: str = TEAM,
) -> str:
    outcome = await rotate(submissions, connection_id, values, actor=actor, team_id=team_id)
    assert outcome.problem is None, outcome.problem
    assert outcome.verification is not None and outcome.verification.ok, outcome.verification
    assert outcome.request_id is not None
    return outcome.request_id


@pytest.fixture
async def pending(
    submissions: Submissions, active: str, new_account: tuple[str, str], clock: HandClock
) -> str:
    """A rotation of ``active`` to ``new_account`` asked for by its owner at ``ROTATE_AT``; the
    clock then stands at ``DECIDE_AT``."""
    rotation_id = await request_ok(submissions, active, new_values(new_account))
    clock.now = DECIDE_AT
    return rotation_id


# --- reading the database ------------------------------------------------------------------------


async def row(db: Database, connection_id: str) -> Connection:
    async with db.read() as tx:
        connection = await tx.session.get(Connection, connection_id)
    assert connection is not None
    return connection


async def rotation_row(db: Database, rotation_id: str) -> Rotation:
    async with db.read() as tx:
        rotation = await tx.session.get(Rotation, rotation_id)
    assert rotation is not None
    return rotation


async def rotations_of(db: Database, connection_id: str) -> list[Rotation]:
    async with db.read() as tx:
        statement = select(Rotation).where(Rotation.connection_id == connection_id).order_by(Rotation.version)
        return list(await tx.session.scalars(statement))


async def credentials_of(db: Database, connection_id: str) -> list[Credential]:
    async with db.read() as tx:
        statement = (
            select(Credential)
            .where(Credential.connection_id == connection_id)
            .order_by(Credential.version, Credential.field)
        )
        return list(await tx.session.scalars(statement))


def by_version(credentials: list[Credential]) -> dict[int, list[str]]:
    """Stored fields per credential version."""
    found: dict[int, list[str]] = {}
    for credential in credentials:
        found.setdefault(credential.version, []).append(credential.field)
    return found


WITH_CLUSTER = {"rest_endpoint": REST, "cluster_id": CLUSTER}
"""The settings of :func:`new_values`."""


def opened(
    cipher: Cipher, credential: Credential, version: int | None = None, settings: dict[str, str] | None = None
) -> str:
    """The plain text of one stored field, opened with the associated data of ``version`` (the
    field's own version unless given) and of the settings it was sealed for (unless given: none for
    the first version, :data:`WITH_CLUSTER` for the others)."""
    sealed = Sealed(key_id=credential.key_id, nonce=credential.nonce, ciphertext=credential.ciphertext)
    if settings is None:
        settings = {} if credential.version == 1 else WITH_CLUSTER
    aad = associated_data(
        credential.connection_id,
        credential.field,
        credential.version if version is None else version,
        config_digest("confluent_cloud", settings),
    )
    return cipher.open(sealed, aad).reveal()


async def events_of(db: Database, connection_id: str, action: str | None = None) -> list[AuditEvent]:
    async with db.read() as tx:
        statement = (
            select(AuditEvent).where(AuditEvent.connection_id == connection_id).order_by(AuditEvent.id)
        )
        events = list(await tx.session.scalars(statement))
    return [e for e in events if action is None or e.action == action]


async def verifications_of(db: Database, connection_id: str) -> list[VerificationRecord]:
    async with db.read() as tx:
        statement = (
            select(VerificationRecord)
            .where(VerificationRecord.connection_id == connection_id)
            .order_by(VerificationRecord.created_at, VerificationRecord.id)
        )
        return list(await tx.session.scalars(statement))


def columns(model: Any) -> dict[str, Any]:
    return {column.key: getattr(model, column.key) for column in type(model).__table__.columns}


async def state(db: Database, connection_id: str) -> dict[str, Any]:
    """Every column of the connection and its rotations, its ciphertexts and its audit trail."""
    return {
        "connection": columns(await row(db, connection_id)),
        "rotations": [columns(r) for r in await rotations_of(db, connection_id)],
        "credentials": [
            (c.id, c.version, c.field, bytes(c.ciphertext)) for c in await credentials_of(db, connection_id)
        ],
        "events": [(e.id, e.action) for e in await events_of(db, connection_id)],
        "verifications": [v.id for v in await verifications_of(db, connection_id)],
    }


def audit_text(events: list[AuditEvent]) -> str:
    return "\n".join(repr(columns(e)) for e in events)


# --- may_rotate ----------------------------------------------------------------------------------


async def test_the_owner_may_rotate_without_a_group_lookup(
    submissions: Submissions, active: str, account: tuple[str, str], directory: MemoryDirectory
) -> None:
    by_id = await submissions.may_rotate(TEAM, OWNER_ID, connection_id=active)
    by_name = await submissions.may_rotate(TEAM, OWNER_ID, name="  PROD kafka ")

    for target in (by_id, by_name):
        assert isinstance(target, RotationTarget), target
        assert (target.connection.id, target.connection.name) == (active, "Prod Kafka")
        assert target.connection.status is Status.ACTIVE
        assert target.connection.key_hint == mask_hint(account[0])
        assert target.provider.key == "confluent_cloud"
        assert target.config == {}
    assert directory.lookups == 0, "the owner needs no lookup"
    # Nor does a failing directory stand in the owner's way.
    directory.failure = "ratelimited"
    assert isinstance(await submissions.may_rotate(TEAM, OWNER_ID, connection_id=active), RotationTarget)


@pytest.mark.parametrize("actor", [ADMIN, GROUP_MEMBER], ids=["listed-admin", "group-admin"])
async def test_an_admin_may_rotate_a_connection_someone_else_added(
    submissions: Submissions, active: str, actor: str, directory: MemoryDirectory
) -> None:
    target = await submissions.may_rotate(TEAM, actor, connection_id=active)

    assert isinstance(target, RotationTarget), target
    assert target.connection.id == active and target.connection.created_by == OWNER_ID
    assert directory.lookups == (1 if actor == GROUP_MEMBER else 0)


async def test_anyone_else_is_refused(submissions: Submissions, active: str, db: Database) -> None:
    before = await state(db, active)

    refused = await submissions.may_rotate(TEAM, OUTSIDER, connection_id=active)

    assert isinstance(refused, Refused)
    assert refused.reason is Refusal.NOT_ALLOWED
    assert "Only the person who added this connection, or an admin of connections, can rotate it" in (
        refused.message
    )
    assert await state(db, active) == before


async def test_a_failing_directory_refuses_a_group_admin_and_says_why(
    submissions: Submissions, active: str, directory: MemoryDirectory
) -> None:
    directory.failure = "ratelimited"

    refused = await submissions.may_rotate(TEAM, GROUP_MEMBER, connection_id=active)

    assert isinstance(refused, Refused)
    assert refused.reason is Refusal.CHECK_FAILED
    assert f"{UNCHECKED}: ratelimited" in refused.message
    directory.failure = None
    assert isinstance(await submissions.may_rotate(TEAM, GROUP_MEMBER, connection_id=active), RotationTarget)


async def test_connections_that_are_not_active_cannot_be_rotated(
    submissions: Submissions,
    approvals: ApprovalService,
    removal: RemovalService,
    account: tuple[str, str],
    active: str,
) -> None:
    waiting = await submissions.submit(create_request("Waiting Kafka", form(*account), user_id=OWNER_ID))
    turned_down = await submissions.submit(create_request("Rejected Kafka", form(*account), user_id=OWNER_ID))
    assert waiting.request_id is not None and turned_down.request_id is not None
    await approvals.reject(CONNECTION, TEAM, turned_down.request_id, ADMIN, "wrong org")
    assert not isinstance(await removal.remove(TEAM, active, OWNER_ID), Refused)
    cases = [
        (waiting.request_id, "“Waiting Kafka” is awaiting approval"),
        (turned_down.request_id, "“Rejected Kafka” is rejected"),
        (active, "“Prod Kafka” is revoked"),
    ]

    for connection_id, told in cases:
        for actor in (OWNER_ID, ADMIN):
            refused = await submissions.may_rotate(TEAM, actor, connection_id=connection_id)
            assert isinstance(refused, Refused), (connection_id, refused)
            assert refused.reason is Refusal.WRONG_STATUS
            assert refused.message.startswith(told), refused.message
            assert "only active connections can be rotated" in refused.message
    # A pending connection holds its name, so it is found by name too.
    by_name = await submissions.may_rotate(TEAM, OWNER_ID, name="waiting kafka")
    assert isinstance(by_name, Refused) and by_name.reason is Refusal.WRONG_STATUS


async def test_a_second_rotation_is_refused_while_one_waits(
    submissions: Submissions,
    pending: str,
    active: str,
    fake: FakeConfluent,
    spare_account: tuple[str, str],
    db: Database,
) -> None:
    before = await state(db, active)
    requests_before = len(fake.requests)

    refusals = {
        actor: await submissions.may_rotate(TEAM, actor, connection_id=active) for actor in (OWNER_ID, ADMIN)
    }
    for refused in refusals.values():
        assert isinstance(refused, Refused)
        assert refused.reason is Refusal.ROTATION_PENDING
        assert "A rotation of “Prod Kafka” is already waiting" in refused.message

    outcome = await rotate(submissions, active, form(*spare_account))  # by the owner

    owners = refusals[OWNER_ID]
    assert isinstance(owners, Refused) and outcome.problem == owners.message, "the ROTATION_PENDING refusal"
    assert (outcome.verification, outcome.request_id, stored(outcome)) == (None, None, False)
    assert len(fake.requests) == requests_before, "refused before any provider call"
    assert await state(db, active) == before


async def test_unknown_names_and_other_workspaces_connections_are_not_found(
    submissions: Submissions,
    approvals: ApprovalService,
    clock: HandClock,
    account: tuple[str, str],
    active: str,
) -> None:
    theirs = await make_active(submissions, approvals, clock, account, "Their Kafka", team_id=OTHER_TEAM)

    unknown_name = await submissions.may_rotate(TEAM, OWNER_ID, name="Staging Kafka")
    unknown_id = await submissions.may_rotate(TEAM, ADMIN, connection_id=str(uuid.uuid4()))
    their_id = await submissions.may_rotate(TEAM, OWNER_ID, connection_id=theirs)
    their_id_admin = await submissions.may_rotate(TEAM, ADMIN, connection_id=theirs)
    their_name = await submissions.may_rotate(TEAM, OWNER_ID, name="Their Kafka")
    ours_from_there = await submissions.may_rotate(OTHER_TEAM, OWNER_ID, connection_id=active)

    for refused in (unknown_name, unknown_id, their_id, their_id_admin, their_name, ours_from_there):
        assert isinstance(refused, Refused), refused
        assert refused.reason is Refusal.NOT_FOUND
        assert refused.message.startswith("There is no ") and "in this workspace" in refused.message
    assert isinstance(unknown_name, Refused) and "named “Staging Kafka”" in unknown_name.message
    assert isinstance(unknown_id, Refused) and "no such connection" in unknown_id.message
    assert isinstance(
        await submissions.may_rotate(OTHER_TEAM, OWNER_ID, connection_id=theirs), RotationTarget
    )


# --- request -------------------------------------------------------------------------------------


async def test_a_working_new_key_is_stored_beside_the_old_one_until_approved(
    submissions: Submissions,
    active: str,
    account: tuple[str, str],
    new_account: tuple[str, str],
    cipher: Cipher,
    db: Database,
    clock: HandClock,
) -> None:
    before = await row(db, active)
    old_credentials = await credentials_of(db, active)
    assert by_version(old_credentials) == {1: ["api_key", "api_secret"]}

    outcome = await rotate(submissions, active, new_values(new_account))

    assert outcome.problem is None and stored(outcome) and outcome.request_id is not None
    assert outcome.verification is not None and outcome.verification.outcome is Outcome.OK
    [rotation] = await rotations_of(db, active)
    assert rotation.id == outcome.request_id
    assert (rotation.team_id, rotation.version, rotation.requested_by) == (TEAM, 2, OWNER_ID)
    assert rotation.status is RotationStatus.PENDING_APPROVAL
    assert rotation.key_hint == mask_hint(new_account[0])
    assert rotation.config == {"rest_endpoint": REST, "cluster_id": CLUSTER}
    assert (rotation.created_at, rotation.decided_by, rotation.decided_at) == (ROTATE_AT, None, None)

    credentials = await credentials_of(db, active)
    assert by_version(credentials) == {1: ["api_key", "api_secret"], 2: ["api_key", "api_secret"]}
    old = [c for c in credentials if c.version == 1]
    assert [(c.id, bytes(c.ciphertext)) for c in old] == [
        (c.id, bytes(c.ciphertext)) for c in old_credentials
    ]
    assert [opened(cipher, c) for c in old] == list(account)
    new = [c for c in credentials if c.version == 2]
    assert [opened(cipher, c) for c in new] == list(new_account)
    for credential in new:
        with pytest.raises(DecryptionError):  # bound to version 2, not to the version in use
            opened(cipher, credential, version=1)

    [created, verified] = await verifications_of(db, active)
    assert created.trigger == Trigger.CREATE.value
    assert (verified.trigger, verified.actor, verified.outcome) == ("rotation", OWNER_ID, Outcome.OK)
    assert [c["name"] for c in verified.checks] == [c.name for c in outcome.verification.checks]

    [event] = await events_of(db, active, "connection.rotation_requested")
    assert (event.team_id, event.actor, event.created_at, event.reason) == (TEAM, OWNER_ID, ROTATE_AT, None)
    assert (event.before_status, event.after_status) == (Status.ACTIVE, Status.ACTIVE)
    assert event.details == {"name": "Prod Kafka", "provider": "confluent_cloud"}

    after = await row(db, active)
    assert after.credential_version == before.credential_version == 1
    assert after.key_hint == before.key_hint == mask_hint(account[0])
    assert after.config == before.config == {}
    assert after.credential_created_at == before.credential_created_at == START
    assert clock.now == ROTATE_AT


async def test_the_waiting_rotation_is_described_with_its_checks(
    submissions: Submissions,
    approvals: ApprovalService,
    active: str,
    account: tuple[str, str],
    new_account: tuple[str, str],
) -> None:
    outcome = await rotate(submissions, active, new_values(new_account), actor=ADMIN)
    assert outcome.request_id is not None and outcome.verification is not None

    described = await approvals.describe(ROTATION, TEAM, outcome.request_id)
    waiting = await submissions.pending_rotation(TEAM, active)

    assert described is not None and described == waiting
    assert (described.id, described.team_id, described.requested_by) == (outcome.request_id, TEAM, ADMIN)
    assert (described.requested_at, described.status) == (ROTATE_AT, RotationStatus.PENDING_APPROVAL)
    assert described.new_key_hint == mask_hint(new_account[0])
    assert described.connection.key_hint == mask_hint(account[0]), "the key in use is still the old one"
    assert described.connection.id == active and described.connection.created_by == OWNER_ID
    assert described.checks == outcome.verification.checks
    assert any(CLUSTER in check.name for check in described.checks), "the cluster was checked too"
    assert (described.decided_by, described.decided_at, described.reason) == (None, None, None)
    assert (described.message_channel, described.message_ts) == (None, None)
    assert await approvals.describe(ROTATION, OTHER_TEAM, outcome.request_id) is None
    assert await approvals.describe(ROTATION, TEAM, str(uuid.uuid4())) is None
    assert await submissions.pending_rotation(OTHER_TEAM, active) is None


async def test_a_new_key_that_does_not_work_stores_nothing_but_an_audit_event(
    submissions: Submissions, active: str, db: Database
) -> None:
    before = await state(db, active)
    bad_key, bad_secret = new_api_key(), new_api_secret()  # unknown to the fake: 401

    outcome = await rotate(submissions, active, form(bad_key, bad_secret))

    assert outcome.verification is not None and outcome.verification.outcome is Outcome.UNAUTHORIZED
    assert (outcome.request_id, outcome.problem, stored(outcome)) == (None, None, False)
    after = await state(db, active)
    assert after["connection"] == before["connection"]
    assert after["rotations"] == [] and after["credentials"] == before["credentials"]
    assert after["verifications"] == before["verifications"]
    [event] = await events_of(db, active, "connection.rotation_failed")
    assert (event.actor, event.reason, event.created_at) == (OWNER_ID, "unauthorized", ROTATE_AT)
    assert event.details == {"name": "Prod Kafka", "provider": "confluent_cloud"}
    assert bad_secret not in audit_text(await events_of(db, active))
    assert await submissions.pending_rotation(TEAM, active) is None


async def test_a_request_from_someone_else_is_refused_before_the_provider_is_asked(
    submissions: Submissions,
    active: str,
    new_account: tuple[str, str],
    fake: FakeConfluent,
    db: Database,
) -> None:
    before = await state(db, active)
    requests_before = len(fake.requests)

    outcome = await rotate(submissions, active, new_values(new_account), actor=OUTSIDER)

    refused = await submissions.may_rotate(TEAM, OUTSIDER, connection_id=active)
    assert isinstance(refused, Refused) and refused.reason is Refusal.NOT_ALLOWED
    assert outcome.problem == refused.message
    assert (outcome.verification, stored(outcome)) == (None, False)
    assert len(fake.requests) == requests_before
    assert await state(db, active) == before


async def test_a_connection_removed_while_the_new_key_is_verified_keeps_nothing(
    submissions: Submissions,
    removal: RemovalService,
    active: str,
    new_account: tuple[str, str],
    fake: FakeConfluent,
    db: Database,
) -> None:
    fake.hold()
    try:
        requested = asyncio.create_task(rotate(submissions, active, new_values(new_account)))
        await fake.wait_until_held()
        assert not isinstance(await removal.remove(TEAM, active, ADMIN), Refused)
    finally:
        fake.release()
    outcome = await requested

    assert outcome.verification is not None and outcome.verification.ok
    assert outcome.problem is not None and "removed meanwhile" in outcome.problem
    assert outcome.request_id is None
    assert await rotations_of(db, active) == []
    assert await credentials_of(db, active) == []
    assert await events_of(db, active, "connection.rotation_requested") == []


async def test_two_requests_at_once_store_one_rotation(
    submissions: Submissions,
    active: str,
    new_account: tuple[str, str],
    spare_account: tuple[str, str],
    fake: FakeConfluent,
    cipher: Cipher,
    db: Database,
) -> None:
    fake.hold()
    try:
        # Both are past may_rotate (nothing waits yet) once both are at the provider.
        tasks = [
            asyncio.create_task(rotate(submissions, active, new_values(new_account))),
            asyncio.create_task(rotate(submissions, active, form(*spare_account), actor=ADMIN)),
        ]
        await fake.wait_until_held(2)
    finally:
        fake.release()
    outcomes = await asyncio.gather(*tasks)

    kept = [o for o in outcomes if stored(o)]
    refused = [o for o in outcomes if o.problem is not None]
    assert (len(kept), len(refused)) == (1, 1), outcomes
    assert refused[0].problem == ROTATED_MEANWHILE
    [rotation] = await rotations_of(db, active)
    assert rotation.id == kept[0].request_id
    winner = new_account if kept[0] is outcomes[0] else spare_account
    credentials = await credentials_of(db, active)
    assert by_version(credentials) == {
        1: ["api_key", "api_secret"],
        rotation.version: ["api_key", "api_secret"],
    }
    settings = WITH_CLUSTER if winner == new_account else {}
    assert [
        opened(cipher, c, settings=settings) for c in credentials if c.version == rotation.version
    ] == list(winner)
    assert len(await events_of(db, active, "connection.rotation_requested")) == 1


async def test_the_request_message_is_remembered_in_its_workspace_only(
    pending: str, approvals: ApprovalService
) -> None:
    await approvals.record_message(ROTATION, OTHER_TEAM, pending, "C0OTHERS01", "1700000000.000900")
    described = await approvals.describe(ROTATION, TEAM, pending)
    assert described is not None and (described.message_channel, described.message_ts) == (None, None)

    await approvals.record_message(ROTATION, TEAM, pending, "C0ADMINS01", "1700000000.000100")
    await approvals.record_message(ROTATION, TEAM, str(uuid.uuid4()), "C0ADMINS01", "1700000000.000200")

    described = await approvals.describe(ROTATION, TEAM, pending)
    approved = await approvals.approve(ROTATION, TEAM, pending, ADMIN)
    again = await approvals.approve(ROTATION, TEAM, pending, SECOND_ADMIN)
    assert described is not None and approved.request is not None and again.request is not None
    for summary in (described, approved.request, again.request):
        assert (summary.message_channel, summary.message_ts) == ("C0ADMINS01", "1700000000.000100")


# --- may_decide ----------------------------------------------------------------------------------


async def test_may_decide_reports_every_refusal_without_changing_anything(
    submissions: Submissions,
    pending: str,
    active: str,
    approvals: ApprovalService,
    clock: HandClock,
    account: tuple[str, str],
    new_account: tuple[str, str],
    directory: MemoryDirectory,
    db: Database,
) -> None:
    own_connection = await make_active(submissions, approvals, clock, account, "Own Kafka", at=ROTATE_AT)
    own = await request_ok(submissions, own_connection, form(*new_account), actor=ADMIN)
    clock.now = DECIDE_AT
    before = [await state(db, active), await state(db, own_connection)]

    allowed = await approvals.may_decide(ROTATION, TEAM, pending, ADMIN)
    group = await approvals.may_decide(ROTATION, TEAM, pending, GROUP_MEMBER)
    owner = await approvals.may_decide(ROTATION, TEAM, pending, OWNER_ID)
    self_approval = await approvals.may_decide(ROTATION, TEAM, own, ADMIN)
    elsewhere = await approvals.may_decide(ROTATION, OTHER_TEAM, pending, ADMIN)
    unknown = await approvals.may_decide(ROTATION, TEAM, str(uuid.uuid4()), ADMIN)
    directory.failure = "timeout"
    unchecked = await approvals.may_decide(ROTATION, TEAM, pending, GROUP_MEMBER)

    assert allowed.verdict is Verdict.ALLOWED and allowed.admin is not None and allowed.admin.why == LISTED
    assert allowed.request is not None and allowed.request.id == pending and allowed.request.pending
    assert group.verdict is Verdict.ALLOWED and group.admin is not None and group.admin.why == MEMBER
    assert owner.verdict is Verdict.NOT_ADMIN and owner.request is None, "owning is not approving"
    assert self_approval.verdict is Verdict.SELF_APPROVAL
    assert self_approval.request is not None and self_approval.request.requested_by == ADMIN
    assert elsewhere.verdict is Verdict.NOT_FOUND and elsewhere.request is None
    assert unknown.verdict is Verdict.NOT_FOUND
    assert unchecked.verdict is Verdict.ADMIN_CHECK_FAILED
    assert unchecked.admin is not None and unchecked.admin.failed_closed
    assert [await state(db, active), await state(db, own_connection)] == before


# --- approve -------------------------------------------------------------------------------------


async def test_an_approval_swaps_in_the_new_credential_and_destroys_the_old_one(
    submissions: Submissions,
    pending: str,
    active: str,
    account: tuple[str, str],
    new_account: tuple[str, str],
    cipher: Cipher,
    db: Database,
    migrated_database_url: str,
    approvals: ApprovalService,
) -> None:
    new_before = [(c.id, bytes(c.ciphertext)) for c in await credentials_of(db, active) if c.version == 2]

    decision = await approvals.approve(ROTATION, TEAM, pending, ADMIN)

    assert decision.verdict is Verdict.DECIDED
    assert decision.admin is not None and decision.admin.why == LISTED
    summary = decision.request
    assert summary is not None and summary.id == pending
    assert (summary.status, summary.decided_by, summary.decided_at, summary.reason) == (
        RotationStatus.APPROVED,
        ADMIN,
        DECIDE_AT,
        None,
    )
    assert summary.connection.key_hint == summary.new_key_hint == mask_hint(new_account[0])
    assert summary.connection.credential_created_at == DECIDE_AT

    connection = await row(db, active)
    assert connection.status is Status.ACTIVE
    assert connection.credential_version == 2
    assert connection.key_hint == mask_hint(new_account[0])
    assert connection.config == {"rest_endpoint": REST, "cluster_id": CLUSTER}
    assert connection.credential_created_at == DECIDE_AT
    assert connection.next_check_at == DECIDE_AT, "the new credential is re-tested at once"
    assert (connection.rotation_reminded_at, connection.updated_at) == (None, DECIDE_AT)

    credentials = await credentials_of(db, active)
    assert by_version(credentials) == {2: ["api_key", "api_secret"]}
    assert [(c.id, bytes(c.ciphertext)) for c in credentials] == new_before
    assert [opened(cipher, c) for c in credentials] == list(new_account)

    rotation = await rotation_row(db, pending)
    assert (rotation.status, rotation.decided_by, rotation.decided_at) == (
        RotationStatus.APPROVED,
        ADMIN,
        DECIDE_AT,
    )
    assert await submissions.pending_rotation(TEAM, active) is None

    [event] = await events_of(db, active, "connection.rotated")
    assert (event.team_id, event.actor, event.created_at, event.reason) == (TEAM, ADMIN, DECIDE_AT, None)
    assert (event.before_status, event.after_status) == (Status.ACTIVE, Status.ACTIVE)
    assert event.details == {
        "name": "Prod Kafka",
        "provider": "confluent_cloud",
        "rotation": pending,
        "version": 2,
    }

    everything = dump_database_text(migrated_database_url)
    for value in (*account, new_account[1]):
        assert value not in everything


async def test_a_group_admin_may_approve(
    pending: str,
    active: str,
    directory: MemoryDirectory,
    db: Database,
    approvals: ApprovalService,
) -> None:
    decision = await approvals.approve(ROTATION, TEAM, pending, GROUP_MEMBER)

    assert decision.verdict is Verdict.DECIDED
    assert decision.admin is not None and decision.admin.why == MEMBER
    assert (await row(db, active)).credential_version == 2
    [event] = await events_of(db, active, "connection.rotated")
    assert event.actor == GROUP_MEMBER


@pytest.mark.parametrize("second_actor", [ADMIN, SECOND_ADMIN], ids=["double-click", "another-admin"])
async def test_a_second_approval_learns_who_decided_first(
    pending: str,
    active: str,
    db: Database,
    clock: HandClock,
    second_actor: str,
    approvals: ApprovalService,
) -> None:
    first = await approvals.approve(ROTATION, TEAM, pending, ADMIN)
    after_first = await state(db, active)
    clock.now = DECIDE_AT + timedelta(minutes=5)

    second = await approvals.approve(ROTATION, TEAM, pending, second_actor)
    late_rejection = await approvals.reject(ROTATION, TEAM, pending, second_actor, "too late")

    assert first.verdict is Verdict.DECIDED
    for late in (second, late_rejection):
        assert late.verdict is Verdict.ALREADY_DECIDED
        assert late.request is not None
        assert (late.request.status, late.request.decided_by, late.request.decided_at) == (
            RotationStatus.APPROVED,
            ADMIN,
            DECIDE_AT,
        )
    assert await state(db, active) == after_first
    assert len(await events_of(db, active, "connection.rotated")) == 1


async def test_who_asked_for_the_rotation_cannot_approve_it(
    submissions: Submissions,
    active: str,
    new_account: tuple[str, str],
    clock: HandClock,
    db: Database,
    approvals: ApprovalService,
) -> None:
    rotation_id = await request_ok(submissions, active, new_values(new_account), actor=ADMIN)
    clock.now = DECIDE_AT
    before = await state(db, active)

    own = await approvals.approve(ROTATION, TEAM, rotation_id, ADMIN)
    own_rejection = await approvals.reject(ROTATION, TEAM, rotation_id, ADMIN, "changed my mind")

    for refused in (own, own_rejection):
        assert refused.verdict is Verdict.SELF_APPROVAL
        assert refused.request is not None and refused.request.requested_by == ADMIN
        assert refused.request.status is RotationStatus.PENDING_APPROVAL
    assert await state(db, active) == before
    assert (await approvals.approve(ROTATION, TEAM, rotation_id, SECOND_ADMIN)).verdict is Verdict.DECIDED


async def test_self_approval_is_allowed_when_configured(
    db: Database,
    submissions: Submissions,
    providers: ProviderRegistry,
    directory: MemoryDirectory,
    clock: HandClock,
    active: str,
    new_account: tuple[str, str],
) -> None:
    permissive = ApprovalService(
        db, providers, new_policy(directory), ttl=TTL, allow_self_approval=True, clock=clock
    )
    rotation_id = await request_ok(submissions, active, new_values(new_account), actor=ADMIN)

    decision = await permissive.approve(ROTATION, TEAM, rotation_id, ADMIN)

    assert decision.verdict is Verdict.DECIDED
    assert (await row(db, active)).credential_version == 2


@pytest.mark.parametrize("actor", [OUTSIDER, OWNER_ID], ids=["outsider", "owner"])
async def test_someone_who_is_not_an_admin_changes_nothing(
    pending: str, active: str, db: Database, actor: str, approvals: ApprovalService
) -> None:
    before = await state(db, active)

    approved = await approvals.approve(ROTATION, TEAM, pending, actor)
    rejected = await approvals.reject(ROTATION, TEAM, pending, actor, "no")

    for decision in (approved, rejected):
        assert decision.verdict is Verdict.NOT_ADMIN
        assert decision.request is None, "a non-admin learns nothing about the rotation"
        assert decision.admin is not None and not decision.admin.allowed and not decision.admin.failed_closed
    assert await state(db, active) == before


async def test_when_the_directory_cannot_be_asked_the_decision_is_refused(
    pending: str,
    active: str,
    directory: MemoryDirectory,
    db: Database,
    approvals: ApprovalService,
) -> None:
    directory.failure = "ratelimited"
    before = await state(db, active)

    decision = await approvals.approve(ROTATION, TEAM, pending, GROUP_MEMBER)

    assert decision.verdict is Verdict.ADMIN_CHECK_FAILED
    assert decision.admin is not None and decision.admin.failed_closed
    assert await state(db, active) == before
    directory.failure = None
    assert (await approvals.approve(ROTATION, TEAM, pending, GROUP_MEMBER)).verdict is Verdict.DECIDED


async def test_another_workspaces_rotation_is_not_found(
    pending: str, active: str, db: Database, approvals: ApprovalService
) -> None:
    before = await state(db, active)

    approved = await approvals.approve(ROTATION, OTHER_TEAM, pending, ADMIN)
    rejected = await approvals.reject(ROTATION, OTHER_TEAM, pending, ADMIN, "not ours")
    unknown = await approvals.approve(ROTATION, TEAM, str(uuid.uuid4()), ADMIN)

    for decision in (approved, rejected, unknown):
        assert decision.verdict is Verdict.NOT_FOUND and decision.request is None
    assert await state(db, active) == before


# --- reject --------------------------------------------------------------------------------------


async def test_a_rejection_destroys_the_new_ciphertexts_and_keeps_the_old_in_use(
    submissions: Submissions,
    pending: str,
    active: str,
    account: tuple[str, str],
    new_account: tuple[str, str],
    cipher: Cipher,
    db: Database,
    migrated_database_url: str,
    approvals: ApprovalService,
) -> None:
    connection_before = columns(await row(db, active))
    old_before = [(c.id, bytes(c.ciphertext)) for c in await credentials_of(db, active) if c.version == 1]

    decision = await approvals.reject(
        ROTATION, TEAM, pending, ADMIN, "  \n The key belongs to the wrong org.\t "
    )

    reason = "The key belongs to the wrong org."
    assert decision.verdict is Verdict.DECIDED
    assert decision.request is not None
    assert (decision.request.status, decision.request.decided_by, decision.request.reason) == (
        RotationStatus.REJECTED,
        ADMIN,
        reason,
    )
    assert decision.request.connection.key_hint == mask_hint(account[0])
    rotation = await rotation_row(db, pending)
    assert (rotation.status, rotation.decision_reason, rotation.decided_at) == (
        RotationStatus.REJECTED,
        reason,
        DECIDE_AT,
    )
    assert columns(await row(db, active)) == connection_before, "the old credential stays in use"
    credentials = await credentials_of(db, active)
    assert [(c.id, bytes(c.ciphertext)) for c in credentials] == old_before
    assert [opened(cipher, c) for c in credentials] == list(account)
    [event] = await events_of(db, active, "connection.rotation_rejected")
    assert (event.actor, event.reason, event.created_at) == (ADMIN, reason, DECIDE_AT)
    assert event.details["rotation"] == pending and event.details["version"] == 2
    assert await submissions.pending_rotation(TEAM, active) is None
    assert new_account[1] not in dump_database_text(migrated_database_url)


async def test_a_long_reason_is_trimmed_then_capped(
    pending: str, db: Database, approvals: ApprovalService
) -> None:
    decision = await approvals.reject(
        ROTATION, TEAM, pending, ADMIN, "  " + "x" * (REASON_MAX_LENGTH + 50) + " "
    )

    assert decision.request is not None and decision.request.reason == "x" * REASON_MAX_LENGTH
    assert (await rotation_row(db, pending)).decision_reason == "x" * REASON_MAX_LENGTH


@pytest.mark.parametrize("reason", ["", "   ", "\n\t "], ids=["empty", "spaces", "whitespace"])
async def test_a_rejection_without_a_reason_is_refused_and_changes_nothing(
    pending: str, active: str, db: Database, reason: str, approvals: ApprovalService
) -> None:
    before = await state(db, active)

    with pytest.raises(ValueError, match="reason"):
        await approvals.reject(ROTATION, TEAM, pending, ADMIN, reason)

    assert await state(db, active) == before


async def test_after_a_rejection_a_new_rotation_gets_a_fresh_version(
    submissions: Submissions,
    pending: str,
    active: str,
    spare_account: tuple[str, str],
    cipher: Cipher,
    clock: HandClock,
    db: Database,
    approvals: ApprovalService,
) -> None:
    await approvals.reject(ROTATION, TEAM, pending, ADMIN, "wrong org")
    assert isinstance(await submissions.may_rotate(TEAM, OWNER_ID, connection_id=active), RotationTarget)

    again = await request_ok(submissions, active, form(*spare_account))

    assert (await rotation_row(db, again)).version == 3, "version 2 was used by the rejected rotation"
    assert by_version(await credentials_of(db, active)) == {
        1: ["api_key", "api_secret"],
        3: ["api_key", "api_secret"],
    }
    clock.now = DECIDE_AT + timedelta(hours=1)
    assert (await approvals.approve(ROTATION, TEAM, again, ADMIN)).verdict is Verdict.DECIDED
    connection = await row(db, active)
    assert (connection.credential_version, connection.key_hint) == (3, mask_hint(spare_account[0]))
    credentials = await credentials_of(db, active)
    assert [(c.version, opened(cipher, c, settings={})) for c in credentials] == [
        (3, value) for value in spare_account
    ]
    assert [r.status for r in await rotations_of(db, active)] == [
        RotationStatus.REJECTED,
        RotationStatus.APPROVED,
    ]


async def test_after_an_approval_the_next_rotation_follows_the_version_in_use(
    submissions: Submissions,
    pending: str,
    active: str,
    spare_account: tuple[str, str],
    clock: HandClock,
    db: Database,
    approvals: ApprovalService,
) -> None:
    await approvals.approve(ROTATION, TEAM, pending, ADMIN)
    clock.now = DECIDE_AT + timedelta(days=1)

    again = await request_ok(submissions, active, form(*spare_account))
    assert (await rotation_row(db, again)).version == 3
    assert by_version(await credentials_of(db, active)) == {
        2: ["api_key", "api_secret"],
        3: ["api_key", "api_secret"],
    }
    clock.now += timedelta(minutes=1)
    await approvals.approve(ROTATION, TEAM, again, SECOND_ADMIN)
    assert by_version(await credentials_of(db, active)) == {3: ["api_key", "api_secret"]}
    assert (await row(db, active)).config == {}, "the latest rotation named no cluster"


# --- expiry --------------------------------------------------------------------------------------


async def test_rotations_expire_only_once_their_ttl_has_passed(
    submissions: Submissions,
    pending: str,
    active: str,
    approvals: ApprovalService,
    account: tuple[str, str],
    spare_account: tuple[str, str],
    cipher: Cipher,
    clock: HandClock,
    db: Database,
) -> None:
    elsewhere = await make_active(submissions, approvals, clock, account, "Their Kafka", team_id=OTHER_TEAM)
    clock.now = ROTATE_AT
    theirs = await request_ok(submissions, elsewhere, form(*spare_account), team_id=OTHER_TEAM)
    young_connection = await make_active(submissions, approvals, clock, account, "Young Kafka", at=ROTATE_AT)
    clock.now = ROTATE_AT + timedelta(hours=1)
    young = await request_ok(submissions, young_connection, form(*spare_account))
    connection_before = columns(await row(db, active))

    assert await approvals.expire_overdue(ROTATE_AT + TTL) == []
    now = ROTATE_AT + TTL + timedelta(microseconds=1)
    expired = await approvals.expire_overdue(now)

    assert sorted(d.request.id for d in expired if d.request is not None) == sorted([pending, theirs])
    for decision in expired:
        assert decision.verdict is Verdict.DECIDED and decision.request is not None
        assert decision.request.status is RotationStatus.EXPIRED
        assert (decision.request.decided_by, decision.request.decided_at) == (None, now)
    assert (await rotation_row(db, young)).status is RotationStatus.PENDING_APPROVAL
    assert columns(await row(db, active)) == connection_before
    credentials = await credentials_of(db, active)
    assert by_version(credentials) == {1: ["api_key", "api_secret"]}
    assert [opened(cipher, c) for c in credentials] == list(account)
    assert by_version(await credentials_of(db, young_connection)) == {
        1: ["api_key", "api_secret"],
        2: ["api_key", "api_secret"],
    }
    [event] = await events_of(db, active, "connection.rotation_expired")
    assert (event.actor, event.created_at) == (SYSTEM_ACTOR, now)
    assert await approvals.expire_overdue(now + timedelta(minutes=30)) == [], "each expires once"
    # The connection can be rotated again.
    assert isinstance(await submissions.may_rotate(TEAM, OWNER_ID, connection_id=active), RotationTarget)


async def test_the_clock_is_read_when_no_time_is_given(
    pending: str, clock: HandClock, db: Database, approvals: ApprovalService
) -> None:
    clock.now = ROTATE_AT + TTL - timedelta(seconds=1)
    assert await approvals.expire_overdue() == []
    clock.now = ROTATE_AT + TTL + timedelta(seconds=1)
    [decision] = await approvals.expire_overdue()
    assert decision.request is not None and decision.request.decided_at == clock.now
    assert (await rotation_row(db, pending)).status is RotationStatus.EXPIRED


@pytest.mark.parametrize("decide", ["approve", "reject"])
async def test_a_click_on_an_overdue_rotation_expires_it_instead(
    pending: str,
    active: str,
    clock: HandClock,
    db: Database,
    decide: str,
    approvals: ApprovalService,
) -> None:
    clock.now = ROTATE_AT + TTL  # the periodic job has not run yet

    if decide == "approve":
        decision = await approvals.approve(ROTATION, TEAM, pending, ADMIN)
    else:
        decision = await approvals.reject(ROTATION, TEAM, pending, ADMIN, "no")

    assert decision.verdict is Verdict.EXPIRED
    assert decision.request is not None and decision.request.status is RotationStatus.EXPIRED
    assert decision.request.decided_by is None
    connection = await row(db, active)
    assert (connection.credential_version, connection.credential_created_at) == (1, START)
    assert by_version(await credentials_of(db, active)) == {1: ["api_key", "api_secret"]}
    assert await events_of(db, active, "connection.rotated") == []
    assert await events_of(db, active, "connection.rotation_rejected") == []
    assert len(await events_of(db, active, "connection.rotation_expired")) == 1
    late = await approvals.approve(ROTATION, TEAM, pending, SECOND_ADMIN)
    assert late.verdict is Verdict.ALREADY_DECIDED


# --- secrets -------------------------------------------------------------------------------------


async def test_no_secret_reaches_logs_audit_rows_summaries_or_refusals(
    submissions: Submissions,
    removal: RemovalService,
    active: str,
    account: tuple[str, str],
    new_account: tuple[str, str],
    spare_account: tuple[str, str],
    clock: HandClock,
    db: Database,
    caplog: pytest.LogCaptureFixture,
    approvals: ApprovalService,
) -> None:
    caplog.set_level(logging.DEBUG)
    shown: list[object] = []

    first = await rotate(submissions, active, new_values(new_account))
    assert first.request_id is not None
    shown += [
        first,
        await submissions.may_rotate(TEAM, OWNER_ID, connection_id=active),
        await rotate(submissions, active, form(*spare_account)),
        await rotate(submissions, active, form(*spare_account), actor=OUTSIDER),
        await approvals.describe(ROTATION, TEAM, first.request_id),
        await approvals.may_decide(ROTATION, TEAM, first.request_id, ADMIN),
    ]
    clock.now = DECIDE_AT
    shown.append(await approvals.approve(ROTATION, TEAM, first.request_id, ADMIN))
    shown.append(await approvals.approve(ROTATION, TEAM, first.request_id, SECOND_ADMIN))
    bad_secret = new_api_secret()
    shown.append(await rotate(submissions, active, form(spare_account[0], bad_secret)))
    second = await rotate(submissions, active, form(*spare_account), actor=ADMIN)
    assert second.request_id is not None
    shown += [second, await approvals.reject(ROTATION, TEAM, second.request_id, SECOND_ADMIN, "not now")]
    third = await rotate(submissions, active, form(*spare_account))
    assert third.request_id is not None
    shown += [third, await removal.remove(TEAM, active, OWNER_ID)]
    shown.append(await submissions.may_rotate(TEAM, OWNER_ID, connection_id=active))

    texts = {
        "logs": caplog.text,
        "audit": audit_text(await events_of(db, active)),
        "reprs": "\n".join(repr(item) for item in shown),
        "refusals": "\n".join(
            [item.message for item in shown if isinstance(item, Refused)]
            + [o.problem for o in shown if isinstance(o, SubmissionOutcome) and o.problem is not None]
        ),
    }
    assert "Refused(" in texts["reprs"] and "ApprovalRequest(" in texts["reprs"], "the reprs were made"
    assert caplog.records, "something was logged"
    for where, text in texts.items():
        for value in (*account, *new_account, *spare_account, bad_secret):
            assert value not in text, where
    assert isinstance(shown[-1], Refused) and shown[-1].reason is Refusal.WRONG_STATUS


# --- concurrency: two bot processes on one database ----------------------------------------------


class GatedRotations(RotationRepository):
    """A rotation repository that holds its transaction at a shared barrier right after the first
    read of the rotation, and reports the result of each conditional UPDATE.

    With both racers held there, each has read the rotation as waiting inside its own transaction
    (and holds no lock yet); whatever decides between them comes after."""

    def __init__(self, tx: UnitOfWork, gate: asyncio.Barrier, results: list[bool]) -> None:
        super().__init__(tx.session)
        self._gate = gate
        self._results = results
        self._held = False

    async def get(self, team_id: str, rotation_id: str) -> Rotation | None:
        found = await super().get(team_id, rotation_id)
        if not self._held:
            self._held = True
            async with asyncio.timeout(RACE_TIMEOUT):
                await self._gate.wait()
        return found

    async def transition(self, *args: Any, **kwargs: Any) -> bool:
        won = await super().transition(*args, **kwargs)
        self._results.append(won)
        return won


class GatedDatabase(Database):
    def __init__(self, url: str, gate: asyncio.Barrier, results: list[bool]) -> None:
        super().__init__(create_engine(url))
        self._gate = gate
        self._results = results

    @asynccontextmanager
    async def transaction(self, *, lock_wait_ms: int | None = None) -> AsyncIterator[UnitOfWork]:
        async with super().transaction(lock_wait_ms=lock_wait_ms) as tx:
            tx.rotations = GatedRotations(tx, self._gate, self._results)
            yield tx


RACES = pytest.mark.parametrize(
    ("database_url", "gated"),
    [
        # SQLite's BEGIN IMMEDIATE queues the second writer behind the first; racers held inside
        # their transactions would deadlock there, so only PostgreSQL holds them after their reads.
        pytest.param("sqlite", False, id="sqlite-started-together"),
        pytest.param("postgresql", False, id="postgresql-started-together", marks=pytest.mark.postgres),
        pytest.param("postgresql", True, id="postgresql-held-after-reading", marks=pytest.mark.postgres),
    ],
    indirect=["database_url"],
)


async def race(*calls: Callable[[], Awaitable[Decision]]) -> list[Decision]:
    start = asyncio.Barrier(len(calls))

    async def racer(call: Callable[[], Awaitable[Decision]]) -> Decision:
        async with asyncio.timeout(RACE_TIMEOUT):
            await start.wait()
        return await call()

    return list(await asyncio.gather(*(racer(call) for call in calls)))


@RACES
async def test_two_admins_approving_at_once_from_two_processes_decide_once(
    submissions: Submissions,
    approvals: ApprovalService,
    account: tuple[str, str],
    new_account: tuple[str, str],
    providers: ProviderRegistry,
    clock: HandClock,
    db: Database,
    migrated_database_url: str,
    gated: bool,
) -> None:
    results: list[bool] = []
    gate = asyncio.Barrier(2)
    databases = [
        GatedDatabase(migrated_database_url, gate, results)
        if gated
        else Database.from_url(migrated_database_url)
        for _ in range(2)
    ]
    try:
        first, second = (
            ApprovalService(database, providers, new_policy(MemoryDirectory({})), ttl=TTL, clock=clock)
            for database in databases
        )
        for round_number in range(ROUNDS):
            at = START + timedelta(days=round_number)
            connection_id = await make_active(
                submissions, approvals, clock, account, f"Kafka {round_number}", at=at
            )
            rotation_id = await request_ok(submissions, connection_id, form(*new_account))

            decisions = await race(
                partial(first.approve, ROTATION, TEAM, rotation_id, ADMIN),
                partial(second.approve, ROTATION, TEAM, rotation_id, SECOND_ADMIN),
            )

            verdicts = sorted(d.verdict.value for d in decisions)
            assert verdicts == sorted([Verdict.DECIDED.value, Verdict.ALREADY_DECIDED.value]), verdicts
            [winner] = [d for d in decisions if d.verdict is Verdict.DECIDED]
            [loser] = [d for d in decisions if d.verdict is Verdict.ALREADY_DECIDED]
            assert winner.request is not None and loser.request is not None
            assert loser.request.decided_by == winner.request.decided_by
            assert loser.request.status is RotationStatus.APPROVED
            [event] = await events_of(db, connection_id, "connection.rotated")
            assert event.actor == winner.request.decided_by
            assert (await row(db, connection_id)).credential_version == 2
            assert by_version(await credentials_of(db, connection_id)) == {2: ["api_key", "api_secret"]}
            if gated:
                assert sorted(results) == [False, True], "both read it waiting; one UPDATE lost"
                results.clear()
    finally:
        for database in databases:
            await database.dispose()
