"""The Confluent Cloud provider against the fake Confluent API (in-process, through ASGITransport)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from bot.outbound import HostPatterns, Policy
from bot.providers import _confluent_errors as errs
from bot.providers.base import Outcome, Verification
from bot.providers.confluent_cloud import DEFAULT_REST_HOSTS, ConfluentCloud, RetryPolicy, secret_checksum_ok
from bot.redaction import Secret
from bot.settings import ConfigError
from tests.fakes.confluent_api import (
    FakeConfluent,
    cloud_error,
    cloud_error_v2,
    kafka_error,
    new_api_key,
    new_api_secret,
)
from tests.fakes.dns import PUBLIC_IP, FakeResolver
from tests.support.block_text import hint_problems
from tests.support.servers import serve_asgi
from tests.unit.providers.contract import ProviderContract, Scenario

API = "https://api.confluent.test"
REST = "https://pkc-abcde.us-west4.gcp.confluent.cloud:443"
CLUSTER = "lkc-abc123"
DOCS_SECRET = "cfltT8d8RzkNseTMEDKcjNM1BZTFPHqRn/dQm9q7w6SjzZ12wZfwjaJdipHZtDjw"
LEGACY_SECRET = "R15hoiDIq8Nxu/lY4mPO3DwAVIfU5W7OI+efsB607mLgHTnVW5XJGVqX2ysDx987"
DOCS_KEY = "ABCD1234567890AB"


class Sleeps(list[float]):
    """An injected ``sleep`` that records the delays asked for and returns at once."""

    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


def confluent(*args: Any, **kwargs: Any) -> ConfluentCloud:
    """The provider, its REST endpoints resolving to a public address: tests never ask DNS."""
    kwargs.setdefault("policy", Policy(DEFAULT_REST_HOSTS, resolve=FakeResolver()))
    return ConfluentCloud(*args, **kwargs)


def form(key: str, secret: str, endpoint: str = "", cluster: str = "") -> dict[str, str | Secret]:
    return {
        "api_key": Secret(key),
        "api_secret": Secret(secret),
        "rest_endpoint": endpoint,
        "cluster_id": cluster,
    }


def closed_port() -> int:
    """A loopback port that was just bound and closed, so connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def fake() -> FakeConfluent:
    return FakeConfluent()


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def provider(sleeps: Sleeps) -> ConfluentCloud:
    # rng fixed at 0.5, so with jitter 0.25 each backoff step is asked for as step * 1.125.
    return confluent(API, retry=RetryPolicy(rng=lambda: 0.5), sleep=sleeps)


@pytest.fixture
async def http(fake: FakeConfluent) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=fake.app), timeout=5) as client:
        yield client


@pytest.fixture
def cloud_key(fake: FakeConfluent) -> tuple[str, str]:
    key, secret = new_api_key(), new_api_secret()
    fake.add_cloud_key(key, secret, environments=3)
    return key, secret


@pytest.fixture
def cluster_key(fake: FakeConfluent) -> tuple[str, str]:
    key, secret = new_api_key(), new_api_secret(legacy=True)
    fake.add_cluster_key(key, secret, cluster_id=CLUSTER, topics=["orders", "payments"])
    return key, secret


async def verify(
    provider: ConfluentCloud,
    http: httpx.AsyncClient,
    key: str,
    secret: str,
    endpoint: str = "",
    cluster: str = "",
) -> Verification:
    values = provider.clean(form(key, secret, endpoint, cluster))
    assert provider.validate(values) == {}
    return await provider.verify(values, http)


def hints_text(verification: Verification) -> str:
    return "\n".join(verification.hints)


def check(verification: Verification, name_part: str) -> Any:
    found = [c for c in verification.checks if name_part in c.name]
    assert len(found) == 1, f"one check named like {name_part!r} in {verification.checks}"
    return found[0]


# --- the shared contract ---------------------------------------------------------------------------


class TestConfluentContract(ProviderContract):
    def provider(self) -> ConfluentCloud:
        return confluent(API, sleep=Sleeps())

    def valid_values(self) -> dict[str, str | Secret]:
        return form(f"  {DOCS_KEY}\n", f'"{DOCS_SECRET}"', f" {REST}/ ", f" {CLUSTER} ")

    @asynccontextmanager
    async def scenario(self, outcome: Outcome) -> AsyncIterator[Scenario]:
        fake = FakeConfluent()
        provider = confluent(API, sleep=Sleeps())
        key, secret = new_api_key(), new_api_secret()
        endpoint = cluster = ""
        if outcome is Outcome.OK:  # a cluster key: the longest path, Cloud 401 then the cluster
            fake.add_cluster_key(key, secret, cluster_id=CLUSTER, can_create_topics=False)
            endpoint, cluster = REST, CLUSTER
        elif outcome is Outcome.FORBIDDEN:
            fake.add_cloud_key(key, secret, role=False)
        elif outcome is Outcome.INVALID_INPUT:
            fake.add_cluster_key(key, secret, cluster_id=CLUSTER)
            endpoint, cluster = REST, "lkc-other9"
        elif outcome is Outcome.RATE_LIMITED:
            fake.add_cloud_key(key, secret)
            fake.fail_next("/org/v2/environments", 429, times=3)
        elif outcome is Outcome.PROVIDER_ERROR:
            fake.add_cloud_key(key, secret)
            fake.fail_next("/org/v2/environments", 500, times=2)
        elif outcome is Outcome.UNREACHABLE:
            provider = ConfluentCloud(f"http://127.0.0.1:{closed_port()}", sleep=Sleeps())
        values = provider.clean(form(key, secret, endpoint, cluster))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=fake.app), timeout=5) as http:
            if outcome is Outcome.UNREACHABLE:
                async with httpx.AsyncClient(timeout=5) as real:
                    yield Scenario(provider, real, values)
            else:
                yield Scenario(provider, http, values)


# --- declaration ------------------------------------------------------------------------------------


def test_declares_the_confluent_form() -> None:
    provider = ConfluentCloud()
    assert (provider.key, provider.title, provider.hint_field) == (
        "confluent_cloud",
        "Confluent Cloud",
        "api_key",
    )
    assert provider.api_url == "https://api.confluent.cloud"
    assert [s.title for s in provider.sections] == ["Confluent Account", "Kafka cluster (optional)"]
    fields = {f.name: f for f in provider.fields}
    assert [f.label for f in provider.fields] == ["API Key", "API Secret", "REST endpoint", "Cluster ID"]
    assert provider.secret_fields == ("api_key", "api_secret")
    assert not fields["api_key"].optional and not fields["api_secret"].optional
    assert fields["rest_endpoint"].optional and fields["cluster_id"].optional
    assert fields["rest_endpoint"].placeholder == "https://pkc-abcde.us-west4.gcp.confluent.cloud:443"
    assert fields["cluster_id"].placeholder == "lkc-abc123"
    assert "API keys" in fields["api_key"].hint and "Cloud resource management" in fields["api_key"].hint
    assert "once" in fields["api_secret"].hint and "cannot" in fields["api_secret"].hint
    assert "confluent kafka cluster describe" in fields["rest_endpoint"].hint
    assert "cluster-scoped" in (provider.sections[1].description or "")
    assert provider.name_examples == ("Production Confluent Cloud", "Analytics Cluster Credentials")


def test_api_url_loses_its_trailing_slash() -> None:
    assert ConfluentCloud("http://127.0.0.1:9/").api_url == "http://127.0.0.1:9"


def test_the_api_url_comes_from_its_own_variable() -> None:
    assert ConfluentCloud.from_environment({}).api_url == "https://api.confluent.cloud"
    configured = ConfluentCloud.from_environment({"CONFLUENT_CLOUD_API_URL": " http://127.0.0.1:9/ "})
    assert configured.api_url == "http://127.0.0.1:9"
    with pytest.raises(ConfigError, match="CONFLUENT_CLOUD_API_URL"):
        ConfluentCloud.from_environment({"CONFLUENT_CLOUD_API_URL": "api.confluent.cloud"})


# --- clean -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pasted",
    [
        f"  {DOCS_KEY}\n",
        f'"{DOCS_KEY}"',
        f"'{DOCS_KEY}'",
        f"“{DOCS_KEY}”",
        f' "{DOCS_KEY}" ',
        f"`{DOCS_KEY}`\t",
    ],
)
def test_clean_strips_whitespace_and_quotes_from_the_key(pasted: str) -> None:
    cleaned = ConfluentCloud().clean(form(pasted, f"\n'{DOCS_SECRET}' "))
    assert isinstance(cleaned["api_key"], Secret) and isinstance(cleaned["api_secret"], Secret)
    assert cleaned["api_key"].reveal() == DOCS_KEY
    assert cleaned["api_secret"].reveal() == DOCS_SECRET


def test_clean_leaves_unmatched_quotes_for_validation_to_catch() -> None:
    provider = ConfluentCloud()
    cleaned = provider.clean(form(f'"{DOCS_KEY}', DOCS_SECRET))
    assert isinstance(cleaned["api_key"], Secret)
    assert cleaned["api_key"].reveal() == f'"{DOCS_KEY}'
    assert "16" in provider.validate(cleaned)["api_key"]


def test_clean_trims_the_endpoint_and_cluster() -> None:
    cleaned = ConfluentCloud().clean(form(DOCS_KEY, DOCS_SECRET, f"  {REST}/\n", f"\t{CLUSTER} "))
    assert cleaned["rest_endpoint"] == REST
    assert cleaned["cluster_id"] == CLUSTER


# --- validate ----------------------------------------------------------------------------------------


def problems(key: str, secret: str, endpoint: str = "", cluster: str = "") -> dict[str, str]:
    provider = ConfluentCloud()
    return provider.validate(provider.clean(form(key, secret, endpoint, cluster)))


@pytest.mark.parametrize("secret", [DOCS_SECRET, LEGACY_SECRET])
def test_valid_cloud_credentials_pass(secret: str) -> None:
    assert problems(DOCS_KEY, secret) == {}
    assert problems(DOCS_KEY, secret, REST, CLUSTER) == {}


@pytest.mark.parametrize(
    ("key", "says"),
    [
        ("ABCD1234567890A", "15 characters"),
        ("ABCD1234567890ABC", "17 characters"),
        ("abcd1234567890ab", "lowercase"),
        ("ABCD1234-567890A", "other characters"),
        ("ABCD 1234567890A", "other characters"),
    ],
)
def test_a_malformed_key_says_what_is_wrong_without_echoing_it(key: str, says: str) -> None:
    message = problems(key, DOCS_SECRET)["api_key"]
    assert "16 capital letters and digits" in message
    assert says in message
    assert key not in message


def test_empty_key_and_secret_get_messages() -> None:
    found = problems("", "")
    assert found["api_key"] == "Enter the API key."
    assert found["api_secret"] == "Enter the API secret."


@pytest.mark.parametrize(
    ("secret", "says"),
    [
        (LEGACY_SECRET[:-1], "has 63"),
        (LEGACY_SECRET + "A", "has 65"),
        (LEGACY_SECRET[:-1] + "!", "other characters"),
    ],
)
def test_a_malformed_secret_says_what_is_wrong_without_echoing_it(secret: str, says: str) -> None:
    message = problems(DOCS_KEY, secret)["api_secret"]
    assert "64 characters" in message and says in message
    assert secret not in message


def test_the_docs_cflt_secret_passes_its_checksum() -> None:
    assert secret_checksum_ok(DOCS_SECRET)
    assert secret_checksum_ok(new_api_secret())


@pytest.mark.parametrize("position", [4, 20, 57, 58, 63])
def test_a_one_character_typo_in_a_cflt_secret_looks_mistyped(position: int) -> None:
    original = DOCS_SECRET[position]
    typo = DOCS_SECRET[:position] + ("A" if original != "A" else "B") + DOCS_SECRET[position + 1 :]
    assert not secret_checksum_ok(typo)
    message = problems(DOCS_KEY, typo)["api_secret"]
    assert "looks mistyped" in message
    assert typo not in message


def test_a_legacy_secret_has_no_checksum_to_fail() -> None:
    typo = "X" + LEGACY_SECRET[1:]
    assert problems(DOCS_KEY, typo) == {}


def test_swapped_key_and_secret_are_flagged_on_both_fields() -> None:
    found = problems(LEGACY_SECRET, DOCS_KEY)
    assert set(found) == {"api_key", "api_secret"}
    assert all("swapped" in message for message in found.values())
    assert all(DOCS_KEY not in m and LEGACY_SECRET not in m for m in found.values())


def test_a_cflt_secret_in_the_key_field_is_flagged_as_swapped() -> None:
    found = problems(DOCS_SECRET, DOCS_SECRET)
    assert set(found) == {"api_key", "api_secret"}
    assert all("swapped" in message for message in found.values())


@pytest.mark.parametrize(
    ("endpoint", "says"),
    [
        ("http://pkc-abcde.us-west4.gcp.confluent.cloud:443", "https://"),
        ("pkc-abcde.us-west4.gcp.confluent.cloud:443", "https://"),
        ("https://", "host name"),
        ("SASL_SSL://pkc-abcde.us-west4.gcp.confluent.cloud:9092", "bootstrap server"),
        ("pkc-abcde.us-west4.gcp.confluent.cloud:9092", "bootstrap server"),
        ("https://pkc-abcde.us-west4.gcp.confluent.cloud:443/kafka/v3/clusters/lkc-abc123", "without a path"),
        ("https://pkc-abcde.us-west4.gcp.confluent.cloud:99999", "valid URL"),
        ("https://pkc abcde.confluent.cloud", "https://"),
        (f"https://{DOCS_KEY}:secretvalue@pkc-abcde.us-west4.gcp.confluent.cloud:443", "out of the URL"),
        ("https://user@pkc-abcde.us-west4.gcp.confluent.cloud:443", "out of the URL"),
        ("https://pkc-abcde\t.confluent.cloud:443", "characters a URL cannot hold"),
        ("https://éx\u200dample.com", "characters a URL cannot hold"),
        ("https://xn--a.com", "valid URL"),
    ],
)
def test_a_bad_rest_endpoint_is_explained(endpoint: str, says: str) -> None:
    found = problems(DOCS_KEY, DOCS_SECRET, endpoint, CLUSTER)
    assert set(found) == {"rest_endpoint"}
    assert says in found["rest_endpoint"]


ADDRESS_SAYS = "not an IP address"


@pytest.mark.parametrize(
    ("endpoint", "says"),
    [
        ("https://127.0.0.1", ADDRESS_SAYS),
        ("https://169.254.169.254", ADDRESS_SAYS),
        ("https://[::1]", ADDRESS_SAYS),
        ("https://[::ffff:127.0.0.1]:443", ADDRESS_SAYS),
        ("https://10.0.0.1", ADDRESS_SAYS),
        ("https://0x7f.1", ADDRESS_SAYS),
        ("https://2130706433", ADDRESS_SAYS),
        ("https://127.1", ADDRESS_SAYS),
        ("https://0177.0.0.1", "valid URL"),  # httpx itself refuses octal
        ("https://localhost", "only resolves inside a private network"),
        ("https://localhost:8082", "only resolves inside a private network"),
        ("https://kafka.internal", "only resolves inside a private network"),
        ("https://evil.example.com", "ends in .confluent.cloud"),
        ("https://pkc-abcde.us-west4.gcp.confluent.cloud.evil.com", "ends in .confluent.cloud"),
        ("https://pkc-abcde.us-west4.gcp.confluent.test:443", "ends in .confluent.cloud"),
    ],
)
def test_an_endpoint_the_bot_does_not_call_is_refused_under_the_field(endpoint: str, says: str) -> None:
    found = problems(DOCS_KEY, DOCS_SECRET, endpoint, CLUSTER)
    assert set(found) == {"rest_endpoint"}
    assert says in found["rest_endpoint"]


def test_the_operator_widens_where_a_rest_endpoint_may_point() -> None:
    assert ConfluentCloud.from_environment({}).policy == Policy(DEFAULT_REST_HOSTS)
    env = {
        "CONFLUENT_REST_ALLOWED_HOSTS": "*.confluent.cloud,*.kafka.corp.example",
        "CONNECTIONS_ALLOW_PRIVATE_ADDRESSES": "true",
    }
    widened = ConfluentCloud.from_environment(env)
    assert widened.policy.allow_private
    values = widened.clean(form(DOCS_KEY, DOCS_SECRET, "https://pkc-1.kafka.corp.example", CLUSTER))
    assert widened.validate(values) == {}
    assert "rest_endpoint" in ConfluentCloud.from_environment({}).validate(values)
    with pytest.raises(ConfigError, match="CONFLUENT_REST_ALLOWED_HOSTS"):
        ConfluentCloud.from_environment({"CONFLUENT_REST_ALLOWED_HOSTS": "10.0.0.1"})


@pytest.mark.parametrize(
    ("addresses", "endpoint"),
    [
        (["10.0.0.7"], REST),
        (["127.0.0.1"], REST),
        (["169.254.169.254"], REST),
        (["64:ff9b::a9fe:a9fe"], REST),
        ([PUBLIC_IP, "192.168.1.1"], REST),
        ([PUBLIC_IP], "https://127.0.0.1:443"),  # stored before the policy: refused before any lookup
    ],
)
async def test_an_endpoint_the_bot_does_not_connect_to_is_sent_nothing(
    fake: FakeConfluent,
    http: httpx.AsyncClient,
    sleeps: Sleeps,
    cluster_key: tuple[str, str],
    addresses: list[str],
    endpoint: str,
) -> None:
    provider = confluent(
        API, sleep=sleeps, policy=Policy(DEFAULT_REST_HOSTS, resolve=FakeResolver(addresses))
    )
    verification = await provider.verify(provider.clean(form(*cluster_key, endpoint, CLUSTER)), http)
    assert verification.outcome is Outcome.INVALID_INPUT
    assert "the bot does not connect to" in verification.summary.lower()
    assert "CONNECTIONS_ALLOW_PRIVATE_ADDRESSES" in hints_text(verification)
    assert fake.requests == []  # not the cluster, not even the Cloud API: no key went anywhere
    assert not any(a in repr(verification) for a in addresses if a != PUBLIC_IP and a not in endpoint)


async def test_an_endpoint_that_does_not_resolve_is_sent_nothing(
    fake: FakeConfluent, http: httpx.AsyncClient, cluster_key: tuple[str, str]
) -> None:
    error = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    provider = confluent(API, policy=Policy(DEFAULT_REST_HOSTS, resolve=FakeResolver(error=error)))
    verification = await provider.verify(provider.clean(form(*cluster_key, REST, CLUSTER)), http)
    assert verification.outcome is Outcome.INVALID_INPUT
    assert verification.summary == "The host pkc-abcde.us-west4.gcp.confluent.cloud does not exist."
    assert "Copy the REST endpoint again" in hints_text(verification)
    assert fake.requests == []


async def test_the_cluster_is_called_at_the_checked_address_under_its_name(
    fake: FakeConfluent, http: httpx.AsyncClient, cluster_key: tuple[str, str]
) -> None:
    seen: list[httpx.Request] = []
    http.event_hooks["request"].append(lambda request: _record(seen, request))
    resolver = FakeResolver()
    provider = confluent(API, sleep=Sleeps(), policy=Policy(DEFAULT_REST_HOSTS, resolve=resolver))
    verification = await provider.verify(provider.clean(form(*cluster_key, REST, CLUSTER)), http)
    assert verification.outcome is Outcome.OK
    assert resolver.asked == [("pkc-abcde.us-west4.gcp.confluent.cloud", 443)]
    cluster_calls = [r for r in seen if "/kafka/" in r.url.path]
    assert len(cluster_calls) == 3
    for request in cluster_calls:
        assert request.url.host == PUBLIC_IP
        assert (
            request.headers["host"]
            == request.extensions["sni_hostname"]
            == "pkc-abcde.us-west4.gcp.confluent.cloud"
        )
    assert [r.url.host for r in seen if "/org/" in r.url.path] == [
        "api.confluent.test"
    ]  # the operator's, as is


async def _record(seen: list[httpx.Request], request: httpx.Request) -> None:
    seen.append(request)


@pytest.mark.parametrize(
    ("cluster", "says"),
    [
        ("LKC-ABC123", "lkc- followed by lowercase letters and digits"),
        ("lkc-", "lkc- followed by"),
        ("lkc_abc123", "lkc- followed by"),
        ("env-abc123", "environment ID"),
        ("pkc-abcde", "bootstrap host"),
        ("lsrc-abc12", "Schema Registry"),
    ],
)
def test_a_bad_cluster_id_is_explained(cluster: str, says: str) -> None:
    found = problems(DOCS_KEY, DOCS_SECRET, REST, cluster)
    assert set(found) == {"cluster_id"}
    assert says in found["cluster_id"]


def test_endpoint_and_cluster_come_together() -> None:
    assert set(problems(DOCS_KEY, DOCS_SECRET, REST, "")) == {"cluster_id"}
    assert "cluster ID" in problems(DOCS_KEY, DOCS_SECRET, REST, "")["cluster_id"]
    assert set(problems(DOCS_KEY, DOCS_SECRET, "", CLUSTER)) == {"rest_endpoint"}
    assert "REST endpoint" in problems(DOCS_KEY, DOCS_SECRET, "", CLUSTER)["rest_endpoint"]


# --- the Cloud API probe -------------------------------------------------------------------------------


async def test_a_cloud_key_is_accepted(
    provider: ConfluentCloud, http: httpx.AsyncClient, fake: FakeConfluent, cloud_key: tuple[str, str]
) -> None:
    verification = await verify(provider, http, *cloud_key)
    assert verification.outcome is Outcome.OK
    assert check(verification, "Cloud API key accepted").passed
    assert check(verification, "3 environments visible").passed
    assert "3 environments visible" in verification.summary
    assert verification.request_id == fake.request_ids[0]
    assert verification.hints == ()
    (seen,) = fake.requests
    assert (seen.method, seen.path, seen.query) == ("GET", "/org/v2/environments", {"page_size": "1"})
    assert seen.username == cloud_key[0] and seen.authenticated is True


async def test_the_environment_count_comes_from_total_size(
    provider: ConfluentCloud, http: httpx.AsyncClient, fake: FakeConfluent
) -> None:
    key, secret = new_api_key(), new_api_secret()
    fake.add_cloud_key(key, secret, environments=250)  # one page of 1, but 250 in all
    verification = await verify(provider, http, key, secret)
    assert check(verification, "environments visible").name == "250 environments visible"


async def test_no_environments_suggests_a_missing_role(
    provider: ConfluentCloud, http: httpx.AsyncClient, fake: FakeConfluent
) -> None:
    key, secret = new_api_key(), new_api_secret()
    fake.add_cloud_key(key, secret, environments=0)
    verification = await verify(provider, http, key, secret)
    assert verification.outcome is Outcome.OK
    assert not check(verification, "0 environments visible").passed
    assert "no role on any environment" in hints_text(verification)


async def test_a_wrong_secret_is_unauthorized_and_never_accepted(
    provider: ConfluentCloud, http: httpx.AsyncClient, fake: FakeConfluent, cloud_key: tuple[str, str]
) -> None:
    wrong = new_api_secret()
    verification = await verify(provider, http, cloud_key[0], wrong)
    assert verification.outcome is Outcome.UNAUTHORIZED
    assert fake.requests and all(r.authenticated is False for r in fake.requests)
    assert wrong not in repr(fake.requests) and cloud_key[1] not in repr(fake.requests)


async def test_cloud_401_hints_cover_typos_wrong_kind_and_propagation(
    provider: ConfluentCloud, http: httpx.AsyncClient, fake: FakeConfluent
) -> None:
    verification = await verify(provider, http, new_api_key(), new_api_secret())
    assert verification.outcome is Outcome.UNAUTHORIZED
    text = hints_text(verification)
    assert "typos" in text
    assert "a Kafka cluster key is rejected by the Cloud API" in text
    assert "a Cloud resource management key is rejected by a Kafka cluster" in text
    assert "propagating" in text and "10 seconds" in text and "2 minutes" in text
    # It may be a cluster key: the summary asks for the cluster instead of calling the key bad.
    assert "REST endpoint and cluster ID" in verification.summary
    assert "Authentication Required" in verification.summary
    assert verification.request_id == fake.request_ids[-1]
    assert not check(verification, "Cloud API key").passed


async def test_a_cluster_key_sent_to_the_cloud_api_alone_is_unauthorized(
    provider: ConfluentCloud, http: httpx.AsyncClient, cluster_key: tuple[str, str]
) -> None:
    verification = await verify(provider, http, *cluster_key)
    assert verification.outcome is Outcome.UNAUTHORIZED
    assert "invalid API key" in verification.summary


@pytest.mark.parametrize(
    "body",
    [
        cloud_error(403, detail="invalid API key: make sure you're using a Cloud API key"),
        {"error": {"code": 403, "message": "invalid API key"}},  # the old Metrics API's shape
    ],
    ids=["errors-list", "metrics-envelope"],
)
async def test_a_403_saying_invalid_api_key_counts_as_401(
    provider: ConfluentCloud,
    http: httpx.AsyncClient,
    fake: FakeConfluent,
    cloud_key: tuple[str, str],
    body: Any,
) -> None:
    fake.fail_next("/org/v2/environments", 403, body=body)
    verification = await verify(provider, http, *cloud_key)
    assert verification.outcome is Outcome.UNAUTHORIZED
    assert "typos" in hints_text(verification)


async def test_cloud_403_is_forbidden_with_rbac_hints(
    provider: ConfluentCloud, http: httpx.AsyncClient, fake: FakeConfluent
) -> None:
    key, secret = new_api_key(), new_api_secret()
    fake.add_cloud_key(key, secret, role=False)
    verification = await verify(provider, http, key, secret)
    assert verification.outcome is Outcome.FORBIDDEN
    assert "accepted the key" in verification.summary
    assert "User Access Unauthorized" in verification.summary
    text = hints_text(verification)
    assert "accepted" in text and "lacks" in text and "RBAC" in text
    for role in ("OrganizationAdmin", "EnvironmentAdmin", "CloudClusterAdmin", "Operator"):
        assert role in text
    assert "confluent iam rbac role-binding list" in text


async def test_the_newer_error_envelope_is_read(
    provider: ConfluentCloud, http: httpx.AsyncClient, fake: FakeConfluent, cloud_key: tuple[str, str]
) -> None:
    body = cloud_error_v2(403, "user_unauthorized", "The principal may not list environments.", "req-4711")
    fake.fail_next("/org/v2/environments", 403, body=body)
    verification = await verify(provider, http, *cloud_key)
    assert verification.outcome is Outcome.FORBIDDEN
    assert "The principal may not list environments." in verification.summary
    assert verification.request_id == "req-4711"


async def test_an_unexpected_cloud_status_is_a_provider_error(
    provider: ConfluentCloud, http: httpx.AsyncClient, fake: FakeConfluent, cloud_key: tuple[str, str]
) -> None:
    fake.fail_next("/org/v2/environments", 404)
    verification = await verify(provider, http, *cloud_key)
    assert verification.outcome is Outcome.PROVIDER_ERROR
    assert "HTTP 404" in verification.summary and "Not Found" in verification.summary


async def test_credentials_echoed_in_an_error_never_reach_the_user(
    provider: ConfluentCloud, http: httpx.AsyncClient, fake: FakeConfluent, cloud_key: tuple[str, str]
) -> None:
    key, secret = cloud_key
    fake.fail_next(
        "/org/v2/environments", 401, body=cloud_error(401, detail=f"invalid API key {key}:{secret}")
    )
    verification = await verify(provider, http, key, secret)
    assert verification.outcome is Outcome.UNAUTHORIZED
    assert "invalid API key [redacted]:[redacted]" in verification.summary
    assert key not in repr(verification) and secret not in repr(verification)


async def test_a_secret_echoed_across_the_cut_of_a_long_error_leaves_no_part_behind(
    provider: ConfluentCloud, http: httpx.AsyncClient, fake: FakeConfluent, cloud_key: tuple[str, str]
) -> None:
    # A long message is shortened for Slack; scrubbing must come first, or the cut would leave the
    # secret's first characters where the whole value no longer matches.
    key, secret = cloud_key
    detail = "x" * 270 + f" {secret} " + "y" * 100
    fake.fail_next("/org/v2/environments", 401, body=cloud_error(401, detail=detail))
    verification = await verify(provider, http, key, secret)
    assert verification.outcome is Outcome.UNAUTHORIZED
    assert secret[:12] not in repr(verification)


# --- retries -------------------------------------------------------------------------------------------


async def test_retry_after_is_honoured_exactly(
    provider: ConfluentCloud,
    http: httpx.AsyncClient,
    fake: FakeConfluent,
    cloud_key: tuple[str, str],
    sleeps: Sleeps,
) -> None:
    fake.fail_next("/org/v2/environments", 429, times=2, retry_after=7)
    verification = await verify(provider, http, *cloud_key)
    assert verification.outcome is Outcome.OK
    assert sleeps == [7.0, 7.0]
    assert len(fake.requests) == 3


async def test_at_most_two_429_retries_then_rate_limited(
    provider: ConfluentCloud,
    http: httpx.AsyncClient,
    fake: FakeConfluent,
    cloud_key: tuple[str, str],
    sleeps: Sleeps,
) -> None:
    fake.fail_next("/org/v2/environments", 429, times=5, retry_after=3)
    verification = await verify(provider, http, *cloud_key)
    assert verification.outcome is Outcome.RATE_LIMITED
    assert len(fake.requests) == 3 and sleeps == [3.0, 3.0]
    assert "rate-limiting" in hints_text(verification) and "try again in about 3 seconds" in hints_text(
        verification
    )
    assert "Too Many Requests" in verification.summary
    assert verification.request_id == fake.request_ids[-1]


async def test_a_huge_retry_after_is_not_waited_for(
    provider: ConfluentCloud,
    http: httpx.AsyncClient,
    fake: FakeConfluent,
    cloud_key: tuple[str, str],
    sleeps: Sleeps,
) -> None:
    fake.fail_next("/org/v2/environments", 429, retry_after=3600)
    verification = await verify(provider, http, *cloud_key)
    assert verification.outcome is Outcome.RATE_LIMITED
    assert sleeps == [] and len(fake.requests) == 1
    assert "60 minutes" in hints_text(verification)


async def test_a_429_without_retry_after_backs_off_with_jitter(
    provider: ConfluentCloud,
    http: httpx.AsyncClient,
    fake: FakeConfluent,
    cloud_key: tuple[str, str],
    sleeps: Sleeps,
) -> None:
    fake.fail_next("/org/v2/environments", 429, times=3)
    verification = await verify(provider, http, *cloud_key)
    assert verification.outcome is Outcome.RATE_LIMITED
    assert sleeps == [1.125, 2.25]  # 1 s and 2 s, each plus a quarter of rng() = 0.5
    assert "in a minute" in hints_text(verification)


def test_backoff_jitter_spreads_the_steps() -> None:
    draws = iter([0.0, 1.0, 0.2, 0.9])
    policy = RetryPolicy(rng=lambda: next(draws))
    assert [policy.backoff_delay(0), policy.backoff_delay(0)] == [1.0, 1.25]
    assert policy.backoff_delay(1) == pytest.approx(2.1)
    assert policy.backoff_delay(9) == pytest.approx(4.9)  # past the schedule, the last step repeats


async def test_one_5xx_is_retried(
    provider: ConfluentCloud,
    http: httpx.AsyncClient,
    fake: FakeConfluent,
    cloud_key: tuple[str, str],
    sleeps: Sleeps,
) -> None:
    fake.fail_next("/org/v2/environments", 503)
    verification = await verify(provider, http, *cloud_key)
    assert verification.outcome is Outcome.OK
    assert len(fake.requests) == 2 and sleeps == [1.125]


async def test_a_second_5xx_is_a_provider_error_with_the_request_id(
    provider: ConfluentCloud,
    http: httpx.AsyncClient,
    fake: FakeConfluent,
    cloud_key: tuple[str, str],
    sleeps: Sleeps,
) -> None:
    fake.fail_next("/org/v2/environments", 500, times=3)
    verification = await verify(provider, http, *cloud_key)
    assert verification.outcome is Outcome.PROVIDER_ERROR
    assert len(fake.requests) == 2 and len(sleeps) == 1
    request_id = fake.request_ids[-1]
    assert verification.request_id == request_id
    assert f"request id {request_id}" in hints_text(verification)
    assert "Internal Server Error" in verification.summary and "server error" in verification.summary


async def test_a_5xx_in_the_newer_envelope_is_read(
    provider: ConfluentCloud, http: httpx.AsyncClient, fake: FakeConfluent, cloud_key: tuple[str, str]
) -> None:
    body = cloud_error_v2(503, "unavailable", "The environments service is restarting.", "req-503")
    fake.fail_next("/org/v2/environments", 503, times=2, body=body)
    verification = await verify(provider, http, *cloud_key)
    assert verification.outcome is Outcome.PROVIDER_ERROR
    assert "The environments service is restarting." in verification.summary
    assert verification.request_id == "req-503"


# --- the cluster probe ----------------------------------------------------------------------------------


async def test_a_cluster_key_is_accepted_on_its_cluster(
    provider: ConfluentCloud, http: httpx.AsyncClient, fake: FakeConfluent, cluster_key: tuple[str, str]
) -> None:
    verification = await verify(provider, http, *cluster_key, REST, CLUSTER)
    assert verification.outcome is Outcome.OK
    cloud = check(verification, "Cloud API key")
    assert not cloud.passed and "did not accept" in cloud.detail
    assert "Kafka cluster key" in check(verification, f"Key accepted by {CLUSTER}").detail
    assert check(verification, "2 topics visible").passed
    assert check(verification, f"can create topics on {CLUSTER}").passed
    assert "Kafka cluster key" in verification.summary and "2 topics visible" in verification.summary
    paths = [(r.method, r.path) for r in fake.requests]
    assert paths == [
        ("GET", "/org/v2/environments"),
        ("GET", f"/kafka/v3/clusters/{CLUSTER}"),
        ("GET", f"/kafka/v3/clusters/{CLUSTER}/topics"),
        ("POST", f"/kafka/v3/clusters/{CLUSTER}/topics"),
    ]


async def test_the_create_probe_is_a_dry_run_with_a_fresh_name(
    provider: ConfluentCloud, http: httpx.AsyncClient, fake: FakeConfluent, cluster_key: tuple[str, str]
) -> None:
    await verify(provider, http, *cluster_key, REST, CLUSTER)
    await verify(provider, http, *cluster_key, REST, CLUSTER)
    posts = fake.requests_to(f"/kafka/v3/clusters/{CLUSTER}/topics", "POST")
    assert len(posts) == 2
    for post in posts:
        assert set(post.json) == {"topic_name", "validate_only"}  # no replication_factor, no partitions
        assert post.json["validate_only"] is True
        assert post.json["topic_name"].startswith("connections-bot-probe-")
    assert posts[0].json["topic_name"] != posts[1].json["topic_name"]
    assert fake.topics[CLUSTER] == ["orders", "payments"]  # nothing was created


async def test_no_permission_to_create_topics_is_not_fatal(
    provider: ConfluentCloud, http: httpx.AsyncClient, fake: FakeConfluent
) -> None:
    key, secret = new_api_key(), new_api_secret()
    fake.add_cluster_key(key, secret, cluster_id=CLUSTER, can_create_topics=False)
    verification = await verify(provider, http, key, secret, REST, CLUSTER)
    assert verification.outcome is Outcome.OK
    denied = check(verification, f"cannot create topics on {CLUSTER}")
    assert not denied.passed and "not authorized" in denied.detail
    text = hints_text(verification)
    for role in ("CloudClusterAdmin", "DeveloperManage", "ResourceOwner", "DeveloperRead"):
        assert role in text
    assert "Basic clusters use ACLs" in text and "RBAC" in text


async def test_a_create_probe_server_error_is_reported_but_not_fatal(
    provider: ConfluentCloud, http: httpx.AsyncClient, fake: FakeConfluent, cluster_key: tuple[str, str]
) -> None:
    fake.fail_next(f"/kafka/v3/clusters/{CLUSTER}/topics", 500, times=2, method="POST")
    verification = await verify(provider, http, *cluster_key, REST, CLUSTER)
    assert verification.outcome is Outcome.OK
    unknown = check(verification, f"create topics on {CLUSTER}")
    assert not unknown.passed and "Couldn't tell" in unknown.detail
    assert verification.hints == ()


async def test_a_cloud_key_rejected_by_the_cluster_is_unauthorized(
    provider: ConfluentCloud, http: httpx.AsyncClient, fake: FakeConfluent, cloud_key: tuple[str, str]
) -> None:
    fake.add_cluster(CLUSTER)
    verification = await verify(provider, http, *cloud_key, REST, CLUSTER)
    assert verification.outcome is Outcome.UNAUTHORIZED
    assert check(verification, "Cloud API key accepted").passed
    assert "Authentication failed" in verification.summary and CLUSTER in verification.summary
    text = hints_text(verification)
    assert "A Cloud API key cannot be used on a cluster" in text
    assert "typos" in text and "2 minutes" in text


async def test_a_key_for_another_cluster_is_unauthorized(
    provider: ConfluentCloud, http: httpx.AsyncClient, fake: FakeConfluent, cluster_key: tuple[str, str]
) -> None:
    fake.add_cluster("lkc-other9")
    verification = await verify(provider, http, *cluster_key, REST, "lkc-other9")
    assert verification.outcome is Outcome.UNAUTHORIZED
    assert "exactly one cluster" in hints_text(verification)


async def test_a_key_nobody_knows_gets_both_kinds_of_401_hint(
    provider: ConfluentCloud, http: httpx.AsyncClient, fake: FakeConfluent
) -> None:
    fake.add_cluster(CLUSTER)
    verification = await verify(provider, http, new_api_key(), new_api_secret(), REST, CLUSTER)
    assert verification.outcome is Outcome.UNAUTHORIZED
    text = hints_text(verification)
    assert (
        "fill in the cluster's REST endpoint" in text
        and "A Cloud API key cannot be used on a cluster" in text
    )
    assert len(verification.hints) == len(set(verification.hints))


async def test_an_unknown_cluster_id_is_invalid_input(
    provider: ConfluentCloud, http: httpx.AsyncClient, fake: FakeConfluent, cluster_key: tuple[str, str]
) -> None:
    verification = await verify(provider, http, *cluster_key, REST, "lkc-zzz999")
    assert verification.outcome is Outcome.INVALID_INPUT
    assert "Cluster lkc-zzz999 cannot be found." in verification.summary
    text = hints_text(verification)
    assert "Wrong cluster ID for that endpoint" in text and "confluent kafka cluster describe" in text


async def test_kafka_403_on_describe_is_forbidden(
    provider: ConfluentCloud, http: httpx.AsyncClient, fake: FakeConfluent
) -> None:
    key, secret = new_api_key(), new_api_secret()
    fake.add_cluster_key(key, secret, cluster_id=CLUSTER, can_describe=False)
    verification = await verify(provider, http, key, secret, REST, CLUSTER)
    assert verification.outcome is Outcome.FORBIDDEN
    assert "Request is not authorized" in verification.summary
    text = hints_text(verification)
    assert "RBAC" in text and "confluent kafka acl list" in text and "role-binding list" in text
    assert "accepted" in text and "lacks a role" in text
    for role in ("CloudClusterAdmin", "Operator", "DeveloperRead", "ResourceOwner"):
        assert role in text
    assert "Basic clusters use ACLs" in text


async def test_kafka_429_html_is_retried_and_never_shown(
    provider: ConfluentCloud,
    http: httpx.AsyncClient,
    fake: FakeConfluent,
    cluster_key: tuple[str, str],
    sleeps: Sleeps,
) -> None:
    fake.fail_next(f"/kafka/v3/clusters/{CLUSTER}", 429, times=3)
    verification = await verify(provider, http, *cluster_key, REST, CLUSTER)
    assert verification.outcome is Outcome.RATE_LIMITED
    assert sleeps == [1.125, 2.25]
    assert "Too Many Requests" in verification.summary
    assert "<" not in verification.summary and "Jetty" not in verification.summary
    assert "rate-limiting" in hints_text(verification)


async def test_kafka_429_once_then_fine(
    provider: ConfluentCloud,
    http: httpx.AsyncClient,
    fake: FakeConfluent,
    cluster_key: tuple[str, str],
    sleeps: Sleeps,
) -> None:
    fake.fail_next(f"/kafka/v3/clusters/{CLUSTER}/topics", 429, method="GET")
    verification = await verify(provider, http, *cluster_key, REST, CLUSTER)
    assert verification.outcome is Outcome.OK
    assert sleeps == [1.125]


async def test_kafka_retriable_50003_is_retried_once(
    provider: ConfluentCloud,
    http: httpx.AsyncClient,
    fake: FakeConfluent,
    cluster_key: tuple[str, str],
    sleeps: Sleeps,
) -> None:
    body = kafka_error(50003, "The broker is not available.")
    fake.fail_next(f"/kafka/v3/clusters/{CLUSTER}", 503, times=2, body=body)
    verification = await verify(provider, http, *cluster_key, REST, CLUSTER)
    assert verification.outcome is Outcome.PROVIDER_ERROR
    assert len(sleeps) == 1
    assert len(fake.requests_to(f"/kafka/v3/clusters/{CLUSTER}")) == 2
    assert "The broker is not available." in verification.summary


async def test_a_non_json_error_falls_back_to_the_status_text(
    provider: ConfluentCloud, http: httpx.AsyncClient, fake: FakeConfluent, cluster_key: tuple[str, str]
) -> None:
    fake.fail_next(f"/kafka/v3/clusters/{CLUSTER}", 403, body="<html><body>Denied by proxy</body></html>")
    verification = await verify(provider, http, *cluster_key, REST, CLUSTER)
    assert verification.outcome is Outcome.FORBIDDEN
    assert "Forbidden" in verification.summary and "proxy" not in verification.summary


# --- the network -------------------------------------------------------------------------------------------


async def test_a_refused_connection_is_unreachable(sleeps: Sleeps) -> None:
    provider = ConfluentCloud(f"http://127.0.0.1:{closed_port()}", sleep=sleeps)
    async with httpx.AsyncClient(timeout=5) as http:
        verification = await verify(provider, http, DOCS_KEY, DOCS_SECRET)
    assert verification.outcome is Outcome.UNREACHABLE
    assert "refused" in verification.summary
    assert verification.hints == provider.unreachable_hints
    assert "private networking" in hints_text(verification)
    assert sleeps == []


@pytest.fixture
def slow_server(fake: FakeConfluent) -> Iterator[str]:
    fake.delay = 1.0
    with serve_asgi(fake.app) as url:
        yield url


async def test_a_timeout_is_unreachable(
    slow_server: str, fake: FakeConfluent, cloud_key: tuple[str, str]
) -> None:
    provider = ConfluentCloud(slow_server, sleep=Sleeps())
    async with httpx.AsyncClient(timeout=0.2) as http:
        verification = await verify(provider, http, *cloud_key)
    assert verification.outcome is Outcome.UNREACHABLE
    assert "did not answer in time" in verification.summary
    assert verification.hints == provider.unreachable_hints


async def test_over_real_http_the_probe_sends_basic_auth(
    fake: FakeConfluent, cluster_key: tuple[str, str]
) -> None:
    # The endpoint is a name the resolver sends to the fake: the request reaches the checked
    # address, and the fake sees the name.
    resolver = FakeResolver(addresses=["127.0.0.1"])
    policy = Policy(HostPatterns(("*.fake.test",)), allow_private=True, resolve=resolver)
    with serve_asgi(fake.app) as url:
        provider = ConfluentCloud(url, sleep=Sleeps(), policy=policy)
        endpoint = url.replace("127.0.0.1", "pkc-1.fake.test")
        async with httpx.AsyncClient(timeout=5) as http:
            values = provider.clean(form(*cluster_key, endpoint, CLUSTER))
            verification = await provider.verify(values, http)
    assert verification.outcome is Outcome.OK
    assert [r.authenticated for r in fake.requests] == [False, True, True, True]
    assert {r.username for r in fake.requests} == {cluster_key[0]}
    assert resolver.asked == [("pkc-1.fake.test", int(url.rsplit(":", 1)[1]))]
    assert [r.host for r in fake.requests[1:]] == ["pkc-1.fake.test"] * 3


# --- the fake itself --------------------------------------------------------------------------------------


async def test_the_fake_rejects_missing_and_wrong_credentials(
    fake: FakeConfluent, http: httpx.AsyncClient, cloud_key: tuple[str, str]
) -> None:
    url = "http://fake/org/v2/environments"
    missing = await http.get(url)
    wrong = await http.get(url, auth=(cloud_key[0], "x" + cloud_key[1][1:]))
    right = await http.get(url, auth=cloud_key)
    assert missing.status_code == wrong.status_code == 401
    assert wrong.headers["www-authenticate"].startswith("Basic error=")
    assert wrong.json()["errors"][0]["status"] == "401"
    assert right.status_code == 200 and right.json()["kind"] == "EnvironmentList"
    assert all(response.headers["x-request-id"] for response in (missing, wrong, right))


async def test_the_fake_creates_topics_only_without_validate_only(
    fake: FakeConfluent, http: httpx.AsyncClient, cluster_key: tuple[str, str]
) -> None:
    url = f"http://fake/kafka/v3/clusters/{CLUSTER}/topics"
    dry = await http.post(url, auth=cluster_key, json={"topic_name": "t1", "validate_only": True})
    real = await http.post(url, auth=cluster_key, json={"topic_name": "t1"})
    again = await http.post(url, auth=cluster_key, json={"topic_name": "t1"})
    assert (dry.status_code, real.status_code, again.status_code) == (200, 201, 400)
    assert again.json() == {"error_code": 40002, "message": "Topic 't1' already exists."}
    assert fake.topics[CLUSTER] == ["orders", "payments", "t1"]


async def test_the_fake_can_hold_requests_until_released(
    fake: FakeConfluent, provider: ConfluentCloud, http: httpx.AsyncClient, cloud_key: tuple[str, str]
) -> None:
    import asyncio

    fake.hold()
    task = asyncio.create_task(verify(provider, http, *cloud_key))
    await fake.wait_until_held()
    assert not task.done() and fake.held == 1
    fake.release()
    assert (await task).outcome is Outcome.OK
    assert fake.held == 0


def test_a_request_id_in_a_hint_is_inert_and_the_status_link_stays_a_link() -> None:
    # The id comes from a response header: whoever answered chose it.
    assert hint_problems(errs.provider_error_hints) == []
    assert "check https://status.confluent.cloud and" in errs.provider_error_hints("abc")[1]
