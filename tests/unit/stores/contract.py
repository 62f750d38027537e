"""The tests every secret store must pass, as :mod:`tests.unit.providers.contract` is for providers.

A store's test module subclasses :class:`StoreContract` (named ``Test…`` so pytest collects it)
and supplies three async context managers, each yielding a fresh :class:`SecretStore`:

* :meth:`~StoreContract.working` — a store that accepts the bot (a real server or a fake that
  follows the store's documents), with nothing written yet under the paths the tests use;
* :meth:`~StoreContract.denied` — the same server, with an identity its policy refuses;
* :meth:`~StoreContract.unreachable` — a store whose address answers nothing (a closed port).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from abc import ABC, abstractmethod
from contextlib import AbstractAsyncContextManager

import pytest

from bot.logs import WIRE_LOGGERS, wire_record_dropped
from bot.redaction import RedactingFilter, Secret
from bot.stores.base import SecretStore, StoreError, StoreFailure

UNREACHABLE_SECONDS = 30.0
"""A generous bound: a store that cannot be reached must say so, not hang (its own timeouts are
far shorter; this only catches one that has none)."""
METADATA = {
    "provider": "confluent_cloud",
    "connection-id": "c0ffee00-0000-4000-8000-000000000001",
    "owner": "U0OWNER01",
    "approved-by": "U0ADMIN01",
    "approved-at": "2026-12-08T10:00:00+00:00",
}


def token() -> str:
    """A fresh write token, as the services make them (a UUID: 36 characters)."""
    return str(uuid.uuid4())


def fields(secret: str) -> dict[str, str | Secret]:
    return {
        "api_key": Secret("AKEY" + secret[:12].upper()),
        "api_secret": Secret(secret),
        "cluster_id": "lkc-1",
    }


def plain(values: dict[str, str | Secret]) -> dict[str, str]:
    return {k: v.reveal() if isinstance(v, Secret) else v for k, v in values.items()}


class StoreContract(ABC):
    """Shared tests for a secret store; see the module docstring for what to supply."""

    @abstractmethod
    def working(self) -> AbstractAsyncContextManager[SecretStore]: ...

    @abstractmethod
    def denied(self) -> AbstractAsyncContextManager[SecretStore]: ...

    @abstractmethod
    def unreachable(self) -> AbstractAsyncContextManager[SecretStore]: ...

    @staticmethod
    def path() -> str:
        """A path no other test uses."""
        return f"connections/T0TEST/confluent_cloud/db-{uuid.uuid4().hex[:12]}"

    @staticmethod
    def secret() -> str:
        return "s3cr3t-" + uuid.uuid4().hex

    # --- identity ---------------------------------------------------------------------------

    async def test_identity_is_declared(self) -> None:
        async with self.working() as store:
            assert store.key and store.key == store.key.strip().lower() and store.key.isalnum()
            assert store.title.strip()
            assert "connections/x" in store.where("connections/x")

    # --- write and read ---------------------------------------------------------------------

    async def test_a_written_secret_reads_back_as_written(self) -> None:
        async with self.working() as store:
            path, values = self.path(), fields(self.secret())
            written = await store.write(path, values, token=token(), replaces=None, metadata=METADATA)
            stored = await store.read(path)
            assert stored.version == written.version
            assert {k: v.reveal() for k, v in stored.fields.items()} == plain(values)
            assert all(isinstance(v, Secret) for v in stored.fields.values())

    async def test_the_same_write_again_makes_no_second_version(self) -> None:
        async with self.working() as store:
            path, values, once = self.path(), fields(self.secret()), token()
            first = await store.write(path, values, token=once, replaces=None, metadata=METADATA)
            again = await store.write(path, values, token=once, replaces=None, metadata=METADATA)
            assert again.version == first.version
            assert (await store.read(path)).version == first.version

    async def test_a_rotation_writes_a_new_current_version(self) -> None:
        async with self.working() as store:
            path = self.path()
            first = await store.write(
                path, fields(self.secret()), token=token(), replaces=None, metadata=METADATA
            )
            newer = fields(self.secret())
            second = await store.write(path, newer, token=token(), replaces=first.version, metadata=METADATA)
            assert second.version != first.version
            stored = await store.read(path)
            assert stored.version == second.version
            assert {k: v.reveal() for k, v in stored.fields.items()} == plain(newer)

    async def test_a_retried_rotation_makes_no_second_version(self) -> None:
        async with self.working() as store:
            path = self.path()
            first = await store.write(
                path, fields(self.secret()), token=token(), replaces=None, metadata=METADATA
            )
            newer, once = fields(self.secret()), token()
            second = await store.write(path, newer, token=once, replaces=first.version, metadata=METADATA)
            # The answer was lost: the bot still believes `first` is current, and tries again.
            again = await store.write(path, newer, token=once, replaces=first.version, metadata=METADATA)
            assert again.version == second.version
            assert (await store.read(path)).version == second.version

    async def test_a_change_made_meanwhile_is_reported_not_overwritten(self) -> None:
        async with self.working() as store:
            path = self.path()
            first = await store.write(
                path, fields(self.secret()), token=token(), replaces=None, metadata=METADATA
            )
            theirs = fields(self.secret())
            outside = await store.write(
                path, theirs, token=token(), replaces=first.version, metadata=METADATA
            )
            with pytest.raises(StoreError) as raised:
                await store.write(
                    path, fields(self.secret()), token=token(), replaces=first.version, metadata=METADATA
                )
            assert raised.value.failure is StoreFailure.CONFLICT
            assert path in str(raised.value)
            stored = await store.read(path)
            assert stored.version == outside.version
            assert {k: v.reveal() for k, v in stored.fields.items()} == plain(theirs)

    async def test_a_path_holding_another_secret_is_not_taken_over(self) -> None:
        async with self.working() as store:
            path, theirs = self.path(), fields(self.secret())
            await store.write(path, theirs, token=token(), replaces=None, metadata=METADATA)
            with pytest.raises(StoreError) as raised:
                await store.write(
                    path, fields(self.secret()), token=token(), replaces=None, metadata=METADATA
                )
            assert raised.value.failure is StoreFailure.CONFLICT
            assert {k: v.reveal() for k, v in (await store.read(path)).fields.items()} == plain(theirs)

    async def test_reading_nothing_is_not_found(self) -> None:
        async with self.working() as store:
            with pytest.raises(StoreError) as raised:
                await store.read(self.path())
            assert raised.value.failure is StoreFailure.NOT_FOUND

    # --- delete -----------------------------------------------------------------------------

    async def test_a_deleted_secret_is_gone(self) -> None:
        async with self.working() as store:
            path = self.path()
            await store.write(path, fields(self.secret()), token=token(), replaces=None, metadata=METADATA)
            await store.delete(path)
            with pytest.raises(StoreError) as raised:
                await store.read(path)
            assert raised.value.failure is StoreFailure.NOT_FOUND
            await store.delete(path)  # twice, or a path that never held anything: not an error
            await store.delete(self.path())

    async def test_a_path_can_be_used_again_after_a_delete(self) -> None:
        # A connection removed and registered again under its name gets the same path.
        async with self.working() as store:
            path = self.path()
            await store.write(path, fields(self.secret()), token=token(), replaces=None, metadata=METADATA)
            await store.delete(path)
            fresh = fields(self.secret())
            written = await store.write(path, fresh, token=token(), replaces=None, metadata=METADATA)
            stored = await store.read(path)
            assert stored.version == written.version
            assert {k: v.reveal() for k, v in stored.fields.items()} == plain(fresh)

    # --- health -----------------------------------------------------------------------------

    async def test_a_working_store_checks_healthy(self) -> None:
        async with self.working() as store:
            check = await store.check()
            assert check.ok, check.detail

    async def test_a_refused_identity_checks_unauthenticated(self) -> None:
        async with self.denied() as store:
            check = await store.check()
            assert check.reachable and not check.authenticated and check.detail.strip()

    async def test_an_unreachable_store_checks_unreachable(self) -> None:
        async with self.unreachable() as store:
            async with asyncio.timeout(UNREACHABLE_SECONDS):
                check = await store.check()
            assert not check.reachable and not check.ok and check.detail.strip()

    # --- failures ---------------------------------------------------------------------------

    async def test_a_refused_identity_is_denied_and_says_where(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG)
        secret = self.secret()
        async with self.denied() as store:
            path = self.path()
            with pytest.raises(StoreError) as raised:
                await store.write(path, fields(secret), token=token(), replaces=None, metadata=METADATA)
            assert raised.value.failure is StoreFailure.DENIED
            assert path in str(raised.value)
            for call in (store.read(path), store.delete(path)):
                with pytest.raises(StoreError) as other:
                    await call
                assert other.value.failure is StoreFailure.DENIED
        self._assert_hidden(secret, raised.value, caplog)

    async def test_an_unreachable_store_fails_in_bounded_time(self, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.DEBUG)
        secret = self.secret()
        async with self.unreachable() as store:
            started = time.monotonic()
            with pytest.raises(StoreError) as raised:
                async with asyncio.timeout(UNREACHABLE_SECONDS):
                    await store.write(
                        self.path(), fields(secret), token=token(), replaces=None, metadata=METADATA
                    )
            assert raised.value.failure is StoreFailure.UNREACHABLE
            assert time.monotonic() - started < UNREACHABLE_SECONDS
        self._assert_hidden(secret, raised.value, caplog)

    async def test_calls_do_not_block_the_event_loop(self) -> None:
        # A tick every 10 ms keeps running while the store works: its client runs off the loop.
        async with self.working() as store:
            ticks = 0

            async def tick() -> None:
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.01)
                    ticks += 1

            ticker = asyncio.create_task(tick())
            try:
                path = self.path()
                started = time.monotonic()
                for _ in range(5):
                    await store.write(
                        path,
                        fields(self.secret()),
                        token=token(),
                        replaces=(await self._current(store, path)),
                        metadata=METADATA,
                    )
                    await store.read(path)
                elapsed = time.monotonic() - started
            finally:
                ticker.cancel()
            # A blocked loop would tick about once per call; a free one about elapsed / 10 ms.
            assert ticks >= min(10, int(elapsed / 0.01) // 4)

    async def test_secrets_never_leak(self, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.DEBUG)
        wire = [logging.getLogger(name) for name in WIRE_LOGGERS]
        saved = [logger.level for logger in wire]
        for logger in wire:
            logger.setLevel(logging.DEBUG)
        try:
            await self._leak_journey(caplog)
        finally:
            for logger, level in zip(wire, saved, strict=True):
                logger.setLevel(level)

    async def _leak_journey(self, caplog: pytest.LogCaptureFixture) -> None:
        secret = self.secret()
        async with self.working() as store:
            path = self.path()
            await store.write(path, fields(secret), token=token(), replaces=None, metadata=METADATA)
            stored = await store.read(path)
            texts = [repr(stored), str(stored), repr(store)]
            with pytest.raises(StoreError) as raised:
                await store.write(
                    path, fields(secret), token=token(), replaces="not-a-version", metadata=METADATA
                )
        for text in texts:
            assert secret not in text
        self._assert_hidden(secret, raised.value, caplog)

    # --- helpers ----------------------------------------------------------------------------

    @staticmethod
    async def _current(store: SecretStore, path: str) -> str | None:
        try:
            return (await store.read(path)).version
        except StoreError as exc:
            if exc.failure is StoreFailure.NOT_FOUND:
                return None
            raise

    @staticmethod
    def _assert_hidden(secret: str, error: StoreError, caplog: pytest.LogCaptureFixture) -> None:
        assert secret not in str(error) and secret not in repr(error)
        assert secret not in repr(error.__cause__) and secret not in repr(error.__context__)
        # Through the bot's own handler (its filter drops wire loggers' DEBUG lines, as in production).
        kept = [r for r in caplog.records if RedactingFilter().filter(r) and not _dropped(r)]
        for record in kept:
            assert secret not in record.getMessage(), f"{record.name} logged the secret"


def _dropped(record: logging.LogRecord) -> bool:
    return wire_record_dropped(record)
