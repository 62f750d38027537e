"""How long ``/connections test all`` takes for many stored connections, and the memory it uses,
with the credentials in the bot's own database or in a secret store.

CONNECTIONS stored, active Confluent Cloud connections (each a Cloud API key of its own) are
re-tested by ``RetestService.retest_all``, the call behind ``/connections test all``, with services
built by ``bot.runtime.start_services`` (so the bot's own httpx client, its connection pool, the
provider's request path and the configured secret store, with its threads and timeouts, are what
is measured). The fake Confluent Cloud API runs in a process of its own, over real loopback HTTP,
and answers every request after DELAY_MS milliseconds; a Cloud API key takes one request to verify,
so the best a pool of CONCURRENCY workers can do is ``CONNECTIONS x DELAY_MS / CONCURRENCY``.

    python -m bench.retest [--connections 1000] [--delay-ms 100] [--concurrency 16]
                           [--database sqlite|postgresql|both] [--postgres-url URL]
                           [--store local|aws|vault|all] [--store-delay-ms 0]
                           [--pool-check 50]

Where the credentials live (``--store``):

* ``local``: sealed in the bot's database, exactly as ``ConnectionService.create`` seals them;
* ``aws``: AWS Secrets Manager, served by moto's standalone server (``tests/support/moto_server.py``,
  IAM enforced) in a process of its own; the bot signs in as the identity holding exactly
  ``docs/aws-iam-policy.json``;
* ``vault``: the fake Vault KV version 2 API (``tests/fakes/vault_api.py``) in a process of its
  own, the bot's token holding exactly ``docs/vault-policy.hcl``; ``--store-delay-ms`` makes it
  answer each read of a secret that much later, as a real Vault across a network would.

With a store, each connection is left as an approval leaves it: its credential written through
the bot's store with its write token, the connection recording the store, the path and the version,
and no credential row in the database. Every re-test then reads the secret from the store before
its provider call; the time those reads take is reported as the store's share.

The call is made twice: timed (the figures), then again under tracemalloc for its peak memory
(tracing slows it down, so that run's wall time means nothing). ``--pool-check N`` adds N
connections of another workspace re-tested at concurrency 1 and at CONCURRENCY, to show that the
pool of workers is what makes the difference. Each (database, store) runs in a process of its own,
so the maximum RSS reported is that run's alone; with several, a table at the end compares each
store with the local one.
PostgreSQL gets a throw-away database on ``--postgres-url``'s server, dropped afterwards.
Run it from the repository root with the test extras installed (it reuses the test fakes).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import json
import logging
import multiprocessing
import os
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

import httpx
import psycopg
import urllib3.connection
from psycopg import sql
from sqlalchemy import event, make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool
from starlette.types import ASGIApp, Receive, Scope, Send

from bot.crypto import Cipher, MasterKey
from bot.domain import Health, Refused, Status
from bot.redaction import Secret
from bot.runtime import Services, start_services
from bot.services.records import sealed_field
from bot.services.retests import RetestService
from bot.settings import Settings
from bot.store import Connection, Database
from bot.store.migrate import upgrade_to_head
from bot.stores.base import SecretStore, StoredSecret
from bot.stores.tokens import write_token
from tests.fakes.confluent_api import FakeConfluent, new_api_key, new_api_secret
from tests.fakes.vault_api import FakeVault
from tests.support.moto_server import running_moto
from tests.support.servers import serve_asgi

TEAM_ID = "T0BENCH01"
POOL_TEAM_ID = "T0BENCH02"
"""A second workspace with a few connections, for the concurrency-1 comparison."""
ACTOR = "U0BENCH01"
PROVIDER = "confluent_cloud"
SEED_BATCH = 250
SEED_WRITES_AT_ONCE = 16
"""Secrets written to the store at once while seeding (as many as approvals could make)."""
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
STORES = ("local", "aws", "vault")
DATABASES = ("sqlite", "postgresql")
REPOSITORY = Path(__file__).resolve().parents[1]
VAULT_POLICY = REPOSITORY / "docs" / "vault-policy.hcl"
RESULT_PREFIX = "RESULT-JSON "
"""A child run's figures, one JSON line for the parent's table (not shown)."""


# --- the fakes, each in a process of its own -----------------------------------------------------


class InFlight:
    """ASGI middleware that counts requests, the most in flight at once, and the TCP connections
    (client ports) they came on: what the bot's pool really achieved, seen from the server."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.reset()

    def reset(self) -> None:
        self.now = self.peak = self.requests = 0
        self.peers: set[Any] = set()

    def stats(self) -> dict[str, int]:
        return {"requests": self.requests, "peak_in_flight": self.peak, "tcp_connections": len(self.peers)}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.requests += 1
        self.now += 1
        self.peak = max(self.peak, self.now)
        self.peers.add(scope.get("client"))
        try:
            await self.app(scope, receive, send)
        finally:
            self.now -= 1


def _serve_metered(app: ASGIApp, forget: Callable[[], None], pipe: Pipe, given: str) -> None:
    """Serve ``app`` until told to stop; answer "reset" and "stats" on ``pipe``."""
    meter = InFlight(app)
    with serve_asgi(meter) as url:
        pipe.send((url, given))
        while (command := pipe.recv()) != "stop":
            if command == "reset":
                meter.reset()
                forget()
            pipe.send(meter.stats())


def serve_confluent(keys: list[tuple[str, str]], delay: float, pipe: Pipe) -> None:
    fake = FakeConfluent(delay=delay)
    for key, secret in keys:
        fake.add_cloud_key(key, secret, environments=1)
    _serve_metered(fake.app, fake.requests.clear, pipe, "")


def serve_vault(policy: str, read_delay: float, pipe: Pipe) -> None:
    """The fake Vault, with one token holding ``policy`` (sent back with the URL), answering every
    read of a secret after ``read_delay`` seconds."""
    fake = FakeVault()
    token = fake.add_token(policy)
    if read_delay > 0:
        fake.delay_next(read_delay, path="/v1/secret/data/", method="GET", times=sys.maxsize)
    _serve_metered(fake.app, fake.requests.clear, pipe, token)


class FakeProcess:
    def __init__(self, pipe: Pipe, url: str, given: str) -> None:
        self._pipe, self.url, self.given = pipe, url, given

    def ask(self, command: str) -> dict[str, int]:
        self._pipe.send(command)
        answer: dict[str, int] = self._pipe.recv()
        return answer


@contextmanager
def in_process(what: str, target: Callable[..., None], *args: Any) -> Iterator[FakeProcess]:
    # Its own process, so the fake's CPU time, GIL and memory are not counted against the bot.
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    process = context.Process(target=target, args=(*args, theirs), daemon=True)
    process.start()
    try:
        if not ours.poll(30):
            raise SystemExit(f"{what} did not start")
        url, given = ours.recv()
        yield FakeProcess(ours, url, given)
    finally:
        ours.send("stop")
        process.join(10)


# --- the secret store ----------------------------------------------------------------------------


@dataclass(frozen=True)
class StoreServer:
    """What serves the store, and the settings that point the bot at it."""

    description: str
    environment: dict[str, str]
    stats: Callable[[], dict[str, int]] | None = None
    """The server's own count of what it saw (when it is ours to measure)."""
    reset: Callable[[], object] = lambda: None


@contextmanager
def store_server(store: str, read_delay: float) -> Iterator[StoreServer | None]:
    if store == "local":
        yield None
    elif store == "aws":
        with running_moto() as moto:
            yield StoreServer(
                "AWS Secrets Manager: moto's server, IAM enforced; the bot signs in as "
                f"{moto.bot.name} holding exactly docs/aws-iam-policy.json",
                moto.environment(moto.bot),
            )
    else:
        with in_process("the fake Vault", serve_vault, VAULT_POLICY.read_text(), read_delay) as vault:
            delayed = f", answering each read after {read_delay * 1000:g} ms" if read_delay else ""
            yield StoreServer(
                "Vault KV v2: the fake Vault API over loopback HTTP; the bot's token holds exactly "
                f"docs/vault-policy.hcl{delayed}",
                {"VAULT_ADDR": vault.url, "VAULT_TOKEN": vault.given},
                stats=functools.partial(vault.ask, "stats"),
                reset=functools.partial(vault.ask, "reset"),
            )


class StoreMeter:
    """Times every read the re-tests make through the bot's store (the instance the services
    share), and counts the TCP connections its HTTP client opens (botocore and hvac both sit on
    urllib3): a client or connection per call would show here."""

    def __init__(self, store: SecretStore) -> None:
        self.reads: list[float] = []
        self.opened = 0
        read = store.read

        async def timed(path: str) -> StoredSecret:
            started = time.perf_counter()
            try:
                return await read(path)
            finally:
                self.reads.append(time.perf_counter() - started)

        store.read = timed  # type: ignore[method-assign]
        # The socket a connection opens (again, when the server closed it after an answer).
        connect = urllib3.connection.HTTPConnection._new_conn
        meter = self

        def counted(connection: Any) -> Any:
            meter.opened += 1
            return connect(connection)

        urllib3.connection.HTTPConnection._new_conn = counted  # type: ignore[method-assign]

    def reset(self) -> None:
        self.reads.clear()
        self.opened = 0

    def figures(self) -> StoreFigures:
        reads = sorted(self.reads)
        if not reads:
            return StoreFigures()
        return StoreFigures(
            reads=len(reads),
            total=sum(reads),
            median=statistics.median(reads),
            p95=reads[min(len(reads) - 1, round(0.95 * (len(reads) - 1)))],
            tcp_opened=self.opened,
        )


@dataclass(frozen=True)
class StoreFigures:
    reads: int = 0
    total: float = 0.0
    """Seconds spent in store reads, summed over the workers."""
    median: float = 0.0
    p95: float = 0.0
    tcp_opened: int = 0


def store_limits(store: SecretStore) -> str:
    """The store's thread pool and HTTP connection pool, read from the objects the bot built."""
    executor = getattr(store, "_threads", None) or getattr(store, "_executor", None)
    threads = getattr(executor, "_max_workers", "?")
    client = getattr(store, "_client", None)
    connections: object = "?"
    config = getattr(getattr(client, "meta", None), "config", None)
    if config is not None:  # botocore
        connections = config.max_pool_connections
    session = getattr(getattr(client, "adapter", None), "session", None)
    if session is not None:  # hvac over requests
        connections = getattr(session.get_adapter("http://"), "_pool_maxsize", "?")
    return f"{threads} threads, {connections} HTTP connections kept"


# --- databases -----------------------------------------------------------------------------------


@contextmanager
def throwaway_database(kind: str, postgres_url: str) -> Iterator[str]:
    """A user-style URL to a new, empty database, removed afterwards (as tests/support does)."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{Path(tmp) / 'bench.db'}"
        return
    admin = make_url(postgres_url)
    admin_dsn = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"cbbench_{secrets.token_hex(6)}"
    with psycopg.connect(admin_dsn, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield admin.set(drivername="postgresql", database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as connection:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def new_connection(team_id: str, number: int, key: str, now: datetime) -> Connection:
    """An active, healthy, approved connection (no provider call)."""
    return Connection(
        team_id=team_id,
        name=f"bench connection {number:05d}",
        provider=PROVIDER,
        created_by=ACTOR,
        status=Status.ACTIVE,
        health=Health.HEALTHY,
        key_hint=Secret(key).masked(),
        created_at=now,
        updated_at=now,
        last_verified_at=now,
        credential_version=1,
        credential_created_at=now,
        decided_by=ACTOR,
        decided_at=now,
    )


async def seed(db: Database, cipher: Cipher, team_id: str, keys: Sequence[tuple[str, str]]) -> None:
    """Store ``keys`` as active, healthy connections, a few hundred per transaction, their
    credentials sealed exactly as ConnectionService.create seals them."""
    now = datetime.now(UTC)
    for start in range(0, len(keys), SEED_BATCH):
        async with db.transaction() as tx:
            rows = [
                (new_connection(team_id, number, key, now), {"api_key": key, "api_secret": secret})
                for number, (key, secret) in enumerate(keys[start : start + SEED_BATCH], start)
            ]
            tx.session.add_all([connection for connection, _ in rows])
            await tx.session.flush()
            for connection, fields in rows:
                for field_name, value in fields.items():
                    tx.session.add(sealed_field(cipher, connection, {}, field_name, 1, Secret(value), now))
            await tx.session.flush()


async def seed_in_store(
    services: Services, settings: Settings, team_id: str, keys: Sequence[tuple[str, str]]
) -> None:
    """Store ``keys`` as connections an approval delivered to the store: each secret written
    through the bot's store with the write token approval uses, the connection recording the
    store, path and version, and no credential row in the database."""
    store = services.store
    assert store is not None
    now = datetime.now(UTC)
    connections = [new_connection(team_id, n, key, now) for n, (key, _) in enumerate(keys)]
    at_once = asyncio.Semaphore(SEED_WRITES_AT_ONCE)

    async def deliver(connection: Connection, key: str, secret: str) -> None:
        path = settings.secret_path.render(
            team=team_id, provider=PROVIDER, name=connection.name, connection_id=connection.id
        )
        metadata = {
            "provider": PROVIDER,
            "connection-id": connection.id,
            "owner": ACTOR,
            "approved-by": ACTOR,
            "approved-at": now.isoformat(timespec="seconds"),
        }
        async with at_once:
            written = await store.write(
                path,
                {"api_key": Secret(key), "api_secret": Secret(secret)},
                token=write_token(connection.id, connection.credential_version),
                replaces=None,
                metadata=metadata,
            )
        connection.secret_store = store.key
        connection.secret_path = path
        connection.secret_version = written.version

    await asyncio.gather(
        *(deliver(c, key, secret) for c, (key, secret) in zip(connections, keys, strict=True))
    )
    for start in range(0, len(connections), SEED_BATCH):
        async with services.db.transaction() as tx:
            tx.session.add_all(connections[start : start + SEED_BATCH])


async def credential_rows(db: Database) -> int:
    async with db.read() as tx:
        return int((await tx.session.execute(text("SELECT count(*) FROM credentials"))).scalar_one())


# --- measuring -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    connections: int
    concurrency: int
    wall: float
    cpu: float
    """CPU seconds of this process (every thread) during the call."""
    healthy: int
    traced_peak: int | None
    db_connects: int
    """Database connections opened during the call (the engine's pool closing and reopening)."""
    server: dict[str, int]
    store: StoreFigures = field(default_factory=StoreFigures)
    store_server: dict[str, int] | None = None

    def ideal(self, delay: float) -> float:
        return self.connections * delay / self.concurrency

    def ideal_with_store(self, delay: float) -> float:
        """The provider bound with each re-test's store read (its median) on the same path."""
        return self.connections * (delay + self.store.median) / self.concurrency

    def store_share(self) -> float:
        """The part of the workers' time spent waiting on store reads."""
        return self.store.total / (self.wall * min(self.concurrency, self.connections))


class ConnectCounter:
    def __init__(self, engine: AsyncEngine) -> None:
        self.count = 0
        event.listen(engine.sync_engine, "connect", self._connected)

    def _connected(self, *_: object) -> None:
        self.count += 1


def http_limits(http: httpx.AsyncClient) -> str:
    """The client's connection limits, read from its pool (httpx keeps them private)."""
    pool = getattr(getattr(http, "_transport", None), "_pool", None)
    total = getattr(pool, "_max_connections", None)
    keepalive = getattr(pool, "_max_keepalive_connections", None)
    return f"max_connections={total}, max_keepalive_connections={keepalive}"


def db_limits(db: Database) -> str:
    pool = db.engine.pool
    size = pool.size() if isinstance(pool, QueuePool) else "n/a"
    overflow = getattr(pool, "_max_overflow", "n/a")
    return f"{type(pool).__name__} pool_size={size}, max_overflow={overflow}"


@dataclass(frozen=True)
class Meters:
    fake: FakeProcess
    connects: ConnectCounter
    store: StoreMeter | None
    store_server: StoreServer | None


async def retest_all(
    service: RetestService, concurrency: int, team_id: str, expected: int, meters: Meters, *, traced: bool
) -> Run:
    """One timed ``retest_all`` call; fails loudly unless every connection came back healthy."""
    meters.fake.ask("reset")
    if meters.store_server is not None:
        meters.store_server.reset()
    if meters.store is not None:
        meters.store.reset()
    gc.collect()
    meters.connects.count = 0
    if traced:
        tracemalloc.start()
    cpu = time.process_time()
    started = time.perf_counter()
    report = await service.retest_all(team_id, ACTOR)
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu
    peak = None
    if traced:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    if isinstance(report, Refused):
        raise SystemExit(f"retest_all was refused: {report.message}")
    if report.healthy != expected or len(report.results) != expected:
        raise SystemExit(
            f"FAILED: {report.healthy} of {expected} connections healthy "
            f"({len(report.results)} results, {report.failing} failing, "
            f"{report.inconclusive} inconclusive)"
        )
    server_stats = meters.store_server.stats if meters.store_server is not None else None
    return Run(
        expected,
        concurrency,
        wall,
        cpu,
        report.healthy,
        peak,
        meters.connects.count,
        meters.fake.ask("stats"),
        meters.store.figures() if meters.store is not None else StoreFigures(),
        server_stats() if server_stats is not None else None,
    )


def pool_service(services: Services, concurrency: int) -> RetestService:
    """A RetestService like the bot's but with another pool size (same db, cipher, http client,
    store)."""
    return RetestService(
        services.db,
        services.cipher,
        services.providers,
        services.bulk_http,
        services.retests.policy,
        concurrency=concurrency,
        store=services.store,
    )


def mib(size: float) -> str:
    return f"{size / 2**20:.1f} MiB"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def max_rss() -> int:
    """The process's RSS high-water mark in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f}/{five:.2f} on {os.cpu_count()} CPUs"


def line(label: str, run: Run, delay: float) -> str:
    ideal = run.ideal(delay)
    server = run.server
    text = (
        f"  {label:<7} n={run.connections:<5} concurrency={run.concurrency:<3} "
        f"wall {run.wall:6.2f} s  ideal {ideal:6.2f} s  ratio {run.wall / ideal:4.2f}x  "
        f"CPU {run.cpu / run.connections * 1000:4.2f} ms/retest  healthy {run.healthy}  "
        f"[server: {server['requests']} requests, peak {server['peak_in_flight']} in flight, "
        f"{server['tcp_connections']} TCP connections; {run.db_connects} database connections opened]"
    )
    figures = run.store
    if figures.reads:
        text += (
            f"\n          store: {figures.reads} reads, {figures.reads / run.wall:.0f}/s, median "
            f"{ms(figures.median)}, p95 {ms(figures.p95)}, {run.store_share():.0%} of the workers' time; "
            f"{figures.tcp_opened} TCP connections opened"
        )
        if run.store_server is not None:
            seen = run.store_server
            text += (
                f" [store server: {seen['requests']} requests, peak {seen['peak_in_flight']} in "
                f"flight, {seen['tcp_connections']} TCP connections]"
            )
    return text


# --- running -------------------------------------------------------------------------------------


async def bench(args: argparse.Namespace, database_url: str) -> None:
    delay = args.delay_ms / 1000
    kind = "sqlite" if database_url.startswith("sqlite") else "postgresql"
    keys = [(new_api_key(), new_api_secret()) for _ in range(args.connections + args.pool_check)]
    upgrade_to_head(database_url)
    with ExitStack() as stack:
        fake = stack.enter_context(in_process("the fake Confluent API", serve_confluent, keys, delay))
        server = stack.enter_context(store_server(args.store, args.store_delay_ms / 1000))
        settings = Settings(
            slack_bot_token=Secret("xoxb-bench"),
            slack_signing_secret=Secret("bench-signing-secret"),
            slack_api_url="http://127.0.0.1:9/",
            admin_channel="C0BENCH01",
            environment={
                "CONFLUENT_CLOUD_API_URL": fake.url,
                **(server.environment if server is not None else {}),
            },
            database_url=database_url,
            retest_concurrency=args.concurrency,
            master_key=MasterKey.generate().to_base64(),
            log_level="WARNING",
            secret_store=args.store,
        )
        services = await start_services(settings)
        connects = ConnectCounter(services.db.engine)
        try:
            seeding = time.perf_counter()
            if services.store is None:
                await seed(services.db, services.cipher, TEAM_ID, keys[: args.connections])
                await seed(services.db, services.cipher, POOL_TEAM_ID, keys[args.connections :])
                where = "sealed in the database"
            else:
                await seed_in_store(services, settings, TEAM_ID, keys[: args.connections])
                await seed_in_store(services, settings, POOL_TEAM_ID, keys[args.connections :])
                where = f"written to {services.store.title} ({store_limits(services.store)})"
            seeded = time.perf_counter() - seeding
            rows = await credential_rows(services.db)
            print(
                f"{kind}/{args.store}: {args.connections + args.pool_check} connections seeded in "
                f"{seeded:.1f} s, {where}; {rows} credential rows in the database; "
                f"httpx {http_limits(services.bulk_http)}; database {db_limits(services.db)}"
                + (f"\n  store: {server.description}" if server is not None else ""),
                flush=True,
            )
            meters = Meters(
                fake,
                connects,
                StoreMeter(services.store) if services.store is not None else None,
                server,
            )

            def run(concurrency: int, team_id: str, count: int, *, traced: bool) -> Awaitable[Run]:
                service = (
                    services.retests
                    if concurrency == args.concurrency
                    else pool_service(services, concurrency)
                )
                return retest_all(service, concurrency, team_id, count, meters, traced=traced)

            rss_before = max_rss()
            timed = await run(args.concurrency, TEAM_ID, args.connections, traced=False)
            rss_timed = max_rss()
            print(line("timed", timed, delay), flush=True)
            traced = await run(args.concurrency, TEAM_ID, args.connections, traced=True)
            print(line("traced", traced, delay) + "  <- tracemalloc on: for memory only", flush=True)
            serial = args.connections * delay
            print(
                f"  RESULT {kind}/{args.store}: wall {timed.wall:.2f} s, ideal {timed.ideal(delay):.2f} s, "
                f"ratio {timed.wall / timed.ideal(delay):.2f}x; serial estimate {serial:.1f} s "
                f"({serial / timed.wall:.1f}x faster); healthy {timed.healthy}/{args.connections}; "
                f"tracemalloc peak {mib(traced.traced_peak or 0)}; "
                f"max RSS {mib(rss_timed)} ({mib(rss_before)} before the call); {load()}",
                flush=True,
            )
            print(
                RESULT_PREFIX
                + json.dumps(
                    {
                        "database": kind,
                        "kind": args.store,
                        "connections": args.connections,
                        "wall": timed.wall,
                        "ideal": timed.ideal(delay),
                        "ideal_with_store": timed.ideal_with_store(delay),
                        "cpu_ms": timed.cpu / timed.connections * 1000,
                        "store": asdict(timed.store),
                        "store_share": timed.store_share(),
                        "traced_peak": traced.traced_peak or 0,
                        "max_rss": rss_timed,
                        "load": os.getloadavg()[0],
                    }
                ),
                flush=True,
            )
            if args.pool_check:
                for concurrency in (1, args.concurrency):
                    print(
                        line(
                            "pool", await run(concurrency, POOL_TEAM_ID, args.pool_check, traced=False), delay
                        ),
                        flush=True,
                    )
        finally:
            await services.close(drain_seconds=1)


def run_one(args: argparse.Namespace) -> None:
    with throwaway_database(args.database, args.postgres_url) as database_url:
        asyncio.run(bench(args, database_url))


def summary(results: list[dict[str, Any]]) -> str:
    """A Markdown table of the children's figures, each store against the local store."""
    local = {r["database"]: r["wall"] for r in results if r["kind"] == "local"}
    lines = [
        "| database | store | connections | wall time | ratio to local | ideal | ideal + store read "
        "| store reads: median / p95 | reads per second | workers' time in the store | CPU per re-test "
        "| tracemalloc peak | max RSS |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        baseline = local.get(r["database"])
        ratio = f"{r['wall'] / baseline:.2f}×" if baseline else "n/a"
        figures = r["store"]
        reads = figures["reads"]
        lines.append(
            f"| {r['database']} | {r['kind']} | {r['connections']} | {r['wall']:.2f} s | {ratio} "
            f"| {r['ideal']:.2f} s | {r['ideal_with_store']:.2f} s "
            + (
                f"| {ms(figures['median'])} / {ms(figures['p95'])} | {reads / r['wall']:.0f} "
                f"| {r['store_share']:.0%} "
                if reads
                else "| – | – | – "
            )
            + f"| {r['cpu_ms']:.2f} ms | {mib(r['traced_peak'])} | {mib(r['max_rss'])} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--delay-ms", type=float, default=100.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--database", choices=(*DATABASES, "both"), default="both")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument(
        "--store",
        choices=(*STORES, "all"),
        default="local",
        help="where the credentials live: the bot's database, AWS Secrets Manager (moto), Vault "
        "(the fake), or each in turn (default: local)",
    )
    parser.add_argument(
        "--store-delay-ms",
        type=float,
        default=0.0,
        help="vault only: the fake answers each read of a secret after this long, standing in for "
        "the round trip to a real Vault (default 0: loopback)",
    )
    parser.add_argument(
        "--pool-check",
        type=int,
        default=50,
        metavar="N",
        help="also re-test N connections at concurrency 1 and at --concurrency (0: skip)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.connections < 1 or args.concurrency < 1 or args.delay_ms <= 0:
        parser.error("--connections, --concurrency and --delay-ms must be positive")
    if args.pool_check < 0:
        parser.error("--pool-check must be 0 or more")
    if args.store_delay_ms < 0 or (args.store_delay_ms and args.store not in ("vault", "all")):
        parser.error("--store-delay-ms is for --store vault (moto has no such knob), 0 or more")

    print(
        f"retest_all: {args.connections} connections, concurrency {args.concurrency}, fake Confluent "
        f"answers each request after {args.delay_ms:g} ms over loopback HTTP; "
        f"ideal = {args.connections} x {args.delay_ms / 1000:g} s / {args.concurrency} = "
        f"{args.connections * args.delay_ms / 1000 / args.concurrency:.2f} s; "
        f"serial = {args.connections * args.delay_ms / 1000:.1f} s; {load()}",
        flush=True,
    )
    databases = DATABASES if args.database == "both" else (args.database,)
    stores = STORES if args.store == "all" else (args.store,)
    if len(databases) == 1 and len(stores) == 1:
        run_one(args)
        return
    # One process per run: ru_maxrss is the high-water mark of the whole process.
    failed = False
    results: list[dict[str, Any]] = []
    for kind in databases:
        for store in stores:
            command = [
                sys.executable,
                "-m",
                "bench.retest",
                *sys.argv[1:],
                "--database",
                kind,
                "--store",
                store,
                "--store-delay-ms",
                f"{args.store_delay_ms if store == 'vault' else 0:g}",
            ]
            completed = subprocess.run(command, check=False, stdout=subprocess.PIPE, text=True)
            for output in completed.stdout.splitlines()[1:]:
                if output.startswith(RESULT_PREFIX):
                    results.append(json.loads(output.removeprefix(RESULT_PREFIX)))
                else:
                    print(output, flush=True)
            failed = failed or completed.returncode != 0
    print(f"\n{summary(results)}\n\n{load()}", flush=True)
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
