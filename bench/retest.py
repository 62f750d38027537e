"""How long ``/connections test all`` takes for many stored connections, and the memory it uses.

CONNECTIONS stored, active Confluent Cloud connections (each a Cloud API key of its own, sealed as
the bot seals them) are re-tested by ``RetestService.retest_all``, the call behind
``/connections test all``, with services built by ``bot.runtime.start_services`` (so the bot's own
httpx client, its connection pool and the provider's request path are what is measured). The fake
Confluent Cloud API runs in a process of its own, over real loopback HTTP, and answers every
request after DELAY_MS milliseconds; a Cloud API key takes one request to verify, so the best a
pool of CONCURRENCY workers can do is ``CONNECTIONS x DELAY_MS / CONCURRENCY``.

    python -m bench.retest [--connections 1000] [--delay-ms 100] [--concurrency 16]
                           [--database sqlite|postgresql|both] [--postgres-url URL]
                           [--pool-check 50]

The call is made twice: timed (the figures), then again under tracemalloc for its peak memory
(tracing slows it down, so that run's wall time means nothing). ``--pool-check N`` adds N
connections of another workspace re-tested at concurrency 1 and at CONCURRENCY, to show that the
pool of workers is what makes the difference. Each database runs in a process of its own, so the
maximum RSS reported is that run's alone.
PostgreSQL gets a throw-away database on ``--postgres-url``'s server, dropped afterwards.
Run it from the repository root with the test extras installed (it reuses the test fakes).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import multiprocessing
import os
import resource
import secrets
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql
from sqlalchemy import event, make_url
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
from tests.fakes.confluent_api import FakeConfluent, new_api_key, new_api_secret
from tests.support.servers import serve_asgi

TEAM_ID = "T0BENCH01"
POOL_TEAM_ID = "T0BENCH02"
"""A second workspace with a few connections, for the concurrency-1 comparison."""
ACTOR = "U0BENCH01"
PROVIDER = "confluent_cloud"
SEED_BATCH = 250
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


# --- the fake Confluent Cloud API, in a process of its own --------------------------------------


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


def serve_fake(keys: list[tuple[str, str]], delay: float, pipe: Pipe) -> None:
    """Serve the fake until told to stop; answer "reset" and "stats" on ``pipe``."""
    fake = FakeConfluent(delay=delay)
    for key, secret in keys:
        fake.add_cloud_key(key, secret, environments=1)
    meter = InFlight(fake.app)
    with serve_asgi(meter) as url:
        pipe.send(url)
        while (command := pipe.recv()) != "stop":
            if command == "reset":
                meter.reset()
                fake.requests.clear()
            pipe.send(meter.stats())


class FakeProcess:
    def __init__(self, pipe: Pipe, url: str) -> None:
        self._pipe, self.url = pipe, url

    def ask(self, command: str) -> dict[str, int]:
        self._pipe.send(command)
        answer: dict[str, int] = self._pipe.recv()
        return answer


@contextmanager
def fake_confluent(keys: list[tuple[str, str]], delay: float) -> Iterator[FakeProcess]:
    # Its own process, so the fake's CPU time, GIL and memory are not counted against the bot.
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    process = context.Process(target=serve_fake, args=(keys, delay, theirs), daemon=True)
    process.start()
    try:
        if not ours.poll(30):
            raise SystemExit("the fake Confluent API did not start")
        yield FakeProcess(ours, ours.recv())
    finally:
        ours.send("stop")
        process.join(10)


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


async def seed(db: Database, cipher: Cipher, team_id: str, keys: Sequence[tuple[str, str]]) -> None:
    """Store ``keys`` as active, healthy connections, a few hundred per transaction (no provider
    call: the credentials are sealed exactly as ConnectionService.create seals them)."""
    now = datetime.now(UTC)
    for start in range(0, len(keys), SEED_BATCH):
        async with db.transaction() as tx:
            rows: list[tuple[Connection, dict[str, str]]] = []
            for number, (key, secret) in enumerate(keys[start : start + SEED_BATCH], start):
                connection = Connection(
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
                rows.append((connection, {"api_key": key, "api_secret": secret}))
            tx.session.add_all([connection for connection, _ in rows])
            await tx.session.flush()
            for connection, fields in rows:
                for field_name, value in fields.items():
                    tx.session.add(sealed_field(cipher, connection, {}, field_name, 1, Secret(value), now))
            await tx.session.flush()


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

    def ideal(self, delay: float) -> float:
        return self.connections * delay / self.concurrency


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


async def retest_all(
    service: RetestService,
    concurrency: int,
    team_id: str,
    expected: int,
    fake: FakeProcess,
    connects: ConnectCounter,
    *,
    traced: bool,
) -> Run:
    """One timed ``retest_all`` call; fails loudly unless every connection came back healthy."""
    fake.ask("reset")
    gc.collect()
    connects.count = 0
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
    return Run(expected, concurrency, wall, cpu, report.healthy, peak, connects.count, fake.ask("stats"))


def pool_service(services: Services, concurrency: int) -> RetestService:
    """A RetestService like the bot's but with another pool size (same db, cipher, http client)."""
    return RetestService(
        services.db,
        services.cipher,
        services.providers,
        services.bulk_http,
        services.retests.policy,
        concurrency=concurrency,
    )


def mib(size: float) -> str:
    return f"{size / 2**20:.1f} MiB"


def max_rss() -> int:
    """The process's RSS high-water mark in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f}/{five:.2f} on {os.cpu_count()} CPUs"


def line(label: str, run: Run, delay: float) -> str:
    ideal = run.ideal(delay)
    server = run.server
    return (
        f"  {label:<7} n={run.connections:<5} concurrency={run.concurrency:<3} "
        f"wall {run.wall:6.2f} s  ideal {ideal:6.2f} s  ratio {run.wall / ideal:4.2f}x  "
        f"CPU {run.cpu / run.connections * 1000:4.2f} ms/retest  healthy {run.healthy}  "
        f"[server: {server['requests']} requests, peak {server['peak_in_flight']} in flight, "
        f"{server['tcp_connections']} TCP connections; {run.db_connects} database connections opened]"
    )


# --- running -------------------------------------------------------------------------------------


async def bench(args: argparse.Namespace, database_url: str) -> None:
    delay = args.delay_ms / 1000
    kind = "sqlite" if database_url.startswith("sqlite") else "postgresql"
    keys = [(new_api_key(), new_api_secret()) for _ in range(args.connections + args.pool_check)]
    upgrade_to_head(database_url)
    with fake_confluent(keys, delay) as fake:
        settings = Settings(
            slack_bot_token=Secret("xoxb-bench"),
            slack_signing_secret=Secret("bench-signing-secret"),
            slack_api_url="http://127.0.0.1:9/",
            admin_channel="C0BENCH01",
            environment={"CONFLUENT_CLOUD_API_URL": fake.url},
            database_url=database_url,
            retest_concurrency=args.concurrency,
            master_key=MasterKey.generate().to_base64(),
            log_level="WARNING",
        )
        services = await start_services(settings)
        connects = ConnectCounter(services.db.engine)
        try:
            seeding = time.perf_counter()
            await seed(services.db, services.cipher, TEAM_ID, keys[: args.connections])
            await seed(services.db, services.cipher, POOL_TEAM_ID, keys[args.connections :])
            seeded = time.perf_counter() - seeding
            print(
                f"{kind}: "
                f"{args.connections} connections seeded in {seeded:.1f} s; "
                f"httpx {http_limits(services.bulk_http)}; database {db_limits(services.db)}",
                flush=True,
            )

            def run(concurrency: int, team_id: str, count: int, *, traced: bool) -> Awaitable[Run]:
                service = (
                    services.retests
                    if concurrency == args.concurrency
                    else pool_service(services, concurrency)
                )
                return retest_all(service, concurrency, team_id, count, fake, connects, traced=traced)

            rss_before = max_rss()
            timed = await run(args.concurrency, TEAM_ID, args.connections, traced=False)
            rss_timed = max_rss()
            print(line("timed", timed, delay), flush=True)
            traced = await run(args.concurrency, TEAM_ID, args.connections, traced=True)
            print(line("traced", traced, delay) + "  <- tracemalloc on: for memory only", flush=True)
            serial = args.connections * delay
            print(
                f"  RESULT {kind}: wall {timed.wall:.2f} s, ideal {timed.ideal(delay):.2f} s, "
                f"ratio {timed.wall / timed.ideal(delay):.2f}x; serial estimate {serial:.1f} s "
                f"({serial / timed.wall:.1f}x faster); healthy {timed.healthy}/{args.connections}; "
                f"tracemalloc peak {mib(traced.traced_peak or 0)}; "
                f"max RSS {mib(rss_timed)} ({mib(rss_before)} before the call); {load()}",
                flush=True,
            )
            if args.pool_check:
                for concurrency in (1, args.concurrency):
                    print(
                        line(
                            "pool", await run(concurrency, POOL_TEAM_ID, args.pool_check, traced=False), delay
                        )
                    )
        finally:
            await services.close(drain_seconds=1)


def run_one(args: argparse.Namespace) -> None:
    with throwaway_database(args.database, args.postgres_url) as database_url:
        asyncio.run(bench(args, database_url))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--delay-ms", type=float, default=100.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--database", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
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

    print(
        f"retest_all: {args.connections} connections, concurrency {args.concurrency}, fake Confluent "
        f"answers each request after {args.delay_ms:g} ms over loopback HTTP; "
        f"ideal = {args.connections} x {args.delay_ms / 1000:g} s / {args.concurrency} = "
        f"{args.connections * args.delay_ms / 1000 / args.concurrency:.2f} s; "
        f"serial = {args.connections * args.delay_ms / 1000:.1f} s; {load()}",
        flush=True,
    )
    if args.database != "both":
        run_one(args)
        return
    # One process per database: ru_maxrss is the high-water mark of the whole process.
    failed = False
    for kind in ("sqlite", "postgresql"):
        command = [sys.executable, "-m", "bench.retest", *sys.argv[1:], "--database", kind]
        completed = subprocess.run(command, check=False, stdout=subprocess.PIPE, text=True)
        print("\n".join(completed.stdout.splitlines()[1:]), flush=True)
        failed = failed or completed.returncode != 0
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
