"""InterruptedVerifications on SQLite and PostgreSQL: which in-flight rows a sweep takes, what it
records, and that two sweeps never take one row twice."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bot.providers.confluent_cloud import ConfluentCloud
from bot.services.interrupted import (
    DEADLINE_GRACE,
    REASON_OVERDUE,
    REASON_STOPPED,
    Interrupted,
    InterruptedVerifications,
    ProcessOwner,
    current_boot_id,
    current_pid_namespace,
    pid_alive,
    verification_deadline,
)
from bot.store import AuditEvent, Database
from bot.store.models import InFlightKind, InFlightVerification

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
TEAM = "T0000TEAM"
HOST = "bot-1"
OUR_PID = 100
LIVE_PID = 200
DEAD_PID = 300
BOOT = "6f1d2c3b-4a59-4e87-b6d5-c4b3a2918070"
NAMESPACE = 4026531836
ME = ProcessOwner(host=HOST, pid=OUR_PID, boot_id=BOOT, pid_namespace=NAMESPACE, instance="this-start")


def row(name: str, **values: Any) -> InFlightVerification:
    defaults: dict[str, Any] = {
        "team_id": TEAM,
        "user_id": "U0000USER",
        "kind": InFlightKind.CREATE,
        "provider": "confluent_cloud",
        "name": name,
        "view_id": f"V-{name}",
        "host": HOST,
        "boot_id": BOOT,
        "pid_namespace": NAMESPACE,
        "pid": DEAD_PID,
        "instance": "an-earlier-start",
        "started_at": NOW - timedelta(seconds=30),
        "deadline": NOW + timedelta(minutes=2),
        "config": {"cluster_id": "lkc-1"},
    }
    return InFlightVerification(**(defaults | values))


async def store(db: Database, *rows: InFlightVerification) -> None:
    async with db.transaction() as tx:
        for each in rows:
            assert await tx.in_flight.claim(each)


async def remaining(db: Database) -> list[str]:
    async with db.read() as tx:
        return sorted(await tx.session.scalars(select(InFlightVerification.name)))


async def audit_events(db: Database) -> list[AuditEvent]:
    async with db.read() as tx:
        return list(await tx.session.scalars(select(AuditEvent).order_by(AuditEvent.id)))


def sweeper(db: Database, owner: ProcessOwner = ME) -> InterruptedVerifications:
    return InterruptedVerifications(
        db, owner, alive=lambda pid: pid in (OUR_PID, LIVE_PID), clock=lambda: NOW
    )


@pytest.fixture
async def every_case(db: Database) -> None:
    """One row for each situation a sweep has to judge."""
    past = NOW - timedelta(seconds=1)
    await store(
        db,
        row("dead-process"),  # this host, its process is gone
        row("live-process", pid=LIVE_PID),  # this host, another bot still running
        row("restarted", pid=OUR_PID),  # our pid, but an earlier start (pid 1 in a container)
        row("ours", pid=OUR_PID, instance=ME.instance),  # what this very process is verifying
        row("other-host", host="bot-2"),  # cannot tell whether its pid lives: wait for the deadline
        row("other-host-overdue", host="bot-2", deadline=past),
        # Same host name, but pids of another namespace (a container on host networking, pid 1 in
        # its own), of an earlier boot, or of a system that does not say: not ours to judge.
        row("beside", pid_namespace=NAMESPACE + 1),
        row("beside-our-pid", pid=OUR_PID, pid_namespace=NAMESPACE + 1, connection_id="c-2", kind="rotation"),
        row("before-reboot", boot_id="e0e0e0e0-0000-4000-8000-000000000000"),
        row("unknown-machine", boot_id=None, pid_namespace=None),
        row("live-but-overdue", pid=LIVE_PID, deadline=past),
        row(
            "rotation",
            kind=InFlightKind.ROTATION,
            connection_id="c-1",
            config={},
        ),
    )


@pytest.mark.usefixtures("every_case")
async def test_at_start_a_sweep_takes_what_no_running_bot_will_finish(db: Database) -> None:
    taken = await sweeper(db).sweep_at_start()

    assert sorted(item.name for item in taken) == [
        "dead-process",
        "live-but-overdue",
        "other-host-overdue",
        "restarted",
        "rotation",
    ]
    assert await remaining(db) == [
        "before-reboot",
        "beside",
        "beside-our-pid",
        "live-process",
        "other-host",
        "ours",
        "unknown-machine",
    ]


@pytest.mark.usefixtures("every_case")
async def test_the_periodic_sweep_takes_only_rows_past_their_deadline(db: Database) -> None:
    taken = await sweeper(db).sweep_overdue()

    assert sorted(item.name for item in taken) == ["live-but-overdue", "other-host-overdue"]
    assert await remaining(db) == [
        "before-reboot",
        "beside",
        "beside-our-pid",
        "dead-process",
        "live-process",
        "other-host",
        "ours",
        "restarted",
        "rotation",
        "unknown-machine",
    ]


async def test_each_taken_row_says_whom_to_tell_and_leaves_an_audit_event(db: Database) -> None:
    await store(
        db,
        row("new-kafka", user_id="U0CREATOR1", view_id="V0CREATE01"),
        row(
            "Prod Kafka",
            kind=InFlightKind.ROTATION,
            connection_id="c-1",
            user_id="U0ROTATOR1",
            view_id="V0ROTATE01",
            config={},
            host="bot-2",
            deadline=NOW - timedelta(seconds=1),
        ),
    )

    taken = sorted(await sweeper(db).sweep_at_start(), key=lambda item: item.kind.value)

    assert taken == [
        Interrupted(
            kind=InFlightKind.CREATE,
            team_id=TEAM,
            user_id="U0CREATOR1",
            provider_key="confluent_cloud",
            name="new-kafka",
            view_id="V0CREATE01",
            config={"cluster_id": "lkc-1"},
        ),
        Interrupted(
            kind=InFlightKind.ROTATION,
            team_id=TEAM,
            user_id="U0ROTATOR1",
            provider_key="confluent_cloud",
            name="Prod Kafka",
            view_id="V0ROTATE01",
            config={},
            connection_id="c-1",
        ),
    ]
    events = sorted(
        (
            (e.action, e.actor, e.connection_id, e.reason, e.details, e.created_at)
            for e in await audit_events(db)
        ),
        key=str,
    )
    assert events == [
        (
            "connection.create_interrupted",
            "U0CREATOR1",
            None,
            REASON_STOPPED,
            {"provider": "confluent_cloud", "name": "new-kafka"},
            NOW,
        ),
        (
            "rotation.interrupted",
            "U0ROTATOR1",
            "c-1",
            REASON_OVERDUE,
            {"provider": "confluent_cloud", "name": "Prod Kafka"},
            NOW,
        ),
    ]
    assert await remaining(db) == []


async def test_two_sweeps_at_once_take_each_row_once(migrated_database_url: str) -> None:
    names = [f"conn-{index}" for index in range(12)]
    first_db, second_db = Database.from_url(migrated_database_url), Database.from_url(migrated_database_url)
    try:
        await store(first_db, *(row(name, deadline=NOW - timedelta(seconds=1)) for name in names))
        # Two replicas on other hosts, each running its periodic job.
        first = sweeper(first_db, ProcessOwner(host="bot-8", pid=1, instance="x"))
        second = sweeper(second_db, ProcessOwner(host="bot-9", pid=1, instance="y"))
        results = await asyncio.gather(first.sweep_overdue(), second.sweep_overdue())
        events = await audit_events(first_db)
    finally:
        await first_db.dispose()
        await second_db.dispose()

    told = [item.name for result in results for item in result]
    assert sorted(told) == sorted(names)
    assert sorted(str(e.details["name"]) for e in events) == sorted(names)


async def test_a_sweep_works_in_batches(db: Database) -> None:
    await store(db, *(row(f"conn-{index}", deadline=NOW - timedelta(seconds=1)) for index in range(5)))
    small = InterruptedVerifications(db, ME, alive=lambda _: True, clock=lambda: NOW, batch_size=2)

    assert len(await small.sweep_overdue()) == 2
    assert len(await small.sweep_overdue()) == 2
    assert len(await small.sweep_overdue()) == 1
    assert await small.sweep_overdue() == []


def test_the_deadline_leaves_room_beyond_the_providers_own_bound() -> None:
    provider = ConfluentCloud(api_url="https://api.confluent.test")
    deadline = verification_deadline(NOW, provider)
    assert deadline == NOW + timedelta(seconds=provider.deadline_seconds) + DEADLINE_GRACE
    assert deadline - NOW >= 2 * timedelta(seconds=provider.deadline_seconds)


def test_an_owner_is_this_process_and_each_start_is_told_apart() -> None:
    first, second = ProcessOwner.current(), ProcessOwner.current()
    assert (first.host, first.pid) == (socket.gethostname(), os.getpid())
    assert first.instance != second.instance


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="boot ids and pid namespaces are Linux's")
def test_an_owner_names_this_boot_and_pid_namespace() -> None:
    owner = ProcessOwner.current()
    assert owner.boot_id == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert owner.pid_namespace == os.stat("/proc/self/ns/pid").st_ino
    # A process in a pid namespace of its own would differ; a child in ours does not.
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.stat('/proc/self/ns/pid').st_ino)"],
        capture_output=True,
        check=True,
    )
    assert int(child.stdout) == owner.pid_namespace


def test_a_system_that_does_not_say_leaves_boot_and_namespace_unknown(tmp_path: Path) -> None:
    assert current_boot_id(tmp_path / "missing") is None
    assert current_pid_namespace(tmp_path / "missing") is None
    (tmp_path / "boot_id").write_text("not a boot id, far too long to be a uuid at all\n")
    assert current_boot_id(tmp_path / "boot_id") is None
    (tmp_path / "boot_id").write_text(f"{BOOT}\n")
    assert current_boot_id(tmp_path / "boot_id") == BOOT


def test_pid_alive_knows_this_process_from_one_that_is_gone() -> None:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    gone = int(finished.stdout)
    assert pid_alive(os.getpid())
    assert not pid_alive(gone)
    assert not pid_alive(0)
    assert not pid_alive(-1)
