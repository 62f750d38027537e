"""``connections-bot migrate-secrets`` as an operator runs it, against the real parts: a process of
its own, moto's server as AWS Secrets Manager (the bot signing in as the IAM identity that holds
exactly ``docs/aws-iam-policy.json``) and the fake Vault on loopback (a token holding exactly
``docs/vault-policy.hcl``), both configured in the command's environment at once, on a SQLite
database seeded with active connections sealed as the bot seals them.

After every run that ends, each credential is looked for everywhere: where its connection points it
must open (read back with the bot's own store modules, or opened from its sealed rows), and nowhere
else may it be live (a store copy it left is deleted: scheduled for deletion in AWS, every version
and the metadata gone in Vault). After a run stopped by ``CONNECTIONS_FAILPOINT``, each still opens
where its connection points, and the next run ends as above. Every run's output (at DEBUG) is
searched for every key and secret, the stores' credentials and the master key.

The moves' rules in every corner, on both databases, are the unit tests'
(``tests/unit/services/test_secret_moves.py``); this file proves the command does them with the
real clients, signatures and policies. Each run is a process start (a second or two), so the file
keeps to a few runs per test.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError
from sqlalchemy import select

from bot.crypto import Cipher, MasterKey, Sealed, associated_data, config_digest
from bot.logs import WIRE_LOGGERS
from bot.store import Connection, Credential, Database
from bot.stores.aws import AwsSecretsManager
from bot.stores.base import SecretStore
from bot.stores.paths import PathTemplate
from bot.stores.tokens import write_token
from bot.stores.vault import VaultKV2
from tests.e2e.test_security import find_leaks
from tests.fakes.vault_api import FakeVault
from tests.support.moto_server import Identity, MotoServer, bot_policy
from tests.support.processes import EXE, clean_env
from tests.support.seeding import Seed, seed_connections
from tests.support.servers import serve_asgi
from tests.support.slack_requests import TEAM_ID

PROVIDER = "confluent_cloud"
OTHER_TEAM = "T0OTHERTEAM"
VAULT_POLICY = Path(__file__).resolve().parents[2] / "docs" / "vault-policy.hcl"
CREATED = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
KILLED = 137  # the status ``CONNECTIONS_FAILPOINT`` ends the process with, as a SIGKILL would
WIRE_DEBUG_LINE = re.compile(rf" DEBUG (?:{'|'.join(map(re.escape, WIRE_LOGGERS))})[.:]")

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@dataclass(frozen=True)
class Held:
    """A seeded connection, where its secret goes in a store, and the fields it must open to."""

    id: str
    team_id: str
    name: str
    path: str
    fields: dict[str, str]


@dataclass
class World:
    """The database, the key, both stores and what was seeded; runs the command against them."""

    tmp_path: Path
    database_url: str
    key: MasterKey
    aws: MotoServer
    identity: Identity
    vault: FakeVault
    vault_url: str
    vault_token: str
    root_token: str
    template: str
    held: list[Held]
    outputs: list[str]

    def env(self, **extra: str) -> dict[str, str]:
        """What the operator sets: the database, the key and both stores; no Slack token."""
        return clean_env(
            self.tmp_path,
            DATABASE_URL=self.database_url,
            CONNECTIONS_MASTER_KEY=self.key.to_base64().reveal(),
            CONNECTIONS_SECRET_PATH=self.template,
            LOG_LEVEL="DEBUG",
            **self.aws.environment(self.identity),
            VAULT_ADDR=self.vault_url,
            VAULT_TOKEN=self.vault_token,
            **extra,
        )

    def run(self, target: str, **extra: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [EXE, "migrate-secrets", "--to", target],
            env=self.env(**extra),
            cwd=self.tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        self.outputs += [result.stdout, result.stderr]
        return result

    def move(self, target: str, moved: int, already: int = 0) -> list[str]:
        """A run that must move ``moved`` and find ``already`` in place; its stdout lines."""
        result = self.run(target)
        assert result.returncode == 0, result.stdout + result.stderr
        lines = result.stdout.splitlines()
        assert lines[-1] == f"moved {moved}, already in {target} {already}, changed meanwhile 0, failed 0"
        return lines

    def secrets(self) -> dict[str, str]:
        """Every key and secret that must not be printed, by label."""
        found = {"the master key": self.key.to_base64().reveal()}
        for one in self.held:
            found[f"API key of {one.name}"] = one.fields["api_key"]
            found[f"API secret of {one.name}"] = one.fields["api_secret"]
        found["the bot's AWS secret access key"] = self.identity.secret_access_key
        found["the bot's Vault token"] = self.vault_token
        return found

    # --- where each credential is ------------------------------------------------------------

    def rows(self) -> dict[str, Connection]:
        async def read() -> dict[str, Connection]:
            db = Database.from_url(self.database_url)
            try:
                async with db.read() as tx:
                    found = list(await tx.session.scalars(select(Connection)))
            finally:
                await db.dispose()
            return {row.id: row for row in found}

        return asyncio.run(read())

    def opened_locally(self, one: Held) -> dict[str, str]:
        """The credential's sealed rows of its version in use, opened bound to its settings as a
        re-test opens them, and its settings; {} when there is no such row."""

        async def read() -> tuple[Connection, list[Credential]]:
            db = Database.from_url(self.database_url)
            try:
                async with db.read() as tx:
                    row = await tx.connections.get(one.team_id, one.id)
                    assert row is not None
                    sealed = await tx.session.scalars(
                        select(Credential).where(
                            Credential.connection_id == one.id, Credential.version == row.credential_version
                        )
                    )
                    return row, list(sealed)
            finally:
                await db.dispose()

        row, sealed = asyncio.run(read())
        if not sealed:
            return {}
        cipher, bound_to = Cipher(self.key), config_digest(row.provider, row.config)
        opened = {str(k): str(v) for k, v in row.config.items()}
        for credential in sealed:
            aad = associated_data(one.id, credential.field, credential.version, bound_to)
            box = Sealed(credential.key_id, credential.nonce, credential.ciphertext)
            opened[credential.field] = cipher.open(box, aad).reveal()
        return opened

    def read_with_the_bot(self, store: str, path: str) -> tuple[str, dict[str, str]]:
        """The current version at ``path`` and its fields, read as the bot reads them."""
        env = {**self.env(), "CONNECTIONS_SECRET_PATH": self.template}
        built: SecretStore = (
            AwsSecretsManager.from_environment(env) if store == "aws" else VaultKV2.from_environment(env)
        )

        async def read() -> tuple[str, dict[str, str]]:
            try:
                current = await built.read(path)
                return current.version, {name: value.reveal() for name, value in current.fields.items()}
            finally:
                await built.close()

        return asyncio.run(read())

    def live_in_aws(self, path: str) -> bool:
        try:
            described = self.aws.secrets().describe_secret(SecretId=path)
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "ResourceNotFoundException"
            return False
        return "DeletedDate" not in described

    def aws_versions(self, path: str) -> list[str]:
        listed = self.aws.secrets().list_secret_version_ids(SecretId=path, IncludeDeprecated=True)
        return [v["VersionId"] for v in listed["Versions"]]

    def vault_metadata(self, path: str) -> dict[str, Any] | None:
        """The KV metadata at ``path`` (versions, custom metadata), or None when there is none."""
        answer = httpx.get(
            f"{self.vault_url}/v1/secret/metadata/{path}", headers={"X-Vault-Token": self.root_token}
        )
        if answer.status_code == 404:
            return None
        assert answer.status_code == 200, answer.text
        data: dict[str, Any] = answer.json()["data"]
        return data

    def places(self, one: Held) -> set[str]:
        """Every place the credential is live: sealed rows in use, a current AWS or Vault secret."""
        found = set()
        if self.opened_locally(one):
            found.add("local")
        if self.live_in_aws(one.path):
            found.add("aws")
        if self.vault.stored(one.path) is not None:
            found.add("vault")
        return found

    def assert_opens_where_it_points(self) -> dict[str, str]:
        """Each connection's credential opens, to its fields, where its row points; id -> place."""
        rows = self.rows()
        where = {}
        for one in self.held:
            row = rows[one.id]
            store = row.secret_store or "local"
            if store == "local":
                assert (row.secret_path, row.secret_version) == (None, None)
                assert self.opened_locally(one) == one.fields, f"{one.name} does not open locally"
            else:
                assert row.secret_path == one.path
                version, fields = self.read_with_the_bot(store, one.path)
                assert (version, fields) == (row.secret_version, one.fields), f"{one.name} in {store}"
            where[one.id] = store
        return where

    def assert_each_in_exactly_one_place(self) -> dict[str, str]:
        where = self.assert_opens_where_it_points()
        for one in self.held:
            assert self.places(one) == {where[one.id]}, f"{one.name} is live in {self.places(one)}"
        return where

    def assert_nothing_secret_was_printed(self) -> None:
        leaks = find_leaks({f"output #{n + 1}": text for n, text in enumerate(self.outputs)}, self.secrets())
        assert not leaks, "secrets showed:\n" + "\n".join(leaks)
        for text in self.outputs:
            assert not WIRE_DEBUG_LINE.search(text), "a store client's DEBUG line was printed"


def new_seed(name: str, minute: int, team_id: str = TEAM_ID, **config: str) -> Seed:
    return Seed(
        name=name,
        key=f"KEY{secrets.token_hex(6).upper()}",
        secret=f"sec-{secrets.token_hex(20)}",
        team_id=team_id,
        config=dict(config),
        created_at=CREATED.replace(minute=minute),  # a run takes the oldest first: the kills count on it
    )


@pytest.fixture
def vault_server() -> Iterator[tuple[FakeVault, str]]:
    fake = FakeVault()
    with serve_asgi(fake.app) as url:
        yield fake, url


@pytest.fixture
def world(
    tmp_path: Path,
    migrated_database_url: str,
    aws_server: MotoServer,
    vault_server: tuple[FakeVault, str],
) -> World:
    """Four active connections in two workspaces, sealed locally, one with its optional settings."""
    key = MasterKey.generate()
    seeds = [
        new_seed(
            "Prod Cluster", 1, rest_endpoint="https://pkc-1.eu-west-1.aws.confluent.cloud", cluster_id="lkc-1"
        ),
        new_seed("staging", 2),
        new_seed("analytics", 3),
        new_seed("prod", 4, team_id=OTHER_TEAM),
    ]
    ids = asyncio.run(seed_connections(migrated_database_url, Cipher(key), seeds))
    # Paths of their own: moto's server serves every test of this worker.
    template = f"connections/move-{secrets.token_hex(6)}/{{team}}/{{provider}}/{{name}}"
    paths = PathTemplate(template)
    held = [
        Held(
            connection_id,
            seed.team_id,
            seed.name,
            paths.render(team=seed.team_id, provider=PROVIDER, name=seed.name, connection_id=connection_id),
            {"api_key": seed.key, "api_secret": seed.secret, **seed.config},
        )
        for connection_id, seed in zip(ids, seeds, strict=True)
    ]
    vault, vault_url = vault_server
    return World(
        tmp_path=tmp_path,
        database_url=migrated_database_url,
        key=key,
        aws=aws_server,
        identity=aws_server.bot,
        vault=vault,
        vault_url=vault_url,
        vault_token=vault.add_token(VAULT_POLICY.read_text(), default_policy=False),
        root_token=vault.add_token(root=True),
        template=template,
        held=held,
        outputs=[],
    )


# --- the three moves ---------------------------------------------------------------------------------


def test_every_credential_moves_to_aws_then_to_vault_then_back_to_the_database(world: World) -> None:
    lines = world.move("aws", moved=4)
    assert lines == ["moved 4, already in aws 0, changed meanwhile 0, failed 0"]
    assert set(world.assert_each_in_exactly_one_place().values()) == {"aws"}
    for one in world.held:
        # Written once, with the write token of (connection, credential version 1): its VersionId.
        assert world.aws_versions(one.path) == [write_token(one.id, 1)]
        tags = {t["Key"]: t["Value"] for t in world.aws.secrets().describe_secret(SecretId=one.path)["Tags"]}
        assert tags["connection-id"] == one.id and tags["provider"] == PROVIDER
    assert world.held[0].path.endswith(f"/{TEAM_ID}/{PROVIDER}/prod-cluster")
    assert world.held[3].path.endswith(f"/{OTHER_TEAM}/{PROVIDER}/prod")

    assert world.move("aws", moved=0, already=4) == [
        "Nothing to move: every active credential is already in AWS Secrets Manager.",
        "moved 0, already in aws 4, changed meanwhile 0, failed 0",
    ]
    assert all(world.aws_versions(one.path) == [write_token(one.id, 1)] for one in world.held)

    world.move("vault", moved=4)
    assert set(world.assert_each_in_exactly_one_place().values()) == {"vault"}
    for one in world.held:
        assert "DeletedDate" in world.aws.secrets().describe_secret(SecretId=one.path)  # scheduled
        metadata = world.vault_metadata(one.path)
        assert metadata is not None and list(metadata["versions"]) == ["1"]
        assert metadata["custom_metadata"]["connection-id"] == one.id

    world.move("local", moved=4)
    assert set(world.assert_each_in_exactly_one_place().values()) == {"local"}
    assert all(world.vault_metadata(one.path) is None for one in world.held)  # every version, and metadata

    world.assert_nothing_secret_was_printed()
    logged = "\n".join(world.outputs)
    assert all(f"moved the credential of {one.id} from aws to vault" in logged for one in world.held)


# --- stopped midway, then run again ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "target", "failpoint"),
    [
        # Each store as the target of a write the kill left uncommitted, and a store as the
        # source of a copy the kill left undeleted (AWS deletes its copies as the first test shows).
        ("local", "aws", "written:2"),
        ("aws", "vault", "written:2"),
        ("vault", "local", "committed:2"),
    ],
    ids=lambda value: str(value).replace(":", "-"),
)
def test_a_run_killed_midway_and_run_again_leaves_every_credential_in_one_place(
    world: World, source: str, target: str, failpoint: str
) -> None:
    if source != "local":
        world.move(source, moved=4)

    killed = world.run(target, CONNECTIONS_FAILPOINT=failpoint)

    assert killed.returncode == KILLED, killed.stdout + killed.stderr
    # Stopped on the second connection: after writing it to the target (not committed), or after
    # committing its move (its source copy not deleted yet). Each opens where its row points.
    committed = 2 if failpoint.startswith("committed") else 1
    where = world.assert_opens_where_it_points()
    assert list(where.values()) == [target] * committed + [source] * (4 - committed)
    second = world.held[1]
    assert world.places(second) == {source, target}  # the copy the kill left behind

    lines = world.move(target, moved=4 - committed, already=committed)
    assert set(world.assert_each_in_exactly_one_place().values()) == {target}
    if committed == 2:
        assert lines[0] == "Deleted 1 copy an earlier run left in their old store."
    # One version of the second connection's secret in the target: a write repeated after the
    # kill returned the version the first one made.
    if target == "aws":
        assert world.aws_versions(second.path) == [write_token(second.id, 1)]
    elif target == "vault":
        metadata = world.vault_metadata(second.path)
        assert metadata is not None and list(metadata["versions"]) == ["1"]
    world.assert_nothing_secret_was_printed()


# --- a store that refuses one write ------------------------------------------------------------------


def refusing_one_path(world: World, store: str, path: str) -> None:
    """Give the bot credentials for ``store`` that hold the documented rights and one exception."""
    if store == "aws":
        policy = bot_policy()
        arn = f"arn:aws:secretsmanager:*:*:secret:{path}*"
        policy["Statement"] = [*policy["Statement"], {"Effect": "Deny", "Action": "*", "Resource": arn}]
        world.identity = world.aws.create_identity(policy)
    else:
        rule = f'path "secret/data/{path}" {{ capabilities = ["deny"] }}'
        world.vault_token = world.vault.add_token(
            f"{VAULT_POLICY.read_text()}\n{rule}\n", default_policy=False
        )


@pytest.mark.parametrize("store", ["aws", "vault"])
def test_a_store_refusing_one_write_names_it_and_moves_the_others(world: World, store: str) -> None:
    refused = world.held[1]
    refusing_one_path(world, store, refused.path)

    result = world.run(store)

    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert f"moved 3, already in {store} 0, changed meanwhile 0, failed 1" in lines
    [failure] = [line for line in lines if line.startswith("  failed: ")]
    assert f"“{refused.name}” ({refused.id}, workspace {refused.team_id})" in failure
    assert f"`{refused.path}`" in failure and "the bot may not write" in failure
    assert ("AccessDeniedException" if store == "aws" else "403") in failure
    where = world.assert_each_in_exactly_one_place()
    assert where == {one.id: "local" if one is refused else store for one in world.held}
    world.assert_nothing_secret_was_printed()
