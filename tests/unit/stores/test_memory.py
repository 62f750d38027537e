"""The in-memory store the services' tests use passes the contract every store passes, and does
what those tests ask of it (refusing, being down, a version written outside the bot) as a real
store would."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from bot.stores.base import SecretStore, StoreError, StoreFailure
from tests.support.memory_store import Call, MemoryStore
from tests.unit.stores.contract import METADATA, StoreContract, fields, plain, token


class TestMemoryStore(StoreContract):
    @asynccontextmanager
    async def working(self) -> AsyncIterator[SecretStore]:
        yield MemoryStore()

    @asynccontextmanager
    async def denied(self) -> AsyncIterator[SecretStore]:
        store = MemoryStore()
        store.deny()
        yield store

    @asynccontextmanager
    async def unreachable(self) -> AsyncIterator[SecretStore]:
        store = MemoryStore()
        store.take_down()
        yield store


PATH = "connections/T0TEST/confluent_cloud/prod"


async def test_a_version_written_outside_the_bot_makes_check_and_set_fail() -> None:
    store = MemoryStore()
    first = await store.write(PATH, fields("one"), token=token(), replaces=None, metadata=METADATA)
    theirs = store.write_outside(PATH, {"api_key": "THEIRS", "api_secret": "theirs"})
    assert theirs != first.version and store.current(PATH) is not None
    with pytest.raises(StoreError) as raised:
        await store.write(PATH, fields("two"), token=token(), replaces=first.version, metadata=METADATA)
    assert raised.value.failure is StoreFailure.CONFLICT
    assert (await store.read(PATH)).version == theirs


async def test_the_same_token_with_other_values_is_refused_not_taken_for_a_retry() -> None:
    store = MemoryStore()
    once = token()
    await store.write(PATH, fields("one"), token=once, replaces=None, metadata=METADATA)
    with pytest.raises(StoreError) as raised:
        await store.write(PATH, fields("two"), token=once, replaces=None, metadata=METADATA)
    assert raised.value.failure is StoreFailure.CONFLICT
    assert len(store.versions(PATH)) == 1


async def test_a_token_that_is_no_uuid_is_refused() -> None:
    with pytest.raises(StoreError) as raised:
        await MemoryStore().write(PATH, fields("one"), token="short", replaces=None, metadata=METADATA)
    assert raised.value.failure is StoreFailure.REFUSED


async def test_one_operation_can_fail_while_the_others_work() -> None:
    store = MemoryStore()
    written = await store.write(PATH, fields("one"), token=token(), replaces=None, metadata=METADATA)
    store.deny("write")
    with pytest.raises(StoreError) as raised:
        await store.write(PATH, fields("two"), token=token(), replaces=written.version, metadata=METADATA)
    assert raised.value.failure is StoreFailure.DENIED
    assert str(raised.value) == f"the bot may not write `{PATH}`: AccessDenied"
    assert (await store.read(PATH)).version == written.version
    store.take_down("read")
    with pytest.raises(StoreError) as down:
        await store.read(PATH)
    assert down.value.failure is StoreFailure.UNREACHABLE
    store.restore()
    assert (await store.read(PATH)).version == written.version


async def test_calls_are_recorded_without_values_and_metadata_is_kept() -> None:
    store = MemoryStore()
    values = fields("s3cr3t-recorded")
    once = token()
    await store.write(PATH, values, token=once, replaces=None, metadata=METADATA)
    await store.read(PATH)
    await store.delete(PATH)
    assert store.calls == [Call("write", PATH, once, None), Call("read", PATH), Call("delete", PATH)]
    assert "s3cr3t-recorded" not in repr(store.calls) and "s3cr3t-recorded" not in repr(store)
    assert store.paths() == []


async def test_what_was_written_is_kept_as_given() -> None:
    store = MemoryStore()
    values = fields("s3cr3t-kept")
    await store.write(PATH, values, token=token(), replaces=None, metadata=METADATA)
    current = store.current(PATH)
    assert current is not None
    assert current.plain() == plain(values) and current.metadata == METADATA
    assert "s3cr3t-kept" not in repr(current)


async def test_a_deleted_secret_can_be_deleted_outside_the_bot_too() -> None:
    store = MemoryStore()
    await store.write(PATH, fields("one"), token=token(), replaces=None, metadata=METADATA)
    store.delete_outside(PATH)
    with pytest.raises(StoreError) as raised:
        await store.read(PATH)
    assert raised.value.failure is StoreFailure.NOT_FOUND
