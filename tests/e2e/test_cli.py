"""The ``connections-bot`` command as an operator runs it: a real process, its exit codes and its
stderr."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from bot.crypto import Cipher, MasterKey, associated_data
from bot.redaction import Secret
from bot.store import Connection, Credential, Database
from bot.store.migrate import is_at_head, upgrade_to_head
from tests.e2e.conftest import SIGNING_SECRET
from tests.fakes.slack_api import FakeSlack
from tests.support.processes import EXE, clean_env, serving
from tests.support.seeding import Seed, seed_connections
from tests.support.slack_requests import SlackSender


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EXE, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def test_a_missing_required_setting_stops_start_up_with_one_line_and_exit_2(tmp_path: Path) -> None:
    result = run(["serve"], clean_env(tmp_path), tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "SLACK_BOT_TOKEN" in lines[0]


def test_the_signing_secret_is_required_in_http_mode(tmp_path: Path) -> None:
    result = run(["serve"], clean_env(tmp_path, SLACK_BOT_TOKEN="xoxb-1"), tmp_path)
    assert result.returncode == 2
    assert "SLACK_SIGNING_SECRET" in result.stderr


def test_migrate_brings_a_new_database_to_the_latest_schema(tmp_path: Path, database_url: str) -> None:
    env = clean_env(tmp_path, SLACK_BOT_TOKEN="xoxb-1", SLACK_SIGNING_SECRET="s", DATABASE_URL=database_url)
    result = run(["migrate"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert is_at_head(database_url)
    assert run(["migrate"], env, tmp_path).returncode == 0


def test_serve_migrates_makes_a_key_file_and_answers_slack(tmp_path: Path) -> None:
    fake = FakeSlack()
    with fake.serve():
        env = clean_env(
            tmp_path,
            SLACK_BOT_TOKEN=fake.bot_token,
            SLACK_SIGNING_SECRET=SIGNING_SECRET,
            SLACK_API_URL=fake.api_url,
        )
        with serving(env, tmp_path) as (url, process):
            with SlackSender(url, signing_secret=SIGNING_SECRET, fake=fake) as sender:
                assert sender.command("").status_code == 200
                [hook] = fake.wait_for_hook()
                assert hook.ok
            process.terminate()
            _, stderr = process.communicate(timeout=15)
        # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal as servers do.
        assert process.returncode in (0, -signal.SIGTERM)
        assert "stopped" in stderr

    # SQLite by default, in the working directory, at the latest schema.
    assert is_at_head(f"sqlite:///{tmp_path / 'connections.db'}")
    # No keyring on this machine: a key file only its owner can read, and a warning naming options.
    key_file = tmp_path / "config" / "connections-bot" / "master.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert "CONNECTIONS_MASTER_KEY" in stderr and "keyrings.cryptfile" in stderr
    key_text = key_file.read_text().strip()
    assert key_text not in stderr
    assert fake.bot_token not in stderr and SIGNING_SECRET not in stderr


def store_one_credential(database_url: str, key: MasterKey) -> None:
    import asyncio

    async def insert() -> None:
        db = Database.from_url(database_url)
        cipher = Cipher(key)
        try:
            async with db.transaction() as tx:
                connection = Connection(
                    team_id="T1", name="prod", provider="confluent_cloud", created_by="U1"
                )
                await tx.connections.add(connection)
                sealed = cipher.seal(
                    Secret("a-stored-secret-value"), associated_data(connection.id, "api_secret", 1)
                )
                await tx.credentials.add(
                    Credential(
                        team_id="T1",
                        connection_id=connection.id,
                        version=1,
                        field="api_secret",
                        key_id=sealed.key_id,
                        nonce=sealed.nonce,
                        ciphertext=sealed.ciphertext,
                    )
                )
        finally:
            await db.dispose()

    asyncio.run(insert())


@pytest.fixture
def database_with_a_credential(database_url: str) -> tuple[str, MasterKey]:
    upgrade_to_head(database_url)
    key = MasterKey.generate()
    store_one_credential(database_url, key)
    return database_url, key


def test_serve_refuses_a_master_key_that_does_not_open_the_stored_credentials(
    tmp_path: Path, database_with_a_credential: tuple[str, MasterKey]
) -> None:
    url, _right_key = database_with_a_credential
    wrong = MasterKey.generate().to_base64().reveal()
    env = clean_env(
        tmp_path,
        SLACK_BOT_TOKEN="xoxb-1",
        SLACK_SIGNING_SECRET="s",
        DATABASE_URL=url,
        CONNECTIONS_MASTER_KEY=wrong,
    )
    result = run(["serve"], env, tmp_path)
    assert result.returncode == 2
    assert "does not open" in result.stderr
    assert wrong not in result.stderr


def test_serve_never_makes_a_new_key_over_existing_data(
    tmp_path: Path, database_with_a_credential: tuple[str, MasterKey]
) -> None:
    url, _ = database_with_a_credential
    env = clean_env(tmp_path, SLACK_BOT_TOKEN="xoxb-1", SLACK_SIGNING_SECRET="s", DATABASE_URL=url)
    result = run(["serve"], env, tmp_path)
    assert result.returncode == 2
    assert "master key" in result.stderr.lower()
    assert not (tmp_path / "config" / "connections-bot" / "master.key").exists()


def test_serve_starts_with_the_right_key(
    tmp_path: Path, database_with_a_credential: tuple[str, MasterKey]
) -> None:
    url, key = database_with_a_credential
    fake = FakeSlack()
    with fake.serve():
        env = clean_env(
            tmp_path,
            SLACK_BOT_TOKEN=fake.bot_token,
            SLACK_SIGNING_SECRET=SIGNING_SECRET,
            SLACK_API_URL=fake.api_url,
            DATABASE_URL=url,
            CONNECTIONS_MASTER_KEY=key.to_base64().reveal(),
        )
        with serving(env, tmp_path) as (health_url, _):
            assert httpx.get(f"{health_url}/healthz").json()["master_key"] == "ok"


def test_a_malformed_provider_setting_stops_start_up_with_one_line_and_exit_2(tmp_path: Path) -> None:
    env = clean_env(
        tmp_path,
        SLACK_BOT_TOKEN="xoxb-1",
        SLACK_SIGNING_SECRET="s",
        CONFLUENT_CLOUD_API_URL="api.confluent.cloud",
    )
    result = run(["serve"], env, tmp_path)
    assert result.returncode == 2
    assert "CONFLUENT_CLOUD_API_URL" in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("command", [["serve"], ["rotate-master-key"], ["audit", "export"]])
def test_a_dotenv_holding_the_master_key_that_others_can_read_stops_every_command(
    tmp_path: Path, command: list[str]
) -> None:
    key = MasterKey.generate().to_base64().reveal()
    env_file = tmp_path / ".env"
    env_file.write_text(f"SLACK_BOT_TOKEN=xoxb-1\nSLACK_SIGNING_SECRET=s\nCONNECTIONS_MASTER_KEY={key}\n")
    env_file.chmod(0o644)

    result = run(command, clean_env(tmp_path), tmp_path)

    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert ".env holds CONNECTIONS_MASTER_KEY but is accessible by group or others (mode 644)" in line
    assert key not in result.stderr + result.stdout
    assert not (tmp_path / "connections.db").exists()


def test_migrate_secrets_to_where_every_credential_is_moves_nothing_and_needs_no_slack_token(
    tmp_path: Path, migrated_database_url: str
) -> None:
    key = MasterKey.generate()
    seed = Seed("prod", "KEYPROD00001", "sec-prod-5e4d3c2b1a0f9e8d7c6b")
    asyncio.run(seed_connections(migrated_database_url, Cipher(key), [seed]))
    env = clean_env(
        tmp_path,
        DATABASE_URL=migrated_database_url,
        CONNECTIONS_MASTER_KEY=key.to_base64().reveal(),
        LOG_LEVEL="DEBUG",
    )

    result = run(["migrate-secrets", "--to", "local"], env, tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "Nothing to move: every active credential is already in the bot's database.",
        "moved 0, already in local 1, changed meanwhile 0, failed 0",
    ]
    dry = run(["migrate-secrets", "--to", "local", "--dry-run"], env, tmp_path)
    assert dry.returncode == 0
    assert dry.stdout.splitlines() == [
        "Dry run, nothing was changed: would move 0 to the bot's database, already in local 1."
    ]
    for output in (result.stdout, result.stderr, dry.stdout, dry.stderr):
        assert seed.secret not in output and seed.key not in output


def test_migrate_secrets_on_a_database_no_start_has_bound_makes_no_master_key(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'connections.db'}"
    upgrade_to_head(url)

    result = run(["migrate-secrets", "--to", "local"], clean_env(tmp_path, DATABASE_URL=url), tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "Nothing to move: there is no active connection.",
        "moved 0, already in local 0, changed meanwhile 0, failed 0",
    ]
    assert not (tmp_path / "config" / "connections-bot" / "master.key").exists()


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["migrate-secrets"], "the following arguments are required: --to"),
        (["migrate-secrets", "--to", "s3"], "argument --to: invalid choice: 's3'"),
    ],
)
def test_migrate_secrets_refuses_a_missing_or_unknown_target(
    tmp_path: Path, args: list[str], said: str
) -> None:
    result = run(args, clean_env(tmp_path), tmp_path)
    assert result.returncode == 2
    assert said in result.stderr
    assert not (tmp_path / "connections.db").exists()


def test_migrate_secrets_reports_a_missing_database_in_one_line(tmp_path: Path) -> None:
    env = clean_env(tmp_path, DATABASE_URL=f"sqlite:///{tmp_path / 'nowhere.db'}")
    result = run(["migrate-secrets", "--to", "local"], env, tmp_path)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "no database at" in line and "DATABASE_URL" in line
