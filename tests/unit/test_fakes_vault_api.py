"""The fake Vault follows Vault's published HTTP API, held to it here with plain httpx.

(And to OpenBao's own server, request for request, in ``test_fake_vault_matches_openbao.py``.)

The documents (hashicorp/vault; the same files exist in openbao/openbao):

* ``website/content/api-docs/secret/kv/kv-v2.mdx`` — KV version 2: data, metadata, destroy, cas;
* ``website/content/api-docs/auth/token.mdx`` — lookup-self;
* ``website/content/api-docs/auth/approle.mdx`` — AppRole login;
* ``website/content/docs/concepts/policies.mdx`` — path rules, capabilities, priority.

Where the documents give no error text, the KV engine's own code is the reference
(hashicorp/vault-plugin-secrets-kv ``path_data.go``, ``path_metadata.go``).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.vault_api import (
    CAS_MISMATCH,
    CAS_REQUIRED,
    FakeVault,
    parse_policy,
    tls_files,
)
from tests.support.servers import serve_asgi

EVERYTHING = 'path "secret/*" { capabilities = ["create", "read", "update", "delete", "list"] }'
DENIED = {"errors": ["permission denied"]}
"""A token Vault does not know (none, unknown, expired, revoked)."""
NOT_ALLOWED = {"errors": ["1 error occurred:\n\t* permission denied\n\n"]}
"""A live token whose policies do not allow the call."""
NOTHING = {"errors": []}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fake(clock: Clock) -> FakeVault:
    return FakeVault(clock=clock)


@pytest.fixture
async def http(fake: FakeVault) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=fake.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://vault.test") as client:
        yield client


@pytest.fixture
def token(fake: FakeVault) -> str:
    return fake.add_token(EVERYTHING)


def auth(token: str, namespace: str | None = None) -> dict[str, str]:
    headers = {"X-Vault-Token": token}
    if namespace is not None:
        headers["X-Vault-Namespace"] = namespace
    return headers


async def write(
    http: httpx.AsyncClient, token: str, path: str, data: dict[str, Any], cas: int | None = None
) -> httpx.Response:
    body: dict[str, Any] = {"data": data}
    if cas is not None:
        body["options"] = {"cas": cas}
    return await http.post(f"/v1/secret/data/{path}", json=body, headers=auth(token))


# --- write and read a version --------------------------------------------------------------------------


async def test_a_write_answers_the_new_versions_metadata_and_reads_back(
    http: httpx.AsyncClient, token: str
) -> None:
    written = await write(http, token, "app/db", {"foo": "bar", "zip": "zap"}, cas=0)
    assert written.status_code == 200
    assert written.json()["data"] == {
        "created_time": written.json()["data"]["created_time"],
        "custom_metadata": None,
        "deletion_time": "",
        "destroyed": False,
        "version": 1,
    }
    read = await http.get("/v1/secret/data/app/db", headers=auth(token))
    assert read.status_code == 200
    assert read.json()["data"]["data"] == {"foo": "bar", "zip": "zap"}
    assert read.json()["data"]["metadata"]["version"] == 1
    assert read.json()["data"]["metadata"]["deletion_time"] == ""


async def test_versions_increase_and_an_older_one_reads_with_the_version_parameter(
    http: httpx.AsyncClient, token: str
) -> None:
    versions = [(await write(http, token, "k", {"n": str(n)})).json()["data"]["version"] for n in range(3)]
    assert versions == [1, 2, 3]
    older = await http.get("/v1/secret/data/k", params={"version": 2}, headers=auth(token))
    assert older.json()["data"]["data"] == {"n": "1"}
    assert older.json()["data"]["metadata"]["version"] == 2
    metadata = (await http.get("/v1/secret/metadata/k", headers=auth(token))).json()["data"]
    assert metadata["current_version"] == 3
    assert sorted(metadata["versions"]) == ["1", "2", "3"]


async def test_a_write_without_data_is_refused(http: httpx.AsyncClient, token: str) -> None:
    answer = await http.post("/v1/secret/data/k", json={"options": {}}, headers=auth(token))
    assert (answer.status_code, answer.json()) == (400, {"errors": ["no data provided"]})
    broken = await http.post("/v1/secret/data/k", content=b"{not json", headers=auth(token))
    assert broken.status_code == 400
    assert broken.json()["errors"][0].startswith("failed to decode JSON input: ")


# --- check-and-set -----------------------------------------------------------------------------------


async def test_cas_zero_writes_only_a_key_that_does_not_exist(http: httpx.AsyncClient, token: str) -> None:
    assert (await write(http, token, "k", {"a": "1"}, cas=0)).status_code == 200
    again = await write(http, token, "k", {"a": "2"}, cas=0)
    assert (again.status_code, again.json()) == (400, {"errors": [CAS_MISMATCH]})
    assert (await http.get("/v1/secret/data/k", headers=auth(token))).json()["data"]["data"] == {"a": "1"}


async def test_cas_must_name_the_current_version(http: httpx.AsyncClient, token: str) -> None:
    await write(http, token, "k", {"a": "1"})
    await write(http, token, "k", {"a": "2"})
    stale = await write(http, token, "k", {"a": "3"}, cas=1)
    assert (stale.status_code, stale.json()) == (400, {"errors": [CAS_MISMATCH]})
    current = await write(http, token, "k", {"a": "3"}, cas=2)
    assert current.json()["data"]["version"] == 3


async def test_cas_required_refuses_a_write_without_cas(http: httpx.AsyncClient, token: str) -> None:
    await write(http, token, "k", {"a": "1"})
    set_required = await http.post("/v1/secret/metadata/k", json={"cas_required": True}, headers=auth(token))
    assert set_required.status_code == 204
    without = await write(http, token, "k", {"a": "2"})
    assert (without.status_code, without.json()) == (400, {"errors": [CAS_REQUIRED]})
    assert (await write(http, token, "k", {"a": "2"}, cas=1)).json()["data"]["version"] == 2


# --- not found, soft delete, destroy, delete all ---------------------------------------------------------


async def test_a_path_with_nothing_is_404_with_an_empty_error_list(
    http: httpx.AsyncClient, token: str
) -> None:
    for url in ("/v1/secret/data/nothing/here", "/v1/secret/metadata/nothing/here"):
        answer = await http.get(url, headers=auth(token))
        assert (answer.status_code, answer.json()) == (404, NOTHING)
    await write(http, token, "k", {"a": "1"})
    missing_version = await http.get("/v1/secret/data/k", params={"version": 9}, headers=auth(token))
    assert (missing_version.status_code, missing_version.json()) == (404, NOTHING)


async def test_a_soft_deleted_latest_version_is_404_with_its_metadata(
    http: httpx.AsyncClient, token: str
) -> None:
    await write(http, token, "k", {"a": "1"})
    deleted = await http.delete("/v1/secret/data/k", headers=auth(token))
    assert deleted.status_code == 204
    read = await http.get("/v1/secret/data/k", headers=auth(token))
    assert read.status_code == 404
    assert read.json()["data"]["data"] is None
    assert read.json()["data"]["metadata"]["version"] == 1
    assert read.json()["data"]["metadata"]["deletion_time"] != ""
    # Soft deletes keep the version: a cas write must still name it (kv-v2.mdx, openbao).
    refused = await write(http, token, "k", {"a": "2"}, cas=0)
    assert (refused.status_code, refused.json()) == (400, {"errors": [CAS_MISMATCH]})
    assert (await write(http, token, "k", {"a": "2"}, cas=1)).json()["data"]["version"] == 2


async def test_a_destroyed_version_is_404_and_says_destroyed(http: httpx.AsyncClient, token: str) -> None:
    await write(http, token, "k", {"a": "1"})
    await write(http, token, "k", {"a": "2"})
    destroyed = await http.post("/v1/secret/destroy/k", json={"versions": [1]}, headers=auth(token))
    assert destroyed.status_code == 204
    read = await http.get("/v1/secret/data/k", params={"version": 1}, headers=auth(token))
    assert read.status_code == 404 and read.json()["data"]["metadata"]["destroyed"] is True
    assert (await http.get("/v1/secret/data/k", headers=auth(token))).json()["data"]["data"] == {"a": "2"}
    no_versions = await http.post("/v1/secret/destroy/k", json={}, headers=auth(token))
    assert no_versions.status_code == 400


async def test_deleting_the_metadata_removes_every_version(http: httpx.AsyncClient, token: str) -> None:
    await write(http, token, "k", {"a": "1"})
    await write(http, token, "k", {"a": "2"})
    assert (await http.delete("/v1/secret/metadata/k", headers=auth(token))).status_code == 204
    for version in (1, 2):
        answer = await http.get("/v1/secret/data/k", params={"version": version}, headers=auth(token))
        assert (answer.status_code, answer.json()) == (404, NOTHING)
    assert (await http.get("/v1/secret/metadata/k", headers=auth(token))).status_code == 404
    assert (await write(http, token, "k", {"a": "3"}, cas=0)).json()["data"]["version"] == 1
    # Deleting what is not there is not an error.
    assert (await http.delete("/v1/secret/metadata/never", headers=auth(token))).status_code == 204


async def test_max_versions_keeps_only_the_newest(http: httpx.AsyncClient, token: str) -> None:
    await http.post("/v1/secret/metadata/k", json={"max_versions": 2}, headers=auth(token))
    for n in range(3):
        await write(http, token, "k", {"n": str(n)})
    metadata = (await http.get("/v1/secret/metadata/k", headers=auth(token))).json()["data"]
    assert sorted(metadata["versions"]) == ["2", "3"] and metadata["oldest_version"] == 2
    gone = await http.get("/v1/secret/data/k", params={"version": 1}, headers=auth(token))
    assert gone.status_code == 404


# --- custom metadata --------------------------------------------------------------------------------


async def test_custom_metadata_round_trips_and_shows_on_reads_and_writes(
    http: httpx.AsyncClient, token: str
) -> None:
    await write(http, token, "k", {"a": "1"})
    custom = {"owner": "jdoe", "mission_critical": "false"}
    answer = await http.post("/v1/secret/metadata/k", json={"custom_metadata": custom}, headers=auth(token))
    assert answer.status_code == 204
    assert (await http.get("/v1/secret/metadata/k", headers=auth(token))).json()["data"][
        "custom_metadata"
    ] == custom
    assert (await http.get("/v1/secret/data/k", headers=auth(token))).json()["data"]["metadata"][
        "custom_metadata"
    ] == custom
    assert (await write(http, token, "k", {"a": "2"})).json()["data"]["custom_metadata"] == custom
    # Setting another field keeps the custom metadata; setting it replaces it whole.
    await http.post("/v1/secret/metadata/k", json={"max_versions": 5}, headers=auth(token))
    metadata = (await http.get("/v1/secret/metadata/k", headers=auth(token))).json()["data"]
    assert metadata["custom_metadata"] == custom and metadata["current_version"] == 2
    await http.post("/v1/secret/metadata/k", json={"custom_metadata": {"x": "y"}}, headers=auth(token))
    assert (await http.get("/v1/secret/metadata/k", headers=auth(token))).json()["data"][
        "custom_metadata"
    ] == {"x": "y"}


@pytest.mark.parametrize(
    ("custom", "fragment"),
    [
        ({str(i): "v" for i in range(65)}, "payload must contain at most 64 keys, provided 65"),
        ({"k" * 129: "v"}, "is 129 but must be 0 < len(key) <= 128"),
        ({"k": "v" * 513}, "is 513 but must be 0 < len(value) <= 512"),
        ({"k": ""}, "is 0 but must be 0 < len(value) <= 512"),
        ({"k": "a\x00b"}, "contains unprintable characters"),
    ],
)
async def test_custom_metadata_beyond_the_limits_is_refused(
    http: httpx.AsyncClient, token: str, custom: dict[str, str], fragment: str
) -> None:
    answer = await http.post("/v1/secret/metadata/k", json={"custom_metadata": custom}, headers=auth(token))
    assert answer.status_code == 400
    assert "custom_metadata validation failed" in answer.json()["errors"][0]
    assert fragment in answer.json()["errors"][0]
    assert (await http.get("/v1/secret/metadata/k", headers=auth(token))).status_code == 404


async def test_custom_metadata_at_the_limits_is_accepted(http: httpx.AsyncClient, token: str) -> None:
    custom = {f"{i:03d}": "v" for i in range(63)} | {"k" * 128: "v" * 512}
    answer = await http.post("/v1/secret/metadata/k", json={"custom_metadata": custom}, headers=auth(token))
    assert answer.status_code == 204
    metadata = (await http.get("/v1/secret/metadata/k", headers=auth(token))).json()["data"]
    assert metadata["custom_metadata"] == custom and metadata["current_version"] == 0


# --- listing --------------------------------------------------------------------------------------


async def test_list_names_keys_and_folders(http: httpx.AsyncClient, token: str) -> None:
    for path in ("team/a", "team/b/c", "other"):
        await write(http, token, path, {"x": "1"})
    listed = await http.request("LIST", "/v1/secret/metadata/team", headers=auth(token))
    assert listed.json()["data"] == {"keys": ["a", "b/"]}
    by_query = await http.get("/v1/secret/metadata/", params={"list": "true"}, headers=auth(token))
    assert by_query.json()["data"] == {"keys": ["other", "team/"]}
    empty = await http.request("LIST", "/v1/secret/metadata/none", headers=auth(token))
    assert (empty.status_code, empty.json()) == (404, NOTHING)


# --- tokens and policies --------------------------------------------------------------------------


async def test_an_unknown_missing_or_revoked_token_is_permission_denied(
    http: httpx.AsyncClient, fake: FakeVault, token: str
) -> None:
    for headers in (auth("hvs.unknown"), {}):
        answer = await http.get("/v1/secret/data/k", headers=headers)
        assert (answer.status_code, answer.json()) == (403, DENIED)
    fake.revoke(token)
    answer = await http.get("/v1/auth/token/lookup-self", headers=auth(token))
    assert (answer.status_code, answer.json()) == (403, DENIED)


async def test_a_missing_capability_is_permission_denied(http: httpx.AsyncClient, fake: FakeVault) -> None:
    reader = fake.add_token('path "secret/data/*" { capabilities = ["read"] }')
    answer = await write(http, reader, "k", {"a": "1"})
    assert (answer.status_code, answer.json()) == (403, NOT_ALLOWED)
    assert (await http.delete("/v1/secret/metadata/k", headers=auth(reader))).status_code == 403
    assert (await http.get("/v1/secret/metadata/k", headers=auth(reader))).status_code == 403


async def test_create_writes_a_new_key_and_update_an_existing_one(
    http: httpx.AsyncClient, fake: FakeVault
) -> None:
    creator = fake.add_token('path "secret/data/*" { capabilities = ["create"] }')
    updater = fake.add_token('path "secret/data/*" { capabilities = ["update"] }')
    assert (await write(http, updater, "k", {"a": "1"})).status_code == 403
    assert (await write(http, creator, "k", {"a": "1"})).status_code == 200
    assert (await write(http, creator, "k", {"a": "2"})).status_code == 403
    assert (await write(http, updater, "k", {"a": "2"})).json()["data"]["version"] == 2


async def test_a_glob_matches_a_prefix_only_at_the_end(http: httpx.AsyncClient, fake: FakeVault) -> None:
    policy = 'path "secret/data/team/*" { capabilities = ["create", "update", "read"] }'
    member = fake.add_token(policy)
    assert (await write(http, member, "team/a/b", {"x": "1"})).status_code == 200
    assert (await write(http, member, "teams/a", {"x": "1"})).status_code == 403
    assert (await write(http, member, "team", {"x": "1"})).status_code == 403
    with pytest.raises(ValueError, match="glob"):
        parse_policy('path "secret/*/x" { capabilities = ["read"] }')


async def test_the_most_specific_rule_wins_and_deny_takes_everything(
    http: httpx.AsyncClient, fake: FakeVault
) -> None:
    policy = """
    path "secret/data/*" { capabilities = ["create", "update", "read"] }
    path "secret/data/team/locked" { capabilities = ["deny"] }
    path "secret/data/+/open" { capabilities = ["read"] }
    """
    member = fake.add_token(policy)
    assert (await write(http, member, "team/locked", {"x": "1"})).status_code == 403
    assert (await write(http, member, "team/free", {"x": "1"})).status_code == 200
    # "secret/data/+/open" wins over "secret/data/*" (its first wildcard comes later): read only.
    assert (await write(http, member, "team/open", {"x": "1"})).status_code == 403


async def test_list_is_checked_on_the_folder_as_a_prefix(http: httpx.AsyncClient, fake: FakeVault) -> None:
    lister = fake.add_token('path "secret/metadata/team/*" { capabilities = ["list"] }')
    writer = fake.add_token(EVERYTHING)
    await write(http, writer, "team/a", {"x": "1"})
    assert (await http.request("LIST", "/v1/secret/metadata/team", headers=auth(lister))).status_code == 200
    assert (await http.get("/v1/secret/metadata/team/a", headers=auth(lister))).status_code == 403


def test_a_policy_with_anything_but_capabilities_is_refused() -> None:
    with pytest.raises(ValueError, match="capability"):
        parse_policy('path "secret/*" { capabilities = ["write"] }')
    with pytest.raises(ValueError, match="unsupported"):
        parse_policy('path "secret/*" { capabilities = ["read"] allowed_parameters = {} }')
    rules = parse_policy('# a comment\npath "a/*" {\n  capabilities = ["read", "list"]\n}\n')
    assert [(r.pattern, sorted(r.capabilities)) for r in rules] == [("a/*", ["list", "read"])]


# --- methods -------------------------------------------------------------------------------------


async def test_a_wrong_method_is_405(http: httpx.AsyncClient, token: str) -> None:
    unknown = await http.request("PROPFIND", "/v1/secret/data/k", headers=auth(token))
    assert (unknown.status_code, unknown.json()) == (405, NOTHING)
    unsupported = {"errors": ["1 error occurred:\n\t* unsupported operation\n\n"]}
    destroy = await http.delete("/v1/secret/destroy/k", headers=auth(token))
    assert (destroy.status_code, destroy.json()) == (405, unsupported)
    # The data path serves no listing.
    lister = await http.request("LIST", "/v1/secret/data/k", headers=auth(token))
    assert (lister.status_code, lister.json()) == (405, unsupported)


# --- token lookup and AppRole ----------------------------------------------------------------------


async def test_lookup_self_describes_the_token(
    http: httpx.AsyncClient, fake: FakeVault, clock: Clock
) -> None:
    token = fake.add_token(EVERYTHING, ttl=600)
    clock.now += 100
    answer = await http.get("/v1/auth/token/lookup-self", headers=auth(token))
    assert answer.status_code == 200
    data = answer.json()["data"]
    assert data["id"] == token and data["accessor"] == fake.accessor_of(token)
    assert data["ttl"] == 500 and data["creation_ttl"] == 600 and "default" in data["policies"]


async def test_a_token_without_the_default_policy_cannot_look_itself_up(
    http: httpx.AsyncClient, fake: FakeVault
) -> None:
    bare = fake.add_token(EVERYTHING, default_policy=False)
    answer = await http.get("/v1/auth/token/lookup-self", headers=auth(bare))
    assert (answer.status_code, answer.json()) == (403, NOT_ALLOWED)
    assert (await write(http, bare, "k", {"a": "1"})).status_code == 200


async def test_approle_login_issues_a_token_for_its_lease(
    http: httpx.AsyncClient, fake: FakeVault, clock: Clock
) -> None:
    fake.add_approle("role-1", "secret-1", EVERYTHING, token_ttl=60)
    login = await http.post("/v1/auth/approle/login", json={"role_id": "role-1", "secret_id": "secret-1"})
    assert login.status_code == 200
    issued = login.json()["auth"]
    assert issued["lease_duration"] == 60 and issued["renewable"] is True
    assert (await write(http, issued["client_token"], "k", {"a": "1"})).status_code == 200
    clock.now += 60
    expired = await http.get("/v1/secret/data/k", headers=auth(issued["client_token"]))
    assert (expired.status_code, expired.json()) == (403, DENIED)
    again = await http.post("/v1/auth/approle/login", json={"role_id": "role-1", "secret_id": "secret-1"})
    fresh = again.json()["auth"]["client_token"]
    assert fresh != issued["client_token"]
    assert (await http.get("/v1/secret/data/k", headers=auth(fresh))).status_code == 200


async def test_a_policy_written_anew_applies_to_its_token_from_the_next_request(
    http: httpx.AsyncClient, fake: FakeVault
) -> None:
    # api-docs/system/policy.mdx: "Once a policy is updated, it takes effect immediately to all
    # associated users."
    reader = 'path "secret/data/*" { capabilities = ["read"] }'
    bot = fake.add_token(reader)
    assert (await write(http, bot, "k", {"a": "1"})).status_code == 403
    fake.write_policy(bot, EVERYTHING)
    assert (await write(http, bot, "k", {"a": "1"})).status_code == 200
    looked_up = await http.get("/v1/auth/token/lookup-self", headers=auth(bot))
    assert looked_up.json()["data"]["policies"] == ["bot", "default"]  # sorted, as OpenBao lists them
    fake.write_policy(bot, reader)
    assert (await write(http, bot, "k", {"a": "2"})).status_code == 403


async def test_a_token_given_no_policy_gets_the_one_written_for_it_later(
    http: httpx.AsyncClient, fake: FakeVault
) -> None:
    nothing = fake.add_token(None, default_policy=False)
    assert (await write(http, nothing, "k", {"a": "1"})).status_code == 403
    assert (await http.get("/v1/auth/token/lookup-self", headers=auth(nothing))).status_code == 403
    fake.write_policy(nothing, EVERYTHING)
    assert (await write(http, nothing, "k", {"a": "1"})).status_code == 200
    # Still without the default policy: looking itself up is not in what was written.
    assert (await http.get("/v1/auth/token/lookup-self", headers=auth(nothing))).status_code == 403


async def test_approle_login_with_a_wrong_secret_id_is_refused(
    http: httpx.AsyncClient, fake: FakeVault
) -> None:
    fake.add_approle("role-1", "secret-1", EVERYTHING)
    for body in ({"role_id": "role-1", "secret_id": "wrong"}, {"role_id": "role-2", "secret_id": "secret-1"}):
        answer = await http.post("/v1/auth/approle/login", json=body)
        assert (answer.status_code, answer.json()) == (400, {"errors": ["invalid role or secret ID"]})
    missing = await http.post("/v1/auth/approle/login", json={})
    assert (missing.status_code, missing.json()) == (500, {"errors": ["missing role_id"]})


# --- namespaces, sealing, faults ---------------------------------------------------------------------


async def test_namespaces_keep_secrets_and_tokens_apart(http: httpx.AsyncClient, fake: FakeVault) -> None:
    fake.add_namespace("team-a")
    fake.add_namespace("team-b")
    in_a = fake.add_token(EVERYTHING, namespace="team-a")
    in_root = fake.add_token(EVERYTHING)
    body = {"data": {"a": "1"}}
    written = await http.post("/v1/secret/data/k", json=body, headers=auth(in_a, "team-a"))
    assert written.status_code == 200
    assert (await http.get("/v1/secret/data/k", headers=auth(in_a, "team-a"))).status_code == 200
    assert (await http.get("/v1/secret/data/k", headers=auth(in_root))).status_code == 404
    assert (await http.get("/v1/secret/data/k", headers=auth(in_a))).status_code == 403
    assert (await http.get("/v1/secret/data/k", headers=auth(in_a, "team-b"))).status_code == 403
    assert fake.stored("k", namespace="team-a") == {"a": "1"} and fake.stored("k") is None


async def test_a_sealed_vault_answers_503_everywhere(
    http: httpx.AsyncClient, fake: FakeVault, token: str
) -> None:
    fake.add_approle("role-1", "secret-1", EVERYTHING)
    fake.sealed = True
    for method, url in (
        ("GET", "/v1/secret/data/k"),
        ("POST", "/v1/secret/data/k"),
        ("GET", "/v1/auth/token/lookup-self"),
        ("POST", "/v1/auth/approle/login"),
    ):
        answer = await http.request(method, url, headers=auth(token), json={"data": {}})
        assert (answer.status_code, answer.json()) == (503, {"errors": ["Vault is sealed"]})


async def test_a_scripted_failure_answers_once(http: httpx.AsyncClient, fake: FakeVault, token: str) -> None:
    fake.fail_next(429, path="/v1/secret/data/")
    limited = await http.get("/v1/secret/data/k", headers=auth(token))
    assert limited.status_code == 429
    assert limited.json() == {"errors": ['request path "secret/data/k": rate limit quota exceeded']}
    assert (await http.get("/v1/secret/data/k", headers=auth(token))).status_code == 404
    fake.fail_next(500)
    assert (await http.get("/v1/auth/token/lookup-self", headers=auth(token))).status_code == 500


async def test_requests_are_recorded_without_tokens_or_bodies(
    http: httpx.AsyncClient, fake: FakeVault
) -> None:
    fake.add_namespace("team-a")
    token = fake.add_token(EVERYTHING, namespace="team-a")
    await http.post(
        "/v1/secret/data/k", json={"data": {"pw": "hunter2-secret"}}, headers=auth(token, "team-a")
    )
    [recorded] = fake.requests
    assert (recorded.method, recorded.path, recorded.status) == ("POST", "/v1/secret/data/k", 200)
    assert recorded.namespace == "team-a" and recorded.accessor == fake.accessor_of(token)
    assert "x-vault-token" not in recorded.headers
    assert token not in repr(recorded) and "hunter2-secret" not in repr(recorded)


# --- over real HTTP -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[FakeVault, str]]:
    fake = FakeVault()
    with serve_asgi(fake.app) as url:
        yield fake, url


async def test_a_dropped_connection_gets_no_answer(served: tuple[FakeVault, str]) -> None:
    fake, url = served
    token = fake.add_token(EVERYTHING)
    fake.drop_next(path="/v1/auth/token/lookup-self")
    async with httpx.AsyncClient(base_url=url, timeout=5) as http:
        with pytest.raises(httpx.TransportError):
            await http.get("/v1/auth/token/lookup-self", headers=auth(token))
        assert (await http.get("/v1/auth/token/lookup-self", headers=auth(token))).status_code == 200
    assert [r.status for r in fake.requests_to("/v1/auth/token/lookup-self")][-2:] == [None, 200]


async def test_a_delayed_answer_outlasts_a_short_timeout(served: tuple[FakeVault, str]) -> None:
    fake, url = served
    token = fake.add_token(EVERYTHING)
    fake.delay_next(1.0, path="/v1/auth/token/lookup-self")
    async with httpx.AsyncClient(base_url=url, timeout=0.1) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.get("/v1/auth/token/lookup-self", headers=auth(token))


async def test_over_tls_a_client_that_trusts_the_ca_gets_through(tmp_path: Path) -> None:
    fake = FakeVault()
    token = fake.add_token(EVERYTHING)
    tls = tls_files(tmp_path)
    with serve_asgi(fake.app, ssl_certfile=tls.cert_file, ssl_keyfile=tls.key_file) as url:
        assert url.startswith("https://127.0.0.1:")
        trusting = ssl.create_default_context(cafile=str(tls.ca_file))
        async with httpx.AsyncClient(base_url=url, verify=trusting, timeout=5) as http:
            assert (await http.get("/v1/auth/token/lookup-self", headers=auth(token))).status_code == 200
        async with httpx.AsyncClient(base_url=url, timeout=5) as http:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await http.get("/v1/auth/token/lookup-self", headers=auth(token))
