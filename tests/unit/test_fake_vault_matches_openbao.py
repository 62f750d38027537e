"""The fake Vault answers as OpenBao's own server does, request for request.

``tests/fakes/vault_api.py`` serves the store's fault tests (a 429 quota, a dropped connection, a
slow answer: what a real server cannot do on demand). Here every rule of Vault's KV version 2,
token and AppRole API that the fake implements is sent to both, the fake and ``bao server -dev``
(``tests/support/openbao_server.py``), with the same identities; each answer's status, error
messages and body must match, but for what differs by nature from one server to the next:
request ids, token ids and accessors, entity ids, times and the seconds a token has left.

OpenBao adds two fields to a key's metadata that Vault does not have (``current_metadata_version``,
``metadata_cas_required``: check-and-set on metadata); they are left out of the comparison, and the
fake, which follows Vault's documents, does not invent them.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.fakes.vault_api import FakeVault
from tests.support.openbao_server import AppRole, OpenBao, bot_policy, running_openbao

CREATE_ONLY = 'path "secret/data/*" { capabilities = ["create"] }'
TOKEN_TTL = 3600
APPROLE_TTL = 60
OPENBAO_ONLY = frozenset({"current_metadata_version", "metadata_cas_required"})
TIMES = frozenset(
    {"created_time", "updated_time", "deletion_time", "creation_time", "issue_time", "expire_time"}
)
IDS = frozenset({"request_id", "id", "accessor", "client_token", "entity_id"})
SECONDS_LEFT = frozenset({"ttl"})


# --- what is sent ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One request. ``{key}`` in the path (and ``{role_id}``, ``{secret_id}`` in the body) is
    filled in per side; ``who`` names the identity whose token is sent (None: no token)."""

    method: str
    path: str
    body: Any = None
    who: str | None = "admin"
    query: Mapping[str, str] = field(default_factory=dict)
    raw: bytes | None = None

    def __str__(self) -> str:
        return f"{self.method} /v1/{self.path} as {self.who}"


def write(data: Mapping[str, Any], *, cas: int | None = None, who: str = "admin", key: str = "{key}") -> Call:
    body: dict[str, Any] = {"data": dict(data)}
    if cas is not None:
        body["options"] = {"cas": cas}
    return Call("POST", f"secret/data/{key}", body, who)


def read(*, version: int | None = None, who: str = "admin") -> Call:
    query = {"version": str(version)} if version is not None else {}
    return Call("GET", "secret/data/{key}", who=who, query=query)


def metadata(body: Any = None, *, method: str = "", who: str = "admin") -> Call:
    return Call(method or ("POST" if body is not None else "GET"), "secret/metadata/{key}", body, who)


LOGIN = Call("POST", "auth/approle/login", {"role_id": "{role_id}", "secret_id": "{secret_id}"}, None)

ROWS: dict[str, tuple[Call, ...]] = {
    # Writes and reads of versions.
    "a write answers the version's metadata and reads back": (
        write({"foo": "bar", "zip": "zap"}, cas=0),
        read(),
        metadata(),
    ),
    "versions count up and an older one reads with ?version": (
        write({"n": "0"}),
        write({"n": "1"}),
        write({"n": "2"}),
        read(version=2),
        read(version=9),
        metadata(),
    ),
    "a write without data, or with data or options that are not objects, is refused": (
        Call("POST", "secret/data/{key}", {"options": {}}),
        Call("POST", "secret/data/{key}", {"data": None}),
        Call("POST", "secret/data/{key}", {"data": "text"}),
        Call("POST", "secret/data/{key}", {"data": 5}),
        Call("POST", "secret/data/{key}", {"data": True}),
        Call("POST", "secret/data/{key}", {"data": ["x", 1]}),
        Call("POST", "secret/data/{key}", {"data": {"a": "1"}, "options": "text"}),
        Call("POST", "secret/data/{key}", {"data": {"a": "1"}, "options": {"cas": "x"}}),
    ),
    "data as a list of objects is merged, an empty list is empty": (
        Call("POST", "secret/data/{key}", {"data": [{"a": "1"}, {"b": "2"}]}),
        read(),
        Call("POST", "secret/data/{key}", {"data": []}),
        read(),
    ),
    "a data path ending in a slash": (
        write({"a": "1"}),
        Call("POST", "secret/data/{key}/", {"data": {"a": "1"}}),
        Call("POST", "secret/data/", {"data": {"a": "1"}}),
        Call("GET", "secret/data/{key}/"),
        Call("GET", "secret/data/"),
        Call("DELETE", "secret/data/{key}/"),
        read(),
    ),
    "a path no mount serves is 404": (Call("GET", "no-such-mount/data/{key}"),),
    "a body that is not JSON is refused": (Call("POST", "secret/data/{key}", raw=b"{not json"),),
    "a version that is not a number is refused": (
        write({"a": "1"}),
        Call("GET", "secret/data/{key}", query={"version": "abc"}),
    ),
    # Check-and-set.
    "cas 0 writes only a key that does not exist": (
        write({"a": "1"}, cas=0),
        write({"a": "2"}, cas=0),
        read(),
    ),
    "cas must name the current version": (
        write({"a": "1"}),
        write({"a": "2"}),
        write({"a": "3"}, cas=1),
        write({"a": "3"}, cas=5),
        write({"a": "3"}, cas=2),
    ),
    "cas_required refuses a write without cas": (
        write({"a": "1"}),
        metadata({"cas_required": True}),
        write({"a": "2"}),
        write({"a": "2"}, cas=1),
        metadata(),
    ),
    # Not found, soft delete, destroy, delete everything.
    "nothing at a path is 404 with an empty error list": (
        read(),
        metadata(),
        Call("LIST", "secret/metadata/{key}"),
        Call("DELETE", "secret/metadata/{key}"),
    ),
    "a soft-deleted latest version is 404 with its metadata and keeps its number": (
        write({"a": "1"}),
        Call("DELETE", "secret/data/{key}"),
        read(),
        write({"a": "2"}, cas=0),
        write({"a": "2"}, cas=1),
        read(),
    ),
    "a destroyed version is 404 and says destroyed": (
        write({"a": "1"}),
        write({"a": "2"}),
        Call("POST", "secret/destroy/{key}", {"versions": [1]}),
        read(version=1),
        read(),
        Call("POST", "secret/destroy/{key}", {}),
    ),
    "an undeleted version reads again": (
        write({"a": "1"}),
        Call("DELETE", "secret/data/{key}"),
        Call("POST", "secret/undelete/{key}", {"versions": [1]}),
        read(),
    ),
    "deleting the metadata removes every version": (
        write({"a": "1"}),
        write({"a": "2"}),
        metadata(method="DELETE"),
        read(version=1),
        metadata(),
        metadata(method="DELETE"),
        write({"a": "3"}, cas=0),
    ),
    "max_versions keeps only the newest": (
        metadata({"max_versions": 2}),
        write({"n": "0"}),
        write({"n": "1"}),
        write({"n": "2"}),
        metadata(),
        read(version=1),
    ),
    # Custom metadata.
    "custom_metadata shows on metadata, reads and writes, and is replaced whole": (
        write({"a": "1"}),
        metadata({"custom_metadata": {"owner": "jdoe", "mission_critical": "false"}}),
        metadata(),
        read(),
        write({"a": "2"}),
        metadata({"max_versions": 5}),
        metadata(),
        metadata({"custom_metadata": {"x": "y"}}),
        metadata(),
    ),
    "custom_metadata on a key with no version yet": (
        metadata({"custom_metadata": {"a": "b"}}),
        metadata(),
        read(),
        write({"a": "1"}, cas=0),
    ),
    "custom_metadata beyond the limits is refused": (
        metadata({"custom_metadata": {str(i): "v" for i in range(65)}}),
        metadata({"custom_metadata": {"k" * 129: "v"}}),
        metadata({"custom_metadata": {"k": "v" * 513}}),
        metadata({"custom_metadata": {"k": ""}}),
        metadata({"custom_metadata": {"k": "a\x00b"}}),
        # (Several problems at once come in the order of a Go map's iteration: at random.)
        metadata(),
    ),
    "custom_metadata at the limits is accepted": (
        metadata({"custom_metadata": {f"{i:03d}": "v" for i in range(63)} | {"k" * 128: "v" * 512}}),
        metadata(),
    ),
    # Listing.
    "a listing names keys and folders": (
        write({"x": "1"}, key="{key}/a"),
        write({"x": "1"}, key="{key}/b/c"),
        Call("LIST", "secret/metadata/{key}"),
        Call("GET", "secret/metadata/{key}/", query={"list": "true"}),
        Call("LIST", "secret/metadata/{key}/none"),
    ),
    # Methods.
    "a method a path does not serve is 405": (
        Call("PROPFIND", "secret/data/{key}"),
        Call("DELETE", "secret/destroy/{key}"),
        Call("GET", "secret/destroy/{key}"),
        Call("LIST", "secret/data/{key}"),
        Call("GET", "auth/approle/login", who=None),
    ),
    # Tokens and policies.
    "an unknown or missing token is permission denied": (
        read(who="unknown"),
        read(who=None),
        Call("GET", "auth/token/lookup-self", who="unknown"),
        write({"a": "1"}, who=None),
    ),
    "a capability the policy does not grant is permission denied": (
        write({"a": "1"}, key="elsewhere/{key}", who="bot"),
        write({"a": "1"}, who="bot"),
        Call("DELETE", "secret/data/{key}", who="bot"),
        Call("POST", "secret/destroy/{key}", {"versions": [1]}, who="bot"),
        read(who="nobody"),
        Call("GET", "auth/token/lookup-self", who="nobody"),
    ),
    "create writes a new key and update an existing one": (
        write({"a": "1"}, who="creator"),
        write({"a": "2"}, who="creator"),
        write({"a": "2"}, who="bot"),
        read(who="creator"),
    ),
    "the documented policy allows every call the bot makes": (
        Call("GET", "auth/token/lookup-self", who="bot"),
        write({"a": "1"}, cas=0, who="bot"),
        write({"a": "2"}, cas=0, who="bot"),
        metadata(who="bot"),
        Call("GET", "secret/data/{key}", who="bot", query={"version": "1"}),
        metadata({"custom_metadata": {"provider": "confluent_cloud"}}, who="bot"),
        write({"a": "2"}, cas=1, who="bot"),
        write({"a": "1"}, key="{key}/b", who="bot"),
        Call("LIST", "secret/metadata/{key}", who="bot"),
        metadata(method="DELETE", who="bot"),
    ),
    # Token lookup and AppRole.
    "lookup-self describes the token": (
        Call("GET", "auth/token/lookup-self", who="bot"),
        Call("GET", "auth/token/lookup-self", who="bot+default"),
    ),
    "an approle login issues a token for the role's lease": (
        LOGIN,
        Call("POST", "auth/approle/login", {"role_id": "{role_id}", "secret_id": "wrong"}, None),
        Call("POST", "auth/approle/login", {"role_id": "no-such-role", "secret_id": "{secret_id}"}, None),
        Call("POST", "auth/approle/login", {}, None),
    ),
}


# --- the two sides ----------------------------------------------------------------------------------------


@dataclass
class Side:
    http: httpx.AsyncClient
    tokens: dict[str, str]
    values: dict[str, str]
    """What ``{role_id}`` and ``{secret_id}`` stand for."""

    async def send(self, call: Call, key: str) -> tuple[int, Any]:
        headers = {"X-Vault-Token": self.tokens[call.who]} if call.who is not None else {}
        body = self._fill(call.body)
        content = call.raw if call.raw is not None else None if body is None else json.dumps(body).encode()
        answer = await self.http.request(
            call.method,
            "/v1/" + call.path.replace("{key}", key),
            params=dict(call.query),
            content=content,
            headers=headers,
        )
        return answer.status_code, answer.json() if answer.content else None

    def _fill(self, value: Any) -> Any:
        if isinstance(value, str) and value.startswith("{"):
            return self.values.get(value.strip("{}"), value)
        if isinstance(value, dict):
            return {k: self._fill(v) for k, v in value.items()}
        return value


@dataclass(frozen=True)
class Identities:
    """The real server's identities, made once per module."""

    tokens: dict[str, str]
    role: AppRole


@pytest.fixture(scope="module")
def identities(openbao_server: OpenBao) -> Identities:
    bao = openbao_server
    # The fake names a token's policy "bot": so does this module's copy of the documented policy.
    bao.write_policy("bot", bot_policy())
    bao.write_policy("create-only", CREATE_ONLY)
    ttl = f"{TOKEN_TTL}s"
    with_default = bao.ok("POST", "auth/token/create", {"policies": ["bot"], "ttl": ttl})["auth"][
        "client_token"
    ]
    tokens = {
        "admin": "root",
        "bot": bao.create_token("bot", ttl=ttl),
        "bot+default": str(with_default),
        "creator": bao.create_token("create-only", ttl=ttl),
        "nobody": bao.nobody_token,
        "unknown": "s.NoSuchTokenAtAll0123456",
    }
    return Identities(tokens, bao.add_approle("bot", token_ttl=APPROLE_TTL))


@pytest.fixture
async def real(openbao_server: OpenBao, identities: Identities) -> AsyncIterator[Side]:
    role = identities.role
    async with httpx.AsyncClient(base_url=openbao_server.url, timeout=5) as http:
        yield Side(http, identities.tokens, {"role_id": role.role_id, "secret_id": role.secret_id})


def fake_side_of(fake: FakeVault, identities: Identities) -> dict[str, str]:
    """The same identities in ``fake``; its AppRole takes the real one's ids and name."""
    policy = bot_policy()
    role = identities.role
    fake.add_approle(
        role.role_id, role.secret_id, policy, name=role.name, token_ttl=APPROLE_TTL, default_policy=False
    )
    return {
        "admin": fake.add_token(root=True, default_policy=False),
        "bot": fake.add_token(policy, ttl=TOKEN_TTL, default_policy=False),
        "bot+default": fake.add_token(policy, ttl=TOKEN_TTL),
        "creator": fake.add_token(CREATE_ONLY, ttl=TOKEN_TTL, default_policy=False),
        "nobody": fake.add_token(None, default_policy=False),
        "unknown": identities.tokens["unknown"],
    }


@pytest.fixture
async def fake(identities: Identities) -> AsyncIterator[Side]:
    vault = FakeVault()
    tokens = fake_side_of(vault, identities)
    transport = httpx.ASGITransport(app=vault.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://vault.test", timeout=5) as http:
        role = identities.role
        yield Side(http, tokens, {"role_id": role.role_id, "secret_id": role.secret_id})


# --- comparing -------------------------------------------------------------------------------------------

_JSON_SYNTAX = re.compile(r"^(failed to decode JSON input): .*", re.DOTALL)


def comparable(value: Any, name: str = "") -> Any:
    """``value`` with what differs by nature between two servers replaced by what kind it is."""
    if isinstance(value, dict):
        return {k: comparable(v, k) for k, v in value.items() if k not in OPENBAO_ONLY}
    if isinstance(value, list):
        return [comparable(v, name) for v in value]
    if name in TIMES and value not in ("", None):
        return "<time>"
    if (name in IDS and value not in ("", None)) or name == "entity_id":
        return "<id>"
    if name in SECONDS_LEFT and isinstance(value, int) and value > 0:
        return "<seconds>"
    if name == "errors" and isinstance(value, str):
        # Go's JSON decoder and Python's describe a syntax error each in their own words.
        return _JSON_SYNTAX.sub(r"\1: …", value)
    return value


def new_key() -> str:
    return f"connections/diff-{uuid.uuid4().hex[:12]}"


@pytest.mark.parametrize("row", list(ROWS))
async def test_the_fake_answers_as_openbao_does(row: str, real: Side, fake: Side) -> None:
    path = new_key()
    for call in ROWS[row]:
        (status, body), (fake_status, fake_body) = await real.send(call, path), await fake.send(call, path)
        assert (fake_status, comparable(fake_body)) == (status, comparable(body)), f"{row}: {call}"


# --- what needs a server of its own, or a namespace ------------------------------------------------------


SEALED_CALLS = (
    read(),
    write({"a": "1"}),
    metadata(),
    Call("GET", "auth/token/lookup-self"),
    LOGIN,
)


async def test_sealed_both_answer_503_everywhere(identities: Identities) -> None:
    vault = FakeVault()
    tokens = fake_side_of(vault, identities)
    vault.sealed = True
    values = {"role_id": "r", "secret_id": "s"}
    transport = httpx.ASGITransport(app=vault.app)
    # Sealing the worker's shared server would disturb other tests: this one has a server of its own.
    with running_openbao() as private:
        private.seal()
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://vault.test") as fake_http,
            httpx.AsyncClient(base_url=private.url, timeout=5) as real_http,
        ):
            real, fake = Side(real_http, {"admin": "root"}, values), Side(fake_http, tokens, values)
            for call in SEALED_CALLS:
                from_openbao, from_fake = await real.send(call, new_key()), await fake.send(call, new_key())
                assert from_openbao == (503, {"errors": ["Vault is sealed"]}), call
                assert from_fake == from_openbao, call


async def test_a_namespace_keeps_its_secrets_and_tokens_to_itself(openbao_server: OpenBao) -> None:
    bao, policy, ttl = openbao_server, bot_policy(), f"{TOKEN_TTL}s"
    namespace = bao.add_namespace()
    bao.write_policy("bot", policy, namespace=namespace)
    vault = FakeVault()
    vault.add_namespace(namespace)
    real = {
        "member": bao.create_token("bot", ttl=ttl, namespace=namespace),
        "outsider": bao.create_token("bot", ttl=ttl),
        "admin": "root",
    }
    fake = {
        "member": vault.add_token(policy, namespace=namespace, ttl=TOKEN_TTL, default_policy=False),
        "outsider": vault.add_token(policy, ttl=TOKEN_TTL, default_policy=False),
        "admin": vault.add_token(root=True, default_policy=False),
    }
    path = new_key()
    calls = [
        ("POST", namespace, "member"),  # written in the namespace
        ("GET", namespace, "member"),
        ("GET", "", "admin"),  # the root namespace holds nothing at that path
        ("GET", "", "member"),  # a namespace's token has no rights outside it
        ("GET", namespace, "outsider"),  # nor has a token of the root namespace inside it
        ("POST", namespace, "outsider"),
    ]
    transport = httpx.ASGITransport(app=vault.app)
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://vault.test") as fake_http,
        httpx.AsyncClient(base_url=bao.url, timeout=5) as real_http,
    ):
        for method, in_namespace, who in calls:
            answers = []
            for http, tokens in ((real_http, real), (fake_http, fake)):
                headers = {"X-Vault-Token": tokens[who]} | (
                    {"X-Vault-Namespace": in_namespace} if in_namespace else {}
                )
                body = {"data": {"a": "1"}} if method == "POST" else None
                answer = await http.request(method, f"/v1/secret/data/{path}", json=body, headers=headers)
                answers.append((answer.status_code, comparable(answer.json()) if answer.content else None))
            assert answers[1] == answers[0], (method, in_namespace, who)
