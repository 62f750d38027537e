"""The claims that creations and rotations make before their verification, on SQLite and
PostgreSQL: a name is reserved from the submission on, the claim ends in the transaction that stores
the outcome (whatever it is), and an outcome whose claim a sweep took is dropped, not stored."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from bot.crypto import Cipher
from bot.domain import NAME_FIELD, Refusal, Refused, RequestKind, RotationStatus
from bot.providers.base import Outcome
from bot.providers.confluent_cloud import ConfluentCloud
from bot.providers.registry import ProviderRegistry
from bot.services.approvals import ApprovalService
from bot.services.interrupted import DEADLINE_GRACE, InterruptedVerifications, ProcessOwner
from bot.services.submissions import (
    ALREADY_ROTATING,
    DATABASE_BUSY,
    NAME_BEING_REGISTERED,
    NAME_TAKEN,
    ROTATION_BUSY,
    STALE_ROTATION,
    FormCheck,
    Submission,
    Submissions,
    Waiter,
)
from bot.store import AuditEvent, Connection, Credential, Database, KeyCanary, Rotation, VerificationRecord
from bot.store.models import InFlightKind, InFlightVerification
from tests.fakes.confluent_api import FakeConfluent, new_api_key, new_api_secret
from tests.unit.providers.test_confluent_cloud import confluent
from tests.unit.services.test_approvals import ADMIN, GROUP, OUTSIDER, MemoryDirectory, new_policy
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
from tests.unit.services.test_rotations import rotation

USER = "U0REQUEST1"
OTHER_USER = "U0REQUEST2"
OWNER = ProcessOwner(host="bot-1", pid=4242, instance="this-start")


class SameFormElsewhere(ConfluentCloud):
    """Another provider with the same fields: its form fits, but it is not the connection's."""

    key = "confluent_elsewhere"


@pytest.fixture
def clock() -> HandClock:
    return HandClock()


@pytest.fixture
def provider() -> ConfluentCloud:
    return confluent(api_url=API)


@pytest.fixture
def submissions(
    db: Database, cipher: Cipher, provider: ConfluentCloud, http: httpx.AsyncClient, clock: HandClock
) -> Submissions:
    policy = new_policy(MemoryDirectory({GROUP: set()}))
    return Submissions(db, cipher, ProviderRegistry((provider,)), http, policy, clock=clock, owner=OWNER)


@pytest.fixture
def account(fake: FakeConfluent) -> tuple[str, str]:
    key, secret = new_api_key(), new_api_secret()
    fake.add_cloud_key(key, secret, environments=2)
    return key, secret


async def claimed(
    submissions: Submissions,
    provider: ConfluentCloud,
    name: str,
    values: dict[str, Any],
    *,
    user_id: str = USER,
    view_id: str = "V0000VIEW1",
) -> FormCheck:
    return await submissions.check(
        RequestKind.CONNECTION, TEAM, provider, name, values, claim_for=Waiter(user_id, view_id)
    )


def request_of(check: FormCheck, provider: ConfluentCloud, user_id: str = USER) -> Submission:
    return create_request(
        check.name, check.values, user_id=user_id, provider=provider, claim_id=check.claim_id
    )


async def in_flight(db: Database) -> list[InFlightVerification]:
    async with db.read() as tx:
        return list(await tx.session.scalars(select(InFlightVerification)))


async def counts(db: Database) -> dict[str, int]:
    found = {}
    async with db.read() as tx:
        for model in (Connection, Credential, VerificationRecord, Rotation, AuditEvent, InFlightVerification):
            found[model.__tablename__] = int(
                await tx.session.scalar(select(func.count()).select_from(model)) or 0
            )
    return found


async def audit_actions(db: Database) -> list[str]:
    async with db.read() as tx:
        return list(await tx.session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))


async def sweep_everything(db: Database, clock: HandClock) -> None:
    """What another replica does once the claims' deadlines have passed."""
    later = clock.now + timedelta(hours=1)
    sweep = InterruptedVerifications(db, ProcessOwner(host="bot-2", pid=1), clock=lambda: later)
    assert await sweep.sweep_overdue()


# --- creating ------------------------------------------------------------------------------------


async def test_a_passing_form_claims_its_name_for_the_verification_to_come(
    db: Database, submissions: Submissions, provider: ConfluentCloud, account: tuple[str, str]
) -> None:
    check = await claimed(submissions, provider, "  Prod   Kafka ", form(*account, REST, CLUSTER))

    assert check.ok and check.claim_id is not None
    [row] = await in_flight(db)
    assert row.id == check.claim_id
    assert (row.kind, row.team_id, row.user_id, row.view_id, row.name, row.name_key) == (
        InFlightKind.CREATE,
        TEAM,
        USER,
        "V0000VIEW1",
        "Prod Kafka",
        "prod kafka",
    )
    assert (row.host, row.pid, row.instance) == (OWNER.host, OWNER.pid, OWNER.instance)
    assert row.started_at == START
    assert row.deadline == START + timedelta(seconds=provider.deadline_seconds) + DEADLINE_GRACE
    # The non-secret fields, to pre-fill a retry; never the key or the secret.
    assert row.config == {"rest_endpoint": REST, "cluster_id": CLUSTER}


async def test_a_second_submission_of_the_name_is_refused_while_the_first_is_verified(
    db: Database, submissions: Submissions, provider: ConfluentCloud, account: tuple[str, str]
) -> None:
    assert (await claimed(submissions, provider, "Prod Kafka", form(*account))).ok

    second = await claimed(submissions, provider, "PROD KAFKA", form(*account), user_id=OTHER_USER)

    assert second.problems == {NAME_FIELD: NAME_BEING_REGISTERED}
    assert second.claim_id is None
    assert len(await in_flight(db)) == 1


async def test_a_name_a_connection_holds_is_refused_and_leaves_no_claim(
    db: Database, submissions: Submissions, provider: ConfluentCloud, account: tuple[str, str]
) -> None:
    first = await claimed(submissions, provider, "Prod Kafka", form(*account))
    assert stored(await submissions.submit(request_of(first, provider)))

    again = await claimed(submissions, provider, "prod kafka", form(*account), user_id=OTHER_USER)

    assert again.problems == {NAME_FIELD: NAME_TAKEN}
    assert await in_flight(db) == []


async def test_a_form_with_problems_claims_nothing(
    db: Database, submissions: Submissions, provider: ConfluentCloud
) -> None:
    check = await claimed(submissions, provider, "Prod Kafka", form("", ""))
    assert not check.ok and check.claim_id is None
    assert await in_flight(db) == []


async def test_of_simultaneous_submissions_of_one_name_exactly_one_is_acknowledged(
    db: Database, submissions: Submissions, provider: ConfluentCloud, account: tuple[str, str]
) -> None:
    names = ["Orders", "orders", "ORDERS", " orders "] * 2
    checks = await asyncio.gather(
        *(
            claimed(submissions, provider, name, form(*account), user_id=f"U00000000{index}")
            for index, name in enumerate(names)
        )
    )
    assert sum(check.ok for check in checks) == 1
    assert all(check.problems == {NAME_FIELD: NAME_BEING_REGISTERED} for check in checks if not check.ok)
    assert len(await in_flight(db)) == 1


async def test_a_stored_connection_ends_its_claim_in_the_same_transaction(
    db: Database, submissions: Submissions, provider: ConfluentCloud, account: tuple[str, str]
) -> None:
    check = await claimed(submissions, provider, "Prod Kafka", form(*account))
    outcome = await submissions.submit(request_of(check, provider))

    assert stored(outcome) and not outcome.abandoned
    assert await counts(db) == {
        "connections": 1,
        "credentials": 2,
        "verifications": 1,
        "rotations": 0,
        "audit_events": 1,
        "in_flight_verifications": 0,
    }


async def test_a_failed_verification_ends_its_claim_with_its_audit_event(
    db: Database, submissions: Submissions, provider: ConfluentCloud
) -> None:
    check = await claimed(submissions, provider, "Prod Kafka", form(new_api_key(), new_api_secret()))
    outcome = await submissions.submit(request_of(check, provider))

    assert outcome.verification is not None and outcome.verification.outcome is Outcome.UNAUTHORIZED
    assert await audit_actions(db) == ["connection.create_failed"]
    assert await in_flight(db) == []
    # The name is free again.
    assert (await claimed(submissions, provider, "Prod Kafka", form(new_api_key(), new_api_secret()))).ok


async def test_an_error_during_the_verification_ends_the_claim(
    db: Database,
    submissions: Submissions,
    provider: ConfluentCloud,
    account: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    check = await claimed(submissions, provider, "Prod Kafka", form(*account))

    async def broken(*_: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(provider, "verify", broken)
    with pytest.raises(RuntimeError):
        await submissions.submit(request_of(check, provider))
    assert await in_flight(db) == []
    assert (await counts(db))["connections"] == 0


async def test_an_outcome_whose_claim_a_sweep_took_is_dropped(
    db: Database,
    submissions: Submissions,
    provider: ConfluentCloud,
    account: tuple[str, str],
    clock: HandClock,
) -> None:
    good = await claimed(submissions, provider, "Prod Kafka", form(*account))
    bad = await claimed(submissions, provider, "Typo Kafka", form(new_api_key(), new_api_secret()))
    await sweep_everything(db, clock)
    before = await counts(db)

    verified = await submissions.submit(request_of(good, provider))
    failed = await submissions.submit(request_of(bad, provider))

    assert verified.abandoned and not stored(verified)
    assert verified.verification is not None and verified.verification.ok
    assert failed.abandoned
    assert failed.verification is not None and failed.verification.outcome is Outcome.UNAUTHORIZED
    assert await counts(db) == before
    assert await audit_actions(db) == ["connection.create_interrupted"] * 2


async def test_an_error_after_a_sweep_took_the_claim_gives_no_second_answer(
    db: Database,
    submissions: Submissions,
    provider: ConfluentCloud,
    account: tuple[str, str],
    clock: HandClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    check = await claimed(submissions, provider, "Prod Kafka", form(*account))
    await sweep_everything(db, clock)  # its user is told the verification was interrupted

    async def broken(*_: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(provider, "verify", broken)
    # Abandoned, not the error: the listener must not add "something went wrong" to "interrupted".
    outcome = await submissions.submit(request_of(check, provider))
    assert outcome.abandoned and outcome.request_id is None
    errors = [record.exc_info[1] for record in caplog.records if record.exc_info is not None]
    assert any(isinstance(error, RuntimeError) and str(error) == "a bug" for error in errors), (
        "the error itself is logged"
    )
    assert await audit_actions(db) == ["connection.create_interrupted"]


def other_claim(name: str, connection_id: str | None = None) -> InFlightVerification:
    """Another user's claim, of ``name`` (a creation) or of the connection (a rotation)."""
    return OWNER.claim(
        kind=InFlightKind.CREATE if connection_id is None else InFlightKind.ROTATION,
        team_id=TEAM,
        user_id=OTHER_USER,
        provider=confluent(api_url=API),
        name=name,
        view_id="V0000OTHER",
        config={},
        now=START,
        connection_id=connection_id,
    )


HOLD_CAP_SECONDS = 6.0
"""Well past the claim's own 2 s bound, well short of SQLite's 15 s busy timeout: a claim without a
bound of its own outlasts the hold and gets through, and the test fails."""


@asynccontextmanager
async def held_elsewhere(db: Database, row: InFlightVerification) -> AsyncIterator[None]:
    """Another transaction claims ``row`` and keeps it uncommitted until the block ends: it holds
    the write lock on SQLite, and the row's unique key on PostgreSQL; then it rolls back."""
    holding, done = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with db.transaction() as tx:
            assert await tx.in_flight.claim(row)
            holding.set()
            # Capped, so a claim that waits for this transaction cannot hang the test.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), HOLD_CAP_SECONDS)
            raise asyncio.CancelledError  # leaves the block by an exception: rolled back

    holder = asyncio.create_task(hold())
    await holding.wait()
    try:
        yield
    finally:
        done.set()
        with contextlib.suppress(asyncio.CancelledError):
            await holder


async def test_a_claim_that_cannot_get_its_lock_in_time_says_busy_and_records_nothing(
    db: Database, submissions: Submissions, provider: ConfluentCloud, account: tuple[str, str]
) -> None:
    async with held_elsewhere(db, other_claim("prod kafka")):
        # Without a bound of its own the claim would wait out SQLite's 15 s busy timeout, or the
        # other transaction (PostgreSQL), and the ack would miss Slack's 3 s.
        check = await claimed(submissions, provider, "Prod Kafka", form(*account))
    assert check.problems == {NAME_FIELD: DATABASE_BUSY} and check.claim_id is None
    assert await in_flight(db) == []
    # The lock is free again: the same form goes through.
    assert (await claimed(submissions, provider, "Prod Kafka", form(*account))).ok


# --- rotating ------------------------------------------------------------------------------------


@pytest.fixture
async def active(
    db: Database,
    submissions: Submissions,
    provider: ConfluentCloud,
    account: tuple[str, str],
    clock: HandClock,
) -> str:
    """An active connection "Prod Kafka" of ``USER``."""
    outcome = await submissions.submit(
        request_of(await claimed(submissions, provider, "Prod Kafka", form(*account)), provider)
    )
    assert outcome.request_id is not None
    approvals = ApprovalService(
        db,
        ProviderRegistry((provider,)),
        new_policy(MemoryDirectory({GROUP: set()})),
        ttl=timedelta(hours=72),
        clock=clock,
    )
    clock.now = START + timedelta(minutes=1)
    await approvals.approve(RequestKind.CONNECTION, TEAM, outcome.request_id, ADMIN)
    clock.now = START + timedelta(days=30)
    return outcome.request_id


async def claim_rotation(
    submissions: Submissions,
    provider: ConfluentCloud,
    connection_id: str,
    actor: str = USER,
    team_id: str = TEAM,
) -> FormCheck:
    """The rotation form's check, claiming the connection for ``actor``'s verification to come."""
    return await submissions.check(
        RequestKind.ROTATION,
        team_id,
        provider,
        "Prod Kafka",
        form(*new_key_pair()),
        claim_for=Waiter(actor, "V0ROTATE01"),
        connection_id=connection_id,
    )


async def test_one_rotation_of_a_connection_is_verified_at_a_time(
    db: Database, submissions: Submissions, provider: ConfluentCloud, active: str
) -> None:
    first = await claim_rotation(submissions, provider, active)
    assert first.claim_id is not None
    second = await claim_rotation(submissions, provider, active, actor=ADMIN)
    assert second.claim_id is None and second.form_problem == ALREADY_ROTATING
    [row] = await in_flight(db)
    assert (row.kind, row.connection_id, row.name_key, row.view_id) == (
        InFlightKind.ROTATION,
        active,
        None,
        "V0ROTATE01",
    )


@pytest.mark.parametrize(("actor", "team_id"), [(OUTSIDER, TEAM), (ADMIN, OTHER_TEAM)])
async def test_a_rotation_nobody_may_make_claims_nothing(
    actor: str, team_id: str, db: Database, submissions: Submissions, provider: ConfluentCloud, active: str
) -> None:
    # Someone who may not rotate it, and a form naming the connection from another workspace: the
    # refusal comes before the claim, so neither can hold up its owner's rotation.
    checked = await claim_rotation(submissions, provider, active, actor=actor, team_id=team_id)

    refusal = await submissions.may_rotate(team_id, actor, connection_id=active)
    assert isinstance(refusal, Refused) and checked.form_problem == refusal.message
    assert checked.claim_id is None and await in_flight(db) == []
    assert (await claim_rotation(submissions, provider, active)).claim_id is not None


async def test_a_rotation_form_of_another_provider_claims_nothing(
    db: Database, submissions: Submissions, active: str
) -> None:
    checked = await claim_rotation(submissions, SameFormElsewhere(api_url=API), active)
    assert checked.form_problem == STALE_ROTATION and checked.claim_id is None
    assert await in_flight(db) == []


async def test_a_stored_rotation_ends_its_claim(
    db: Database,
    submissions: Submissions,
    provider: ConfluentCloud,
    active: str,
    fake: FakeConfluent,
) -> None:
    key, secret = new_api_key(), new_api_secret()
    fake.add_cloud_key(key, secret, environments=1)
    claim_id = (await claim_rotation(submissions, provider, active)).claim_id

    outcome = await submissions.submit(
        rotation(active, form(key, secret), actor=USER, provider=provider, claim_id=claim_id)
    )

    assert outcome.request_id is not None
    assert await in_flight(db) == []
    async with db.read() as tx:
        assert await tx.session.scalar(select(Rotation.status)) is RotationStatus.PENDING_APPROVAL


@pytest.mark.parametrize("case", ["refused", "failed", "pending"])
async def test_every_other_rotation_outcome_ends_its_claim(
    case: str,
    db: Database,
    submissions: Submissions,
    provider: ConfluentCloud,
    active: str,
    fake: FakeConfluent,
) -> None:
    key, secret = new_api_key(), new_api_secret()
    fake.add_cloud_key(key, secret, environments=1)
    actor = OUTSIDER if case == "refused" else USER
    if case == "failed":
        secret = new_api_secret()
    if case == "pending":  # another rotation already waits for approval
        waiting = await submissions.submit(rotation(active, form(key, secret), actor=USER, provider=provider))
        assert waiting.request_id is not None
    claim_id = (await claim_rotation(submissions, provider, active, actor=actor)).claim_id

    outcome = await submissions.submit(
        rotation(active, form(key, secret), actor=actor, provider=provider, claim_id=claim_id)
    )

    assert outcome.request_id is None
    refusal = await submissions.may_rotate(TEAM, actor, connection_id=active)
    if case == "refused":
        assert isinstance(refusal, Refused) and refusal.reason is Refusal.NOT_ALLOWED
        assert outcome.problem == refusal.message
    elif case == "failed":
        assert outcome.verification is not None and outcome.verification.outcome is Outcome.UNAUTHORIZED
    else:
        assert isinstance(refusal, Refused) and refusal.reason is Refusal.ROTATION_PENDING
        assert outcome.problem == refusal.message
    assert await in_flight(db) == []


async def test_a_rotation_whose_claim_a_sweep_took_is_dropped(
    db: Database,
    submissions: Submissions,
    provider: ConfluentCloud,
    active: str,
    fake: FakeConfluent,
    clock: HandClock,
) -> None:
    key, secret = new_api_key(), new_api_secret()
    fake.add_cloud_key(key, secret, environments=1)
    claim_id = (await claim_rotation(submissions, provider, active)).claim_id
    await sweep_everything(db, clock)

    outcome = await submissions.submit(
        rotation(active, form(key, secret), actor=USER, provider=provider, claim_id=claim_id)
    )

    assert outcome.abandoned and outcome.request_id is None
    assert (await counts(db))["rotations"] == 0
    assert (await audit_actions(db))[-1] == "rotation.interrupted"


async def test_a_rotation_claim_that_cannot_get_its_lock_in_time_is_busy_and_records_nothing(
    db: Database, submissions: Submissions, provider: ConfluentCloud, active: str
) -> None:
    async with held_elsewhere(db, other_claim("Prod Kafka", connection_id=active)):
        busy = await claim_rotation(submissions, provider, active)
    assert busy.form_problem == ROTATION_BUSY and busy.claim_id is None
    assert await in_flight(db) == []
    assert (await claim_rotation(submissions, provider, active)).claim_id is not None


async def test_a_rotation_error_after_a_sweep_took_the_claim_gives_no_second_answer(
    db: Database,
    submissions: Submissions,
    provider: ConfluentCloud,
    active: str,
    clock: HandClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    claim_id = (await claim_rotation(submissions, provider, active)).claim_id
    await sweep_everything(db, clock)

    async def broken(*_: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(provider, "verify", broken)
    outcome = await submissions.submit(
        rotation(active, form(*new_key_pair()), actor=USER, provider=provider, claim_id=claim_id)
    )

    assert outcome.abandoned and outcome.request_id is None
    assert (await audit_actions(db))[-1] == "rotation.interrupted"


def new_key_pair() -> tuple[str, str]:
    return new_api_key(), new_api_secret()


# --- a process still on the master key that rotate-master-key retired ------------------------

ROTATED_KEY_ID = "0123456789abcdef"


async def seal_canary_with(db: Database, key_id: str) -> None:
    """The canary as ``rotate-master-key`` leaves it: sealed with a key this process does not hold."""
    async with db.transaction() as tx:
        canary = await tx.key_canary.get()
        if canary is None:
            await tx.key_canary.add(KeyCanary(key_id=key_id, nonce=os.urandom(12), ciphertext=os.urandom(48)))
        else:
            await tx.key_canary.replace(canary, key_id, os.urandom(12), os.urandom(48))


async def test_a_create_after_the_data_moved_to_another_key_saves_nothing_and_says_why(
    db: Database, submissions: Submissions, provider: ConfluentCloud, account: tuple[str, str]
) -> None:
    await seal_canary_with(db, ROTATED_KEY_ID)
    before = await counts(db)

    outcome = await submissions.submit(
        request_of(await claimed(submissions, provider, "Prod Kafka", form(*account)), provider)
    )

    assert outcome.request_id is None
    assert outcome.problem is not None and "master key was rotated" in outcome.problem
    assert await counts(db) == before, "nothing stored, and the name's claim released"
    assert await in_flight(db) == []


async def test_a_create_with_the_current_key_is_stored(
    db: Database,
    cipher: Cipher,
    submissions: Submissions,
    provider: ConfluentCloud,
    account: tuple[str, str],
) -> None:
    await seal_canary_with(db, cipher.key_id)

    outcome = await submissions.submit(
        request_of(await claimed(submissions, provider, "Prod Kafka", form(*account)), provider)
    )

    assert outcome.request_id is not None and outcome.problem is None


async def test_a_rotation_after_the_data_moved_to_another_key_saves_nothing_and_says_why(
    db: Database,
    submissions: Submissions,
    provider: ConfluentCloud,
    active: str,
    fake: FakeConfluent,
) -> None:
    key, secret = new_api_key(), new_api_secret()
    fake.add_cloud_key(key, secret, environments=1)
    await seal_canary_with(db, ROTATED_KEY_ID)
    claim_id = (await claim_rotation(submissions, provider, active)).claim_id
    before = await counts(db)

    outcome = await submissions.submit(
        rotation(active, form(key, secret), actor=USER, provider=provider, claim_id=claim_id)
    )

    assert outcome.request_id is None
    assert outcome.problem is not None and "master key was rotated" in outcome.problem
    after = await counts(db)
    assert after == before | {"in_flight_verifications": 0}, "nothing stored; the claim released"
