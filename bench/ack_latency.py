"""How fast the bot acknowledges Slack, on loopback.

Slack allows 3 seconds for an ack. This measures, for ``/connections`` and for a valid submission of
the "Create Confluent Cloud" modal, the time from sending a signed request to receiving the bot's
HTTP answer: REQUESTS requests, CONCURRENCY at a time, against ``connections-bot serve`` running in
its own process on 127.0.0.1, with a fake Slack Web API and a fake Confluent Cloud API (in this
process) that answers each probe after PROVIDER_DELAY seconds, so an ack that waited on the provider
would show it.

    python -m bench.ack_latency [--requests 200] [--concurrency 20] [--database-url URL]

Run it from the repository root with the test extras installed (it reuses the test fakes).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from blocks.forms import create_modal
from bot.crypto import MasterKey
from bot.payloads import form_metadata
from bot.providers.confluent_cloud import ConfluentCloud
from bot.store.migrate import upgrade_to_head
from tests.fakes.confluent_api import FakeConfluent, new_api_key, new_api_secret
from tests.fakes.slack_api import FakeSlack
from tests.support.servers import serve_asgi
from tests.support.slack_requests import (
    CHANNEL_ID,
    TEAM_ID,
    USER_ID,
    form_body,
    payload_body,
    sign,
    slash_command,
    view_submission,
)

SIGNING_SECRET = "bench-signing-secret"
PROVIDER_DELAY = 0.5


@contextmanager
def serve_bot(env: dict[str, str], cwd: Path) -> Iterator[str]:
    """``connections-bot serve`` in a process of its own, until it answers /healthz."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    exe = Path(sys.executable).with_name("connections-bot")
    process = subprocess.Popen(
        [str(exe), "serve"],
        env={**os.environ, **env, "HOST": "127.0.0.1", "PORT": str(port)},
        cwd=cwd,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the bot did not start")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[index]


async def measure(
    client: httpx.AsyncClient, bodies: list[str], concurrency: int
) -> tuple[list[float], list[int], float]:
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    statuses: list[int] = []

    async def one(body: str) -> None:
        async with gate:
            headers = sign(body, SIGNING_SECRET)
            started = time.perf_counter()
            response = await client.post("/slack/events", content=body, headers=headers)
            latencies.append((time.perf_counter() - started) * 1000)
            statuses.append(response.status_code)

    started = time.perf_counter()
    await asyncio.gather(*(one(b) for b in bodies))
    return latencies, statuses, time.perf_counter() - started


def opened_views(slack: FakeSlack, count: int) -> list[dict[str, Any]]:
    """Open ``count`` Create modals in the fake, as Slack would after Connect clicks."""
    provider = ConfluentCloud()
    view = create_modal(provider, private_metadata=form_metadata(provider))
    views = []
    with httpx.Client(base_url=slack.api_url, headers={"Authorization": f"Bearer {slack.bot_token}"}) as api:
        for _ in range(count):
            answer = api.post(
                "views.open", json={"trigger_id": slack.issue_trigger_id(), "view": view}
            ).json()
            views.append(answer["view"])
    return views


def report(label: str, latencies: list[float], statuses: list[int], wall: float) -> str:
    bad = sum(1 for s in statuses if s != 200)
    return (
        f"{label:<22} n={len(latencies):>4}  median {statistics.median(latencies):7.1f} ms  "
        f"p99 {percentile(latencies, 0.99):7.1f} ms  max {max(latencies):7.1f} ms  "
        f"non-200 {bad}  ({len(latencies) / wall:.0f} req/s)"
    )


async def run(app_url: str, slack: FakeSlack, key: str, secret: str, requests: int, concurrency: int) -> None:
    commands = [
        form_body(
            slash_command(
                "",
                team_id=TEAM_ID,
                user_id=USER_ID,
                channel_id=CHANNEL_ID,
                response_url=slack.issue_response_url(channel_id=CHANNEL_ID, user_id=USER_ID),
                trigger_id=slack.issue_trigger_id(),
            )
        )
        for _ in range(requests)
    ]
    views = await asyncio.to_thread(opened_views, slack, requests)
    submissions = [
        payload_body(
            view_submission(
                view,
                {"name": f"bench connection {n}", "api_key": key, "api_secret": secret},
                user_id=USER_ID,
                team_id=TEAM_ID,
            )
        )
        for n, view in enumerate(views)
    ]
    async with httpx.AsyncClient(base_url=app_url, timeout=30) as client:
        # One warm-up request so that connection set-up and first-request work are not measured.
        await measure(client, commands[:1], 1)
        print(report("/connections", *await measure(client, commands, concurrency)))
        print(report("modal submission", *await measure(client, submissions, concurrency)))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--database-url", help="default: a SQLite file in a temporary directory")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory() as tmp:
        database_url = args.database_url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        upgrade_to_head(database_url)
        slack = FakeSlack()
        confluent = FakeConfluent(delay=PROVIDER_DELAY)
        key, secret = new_api_key(), new_api_secret()
        confluent.add_cloud_key(key, secret)
        with slack.serve(), serve_asgi(confluent.app) as confluent_url:
            env = {
                "SLACK_BOT_TOKEN": slack.bot_token,
                "SLACK_SIGNING_SECRET": SIGNING_SECRET,
                "SLACK_API_URL": slack.api_url,
                "CONFLUENT_CLOUD_API_URL": confluent_url,
                "DATABASE_URL": database_url,
                "CONNECTIONS_MASTER_KEY": MasterKey.generate().to_base64().reveal(),
                "LOG_LEVEL": "WARNING",
            }
            print(
                f"{args.requests} requests, {args.concurrency} at a time, loopback; "
                f"provider answers after {PROVIDER_DELAY * 1000:.0f} ms; "
                f"database {database_url.split(':')[0]}"
            )
            with serve_bot(env, Path(tmp)) as app_url:
                asyncio.run(run(app_url, slack, key, secret, args.requests, args.concurrency))


if __name__ == "__main__":
    main()
