"""One fault-injection matrix over every provider.

Each case injects one failure (at the network, in the HTTP answer, or in the database session) and
checks the promises every provider makes whatever goes wrong: ``verify()`` returns, the outcome is
the sensible failure, the summary is one or two plain sentences, there are hints, no secret of the
credential shows in the result or in the logs, and the call ends within the provider's deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import json
import logging
import re
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bot.outbound import Policy
from bot.providers.base import Outcome, Provider, Verification
from bot.providers.confluent_cloud import ConfluentCloud, RetryPolicy
from bot.providers.redshift import Redshift
from bot.providers.registry import PROVIDERS
from bot.providers.snowflake import RetryPolicy as SnowflakeRetryPolicy
from bot.providers.snowflake import Snowflake
from bot.redaction import Secret
from tests.fakes.confluent_api import new_api_key, new_api_secret
from tests.fakes.dns import FakeResolver
from tests.fakes.snowflake_api import new_token
from tests.support.private_postgres import (  # noqa: F401  (the fixture private_postgres is found by name)
    PrivatePostgres,
    private_postgres_server,
)
from tests.unit.providers.test_confluent_cloud import form as confluent_form
from tests.unit.providers.test_redshift import (
    ENDPOINT,
    PASSWORD,
    FakeRedshift,
    FakeSession,
)
from tests.unit.providers.test_redshift import form as redshift_form
from tests.unit.providers.test_snowflake import ACCOUNT
from tests.unit.providers.test_snowflake import form as snowflake_form

TIMEOUT = 0.3
"""Seconds a request or a connection may take before a hang counts as one."""

_TAG = re.compile(r"<\s*/?\s*[A-Za-z!][^>]*>")
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


class Sleeps(list[float]):
    """An injected ``sleep`` that records the delays asked for and returns at once."""

    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


def closed_port() -> int:
    """A loopback port that was just bound and closed, so connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the promises --------------------------------------------------------------------------------


def assert_promises(
    verification: Verification,
    provider: Provider,
    expected: Outcome,
    in_summary: str,
    secrets: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert verification.outcome is expected, verification.summary
    assert not verification.ok
    summary = verification.summary
    assert in_summary in summary
    assert summary.strip() == summary and "\n" not in summary
    assert 1 <= len(_SENTENCE_BREAK.split(summary)) <= 2, summary
    assert not _TAG.search(summary), f"markup in {summary!r}"
    assert "Traceback" not in summary and 'File "' not in summary, summary
    assert not re.search(r'[{\[]\s*"|"\s*:\s*["{\[\d]', summary), f"raw JSON in {summary!r}"
    assert verification.hints and all(hint.strip() for hint in verification.hints)
    assert secrets and all(secrets)
    texts = [repr(verification), summary, *verification.hints, verification.request_id or "", caplog.text]
    texts += [f"{check.name} {check.detail}" for check in verification.checks]
    texts += [record.getMessage() for record in caplog.records]
    for secret in secrets:
        for text in texts:
            assert secret not in text, "a secret of the credential is shown"
    assert 0 <= verification.latency_ms <= provider.deadline_seconds * 1000


def test_every_registered_provider_is_in_the_matrix() -> None:
    assert {p.key for p in PROVIDERS} == {"confluent_cloud", "snowflake", "redshift"}
    assert {case.provider for case in HTTP_CASES} | {"redshift"} == {p.key for p in PROVIDERS}


# --- HTTP faults ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class HttpFault:
    """A network failure (``network`` set) or an answer every request gets."""

    name: str
    network: str | None = None
    status: int = 200
    body: str | bytes = b""
    content_type: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    only: str | None = None
    """The one provider whose answers take this shape, when it is not a fault for the others."""


ECHO = "{secret}"
"""Replaced by the credential's secrets in a body: a provider that echoes what it was sent."""

_ERROR_JSON = json.dumps(
    {
        "code": "000500",
        "message": f"internal failure while checking {ECHO}",
        "errors": [{"status": "500", "title": "Internal error", "detail": f"failure while checking {ECHO}"}],
    }
)
_HTML_PAGE = (
    "<!DOCTYPE html><html><head><title>404 Not Found</title></head><body><h1>Not Found</h1>"
    f"<p>No route for {ECHO}</p><hr><address>nginx</address></body></html>"
)

HTTP_FAULTS = {
    fault.name: fault
    for fault in (
        HttpFault("connection-refused", network="refused"),
        HttpFault("dns-failure", network="dns"),
        HttpFault("dns-temporary-failure", network="dns-temporary"),
        HttpFault("tls-self-signed", network="tls"),
        HttpFault("hang-past-timeout", network="hang"),
        HttpFault("429-retry-after", status=429, headers=(("Retry-After", "7"),)),
        HttpFault("429-no-retry-after", status=429),
        HttpFault("500", status=500, body=_ERROR_JSON, content_type="application/json"),
        HttpFault("502", status=502),
        HttpFault("503", status=503, headers=(("Retry-After", "120"),)),
        HttpFault("200-not-json", body=f"all good for {ECHO}", content_type="text/plain"),
        HttpFault(
            "404-html-error-page", status=404, body=_HTML_PAGE, content_type="text/html; charset=utf-8"
        ),
        HttpFault("200-shape-empty-object", body="{}", content_type="application/json"),
        HttpFault("200-shape-empty-list", body="[]", content_type="application/json"),
        HttpFault("200-shape-data-string", body='{"data": "x"}', content_type="application/json"),
        HttpFault(
            "200-shape-empty-result-set",
            body='{"resultSetMetaData": {"numRows": 0, "rowType": []}, "data": []}',
            content_type="application/json",
            only="snowflake",
        ),
    )
}


@dataclass(frozen=True)
class HttpCase:
    provider: str
    fault: str
    outcome: Outcome
    in_summary: str
    bug: str | None = None

    def param(self) -> Any:
        marks = [pytest.mark.xfail(strict=True, reason=self.bug)] if self.bug else []
        return pytest.param(self, id=f"{self.provider}-{self.fault}", marks=marks)


def _cases(provider: str, answers: dict[str, tuple[Outcome, str]], bugs: dict[str, str]) -> list[HttpCase]:
    faults = [name for name, fault in HTTP_FAULTS.items() if fault.only in (None, provider)]
    assert set(answers) == set(faults)
    return [HttpCase(provider, name, *answers[name], bugs.get(name)) for name in faults]


_UNREACHABLE = {
    "connection-refused": (Outcome.UNREACHABLE, "the connection was refused"),
    "dns-failure": (Outcome.UNREACHABLE, "the host name does not resolve"),
    "dns-temporary-failure": (Outcome.UNREACHABLE, "resolve"),
    "tls-self-signed": (Outcome.UNREACHABLE, "the TLS handshake failed"),
    "hang-past-timeout": (Outcome.UNREACHABLE, "did not answer in time"),
}

HTTP_CASES = _cases(
    "confluent_cloud",
    {
        **_UNREACHABLE,
        "429-retry-after": (Outcome.RATE_LIMITED, "is rate-limiting us"),
        "429-no-retry-after": (Outcome.RATE_LIMITED, "is rate-limiting us"),
        "500": (Outcome.PROVIDER_ERROR, "had a server error"),
        "502": (Outcome.PROVIDER_ERROR, "had a server error"),
        "503": (Outcome.PROVIDER_ERROR, "had a server error"),
        "200-not-json": (Outcome.PROVIDER_ERROR, "unexpected answer"),
        "404-html-error-page": (Outcome.PROVIDER_ERROR, "unexpected answer (HTTP 404)"),
        "200-shape-empty-object": (Outcome.PROVIDER_ERROR, "unexpected answer"),
        "200-shape-empty-list": (Outcome.PROVIDER_ERROR, "unexpected answer"),
        "200-shape-data-string": (Outcome.PROVIDER_ERROR, "unexpected answer"),
    },
    {},
) + _cases(
    "snowflake",
    {
        **_UNREACHABLE,
        "429-retry-after": (Outcome.RATE_LIMITED, "Snowflake is rate-limiting us"),
        "429-no-retry-after": (Outcome.RATE_LIMITED, "Snowflake is rate-limiting us"),
        "500": (Outcome.PROVIDER_ERROR, "Snowflake had a server error"),
        "502": (Outcome.PROVIDER_ERROR, "Snowflake had a server error"),
        "503": (Outcome.PROVIDER_ERROR, "Snowflake had a server error"),
        "200-not-json": (Outcome.PROVIDER_ERROR, "unexpected answer (HTTP 200)"),
        "404-html-error-page": (Outcome.INVALID_INPUT, f"doesn't know the account {ACCOUNT}"),
        "200-shape-empty-object": (Outcome.PROVIDER_ERROR, "unexpected answer (HTTP 200)"),
        "200-shape-empty-list": (Outcome.PROVIDER_ERROR, "unexpected answer (HTTP 200)"),
        "200-shape-data-string": (Outcome.PROVIDER_ERROR, "unexpected answer (HTTP 200)"),
        "200-shape-empty-result-set": (Outcome.PROVIDER_ERROR, "unexpected answer (HTTP 200)"),
    },
    {},
)


@dataclass
class Listener:
    port: int
    connections: int = 0


@contextlib.asynccontextmanager
async def silent_server(tls: ssl.SSLContext | None = None) -> AsyncIterator[Listener]:
    """A loopback server that accepts connections and never answers (over TLS when given a
    context); each handler ends when its client gives up and closes."""
    listener = Listener(0)

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        listener.connections += 1
        try:
            await reader.read()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()

    server = await asyncio.start_server(hold, "127.0.0.1", 0, ssl=tls)
    listener.port = int(server.sockets[0].getsockname()[1])
    try:
        yield listener
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    """A server TLS context whose certificate (for 127.0.0.1) no CA issued."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .sign(key, hashes.SHA256())
    )
    directory: Path = tmp_path_factory.mktemp("self-signed")
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context


def answering(fault: HttpFault, secrets: list[str], seen: list[httpx.Request]) -> httpx.MockTransport:
    body = fault.body.encode() if isinstance(fault.body, str) else fault.body
    body = body.replace(ECHO.encode(), ":".join(secrets).encode())
    headers = dict(fault.headers)
    if fault.content_type:
        headers["Content-Type"] = fault.content_type

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(fault.status, headers=headers, content=body)

    return httpx.MockTransport(handler)


TEMPORARY_DNS_FAILURE = "[Errno -3] Temporary failure in name resolution"


def failing(message: str) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(message, request=request)

    return httpx.MockTransport(handler)


@dataclass(frozen=True)
class HttpSubject:
    """A provider under test, built for a base URL, with a working credential's form values."""

    build: Callable[[str, Sleeps], Provider]
    values: Callable[[], dict[str, str | Secret]]


def _confluent(url: str, sleeps: Sleeps) -> Provider:
    return ConfluentCloud(url, retry=RetryPolicy(rng=lambda: 0.5), sleep=sleeps)


def _snowflake(url: str, sleeps: Sleeps) -> Provider:
    # The request timeout is Snowflake's own (each request's is capped by it), not the client's.
    return Snowflake(
        url,
        retry=SnowflakeRetryPolicy(rng=lambda: 0.5),
        sleep=sleeps,
        request_timeout=httpx.Timeout(TIMEOUT),
    )


HTTP_SUBJECTS = {
    "confluent_cloud": HttpSubject(_confluent, lambda: confluent_form(new_api_key(), new_api_secret())),
    "snowflake": HttpSubject(_snowflake, lambda: snowflake_form(token=new_token())),
}


@contextlib.asynccontextmanager
async def faulty_http(
    fault: HttpFault, secrets: list[str], self_signed: ssl.SSLContext, seen: list[httpx.Request]
) -> AsyncIterator[tuple[str, httpx.AsyncClient]]:
    """A base URL and a client through which every request meets ``fault``."""
    if fault.network == "dns-temporary":
        # What httpx raises when the resolver can't be asked (no network, no DNS server).
        async with httpx.AsyncClient(transport=failing(TEMPORARY_DNS_FAILURE)) as http:
            yield "https://api.faults.test", http
        return
    if fault.network is None:
        async with httpx.AsyncClient(transport=answering(fault, secrets, seen)) as http:
            yield "https://api.faults.test", http
        return
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        if fault.network == "refused":
            yield f"http://127.0.0.1:{closed_port()}", http
        elif fault.network == "dns":
            yield "https://api.faults.invalid", http  # .invalid never resolves (RFC 6761)
        else:
            tls = self_signed if fault.network == "tls" else None
            async with silent_server(tls) as listener:
                yield f"{'https' if tls else 'http'}://127.0.0.1:{listener.port}", http
            if tls is None:
                assert listener.connections >= 1, "the hanging server was reached"


@pytest.mark.parametrize("case", [case.param() for case in HTTP_CASES])
async def test_http_provider_survives_fault(
    case: HttpCase, self_signed: ssl.SSLContext, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fault, subject, sleeps = HTTP_FAULTS[case.fault], HTTP_SUBJECTS[case.provider], Sleeps()
    seen: list[httpx.Request] = []
    raw = subject.values()
    secrets = [value.reveal() for value in raw.values() if isinstance(value, Secret) and value]
    async with faulty_http(fault, secrets, self_signed, seen) as (url, http):
        provider = subject.build(url, sleeps)
        values = provider.clean(raw)
        assert provider.validate(values) == {}
        verification = await provider.verify(values, http)
    assert_promises(verification, provider, case.outcome, case.in_summary, secrets, caplog)
    if fault.network is None:
        assert seen, "the fault was served"
    if fault.name == "429-retry-after":
        assert verification.retry_after == 7.0
        assert 7.0 in sleeps


# --- Redshift faults -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RedshiftFault:
    """A way to build a Redshift provider that meets one failure."""

    name: str
    outcome: Outcome
    in_summary: str
    needs_server: bool = False
    bug: str | None = None

    def param(self) -> Any:
        marks = [pytest.mark.xfail(strict=True, reason=self.bug)] if self.bug else []
        return pytest.param(self, id=f"redshift-{self.name}", marks=marks)


FAULTS_LIMITED = "faults_limited"
FAULTS_LIMITED_PASSWORD = "lim-" + PASSWORD


@pytest.fixture(scope="module")
def limited_role(private_postgres: PrivatePostgres) -> PrivatePostgres:
    """A role with CONNECTION LIMIT 1 (named apart from test_redshift's, which share the server)."""
    private_postgres.create_role(FAULTS_LIMITED, FAULTS_LIMITED_PASSWORD, connection_limit=1)
    return private_postgres


def _session_fault(session: FakeSession) -> Callable[[], Redshift]:
    return lambda: Redshift(
        connector=FakeRedshift(session=session), policy=Policy(resolve=FakeResolver()), sleep=Sleeps()
    )


REDSHIFT_FAULTS = (
    RedshiftFault("connection-refused", Outcome.UNREACHABLE, f"{ENDPOINT}:5439 refused the connection"),
    RedshiftFault("dns-unknown-name", Outcome.INVALID_INPUT, f"The host {ENDPOINT} does not exist"),
    RedshiftFault("dns-temporary-failure", Outcome.UNREACHABLE, "temporary DNS failure"),
    RedshiftFault("dns-real-unknown-name", Outcome.INVALID_INPUT, "does not exist"),
    RedshiftFault("tls-verify-full-without-tls", Outcome.UNREACHABLE, "it doesn't offer TLS", True),
    RedshiftFault("hang-past-connect-budget", Outcome.UNREACHABLE, "didn't answer in time"),
    RedshiftFault("too-many-connections", Outcome.RATE_LIMITED, "no connection to spare", True),
    RedshiftFault("server-error-mid-probe", Outcome.PROVIDER_ERROR, "but a check failed"),
    RedshiftFault("shape-no-row", Outcome.PROVIDER_ERROR, "but a check failed"),
    RedshiftFault("shape-short-row", Outcome.PROVIDER_ERROR, "but a check failed"),
    RedshiftFault("shape-wrong-types", Outcome.PROVIDER_ERROR, "but a check failed"),
)


@contextlib.contextmanager
def redshift_fault(
    fault: RedshiftFault, server: PrivatePostgres | None
) -> Iterator[tuple[Redshift, dict[str, str | Secret]]]:
    """The provider that meets ``fault``, and the form it verifies."""
    values = redshift_form()
    sleeps = Sleeps()
    name = fault.name
    if name == "connection-refused":
        yield Redshift(connect_to=("127.0.0.1", closed_port()), sleep=sleeps), values
    elif name == "dns-unknown-name":
        error = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        yield (
            Redshift(
                connector=FakeRedshift(), policy=Policy(resolve=FakeResolver(error=error)), sleep=sleeps
            ),
            values,
        )
    elif name == "dns-temporary-failure":
        error = socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        yield (
            Redshift(
                connector=FakeRedshift(), policy=Policy(resolve=FakeResolver(error=error)), sleep=sleeps
            ),
            values,
        )
    elif name == "dns-real-unknown-name":
        # The system resolver, asked for a name that never resolves (RFC 6761).
        yield Redshift(connector=FakeRedshift(), sleep=sleeps), redshift_form("warehouse.faults.invalid")
    elif name == "tls-verify-full-without-tls":
        assert server is not None
        yield Redshift(connect_to=("127.0.0.1", server.port), sleep=sleeps), values
    elif name == "hang-past-connect-budget":
        yield (
            Redshift(
                connector=FakeRedshift(hang=True),
                policy=Policy(resolve=FakeResolver()),
                sleep=sleeps,
                connect_budget=TIMEOUT,
            ),
            values,
        )
    elif name == "too-many-connections":
        assert server is not None
        provider = Redshift(sslmode="disable", connect_to=("127.0.0.1", server.port), sleep=sleeps)
        values = redshift_form(user=FAULTS_LIMITED, password=FAULTS_LIMITED_PASSWORD, database="postgres")
        with server.connect(FAULTS_LIMITED, FAULTS_LIMITED_PASSWORD):
            yield provider, values
    elif name == "server-error-mid-probe":
        failure = psycopg.errors.InternalError_(f"XX000: node 3 failed while checking {PASSWORD}")
        session = FakeSession(fail_on="has_database_privilege", error=failure)
        yield _session_fault(session)(), values
    elif name == "shape-no-row":
        yield _session_fault(FakeSession(identity=None))(), values  # type: ignore[arg-type]
    elif name == "shape-short-row":
        yield _session_fault(FakeSession(identity=("alice",)))(), values
    elif name == "shape-wrong-types":
        yield _session_fault(FakeSession(identity=(None, None, None), temp=None))(), values
    else:
        raise AssertionError(f"no Redshift fault called {name}")


@pytest.mark.parametrize("fault", [fault.param() for fault in REDSHIFT_FAULTS])
async def test_redshift_survives_fault(
    fault: RedshiftFault, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    server: PrivatePostgres | None = request.getfixturevalue("limited_role") if fault.needs_server else None
    caplog.set_level(logging.DEBUG)
    with redshift_fault(fault, server) as (provider, raw):
        values = provider.clean(raw)
        assert provider.validate(values) == {}
        async with httpx.AsyncClient() as http:  # the probe ignores it
            verification = await provider.verify(values, http)
    secrets = [value.reveal() for value in raw.values() if isinstance(value, Secret) and value]
    assert_promises(verification, provider, fault.outcome, fault.in_summary, secrets, caplog)
