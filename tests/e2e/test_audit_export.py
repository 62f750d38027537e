"""``connections-bot audit export`` as an operator runs it: a real process that needs nothing but the
database, writes JSON Lines a SIEM can ingest, and never a secret."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.store import AuditEvent, Database
from bot.store.db import is_sqlite
from tests.e2e import test_approvals as approvals
from tests.e2e.conftest import SIGNING_SECRET, Bot, CloudKey
from tests.e2e.test_approvals import ADMIN, REQUESTER
from tests.e2e.test_audit import NAME, approved
from tests.e2e.test_cli import clean_env, run
from tests.support.databases import sqlite_path

abot = approvals.abot
approvals_env = approvals.approvals_env

KEYS = [
    "id",
    "time",
    "team_id",
    "actor",
    "action",
    "connection_id",
    "before_status",
    "after_status",
    "reason",
    "details",
]
OTHER_TEAM = "T0OTHERTEAM"


def add_other_team_event(database_url: str) -> None:
    async def insert() -> None:
        db = Database.from_url(database_url)
        try:
            async with db.transaction() as tx:
                await tx.audit.add(
                    AuditEvent(
                        team_id=OTHER_TEAM,
                        actor="system",
                        action="connection.expired",
                        connection_id="c-elsewhere",
                        before_status="pending_approval",
                        after_status="expired",
                        reason="nobody decided in time",
                        created_at=datetime(2020, 1, 1, tzinfo=UTC),
                    )
                )
        finally:
            await db.dispose()

    asyncio.run(insert())


def records_of(text: str) -> list[dict[str, Any]]:
    lines = text.splitlines()
    assert text.endswith("\n") and all(lines)
    return [json.loads(line) for line in lines]


def secrets_of(bot: Bot, key: CloudKey) -> list[str]:
    master_key = bot.settings.master_key
    assert master_key is not None
    return [key.key, key.secret, master_key.reveal(), bot.slack.bot_token, SIGNING_SECRET]


def test_the_whole_log_is_written_as_json_lines_with_only_the_database_url(
    abot: Bot, cloud_key: CloudKey, tmp_path: Path
) -> None:
    connection_id = approved(abot, cloud_key)
    add_other_team_event(abot.database_url)

    # No Slack token, no signing secret, no master key: only the database.
    result = run(["audit", "export"], clean_env(tmp_path, DATABASE_URL=abot.database_url), tmp_path)

    assert result.returncode == 0, result.stderr
    records = records_of(result.stdout)
    assert all(list(record) == KEYS for record in records)
    assert [r["id"] for r in records] == sorted(r["id"] for r in records)
    ours = [r for r in records if r["connection_id"] == connection_id]
    assert [(r["action"], r["actor"], r["before_status"], r["after_status"]) for r in ours] == [
        ("connection.created", REQUESTER, None, "pending_approval"),
        ("connection.approved", ADMIN, "pending_approval", "active"),
    ]
    assert ours[0]["details"]["name"] == NAME
    [theirs] = [r for r in records if r["team_id"] == OTHER_TEAM]
    assert (theirs["actor"], theirs["action"], theirs["reason"]) == (
        "system",
        "connection.expired",
        "nobody decided in time",
    )
    assert theirs["time"] == "2020-01-01T00:00:00.000000Z"
    now = datetime.now(UTC)
    for record in ours:
        when = datetime.fromisoformat(record["time"])
        assert when.utcoffset() == timedelta(0) and abs(now - when) < timedelta(days=1)
    assert f"exported {len(records)} audit events to standard output" in result.stderr
    for secret in secrets_of(abot, cloud_key):
        assert secret not in result.stdout and secret not in result.stderr


def test_output_goes_to_a_file_when_asked_and_settings_come_from_env_file(
    abot: Bot, cloud_key: CloudKey, tmp_path: Path
) -> None:
    approved(abot, cloud_key)
    (tmp_path / "audit.env").write_text(f"DATABASE_URL={abot.database_url}\n")

    previous = os.umask(0o022)  # the usual umask, which leaves new files readable by everyone
    try:
        result = run(
            ["--env-file", "audit.env", "audit", "export", "--output", "log.jsonl"],
            clean_env(tmp_path),
            tmp_path,
        )
    finally:
        os.umask(previous)

    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    # The log names people and connections: only its owner may read it.
    assert stat.S_IMODE((tmp_path / "log.jsonl").stat().st_mode) == 0o600
    written = (tmp_path / "log.jsonl").read_text()
    assert [r["action"] for r in records_of(written)] == ["connection.created", "connection.approved"]
    assert "exported 2 audit events to log.jsonl" in result.stderr
    for secret in secrets_of(abot, cloud_key):
        assert secret not in written


@pytest.mark.parametrize("kind", ["file", "symlink", "dangling-symlink"])
def test_an_output_that_exists_is_refused_and_left_alone(abot: Bot, tmp_path: Path, kind: str) -> None:
    target = tmp_path / "target.txt"
    if kind != "dangling-symlink":
        target.write_text("kept\n")
    output = target if kind == "file" else tmp_path / "log.jsonl"
    if kind != "file":
        output.symlink_to(target)

    result = run(
        ["audit", "export", "--output", str(output)],
        clean_env(tmp_path, DATABASE_URL=abot.database_url),
        tmp_path,
    )

    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == f"connections-bot: {output} already exists; name a new file (an export never replaces one)"
    )
    assert (target.read_text() == "kept\n") if kind != "dangling-symlink" else not target.exists()


def test_a_failed_export_leaves_no_output_file(tmp_path: Path) -> None:
    env = clean_env(tmp_path, DATABASE_URL=f"sqlite:///{tmp_path / 'nowhere.db'}")
    result = run(["audit", "export", "--output", "log.jsonl"], env, tmp_path)
    assert result.returncode == 2 and "no database at" in result.stderr
    assert not (tmp_path / "log.jsonl").exists()


def test_a_database_file_that_is_not_there_is_reported_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.db"
    result = run(["audit", "export"], clean_env(tmp_path, DATABASE_URL=f"sqlite:///{missing}"), tmp_path)
    assert result.returncode == 2
    assert "no database at" in result.stderr and str(missing) in result.stderr
    assert not missing.exists() and result.stdout == ""


def test_a_database_never_migrated_is_refused_in_one_line(tmp_path: Path, database_url: str) -> None:
    if is_sqlite(database_url):
        sqlite_path(database_url).touch()
    result = run(["audit", "export"], clean_env(tmp_path, DATABASE_URL=database_url), tmp_path)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "connections-bot migrate" in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_an_unreachable_database_is_reported_without_its_password(tmp_path: Path) -> None:
    url = "postgresql://auditor:pa55-w0rd-never-shown@127.0.0.1:1/audit"
    result = run(["audit", "export"], clean_env(tmp_path, DATABASE_URL=url), tmp_path)
    assert result.returncode == 1
    assert "pa55-w0rd-never-shown" not in result.stderr
    assert "127.0.0.1:1/audit" in result.stderr and "Traceback" not in result.stderr


def test_export_is_listed_in_the_help(tmp_path: Path) -> None:
    result = run(["audit", "--help"], clean_env(tmp_path), tmp_path)
    assert result.returncode == 0 and "export" in result.stdout
    result = run(["audit", "export", "--help"], clean_env(tmp_path), tmp_path)
    assert result.returncode == 0 and "--output" in result.stdout
