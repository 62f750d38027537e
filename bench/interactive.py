"""How long a verification someone waits for takes while many others wait on a slow host.

N submissions point at a slow host (a fake Confluent Cloud API that answers each request after
SLOW seconds); once they are in flight, one submission for a fast host (a fake that answers at
once) is timed, from ``Submissions.submit`` to its stored outcome: the provider call through the
bot's own HTTP client, the sealing and the transaction. Two shapes of client are compared:

- ``pools``: what ``bot.runtime.start_services`` builds now, an interactive client apart from the
  bulk re-tests' one, with at most 8 requests to one host at once;
- ``shared``: the client the bot had before, one pool of ``CONNECTIONS_RETEST_CONCURRENCY`` + 20
  (36) connections for everything, no cap per host.

    python -m bench.interactive [--slow 0,36,100] [--slow-seconds 5] [--rounds 3]

Both fakes run in threads of their own on loopback; the database is a temporary SQLite file.
Run it from the repository root with the test extras installed (it reuses the test fakes).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
from pathlib import Path

from bot.crypto import MasterKey
from bot.domain import RequestKind
from bot.pools import provider_client
from bot.providers.confluent_cloud import ConfluentCloud
from bot.redaction import Secret
from bot.runtime import PROVIDER_TIMEOUT_SECONDS, start_services
from bot.services.submissions import Submission
from bot.settings import Settings
from bot.store.migrate import upgrade_to_head
from tests.fakes.confluent_api import FakeConfluent, new_api_key, new_api_secret
from tests.support.servers import serve_asgi

TEAM, USER = "T0BENCH001", "U0BENCH001"
SHARED_CONNECTIONS = 16 + 20
"""The old shared pool: the default re-test concurrency plus the headroom it had."""


def submission(provider: ConfluentCloud, name: str, key: str, secret: str) -> Submission:
    values = {"api_key": Secret(key), "api_secret": Secret(secret), "rest_endpoint": "", "cluster_id": ""}
    return Submission(RequestKind.CONNECTION, TEAM, USER, provider, name, values)


async def measure(shape: str, slow_count: int, args: argparse.Namespace, urls: tuple[str, str]) -> float:
    """Seconds the fast submission took with ``slow_count`` slow ones in flight."""
    fast_url, slow_url = urls
    with tempfile.TemporaryDirectory() as tmp:
        database_url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        upgrade_to_head(database_url)
        settings = Settings.from_mapping(
            {
                "SLACK_BOT_TOKEN": "xoxb-bench",
                "SLACK_SIGNING_SECRET": "bench",
                "DATABASE_URL": database_url,
                "CONNECTIONS_MASTER_KEY": MasterKey.generate().to_base64().reveal(),
                "CONFLUENT_CLOUD_API_URL": fast_url,
            }
        )
        shared = provider_client(SHARED_CONNECTIONS, timeout=PROVIDER_TIMEOUT_SECONDS)
        services = await start_services(settings, http=shared if shape == "shared" else None)
        try:
            slow_provider = ConfluentCloud(api_url=slow_url)
            slow = [
                asyncio.create_task(
                    services.submissions.submit(
                        submission(slow_provider, f"slow {i}", new_api_key(), new_api_secret())
                    )
                )
                for i in range(slow_count)
            ]
            await asyncio.sleep(0.5)  # let them reach the slow host (or wait for the pool)
            started = time.perf_counter()
            outcome = await services.submissions.submit(
                submission(services.providers.get("confluent_cloud"), "fast", *args.fast_key)
            )
            elapsed = time.perf_counter() - started
            if not outcome.stored:
                raise SystemExit(f"the fast submission was not stored: {outcome}")
            await asyncio.gather(*slow)
        finally:
            await services.close()
            await shared.aclose()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--slow", default="0,36,100", help="comma-separated counts of slow submissions")
    parser.add_argument("--slow-seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    fast, slow = FakeConfluent(), FakeConfluent(delay=args.slow_seconds)
    key, secret = new_api_key(), new_api_secret()
    fast.add_cloud_key(key, secret)
    args.fast_key = (key, secret)
    counts = [int(n) for n in args.slow.split(",")]
    with serve_asgi(fast.app) as fast_url, serve_asgi(slow.app) as slow_url:
        print(f"one fast verification while N others wait {args.slow_seconds:g} s on a slow host")
        print("| client | N slow in flight | median | max |")
        print("| --- | --- | --- | --- |")
        for shape in ("shared", "pools"):
            for count in counts:
                times = [
                    asyncio.run(measure(shape, count, args, (fast_url, slow_url))) for _ in range(args.rounds)
                ]
                median, worst = statistics.median(times) * 1000, max(times) * 1000
                print(f"| {shape} | {count} | {median:.0f} ms | {worst:.0f} ms |")


if __name__ == "__main__":
    main()
