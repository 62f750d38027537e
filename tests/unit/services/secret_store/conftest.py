"""What the tests of services with a secret store share: a :class:`MemoryStore`, approvals that
deliver to it, and a connection "Prod Kafka" submitted, approved into it and being rotated.

Below the services everything is real: the migrated database (SQLite and PostgreSQL), the AES-GCM
cipher, the Confluent provider verifying against :class:`FakeConfluent` in-process.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest

from bot.crypto import Cipher
from bot.domain import RequestKind, Verdict
from bot.providers.registry import ProviderRegistry
from bot.services.approvals import ApprovalService
from bot.services.submissions import Submissions
from bot.store import Database
from tests.fakes.confluent_api import FakeConfluent
from tests.support.memory_store import MemoryStore
from tests.unit.providers.test_confluent_cloud import confluent
from tests.unit.services.conftest import API
from tests.unit.services.test_approvals import ADMIN, SECOND_ADMIN, MemoryDirectory, new_policy
from tests.unit.services.test_connections import START, TEAM, create_request, form
from tests.unit.services.test_expiry import HandClock
from tests.unit.services.test_rotations import (
    DECIDE_AT,
    OWNER_ID,
    ROTATE_AT,
    TTL,
    cloud_account,
    new_values,
    request_ok,
)

CONNECTION = RequestKind.CONNECTION
ROTATION = RequestKind.ROTATION
APPROVE_AT = START + timedelta(minutes=5)
PATH = f"connections/{TEAM}/confluent_cloud/prod-kafka"
"""Where the default template puts "Prod Kafka" of ``TEAM``."""


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def approvals(
    db: Database,
    providers: ProviderRegistry,
    directory: MemoryDirectory,
    clock: HandClock,
    store: MemoryStore,
    cipher: Cipher,
) -> ApprovalService:
    return ApprovalService(
        db, providers, new_policy(directory), ttl=TTL, clock=clock, store=store, cipher=cipher
    )


@pytest.fixture
def other_admin(
    db: Database, providers: ProviderRegistry, directory: MemoryDirectory, clock: HandClock
) -> ApprovalService:
    """Another process's approvals (rejections need no store)."""
    return ApprovalService(db, providers, new_policy(directory), ttl=TTL, clock=clock)


@pytest.fixture
def submissions(
    db: Database,
    cipher: Cipher,
    providers: ProviderRegistry,
    http: httpx.AsyncClient,
    directory: MemoryDirectory,
    clock: HandClock,
) -> Submissions:
    return Submissions(db, cipher, providers, http, new_policy(directory), clock=clock)


@pytest.fixture
def providers() -> ProviderRegistry:
    return ProviderRegistry((confluent(api_url=API),))


@pytest.fixture
def directory() -> MemoryDirectory:
    return MemoryDirectory({})


@pytest.fixture
def clock() -> HandClock:
    return HandClock()


@pytest.fixture
def account(fake: FakeConfluent) -> tuple[str, str]:
    return cloud_account(fake)


@pytest.fixture
def new_account(fake: FakeConfluent) -> tuple[str, str]:
    return cloud_account(fake, cluster=True)


async def submit(submissions: Submissions, clock: HandClock, account: tuple[str, str]) -> str:
    """A new connection "Prod Kafka" of ``OWNER_ID`` awaiting approval; its id."""
    clock.now = START
    outcome = await submissions.submit(create_request("Prod Kafka", form(*account), user_id=OWNER_ID))
    assert outcome.request_id is not None, outcome.verification
    return outcome.request_id


@pytest.fixture
async def pending_connection(submissions: Submissions, clock: HandClock, account: tuple[str, str]) -> str:
    return await submit(submissions, clock, account)


@pytest.fixture
async def active(approvals: ApprovalService, pending_connection: str, clock: HandClock) -> str:
    """ "Prod Kafka", approved into the store; the clock then stands at ``ROTATE_AT``."""
    decision = await approvals.approve(CONNECTION, TEAM, pending_connection, ADMIN)
    assert decision.verdict is Verdict.DECIDED, decision
    clock.now = ROTATE_AT
    return pending_connection


@pytest.fixture
async def pending_rotation(
    submissions: Submissions, active: str, new_account: tuple[str, str], clock: HandClock
) -> str:
    rotation_id = await request_ok(submissions, active, new_values(new_account))
    clock.now = DECIDE_AT
    return rotation_id


def rejecting(store: MemoryStore, other: ApprovalService, kind: RequestKind, request_id: str) -> Any:
    """A store hook, run once: another admin rejects the request while the approval's write is in
    flight."""

    async def reject() -> None:
        store.after_write = None
        decision = await other.reject(kind, TEAM, request_id, SECOND_ADMIN, "Not this one.")
        assert decision.verdict is Verdict.DECIDED

    return reject
