"""Approvals with a secret store, on SQLite and PostgreSQL: an approved credential goes to the store
and no copy stays in the database; a store that refuses decides nothing; a retry writes no second
version; a decision lost meanwhile takes the write back.

Below the services everything is real (database, cipher, Confluent provider against the fake); the
store is :class:`MemoryStore`, which keeps versions, tokens and check-and-set as a store does.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from bot.crypto import Cipher
from bot.domain import RotationStatus, SecretLocation, Status, Verdict
from bot.providers.registry import ProviderRegistry
from bot.redaction import mask_hint
from bot.services.approvals import ApprovalService
from bot.store import Database
from bot.stores.paths import PathTemplate
from bot.stores.tokens import write_token
from tests.support.databases import dump_database_text
from tests.support.memory_store import Call, MemoryStore
from tests.unit.services.secret_store.conftest import (
    APPROVE_AT,
    CONNECTION,
    PATH,
    ROTATION,
    rejecting,
)
from tests.unit.services.test_approvals import ADMIN, SECOND_ADMIN, MemoryDirectory, new_policy
from tests.unit.services.test_connections import CLUSTER, REST, TEAM
from tests.unit.services.test_expiry import HandClock
from tests.unit.services.test_rotations import (
    OWNER_ID,
    TTL,
    audit_text,
    credentials_of,
    events_of,
    rotation_row,
    row,
    state,
)


class Crash(Exception):
    """The process dying between the store write and the decision's commit."""


# --- a new connection ----------------------------------------------------------------------------


async def test_approving_puts_the_credential_in_the_store_and_destroys_every_local_copy(
    approvals: ApprovalService,
    store: MemoryStore,
    pending_connection: str,
    account: tuple[str, str],
    clock: HandClock,
    db: Database,
    migrated_database_url: str,
) -> None:
    clock.now = APPROVE_AT
    decision = await approvals.approve(CONNECTION, TEAM, pending_connection, ADMIN)

    assert decision.verdict is Verdict.DECIDED
    written = store.current(PATH)
    assert written is not None
    assert written.plain() == {"api_key": account[0], "api_secret": account[1]}
    assert written.token == write_token(pending_connection, 1)
    assert written.metadata == {
        "provider": "confluent_cloud",
        "connection-id": pending_connection,
        "owner": OWNER_ID,
        "approved-by": ADMIN,
        "approved-at": APPROVE_AT.isoformat(timespec="seconds"),
    }
    assert store.made("write") == [Call("write", PATH, written.token, None)]

    connection = await row(db, pending_connection)
    assert connection.status is Status.ACTIVE
    assert (connection.secret_store, connection.secret_path, connection.secret_version) == (
        "memory",
        PATH,
        written.version,
    )
    assert await credentials_of(db, pending_connection) == []
    assert decision.request is not None
    assert decision.request.connection.secret_location == SecretLocation("memory", "Memory Store", PATH)

    [event] = await events_of(db, pending_connection, "connection.approved")
    assert event.details["secret_store"] == "memory"
    assert event.details["secret_path"] == PATH
    assert event.details["secret_version"] == written.version
    assert event.details["ciphertexts_destroyed"] == 2
    everything = dump_database_text(migrated_database_url)
    assert account[1] not in everything and account[0] not in everything


@pytest.mark.parametrize(
    ("arrange", "said"),
    [
        (MemoryStore.deny, f"the bot may not write `{PATH}`: AccessDenied"),
        (MemoryStore.take_down, f"the secret store did not answer for `{PATH}`: ConnectTimeout"),
    ],
    ids=["denied", "down"],
)
async def test_a_store_that_refuses_decides_nothing_and_a_click_later_approves(
    approvals: ApprovalService,
    store: MemoryStore,
    pending_connection: str,
    db: Database,
    arrange: Any,
    said: str,
) -> None:
    before = await state(db, pending_connection)
    arrange(store, "write")

    refused = await approvals.approve(CONNECTION, TEAM, pending_connection, ADMIN)

    assert refused.verdict is Verdict.STORE_FAILED
    assert refused.problem == said
    assert refused.request is not None and refused.request.pending
    assert await state(db, pending_connection) == before, "nothing decided, nothing destroyed"
    assert store.paths() == []

    store.restore()
    again = await approvals.approve(CONNECTION, TEAM, pending_connection, ADMIN)
    assert again.verdict is Verdict.DECIDED
    assert store.paths() == [PATH]


async def test_a_retry_after_a_crash_between_the_write_and_the_commit_writes_no_second_version(
    approvals: ApprovalService, store: MemoryStore, pending_connection: str, db: Database
) -> None:
    async def crash() -> None:
        store.after_write = None
        raise Crash

    store.after_write = crash
    with pytest.raises(Crash):
        await approvals.approve(CONNECTION, TEAM, pending_connection, ADMIN)
    assert (await row(db, pending_connection)).status is Status.PENDING_APPROVAL
    assert len(await credentials_of(db, pending_connection)) == 2
    [first] = store.versions(PATH)

    decision = await approvals.approve(CONNECTION, TEAM, pending_connection, ADMIN)

    assert decision.verdict is Verdict.DECIDED
    assert store.versions(PATH) == [first], "the same token made no second version"
    assert (await row(db, pending_connection)).secret_version == first.version
    assert await credentials_of(db, pending_connection) == []


async def test_a_rejection_landing_during_the_write_takes_the_write_back(
    approvals: ApprovalService,
    other_admin: ApprovalService,
    store: MemoryStore,
    pending_connection: str,
    db: Database,
) -> None:
    store.after_write = rejecting(store, other_admin, CONNECTION, pending_connection)

    decision = await approvals.approve(CONNECTION, TEAM, pending_connection, ADMIN)

    assert decision.verdict is Verdict.ALREADY_DECIDED
    assert decision.request is not None and decision.request.status is Status.REJECTED
    assert store.paths() == [], "the secret written for a rejected connection was deleted"
    connection = await row(db, pending_connection)
    assert (connection.secret_store, connection.secret_path, connection.secret_version) == (None, None, None)
    assert await credentials_of(db, pending_connection) == []


async def test_two_admins_approving_at_once_make_one_decision_and_keep_one_version(
    approvals: ApprovalService,
    db: Database,
    providers: ProviderRegistry,
    directory: MemoryDirectory,
    clock: HandClock,
    cipher: Cipher,
    store: MemoryStore,
    pending_connection: str,
) -> None:
    second = ApprovalService(
        db, providers, new_policy(directory), ttl=TTL, clock=clock, store=store, cipher=cipher
    )

    decisions = await asyncio.gather(
        approvals.approve(CONNECTION, TEAM, pending_connection, ADMIN),
        second.approve(CONNECTION, TEAM, pending_connection, SECOND_ADMIN),
    )

    assert sorted(d.verdict.value for d in decisions) == sorted(
        [Verdict.DECIDED.value, Verdict.ALREADY_DECIDED.value]
    )
    [version] = store.versions(PATH)
    assert store.paths() == [PATH], "the loser must not take back what the winner uses"
    assert (await row(db, pending_connection)).secret_version == version.version


async def test_a_path_holding_someone_elses_secret_is_not_taken_over(
    approvals: ApprovalService, store: MemoryStore, pending_connection: str, db: Database
) -> None:
    theirs = store.write_outside(PATH, {"api_key": "THEIRS", "api_secret": "theirs"})

    decision = await approvals.approve(CONNECTION, TEAM, pending_connection, ADMIN)

    assert decision.verdict is Verdict.STORE_FAILED
    assert decision.problem is not None and PATH in decision.problem
    assert (await row(db, pending_connection)).status is Status.PENDING_APPROVAL
    current = store.current(PATH)
    assert current is not None and current.version == theirs


async def test_the_path_follows_the_template(
    db: Database,
    providers: ProviderRegistry,
    directory: MemoryDirectory,
    clock: HandClock,
    cipher: Cipher,
    store: MemoryStore,
    pending_connection: str,
) -> None:
    service = ApprovalService(
        db,
        providers,
        new_policy(directory),
        ttl=TTL,
        clock=clock,
        store=store,
        cipher=cipher,
        paths=PathTemplate("kafka/{team}/{id}"),
    )
    assert (await service.approve(CONNECTION, TEAM, pending_connection, ADMIN)).verdict is Verdict.DECIDED
    assert store.paths() == [f"kafka/{TEAM}/{pending_connection}"]


# --- a rotation ----------------------------------------------------------------------------------


async def test_approving_a_rotation_writes_a_new_version_in_place_of_the_one_the_bot_wrote(
    approvals: ApprovalService,
    store: MemoryStore,
    active: str,
    pending_rotation: str,
    new_account: tuple[str, str],
    db: Database,
) -> None:
    [first] = store.versions(PATH)

    decision = await approvals.approve(ROTATION, TEAM, pending_rotation, ADMIN)

    assert decision.verdict is Verdict.DECIDED
    old, new = store.versions(PATH)
    assert old == first
    assert new.plain() == {
        "api_key": new_account[0],
        "api_secret": new_account[1],
        "rest_endpoint": REST,
        "cluster_id": CLUSTER,
    }
    assert store.made("write")[-1] == Call("write", PATH, write_token(active, 2), first.version)
    connection = await row(db, active)
    assert (connection.secret_path, connection.secret_version, connection.credential_version) == (
        PATH,
        new.version,
        2,
    )
    assert connection.key_hint == mask_hint(new_account[0])
    assert await credentials_of(db, active) == []
    assert (await rotation_row(db, pending_rotation)).status is RotationStatus.APPROVED
    [event] = await events_of(db, active, "connection.rotated")
    assert (event.details["secret_path"], event.details["secret_version"]) == (PATH, new.version)


async def test_a_rotation_over_a_version_changed_outside_the_bot_is_reported_not_overwritten(
    approvals: ApprovalService, store: MemoryStore, active: str, pending_rotation: str, db: Database
) -> None:
    theirs = store.write_outside(PATH, {"api_key": "THEIRS", "api_secret": "theirs"})
    before = await state(db, active)

    decision = await approvals.approve(ROTATION, TEAM, pending_rotation, ADMIN)

    assert decision.verdict is Verdict.STORE_FAILED
    assert decision.problem is not None
    assert PATH in decision.problem and "changed outside the bot" in decision.problem
    assert await state(db, active) == before, "the rotation still waits, its new credential sealed"
    current = store.current(PATH)
    assert current is not None and current.version == theirs


async def test_a_rotation_puts_a_credential_back_where_it_was_deleted_outside_the_bot(
    approvals: ApprovalService,
    store: MemoryStore,
    active: str,
    pending_rotation: str,
    new_account: tuple[str, str],
    db: Database,
) -> None:
    store.delete_outside(PATH)

    decision = await approvals.approve(ROTATION, TEAM, pending_rotation, ADMIN)

    assert decision.verdict is Verdict.DECIDED
    [fresh] = store.versions(PATH)
    assert fresh.plain()["api_key"] == new_account[0]
    assert store.made("write")[-1] == Call("write", PATH, write_token(active, 2), None)
    assert (await row(db, active)).secret_version == fresh.version


async def test_a_rotation_rejected_during_the_write_puts_the_replaced_version_back(
    approvals: ApprovalService,
    other_admin: ApprovalService,
    store: MemoryStore,
    active: str,
    pending_rotation: str,
    account: tuple[str, str],
    db: Database,
) -> None:
    store.after_write = rejecting(store, other_admin, ROTATION, pending_rotation)

    decision = await approvals.approve(ROTATION, TEAM, pending_rotation, ADMIN)

    assert decision.verdict is Verdict.ALREADY_DECIDED
    current = store.current(PATH)
    assert current is not None
    assert current.plain() == {"api_key": account[0], "api_secret": account[1]}
    connection = await row(db, active)
    assert connection.credential_version == 1
    assert connection.secret_version == current.version, "the version written back is the bot's"
    assert (await rotation_row(db, pending_rotation)).status is RotationStatus.REJECTED


async def test_without_a_store_a_connection_held_by_one_is_not_rotated_locally(
    db: Database,
    providers: ProviderRegistry,
    directory: MemoryDirectory,
    clock: HandClock,
    active: str,
    pending_rotation: str,
    store: MemoryStore,
) -> None:
    local = ApprovalService(db, providers, new_policy(directory), ttl=TTL, clock=clock)
    before = await state(db, active)

    decision = await local.approve(ROTATION, TEAM, pending_rotation, ADMIN)

    assert decision.verdict is Verdict.STORE_FAILED
    assert decision.problem is not None
    assert "Memory Store" in decision.problem and "migrate-secrets --to local" in decision.problem
    assert await state(db, active) == before


async def test_a_store_other_than_the_one_holding_the_connection_is_not_written(
    db: Database,
    providers: ProviderRegistry,
    directory: MemoryDirectory,
    clock: HandClock,
    cipher: Cipher,
    active: str,
    pending_rotation: str,
    store: MemoryStore,
) -> None:
    class OtherStore(MemoryStore):
        key = "other"
        title = "Other Store"

    other = OtherStore()
    service = ApprovalService(
        db, providers, new_policy(directory), ttl=TTL, clock=clock, store=other, cipher=cipher
    )

    decision = await service.approve(ROTATION, TEAM, pending_rotation, ADMIN)

    assert decision.verdict is Verdict.STORE_FAILED
    assert decision.problem is not None and "migrate-secrets --to other" in decision.problem
    assert other.calls == []
    assert (await rotation_row(db, pending_rotation)).status is RotationStatus.PENDING_APPROVAL


# --- secrets -------------------------------------------------------------------------------------


async def test_no_secret_reaches_a_log_an_audit_event_a_decision_or_a_call(
    approvals: ApprovalService,
    other_admin: ApprovalService,
    store: MemoryStore,
    active: str,
    pending_rotation: str,
    account: tuple[str, str],
    new_account: tuple[str, str],
    db: Database,
    caplog: pytest.LogCaptureFixture,
    migrated_database_url: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    store.deny("write")
    refused = await approvals.approve(ROTATION, TEAM, pending_rotation, ADMIN)
    store.restore()
    store.after_write = rejecting(store, other_admin, ROTATION, pending_rotation)
    lost = await approvals.approve(ROTATION, TEAM, pending_rotation, ADMIN)

    seen = "\n".join(
        [
            caplog.text,
            audit_text(await events_of(db, active)),
            repr(refused),
            repr(lost),
            repr(store.calls),
            repr(store.versions(PATH)),
            dump_database_text(migrated_database_url),
        ]
    )
    for secret in (account[1], new_account[1]):
        assert secret not in seen
