"""Removing a connection a secret store holds, on SQLite and PostgreSQL: its secret is deleted from
the store first; a store that refuses removes nothing; the audit event records the path."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from bot.domain import Refusal, Refused, Removal, RotationStatus, Status
from bot.providers.registry import ProviderRegistry
from bot.services.removal import RemovalService
from bot.store import Database
from tests.support.databases import dump_database_text
from tests.support.memory_store import Call, MemoryStore
from tests.unit.services.secret_store.conftest import PATH
from tests.unit.services.test_approvals import ADMIN, MemoryDirectory, new_policy
from tests.unit.services.test_connections import TEAM
from tests.unit.services.test_expiry import HandClock
from tests.unit.services.test_rotations import OWNER_ID, audit_text, events_of, rotation_row, row, state


class OtherStore(MemoryStore):
    key = "other"
    title = "Other Store"


def removal_service(
    db: Database,
    providers: ProviderRegistry,
    directory: MemoryDirectory,
    clock: HandClock,
    store: MemoryStore | None,
) -> RemovalService:
    return RemovalService(db, providers, new_policy(directory), clock=clock, store=store)


@pytest.fixture
def removal(
    db: Database,
    providers: ProviderRegistry,
    directory: MemoryDirectory,
    clock: HandClock,
    store: MemoryStore,
) -> RemovalService:
    return removal_service(db, providers, directory, clock, store)


async def test_removal_deletes_the_secret_from_the_store_and_records_where_it_was(
    removal: RemovalService, store: MemoryStore, active: str, db: Database
) -> None:
    removed = await removal.remove(TEAM, active, OWNER_ID)

    assert isinstance(removed, Removal)
    assert store.made("delete") == [Call("delete", PATH)]
    assert store.paths() == []
    connection = await row(db, active)
    assert connection.status is Status.REVOKED
    assert (connection.secret_store, connection.secret_path, connection.secret_version) == (None, None, None)
    assert removed.connection.secret_location is None, "nothing is stored anywhere any more"
    [event] = await events_of(db, active, "connection.removed")
    assert (event.details["secret_store"], event.details["secret_path"]) == ("memory", PATH)


async def test_removal_cancels_a_waiting_rotation_whose_credential_never_reached_the_store(
    removal: RemovalService, store: MemoryStore, active: str, pending_rotation: str, db: Database
) -> None:
    writes = len(store.made("write"))

    assert isinstance(await removal.remove(TEAM, active, ADMIN), Removal)

    assert (await rotation_row(db, pending_rotation)).status is RotationStatus.CANCELLED
    assert len(store.made("write")) == writes and store.paths() == []


@pytest.mark.parametrize(
    ("arrange", "said"),
    [
        (MemoryStore.deny, f"the bot may not delete `{PATH}`: AccessDenied"),
        (MemoryStore.take_down, f"the secret store did not answer for `{PATH}`: ConnectTimeout"),
    ],
    ids=["denied", "down"],
)
async def test_a_store_that_refuses_the_delete_removes_nothing(
    removal: RemovalService,
    store: MemoryStore,
    active: str,
    db: Database,
    arrange: Callable[[MemoryStore, str], None],
    said: str,
) -> None:
    before = await state(db, active)
    arrange(store, "delete")

    refused = await removal.remove(TEAM, active, OWNER_ID)

    assert isinstance(refused, Refused)
    assert refused.reason is Refusal.STORE_FAILED and refused.connection_id == active
    assert said in refused.message and "Nothing changed" in refused.message
    assert await state(db, active) == before
    assert store.paths() == [PATH]

    store.restore()
    assert isinstance(await removal.remove(TEAM, active, OWNER_ID), Removal), "trying again removes it"


async def test_a_secret_already_gone_from_the_store_does_not_block_the_removal(
    removal: RemovalService, store: MemoryStore, active: str, db: Database
) -> None:
    store.delete_outside(PATH)

    assert isinstance(await removal.remove(TEAM, active, OWNER_ID), Removal)
    assert (await row(db, active)).status is Status.REVOKED


async def test_a_connection_held_by_another_store_is_not_removed(
    db: Database, providers: ProviderRegistry, directory: MemoryDirectory, clock: HandClock, active: str
) -> None:
    for configured, to in ((None, "local"), (OtherStore(), "other")):
        service = removal_service(db, providers, directory, clock, configured)
        refused = await service.remove(TEAM, active, OWNER_ID)
        assert isinstance(refused, Refused) and refused.reason is Refusal.STORE_FAILED
        assert f"migrate-secrets --to {to}" in refused.message
        assert configured is None or configured.calls == []
    assert (await row(db, active)).status is Status.ACTIVE


async def test_no_secret_reaches_a_log_a_refusal_or_an_audit_event(
    removal: RemovalService,
    store: MemoryStore,
    active: str,
    account: tuple[str, str],
    db: Database,
    caplog: pytest.LogCaptureFixture,
    migrated_database_url: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    store.deny("delete")
    refused = await removal.remove(TEAM, active, OWNER_ID)
    store.restore()
    removed = await removal.remove(TEAM, active, OWNER_ID)

    seen = "\n".join(
        [
            caplog.text,
            repr(refused),
            repr(removed),
            audit_text(await events_of(db, active)),
            dump_database_text(migrated_database_url),
        ]
    )
    assert account[1] not in seen and account[0] not in seen
