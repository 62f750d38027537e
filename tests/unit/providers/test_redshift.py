"""The Amazon Redshift provider: against a private PostgreSQL as Redshift's stand-in (password
authentication, privileges, connection limits, TLS refused), and against fakes for what only
Redshift does (its version text, CHAR answers, the UNICODE encoding, its error texts)."""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import certifi
import httpx
import psycopg
import pytest
from psycopg import _encodings, sql

from bot.outbound import Policy
from bot.providers import _redshift_errors as errs
from bot.providers._redshift_endpoint import EndpointKind, classify, endpoint_problem, split_pasted
from bot.providers.base import Check, Outcome, Verification
from bot.providers.redshift import (
    ConnectParams,
    PsycopgSession,
    Redshift,
    default_rootcert,
    install_unicode_alias,
    psycopg_connect,
    schema_identifier,
    server_product,
)
from bot.redaction import Secret
from bot.settings import ConfigError
from tests.fakes.dns import PUBLIC_IP, FakeResolver
from tests.support.block_text import as_read, hint_problems
from tests.support.private_postgres import (  # noqa: F401  (the fixture private_postgres is found by name)
    PrivatePostgres,
    private_postgres_server,
)
from tests.unit.providers.contract import ProviderContract, Scenario

ENDPOINT = "examplecluster.abc123xyz789.us-west-2.redshift.amazonaws.com"
SERVERLESS = "default.123456789012.us-east-1.redshift-serverless.amazonaws.com"
REDSHIFT_VERSION = (
    "PostgreSQL 8.0.2 on i686-pc-linux-gnu, compiled by GCC gcc (GCC) 3.4.2 20041017 "
    "(Red Hat 3.4.2-6.fc3), Redshift 1.0.54321"
)
PASSWORD = "Sup3r-Secret-Pa55word!"
WHERE = f'connection failed: connection to server at "{ENDPOINT}" (10.0.0.7), port 5439 failed: '


def form(
    endpoint: str = ENDPOINT,
    *,
    port: str = "",
    database: str = "dev",
    user: str = "alice",
    password: str = PASSWORD,
    schema: str = "",
) -> dict[str, str | Secret]:
    return {
        "endpoint": endpoint,
        "port": port,
        "database": database,
        "user": user,
        "password": Secret(password),
        "schema": schema,
    }


def closed_port() -> int:
    """A loopback port that was just bound and closed, so connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Sleeps(list[float]):
    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


@dataclass
class FakeSession:
    """Answers the probe's statements as Redshift would (CHAR 't'/'f', its version text)."""

    identity: tuple[Any, ...] = ("alice", "dev", REDSHIFT_VERSION)
    temp: Any = "t"
    usage: Any = "t"
    fail_on: str | None = None
    error: Exception | None = None
    statements: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    closed: bool = False

    async def execute(self, query: str) -> None:
        self._record(query, ())

    async def fetch_one(self, query: str, params: tuple[str, ...] = ()) -> tuple[Any, ...] | None:
        self._record(query, params)
        if "version()" in query:
            return self.identity
        if "has_database_privilege" in query:
            return (self.temp,)
        if "has_schema_privilege" in query:
            return (self.usage,)
        raise AssertionError(f"unexpected statement {query!r}")

    async def close(self) -> None:
        self.closed = True

    def _record(self, query: str, params: tuple[str, ...]) -> None:
        self.statements.append((query, params))
        if self.fail_on and self.fail_on in query and self.error is not None:
            raise self.error


@dataclass
class FakeRedshift:
    """A connector: refuses with the given error texts, one per attempt, then connects."""

    refusals: list[str | BaseException] = field(default_factory=list)
    session: FakeSession = field(default_factory=FakeSession)
    hang: bool = False
    attempts: list[ConnectParams] = field(default_factory=list)

    async def __call__(self, params: ConnectParams) -> FakeSession:
        self.attempts.append(params)
        if self.hang:
            await asyncio.Event().wait()
        if self.refusals:
            refusal = self.refusals.pop(0)
            raise psycopg.OperationalError(refusal) if isinstance(refusal, str) else refusal
        return self.session


def faked(
    fake: FakeRedshift,
    resolve: FakeResolver | None = None,
    *,
    allow_private: bool = False,
    resolve_budget: float = 3.0,
    **kwargs: Any,
) -> Redshift:
    policy = Policy(
        allow_private=allow_private, resolve=resolve or FakeResolver(), resolve_budget=resolve_budget
    )
    kwargs.setdefault("sleep", Sleeps())
    return Redshift(connector=fake, policy=policy, **kwargs)


async def verify(provider: Redshift, values: dict[str, str | Secret]) -> Verification:
    cleaned = provider.clean(values)
    assert provider.validate(cleaned) == {}
    async with httpx.AsyncClient() as http:  # the probe ignores it
        return await provider.verify(cleaned, http)


def hints_text(verification: Verification) -> str:
    return "\n".join(verification.hints)


def check(verification: Verification, name_part: str) -> Check:
    found = [c for c in verification.checks if name_part in c.name]
    assert len(found) == 1, f"one check named like {name_part!r} in {verification.checks}"
    return found[0]


# --- the private PostgreSQL, set up as a small warehouse -------------------------------------------


@dataclass(frozen=True)
class World:
    server: PrivatePostgres
    passwords: dict[str, str]

    def provider(self, **env: str) -> Redshift:
        """Built from environment variables, as the bot builds it; TLS relaxed only when asked."""
        provider = Redshift.from_environment({"REDSHIFT_CONNECT_TO": f"127.0.0.1:{self.server.port}", **env})
        provider.retry_delay = 0.0
        return provider

    def relaxed(self) -> Redshift:
        return self.provider(REDSHIFT_SSLMODE="disable")

    @contextmanager
    def holding(self, user: str) -> Iterator[None]:
        """Keep one session of ``user`` open, using up a CONNECTION LIMIT 1."""
        with self.server.connect(user, self.passwords[user], "rs_dev"):
            yield


@pytest.fixture(scope="module")
def world(private_postgres: PrivatePostgres) -> World:
    server = private_postgres
    passwords = {
        "rs_alice": "alice-" + PASSWORD,
        "rs_bob": "bob-" + PASSWORD,
        "rs_limited": "lim-" + PASSWORD,
    }
    server.create_role("rs_alice", passwords["rs_alice"])
    server.create_role("rs_bob", passwords["rs_bob"])
    server.create_role("rs_limited", passwords["rs_limited"], connection_limit=1)
    for name in ("rs_dev", "rs_locked", "rs_paused", "rs_notemp"):
        server.create_database(name)
    server.execute(sql.SQL("CREATE SCHEMA analytics"), dbname="rs_dev")
    server.execute(sql.SQL('CREATE SCHEMA "Sales"'), dbname="rs_dev")
    server.execute(sql.SQL("GRANT USAGE ON SCHEMA analytics TO rs_alice"), dbname="rs_dev")
    server.execute(sql.SQL("REVOKE CONNECT ON DATABASE rs_locked FROM PUBLIC"))
    server.execute(sql.SQL("REVOKE TEMP ON DATABASE rs_notemp FROM PUBLIC"))
    server.execute(sql.SQL("ALTER DATABASE rs_paused ALLOW_CONNECTIONS false"))
    return World(server, passwords)


def as_user(world: World, user: str, database: str = "rs_dev", **kwargs: str) -> dict[str, str | Secret]:
    return form(
        user=user, password=world.passwords.get(user, "nobody-" + PASSWORD), database=database, **kwargs
    )


# --- the shared contract, twice: on fakes, and on the private PostgreSQL ----------------------------------


_FAKE_REFUSALS: dict[Outcome, list[str | BaseException]] = {
    Outcome.UNAUTHORIZED: [WHERE + 'FATAL:  password authentication failed for user "alice"'],
    Outcome.FORBIDDEN: [
        WHERE + 'FATAL:  permission denied for database "dev"\nDETAIL:  User does not have CONNECT privilege.'
    ],
    Outcome.INVALID_INPUT: [WHERE + 'FATAL:  database "dev" does not exist'],
    Outcome.UNREACHABLE: [psycopg.errors.ConnectionTimeout("connection timeout expired")],
    Outcome.RATE_LIMITED: [WHERE + "FATAL:  connection limit exceeded for non-superusers"],
    Outcome.PROVIDER_ERROR: [WHERE + "FATAL:  the database system is shutting down"] * 2,
}


class TestRedshiftContract(ProviderContract):
    def provider(self) -> Redshift:
        return faked(FakeRedshift())

    def valid_values(self) -> dict[str, str | Secret]:
        return form(f" jdbc:redshift://{ENDPOINT}:5439/dev?ssl=true ", database="", schema="analytics")

    @asynccontextmanager
    async def scenario(self, outcome: Outcome) -> AsyncIterator[Scenario]:
        fake = FakeRedshift(refusals=list(_FAKE_REFUSALS.get(outcome, [])))
        provider = faked(fake)
        async with httpx.AsyncClient() as http:
            yield Scenario(provider, http, provider.clean(form(schema="analytics")))


class TestRedshiftContractOnPostgres(ProviderContract):
    @pytest.fixture(autouse=True)
    def _keep_request(self, request: pytest.FixtureRequest) -> None:
        self.request = request

    def provider(self) -> Redshift:
        return Redshift(sslmode="disable", connect_to=("127.0.0.1", 5432))

    def valid_values(self) -> dict[str, str | Secret]:
        return form()

    @asynccontextmanager
    async def scenario(self, outcome: Outcome) -> AsyncIterator[Scenario]:
        world: World = self.request.getfixturevalue("world")
        provider = world.relaxed()
        values = as_user(world, "rs_alice", schema="analytics")
        if outcome is Outcome.UNAUTHORIZED:
            values["password"] = Secret("wrong-" + PASSWORD)
        elif outcome is Outcome.FORBIDDEN:
            values = as_user(world, "rs_alice", "rs_locked")
        elif outcome is Outcome.INVALID_INPUT:
            values = as_user(world, "rs_alice", "rs_nope")
        elif outcome is Outcome.UNREACHABLE:
            provider = Redshift.from_environment(
                {"REDSHIFT_SSLMODE": "disable", "REDSHIFT_CONNECT_TO": f"127.0.0.1:{closed_port()}"}
            )
        elif outcome is Outcome.PROVIDER_ERROR:
            values = as_user(world, "rs_alice", "rs_paused")
        elif outcome is Outcome.RATE_LIMITED:
            values = as_user(world, "rs_limited")
        with world.holding("rs_limited") if outcome is Outcome.RATE_LIMITED else nullcontext():
            async with httpx.AsyncClient() as http:
                yield Scenario(provider, http, provider.clean(values))


# --- declaration and form ---------------------------------------------------------------------------------


def test_declaration() -> None:
    provider = Redshift()
    # The modal is "Create Redshift"; the card's description names Amazon Redshift.
    assert (provider.key, provider.title) == ("redshift", "Redshift")
    assert provider.description.startswith("Amazon Redshift ")
    assert [f.name for f in provider.fields] == ["endpoint", "port", "database", "user", "password", "schema"]
    assert provider.secret_fields == ("password",)
    assert {f.name for f in provider.fields if f.optional} == {"port", "schema"}
    assert provider.hint_field is None


def test_unreachable_hints_name_public_access_the_security_group_and_pausing() -> None:
    text = "\n".join(Redshift.unreachable_hints)
    assert "publicly accessible" in text
    assert "inbound rule for TCP 5439" in text and "security group" in text
    assert "paused" in text


@pytest.mark.parametrize(
    ("pasted", "host", "port", "database"),
    [
        (f"jdbc:redshift://{ENDPOINT}:5439/dev", ENDPOINT, "5439", "dev"),
        (
            f"JDBC:Redshift://{ENDPOINT.upper()}:5440/Sales_DB?ssl=true&tcpKeepAlive=true",
            ENDPOINT,
            "5440",
            "Sales_DB",
        ),
        (f"redshift://{ENDPOINT}/dev", ENDPOINT, "", "dev"),
        (f"postgresql://{SERVERLESS}:5439/dev", SERVERLESS, "5439", "dev"),
        (f"{ENDPOINT}:5439/dev", ENDPOINT, "5439", "dev"),  # the console's "Endpoint" as copied
        (f"{ENDPOINT}.", ENDPOINT, "", ""),
        (ENDPOINT, ENDPOINT, "", ""),
        (f"postgresql://admin:Pa#ss1@{ENDPOINT}/dev", ENDPOINT, "", "dev"),
        (f"redshift://admin:pa/ss@{ENDPOINT}/dev", ENDPOINT, "", "dev"),
        (f"redshift://admin:12/34@{ENDPOINT}:5440/dev", ENDPOINT, "5440", "dev"),
        (f"postgresql://admin:p@ss?w=rd@{ENDPOINT}:5439/dev", ENDPOINT, "5439", "dev"),
        (f"jdbc:redshift://{ENDPOINT}:5439/dev?user=admin&password=Se@cret", ENDPOINT, "5439", "dev"),
        ("postgresql://admin:Pa#ss1@", "", "", ""),
    ],
)
def test_pasted_urls_are_taken_apart(pasted: str, host: str, port: str, database: str) -> None:
    found = split_pasted(pasted)
    assert (found.host, found.port, found.database) == (host, port, database)


def test_clean_fills_empty_fields_from_a_url_and_keeps_what_was_typed() -> None:
    provider = Redshift()
    from_url = provider.clean(form(f"jdbc:redshift://{ENDPOINT}:5441/warehouse", database="", user=""))
    assert (from_url["endpoint"], from_url["port"], from_url["database"]) == (ENDPOINT, "5441", "warehouse")
    assert from_url["user"] == ""
    typed = provider.clean(form(f"jdbc:redshift://{ENDPOINT}:5441/warehouse", port="5439", database="dev"))
    assert (typed["port"], typed["database"]) == ("5439", "dev")


def test_a_password_in_a_pasted_url_is_dropped() -> None:
    provider = Redshift()
    cleaned = provider.clean(form(f"postgresql://bob:{PASSWORD}@{ENDPOINT}:5439/dev", user=""))
    assert cleaned["endpoint"] == ENDPOINT and cleaned["user"] == ""
    plain = [value for value in cleaned.values() if isinstance(value, str)]
    assert not any(PASSWORD in value for value in plain)
    assert PASSWORD not in repr(provider.config_of(cleaned))


@pytest.mark.parametrize(
    "pasted",
    [
        "postgresql://admin:Pa#ss1@{host}/dev",
        "redshift://admin:pa/ss@{host}/dev",
        "redshift://admin:Pa;ss:5439@{host}/dev",
        "jdbc:redshift://admin:Pa?ss=1@{host}:5439/dev",
        "postgresql://admin:Pa#ss1@broken",
    ],
)
def test_no_part_of_the_userinfo_lands_in_a_plain_field(pasted: str) -> None:
    provider = Redshift()
    cleaned = provider.clean(form(pasted.format(host=ENDPOINT), port="", database="", user=""))
    plain = " ".join(str(cleaned[name]) for name in ("endpoint", "port", "database", "user"))
    for part in ("admin", "Pa", "pa", "ss"):
        assert part not in plain.replace(ENDPOINT, ""), (part, plain)


@pytest.mark.parametrize(
    ("host", "kind", "described"),
    [
        (ENDPOINT, EndpointKind.PROVISIONED, "provisioned cluster examplecluster in us-west-2"),
        (
            "my-cluster.cxyz9876.eu-central-1.redshift-dev.amazonaws.com",
            EndpointKind.PROVISIONED,
            "my-cluster",
        ),
        (SERVERLESS, EndpointKind.SERVERLESS, "Serverless workgroup default in us-east-1"),
        ("warehouse.example.com", EndpointKind.CUSTOM, "custom domain warehouse.example.com"),
    ],
)
def test_endpoints_are_classified(host: str, kind: EndpointKind, described: str) -> None:
    endpoint = classify(host)
    assert endpoint.kind is kind
    assert described in endpoint.describe()


def problems(**fields: str) -> dict[str, str]:
    provider = Redshift()
    return provider.validate(provider.clean(form(**fields)))


@pytest.mark.parametrize(
    ("endpoint", "says"),
    [
        ("10.0.3.17", "not an IP address or localhost"),
        ("[::1]:5439", "not an IP address or localhost"),
        ("localhost", "not an IP address or localhost"),
        ("examplecluster", "cluster or workgroup name on its own"),
        ("examplecluster.us-west-2.redshift.amazonaws.com", "isn't a Redshift endpoint"),
        ("default.12345.us-east-1.redshift-serverless.amazonaws.com", "isn't a Redshift endpoint"),
        ("my_cluster.abc.us-west-2.redshift.amazonaws.com", "isn't a host name"),
        (f"jdbc:redshift:iam://{ENDPOINT}:5439/dev", "IAM URLs"),
        (f"https://{ENDPOINT}", "jdbc:redshift://"),
        ("127.1", "not an IP address or localhost"),
        ("0x7f.1", "not an IP address or localhost"),
        ("0177.0.0.1", "not an IP address or localhost"),
        ("2130706433", "not an IP address or localhost"),
        ("metadata.google.internal", "only resolves inside a private network"),
        ("redis.default.svc.cluster.local", "only resolves inside a private network"),
        ("db.localhost", "only resolves inside a private network"),
    ],
)
def test_endpoint_problems(endpoint: str, says: str) -> None:
    found = problems(endpoint=endpoint)
    assert set(found) == {"endpoint"}
    assert says in found["endpoint"]


@pytest.mark.parametrize(
    ("endpoint", "port", "ok"),
    [
        (ENDPOINT, "", True),
        (ENDPOINT, "1", True),
        (ENDPOINT, "65535", True),
        (ENDPOINT, "0", False),
        (ENDPOINT, "65536", False),
        (ENDPOINT, "54three9", False),
        (ENDPOINT, "-5439", False),
        (SERVERLESS, "5439", True),
        (SERVERLESS, "5455", True),
        (SERVERLESS, "8191", True),
        (SERVERLESS, "5500", False),
    ],
)
def test_port_range(endpoint: str, port: str, ok: bool) -> None:
    found = problems(endpoint=endpoint, port=port)
    assert ("port" not in found) is ok
    if endpoint == SERVERLESS and not ok:
        assert "5431–5455 or 8191–8215" in found["port"]


def test_required_fields_are_named() -> None:
    found = problems(endpoint="", database="", user="", password="")
    assert set(found) == {"endpoint", "database", "user", "password"}
    assert "usually dev" in found["database"]


def test_the_credential_hint_is_the_user_at_the_cluster() -> None:
    provider = Redshift()
    assert provider.credential_hint(provider.clean(form())) == "alice@examplecluster"
    assert provider.credential_hint(provider.clean(form(SERVERLESS, user="IAM:ops"))) == "IAM:ops@default"
    long_user = "u" * 80
    hint = provider.credential_hint(provider.clean(form(user=long_user)))
    assert hint is not None and len(hint) == 64 and hint.endswith("…")
    assert provider.credential_hint(provider.clean(form(user=""))) is None
    assert PASSWORD not in (provider.credential_hint(provider.clean(form())) or "")


# --- settings ----------------------------------------------------------------------------------------------


def test_from_environment_defaults_to_full_verification_against_the_certifi_roots() -> None:
    provider = Redshift.from_environment({})
    params = provider.connect_params(provider.clean(form()))
    assert (params.sslmode, params.sslrootcert) == ("verify-full", certifi.where())
    assert params.sslrootcert is not None and Path(params.sslrootcert).is_file()
    context = ssl.create_default_context(cafile=params.sslrootcert)
    assert context.cert_store_stats()["x509_ca"] > 0
    assert Redshift().sslrootcert == default_rootcert() == certifi.where()
    assert (params.host, params.port, params.hostaddr) == (ENDPOINT, 5439, None)
    assert (params.dbname, params.user, params.connect_timeout) == ("dev", "alice", 10)
    assert params.password.reveal() == PASSWORD and PASSWORD not in repr(params)


def test_connect_to_an_address_keeps_the_endpoint_name_for_tls() -> None:
    provider = Redshift.from_environment({"REDSHIFT_CONNECT_TO": "127.0.0.1:15439"})
    params = provider.connect_params(provider.clean(form(port="5440")))
    assert (params.host, params.hostaddr, params.port) == (ENDPOINT, "127.0.0.1", 15439)
    by_name = Redshift.from_environment({"REDSHIFT_CONNECT_TO": "tunnel.internal:6000"})
    params = by_name.connect_params(by_name.clean(form()))
    assert (params.host, params.hostaddr, params.port) == ("tunnel.internal", None, 6000)


def test_weak_tls_is_only_set_explicitly_and_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    assert Redshift.from_environment({}).sslmode == "verify-full"
    assert caplog.records == []
    relaxed = Redshift.from_environment({"REDSHIFT_SSLMODE": "disable"})
    assert relaxed.sslmode == "disable"
    assert relaxed.connect_params(relaxed.clean(form())).sslrootcert is None
    assert "sslmode=disable" in caplog.text and "tests only" in caplog.text
    assert "passwords and data may travel unencrypted" in caplog.text


@pytest.mark.parametrize("sslmode", ["require", "verify-ca"])
def test_unauthenticated_tls_is_warned_about(caplog: pytest.LogCaptureFixture, sslmode: str) -> None:
    caplog.set_level(logging.WARNING)
    provider = Redshift.from_environment({"REDSHIFT_SSLMODE": sslmode})
    assert provider.sslmode == sslmode
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert f"sslmode={sslmode}" in record.getMessage()
    assert "not authenticated" in record.getMessage() and "passwords and data" in record.getMessage()


def test_require_does_not_verify_against_the_default_roots() -> None:
    provider = Redshift.from_environment({"REDSHIFT_SSLMODE": "require"})
    assert provider.connect_params(provider.clean(form())).sslrootcert is None


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"REDSHIFT_SSLMODE": "prefer"}, "REDSHIFT_SSLMODE"),
        ({"REDSHIFT_SSLMODE": "verify-ca", "REDSHIFT_SSLROOTCERT": "system"}, "REDSHIFT_SSLROOTCERT"),
        ({"REDSHIFT_SSLROOTCERT": "/nonexistent/amazon-trust-ca-bundle.crt"}, "REDSHIFT_SSLROOTCERT"),
        ({"REDSHIFT_ALLOW_PRIVATE_ADDRESSES": "maybe"}, "REDSHIFT_ALLOW_PRIVATE_ADDRESSES"),
        ({"REDSHIFT_CONNECT_TO": "127.0.0.1"}, "REDSHIFT_CONNECT_TO"),
        ({"REDSHIFT_CONNECT_TO": "127.0.0.1:99999"}, "REDSHIFT_CONNECT_TO"),
        ({"REDSHIFT_CONNECT_TO": "db:²"}, "REDSHIFT_CONNECT_TO"),
        ({"REDSHIFT_CONNECT_TO": "bad host:5439"}, "REDSHIFT_CONNECT_TO"),
    ],
)
def test_malformed_settings_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        Redshift.from_environment(env)


def test_a_ca_bundle_file_can_be_trusted_instead(tmp_path: Path) -> None:
    bundle = tmp_path / "amazon-trust-ca-bundle.crt"
    shutil.copyfile(certifi.where(), bundle)
    provider = Redshift.from_environment(
        {"REDSHIFT_SSLMODE": "verify-ca", "REDSHIFT_SSLROOTCERT": str(bundle)}
    )
    assert provider.connect_params(provider.clean(form())).sslrootcert == str(bundle)
    system = Redshift.from_environment({"REDSHIFT_SSLROOTCERT": "system"})
    assert system.connect_params(system.clean(form())).sslrootcert == "system"


@pytest.mark.parametrize("content", ["", "-----BEGIN CERTIFICATE-----\n", "not a certificate\n"])
def test_a_ca_bundle_without_a_certificate_is_refused_at_start(tmp_path: Path, content: str) -> None:
    bundle = tmp_path / "empty.pem"
    bundle.write_text(content)
    with pytest.raises(ConfigError, match="REDSHIFT_SSLROOTCERT"):
        Redshift.from_environment({"REDSHIFT_SSLROOTCERT": str(bundle)})


# --- psycopg shims -----------------------------------------------------------------------------------------


def test_the_unicode_alias_lets_psycopg_decode_redshift_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(_encodings.py_codecs, b"UNICODE", raising=False)
    _encodings.pg2pyenc.cache_clear()
    with pytest.raises(psycopg.NotSupportedError, match="UNICODE"):
        _encodings.pg2pyenc(b"UNICODE")
    install_unicode_alias()
    install_unicode_alias()  # idempotent
    assert _encodings.pg2pyenc(b"UNICODE") == "utf-8"
    assert _encodings.pg2pyenc(b"UTF8") == "utf-8"
    _encodings.pg2pyenc.cache_clear()


def test_the_alias_never_overrides_an_existing_entry() -> None:
    table = {b"UNICODE": "utf-16"}
    install_unicode_alias(table)
    assert table == {b"UNICODE": "utf-16"}
    empty: dict[bytes, str] = {}
    install_unicode_alias(empty)
    assert empty == {b"UNICODE": "utf-8"}


async def test_psycopg_is_asked_for_autocommit_no_prepares_and_the_password_as_a_keyword(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: dict[str, Any] = {}

    async def connect(*args: Any, **kwargs: Any) -> object:
        seen["args"], seen["kwargs"] = args, kwargs
        return object()

    monkeypatch.setattr(psycopg.AsyncConnection, "connect", connect)
    provider = Redshift()
    session = await psycopg_connect(provider.connect_params(provider.clean(form())))
    assert isinstance(session, PsycopgSession)
    kwargs = seen["kwargs"]
    assert seen["args"] == ()  # no DSN string that could carry the password into a message
    assert kwargs["password"] == PASSWORD
    assert kwargs["autocommit"] is True and kwargs["prepare_threshold"] is None
    assert (kwargs["sslmode"], kwargs["sslrootcert"], kwargs["connect_timeout"]) == (
        "verify-full",
        certifi.where(),
        10,
    )
    assert (kwargs["host"], kwargs["port"], kwargs["dbname"], kwargs["user"]) == (
        ENDPOINT,
        5439,
        "dev",
        "alice",
    )
    assert b"UNICODE" in _encodings.py_codecs


# --- Redshift's answers, through fakes ----------------------------------------------------------------------


async def test_redshift_answers_in_char_and_names_itself_in_version() -> None:
    fake = FakeRedshift()
    verification = await verify(faked(fake), form(schema="analytics"))
    assert verification.outcome is Outcome.OK
    assert verification.summary == "Amazon Redshift 1.0.54321 accepted alice on database dev."
    identity = check(verification, "Signed in as alice to dev")
    assert identity.passed
    assert identity.detail == "Amazon Redshift 1.0.54321; provisioned cluster examplecluster in us-west-2"
    assert check(verification, "TEMP on database dev").passed
    assert check(verification, "USAGE on schema analytics").passed
    assert verification.hints == ()
    assert fake.session.closed


async def test_each_probe_is_its_own_statement_and_the_schema_is_a_parameter() -> None:
    fake = FakeRedshift()
    await verify(faked(fake), form(schema="analytics'); drop table x; --"))
    assert fake.session.statements == [
        ("SET statement_timeout TO 10000", ()),
        ("SELECT current_user, current_database(), version()", ()),
        ("SELECT has_database_privilege(current_database(), 'TEMP')", ()),
        ("SELECT has_schema_privilege(%s, 'USAGE')", ("analytics'); drop table x; --",)),
    ]


@pytest.mark.parametrize(
    ("answer", "passed"),
    [("t", True), ("true", True), (True, True), ("f", False), (False, False), (None, False)],
)
async def test_char_and_boolean_answers(answer: Any, passed: bool) -> None:
    fake = FakeRedshift(session=FakeSession(usage=answer))
    verification = await verify(faked(fake), form(schema="analytics"))
    assert verification.outcome is Outcome.OK
    assert check(verification, "USAGE on schema analytics").passed is passed
    assert ("GRANT USAGE ON SCHEMA analytics TO alice;" in hints_text(verification)) is not passed


async def test_missing_privileges_leave_the_credential_ok_with_grants_to_run() -> None:
    fake = FakeRedshift(
        session=FakeSession(identity=("IAM:ops", "dev", REDSHIFT_VERSION), temp="f", usage="f")
    )
    verification = await verify(faked(fake), form(SERVERLESS, user="IAM:ops", schema='"Sales"'))
    assert verification.outcome is Outcome.OK
    assert "lacks TEMP on database dev and USAGE on schema Sales" in verification.summary
    assert "Serverless workgroup default in us-east-1" in check(verification, "Signed in as IAM:ops").detail
    assert not check(verification, "TEMP on database dev").passed
    text = hints_text(verification)  # the ":" of a name the server chose is kept from linking
    assert '`GRANT TEMP ON DATABASE dev TO "IAM:\u2060ops";`' in text
    assert (
        'GRANT USAGE ON SCHEMA "Sales" TO "IAM:ops"; GRANT SELECT ON ALL TABLES IN SCHEMA "Sales"'
        in as_read(text)
    )


def test_server_product() -> None:
    assert server_product(REDSHIFT_VERSION) == (True, "Amazon Redshift 1.0.54321")
    assert server_product("PostgreSQL 15.18 (Debian 15.18-1) on x86_64-pc-linux-gnu") == (
        False,
        "PostgreSQL 15.18",
    )


@pytest.mark.parametrize(
    ("refusal", "outcome", "in_summary", "in_hints"),
    [
        (
            WHERE + 'FATAL:  password authentication failed for user "alice"',  # Redshift: SQLSTATE 28000
            Outcome.UNAUTHORIZED,
            'It said: password authentication failed for user "alice".',
            "special characters",
        ),
        (
            WHERE + 'FATAL:  role "alice" does not exist',
            Outcome.UNAUTHORIZED,
            "doesn't accept the user alice",
            "pg_user",
        ),
        (
            WHERE + 'FATAL:  database "dev" does not exist',
            Outcome.INVALID_INPUT,
            "no database dev",
            "usually dev",
        ),
        (
            WHERE
            + 'FATAL:  permission denied for database "dev"\nDETAIL:  User does not have CONNECT privilege.',
            Outcome.FORBIDDEN,
            "may not connect to dev",
            "GRANT CONNECT ON DATABASE dev TO alice;",
        ),
        (
            WHERE + 'FATAL:  too many connections for role "alice"',
            Outcome.RATE_LIMITED,
            "no connection to spare",
            "CONNECTION LIMIT",
        ),
        (
            WHERE + "FATAL:  connection limit exceeded for non-superusers",
            Outcome.RATE_LIMITED,
            "connection limit exceeded",
            "close idle sessions",
        ),
        (
            f"failed to resolve host '{ENDPOINT}': [Errno -2] Name or service not known",
            Outcome.INVALID_INPUT,
            f"The host {ENDPOINT} does not exist.",
            "copy the endpoint again",
        ),
        (
            f"failed to resolve host '{ENDPOINT}': [Errno -3] Temporary failure in name resolution",
            Outcome.UNREACHABLE,
            "temporary DNS failure",
            "security group",
        ),
        (
            WHERE
            + "Connection refused\n\tIs the server running on that host and accepting TCP/IP connections?",
            Outcome.UNREACHABLE,
            f"{ENDPOINT}:5439 refused the connection.",
            "check the port",
        ),
        (WHERE + "timeout expired", Outcome.UNREACHABLE, "didn't answer in time", "publicly accessible"),
        (WHERE + "No route to host", Outcome.UNREACHABLE, "couldn't reach", "paused"),
        (
            WHERE + "SSL error: certificate verify failed",
            Outcome.UNREACHABLE,
            "its certificate couldn't be verified",
            "not an IP address, SSH tunnel, VPC endpoint or alias",
        ),
        (
            WHERE + f'server certificate for "*.elb.amazonaws.com" does not match host name "{ENDPOINT}"',
            Outcome.UNREACHABLE,
            "its certificate is for another name",
            "Amazon Trust Services",
        ),
        (
            WHERE + "server does not support SSL, but SSL was required",
            Outcome.UNREACHABLE,
            "it doesn't offer TLS",
            "Amazon Trust Services",
        ),
        (
            WHERE + "SSL SYSCALL error: EOF detected",
            Outcome.PROVIDER_ERROR,
            "closed the connection while it was being set up",
            "network hiccup",
        ),
        (
            WHERE + "SSL connection has been closed unexpectedly",
            Outcome.PROVIDER_ERROR,
            "closed the connection while it was being set up",
            "try again",
        ),
        (
            WHERE + "SSL SYSCALL error: certificate verify failed",
            Outcome.UNREACHABLE,
            "its certificate couldn't be verified",
            "Amazon Trust Services",
        ),
        (
            WHERE + 'FATAL:  database "dev" is not currently accepting connections',
            Outcome.PROVIDER_ERROR,
            "isn't accepting connections",
            "maintenance",
        ),
        (
            WHERE + "FATAL:  something nobody expected",
            Outcome.PROVIDER_ERROR,
            "something nobody expected",
            "try again",
        ),
    ],
)
async def test_connect_errors_are_read_by_their_text(
    refusal: str, outcome: Outcome, in_summary: str, in_hints: str
) -> None:
    fake = FakeRedshift(refusals=[refusal, refusal])
    verification = await verify(faked(fake), form())
    assert verification.outcome is outcome
    assert in_summary in verification.summary
    assert in_hints in hints_text(verification)
    assert verification.checks == ()


async def test_a_host_named_like_tls_is_not_a_tls_failure() -> None:
    host = "ssl-certificate.abc123xyz789.us-west-2.redshift.amazonaws.com"
    refusal = f'connection to server at "{host}" (10.0.0.7), port 5439 failed: Connection refused'
    verification = await verify(faked(FakeRedshift(refusals=[refusal])), form(host))
    assert "refused the connection" in verification.summary


async def test_a_server_asking_for_tls_when_tests_turned_it_off_says_so() -> None:
    refusal = (
        WHERE + 'FATAL:  no pg_hba.conf entry for host "10.1.2.3", user "alice", database "dev", SSL off'
    )
    verification = await verify(faked(FakeRedshift(refusals=[refusal]), sslmode="disable"), form())
    assert verification.outcome is Outcome.UNREACHABLE
    assert "only accepts connections over TLS" in verification.summary
    assert "REDSHIFT_SSLMODE=disable" in hints_text(verification)


async def test_an_error_that_echoes_the_password_is_not_shown(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    refusal = WHERE + f'FATAL:  password authentication failed for user "alice" with "{PASSWORD}"'
    verification = await verify(faked(FakeRedshift(refusals=[refusal])), form())
    assert verification.outcome is Outcome.UNAUTHORIZED
    assert verification.summary == "Amazon Redshift rejected the user alice or its password."
    assert PASSWORD not in repr(verification) and PASSWORD not in caplog.text


async def test_a_short_password_in_an_error_is_not_shown() -> None:
    refusal = WHERE + 'FATAL:  password authentication failed for user "alice" (pw: x1)'
    verification = await verify(faked(FakeRedshift(refusals=[refusal])), form(password="x1"))
    assert "x1" not in verification.summary


async def test_transient_failures_are_tried_once_more() -> None:
    sleeps = Sleeps()
    fake = FakeRedshift(refusals=[WHERE + "FATAL:  the database system is starting up"])
    verification = await verify(
        Redshift(connector=fake, sleep=sleeps, policy=Policy(resolve=FakeResolver())), form()
    )
    assert verification.outcome is Outcome.OK
    assert len(fake.attempts) == 2 and sleeps == [1.0]


async def test_a_dropped_tls_connection_is_tried_once_more() -> None:
    sleeps = Sleeps()
    fake = FakeRedshift(refusals=[WHERE + "SSL SYSCALL error: EOF detected"])
    verification = await verify(
        Redshift(connector=fake, sleep=sleeps, policy=Policy(resolve=FakeResolver())), form()
    )
    assert verification.outcome is Outcome.OK
    assert len(fake.attempts) == 2 and sleeps == [1.0]


async def test_credential_failures_are_not_retried() -> None:
    sleeps = Sleeps()
    fake = FakeRedshift(refusals=[WHERE + 'FATAL:  password authentication failed for user "alice"'])
    verification = await verify(
        Redshift(connector=fake, sleep=sleeps, policy=Policy(resolve=FakeResolver())), form()
    )
    assert verification.outcome is Outcome.UNAUTHORIZED
    assert len(fake.attempts) == 1 and sleeps == []


async def test_a_connection_that_never_completes_is_unreachable() -> None:
    fake = FakeRedshift(hang=True)
    verification = await verify(faked(fake, connect_budget=0.05), form())
    assert verification.outcome is Outcome.UNREACHABLE
    assert "didn't answer in time" in verification.summary
    assert verification.hints == Redshift.unreachable_hints


async def test_a_statement_timeout_is_a_provider_error_and_the_connection_is_closed() -> None:
    session = FakeSession(
        fail_on="has_database_privilege", error=psycopg.errors.QueryCanceled("canceling statement")
    )
    fake = FakeRedshift(session=session)
    verification = await verify(faked(fake), form())
    assert verification.outcome is Outcome.PROVIDER_ERROR
    assert "didn't finish in time" in verification.summary
    assert "WLM queue" in hints_text(verification)
    assert session.closed


async def test_a_failing_check_is_a_provider_error_without_the_password() -> None:
    error = psycopg.errors.FeatureNotSupported(f"unsupported: {PASSWORD}")
    session = FakeSession(fail_on="version()", error=error)
    verification = await verify(faked(FakeRedshift(session=session)), form())
    assert verification.outcome is Outcome.PROVIDER_ERROR
    assert verification.summary == f"We connected to {ENDPOINT}:5439, but a check failed."
    assert session.closed


async def test_a_missing_schema_is_a_failed_check() -> None:
    error = psycopg.errors.InvalidSchemaName('schema "analytcs" does not exist')
    session = FakeSession(fail_on="has_schema_privilege", error=error)
    verification = await verify(faked(FakeRedshift(session=session)), form(schema="analytcs"))
    assert verification.outcome is Outcome.OK
    assert check(verification, "USAGE on schema analytcs").detail == "There is no schema analytcs in dev."
    assert "check the spelling" in hints_text(verification)


@pytest.mark.parametrize(
    ("typed", "name"),
    [
        ("Analytics", "analytics"),
        ("analytics", "analytics"),
        ('"Sales"', "Sales"),
        ('"We""ird"', 'We"ird'),
        ('"', '"'),
    ],
)
def test_schema_identifier_folds_unquoted_names(typed: str, name: str) -> None:
    assert schema_identifier(typed) == name


async def test_an_unquoted_schema_is_asked_for_in_lower_case() -> None:
    fake = FakeRedshift()
    verification = await verify(faked(fake), form(schema="Analytics"))
    assert fake.session.statements[-1] == ("SELECT has_schema_privilege(%s, 'USAGE')", ("analytics",))
    assert check(verification, "USAGE on schema analytics").passed


def test_the_missing_schema_hint_explains_case_folding() -> None:
    hint = errs.schema_missing_hint("sales", "dev")
    assert "case-sensitive" not in hint
    assert "lower-cased" in hint and 'in quotes, as "Sales"' in hint


def _connect_refused(reason: str) -> Any:
    """The hints for a connect error ``reason`` on a database and user both named by the value."""
    return lambda v: (
        errs.classify_connect_error(reason, errs.Target("h", 5439, v, v), "pw", tls_enabled=True).probe.hints
    )


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda v: (errs.temp_hint(v, v),), id="temp"),
        pytest.param(lambda v: (errs.usage_hint(v, v),), id="usage"),
        pytest.param(lambda v: (errs.schema_missing_hint(v, v),), id="schema-missing"),
        pytest.param(_connect_refused('FATAL: permission denied for database "d"'), id="connect"),
        pytest.param(_connect_refused("FATAL: too many connections for role"), id="connection-limit"),
    ],
)
def test_a_name_in_a_hint_cannot_close_its_code_span_format_or_link(build: Any) -> None:
    assert hint_problems(build) == []


def test_quote_ident() -> None:
    assert errs.quote_ident("analytics") == "analytics"
    assert errs.quote_ident("Sales") == '"Sales"'
    assert errs.quote_ident('we"ird') == '"we""ird"'


# --- where the probe connects: the endpoint resolved once, and only to public addresses --------------------


async def test_the_checked_address_is_connected_to_and_the_name_kept_for_tls() -> None:
    fake, resolver = FakeRedshift(), FakeResolver()
    verification = await verify(faked(fake, resolve=resolver), form(port="5440"))
    assert verification.outcome is Outcome.OK
    assert resolver.asked == [(ENDPOINT, 5440)]
    [params] = fake.attempts
    assert (params.host, params.hostaddr, params.port) == (ENDPOINT, PUBLIC_IP, 5440)


async def test_a_retry_reuses_the_checked_address() -> None:
    resolver = FakeResolver(addresses=[PUBLIC_IP, "52.10.20.31"])
    fake = FakeRedshift(refusals=[WHERE + "FATAL:  the database system is starting up"])
    verification = await verify(faked(fake, resolve=resolver), form())
    assert verification.outcome is Outcome.OK
    assert len(resolver.asked) == 1
    assert [params.hostaddr for params in fake.attempts] == [PUBLIC_IP, PUBLIC_IP]


@pytest.mark.parametrize(
    "addresses",
    [
        ["127.0.0.1"],  # 127.0.0.1.nip.io
        ["10.0.0.7"],
        ["172.16.5.4"],
        ["192.168.1.10"],
        ["100.64.0.1"],
        ["0.0.0.0"],
        ["169.254.169.254"],  # 169.254.169.254.nip.io, the cloud metadata service
        ["fd00:ec2::254"],  # the EC2 metadata service over IPv6
        ["::1"],
        ["fe80::1%eth0"],
        ["::ffff:127.0.0.1"],
        ["64:ff9b::a00:7"],  # 10.0.0.7 through NAT64, which is_global lets through
        ["2002:a9fe:a9fe::1"],  # 169.254.169.254 through 6to4
        [PUBLIC_IP, "10.0.0.7"],
    ],
)
async def test_an_endpoint_resolving_to_a_private_address_is_not_connected_to(addresses: list[str]) -> None:
    fake = FakeRedshift()
    verification = await verify(faked(fake, resolve=FakeResolver(addresses=addresses)), form())
    assert verification.outcome is Outcome.INVALID_INPUT
    assert verification.summary == (
        f"{ENDPOINT} resolves to an address the bot does not connect to (a private, local or reserved "
        "network address), so nothing was sent to it."
    )
    assert "CONNECTIONS_ALLOW_PRIVATE_ADDRESSES=true" in hints_text(verification)
    assert not any(address in repr(verification) for address in addresses if address != PUBLIC_IP)
    assert fake.attempts == []


async def test_private_addresses_may_be_allowed_for_a_bot_inside_the_vpc() -> None:
    assert Redshift.from_environment({"CONNECTIONS_ALLOW_PRIVATE_ADDRESSES": "true"}).policy.allow_private
    # The older, Redshift-only name still works.
    assert Redshift.from_environment({"REDSHIFT_ALLOW_PRIVATE_ADDRESSES": "true"}).policy.allow_private
    assert not Redshift.from_environment({}).policy.allow_private
    fake = FakeRedshift()
    allowed = faked(fake, allow_private=True, resolve=FakeResolver(addresses=["10.0.0.7"]))
    verification = await verify(allowed, form())
    assert verification.outcome is Outcome.OK
    assert [params.hostaddr for params in fake.attempts] == ["10.0.0.7"]


async def test_connect_to_skips_the_lookup() -> None:
    fake, resolver = FakeRedshift(), FakeResolver(addresses=["127.0.0.1"])
    verification = await verify(faked(fake, resolve=resolver, connect_to=("127.0.0.1", 15439)), form())
    assert verification.outcome is Outcome.OK
    assert resolver.asked == []
    assert fake.attempts[0].hostaddr == "127.0.0.1"


@pytest.mark.parametrize(
    ("resolver", "outcome", "in_summary", "in_hints"),
    [
        (
            FakeResolver(error=socket.gaierror(socket.EAI_NONAME, "Name or service not known")),
            Outcome.INVALID_INPUT,
            f"The host {ENDPOINT} does not exist.",
            "copy the endpoint again",
        ),
        (FakeResolver(addresses=[]), Outcome.INVALID_INPUT, "does not exist", "copy the endpoint again"),
        (
            FakeResolver(error=socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")),
            Outcome.UNREACHABLE,
            "temporary DNS failure",
            "try again in a minute",
        ),
        (FakeResolver(hang=True), Outcome.UNREACHABLE, "temporary DNS failure", "try again in a minute"),
    ],
)
async def test_a_failed_lookup_connects_to_nothing(
    resolver: FakeResolver, outcome: Outcome, in_summary: str, in_hints: str
) -> None:
    fake = FakeRedshift()
    verification = await verify(faked(fake, resolve=resolver, resolve_budget=0.05), form())
    assert verification.outcome is outcome
    assert in_summary in verification.summary
    assert in_hints in hints_text(verification)
    assert fake.attempts == []


async def test_a_stored_localhost_endpoint_is_refused_before_any_lookup() -> None:
    fake, resolver = FakeRedshift(), FakeResolver(addresses=["127.0.0.1"])
    provider = faked(fake, resolver)
    async with httpx.AsyncClient() as http:
        probe = await provider.probe(provider.clean(form("localhost")), http)
    assert probe.outcome is Outcome.INVALID_INPUT
    assert probe.summary.startswith("The bot does not connect to localhost")
    assert fake.attempts == [] and resolver.asked == []


def test_local_names_are_refused_before_any_lookup() -> None:
    for host in ("127.0.0.1.nip.io", "169.254.169.254.nip.io"):
        assert endpoint_problem(host) is None  # a real name: the lookup decides
    for host in ("127.1", "0x7f.1", "metadata.google.internal", "api.default.svc.cluster.local"):
        assert endpoint_problem(host) is not None


# --- the private PostgreSQL as Redshift's stand-in ---------------------------------------------------------


async def test_libpq_connects_to_the_checked_address_under_the_endpoint_name(world: World) -> None:
    provider = Redshift(
        sslmode="disable",
        policy=Policy(allow_private=True, resolve=FakeResolver(addresses=["127.0.0.1"])),
        retry_delay=0.0,
    )
    verification = await verify(provider, as_user(world, "rs_alice", port=str(world.server.port)))
    assert verification.outcome is Outcome.OK, verification
    assert check(verification, "Signed in as rs_alice to rs_dev").passed


async def test_working_credentials(world: World) -> None:
    verification = await verify(world.relaxed(), as_user(world, "rs_alice", schema="analytics"))
    assert verification.outcome is Outcome.OK, verification
    identity = check(verification, "Signed in as rs_alice to rs_dev")
    assert identity.detail.startswith("PostgreSQL ") and "not Amazon Redshift" in identity.detail
    assert "provisioned cluster examplecluster in us-west-2" in identity.detail
    assert check(verification, "TEMP on database rs_dev").passed
    assert check(verification, "USAGE on schema analytics").passed
    assert verification.summary.startswith("The server accepted rs_alice on database rs_dev (PostgreSQL ")
    assert verification.hints == ()


async def test_a_wrong_password(world: World) -> None:
    values = as_user(world, "rs_alice")
    values["password"] = Secret("wrong-" + PASSWORD)
    verification = await verify(world.relaxed(), values)
    assert verification.outcome is Outcome.UNAUTHORIZED
    assert 'password authentication failed for user "rs_alice"' in verification.summary
    assert "special characters" in hints_text(verification)


async def test_an_unknown_user_looks_like_a_wrong_password(world: World) -> None:
    verification = await verify(world.relaxed(), as_user(world, "rs_nobody"))
    assert verification.outcome is Outcome.UNAUTHORIZED
    assert "SELECT usename FROM pg_user" in hints_text(verification)


async def test_an_unknown_database(world: World) -> None:
    verification = await verify(world.relaxed(), as_user(world, "rs_alice", "rs_nope"))
    assert verification.outcome is Outcome.INVALID_INPUT
    assert 'database "rs_nope" does not exist' in verification.summary
    assert "usually dev" in hints_text(verification)


async def test_no_usage_on_the_schema_is_ok_with_the_grant_to_run(world: World) -> None:
    verification = await verify(world.relaxed(), as_user(world, "rs_bob", schema="analytics"))
    assert verification.outcome is Outcome.OK
    usage = check(verification, "USAGE on schema analytics")
    assert not usage.passed and usage.detail == "It may not use the schema."
    assert "but the user lacks USAGE on schema analytics" in verification.summary
    assert "GRANT USAGE ON SCHEMA analytics TO rs_bob;" in hints_text(verification)


async def test_a_quoted_schema_name_goes_as_a_parameter(world: World) -> None:
    verification = await verify(world.relaxed(), as_user(world, "rs_bob", schema='"Sales"'))
    assert not check(verification, "USAGE on schema Sales").passed
    assert 'GRANT USAGE ON SCHEMA "Sales" TO rs_bob;' in hints_text(verification)
    sneaky = await verify(world.relaxed(), as_user(world, "rs_alice", schema="analytics', 'USAGE') --"))
    assert sneaky.outcome is Outcome.OK
    assert "There is no schema" in check(sneaky, "USAGE on schema").detail


async def test_a_mixed_case_schema_name_finds_the_lower_case_schema(world: World) -> None:
    verification = await verify(world.relaxed(), as_user(world, "rs_alice", schema="Analytics"))
    assert verification.outcome is Outcome.OK
    assert check(verification, "USAGE on schema analytics").passed
    assert verification.hints == ()


async def test_a_quoted_schema_name_keeps_its_case(world: World) -> None:
    quoted = await verify(world.relaxed(), as_user(world, "rs_alice", schema='"Analytics"'))
    assert check(quoted, "USAGE on schema Analytics").detail == "There is no schema Analytics in rs_dev."
    assert "lower-cased" in hints_text(quoted)
    sales = await verify(world.relaxed(), as_user(world, "rs_alice", schema="Sales"))
    assert check(sales, "USAGE on schema sales").detail == "There is no schema sales in rs_dev."


async def test_no_temp_privilege(world: World) -> None:
    verification = await verify(world.relaxed(), as_user(world, "rs_alice", "rs_notemp"))
    assert verification.outcome is Outcome.OK
    assert not check(verification, "TEMP on database rs_notemp").passed
    assert "GRANT TEMP ON DATABASE rs_notemp TO rs_alice;" in hints_text(verification)


async def test_no_connect_privilege(world: World) -> None:
    verification = await verify(world.relaxed(), as_user(world, "rs_alice", "rs_locked"))
    assert verification.outcome is Outcome.FORBIDDEN
    assert "GRANT CONNECT ON DATABASE rs_locked TO rs_alice;" in hints_text(verification)


async def test_the_connection_limit(world: World) -> None:
    with world.holding("rs_limited"):
        verification = await verify(world.relaxed(), as_user(world, "rs_limited"))
    assert verification.outcome is Outcome.RATE_LIMITED
    assert 'too many connections for role "rs_limited"' in verification.summary
    assert "ALTER USER rs_limited CONNECTION LIMIT n;" in hints_text(verification)


async def test_a_database_not_accepting_connections_is_tried_twice(world: World) -> None:
    attempts: list[ConnectParams] = []

    async def counting(params: ConnectParams) -> PsycopgSession:
        attempts.append(params)
        return await psycopg_connect(params)

    provider = Redshift(
        sslmode="disable", connect_to=("127.0.0.1", world.server.port), connector=counting, retry_delay=0.0
    )
    verification = await verify(provider, as_user(world, "rs_alice", "rs_paused"))
    assert verification.outcome is Outcome.PROVIDER_ERROR
    assert "isn't accepting connections" in verification.summary
    assert len(attempts) == 2


async def test_a_closed_port_is_refused(world: World) -> None:
    provider = Redshift.from_environment(
        {"REDSHIFT_SSLMODE": "disable", "REDSHIFT_CONNECT_TO": f"127.0.0.1:{closed_port()}"}
    )
    verification = await verify(provider, as_user(world, "rs_alice"))
    assert verification.outcome is Outcome.UNREACHABLE
    assert f"{ENDPOINT}:5439 refused the connection." == verification.summary
    assert "check the port" in hints_text(verification)
    assert "security group" in hints_text(verification)


@pytest.mark.parametrize("env", [{}, {"REDSHIFT_SSLMODE": "verify-full"}, {"REDSHIFT_SSLMODE": "require"}])
async def test_tls_is_required_unless_relaxed_explicitly(world: World, env: dict[str, str]) -> None:
    provider = world.provider(**env)
    if provider.sslmode == "verify-full":
        assert provider.sslrootcert == certifi.where()
    verification = await verify(provider, as_user(world, "rs_alice"))
    assert verification.outcome is Outcome.UNREACHABLE
    assert verification.summary == f"We couldn't connect to {ENDPOINT}:5439 securely: it doesn't offer TLS."
    assert verification.hints == errs.TLS_HINTS


async def test_the_real_connection_prepares_nothing(world: World) -> None:
    provider = world.relaxed()
    session = await psycopg_connect(provider.connect_params(provider.clean(as_user(world, "rs_alice"))))
    try:
        assert session.connection.prepare_threshold is None
        assert session.connection.autocommit is True
        assert await session.fetch_one("SELECT current_user") == ("rs_alice",)
    finally:
        await session.close()
