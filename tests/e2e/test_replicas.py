"""Two bot processes against one PostgreSQL database: each scheduled re-test runs once in total,
and each health change raises one alert, whichever process got there first."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from bot.crypto import Cipher, MasterKey
from bot.domain import Trigger
from bot.store import Connection, Database, VerificationRecord
from bot.store.db import is_sqlite
from tests.e2e.conftest import SIGNING_SECRET
from tests.fakes.confluent_api import FakeConfluent, new_api_key, new_api_secret
from tests.fakes.slack_api import FakeSlack
from tests.support.block_text import visible_text
from tests.support.processes import clean_env, serving
from tests.support.seeding import Seed, seed_connections

ALERTS = "C0ALERTS001"
WORKING = 24
REVOKED = 4
SPREAD_SECONDS = 8.0
CLAIMED = re.compile(r"re-testing (\d+) connection\(s\) due on the schedule")


def _connections_due_over(url: str, ids: list[str], start: datetime, spread: float) -> None:
    """Make the connections due one after another over ``spread`` seconds from ``start``, as the
    schedule spreads them over an interval."""

    async def run() -> None:
        db = Database.from_url(url)
        try:
            async with db.transaction() as tx:
                for index, connection_id in enumerate(ids):
                    when = start + timedelta(seconds=spread * index / len(ids))
                    await tx.session.execute(
                        update(Connection).where(Connection.id == connection_id).values(next_check_at=when)
                    )
        finally:
            await db.dispose()

    asyncio.run(run())


def _scheduled_checks(url: str) -> dict[str, int]:
    async def run() -> dict[str, int]:
        db = Database.from_url(url)
        try:
            async with db.read() as tx:
                rows = (
                    await tx.session.scalars(
                        VerificationRecord.__table__.select()
                        .with_only_columns(VerificationRecord.connection_id)
                        .where(VerificationRecord.trigger == Trigger.SCHEDULE.value)
                    )
                ).all()
        finally:
            await db.dispose()
        counts: dict[str, int] = {}
        for connection_id in rows:
            counts[connection_id] = counts.get(connection_id, 0) + 1
        return counts

    return asyncio.run(run())


def test_two_processes_run_each_scheduled_retest_once_and_alert_once(
    tmp_path: Path,
    migrated_database_url: str,
    fake_slack: FakeSlack,
    fake_confluent: tuple[FakeConfluent, str],
) -> None:
    if is_sqlite(migrated_database_url):
        pytest.skip("replicas share a PostgreSQL database; a SQLite file belongs to one host")
    confluent, confluent_url = fake_confluent
    master_key = MasterKey.generate()
    seeds = []
    for index in range(WORKING):
        key, secret = new_api_key(), new_api_secret()
        confluent.add_cloud_key(key, secret, environments=1)
        seeds.append(Seed(f"kafka-{index:02d}", key, secret))
    # Keys Confluent does not know (deleted since they were stored): each must raise one alert.
    seeds += [Seed(f"revoked-{index}", new_api_key(), new_api_secret()) for index in range(REVOKED)]
    # Not due while the processes start, so neither gets a head start.
    for seed in seeds:
        seed.next_check_at = datetime.now(UTC) + timedelta(days=1)
    ids = asyncio.run(seed_connections(migrated_database_url, Cipher(master_key), seeds))

    env = clean_env(
        tmp_path,
        SLACK_BOT_TOKEN=fake_slack.bot_token,
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_API_URL=fake_slack.api_url,
        CONFLUENT_CLOUD_API_URL=confluent_url,
        DATABASE_URL=migrated_database_url,
        CONNECTIONS_MASTER_KEY=master_key.to_base64().reveal(),
        CONNECTIONS_ALERT_CHANNEL=ALERTS,
        # A re-test every minute: each connection is due once within this test.
        CONNECTIONS_RETEST_INTERVAL_MINUTES="1",
        LOG_LEVEL="INFO",
    )
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    total = WORKING + REVOKED
    with serving(env, tmp_path, log=logs[0]), serving(env, tmp_path, log=logs[1]):
        _connections_due_over(migrated_database_url, ids, datetime.now(UTC), SPREAD_SECONDS)
        deadline = time.monotonic() + SPREAD_SECONDS + 30
        while sum(_scheduled_checks(migrated_database_url).values()) < total and time.monotonic() < deadline:
            time.sleep(0.5)
        # Both processes keep ticking for a while: a second run of any check would show now.
        time.sleep(3)
        checks = _scheduled_checks(migrated_database_url)
        alerts = [m for m in fake_slack.messages if m.channel == ALERTS and not m.thread_ts]

    assert checks == dict.fromkeys(ids, 1)
    assert len(confluent.requests_to("/org/v2/environments")) == total
    claimed = [sum(int(n) for n in CLAIMED.findall(log.read_text())) for log in logs]
    assert sum(claimed) == total
    # Both processes ran the schedule and took a share of the work: the once-only result above
    # comes from the claims in the database, not from one process sitting idle.
    assert all(share > 0 for share in claimed), claimed
    assert len(alerts) == REVOKED
    alerted = sorted(
        name
        for name in (s.name for s in seeds[WORKING:])
        if any(name in visible_text(a.blocks) for a in alerts)
    )
    assert alerted == sorted(s.name for s in seeds[WORKING:])
