"""One side of two first starts racing on a fresh database: a real process that, for each round,
waits for the round's barrier file, does what ``serve`` does first (load or make the master key and
bind the database to it), then stores one credential sealed with that key, and writes what happened.

Run as ``python -m tests.support.first_start DIR DATABASE_URL SIDE ROUNDS`` with the keyring and
config directory of the race in its environment. Round ``n`` starts when ``DIR/go-n`` appears; the
outcome goes to ``DIR/SIDE-n.json``: ``{"key_id": ...}``, or ``{"refused": message}`` when the guard
refused the start. A long-lived process plays every round, so the rounds are not paced by imports.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

from bot.keys import MasterKeyError
from bot.keys.guard import guard_master_key
from bot.settings import KeySettings
from bot.store import Database
from tests.fakes.confluent_api import new_api_key, new_api_secret
from tests.support.seeding import Seed, seed_connections

__all__ = ["barrier", "outcome_path"]

_GIVE_UP = 120.0  # seconds without a barrier: the test is gone


def barrier(directory: Path, round_: int) -> Path:
    return directory / f"go-{round_}"


def outcome_path(directory: Path, side: str, round_: int) -> Path:
    return directory / f"{side}-{round_}.json"


async def _start(url: str, side: str, round_: int) -> dict[str, str]:
    db = Database.from_url(url)
    try:
        try:
            loaded, cipher = await guard_master_key(db, KeySettings())
        except MasterKeyError as exc:
            return {"refused": str(exc)}
    finally:
        await db.dispose()
    seed = Seed(name=f"{side}-{round_}", key=new_api_key(), secret=new_api_secret())
    await seed_connections(url, cipher, [seed])
    return {"key_id": loaded.key.key_id}


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + _GIVE_UP
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"no {path} after {_GIVE_UP:.0f}s")
        time.sleep(0.0005)


def main(argv: list[str]) -> None:
    directory, url, side, rounds = Path(argv[0]), argv[1], argv[2], int(argv[3])
    for round_ in range(rounds):
        _wait_for(barrier(directory, round_))
        outcome = asyncio.run(_start(url, side, round_))
        done = outcome_path(directory, side, round_)
        tmp = done.with_suffix(".tmp")
        tmp.write_text(json.dumps(outcome))
        os.replace(tmp, done)


if __name__ == "__main__":
    main(sys.argv[1:])
