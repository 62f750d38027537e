"""``connections-bot migrate-secrets`` in this process, with in-memory stores registered as ``aws``
and ``vault``: what it prints, its exit codes, and a run stopped at a failpoint and run again.
(``tests/e2e/test_cli.py`` runs the command as a process for what needs no store.)"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import keyring.backends.fail
import pytest

from bot.__main__ import main
from bot.crypto import Cipher, MasterKey, Sealed, associated_data, config_digest
from bot.settings import ConfigError
from bot.store import Database
from bot.stores.base import SecretStore
from bot.stores.registry import STORES
from tests.support.memory_store import MemoryStore
from tests.support.seeding import Seed, seed_connections


class Exited(BaseException):
    """``os._exit`` was called: the process would have ended here."""


@pytest.fixture
def key() -> MasterKey:
    return MasterKey.generate()


@pytest.fixture
def aws() -> MemoryStore:
    store = MemoryStore()
    store.title = "AWS Secrets Manager"
    return store


@pytest.fixture
def vault() -> MemoryStore:
    store = MemoryStore()
    store.title = "HashiCorp Vault"
    return store


@pytest.fixture
def environment(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    migrated_database_url: str,
    key: MasterKey,
    aws: MemoryStore,
    vault: MemoryStore,
) -> Iterator[None]:
    """What an operator sets for the command: the database and the key, no Slack token; the stores
    as a build with both would have them."""
    for name in list(os.environ):
        if name.startswith(("SLACK_", "CONNECTIONS_", "AWS_", "VAULT_")) or name in (
            "DATABASE_URL",
            "LOG_LEVEL",
        ):
            monkeypatch.delenv(name)
    monkeypatch.setenv("DATABASE_URL", migrated_database_url)
    monkeypatch.setenv("CONNECTIONS_MASTER_KEY", key.to_base64().reveal())
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", f"{keyring.backends.fail.__name__}.Keyring")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(STORES, "aws", lambda env: aws)
    monkeypatch.setitem(STORES, "vault", lambda env: vault)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:  # the command installs its own log handler, on the stderr of this test
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)


@pytest.fixture
def seeded(environment: None, migrated_database_url: str, key: MasterKey) -> list[Seed]:
    seeds = [
        Seed("prod", "KEYPROD00001", "sec-prod-9f8e7d6c5b4a39281706"),
        Seed("staging", "KEYSTAGING01", "sec-staging-0a1b2c3d4e5f60718293"),
        Seed("dev", "KEYDEV000001", "sec-dev-a0b1c2d3e4f5a6b7c8d9"),
    ]
    asyncio.run(seed_connections(migrated_database_url, Cipher(key), seeds))
    return seeds


def run(*args: str) -> int:
    return main(["--env-file", "none.env", "migrate-secrets", *args])


def assert_no_secret(seeds: list[Seed], *texts: str) -> None:
    for seed in seeds:
        for text in texts:
            assert seed.secret not in text and seed.key not in text


def test_it_moves_every_credential_counts_them_and_a_second_run_says_nothing_is_left(
    seeded: list[Seed], aws: MemoryStore, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("--to", "aws") == 0
    first = capsys.readouterr()
    assert first.out.splitlines() == ["moved 3, already in aws 0, changed meanwhile 0, failed 0"]
    assert first.err == ""  # not a terminal: no progress bar; nothing logged below WARNING
    assert len(aws.paths()) == 3 and aws.closed

    assert run("--to", "aws") == 0
    second = capsys.readouterr()
    assert second.out.splitlines() == [
        "Nothing to move: every active credential is already in AWS Secrets Manager.",
        "moved 0, already in aws 3, changed meanwhile 0, failed 0",
    ]
    assert len(aws.made("write")) == 3
    assert_no_secret(seeded, first.out, first.err, second.out, second.err)


def test_a_refused_credential_is_named_with_its_path_and_reason_and_the_exit_code_is_1(
    seeded: list[Seed], aws: MemoryStore, vault: MemoryStore, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("--to", "aws") == 0
    taken = aws.paths()[0]
    vault.write_outside(taken, {"api_key": "SOMEONE", "api_secret": "else"})
    capsys.readouterr()

    assert run("--to", "vault") == 1

    out = capsys.readouterr().out
    assert "moved 2, already in vault 0, changed meanwhile 0, failed 1" in out
    [failure] = [line for line in out.splitlines() if line.startswith("  failed: ")]
    name = taken.rsplit("/", 1)[1]
    assert failure.startswith(f"  failed: “{name}” (")
    assert f"HashiCorp Vault `{taken}`: `{taken}` holds a secret the bot did not write" in failure
    assert_no_secret(seeded, out)


def test_the_dry_run_says_what_would_move_and_changes_nothing(
    seeded: list[Seed], aws: MemoryStore, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("--to", "aws", "--dry-run") == 0
    assert capsys.readouterr().out.splitlines() == [
        "Dry run, nothing was changed: would move 3 to AWS Secrets Manager (from local 3), already in aws 0."
    ]
    assert aws.calls == []


@pytest.mark.parametrize(("route", "step"), [(("aws", "vault"), "committed"), (("local", "aws"), "written")])
def test_a_run_stopped_at_a_failpoint_finishes_when_run_again(
    seeded: list[Seed],
    aws: MemoryStore,
    vault: MemoryStore,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    route: tuple[str, str],
    step: str,
) -> None:
    source, target = route
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    if source != "local":
        assert run("--to", source) == 0

    def exit_now(status: int) -> None:
        raise Exited(status)

    monkeypatch.setattr(os, "_exit", exit_now)
    monkeypatch.setenv("CONNECTIONS_FAILPOINT", f"{step}:2")
    with pytest.raises(Exited):
        run("--to", target)
    monkeypatch.delenv("CONNECTIONS_FAILPOINT")
    stopped = capsys.readouterr()

    assert run("--to", target) == 0

    again = capsys.readouterr()
    assert "DEBUG" in stopped.err + again.err
    assert_no_secret(seeded, stopped.out, stopped.err, again.out, again.err)
    out = again.out.splitlines()
    stores = {"aws": aws, "vault": vault}
    if step == "committed":
        assert out == [
            "Deleted 1 copy an earlier run left in their old store.",
            f"moved 1, already in {target} 2, changed meanwhile 0, failed 0",
        ]
        assert stores[source].paths() == []
    else:
        assert out == [f"moved 2, already in {target} 1, changed meanwhile 0, failed 0"]
    assert len(stores[target].paths()) == 3
    assert all(len(stores[target].versions(path)) == 1 for path in stores[target].paths())


def test_a_malformed_failpoint_is_refused_before_anything_moves(
    seeded: list[Seed], aws: MemoryStore, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CONNECTIONS_FAILPOINT", "staged")
    assert run("--to", "aws") == 2
    assert "CONNECTIONS_FAILPOINT must be one of written, committed" in capsys.readouterr().err
    assert aws.calls == []


def test_a_store_missing_from_the_build_or_its_settings_is_one_line_and_exit_2(
    seeded: list[Seed], aws: MemoryStore, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("--to", "aws") == 0
    capsys.readouterr()

    def unset(env: object) -> SecretStore:
        raise ConfigError("VAULT_ADDR is required for CONNECTIONS_SECRET_STORE=vault")

    monkeypatch.setitem(STORES, "vault", unset)
    assert run("--to", "vault") == 2
    assert capsys.readouterr().err.splitlines() == [
        "connections-bot: VAULT_ADDR is required for CONNECTIONS_SECRET_STORE=vault"
    ]

    # The credentials are in aws: moving them anywhere needs it, even back to the database.
    monkeypatch.delitem(STORES, "aws")
    assert run("--to", "local") == 2
    assert capsys.readouterr().err.splitlines() == [
        "connections-bot: the aws secret store holds credentials of active connections but is not "
        "available in this build"
    ]
    assert run("--to", "aws") == 2
    assert "the aws secret store is the target but is not available" in capsys.readouterr().err
    assert len(aws.paths()) == 3


def test_moving_back_to_the_database_opens_with_the_key_from_the_environment(
    seeded: list[Seed],
    aws: MemoryStore,
    migrated_database_url: str,
    key: MasterKey,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run("--to", "aws") == 0
    assert run("--to", "local") == 0
    assert "moved 3, already in local 0" in capsys.readouterr().out
    assert aws.paths() == []

    async def opened() -> set[str]:
        db = Database.from_url(migrated_database_url)
        cipher, bound_to = Cipher(key), config_digest("confluent_cloud", {})
        try:
            async with db.read() as tx:
                rows = await tx.credentials.lock_all()
        finally:
            await db.dispose()
        return {
            cipher.open(
                Sealed(row.key_id, row.nonce, row.ciphertext),
                associated_data(row.connection_id, row.field, row.version, bound_to),
            ).reveal()
            for row in rows
        }

    assert asyncio.run(opened()) == {value for seed in seeded for value in (seed.key, seed.secret)}


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_at_a_terminal_a_progress_bar_counts_the_credentials_on_stderr(
    seeded: list[Seed], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)

    assert run("--to", "aws") == 0

    assert "3/3" in terminal.getvalue() and "credential" in terminal.getvalue()
    assert "moved 3" in capsys.readouterr().out
    assert_no_secret(seeded, terminal.getvalue())
