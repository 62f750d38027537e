"""Two first starts at the same moment on a fresh database, with the master key in the keyring.

Two real processes share one keyring and one config directory. In every round the test empties the
database and the keyring, lets both processes start at once (they wait on a barrier file), each
stores a credential if its start succeeded, and then a restart must load a key that opens every
credential stored in that round. A start may be refused (with a message), never serve with a key
the keyring no longer holds.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

from bot.keys import MasterKeyError
from bot.keys.guard import guard_master_key
from bot.settings import KeySettings
from bot.store import Database
from bot.store.db import Base
from tests.support.file_keyring import SharedFileKeyring, keyring_env
from tests.support.first_start import barrier, outcome_path
from tests.support.processes import clean_env
from tests.support.sealed_data import open_everything

ROUNDS = 40  # the race lost data in about 1 round in 15 before starts took the rotation lock
SIDES = ("a", "b")
CREDENTIAL_FIELDS = 2  # each start that succeeded stored a key and a secret


async def _empty(url: str) -> None:
    db = Database.from_url(url)
    try:
        async with db.transaction() as tx:
            for table in reversed(Base.metadata.sorted_tables):
                await tx.session.execute(table.delete())
    finally:
        await db.dispose()


async def _restart(url: str, ring: SharedFileKeyring, key_file: Path, started: int) -> str | None:
    """What a restart finds wrong with the round's data, or None."""
    db = Database.from_url(url)
    try:
        loaded, _ = await guard_master_key(db, KeySettings(), keyring_backend=ring, default_key_file=key_file)
    except MasterKeyError as exc:
        return f"the restart was refused: {exc}"
    finally:
        await db.dispose()
    opened = await open_everything(url, loaded.key)
    if not opened.canary or len(opened.values) != CREDENTIAL_FIELDS * started:
        return f"{len(opened.values)} of {CREDENTIAL_FIELDS * started} credential fields open after a restart"
    return None


def _outcome(path: Path, worker: subprocess.Popen[str]) -> dict[str, str]:
    while not path.exists():
        if worker.poll() is not None:
            raise AssertionError(f"the start process ended early: {worker.communicate()[1]}")
        time.sleep(0.001)
    outcome: dict[str, str] = json.loads(path.read_text())
    return outcome


def test_two_first_starts_never_lose_a_credential(tmp_path: Path, migrated_database_url: str) -> None:
    url = migrated_database_url
    ring = SharedFileKeyring(tmp_path / "keyring.json")
    key_file = tmp_path / "config" / "connections-bot" / "master.key"
    rounds = tmp_path / "rounds"
    rounds.mkdir()
    env = clean_env(tmp_path, **keyring_env(ring.path))
    command = [sys.executable, "-m", "tests.support.first_start", str(rounds), url]
    workers = {
        side: subprocess.Popen(
            [*command, side, str(ROUNDS)], env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True
        )
        for side in SIDES
    }
    lost: list[str] = []
    refused = 0
    try:
        for round_ in range(ROUNDS):
            asyncio.run(_empty(url))
            ring.path.unlink(missing_ok=True)
            barrier(rounds, round_).touch()
            outcomes = [_outcome(outcome_path(rounds, side, round_), workers[side]) for side in SIDES]
            for outcome in outcomes:
                if "refused" in outcome:
                    refused += 1
                    assert "master key" in outcome["refused"], outcome
            started = sum("key_id" in outcome for outcome in outcomes)
            assert started >= 1, outcomes
            problem = asyncio.run(_restart(url, ring, key_file, started))
            if problem is not None:
                lost.append(f"round {round_}: {problem}")
    finally:
        for worker in workers.values():
            if worker.poll() is None:
                worker.kill()
            worker.communicate()
    assert not lost, f"{len(lost)} of {ROUNDS} rounds lost data ({refused} starts refused): {lost}"
