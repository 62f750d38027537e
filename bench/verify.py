"""How long one credential verification takes, per provider, against the provider's stand-in.

For each provider the plug-in is built with ``Provider.from_environment`` (its real configuration
path) pointed at a stand-in on loopback, one working credential is made there, and
``provider.verify(values, http)`` is called RUNS times, CONCURRENCY at a time, after WARMUP calls
that are not timed, with an httpx client set up as ``bot.runtime.start_services`` sets up the
bot's. Every verification must come back OK, or the bench stops.

- Confluent Cloud: ``tests.fakes.confluent_api``, served by uvicorn in a process of its own.
- Snowflake: ``tests.fakes.snowflake_api`` likewise (``SNOWFLAKE_API_URL`` with ``{account}``).
- Redshift: a private PostgreSQL with password (SCRAM) authentication from
  ``tests.support.private_postgres`` (``REDSHIFT_SSLMODE=disable``, ``REDSHIFT_CONNECT_TO``).

The credential is the smallest the form takes (a Cloud API key; a key pair with no role,
warehouse or database; a database user with no schema), so each verification makes the fewest
calls. The stand-ins answer at once and run in other processes, so the figures are the bot's own
cost per verification on loopback: building and reading requests, loading the key and signing the
JWT, the SCRAM sign-in and start of a PostgreSQL session; no TLS and no network distance. A real
provider adds its own time on top. Wall time still holds what the stand-in does while the bot
waits (the fake checking a JWT, PostgreSQL starting a backend); the CPU column, this process's
CPU time per verification, is the bot's alone.

What one verification does is counted by the stand-in over the timed runs. Then, unless
``--no-breakdown``, BREAKDOWN_RUNS more verifications are made with their steps timed (wall and
this process's CPU): the HTTP exchange, Snowflake's key loading and JWT signing, Redshift's
connect, statements and close, and the rest of ``verify()`` around them.

    python -m bench.verify [--runs 200] [--provider confluent_cloud|snowflake|redshift|all]
                           [--concurrency 1] [--warmup 5] [--no-breakdown]

Run it from the repository root with the test extras installed (it reuses the test fakes).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import os
import secrets
import statistics
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as Pipe
from typing import Any, LiteralString
from unittest import mock

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bot.providers import _snowflake_keys as snowflake_keys
from bot.providers.base import FieldValues, Provider, Verification
from bot.providers.redshift import ConnectParams, Redshift, Session, psycopg_connect
from bot.providers.registry import PROVIDERS
from bot.redaction import Secret
from bot.runtime import INTERACTIVE_CONNECTIONS, PROVIDER_TIMEOUT_SECONDS
from bot.settings import Settings
from tests.fakes.confluent_api import FakeConfluent, new_api_key, new_api_secret
from tests.fakes.snowflake_api import FakeSnowflake, new_rsa_key
from tests.support.private_postgres import PrivatePostgres, start_private_postgres
from tests.support.servers import serve_asgi

PROVIDER_KEYS = tuple(p.key for p in PROVIDERS)
SNOWFLAKE_ACCOUNT = "myorg-bench"
SNOWFLAKE_USER = "SVC_BENCH"
REDSHIFT_ENDPOINT = "examplecluster.abc123xyz789.us-west-2.redshift.amazonaws.com"
REDSHIFT_DATABASE = "bench_verify"
BREAKDOWN_RUNS = 50

Counts = dict[str, Any]
"""A stand-in's counters: ints that grow with each call, and ``calls``, the kinds of call seen."""


# --- the HTTP fakes, each in a process of its own --------------------------------------------------


def _counts(requests: list[Any], statements: list[str]) -> Counts:
    return {
        "requests": len(requests),
        "statements": len(statements),
        "calls": sorted({f"{r.method} {r.path}" for r in requests}),
    }


def serve_confluent(key: str, secret: str, pipe: Pipe) -> None:
    """Serve a fake Confluent Cloud API that knows one Cloud API key; answer "count" on ``pipe``."""
    fake = FakeConfluent()
    fake.add_cloud_key(key, secret, environments=1)
    with serve_asgi(fake.app) as url:
        pipe.send(url)
        while pipe.recv() != "stop":
            pipe.send(_counts(fake.requests, []))


def serve_snowflake(public_pem: bytes, pipe: Pipe) -> None:
    """Serve a fake Snowflake SQL API with one account and one key-pair user; answer "count"."""
    fake = FakeSnowflake()
    account = fake.add_account(SNOWFLAKE_ACCOUNT)
    public_key = serialization.load_pem_public_key(public_pem)
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise TypeError("the bench's Snowflake key must be RSA")
    fake.add_user(account, SNOWFLAKE_USER, public_key=public_key)
    with serve_asgi(fake.app) as url:
        pipe.send(url)
        while pipe.recv() != "stop":
            pipe.send(_counts(fake.requests, fake.statements))


@contextmanager
def fake_process(target: Callable[..., None], *args: Any) -> Iterator[tuple[str, Callable[[], Counts]]]:
    """Run ``target(*args, pipe)`` in a spawned process; yield its URL and a reader of its counts.

    A process of its own, so the fake's CPU (Snowflake's verifies an RS256 JWT per request) and
    its share of the GIL are not counted against the bot."""
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    process = context.Process(target=target, args=(*args, theirs), daemon=True)
    process.start()
    try:
        if not ours.poll(30):
            raise SystemExit(f"the fake ({target.__name__}) did not start")
        url: str = ours.recv()

        def counts() -> Counts:
            ours.send("count")
            answer: Counts = ours.recv()
            return answer

        yield url, counts
    finally:
        ours.send("stop")
        process.join(10)
        if process.is_alive():
            process.terminate()


# --- timing the steps of a verification ----------------------------------------------------------


class Steps:
    """Wall and CPU time of named steps, summed per verification."""

    def __init__(self) -> None:
        self._current: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
        self.wall: dict[str, list[float]] = defaultdict(list)
        self.cpu: dict[str, list[float]] = defaultdict(list)
        self.calls: dict[str, list[int]] = defaultdict(list)
        self.order: list[str] = []

    @contextmanager
    def timing(self, name: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            step = self._current[name]
            step[0] += time.perf_counter() - wall
            step[1] += time.process_time() - cpu
            step[2] += 1
            if name not in self.order:
                self.order.append(name)

    def wrap(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.timing(name):
                return function(*args, **kwargs)

        return timed

    def end_verification(self, wall: float, cpu: float) -> None:
        """Close one verification of ``wall`` seconds: what no step took is "the rest"."""
        for name in self.order:
            step = self._current.get(name, [0.0, 0.0, 0])
            self.wall[name].append(step[0])
            self.cpu[name].append(step[1])
            self.calls[name].append(int(step[2]))
        self.wall["rest of verify()"].append(wall - sum(s[0] for s in self._current.values()))
        self.cpu["rest of verify()"].append(cpu - sum(s[1] for s in self._current.values()))
        self.calls["rest of verify()"].append(1)
        self.wall["verify()"].append(wall)
        self.cpu["verify()"].append(cpu)
        self.calls["verify()"].append(1)
        self._current.clear()

    def lines(self) -> list[str]:
        def ms(samples: list[float]) -> str:
            return f"{statistics.median(samples) * 1000:6.2f}"

        rows = []
        for name in ["verify()", *self.order, "rest of verify()"]:
            calls = statistics.median(self.calls[name])
            rows.append(
                f"    {name:<46} {ms(self.wall[name])} ms wall  {ms(self.cpu[name])} ms CPU  x{calls:g}"
            )
        return rows


class TimedClient(httpx.AsyncClient):
    """The bot's client, with the time spent in ``send`` (request out, answer read) noted."""

    steps: Steps | None = None

    async def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        if self.steps is None:
            return await super().send(request, **kwargs)
        with self.steps.timing("HTTP exchange (httpx send)"):
            return await super().send(request, **kwargs)


class TimedSession:
    """A Redshift :class:`Session` whose calls are timed."""

    def __init__(self, session: Session, steps: Steps) -> None:
        self._session, self._steps = session, steps

    async def execute(self, query: LiteralString) -> None:
        with self._steps.timing("statements (execute + fetch_one)"):
            await self._session.execute(query)

    async def fetch_one(self, query: LiteralString, params: tuple[str, ...] = ()) -> tuple[Any, ...] | None:
        with self._steps.timing("statements (execute + fetch_one)"):
            return await self._session.fetch_one(query, params)

    async def close(self) -> None:
        with self._steps.timing("close"):
            await self._session.close()


def timed_connector(steps: Steps) -> Callable[[ConnectParams], Awaitable[Session]]:
    async def connect(params: ConnectParams) -> Session:
        with steps.timing("connect (psycopg AsyncConnection.connect)"):
            session = await psycopg_connect(params)
        return TimedSession(session, steps)

    return connect


# --- what is measured, per provider --------------------------------------------------------------


@dataclass
class Target:
    """One provider, configured against its stand-in, with a credential the stand-in accepts."""

    key: str
    env: dict[str, str]
    raw_values: dict[str, str | Secret]
    counts: Callable[[], Counts]
    describe: Callable[[Counts, Counts, int], str]
    """What ``runs`` verifications did, from the counters' growth and their last reading."""
    instrument: Callable[[Provider, Steps], AbstractContextManager[Provider]]
    """The provider as verified for the breakdown, its own steps reported to ``steps``."""
    notes: list[str] = field(default_factory=list)
    comparisons: Callable[[FieldValues], list[str]] = lambda values: []


def describe_http(delta: Counts, last: Counts, runs: int) -> str:
    text = f"{delta['requests'] / runs:g} HTTP request(s)"
    if delta["statements"]:
        text += f", {delta['statements'] / runs:g} SQL statement(s)"
    return f"{text} per verification ({', '.join(last['calls'])})"


@contextmanager
def as_is(provider: Provider, steps: Steps) -> Iterator[Provider]:
    yield provider


@contextmanager
def confluent_target() -> Iterator[Target]:
    key, secret = new_api_key(), new_api_secret()
    with fake_process(serve_confluent, key, secret) as (url, counts):
        yield Target(
            key="confluent_cloud",
            env={"CONFLUENT_CLOUD_API_URL": url},
            raw_values={"api_key": Secret(key), "api_secret": Secret(secret)},
            counts=counts,
            describe=describe_http,
            instrument=as_is,
            notes=["Cloud API key, no cluster"],
        )


@contextmanager
def snowflake_keys_timed(provider: Provider, steps: Steps) -> Iterator[Provider]:
    # The plug-in calls these through the module, so timing wrappers there see every call.
    with (
        mock.patch.object(
            snowflake_keys, "load_key_pair", steps.wrap("load_key_pair", snowflake_keys.load_key_pair)
        ),
        mock.patch.object(
            snowflake_keys, "mint_jwt", steps.wrap("mint_jwt (RS256 signature)", snowflake_keys.mint_jwt)
        ),
    ):
        yield provider


def snowflake_comparisons(values: FieldValues) -> list[str]:
    """Where load_key_pair's time goes: the same PEM loaded with and without OpenSSL's RSA check."""
    pem = values["private_key"]
    data = (pem.reveal() if isinstance(pem, Secret) else pem).encode()
    checked: list[float] = []
    unchecked: list[float] = []
    for _ in range(BREAKDOWN_RUNS):
        started = time.perf_counter()
        serialization.load_pem_private_key(data, None)
        checked.append(time.perf_counter() - started)
        started = time.perf_counter()
        serialization.load_pem_private_key(data, None, unsafe_skip_rsa_key_validation=True)
        unchecked.append(time.perf_counter() - started)
    return [
        f"cryptography load_pem_private_key of the same key: {statistics.median(checked) * 1000:.2f} ms; "
        f"with unsafe_skip_rsa_key_validation=True: {statistics.median(unchecked) * 1000:.3f} ms "
        "(the difference is the RSA private-key validation that cryptography has OpenSSL do by default)"
    ]


@contextmanager
def snowflake_target() -> Iterator[Target]:
    private_key = new_rsa_key()
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with fake_process(serve_snowflake, public_pem) as (url, counts):
        yield Target(
            key="snowflake",
            env={"SNOWFLAKE_API_URL": f"{url}/{{account}}"},
            raw_values={"account": SNOWFLAKE_ACCOUNT, "user": SNOWFLAKE_USER, "private_key": Secret(pem)},
            counts=counts,
            describe=describe_http,
            instrument=snowflake_keys_timed,
            notes=["key pair: RSA 2048, unencrypted PKCS#8; no role, warehouse or database"],
            comparisons=snowflake_comparisons,
        )


def postgres_counts(server: PrivatePostgres) -> Counts:
    """Sessions and committed transactions of the bench database, once the numbers settle (a
    backend reports its last figures as it exits, a moment after the client has gone)."""
    last: Counts | None = None
    deadline = time.monotonic() + 10
    while True:
        with server.connect() as admin:
            row = admin.execute(
                "SELECT sessions, xact_commit FROM pg_stat_database WHERE datname = %s",
                (REDSHIFT_DATABASE,),
            ).fetchone()
        if row is None:
            raise SystemExit(f"no statistics for database {REDSHIFT_DATABASE}")
        now: Counts = {"sessions": int(row[0]), "transactions": int(row[1])}
        if now == last or time.monotonic() > deadline:
            return now
        last = now
        time.sleep(0.3)


def describe_postgres(delta: Counts, last: Counts, runs: int) -> str:
    sessions = delta["sessions"]
    # A session's start-up commits one transaction of its own; in autocommit each statement after
    # it is one more.
    statements = delta["transactions"] - sessions
    return (
        f"{sessions / runs:g} new PostgreSQL connection(s) with SCRAM sign-in, "
        f"{statements / runs:g} SQL statement(s) per verification"
    )


@contextmanager
def redshift_timed(provider: Provider, steps: Steps) -> Iterator[Provider]:
    if not isinstance(provider, Redshift):
        raise TypeError("the Redshift target's provider must be Redshift")
    # The same configuration, with the connector (a constructor argument) timed.
    yield Redshift(
        sslmode=provider.sslmode,
        sslrootcert=provider.sslrootcert,
        connect_to=provider.connect_to,
        connector=timed_connector(steps),
    )


@contextmanager
def redshift_target() -> Iterator[Target]:
    server_run = start_private_postgres()
    try:
        server = next(server_run)
    except Exception as exc:  # the helper's own failure type is private to it
        raise SystemExit(f"no private PostgreSQL to stand in for Redshift: {exc}") from None
    try:
        server.create_database(REDSHIFT_DATABASE)
        user, password = f"bench_{secrets.token_hex(4)}", secrets.token_urlsafe(18)
        server.create_role(user, password)
        yield Target(
            key="redshift",
            env={"REDSHIFT_SSLMODE": "disable", "REDSHIFT_CONNECT_TO": f"{server.host}:{server.port}"},
            raw_values={
                "endpoint": REDSHIFT_ENDPOINT,
                "port": "5439",
                "database": REDSHIFT_DATABASE,
                "user": user,
                "password": Secret(password),
            },
            counts=lambda: postgres_counts(server),
            describe=describe_postgres,
            instrument=redshift_timed,
            notes=["private PostgreSQL, sslmode=disable, scram-sha-256; no schema"],
        )
    finally:
        server_run.close()


TARGETS: dict[str, Callable[[], AbstractContextManager[Target]]] = {
    "confluent_cloud": confluent_target,
    "snowflake": snowflake_target,
    "redshift": redshift_target,
}


# --- measuring -----------------------------------------------------------------------------------


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[index]


@asynccontextmanager
async def bot_http_client(concurrency: int) -> AsyncIterator[TimedClient]:
    """The provider client ``bot.runtime.start_services`` builds (timeout, pool, headers,
    redirects), its pool sized for the bot's default re-test concurrency or this bench's."""
    default = Settings(slack_bot_token=Secret("xoxb-bench")).retest_concurrency
    pool = max(INTERACTIVE_CONNECTIONS, default, concurrency)
    async with TimedClient(
        timeout=httpx.Timeout(PROVIDER_TIMEOUT_SECONDS),
        limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
        headers={"User-Agent": "connections-bot"},
        follow_redirects=False,
    ) as client:
        yield client


@dataclass
class Result:
    title: str
    latencies_ms: list[float]
    wall: float
    cpu: float
    does: str
    notes: list[str]
    breakdown: list[str]

    def row(self) -> str:
        lat, runs = self.latencies_ms, len(self.latencies_ms)
        return (
            f"| {self.title:<15} | {runs:>4} | {statistics.median(lat):9.2f} | {percentile(lat, 0.90):8.2f} "
            f"| {percentile(lat, 0.99):8.2f} | {max(lat):8.2f} | {self.cpu / runs * 1000:12.2f} "
            f"| {runs / self.wall:7.0f} |"
        )


TABLE_HEADER = (
    "| provider        | runs | median ms |  p90 ms  |  p99 ms  |  max ms  | CPU ms/verif | verif/s |\n"
    "|-----------------|-----:|----------:|---------:|---------:|---------:|-------------:|--------:|"
)


def check(provider: Provider, verification: Verification) -> None:
    if not verification.ok:
        raise SystemExit(
            f"{provider.title}: a verification came back {verification.outcome.value}, not ok: "
            f"{verification.summary}"
        )


async def breakdown(target: Target, provider: Provider, values: FieldValues, http: TimedClient) -> list[str]:
    """BREAKDOWN_RUNS verifications one at a time, their steps timed."""
    steps = Steps()
    http.steps = steps
    try:
        with target.instrument(provider, steps) as timed:
            for _ in range(BREAKDOWN_RUNS):
                wall, cpu = time.perf_counter(), time.process_time()
                verification = await timed.verify(values, http)
                steps.end_verification(time.perf_counter() - wall, time.process_time() - cpu)
                check(provider, verification)
    finally:
        http.steps = None
    return steps.lines() + [f"    {line}" for line in target.comparisons(values)]


async def measure(target: Target, runs: int, warmup: int, concurrency: int, with_breakdown: bool) -> Result:
    provider_class = next(p for p in PROVIDERS if p.key == target.key)
    provider = provider_class.from_environment(target.env)
    values = provider.clean(target.raw_values)
    if problems := provider.validate(values):
        raise SystemExit(f"{provider.title}: the bench credential fails the form: {sorted(problems)}")

    async with bot_http_client(concurrency) as http:
        for _ in range(warmup):
            check(provider, await provider.verify(values, http))

        gate = asyncio.Semaphore(concurrency)
        latencies: list[float] = []

        async def one() -> None:
            async with gate:
                started = time.perf_counter()
                verification = await provider.verify(values, http)
                latencies.append((time.perf_counter() - started) * 1000)
                check(provider, verification)

        before = target.counts()
        cpu = time.process_time()
        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(runs)))
        wall = time.perf_counter() - started
        cpu = time.process_time() - cpu
        after = target.counts()
        delta = {k: v - before[k] for k, v in after.items() if isinstance(v, int)}
        parts = await breakdown(target, provider, values, http) if with_breakdown else []
    return Result(
        provider.title, latencies, wall, cpu, target.describe(delta, after, runs), target.notes, parts
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--provider", choices=(*PROVIDER_KEYS, "all"), default="all")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="verifications in flight at once (default 1; Redshift's stand-in takes 30 connections)",
    )
    parser.add_argument("--warmup", type=int, default=5, help="untimed verifications first (default 5)")
    parser.add_argument(
        "--no-breakdown",
        dest="breakdown",
        action="store_false",
        help=f"skip the {BREAKDOWN_RUNS} verifications whose steps are timed",
    )
    args = parser.parse_args()
    if args.runs < 1 or args.concurrency < 1 or args.warmup < 0:
        parser.error("--runs and --concurrency must be positive, --warmup 0 or more")
    # Not WARNING: the Redshift plug-in rightly warns that TLS is off, which here is the set-up.
    logging.basicConfig(level=logging.ERROR)

    one, five, _ = os.getloadavg()
    print(
        f"provider.verify(): {args.runs} timed runs per provider after {args.warmup} untimed, "
        f"{args.concurrency} at a time; stand-ins on loopback in other processes, answering at once; "
        f"load average {one:.2f}/{five:.2f} on {os.cpu_count()} CPUs",
        flush=True,
    )
    results: list[Result] = []
    for key in PROVIDER_KEYS if args.provider == "all" else (args.provider,):
        with TARGETS[key]() as target:
            results.append(
                asyncio.run(measure(target, args.runs, args.warmup, args.concurrency, args.breakdown))
            )

    print()
    print(TABLE_HEADER)
    for result in results:
        print(result.row())
    print("\nWhat one verification does (counted by the stand-in over the timed runs):")
    for result in results:
        notes = f" [{'; '.join(result.notes)}]" if result.notes else ""
        print(f"  {result.title}: {result.does}{notes}")
    if args.breakdown:
        print(
            f"\nWhere the time goes: medians over {BREAKDOWN_RUNS} more verifications, one at a time, "
            "with their steps timed (CPU is this process's; xN is calls per verification):"
        )
        for result in results:
            print(f"  {result.title}:")
            print("\n".join(result.breakdown))
    print(
        "\nThe stand-ins answer at once, so these figures are the bot's own cost per verification on "
        "loopback (no TLS, no network distance); a real provider adds its response time. Wall time "
        "still holds the stand-in's own work while the bot waits (the fake checking Snowflake's JWT, "
        "PostgreSQL starting a backend for each Redshift connection); CPU ms/verif, this process's "
        "CPU time over the timed runs divided by the runs, is the bot's alone."
    )


if __name__ == "__main__":
    main()
