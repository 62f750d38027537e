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
    setup: KeySetup,
    url: str,
    env_key: MasterKey | None = None,
    *,
    yes: bool = True,
    previous: MasterKey | None = None,
    args: list[str] | None = None,
    **extra: str,
) -> subprocess.CompletedProcess[str]:
    """The command as an operator runs it: an env key to the key kept ready in its variable."""
    env = clean_env(setup.home, DATABASE_URL=url, **setup.env(env_key, previous), **extra)
    return subprocess.run(
        [
            EXE,
            "rotate-master-key",
            *(setup.rotate_args() if args is None else args),
            *(["--yes"] if yes else []),
        ],
        stdin=subprocess.DEVNULL,
        env=env,
        cwd=setup.home,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def start(
    setup: KeySetup, url: str, env_key: MasterKey | None = None, previous: MasterKey | None = None
) -> LoadedKey:
    """What ``serve`` does first: load the key and prove it opens the data."""

    async def guard() -> LoadedKey:
        db = Database.from_url(url)
        try:
            loaded, _ = await guard_master_key(
                db,
                setup.settings(env_key, previous),
                keyring_backend=setup.keyring_backend(),
                default_key_file=setup.key_file,
            )
        finally:
            await db.dispose()
        return loaded

    return asyncio.run(guard())


def keys_kept(setup: KeySetup) -> list[MasterKey]:
    """Every key that still exists somewhere: on disk, in the keyring, or (env) the operator's."""
    kept = (
        setup.old,
        setup.primary(),
        *setup.staged_keys(),
        *([setup.next] if setup.source == "env" else []),
    )
    return [key for key in kept if key is not None]


def new_key(setup: KeySetup, stdout: str) -> MasterKey | None:
    """The key a run reports it rotated to, from where it now lives."""
    found = re.search(r"master key ([0-9a-f]{16})", stdout)
    assert found is not None, stdout
    return setup.next if setup.source == "env" else setup.primary()


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
    seen = keys_kept(setup)
    # Every row opens with one key that still exists: all with the old one, or all with the new one.
    opened = asyncio.run(open_everything(url, *seen))
    assert opened.canary and opened.values == sealed.plaintexts
    assert len(opened.key_ids) == 1
    committed = opened.key_ids != {setup.old.key_id}
    assert committed == (step in ("committed", "promoting"))

    if source == "env":
        # The operator's next step either way: every instance switched to the new key, the old
        # one as previous. A start opens the data wherever the command stopped.
        loaded = start(setup, url, env_key=setup.next, previous=setup.old)
        assert loaded.key == setup.next
        again = rotate(setup, url, env_key=setup.next, previous=setup.old, args=[])
        assert again.returncode == 0, again.stderr
        moved = "Nothing new was rotated" if committed else "Re-encrypted 8 credential fields"
        assert moved in again.stdout and "opens nothing in this database" in again.stdout
        final = setup.next
    else:
        loaded = start(setup, url)
        assert_opens_everything(url, sealed, loaded.key)
        again = rotate(setup, url)
        assert again.returncode == 0, again.stderr
        final = new_key(setup, again.stdout)
        assert final is not None and final not in (setup.old, loaded.key)
        # A run killed before its commit leaves its staged key, which seals nothing; nothing else stays.
        leftovers = setup.staged_keys()
        assert leftovers == ([] if committed else [k for k in seen if k not in (setup.old, final)])
        for leftover in leftovers:
            assert asyncio.run(open_everything(url, leftover)).values == {}
    assert_opens_everything(url, sealed, final)
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
    new = setup.next if source == "env" else setup.primary()
    assert new is not None and new != setup.old
    assert_opens_everything(url, sealed, new)
    old_only = asyncio.run(open_everything(url, setup.old))
    assert not old_only.canary and old_only.values == {}
    assert f"master key {new.key_id} (was {setup.old.key_id})" in result.stdout
    # An env key's new key is the one the operator keeps: the bot writes it nowhere.
    assert setup.staged_keys() == []
    if source == "env":
        assert (
            "set CONNECTIONS_MASTER_KEY to the new key (as kept in CONNECTIONS_MASTER_KEY_NEXT)"
            in result.stdout
        )
        assert "CONNECTIONS_MASTER_KEY_PREVIOUS to the old one" in result.stdout
    else:
        assert "the old key is gone" in result.stdout
    output = result.stdout + result.stderr
    assert_no_key_or_secret_in(output, sealed, setup.old, new)
    assert_no_key_or_secret_in(dump_database_text(url), sealed, setup.old, new)


def run_command(setup: KeySetup, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EXE, *args],
        env=clean_env(setup.home, DATABASE_URL=url, **setup.env()),
        cwd=setup.home,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_an_env_key_is_never_rotated_to_a_key_only_this_machine_would_have(
    tmp_path: Path, migrated_database_url: str
) -> None:
    url = migrated_database_url
    setup = key_setup("env", tmp_path)
    sealed = asyncio.run(seed_sealed_data(url, setup.old))

    refused = rotate(setup, url, args=[])

    assert refused.returncode == 2 and refused.stdout == ""
    assert "nothing was changed" in refused.stderr and "generate-master-key" in refused.stderr
    assert "--new-key-from-env NAME" in refused.stderr
    assert_opens_everything(url, sealed, setup.old)
    assert setup.staged_keys() == []


def test_a_key_made_by_generate_master_key_and_kept_in_a_file_is_rotated_to(
    tmp_path: Path, migrated_database_url: str
) -> None:
    url = migrated_database_url
    setup = key_setup("env", tmp_path)
    sealed = asyncio.run(seed_sealed_data(url, setup.old))
    missing = run_command(setup, url, "rotate-master-key", "--new-key-file", "handover/connections.key")
    assert (
        missing.returncode == 2
        and "no such file" in missing.stderr
        and "nothing was changed" in missing.stderr
    )

    generated = run_command(setup, url, "generate-master-key")

    assert generated.returncode == 0, generated.stderr
    new = MasterKey.from_base64(generated.stdout)
    assert generated.stdout == new.to_base64().reveal() + "\n"
    assert new.key_id in generated.stderr and new.to_base64().reveal() not in generated.stderr
    handover = tmp_path / "handover" / "connections.key"
    handover.parent.mkdir()
    handover.write_text(generated.stdout)
    handover.chmod(0o600)

    result = run_command(setup, url, "rotate-master-key", "--new-key-file", "handover/connections.key")

    assert result.returncode == 0, result.stderr
    assert_opens_everything(url, sealed, new)
    assert MasterKey.from_base64(handover.read_text()) == new and setup.staged_keys() == []
    assert f"as kept in {handover}" in result.stdout
    # A start with the old key is refused with what to do.
    refused = rotate(setup, url)
    assert refused.returncode == 2
    assert "rotate-master-key moved them to master key" in refused.stderr and str(handover) in refused.stderr
    assert_no_key_or_secret_in(result.stdout + result.stderr + refused.stderr, sealed, setup.old, new)


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
    new = setup.next if source == "env" else setup.staged()
    assert new is not None
    # An env instance is switched to the new key, with the old one as previous.
    key_env = setup.env(new, setup.old) if source == "env" else setup.env()

    fake = FakeSlack()
    with fake.serve():
        env = clean_env(
            setup.home,
            SLACK_BOT_TOKEN=fake.bot_token,
            SLACK_SIGNING_SECRET=SIGNING_SECRET,
            SLACK_API_URL=fake.api_url,
            DATABASE_URL=url,
            **key_env,
        )
        with serving(env, tmp_path) as (base_url, process):
            health = httpx.get(f"{base_url}/healthz").json()
            assert health["master_key"] == "ok"
            process.terminate()
            _, stderr = process.communicate(timeout=15)
        assert process.returncode in (0, -signal.SIGTERM)

    assert_opens_everything(url, sealed, new)
    if source == "env":
        # Every row moved: the previous key is needed by backups from before only.
        assert health["previous_master_key"] == "removable"
        assert "CONNECTIONS_MASTER_KEY_PREVIOUS (master key" in stderr and "opens no row" in stderr
    else:
        assert "previous_master_key" not in health
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
