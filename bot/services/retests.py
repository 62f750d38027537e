"""Re-testing stored credentials: one connection, every active one of a workspace, or the ones the
health schedule says are due, across every workspace.

Each re-test decrypts the stored fields just before the provider call and drops them after it
(a credential that a secret store holds is read from the store at that moment instead, so what is
tested is what the platform uses: see :meth:`RetestService._from_store`), then records, in one
transaction with the connection row locked, the history row, the health, an audit event and the
health *change* if any, so a change is reported exactly once whichever process made it. Only
changes alert; a connection that stays failing is reminded of once per ``reminder_every``. A
``rate_limited`` result, like one whose secret store could not be read, says nothing about the
credential: it is recorded but leaves the health as it was.

At most ``concurrency`` bulk re-tests (``test all``, the schedule) run at once, on the bulk HTTP
client; one re-test someone waits for goes past that bound, on the interactive client, so a bulk
run never holds it up (:mod:`bot.pools`). When a provider rate-limits one, every worker holds
back for the time it asked and the connection is tried again later: a bulk re-test slows down
instead of hammering an API that already said "too many". A workspace runs one ``test all`` at a
time, whichever replica it asks: the run is claimed in the database (:meth:`retest_all`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import httpx

from bot.crypto import Cipher, DecryptionError, Sealed, associated_data, config_digest
from bot.domain import (
    STORE_CHECK,
    SYSTEM_ACTOR,
    ChangeKind,
    Health,
    HealthChange,
    Refusal,
    Refused,
    RetestReport,
    RetestResult,
    Status,
    Trigger,
    utcnow,
)
from bot.markup import inert
from bot.providers.base import Check, Outcome, Provider, Verification
from bot.providers.registry import ProviderRegistry
from bot.redaction import Secret
from bot.services.delivery import elsewhere
from bot.services.permissions import RetestPolicy, find_connection
from bot.services.records import audit_event, history_row, summarize
from bot.store import AuditEvent, Connection, Database
from bot.store.models import BulkRetest
from bot.store.uow import UnitOfWork
from bot.stores.base import SecretStore, StoredSecret, StoreError, StoreFailure, store_title

__all__ = ["DEFAULT_CONCURRENCY", "BulkRunning", "RetestFailed", "RetestService"]

logger = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 16
RATE_LIMIT_PAUSE_SECONDS = 2.0
"""How long every worker holds back after a 429 whose response did not say how long."""
RATE_LIMIT_REQUEUES = 2
"""How many more times a rate-limited connection is tried in the same run."""
RATE_LIMIT_MAX_PAUSE_SECONDS = 30.0
"""The longest pause a run makes for a 429: asked to wait longer, it records the connection as
rate-limited (health unchanged) instead of holding every other re-test back."""
SCHEDULE_BATCH = 200
"""The most connections one run of the schedule re-tests; a backlog is worked off by later runs."""
CLAIM_LEASE = timedelta(minutes=15)
"""How long a claimed check is reserved for the process that claimed it. Recording the result
sets the real next check (one interval on); if the process dies first, another one takes the
check over when the lease ends instead of a whole interval later."""

BULK_HEARTBEAT_SECONDS = 5.0
"""How often a running ``test all`` records its progress, which also says it is alive."""
BULK_STALE_AFTER = timedelta(minutes=1)
"""A ``test all`` whose progress was not recorded for this long died with its process: another
one may start."""

OnResult = Callable[["RetestResult"], Awaitable[None]]
"""Called with each result as soon as it is recorded (to announce a health change at once)."""
OnStart = Callable[[int], Awaitable[None]]
"""Called with the number of connections a ``test all`` re-tests, once it holds the workspace."""
REMINDER_EVERY = timedelta(days=1)

_RETESTABLE = (Status.ACTIVE, Status.PENDING_APPROVAL)


@dataclass(frozen=True)
class _Target:
    """A connection to re-test, as loaded: its sealed fields with the associated data that binds
    them to ``config`` (so what is sent is what the credential was sealed for), never their plain
    text; or, when a secret store holds the credential, where (``store``, ``path``) and the
    version the bot wrote there (``written``), to be read at the moment of the provider call."""

    team_id: str
    connection_id: str
    name: str
    provider_key: str
    version: int
    config: dict[str, str]
    sealed: dict[str, tuple[Sealed, bytes]] = field(repr=False)
    store: str | None = None
    path: str | None = None
    written: str | None = None


RELEASE_SECONDS = 10.0
"""The longest a finished `test all` waits to give up its claim (else the claim goes stale)."""


@dataclass(frozen=True)
class BulkRunning:
    """The workspace's ``test all`` already running (maybe on another replica): who started it,
    when, and how far it is (as of its last heartbeat)."""

    started_by: str
    started_at: datetime
    total: int
    done: int


@dataclass
class RetestService:
    db: Database
    cipher: Cipher
    providers: ProviderRegistry
    http: httpx.AsyncClient
    policy: RetestPolicy
    interval: timedelta = timedelta(hours=6)
    concurrency: int = DEFAULT_CONCURRENCY
    reminder_every: timedelta = REMINDER_EVERY
    clock: Callable[[], datetime] = utcnow
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    monotonic: Callable[[], float] = time.monotonic
    interactive_http: httpx.AsyncClient | None = None
    """The client for one re-test someone waits for; ``http`` (the bulk client) when not given."""
    store: SecretStore | None = None
    """The secret store the bot is configured with (None: ``local``)."""

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.interval <= timedelta(0):
            raise ValueError("interval must be positive")
        # Provider calls in flight across every run of this process (the schedule and several
        # `test all` at once), so they never outgrow the HTTP client's pool.
        self._slots = asyncio.Semaphore(self.concurrency)

    # --- from Slack -------------------------------------------------------------------------------

    async def may_retest(self, actor: str) -> Refused | None:
        check = await self.policy.check(actor)
        return None if check.allowed else self.policy.refusal(check)

    async def retest_one(
        self,
        team_id: str,
        actor: str,
        *,
        connection_id: str | None = None,
        name: str | None = None,
        on_result: OnResult | None = None,
    ) -> RetestResult | Refused:
        """Re-test one connection of the workspace, found by id (a button) or by name (a
        command), if ``actor`` may re-test."""
        if (refused := await self.may_retest(actor)) is not None:
            return refused
        async with self.db.read() as tx:
            row = await find_connection(tx, team_id, connection_id=connection_id, name=name, any_status=True)
            if isinstance(row, Refused):
                return row
            if row.status not in _RETESTABLE:
                return Refused(
                    Refusal.WRONG_STATUS,
                    f"“{row.name}” is {row.status.label}: it has no stored credentials to re-test.",
                )
            [target] = await self._targets(tx, [row])
        # Someone waits for this one: it runs on the interactive client, past the bulk slots, so a
        # running `test all` or schedule cannot hold it up.
        results = await self._run([target], Trigger.RETEST, actor, on_result, interactive=True)
        if results:
            return results[0]
        async with self.db.read() as tx:
            still_there = await tx.connections.get(team_id, target.connection_id)
        if still_there is None:
            return Refused(Refusal.NOT_FOUND, "That connection was removed while it was being re-tested.")
        # The re-test itself broke (logged by _run): not the user's problem to diagnose.
        raise RetestFailed(target.connection_id)

    async def retest_all(
        self,
        team_id: str,
        actor: str,
        *,
        on_start: OnStart | None = None,
        on_result: OnResult | None = None,
    ) -> RetestReport | BulkRunning | Refused:
        """Re-test every active connection of the workspace, if ``actor`` may re-test and no other
        ``test all`` of the workspace is running (then: that one, and nothing is re-tested).

        The run is a row claimed in the transaction that reads what to re-test, refreshed with the
        progress while it runs and deleted at the end; a row left by a process that died goes
        stale and is taken over (:data:`BULK_STALE_AFTER`)."""
        if (refused := await self.may_retest(actor)) is not None:
            return refused
        started, now = self.monotonic(), self.clock()
        async with self.db.transaction() as tx:
            rows = await tx.connections.active(team_id)
            run = BulkRetest(
                team_id=team_id, started_by=actor, started_at=now, heartbeat_at=now, total=len(rows)
            )
            holder = await tx.bulk_retests.claim(run, now - BULK_STALE_AFTER)
            if holder is not None:
                return BulkRunning(holder.started_by, holder.started_at, holder.total, holder.done)
            targets = await self._targets(tx, rows)
        done = 0

        async def counted(result: RetestResult) -> None:
            nonlocal done
            done += 1
            if on_result is not None:
                await on_result(result)

        heartbeat = asyncio.create_task(self._heartbeat(run, lambda: done), name=f"test-all:{team_id}")
        try:
            if on_start is not None:
                await on_start(len(targets))
            results = await self._run(targets, Trigger.RETEST, actor, counted)
        finally:
            heartbeat.cancel()
            await self._release(run)
        return _report(results, started, self.monotonic())

    async def _heartbeat(self, run: BulkRetest, done: Callable[[], int]) -> None:
        while True:
            await asyncio.sleep(BULK_HEARTBEAT_SECONDS)
            try:
                async with self.db.transaction() as tx:
                    await tx.bulk_retests.progress(run, done(), self.clock())
            except Exception as exc:  # a missed beat or two is harmless; many let another run start
                logger.warning(
                    "could not record the progress of test all in %s: %s", run.team_id, _where(exc)
                )

    async def _release(self, run: BulkRetest) -> None:
        try:
            # Bounded: it runs in a `finally`, at shutdown too, and must not wait on a lock forever.
            async with asyncio.timeout(RELEASE_SECONDS), self.db.transaction() as tx:
                await tx.bulk_retests.release(run)
        except Exception as exc:  # the row goes stale and the next test all takes it over
            logger.warning("could not end the test all of %s: %s", run.team_id, _where(exc))

    # --- the schedule -----------------------------------------------------------------------------

    async def run_due(
        self, limit: int = SCHEDULE_BATCH, *, on_result: OnResult | None = None
    ) -> RetestReport:
        """Re-test the active connections (of every workspace) whose next check is due, after
        scheduling any that have none yet. Claims are made in the database, so when several
        processes run this at once each due connection is re-tested by one of them.

        Connections are claimed a few at a time (twice the concurrency), each claim leased for
        :data:`CLAIM_LEASE`: a process stopped in the middle of a run leaves little unclaimed
        work behind, and what it leaves is taken over when the lease ends."""
        now = self.clock()
        started = self.monotonic()
        async with self.db.transaction() as tx:
            await tx.connections.schedule_unscheduled(now, self.interval, limit)
        results: list[RetestResult] = []
        claimed_in_all = 0
        while claimed_in_all < limit:
            batch = min(2 * self.concurrency, limit - claimed_in_all)
            async with self.db.transaction() as tx:
                claimed = await tx.connections.claim_due(now, CLAIM_LEASE, batch)
                targets = await self._targets(tx, claimed)
            if not claimed:
                break
            claimed_in_all += len(claimed)
            logger.info("re-testing %d connection(s) due on the schedule", len(targets))
            results += await self._run(targets, Trigger.SCHEDULE, None, on_result)
        return _report(results, started, self.monotonic())

    async def record_alert(self, team_id: str, connection_id: str, channel: str, ts: str) -> None:
        """Remember where the alert about a failure was posted, so a reminder or the recovery
        can reply in its thread. Ignored if the connection recovered in the meantime."""
        async with self.db.transaction() as tx:
            row = await tx.connections.lock(team_id, connection_id)
            if row is not None and row.health is Health.FAILING:
                row.alert_channel, row.alert_ts = channel, ts

    async def alert_not_posted(self, team_id: str, connection_id: str) -> None:
        """The alert (or reminder) about a failing connection could not be posted (Slack refused
        or was down): make it due again, so the next re-test that still finds the connection
        failing raises it instead of a day later. It still counts as raised, so a recovery
        before then is announced (the re-test's reply told the user an alert went out)."""
        async with self.db.transaction() as tx:
            row = await tx.connections.lock(team_id, connection_id)
            if row is not None and row.health is Health.FAILING:
                row.alerted_at = self.clock() - self.reminder_every

    # --- the work ---------------------------------------------------------------------------------

    async def _targets(self, tx: UnitOfWork, rows: Sequence[Connection]) -> list[_Target]:
        """What to re-test for ``rows``: their sealed fields of the version in use.

        On PostgreSQL the rows and their fields are read by separate statements, so a rotation
        approved in between can leave a row whose version has no fields any more; such rows are
        read again (they now name the new version) rather than tested with nothing."""
        local = [(r.id, r.credential_version) for r in rows if r.secret_store is None]
        sealed = await tx.credentials.for_connections(local)
        targets: list[_Target] = []
        for row in rows:
            fields = sealed.get(row.id, [])
            if row.secret_store is None and not fields:
                # An approval may have moved the credential to the store meanwhile, too.
                fresh = await tx.connections.get(row.team_id, row.id)
                if fresh is None or fresh.status not in _RETESTABLE:
                    continue
                await tx.session.refresh(fresh)
                row = fresh
                if row.secret_store is None:
                    fields = (await tx.credentials.for_connections([(row.id, row.credential_version)]))[
                        row.id
                    ]
                    if not fields:
                        logger.warning("connection %s has no stored credential to re-test", row.id)
                        continue
            config = {str(k): str(v) for k, v in row.config.items()}
            if row.secret_store is not None:
                targets.append(
                    _Target(
                        team_id=row.team_id,
                        connection_id=row.id,
                        name=row.name,
                        provider_key=row.provider,
                        version=row.credential_version,
                        config=config,
                        sealed={},
                        store=row.secret_store,
                        path=row.secret_path,
                        written=row.secret_version,
                    )
                )
                continue
            bound_to = config_digest(row.provider, config)
            targets.append(
                _Target(
                    team_id=row.team_id,
                    connection_id=row.id,
                    name=row.name,
                    provider_key=row.provider,
                    version=row.credential_version,
                    config=config,
                    # Bound associated data whatever a row's scheme says: every legacy row that
                    # opened was bound at start-up, so a legacy row now was written by someone else.
                    sealed={
                        c.field: (
                            Sealed(c.key_id, c.nonce, c.ciphertext),
                            associated_data(c.connection_id, c.field, c.version, bound_to),
                        )
                        for c in fields
                    },
                )
            )
        return targets

    async def _run(
        self,
        targets: Sequence[_Target],
        trigger: Trigger,
        actor: str | None,
        on_result: OnResult | None,
        *,
        interactive: bool = False,
    ) -> list[RetestResult]:
        http = (self.interactive_http or self.http) if interactive else self.http
        slots: contextlib.AbstractAsyncContextManager[object] = (
            contextlib.nullcontext() if interactive else self._slots
        )
        queue = deque((target, 0) for target in targets)
        results: list[RetestResult] = []
        resume_at = 0.0
        # A worker hands its result to a recording task and goes on to its next provider call:
        # the transaction that records a result is then never on the path between two calls.
        # At most `concurrency` results wait to be recorded, so memory and database connections
        # stay bounded.
        recording = asyncio.Semaphore(self.concurrency)

        async def record(target: _Target, verification: Verification) -> None:
            try:
                result = await self._record(target, verification, trigger, actor)
            except Exception as exc:
                logger.error("recording the re-test of %s failed: %s", target.connection_id, _where(exc))
                return
            finally:
                recording.release()
            if result is None:
                return
            results.append(result)
            if on_result is not None:
                try:
                    await on_result(result)
                except Exception as exc:
                    logger.error("handling the re-test of %s failed: %s", target.connection_id, _where(exc))

        async def worker(group: asyncio.TaskGroup) -> None:
            nonlocal resume_at
            while queue:
                target, attempt = queue.popleft()
                while (wait := resume_at - self.monotonic()) > 0:
                    await self.sleep(wait)
                try:
                    async with slots:
                        verification = await self._verify(target, http)
                except Exception as exc:
                    # Where, not what: a provider's exception text could quote what it was sent.
                    logger.error("re-testing connection %s failed: %s", target.connection_id, _where(exc))
                    continue
                if verification.outcome is Outcome.RATE_LIMITED and attempt < RATE_LIMIT_REQUEUES:
                    asked = verification.retry_after
                    pause = RATE_LIMIT_PAUSE_SECONDS if asked is None else asked
                    # Not "pause > max": that would let NaN through.
                    if 0 <= pause <= RATE_LIMIT_MAX_PAUSE_SECONDS:
                        resume_at = max(resume_at, self.monotonic() + pause)
                        queue.append((target, attempt + 1))
                        continue
                await recording.acquire()
                group.create_task(record(target, verification))

        # A task group: if the run is cancelled (shutdown), workers and recordings stop together.
        async with asyncio.TaskGroup() as group:
            for _ in range(min(self.concurrency, len(queue))):
                group.create_task(worker(group))
        return results

    async def _verify(self, target: _Target, http: httpx.AsyncClient) -> Verification:
        provider = self.providers.find(target.provider_key)
        if provider is None:
            return Verification(
                outcome=Outcome.PROVIDER_ERROR,
                summary=f"This bot no longer offers the provider {target.provider_key!r}.",
                checks=(),
                hints=("Ask whoever runs the bot whether the provider was removed on purpose.",),
                latency_ms=0,
            )
        if target.store is not None:
            return await self._from_store(target, provider, http)
        values: dict[str, str | Secret] = dict(target.config)
        try:
            for name, (sealed, aad) in target.sealed.items():
                try:
                    values[name] = self.cipher.open(sealed, aad)
                except DecryptionError:
                    # Not a key problem (the start-up guard proved the key): the row was altered.
                    logger.warning(NOT_USED, target.name, target.connection_id)
                    return _unopened(target.name)
            return await provider.verify(values, http)
        finally:
            # The plain text lives for the provider call only.
            values.clear()

    async def _from_store(self, target: _Target, provider: Provider, http: httpx.AsyncClient) -> Verification:
        """Test the credential the secret store holds now, with the settings stored in the database
        (which passed the outbound policy when they were submitted: a host written into the store
        outside the bot is never contacted). A version the bot did not write is tested and reported
        as changed outside the bot. The version the bot wrote holding other settings than the
        database means the database was changed: then nothing is sent. A store that cannot be read
        gives a result that says where and why, never an exception."""
        path = target.path or ""
        where = f"{path} in {store_title(target.store or '')}"
        moved = elsewhere(target.store, self.store)
        if moved is not None:
            summary = f"“{target.name}” was not tested: the bot is not set to use the store that holds it."
            return _store_verdict(Outcome.PROVIDER_ERROR, summary, "not the configured store", hints=(moved,))
        assert self.store is not None  # elsewhere() found it held by the configured store
        try:
            stored = await self.store.read(path)
        except StoreError as exc:
            return _store_unread(target.name, where, exc)
        secrets = set(provider.secret_fields)
        settings = {k: v.reveal() for k, v in stored.fields.items() if k not in secrets and v}
        if stored.version == target.written and settings != {k: v for k, v in target.config.items() if v}:
            # The version the bot wrote holds other settings than the database: the database was
            # changed (a store keeps a version as written), so the credential goes nowhere.
            logger.warning(NOT_USED_IN_STORE, target.name, target.connection_id, where)
            return _store_verdict(
                Outcome.INVALID_INPUT,
                f"The stored settings of “{target.name}” do not match the secret the bot wrote to "
                f"{where}, so the credential was not used and nothing was sent.",
                "does not match the connection's stored settings",
                conclusive=True,
                hints=_unopened(target.name).hints,
            )
        drift = None if stored.version == target.written else await self._drift(target, stored)
        values: dict[str, str | Secret] = dict(target.config)
        try:
            values.update({k: v for k, v in stored.fields.items() if k in secrets})
            missing = [
                f.name for f in provider.fields if f.secret and not f.optional and not values.get(f.name)
            ]
            if missing:
                logger.warning(
                    "the secret of connection %s in %s lacks %s", target.connection_id, where, missing
                )
                return _store_verdict(
                    Outcome.INVALID_INPUT,
                    f"The secret at {where} lacks {', '.join(missing)}: it was changed outside the bot.",
                    f"lacks {', '.join(missing)}",
                    conclusive=True,
                )
            verification = await provider.verify(values, http)
        finally:
            values.clear()  # the plain text lives for the provider call only
        if drift is None:
            return verification
        logger.warning(
            "the secret of connection %s in %s was changed outside the bot", target.connection_id, where
        )
        return _with_drift(verification, drift, where)

    async def _drift(self, target: _Target, stored: StoredSecret) -> str | None:
        """Why the store's current version, which is not the one the target knows the bot wrote,
        was changed outside the bot; None when the bot wrote it after all (an approved rotation
        since the target was read)."""
        async with self.db.read() as tx:
            row = await tx.connections.get(target.team_id, target.connection_id)
        if row is not None and row.secret_version == stored.version:
            return None
        return f"changed outside the bot (current version {stored.version}, the bot wrote {target.written})"

    async def _record(
        self, target: _Target, verification: Verification, trigger: Trigger, actor: str | None
    ) -> RetestResult | None:
        now = self.clock()
        async with self.db.transaction() as tx:
            row = await tx.connections.lock(target.team_id, target.connection_id)
            if row is None:
                return None
            await tx.verifications.add(history_row(verification, row, trigger, actor))
            before = row.health
            change = None
            # A result about a credential that was rotated or removed meanwhile changes nothing.
            current = row.status in _RETESTABLE and row.credential_version == target.version
            if current and verification.conclusive:
                change = self._apply(row, verification.ok, now)
            if trigger is Trigger.SCHEDULE and row.status is Status.ACTIVE:
                # The claim only leased the check; the next one is an interval from now.
                row.next_check_at = now + self.interval
            # A re-test someone asked for is always audited; the schedule's, when the health changed.
            if actor is not None or (change is not None and change.kind is not ChangeKind.STILL_FAILING):
                await tx.audit.add(_event(row, actor, verification, before, now))
            return RetestResult(row.team_id, summarize(row, self.providers), verification, change)

    def _apply(self, row: Connection, ok: bool, now: datetime) -> HealthChange | None:
        """Set the row's health from a conclusive result; the change to announce, if any.
        Pending connections are not alerted about: nobody relies on them yet."""
        before = row.health
        row.last_verified_at = now
        alerting = row.status is Status.ACTIVE
        if ok:
            row.health = Health.HEALTHY
            if before is not Health.FAILING:
                return None
            change = HealthChange(ChangeKind.RECOVERED, row.failing_since, row.alert_channel, row.alert_ts)
            alerted = row.alerted_at is not None
            row.failing_since = row.alert_channel = row.alert_ts = row.alerted_at = None
            return change if alerting and alerted else None
        row.health = Health.FAILING
        if before is not Health.FAILING:
            row.failing_since = now
            if not alerting:
                return None
            row.alerted_at = now
            return HealthChange(ChangeKind.FAILED, now)
        last = row.alerted_at
        if alerting and (last is None or now - last >= self.reminder_every):
            row.alerted_at = now
            return HealthChange(ChangeKind.STILL_FAILING, row.failing_since, row.alert_channel, row.alert_ts)
        return None


NOT_USED_IN_STORE = (
    "the stored configuration of %s (%s) does not match the secret the bot wrote to %s; it was not "
    "used: its settings were changed outside the bot"
)
NOT_USED = (
    "the stored configuration of %s (%s) does not match its sealed credential; it was not used: its "
    "settings or its ciphertext were changed outside the bot"
)


def _unopened(name: str) -> Verification:
    """The result of a re-test whose credential did not open for the stored configuration."""
    return Verification(
        outcome=Outcome.INVALID_INPUT,
        summary=(
            f"The stored settings of “{name}” do not match its sealed credential, so the credential "
            "was not used and nothing was sent."
        ),
        checks=(Check("Stored credential", False, "does not match the connection's stored settings"),),
        hints=(
            "Someone changed this connection's settings (such as its endpoint) or its encrypted "
            "credential directly in the bot's database. Tell whoever runs the bot.",
            "Rotate the credential with the right settings, or remove the connection.",
        ),
        latency_ms=0,
    )


def _store_verdict(
    outcome: Outcome, summary: str, detail: str, *, conclusive: bool = False, hints: tuple[str, ...] = ()
) -> Verification:
    """A re-test that ended at the secret store: nothing was sent to the provider."""
    return Verification(
        outcome=outcome,
        summary=summary,
        checks=(Check(STORE_CHECK, False, detail),),
        hints=hints or _STORE_HINTS,
        latency_ms=0,
        inconclusive=not conclusive,
    )


_STORE_HINTS = (
    "Whoever runs the bot: check that the secret store answers and that its policy lets the bot "
    "read the connection's secret (`/healthz` reports the store).",
    "Re-test it once the store works again; its health was left as it was.",
)


def _store_unread(name: str, where: str, error: StoreError) -> Verification:
    """The result of a re-test whose credential could not be read from the store."""
    if error.failure is StoreFailure.NOT_FOUND:
        return _store_verdict(
            Outcome.INVALID_INPUT,
            f"The secret at {where} was deleted outside the bot, so “{name}” has no credential to test.",
            "deleted outside the bot",
            conclusive=True,
            hints=(
                "Pipelines that read this secret fail too. Rotate the connection to write a credential "
                "there again, or remove the connection.",
            ),
        )
    logger.warning("could not read the secret of %s: %s", where, error)
    why = {
        StoreFailure.DENIED: "the store refuses the bot",
        StoreFailure.UNREACHABLE: "the store did not answer",
    }.get(error.failure, "the store refused the request")
    return _store_verdict(
        Outcome.UNREACHABLE, f"The secret at {where} could not be read ({error}), so nothing was tested.", why
    )


def _with_drift(verification: Verification, drift: str, where: str) -> Verification:
    """``verification`` of what the store holds now, saying it was changed outside the bot."""
    check = Check(STORE_CHECK, False, drift)
    hint = (
        f"Someone changed the secret at {inert(where)} without the bot, so the credential in use is not "
        "the one an admin approved. Find out who; to put an approved credential back, rotate the "
        "connection with `/connections rotate`."
    )
    summary = f"Changed outside the bot: {verification.summary}".strip()
    return Verification(
        outcome=verification.outcome,
        summary=summary,
        checks=(check, *verification.checks),
        hints=(hint, *verification.hints),
        latency_ms=verification.latency_ms,
        request_id=verification.request_id,
        retry_after=verification.retry_after,
        inconclusive=verification.inconclusive,
    )


class RetestFailed(Exception):
    """A re-test broke on our side (a bug, not the provider's answer); nothing was recorded."""

    def __init__(self, connection_id: str) -> None:
        super().__init__(f"re-testing connection {connection_id} failed")
        self.connection_id = connection_id


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return type(exc).__name__
    last = frames[-1]
    return f"{type(exc).__name__} at {last.filename}:{last.lineno} in {last.name}"


def _report(results: list[RetestResult], started: float, ended: float) -> RetestReport:
    def rank(result: RetestResult) -> tuple[int, str]:
        group = 2 if result.ok else (1 if not result.conclusive else 0)
        return group, result.connection.name.casefold()

    return RetestReport(tuple(sorted(results, key=rank)), elapsed_ms=round((ended - started) * 1000))


def _event(
    row: Connection, actor: str | None, verification: Verification, before: Health, now: datetime
) -> AuditEvent:
    """A re-test by ``actor``, or (None) a health change found by the schedule."""
    extra = {"trigger": Trigger.SCHEDULE.value} if actor is None else {"latency_ms": verification.latency_ms}
    return audit_event(
        row.team_id,
        SYSTEM_ACTOR if actor is None else actor,
        "connection.health_changed" if actor is None else "connection.retested",
        now,
        connection=row,
        before=row.status,
        after=row.status,
        reason=verification.outcome.value,
        details={"health_before": before.value, "health_after": row.health.value, **extra},
    )
