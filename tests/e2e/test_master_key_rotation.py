"""``connections-bot rotate-master-key`` as an operator runs it, killed at every step: a real
process against SQLite and PostgreSQL, with the key in ``CONNECTIONS_MASTER_KEY``, in the key file
or in a keyring. Whatever the step, every credential still opens with the old key or the new one,
the next start works, and running the command again completes."""

from __future__ import annotations

import asyncio
import base64
import fcntl
import re
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from bot.crypto import MasterKey
from bot.keys.guard import guard_master_key
from bot.keys.rotation import FAILPOINTS
from bot.keys.sources import LoadedKey
from bot.store import Database
from tests.e2e.conftest import SIGNING_SECRET
from tests.fakes.slack_api import FakeSlack
from tests.support.databases import dump_database_text
from tests.support.key_sources import SOURCES, KeySetup, key_setup
from tests.support.processes import EXE, clean_env, serving
from tests.support.sealed_data import SealedData, open_everything, seed_sealed_data

KILLED = 137
# A key from CONNECTIONS_MASTER_KEY has no promotion step: the operator swaps the variable.
KILL_POINTS = [
    pytest.param(source, step, False, id=f"{source}-{step}")
    for source in SOURCES
    for step in FAILPOINTS
    if not (source == "env" and step == "promoting")
]
# Data sealed under the raw key, as before HKDF: the start inside the rotation moves it to the
# derived key first, so a kill at any step still leaves one key that opens everything.
KILL_POINTS += [pytest.param("keyring", step, True, id=f"keyring-{step}-legacy") for step in FAILPOINTS]


def rotate(
    setup: KeySetup, url: str, env_key: MasterKey | None = None, *, yes: bool = True, **extra: str
) -> subprocess.CompletedProcess[str]:
    env = clean_env(setup.home, DATABASE_URL=url, **setup.env(env_key), **extra)
    return subprocess.run(
        [EXE, "rotate-master-key", *(["--yes"] if yes else [])],
        stdin=subprocess.DEVNULL,
        env=env,
        cwd=setup.home,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def start(setup: KeySetup, url: str, env_key: MasterKey | None = None) -> LoadedKey:
    """What ``serve`` does first: load the key and prove it opens the data."""

    async def guard() -> LoadedKey:
        db = Database.from_url(url)
        try:
            loaded, _ = await guard_master_key(
                db,
                setup.settings(env_key),
                keyring_backend=setup.keyring_backend(),
                default_key_file=setup.key_file,
            )
        finally:
            await db.dispose()
        return loaded

    return asyncio.run(guard())


def keys_on_disk(setup: KeySetup) -> list[MasterKey]:
    return [key for key in (setup.old, setup.primary(), *setup.staged_keys()) if key is not None]


def new_key(setup: KeySetup, stdout: str) -> MasterKey | None:
    """The key a run reports it rotated to, from where it now lives."""
    found = re.search(r"under the new master key ([0-9a-f]{16})", stdout)
    assert found is not None, stdout
    if setup.source == "env":
        return MasterKey.from_base64(setup.staged_file(found[1]).read_text())
    return setup.primary()


def assert_opens_everything(url: str, sealed: SealedData, key: MasterKey) -> None:
    opened = asyncio.run(open_everything(url, key))
    assert opened.canary, "the key canary does not open"
    assert opened.values == sealed.plaintexts
    assert opened.key_ids == {key.key_id}


def assert_no_key_or_secret_in(text: str, sealed: SealedData, *keys: MasterKey) -> None:
    for key in keys:
        encoded = key.to_base64().reveal()
        assert encoded not in text
        assert base64.b64decode(encoded).hex() not in text
    for secret in sealed.secrets():
        assert secret not in text


@pytest.mark.parametrize(("source", "step", "legacy"), KILL_POINTS)
def test_a_rotation_killed_at_any_step_loses_nothing(
    tmp_path: Path, migrated_database_url: str, source: str, step: str, legacy: bool
) -> None:
    url = migrated_database_url
    setup = key_setup(source, tmp_path)
    sealed = asyncio.run(seed_sealed_data(url, setup.old, legacy=legacy))

    killed = rotate(setup, url, CONNECTIONS_FAILPOINT=step)

    assert killed.returncode == KILLED, killed.stderr
    seen = keys_on_disk(setup)
    # Every row opens with one key that still exists: all with the old one, or all with the new one.
    opened = asyncio.run(open_everything(url, *seen))
    assert opened.canary and opened.values == sealed.plaintexts
    assert len(opened.key_ids) == 1
    committed = opened.key_ids != {setup.old.key_id}
    assert committed == (step in ("committed", "promoting"))

    loaded = start(setup, url)
    assert_opens_everything(url, sealed, loaded.key)

    again = rotate(setup, url)
    assert again.returncode == 0, again.stderr
    if source == "env" and committed:
        # Only the operator's swap was missing: the command says so instead of rotating again.
        assert "Nothing new was rotated" in again.stdout
        assert loaded.key in setup.staged_keys()
        again = rotate(setup, url, env_key=loaded.key)
        assert again.returncode == 0, again.stderr
        assert "Re-encrypted 8 credential fields" in again.stdout
    final = new_key(setup, again.stdout)
    assert final is not None and final not in (setup.old, loaded.key)
    assert_opens_everything(url, sealed, final)
    if source != "env":
        # A run killed before its commit leaves its staged key, which seals nothing; nothing else stays.
        leftovers = setup.staged_keys()
        assert leftovers == ([] if committed else [k for k in seen if k not in (setup.old, final)])
        for leftover in leftovers:
            assert asyncio.run(open_everything(url, leftover)).values == {}
    output = killed.stdout + killed.stderr + again.stdout + again.stderr
    assert_no_key_or_secret_in(output, sealed, *seen, loaded.key, final)


@pytest.mark.parametrize("source", SOURCES)
def test_a_rotation_moves_everything_to_a_new_key_and_prints_no_secret(
    tmp_path: Path, migrated_database_url: str, source: str
) -> None:
    url = migrated_database_url
    setup = key_setup(source, tmp_path)
    sealed = asyncio.run(seed_sealed_data(url, setup.old))

    result = rotate(setup, url)

    assert result.returncode == 0, result.stderr
    new = setup.staged() if source == "env" else setup.primary()
    assert new is not None and new != setup.old
    assert_opens_everything(url, sealed, new)
    old_only = asyncio.run(open_everything(url, setup.old))
    assert not old_only.canary and old_only.values == {}
    assert f"master key {new.key_id} (was {setup.old.key_id})" in result.stdout
    if source == "env":
        staged_file = setup.staged_file(new.key_id)
        assert f"set CONNECTIONS_MASTER_KEY to the contents of {staged_file}" in result.stdout
        assert f"delete {staged_file}" in result.stdout
        assert staged_file.stat().st_mode & 0o777 == 0o600
    else:
        assert setup.staged() is None
        assert "the old key is gone" in result.stdout
    output = result.stdout + result.stderr
    assert_no_key_or_secret_in(output, sealed, setup.old, new)
    assert_no_key_or_secret_in(dump_database_text(url), sealed, setup.old, new)


def test_the_new_key_file_option_names_where_an_env_key_goes(
    tmp_path: Path, migrated_database_url: str
) -> None:
    url = migrated_database_url
    setup = key_setup("env", tmp_path)
    sealed = asyncio.run(seed_sealed_data(url, setup.old))
    handover = tmp_path / "handover" / "connections.key"
    env = clean_env(setup.home, DATABASE_URL=url, **setup.env())

    result = subprocess.run(
        [EXE, "rotate-master-key", "--new-key-file", "handover/connections.key"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    new = MasterKey.from_base64(handover.read_text())
    assert_opens_everything(url, sealed, new)
    assert setup.staged_keys() == []
    assert f"the contents of {handover}" in result.stdout

    # A start with the old key is refused with what to do, since it cannot see that file.
    refused = rotate(setup, url)
    assert refused.returncode == 2
    assert "rotate-master-key moved them to master key" in refused.stderr and str(handover) in refused.stderr


def test_the_command_needs_no_slack_token_and_reports_a_missing_database(tmp_path: Path) -> None:
    setup = key_setup("key_file", tmp_path)

    result = rotate(setup, f"sqlite:///{tmp_path / 'nowhere.db'}")

    assert result.returncode == 2
    assert "no database at" in result.stderr and "SLACK" not in result.stderr
    assert not (tmp_path / "nowhere.db").exists()


@pytest.mark.parametrize("source", SOURCES)
def test_serve_after_a_rotation_killed_after_its_commit_starts_with_the_new_key(
    tmp_path: Path, migrated_database_url: str, source: str
) -> None:
    url = migrated_database_url
    setup = key_setup(source, tmp_path)
    sealed = asyncio.run(seed_sealed_data(url, setup.old))
    assert rotate(setup, url, CONNECTIONS_FAILPOINT="committed").returncode == KILLED
    new = setup.staged()
    assert new is not None

    fake = FakeSlack()
    with fake.serve():
        env = clean_env(
            setup.home,
            SLACK_BOT_TOKEN=fake.bot_token,
            SLACK_SIGNING_SECRET=SIGNING_SECRET,
            SLACK_API_URL=fake.api_url,
            DATABASE_URL=url,
            **setup.env(),
        )
        with serving(env, tmp_path) as (base_url, process):
            assert httpx.get(f"{base_url}/healthz").json()["master_key"] == "ok"
            process.terminate()
            _, stderr = process.communicate(timeout=15)
        assert process.returncode in (0, -signal.SIGTERM)

    assert_opens_everything(url, sealed, new)
    if source == "env":
        assert "CONNECTIONS_MASTER_KEY holds master key" in stderr
        assert str(setup.staged_file(new.key_id)) in stderr and setup.staged_file(new.key_id).exists()
    else:
        assert "finished a master-key rotation that stopped after its commit" in stderr
        assert setup.primary() == new and setup.staged() is None
    assert_no_key_or_secret_in(stderr, sealed, setup.old, new)


@pytest.mark.parametrize("source", ["key_file", "keyring"])
def test_a_key_in_a_shared_slot_is_replaced_only_with_yes(
    tmp_path: Path, migrated_database_url: str, source: str
) -> None:
    url = migrated_database_url
    setup = key_setup(source, tmp_path)
    sealed = asyncio.run(seed_sealed_data(url, setup.old))
    before = asyncio.run(open_everything(url, setup.old))

    refused = rotate(setup, url, yes=False)

    assert refused.returncode == 2
    slot = "'master-key'" if source == "keyring" else str(setup.key_file)
    warning = refused.stderr[refused.stderr.index("WARNING: ") :]
    assert slot in warning.splitlines()[0] and "every other database" in warning
    assert "--yes" in refused.stderr and "nothing was changed" in refused.stderr
    assert refused.stdout == ""
    assert asyncio.run(open_everything(url, setup.old)) == before
    assert setup.primary() == setup.old and setup.staged_keys() == []

    accepted = rotate(setup, url)

    assert accepted.returncode == 0, accepted.stderr
    assert "WARNING: " in accepted.stderr
    new = setup.primary()
    assert new is not None and new != setup.old
    assert_opens_everything(url, sealed, new)


def test_a_rotation_while_another_holds_the_lock_changes_nothing(
    tmp_path: Path, migrated_database_url: str
) -> None:
    url = migrated_database_url
    setup = key_setup("key_file", tmp_path)
    asyncio.run(seed_sealed_data(url, setup.old))
    before = asyncio.run(open_everything(url, setup.old))
    lock = setup.key_file.with_name("master.key.lock")

    with lock.open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        busy = rotate(setup, url)

    assert busy.returncode == 2
    assert f"another rotate-master-key is running (it holds {lock})" in busy.stderr
    assert asyncio.run(open_everything(url, setup.old)) == before
    assert setup.primary() == setup.old and setup.staged_keys() == []


def test_a_new_key_file_that_cannot_be_written_is_named(tmp_path: Path, migrated_database_url: str) -> None:
    url = migrated_database_url
    setup = key_setup("env", tmp_path)
    asyncio.run(seed_sealed_data(url, setup.old))
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    env = clean_env(setup.home, DATABASE_URL=url, **setup.env())

    result = subprocess.run(
        [EXE, "rotate-master-key", "--new-key-file", str(blocker / "new.key")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 2
    # The lock beside the new file is the first thing that fails there; either way the path is named.
    assert str(blocker / "new.key") in result.stderr and "nothing was changed" in result.stderr
    assert "is the database reachable" not in result.stderr
    assert asyncio.run(open_everything(url, setup.old)).canary
