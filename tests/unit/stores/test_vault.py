"""The Vault store (KV version 2 through hvac) against the fake Vault over real HTTP.

No Vault or OpenBao server can be installed from this project's package registries, so the server
is ``tests/fakes/vault_api.py``, which follows Vault's documented HTTP API and is itself tested
against those documents (``tests/unit/test_fakes_vault_api.py``). One server serves the module.
"""

from __future__ import annotations

import io
import json
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bot.logs import configure_logging
from bot.redaction import Secret
from bot.settings import ConfigError, Settings
from bot.stores.base import SecretStore, StoreError, StoreFailure
from bot.stores.registry import build_store
from bot.stores.vault import READ_TIMEOUT, AppRoleAuth, TokenAuth, VaultKV2
from tests.fakes.vault_api import FakeVault, parse_policy, tls_files
from tests.support.servers import serve_asgi
from tests.unit.stores.contract import METADATA, StoreContract, fields, plain, token

ROOT = Path(__file__).resolve().parents[3]
BOT_POLICY = (ROOT / "docs" / "vault-policy.hcl").read_text()
ADMIN = 'path "secret/*" { capabilities = ["create", "read", "update", "delete", "list"] }'


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


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    fake = FakeVault()
    with serve_asgi(fake.app) as url:
        yield Served(fake, url)


@pytest.fixture(scope="module")
def served_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, Path]]:
    tls = tls_files(tmp_path_factory.mktemp("vault-tls"))
    fake = FakeVault()
    with serve_asgi(fake.app, ssl_certfile=tls.cert_file, ssl_keyfile=tls.key_file) as url:
        yield Served(fake, url), tls.ca_file


@asynccontextmanager
async def opened(store: VaultKV2) -> AsyncIterator[VaultKV2]:
    try:
        yield store
    finally:
        await store.close()


def bot_store(served: Served, *, read_timeout: float = READ_TIMEOUT) -> VaultKV2:
    """A store with a token that holds exactly the documented policy (not even `default`)."""
    bot_token = served.fake.add_token(BOT_POLICY, default_policy=False)
    return VaultKV2(served.url, TokenAuth(Secret(bot_token)), read_timeout=read_timeout)


def new_path() -> str:
    return StoreContract.path()


def new_secret() -> str:
    return StoreContract.secret()


async def admin_write(served: Served, path: str, data: dict[str, str], cas: int | None = None) -> int:
    """A change someone makes outside the bot, with their own token."""
    admin = served.fake.add_token(ADMIN)
    body: dict[str, object] = {"data": data} | ({"options": {"cas": cas}} if cas is not None else {})
    async with httpx.AsyncClient(base_url=served.url, timeout=5) as http:
        answer = await http.post(f"/v1/secret/data/{path}", json=body, headers={"X-Vault-Token": admin})
    answer.raise_for_status()
    return int(answer.json()["data"]["version"])


# --- the shared contract ---------------------------------------------------------------------------------


class TestVaultKV2(StoreContract):
    @pytest.fixture(autouse=True)
    def _serve(self, served: Served) -> None:
        self.served = served

    @asynccontextmanager
    async def working(self) -> AsyncIterator[SecretStore]:
        async with opened(bot_store(self.served)) as store:
            yield store

    @asynccontextmanager
    async def denied(self) -> AsyncIterator[SecretStore]:
        nobody = self.served.fake.add_token(None, default_policy=False)
        async with opened(VaultKV2(self.served.url, TokenAuth(Secret(nobody)))) as store:
            yield store

    @asynccontextmanager
    async def unreachable(self) -> AsyncIterator[SecretStore]:
        address = f"http://127.0.0.1:{closed_port()}"
        async with opened(VaultKV2(address, TokenAuth(Secret("hvs.unused-token")))) as store:
            yield store


# --- writes: check-and-set ---------------------------------------------------------------------------


async def test_a_first_write_is_version_one_with_the_fields_as_one_json_object_and_custom_metadata(
    served: Served,
) -> None:
    path, values = new_path(), fields(new_secret())
    values["rest_endpoint"] = ""  # an empty optional field is left out
    async with opened(bot_store(served)) as store:
        written = await store.write(path, values, token=token(), replaces=None, metadata=METADATA)
    assert written.version == "1"
    assert served.fake.stored(path) == {k: v for k, v in plain(values).items() if v}
    writes = [r for r in served.fake.requests_to(f"/v1/secret/metadata/{path}", "POST")]
    assert [r.status for r in writes] == [204]
    async with httpx.AsyncClient(base_url=served.url, timeout=5) as http:
        admin = served.fake.add_token(ADMIN)
        answer = await http.get(f"/v1/secret/metadata/{path}", headers={"X-Vault-Token": admin})
    assert answer.json()["data"]["custom_metadata"] == METADATA


async def test_a_change_made_meanwhile_by_someone_else_is_reported_not_overwritten(served: Served) -> None:
    path = new_path()
    async with opened(bot_store(served)) as store:
        first = await store.write(path, fields(new_secret()), token=token(), replaces=None, metadata=METADATA)
        theirs = {"api_key": "THEIRS", "api_secret": "their-own-secret"}
        assert await admin_write(served, path, theirs) == 2
        with pytest.raises(StoreError) as raised:
            await store.write(
                path, fields(new_secret()), token=token(), replaces=first.version, metadata=METADATA
            )
    assert raised.value.failure is StoreFailure.CONFLICT
    assert "changed outside the bot" in str(raised.value) and path in str(raised.value)
    assert served.fake.stored(path) == theirs


async def test_someone_elses_identical_change_after_ours_is_still_a_conflict(served: Served) -> None:
    # The retry rule accepts only the version right after the one the bot replaced.
    path, values = new_path(), fields(new_secret())
    async with opened(bot_store(served)) as store:
        first = await store.write(path, fields(new_secret()), token=token(), replaces=None, metadata=METADATA)
        await admin_write(served, path, {"other": "value"})
        await admin_write(served, path, plain(values))
        with pytest.raises(StoreError) as raised:
            await store.write(path, values, token=token(), replaces=first.version, metadata=METADATA)
    assert raised.value.failure is StoreFailure.CONFLICT


async def test_a_soft_deleted_path_is_free_to_use_again(served: Served) -> None:
    path, values = new_path(), fields(new_secret())
    await admin_write(served, path, {"old": "value"})
    async with httpx.AsyncClient(base_url=served.url, timeout=5) as http:
        admin = served.fake.add_token(ADMIN)
        await http.delete(f"/v1/secret/data/{path}", headers={"X-Vault-Token": admin})
    async with opened(bot_store(served)) as store:
        written = await store.write(path, values, token=token(), replaces=None, metadata=METADATA)
        again = await store.write(path, values, token=token(), replaces=None, metadata=METADATA)
        stored = await store.read(path)
    assert written.version == again.version == stored.version == "2"
    assert {k: v.reveal() for k, v in stored.fields.items()} == plain(values)


async def test_a_live_secret_before_ours_means_the_path_was_not_free(served: Served) -> None:
    # Someone else's secret at v1 and our exact fields at v2: not a version this bot's first write made.
    path, values = new_path(), fields(new_secret())
    await admin_write(served, path, {"someone": "else"})
    await admin_write(served, path, plain(values))
    async with opened(bot_store(served)) as store:
        with pytest.raises(StoreError) as raised:
            await store.write(path, values, token=token(), replaces=None, metadata=METADATA)
    assert raised.value.failure is StoreFailure.CONFLICT
    assert "did not write for this connection" in str(raised.value)


async def test_a_write_whose_metadata_step_failed_is_finished_by_the_retry_without_a_second_version(
    served: Served,
) -> None:
    path, values = new_path(), fields(new_secret())
    served.fake.fail_next(503, path=f"/v1/secret/metadata/{path}", method="POST")
    async with opened(bot_store(served)) as store:
        with pytest.raises(StoreError) as raised:
            await store.write(path, values, token=token(), replaces=None, metadata=METADATA)
        assert raised.value.failure is StoreFailure.UNREACHABLE
        again = await store.write(path, values, token=token(), replaces=None, metadata=METADATA)
    assert again.version == "1"
    assert [r.status for r in served.fake.requests_to(f"/v1/secret/metadata/{path}", "POST")] == [503, 204]


async def test_a_rotation_with_a_version_that_is_not_a_number_writes_nothing(served: Served) -> None:
    path = new_path()
    async with opened(bot_store(served)) as store:
        await store.write(path, fields(new_secret()), token=token(), replaces=None, metadata=METADATA)
        with pytest.raises(StoreError) as raised:
            await store.write(path, fields(new_secret()), token=token(), replaces="0", metadata=METADATA)
    assert raised.value.failure is StoreFailure.CONFLICT
    assert len(served.fake.requests_to(f"/v1/secret/data/{path}", "POST")) == 1


async def test_values_that_are_not_strings_read_as_json_text(served: Served) -> None:
    path = new_path()
    admin = served.fake.add_token(ADMIN)
    async with httpx.AsyncClient(base_url=served.url, timeout=5) as http:
        body = {"data": {"port": 5439, "ssl": True, "user": "etl"}}
        await http.post(f"/v1/secret/data/{path}", json=body, headers={"X-Vault-Token": admin})
    async with opened(bot_store(served)) as store:
        stored = await store.read(path)
    assert {k: v.reveal() for k, v in stored.fields.items()} == {"port": "5439", "ssl": "true", "user": "etl"}


# --- the documented policy ---------------------------------------------------------------------------


async def journey(store: VaultKV2, served: Served) -> None:
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
    await admin_write(served, path, {"changed": "outside"})
    with pytest.raises(StoreError) as raised:
        await store.write(
            path, fields(new_secret()), token=token(), replaces=second.version, metadata=METADATA
        )
    assert raised.value.failure is StoreFailure.CONFLICT
    await store.delete(path)
    await store.delete(path)
    await store.write(path, fields(new_secret()), token=token(), replaces=None, metadata=METADATA)


async def test_the_documented_policy_is_enough_for_every_call(served: Served) -> None:
    bot_token = served.fake.add_token(BOT_POLICY, default_policy=False)
    async with opened(VaultKV2(served.url, TokenAuth(Secret(bot_token)))) as store:
        await journey(store, served)
    sent = [r for r in served.fake.requests if r.accessor == served.fake.accessor_of(bot_token)]
    assert [r for r in sent if r.status == 403] == []
    calls = {(r.method, r.path.split("/")[3] if r.path.startswith("/v1/secret/") else r.path) for r in sent}
    assert calls == {
        ("GET", "/v1/auth/token/lookup-self"),
        ("POST", "data"),
        ("GET", "data"),
        ("GET", "metadata"),
        ("POST", "metadata"),
        ("DELETE", "metadata"),
    }


@pytest.mark.parametrize(
    ("pattern", "capability"),
    [
        (rule.pattern, capability)
        for rule in parse_policy(BOT_POLICY)
        for capability in sorted(rule.capabilities)
        if capability != "list"  # for people holding the bot's identity: the bot never lists
    ],
)
async def test_every_capability_of_the_documented_policy_is_needed(
    served: Served, pattern: str, capability: str
) -> None:
    rules = []
    for rule in parse_policy(BOT_POLICY):
        kept = rule.capabilities - {capability} if rule.pattern == pattern else rule.capabilities
        rules.append(f'path "{rule.pattern}" {{ capabilities = {json.dumps(sorted(kept))} }}')
    short = served.fake.add_token("\n".join(rules), default_policy=False)
    async with opened(VaultKV2(served.url, TokenAuth(Secret(short)))) as store:
        with pytest.raises(StoreError) as raised:
            await journey(store, served)
    assert raised.value.failure is StoreFailure.DENIED


# --- AppRole -------------------------------------------------------------------------------------------


@contextmanager
def approle_vault(clock: Clock, *, ttl: int = 60, policy: str = BOT_POLICY) -> Iterator[Served]:
    fake = FakeVault(clock=clock)
    fake.add_approle("role-bot", "secret-id-bot-0123", policy, token_ttl=ttl)
    with serve_asgi(fake.app) as url:
        yield Served(fake, url)


def logins(served: Served) -> list[int | None]:
    return [r.status for r in served.fake.requests_to("/v1/auth/approle/login")]


def approle_store(served: Served, clock: Clock, secret_id: str = "secret-id-bot-0123") -> VaultKV2:
    return VaultKV2(served.url, AppRoleAuth("role-bot", Secret(secret_id)), clock=clock)


async def test_approle_logs_in_at_first_use_and_again_before_the_lease_ends() -> None:
    clock = Clock()
    with approle_vault(clock, ttl=60) as served:
        async with opened(approle_store(served, clock)) as store:
            assert served.fake.requests == []
            path = new_path()
            await store.write(path, fields(new_secret()), token=token(), replaces=None, metadata=METADATA)
            assert logins(served) == [200]
            clock.now += 30
            await store.read(path)
            assert logins(served) == [200]
            clock.now += 20  # 50 s into a 60 s lease: within the margin of a quarter of it
            await store.read(path)
            assert logins(served) == [200, 200]
            assert (await store.check()).ok
    assert all(r.status != 403 for r in served.fake.requests)
    assert len({r.accessor for r in served.fake.requests if r.accessor}) == 2


async def test_a_token_that_stopped_working_early_is_replaced_once() -> None:
    vault_clock, bot_clock = Clock(), Clock()
    with approle_vault(vault_clock, ttl=60) as served:
        async with opened(approle_store(served, bot_clock)) as store:
            path = new_path()
            await store.write(path, fields(new_secret()), token=token(), replaces=None, metadata=METADATA)
            vault_clock.now += 61  # Vault's clock runs ahead: to Vault the token has expired
            stored = await store.read(path)
            assert stored.version == "1"
            assert logins(served) == [200, 200]
            served.fake.revoke_all()  # revoked by an operator
            assert (await store.check()).ok
            assert logins(served) == [200, 200, 200]
    reads = [r.status for r in served.fake.requests_to(f"/v1/secret/data/{path}", "GET")]
    assert reads == [403, 200]


async def test_a_refusal_by_the_policy_does_not_log_in_again() -> None:
    clock = Clock()
    elsewhere = 'path "secret/data/elsewhere/*" { capabilities = ["read"] }'
    with approle_vault(clock, policy=elsewhere) as served:
        async with opened(approle_store(served, clock)) as store:
            with pytest.raises(StoreError) as raised:
                await store.read(new_path())
    assert raised.value.failure is StoreFailure.DENIED
    assert "403" in str(raised.value)
    assert logins(served) == [200]


async def test_a_refused_approle_login_is_denied_and_says_which_settings() -> None:
    clock = Clock()
    with approle_vault(clock) as served:
        async with opened(approle_store(served, clock, secret_id="wrong-secret-id")) as store:
            with pytest.raises(StoreError) as raised:
                await store.read(new_path())
            check = await store.check()
    assert raised.value.failure is StoreFailure.DENIED
    assert "VAULT_ROLE_ID" in str(raised.value) and "wrong-secret-id" not in str(raised.value)
    assert check.reachable and not check.authenticated and "AppRole" in check.detail


# --- namespaces and TLS --------------------------------------------------------------------------------


async def test_the_namespace_header_is_sent_and_the_secret_lands_in_that_namespace(served: Served) -> None:
    served.fake.add_namespace("team-a")
    member = served.fake.add_token(BOT_POLICY, namespace="team-a")
    path, values = new_path(), fields(new_secret())
    async with opened(VaultKV2(served.url, TokenAuth(Secret(member)), namespace="/team-a/")) as store:
        await store.write(path, values, token=token(), replaces=None, metadata=METADATA)
        assert (await store.read(path)).version == "1"
        assert (await store.check()).ok
        assert "namespace `team-a`" in store.where(path)
    sent = [r for r in served.fake.requests if r.accessor == served.fake.accessor_of(member)]
    assert sent and {r.headers.get("x-vault-namespace") for r in sent} == {"team-a"}
    assert served.fake.stored(path, namespace="team-a") == plain(values)
    assert served.fake.stored(path) is None


async def test_with_vault_cacert_the_store_verifies_the_server_against_that_ca(
    served_tls: tuple[Served, Path],
) -> None:
    served, ca_file = served_tls
    bot_token = served.fake.add_token(BOT_POLICY)
    env = {"VAULT_ADDR": served.url, "VAULT_TOKEN": bot_token, "VAULT_CACERT": str(ca_file)}
    async with opened(VaultKV2.from_environment(env)) as store:
        path = new_path()
        await store.write(path, fields(new_secret()), token=token(), replaces=None, metadata=METADATA)
        assert (await store.read(path)).version == "1"
        assert (await store.check()).ok


async def test_without_vault_cacert_a_private_ca_is_not_trusted(served_tls: tuple[Served, Path]) -> None:
    served, _ = served_tls
    env = {"VAULT_ADDR": served.url, "VAULT_TOKEN": served.fake.add_token(BOT_POLICY)}
    async with opened(VaultKV2.from_environment(env)) as store:
        path = new_path()
        with pytest.raises(StoreError) as raised:
            await store.write(path, fields(new_secret()), token=token(), replaces=None, metadata=METADATA)
        check = await store.check()
    assert raised.value.failure is StoreFailure.UNREACHABLE
    assert "certificate is not trusted" in str(raised.value) and "VAULT_CACERT" in str(raised.value)
    assert path in str(raised.value)
    assert not check.reachable and "not trusted" in check.detail
    assert served.fake.stored(path) is None


# --- settings ------------------------------------------------------------------------------------------


def test_the_environment_builds_the_store(served: Served) -> None:
    env = {
        "SLACK_BOT_TOKEN": "xoxb-1",
        "SLACK_SIGNING_SECRET": "signing",
        "CONNECTIONS_SECRET_STORE": "vault",
        "VAULT_ADDR": served.url + "/",
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


async def test_a_sealed_vault_is_unreachable(served: Served) -> None:
    async with opened(bot_store(served)) as store:
        served.fake.sealed = True
        try:
            check = await store.check()
            with pytest.raises(StoreError) as raised:
                await store.read(new_path())
        finally:
            served.fake.sealed = False
    assert not check.reachable and "sealed" in check.detail
    assert raised.value.failure is StoreFailure.UNREACHABLE and "503" in str(raised.value)


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
    async with opened(bot_store(served)) as store:
        with pytest.raises(StoreError) as raised:
            await store.write(path, fields(secret), token=token(), replaces=None, metadata=METADATA)
    assert raised.value.failure is failure
    assert says in str(raised.value) and path in str(raised.value)
    assert secret not in str(raised.value) and "echo" not in str(raised.value)
    assert raised.value.__context__ is None and raised.value.__cause__ is None


async def test_a_dropped_connection_is_unreachable(served: Served) -> None:
    path = new_path()
    served.fake.drop_next(path=f"/v1/secret/data/{path}")
    async with opened(bot_store(served)) as store:
        with pytest.raises(StoreError) as raised:
            await store.read(path)
    assert raised.value.failure is StoreFailure.UNREACHABLE and path in str(raised.value)


async def test_a_slow_vault_is_unreachable_after_the_read_timeout(served: Served) -> None:
    path = new_path()
    served.fake.delay_next(0.6, path=f"/v1/secret/data/{path}")
    async with opened(bot_store(served, read_timeout=0.1)) as store:
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


async def test_no_secret_reaches_a_log_line_at_debug() -> None:
    clock = Clock()
    with approle_vault(clock, ttl=60) as served, bot_logs() as stream:
        async with opened(approle_store(served, clock)) as store:
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
        issued = served.fake.issued_by_login()
    output = stream.getvalue()
    assert "logged in to Vault with AppRole" in output  # the handler saw the store's lines
    assert len(issued) == 2
    for value in (secret, plain(values)["api_key"], "secret-id-bot-0123", *issued):
        assert value not in output
