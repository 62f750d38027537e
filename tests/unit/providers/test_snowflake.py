"""The Snowflake provider: offline checks of the form, and verification against the fake SQL API
(in-process through ASGITransport, and over real HTTP where the network matters)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import shutil
import socket
import string
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from bot.outbound import ANY_NAME, Policy
from bot.providers import _snowflake_errors as errs
from bot.providers import _snowflake_keys as keys
from bot.providers import _snowflake_names as names
from bot.providers.base import Outcome, Verification
from bot.providers.snowflake import (
    PROBE_STATEMENT,
    SNOWFLAKE_HOSTS,
    TOKEN_HINT,
    RetryPolicy,
    Snowflake,
    show_warehouses_statement,
)
from bot.redaction import Secret
from bot.settings import ConfigError
from tests.fakes.dns import PUBLIC_IP, FakeResolver
from tests.fakes.snowflake_api import FakeAccount, FakeSnowflake, FakeUser, new_token
from tests.support.block_text import hint_problems
from tests.support.servers import serve_asgi
from tests.unit.providers.contract import ProviderContract, Scenario

ACCOUNT = "myorg-analytics"
USER = "SVC_REPORTING"
ROLE = "REPORTING"
WAREHOUSE = "REPORTING_WH"
DATABASE = "ANALYTICS"
PASSPHRASE = "correct horse battery staple"
STATEMENTS = "/api/v2/statements"


# --- keys and forms ------------------------------------------------------------------------------------


def pinned_to(request: httpx.Request) -> str:
    """The name a request was sent for, having checked it went to the checked address with the
    name kept for the Host header and TLS."""
    assert request.url.host == PUBLIC_IP
    assert request.extensions["sni_hostname"] == request.headers["host"]
    return str(request.headers["host"])


def snowflake(*args: Any, **kwargs: Any) -> Snowflake:
    """The provider, its account hosts resolving to a public address: tests never ask DNS."""
    api_url = args[0] if args else kwargs.get("api_url")
    hosts = SNOWFLAKE_HOSTS if api_url is None else ANY_NAME
    kwargs.setdefault("policy", Policy(hosts, resolve=FakeResolver()))
    return Snowflake(*args, **kwargs)


@cache
def rsa_key(bits: int = 2048, n: int = 0) -> rsa.RSAPrivateKey:
    """A generated RSA key; ``n`` tells apart several keys of one size."""
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def pem_of(
    key: Any,
    passphrase: str | None = None,
    fmt: serialization.PrivateFormat = serialization.PrivateFormat.PKCS8,
) -> str:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase.encode())
        if passphrase
        else serialization.NoEncryption()
    )
    return str(key.private_bytes(serialization.Encoding.PEM, fmt, encryption).decode())


def public_pem_of(key: rsa.RSAPrivateKey) -> str:
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return public.decode()


def fingerprint_from_der(key: rsa.RSAPrivateKey) -> str:
    """README §2 computed independently: SHA-256 of the DER SubjectPublicKeyInfo, in base64."""
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "SHA256:" + base64.b64encode(hashlib.sha256(der).digest()).decode()


def form(
    *,
    account: str = ACCOUNT,
    user: str = USER,
    private_key: str = "",
    passphrase: str = "",
    token: str = "",
    role: str = "",
    warehouse: str = "",
    database: str = "",
) -> dict[str, str | Secret]:
    return {
        "account": account,
        "user": user,
        "private_key": Secret(private_key),
        "passphrase": Secret(passphrase),
        "token": Secret(token),
        "role": role,
        "warehouse": warehouse,
        "database": database,
    }


def key_form(key: rsa.RSAPrivateKey | None = None, /, **fields: str) -> dict[str, str | Secret]:
    return form(private_key=pem_of(key or rsa_key(), PASSPHRASE), passphrase=PASSPHRASE, **fields)


class Sleeps(list[float]):
    """An injected ``sleep`` that records the delays asked for and returns at once."""

    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def problems(values: dict[str, str | Secret]) -> dict[str, str]:
    provider = snowflake()
    return provider.validate(provider.clean(values))


def hints_text(verification: Verification) -> str:
    return "\n".join(verification.hints)


def check(verification: Verification, name: str) -> Any:
    found = [c for c in verification.checks if c.name == name]
    assert len(found) == 1, f"one check named {name!r} in {verification.checks}"
    return found[0]


def arrange(fake: FakeSnowflake, key: rsa.RSAPrivateKey | None = None) -> tuple[FakeAccount, FakeUser]:
    """The usual account: a service user with the key, a role, a warehouse and a database."""
    account = fake.add_account(ACCOUNT, locator="xy12345.us-east-2.aws")
    user = fake.add_user(account, USER, public_key=(key or rsa_key()).public_key(), roles=[ROLE])
    fake.add_warehouse(account, WAREHOUSE, usage=[ROLE])
    fake.add_database(account, DATABASE, usage=[ROLE])
    return account, user


def _bearer(key: rsa.RSAPrivateKey, **claims: Any) -> str:
    fingerprint = fingerprint_from_der(key)
    payload = {"iss": f"MYORG-ANALYTICS.{USER}.{fingerprint}", "sub": f"MYORG-ANALYTICS.{USER}", **claims}
    return jwt.encode(payload, key, algorithm="RS256")


# --- fixtures -------------------------------------------------------------------------------------------


@pytest.fixture
def fake() -> FakeSnowflake:
    return FakeSnowflake()


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def provider(sleeps: Sleeps) -> Snowflake:
    # rng fixed at 0.5, so with jitter 0.25 each backoff step is asked for as step * 1.125.
    return snowflake(retry=RetryPolicy(rng=lambda: 0.5), sleep=sleeps)


class Sent(list[httpx.Request]):
    """The requests a client sent, as the provider built them (headers included)."""

    async def __call__(self, request: httpx.Request) -> None:
        self.append(request)


@pytest.fixture
def sent() -> Sent:
    return Sent()


@pytest.fixture
async def http(fake: FakeSnowflake, sent: Sent) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=fake.app)
    async with httpx.AsyncClient(transport=transport, timeout=5, event_hooks={"request": [sent]}) as client:
        yield client


@pytest.fixture
def arranged(fake: FakeSnowflake) -> tuple[FakeAccount, FakeUser]:
    return arrange(fake)


async def verify(
    provider: Snowflake, http: httpx.AsyncClient, values: dict[str, str | Secret]
) -> Verification:
    cleaned = provider.clean(values)
    assert provider.validate(cleaned) == {}
    return await provider.verify(cleaned, http)


# --- the shared contract ---------------------------------------------------------------------------------


class TestSnowflakeContract(ProviderContract):
    def provider(self) -> Snowflake:
        return snowflake(sleep=Sleeps())

    def valid_values(self) -> dict[str, str | Secret]:
        return form(
            account=" https://MyOrg-Analytics.snowflakecomputing.com/console#/ ",
            user=f" {USER} ",
            private_key="\n" + pem_of(rsa_key(), PASSPHRASE).replace("\n", " ") + "\n",
            passphrase=PASSPHRASE,
            role=" reporting ",
            warehouse='"Reporting_WH"',
            database="analytics",
        )

    @asynccontextmanager
    async def scenario(self, outcome: Outcome) -> AsyncIterator[Scenario]:
        fake = FakeSnowflake()
        account, user = arrange(fake)
        provider = snowflake(sleep=Sleeps())
        values = key_form(role=ROLE, warehouse=WAREHOUSE, database=DATABASE)
        if outcome is Outcome.UNAUTHORIZED:
            values = key_form(rsa_key(2048, 1))  # a key the user doesn't have
        elif outcome is Outcome.FORBIDDEN:
            fake.block_network(account)
            values = form(token=fake.add_token(user))
        elif outcome is Outcome.INVALID_INPUT:
            values = key_form(account="myorg-elsewhere")
        elif outcome is Outcome.RATE_LIMITED:
            fake.fail_next(429, times=3, retry_after=2)
            values = form(token=fake.add_token(user))
        elif outcome is Outcome.PROVIDER_ERROR:
            fake.fail_next(503, times=2)
        elif outcome is Outcome.UNREACHABLE:
            provider = snowflake(f"http://127.0.0.1:{closed_port()}", sleep=Sleeps())
        cleaned = provider.clean(values)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=fake.app), timeout=5) as http:
            if outcome is Outcome.UNREACHABLE:
                async with httpx.AsyncClient(timeout=5) as real:
                    yield Scenario(provider, real, cleaned)
            else:
                yield Scenario(provider, http, cleaned)


# --- declaration -----------------------------------------------------------------------------------------


def test_the_form_is_declared() -> None:
    provider = snowflake()
    assert (provider.key, provider.title) == ("snowflake", "Snowflake")
    assert [s.title for s in provider.sections] == [
        "Snowflake account",
        "Authentication",
        "Context (optional)",
    ]
    assert [f.name for f in provider.fields] == [
        "account",
        "user",
        "private_key",
        "passphrase",
        "token",
        "role",
        "warehouse",
        "database",
    ]
    assert provider.secret_fields == ("private_key", "passphrase", "token")
    fields = {f.name: f for f in provider.fields}
    assert not fields["account"].optional and not fields["user"].optional
    assert all(
        fields[n].optional for n in ("private_key", "passphrase", "token", "role", "warehouse", "database")
    )
    assert fields["private_key"].multiline and not fields["token"].multiline
    auth = provider.sections[1].description or ""
    assert (
        "key pair (recommended)" in auth and "programmatic access token" in auth and "not a password" in auth
    )
    assert (
        "orgname-account_name" in fields["account"].hint and "View account details" in fields["account"].hint
    )
    assert "never start it" in fields["warehouse"].hint
    assert provider.deadline_seconds == 60.0 and provider.poll_limit == 20.0


def test_the_api_url_comes_from_its_own_variable() -> None:
    assert Snowflake.from_environment({}).api_url is None
    assert (
        Snowflake.from_environment({}).base_url(ACCOUNT) == "https://myorg-analytics.snowflakecomputing.com"
    )
    configured = Snowflake.from_environment({"SNOWFLAKE_API_URL": " https://sf-proxy.internal.example/ "})
    assert configured.base_url(ACCOUNT) == "https://sf-proxy.internal.example"
    per_account = Snowflake.from_environment({"SNOWFLAKE_API_URL": "http://127.0.0.1:9/{account}"})
    assert per_account.base_url("xy12345.us-east-2.aws") == "http://127.0.0.1:9/xy12345.us-east-2.aws"
    privatelink = Snowflake.from_environment(
        {"SNOWFLAKE_API_URL": "https://{account}.privatelink.snowflakecomputing.com"}
    )
    assert privatelink.base_url(ACCOUNT) == "https://myorg-analytics.privatelink.snowflakecomputing.com"


def test_an_api_url_without_tls_is_accepted_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="bot.providers.snowflake")
    plain = Snowflake.from_environment({"SNOWFLAKE_API_URL": "http://sf-proxy.internal.example/{account}"})
    assert plain.base_url(ACCOUNT) == "http://sf-proxy.internal.example/myorg-analytics"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "SNOWFLAKE_API_URL is not https" in warnings[0] and "sent unencrypted" in warnings[0]
    assert "sf-proxy.internal.example" in warnings[0]
    caplog.clear()
    Snowflake.from_environment({"SNOWFLAKE_API_URL": "https://sf-proxy.internal.example"})
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


@pytest.mark.parametrize(
    "url",
    ["sf-proxy.example", "ftp://sf-proxy.example", "https://", "https://u:p@proxy.example", "https://x/?a=1"],
)
def test_a_malformed_api_url_names_the_variable(url: str) -> None:
    with pytest.raises(ConfigError, match="SNOWFLAKE_API_URL"):
        Snowflake.from_environment({"SNOWFLAKE_API_URL": url})


# --- the account identifier ------------------------------------------------------------------------------

# typed -> (stored identifier, account in the JWT, host)
ACCOUNTS = [
    ("myorg-account123", "myorg-account123", "MYORG-ACCOUNT123", "myorg-account123.snowflakecomputing.com"),
    ("MyOrg-Acct_1", "myorg-acct_1", "MYORG-ACCT_1", "myorg-acct_1.snowflakecomputing.com"),
    ("myorg.acct_1", "myorg-acct_1", "MYORG-ACCT_1", "myorg-acct_1.snowflakecomputing.com"),
    ("myorg-acct-1", "myorg-acct-1", "MYORG-ACCT_1", "myorg-acct-1.snowflakecomputing.com"),
    ("xy12345", "xy12345", "XY12345", "xy12345.snowflakecomputing.com"),
    (
        "xy12345.us-east-2.aws",
        "xy12345.us-east-2.aws",
        "XY12345",
        "xy12345.us-east-2.aws.snowflakecomputing.com",
    ),
    (
        "fi45185.east-us-2.azure",
        "fi45185.east-us-2.azure",
        "FI45185",
        "fi45185.east-us-2.azure.snowflakecomputing.com",
    ),
    (
        "xy12345.us-east-1.privatelink",
        "xy12345.us-east-1.privatelink",
        "XY12345",
        "xy12345.us-east-1.privatelink.snowflakecomputing.com",
    ),
    (
        "myorg-acct.privatelink",
        "myorg-acct.privatelink",
        "MYORG-ACCT",
        "myorg-acct.privatelink.snowflakecomputing.com",
    ),
    (
        "xy12345-abcdef.global",
        "xy12345-abcdef.global",
        "XY12345",
        "xy12345-abcdef.global.snowflakecomputing.com",
    ),
    (
        "xy12345.cn-northwest-1.aws",
        "xy12345.cn-northwest-1.aws",
        "XY12345",
        "xy12345.cn-northwest-1.aws.snowflakecomputing.cn",
    ),
    (
        "https://myorg-acct.snowflakecomputing.com/console/login#/",
        "myorg-acct",
        "MYORG-ACCT",
        "myorg-acct.snowflakecomputing.com",
    ),
    (
        ' "myorg-acct.snowflakecomputing.com:443" ',
        "myorg-acct",
        "MYORG-ACCT",
        "myorg-acct.snowflakecomputing.com",
    ),
    (
        "https://app.snowflake.com/myorg/acct_1/#/homepage",
        "myorg-acct_1",
        "MYORG-ACCT_1",
        "myorg-acct_1.snowflakecomputing.com",
    ),
]


@pytest.mark.parametrize(
    ("typed", "stored", "in_jwt", "host"), ACCOUNTS, ids=[a[0].strip() for a in ACCOUNTS]
)
def test_account_identifiers_are_normalised_as_the_readme_says(
    typed: str, stored: str, in_jwt: str, host: str
) -> None:
    provider = snowflake()
    cleaned = provider.clean(key_form(account=typed))
    assert provider.validate(cleaned) == {}
    assert provider.config_of(cleaned)["account"] == stored
    assert names.jwt_account(stored) == in_jwt
    assert names.host_of(stored) == host
    assert provider.base_url(stored) == f"https://{host}"


@pytest.mark.parametrize(
    ("typed", "says"),
    [
        ("", "Enter the account identifier"),
        ("my org", "looks like"),
        ("myorg-acct!", "looks like"),
        ("a..b", "looks like"),
        ("https://example.com/myorg-acct", "looks like"),
        ("x.y.z.w.v", "up to four parts"),
        ("https://app.snowflake.com/us-east-2.aws/xy12345/", "Snowsight address"),
    ],
)
def test_a_bad_account_identifier_is_explained(typed: str, says: str) -> None:
    found = problems(key_form(account=typed))
    assert set(found) == {"account"}
    assert says in found["account"] and "myorg-account_name" in found["account"]


async def test_a_locator_account_signs_in_with_the_locator(
    fake: FakeSnowflake, provider: Snowflake, http: httpx.AsyncClient, sent: Sent
) -> None:
    arrange(fake)
    verification = await verify(provider, http, key_form(account="XY12345.us-east-2.aws"))
    assert verification.outcome is Outcome.OK
    assert pinned_to(sent[0]) == "xy12345.us-east-2.aws.snowflakecomputing.com"
    claims = jwt.decode(sent[0].headers["authorization"].split()[1], options={"verify_signature": False})
    assert claims["sub"] == f"XY12345.{USER}"


async def test_the_hyphenated_spelling_signs_in_with_the_underscore_form(
    fake: FakeSnowflake, provider: Snowflake, http: httpx.AsyncClient, sent: Sent
) -> None:
    account = fake.add_account("myorg-analytics_eu")
    fake.add_user(account, USER, public_key=rsa_key().public_key())
    verification = await verify(provider, http, key_form(account="myorg-analytics-eu"))
    assert verification.outcome is Outcome.OK
    assert pinned_to(sent[0]) == "myorg-analytics-eu.snowflakecomputing.com"
    claims = jwt.decode(sent[0].headers["authorization"].split()[1], options={"verify_signature": False})
    assert claims["sub"] == f"MYORG-ANALYTICS_EU.{USER}"


# --- the private key -------------------------------------------------------------------------------------


def test_an_unencrypted_pkcs8_key_passes_and_shows_its_fingerprint() -> None:
    provider = snowflake()
    cleaned = provider.clean(form(private_key=pem_of(rsa_key())))
    assert provider.validate(cleaned) == {}
    assert provider.credential_hint(cleaned) == fingerprint_from_der(rsa_key())


def test_an_encrypted_key_opens_with_its_passphrase() -> None:
    provider = snowflake()
    cleaned = provider.clean(key_form())
    assert provider.validate(cleaned) == {}
    assert provider.credential_hint(cleaned) == fingerprint_from_der(rsa_key())


def test_the_wrong_passphrase_is_named_on_its_field() -> None:
    found = problems(form(private_key=pem_of(rsa_key(), PASSPHRASE), passphrase="correct horse battery"))
    assert set(found) == {"passphrase"}
    assert "doesn't open the key" in found["passphrase"]
    assert "correct horse battery" not in found["passphrase"]


def test_an_encrypted_key_without_passphrase_asks_for_it() -> None:
    found = problems(form(private_key=pem_of(rsa_key(), PASSPHRASE)))
    assert found == {
        "passphrase": "This key is encrypted (BEGIN ENCRYPTED PRIVATE KEY): enter its passphrase."
    }


def test_a_passphrase_for_an_unencrypted_key_is_flagged() -> None:
    found = problems(form(private_key=pem_of(rsa_key()), passphrase="not needed"))
    assert found == {"passphrase": "This key is not encrypted: leave the passphrase empty."}


def test_a_pkcs1_key_is_refused_with_the_conversion_command() -> None:
    found = problems(form(private_key=pem_of(rsa_key(), fmt=serialization.PrivateFormat.TraditionalOpenSSL)))
    assert set(found) == {"private_key"}
    assert "older PKCS#1 format (BEGIN RSA PRIVATE KEY)" in found["private_key"]
    assert "openssl pkcs8 -topk8" in found["private_key"]


def test_an_rsa_1024_key_is_refused() -> None:
    found = problems(form(private_key=pem_of(rsa_key(1024))))
    assert found == {"private_key": found["private_key"]}
    assert "has 1024 bits" in found["private_key"] and "at least 2048" in found["private_key"]
    assert "openssl genrsa 2048" in found["private_key"]


@pytest.mark.parametrize(
    ("key", "fmt", "says"),
    [
        (
            ec.generate_private_key(ec.SECP256R1()),
            serialization.PrivateFormat.PKCS8,
            "elliptic-curve (EC) key",
        ),
        (
            ec.generate_private_key(ec.SECP256R1()),
            serialization.PrivateFormat.TraditionalOpenSSL,
            "elliptic-curve (EC) key",
        ),
        (ed25519.Ed25519PrivateKey.generate(), serialization.PrivateFormat.PKCS8, "EdDSA key"),
        (ed25519.Ed25519PrivateKey.generate(), serialization.PrivateFormat.OpenSSH, "OpenSSH key"),
    ],
    ids=["ec-pkcs8", "ec-sec1", "ed25519", "openssh"],
)
def test_keys_that_are_not_rsa_are_refused(key: Any, fmt: serialization.PrivateFormat, says: str) -> None:
    found = problems(form(private_key=pem_of(key, fmt=fmt)))
    assert set(found) == {"private_key"}
    assert says in found["private_key"] and "RSA" in found["private_key"]


def test_the_public_key_pasted_instead_is_explained() -> None:
    found = problems(form(private_key=public_pem_of(rsa_key())))
    assert "This is the public key" in found["private_key"] and "RSA_PUBLIC_KEY" in found["private_key"]


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (lambda pem: pem[: len(pem) // 2], "cut short"),
        (lambda pem: pem.replace("M", "!", 1) if "M" in pem[40:] else pem, "can't be read"),
        (lambda pem: "".join(pem.splitlines()[1:-1]), "with its -----BEGIN PRIVATE KEY-----"),
        (lambda pem: pem + pem, "2 PEM blocks"),
        (lambda pem: "hunter2", "Paste the whole PEM file"),
    ],
    ids=["truncated", "mangled", "no-armour", "two-blocks", "not-a-key"],
)
def test_a_damaged_key_says_what_is_wrong_without_echoing_it(damage: Any, says: str) -> None:
    pem = damage(pem_of(rsa_key()))
    message = problems(form(private_key=pem))["private_key"]
    assert says in message
    assert pem.strip() not in message


@pytest.mark.parametrize(
    "mangle",
    [
        lambda pem: pem.replace("\n", " "),
        lambda pem: pem.replace("\n", "\\n"),
        lambda pem: pem.replace("\n", "\r\n"),
        lambda pem: f'"{pem}"',
        lambda pem: f"\n\n  {pem}  \n",
    ],
    ids=["one-line", "escaped-newlines", "crlf", "quoted", "padded"],
)
def test_a_key_mangled_by_copying_is_restored(mangle: Any) -> None:
    provider = snowflake()
    cleaned = provider.clean(form(private_key=mangle(pem_of(rsa_key(), PASSPHRASE)), passphrase=PASSPHRASE))
    assert provider.validate(cleaned) == {}
    assert provider.credential_hint(cleaned) == fingerprint_from_der(rsa_key())


def test_the_fingerprint_matches_the_readme_openssl_recipe(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    public = tmp_path / "k.pub"
    public.write_text(public_pem_of(rsa_key()))
    recipe = (
        f"openssl rsa -pubin -in {public} -outform DER | openssl dgst -sha256 -binary | openssl enc -base64"
    )
    digest = subprocess.run(["sh", "-c", recipe], check=True, capture_output=True, text=True).stdout.strip()
    assert (
        keys.fingerprint_of(rsa_key().public_key()) == f"SHA256:{digest}" == fingerprint_from_der(rsa_key())
    )


# A minimal DER writer, to build encrypted keys whose parameters no tool would choose.
def _der(tag: int, content: bytes) -> bytes:
    size = len(content)
    length = (
        bytes([size])
        if size < 0x80
        else bytes([0x80 | ((size.bit_length() + 7) // 8)])
        + size.to_bytes((size.bit_length() + 7) // 8, "big")
    )
    return bytes([tag]) + length + content


def _seq(*parts: bytes) -> bytes:
    return _der(0x30, b"".join(parts))


def _int(value: int) -> bytes:
    return _der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def _oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        while arc > 0x7F:
            arc >>= 7
            chunk.insert(0, 0x80 | (arc & 0x7F))
        out += bytes(chunk)
    return _der(0x06, bytes(out))


def _encrypted_pem(kdf: bytes) -> str:
    aes = _seq(_oid("2.16.840.1.101.3.4.1.42"), _der(0x04, os.urandom(16)))
    info = _seq(_seq(_oid("1.2.840.113549.1.5.13"), _seq(kdf, aes)), _der(0x04, os.urandom(1232)))
    body = base64.b64encode(info).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "\n".join(["-----BEGIN ENCRYPTED PRIVATE KEY-----", *lines, "-----END ENCRYPTED PRIVATE KEY-----"])


@pytest.mark.parametrize(
    "kdf",
    [
        _seq(_oid("1.2.840.113549.1.5.12"), _seq(_der(0x04, b"salt1234"), _int(50_000_000))),
        _seq(_oid("1.2.840.113549.1.5.12"), _seq(_der(0x04, b"salt1234"), _int(600_000))),
        _seq(_oid("1.3.6.1.4.1.11591.4.11"), _seq(_der(0x04, b"salt1234"), _int(2**20), _int(8), _int(1))),
    ],
    ids=["pbkdf2-50M-rounds", "pbkdf2-600k-rounds", "scrypt-N-2^20"],
)
def test_a_key_that_would_take_too_long_to_open_is_refused_before_trying(kdf: bytes) -> None:
    found = problems(form(private_key=_encrypted_pem(kdf), passphrase=PASSPHRASE))
    assert set(found) == {"private_key"}
    assert "asks for more work than we run" in found["private_key"]


def test_an_ordinary_pbkdf2_key_is_within_the_bound() -> None:
    pem = pem_of(rsa_key(), PASSPHRASE)
    der = base64.b64decode("".join(pem.splitlines()[1:-1]))
    assert keys.kdf_problem(der) is None


# --- the token and the choice of credential ----------------------------------------------------------


@pytest.mark.parametrize(
    "password",
    [
        "hunter2",
        "Winter2026!",
        "correct.horse.battery.staple",
        "a passphrase long enough to pass for a token by length",
    ],
)
def test_a_password_in_the_token_field_is_refused_with_the_key_pair_hint(password: str) -> None:
    found = problems(form(token=password))
    assert set(found) == {"token"}
    message = found["token"]
    assert "looks like a password" in message and "October 2026" in message
    assert "openssl genrsa 2048" in message and "RSA_PUBLIC_KEY" in message
    assert password not in message


@pytest.mark.parametrize(
    "token",
    ["A" * 32, "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", new_token()],
    ids=["32-chars", "hex", "jwt-shaped"],
)
def test_a_long_token_of_any_shape_is_accepted(token: str) -> None:
    # Snowflake documents no format for programmatic access tokens.
    assert problems(form(token=token)) == {}


def test_a_private_key_in_the_token_field_is_redirected() -> None:
    found = problems(form(token=pem_of(rsa_key())))
    assert found["token"].startswith("That is a private key")


def test_a_token_in_the_key_field_is_redirected() -> None:
    found = problems(form(private_key=new_token()))
    assert "programmatic access token" in found["private_key"]


def test_a_token_pasted_with_bearer_and_quotes_is_cleaned() -> None:
    token = new_token()
    provider = snowflake()
    cleaned = provider.clean(form(token=f' "Bearer {token}" '))
    assert isinstance(cleaned["token"], Secret) and cleaned["token"].reveal() == token
    assert provider.validate(cleaned) == {}
    assert provider.credential_hint(cleaned) == TOKEN_HINT


def test_a_token_hint_shows_no_part_of_the_token() -> None:
    # Every member sees the hint: a token has no public part, so it may show none of the token.
    token = "pat_" + string.digits + string.ascii_letters + "-_" + string.ascii_letters[::-1]
    provider = snowflake()
    cleaned = provider.clean(form(token=token))
    assert provider.validate(cleaned) == {}

    hint = provider.credential_hint(cleaned)

    assert hint == "access token"
    assert not any(token[i : i + 3] in hint for i in range(len(token) - 2))


def test_exactly_one_credential_is_required() -> None:
    neither = problems(form())
    assert set(neither) == {"private_key"} and "programmatic access token" in neither["private_key"]
    both = problems(form(private_key=pem_of(rsa_key()), token=new_token()))
    assert both == {"token": "Give a key pair or a token, not both: clear one of them."}
    stray = problems(form(token=new_token(), passphrase="something"))
    assert set(stray) == {"passphrase"}


def test_empty_required_fields_get_messages() -> None:
    found = problems(form(account="", user="", private_key=pem_of(rsa_key())))
    assert found["account"].startswith("Enter the account identifier")
    assert found["user"].startswith("Enter the user's login name")


# --- names -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "stored", "sent"),
    [
        ("reporting", "REPORTING", "REPORTING"),
        ("Reporting_WH$2", "REPORTING_WH$2", "REPORTING_WH$2"),
        ('"Reporting WH"', '"Reporting WH"', "Reporting WH"),
        ('"REPORTING"', "REPORTING", "REPORTING"),
        ('"say ""hi"""', '"say ""hi"""', 'say "hi"'),
    ],
)
def test_names_are_resolved_as_snowflake_does(typed: str, stored: str, sent: str) -> None:
    provider = snowflake()
    cleaned = provider.clean(key_form(warehouse=typed))
    assert provider.validate(cleaned) == {}
    assert provider.config_of(cleaned)["warehouse"] == stored
    identifier = names.parse_identifier(stored)
    assert identifier is not None and identifier.name == sent


@pytest.mark.parametrize(
    "typed", ["bad name", "1st_wh", "wh;drop", '"it\'s"', '"back\\slash"', '"un"balanced"', "x" * 256]
)
def test_a_name_snowflake_would_not_resolve_is_refused(typed: str) -> None:
    found = problems(key_form(role=typed))
    assert set(found) == {"role"} and "role name" in found["role"]


def test_the_warehouse_probe_escapes_its_literal() -> None:
    assert names.sql_string_literal("it's \\ here") == "'it''s \\\\ here'"
    statement = show_warehouses_statement(names.Identifier("Odd % _ Name", quoted=True))
    assert statement == "SHOW WAREHOUSES LIKE 'Odd % _ Name' WITH PRIVILEGES USAGE"


# --- the JWT and the request ------------------------------------------------------------------------


async def test_each_request_carries_a_fresh_rs256_jwt_for_the_normalised_account(
    fake: FakeSnowflake, http: httpx.AsyncClient, sent: Sent, sleeps: Sleeps
) -> None:
    arrange(fake)
    ticks = iter([1_800_000_000, 1_800_000_007])
    provider = snowflake(sleep=sleeps, clock=lambda: next(ticks))
    fake.clock = lambda: 1_800_000_010
    verification = await verify(
        provider,
        http,
        key_form(
            account="https://MyOrg-Analytics.snowflakecomputing.com",
            user="svc_reporting",
            warehouse=WAREHOUSE,
        ),
    )
    assert verification.outcome is Outcome.OK
    assert len(sent) == 2
    fingerprint = fingerprint_from_der(rsa_key())
    for request, issued in zip(sent, [1_800_000_000, 1_800_000_007], strict=True):
        token = request.headers["authorization"].removeprefix("Bearer ")
        assert jwt.get_unverified_header(token)["alg"] == "RS256"
        # The times are the injected clock's, so only the signature is checked here.
        lenient: Any = {"verify_exp": False, "verify_iat": False}
        claims = jwt.decode(token, rsa_key().public_key(), algorithms=["RS256"], options=lenient)
        assert claims["iss"] == f"MYORG-ANALYTICS.SVC_REPORTING.{fingerprint}"
        assert claims["sub"] == "MYORG-ANALYTICS.SVC_REPORTING"
        assert claims["iat"] == issued
        assert 0 < claims["exp"] - claims["iat"] <= 3600
        assert request.headers["x-snowflake-authorization-token-type"] == "KEYPAIR_JWT"


async def test_the_request_follows_the_spec(
    fake: FakeSnowflake, provider: Snowflake, http: httpx.AsyncClient, sent: Sent
) -> None:
    arrange(fake)
    await verify(provider, http, key_form(role="reporting", warehouse="reporting_wh", database="analytics"))
    first = sent[0]
    assert (first.method, first.url.path) == ("POST", STATEMENTS)
    assert set(first.url.params) == {"requestId"}
    assert len(first.url.params["requestId"]) == 36
    assert first.headers["accept"] == "application/json"
    assert first.headers["content-type"] == "application/json"
    assert first.headers["user-agent"].startswith("connections-bot/")
    (recorded, *_) = fake.requests
    assert recorded.json == {
        "statement": PROBE_STATEMENT,
        "timeout": 20,
        "role": ROLE,
        "warehouse": WAREHOUSE,
        "database": DATABASE,
        "parameters": {"query_tag": "connections-bot credential check"},
    }
    assert fake.requests[1].query["requestId"] != recorded.query["requestId"]


async def test_without_context_the_body_names_none(
    fake: FakeSnowflake, provider: Snowflake, http: httpx.AsyncClient, arranged: tuple[FakeAccount, FakeUser]
) -> None:
    verification = await verify(provider, http, key_form())
    assert verification.outcome is Outcome.OK
    (only,) = fake.requests
    assert set(only.json) == {"statement", "timeout", "parameters"}
    assert "none asked for" in check(verification, "warehouse").detail
    assert check(verification, "role").detail == "none asked for; the user's default is PUBLIC"


async def test_a_token_is_sent_as_a_programmatic_access_token(
    fake: FakeSnowflake,
    provider: Snowflake,
    http: httpx.AsyncClient,
    sent: Sent,
    arranged: tuple[FakeAccount, FakeUser],
) -> None:
    token = fake.add_token(arranged[1])
    verification = await verify(provider, http, form(token=token))
    assert verification.outcome is Outcome.OK
    assert sent[0].headers["authorization"] == f"Bearer {token}"
    assert sent[0].headers["x-snowflake-authorization-token-type"] == "PROGRAMMATIC_ACCESS_TOKEN"
    assert "programmatic access token" in verification.summary
    assert all(c.name != "key fingerprint" for c in verification.checks)


# --- success ----------------------------------------------------------------------------------------------


async def test_a_key_pair_with_its_context_is_accepted(
    fake: FakeSnowflake, provider: Snowflake, http: httpx.AsyncClient, arranged: tuple[FakeAccount, FakeUser]
) -> None:
    verification = await verify(provider, http, key_form(role=ROLE, warehouse=WAREHOUSE, database=DATABASE))
    assert verification.outcome is Outcome.OK
    assert check(verification, "key fingerprint").detail == fingerprint_from_der(rsa_key())
    assert check(verification, "signed in").detail == f"as {USER} on account XY12345"
    assert check(verification, f"role {ROLE}").passed
    warehouse = check(verification, f"warehouse {WAREHOUSE}")
    assert warehouse.passed and "suspended (we didn't start it" in warehouse.detail
    assert check(verification, f"database {DATABASE}").passed
    assert verification.summary == (
        f"Snowflake accepted the key pair for {USER} on {ACCOUNT} "
        f"(role {ROLE}; warehouse {WAREHOUSE}; database {DATABASE})."
    )
    assert verification.hints == ()
    assert verification.request_id is not None and len(verification.request_id) == 36


async def test_no_statement_but_the_documented_probes_is_sent(
    fake: FakeSnowflake, provider: Snowflake, http: httpx.AsyncClient, arranged: tuple[FakeAccount, FakeUser]
) -> None:
    account, _ = arranged
    fake.add_warehouse(account, "IDLE_WH", usage=[ROLE])
    await verify(provider, http, key_form(role=ROLE, warehouse=WAREHOUSE, database=DATABASE))
    await verify(provider, http, key_form(role=ROLE, warehouse="idle_wh"))
    await verify(provider, http, key_form(role=ROLE, warehouse="missing_wh"))
    await verify(provider, http, key_form())
    assert fake.statements == [
        PROBE_STATEMENT,
        f"SHOW WAREHOUSES LIKE '{WAREHOUSE}' WITH PRIVILEGES USAGE",
        PROBE_STATEMENT,
        "SHOW WAREHOUSES LIKE 'IDLE_WH' WITH PRIVILEGES USAGE",
        PROBE_STATEMENT,
        "SHOW WAREHOUSES LIKE 'MISSING_WH' WITH PRIVILEGES USAGE",
        PROBE_STATEMENT,
    ]
    assert {w.name: w.state for w in account.warehouses.values()} == {
        WAREHOUSE: "SUSPENDED",
        "IDLE_WH": "SUSPENDED",
    }


async def test_a_warehouse_the_role_cannot_use_is_a_warning_with_a_grant(
    fake: FakeSnowflake, provider: Snowflake, http: httpx.AsyncClient, arranged: tuple[FakeAccount, FakeUser]
) -> None:
    fake.add_warehouse(arranged[0], "ETL_WH", usage=["ETL"])
    verification = await verify(provider, http, key_form(role=ROLE, warehouse="etl_wh"))
    assert verification.outcome is Outcome.OK
    failed = check(verification, "warehouse ETL_WH")
    assert not failed.passed and failed.detail == f"not usable with role {ROLE}"
    assert verification.summary == (
        f"Snowflake accepted the key pair for {USER} on {ACCOUNT}, "
        f"but role {ROLE} can't use warehouse ETL_WH."
    )
    assert f"`GRANT USAGE ON WAREHOUSE ETL_WH TO ROLE {ROLE}`" in hints_text(verification)


async def test_a_warehouse_named_in_another_case_gets_a_hint(
    fake: FakeSnowflake, provider: Snowflake, http: httpx.AsyncClient, arranged: tuple[FakeAccount, FakeUser]
) -> None:
    verification = await verify(provider, http, key_form(role=ROLE, warehouse='"reporting_wh"'))
    assert verification.outcome is Outcome.OK
    assert not check(verification, 'warehouse "reporting_wh"').passed
    assert (
        f'There is a warehouse named {WAREHOUSE}, which differs from "reporting_wh" only in case'
        in hints_text(verification)
    )


async def test_like_wildcards_do_not_count_as_a_match(
    fake: FakeSnowflake, provider: Snowflake, http: httpx.AsyncClient, arranged: tuple[FakeAccount, FakeUser]
) -> None:
    # SHOW WAREHOUSES LIKE 'SALES_WH' also lists SALESXWH: only an exact name counts.
    fake.add_warehouse(arranged[0], "SALESXWH", usage=[ROLE])
    verification = await verify(provider, http, key_form(role=ROLE, warehouse="sales_wh"))
    assert not check(verification, "warehouse SALES_WH").passed
    assert "differs" not in hints_text(verification)


async def test_a_missing_database_is_a_warning_with_a_grant(
    fake: FakeSnowflake, provider: Snowflake, http: httpx.AsyncClient, arranged: tuple[FakeAccount, FakeUser]
) -> None:
    verification = await verify(provider, http, key_form(role=ROLE, database="finance"))
    assert verification.outcome is Outcome.OK
    assert not check(verification, "database FINANCE").passed
    assert f"`GRANT USAGE ON DATABASE FINANCE TO ROLE {ROLE}`" in hints_text(verification)
    assert "but role REPORTING can't use database FINANCE" in verification.summary


async def test_the_second_key_slot_works_for_rotation(
    fake: FakeSnowflake, provider: Snowflake, http: httpx.AsyncClient
) -> None:
    account = fake.add_account(ACCOUNT)
    fake.add_user(
        account, USER, public_key=rsa_key().public_key(), public_key_2=rsa_key(2048, 1).public_key()
    )
    verification = await verify(provider, http, key_form(rsa_key(2048, 1)))
    assert verification.outcome is Outcome.OK
    assert check(verification, "key fingerprint").detail == fingerprint_from_der(rsa_key(2048, 1))


async def test_a_token_with_a_role_restriction_uses_that_role(
    fake: FakeSnowflake, provider: Snowflake, http: httpx.AsyncClient, arranged: tuple[FakeAccount, FakeUser]
) -> None:
    token = fake.add_token(arranged[1], role_restriction=ROLE)
    verification = await verify(provider, http, form(token=token, warehouse=WAREHOUSE))
    assert verification.outcome is Outcome.OK
    assert check(verification, "role").detail == f"none asked for; the user's default is {ROLE}"
    assert check(verification, f"warehouse {WAREHOUSE}").passed


# --- failures --------------------------------------------------------------------------------------------


async def test_a_key_the_user_does_not_have_is_unauthorized_with_its_fingerprint(
    fake: FakeSnowflake, provider: Snowflake, http: httpx.AsyncClient, arranged: tuple[FakeAccount, FakeUser]
) -> None:
    other = rsa_key(2048, 1)
    verification = await verify(provider, http, key_form(other))
    assert verification.outcome is Outcome.UNAUTHORIZED
    ((failure_id, reason),) = fake.login_failures.items()
    assert reason == "JWT_TOKEN_INVALID_PUBLIC_KEY_FINGERPRINT_MISMATCH"
    assert verification.summary == (
        f"Snowflake rejected the key pair for {USER} on {ACCOUNT}. "
        f"Snowflake said: JWT token is invalid. [{failure_id}]"
    )
    text = hints_text(verification)
    fingerprint = fingerprint_from_der(other)
    assert check(verification, "key fingerprint").detail == fingerprint
    assert f"`DESC USER {USER}`" in text and f"`{fingerprint}`" in text
    assert f"`ALTER USER {USER} SET RSA_PUBLIC_KEY='MIIB…'`" in text and "RSA_PUBLIC_KEY_2" in text
    assert f"`SELECT SYSTEM$GET_LOGIN_FAILURE_DETAILS('{failure_id}');`" in text
    assert "orgname-account_name" in text


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({"user": "SOMEONE_ELSE"}, "JWT_TOKEN_INVALID_USER_IN_ISSUER"),
        ({"account": "xy99999.us-east-2.aws"}, None),  # not an account at all: 404
    ],
)
async def test_a_wrong_user_or_account_is_caught(
    fake: FakeSnowflake,
    provider: Snowflake,
    http: httpx.AsyncClient,
    arranged: tuple[FakeAccount, FakeUser],
    values: dict[str, str],
    reason: str | None,
) -> None:
    verification = await verify(provider, http, key_form(**values))
    if reason is None:
        assert verification.outcome is Outcome.INVALID_INPUT
        assert "Snowflake doesn't know the account xy99999.us-east-2.aws" in verification.summary
        assert "HTTP 404 Not Found" in verification.summary
        assert "AWS us-west-2" in hints_text(verification)
    else:
        assert verification.outcome is Outcome.UNAUTHORIZED
        assert list(fake.login_failures.values()) == [reason]


async def test_a_bot_clock_running_late_is_caught_by_snowflake(
    fake: FakeSnowflake, http: httpx.AsyncClient, arranged: tuple[FakeAccount, FakeUser]
) -> None:
    provider = snowflake(sleep=Sleeps(), clock=lambda: 1_800_000_000)
    fake.clock = lambda: 1_800_000_000 + 61
    verification = await verify(provider, http, key_form())
    assert verification.outcome is Outcome.UNAUTHORIZED
    assert list(fake.login_failures.values()) == ["JWT_TOKEN_EXPIRED"]


async def test_an_unknown_token_is_unauthorized_with_token_hints(
    fake: FakeSnowflake, provider: Snowflake, http: httpx.AsyncClient, arranged: tuple[FakeAccount, FakeUser]
) -> None:
    verification = await verify(provider, http, form(token=new_token()))
    assert verification.outcome is Outcome.UNAUTHORIZED
    text = hints_text(verification)
    assert f"`SHOW USER PATS FOR USER {USER}`" in text and "15 days" in text
    assert "RSA_PUBLIC_KEY" not in text


@pytest.mark.parametrize(
    ("flag", "says"),
    [
        ("disabled", f"ALTER USER {USER} SET DISABLED = FALSE"),
        ("locked", f"ALTER USER {USER} SET MINS_TO_UNLOCK = 0"),
    ],
)
async def test_a_disabled_or_locked_user_is_unauthorized(
    fake: FakeSnowflake,
    provider: Snowflake,
    http: httpx.AsyncClient,
    arranged: tuple[FakeAccount, FakeUser],
    flag: str,
    says: str,
) -> None:
    setattr(arranged[1], flag, True)
    verification = await verify(provider, http, key_form())
    assert verification.outcome is Outcome.UNAUTHORIZED
    assert f"User {USER} on {ACCOUNT} is {flag}" in verification.summary
    assert says in hints_text(verification)


@pytest.mark.parametrize("use_token", [False, True], ids=["key-pair", "token"])
async def test_a_network_policy_is_forbidden_and_names_the_address(
    fake: FakeSnowflake,
    provider: Snowflake,
    http: httpx.AsyncClient,
    arranged: tuple[FakeAccount, FakeUser],
    use_token: bool,
) -> None:
    fake.block_network(arranged[0], "198.51.100.23")
    values = form(token=fake.add_token(arranged[1])) if use_token else key_form()
    verification = await verify(provider, http, values)
    assert verification.outcome is Outcome.FORBIDDEN
    text = hints_text(verification)
    assert "(198.51.100.23, the address Snowflake saw)" in text and "NETWORK_POLICY" in text
    assert ("only accepted from users under a network policy" in text) is use_token


async def test_a_role_not_granted_is_forbidden_with_a_grant(
    fake: FakeSnowflake, provider: Snowflake, http: httpx.AsyncClient, arranged: tuple[FakeAccount, FakeUser]
) -> None:
    verification = await verify(provider, http, key_form(role="sysadmin"))
    assert verification.outcome is Outcome.FORBIDDEN
    assert verification.summary.startswith(f"The key pair works, but role SYSADMIN isn't granted to {USER}.")
    assert f"`GRANT ROLE SYSADMIN TO USER {USER}`" in hints_text(verification)
    assert "ROLE_RESTRICTION" not in hints_text(verification)


async def test_a_role_outside_a_tokens_restriction_is_forbidden(
    fake: FakeSnowflake, provider: Snowflake, http: httpx.AsyncClient, arranged: tuple[FakeAccount, FakeUser]
) -> None:
    arranged[1].roles.add("ANALYST")
    token = fake.add_token(arranged[1], role_restriction=ROLE)
    verification = await verify(provider, http, form(token=token, role="analyst"))
    assert verification.outcome is Outcome.FORBIDDEN
    assert "ROLE_RESTRICTION" in hints_text(verification)


async def test_a_rate_limit_honours_retry_after_then_succeeds(
    fake: FakeSnowflake,
    provider: Snowflake,
    http: httpx.AsyncClient,
    sleeps: Sleeps,
    arranged: tuple[FakeAccount, FakeUser],
) -> None:
    fake.fail_next(429, retry_after=2)
    verification = await verify(provider, http, key_form())
    assert verification.outcome is Outcome.OK
    assert sleeps == [2.0]


async def test_a_second_rate_limit_is_reported_with_the_wait(
    fake: FakeSnowflake,
    provider: Snowflake,
    http: httpx.AsyncClient,
    sleeps: Sleeps,
    arranged: tuple[FakeAccount, FakeUser],
) -> None:
    fake.fail_next(429, retry_after=7, times=2)
    verification = await verify(provider, http, key_form())
    assert verification.outcome is Outcome.RATE_LIMITED
    assert verification.retry_after == 7.0 and sleeps == [7.0]
    assert "try again in about 7 seconds" in hints_text(verification)
    assert "HTTP 429 Too Many Requests" in verification.summary


async def test_a_long_retry_after_is_not_waited_for(
    fake: FakeSnowflake,
    provider: Snowflake,
    http: httpx.AsyncClient,
    sleeps: Sleeps,
    arranged: tuple[FakeAccount, FakeUser],
) -> None:
    fake.fail_next(429, retry_after=120)
    verification = await verify(provider, http, key_form())
    assert verification.outcome is Outcome.RATE_LIMITED
    assert verification.retry_after == 120.0 and sleeps == []
    assert "2 minutes" in hints_text(verification)


async def test_a_429_without_retry_after_backs_off_with_jitter(
    fake: FakeSnowflake,
    provider: Snowflake,
    http: httpx.AsyncClient,
    sleeps: Sleeps,
    arranged: tuple[FakeAccount, FakeUser],
) -> None:
    fake.fail_next(429, times=2)
    verification = await verify(provider, http, key_form())
    assert verification.outcome is Outcome.RATE_LIMITED
    assert sleeps == [1.125] and verification.retry_after is None
    assert "in a minute" in hints_text(verification)


async def test_one_5xx_is_retried_under_the_same_request_id(
    fake: FakeSnowflake,
    provider: Snowflake,
    http: httpx.AsyncClient,
    sleeps: Sleeps,
    arranged: tuple[FakeAccount, FakeUser],
) -> None:
    fake.fail_next(503)
    verification = await verify(provider, http, key_form())
    assert verification.outcome is Outcome.OK
    first, second = fake.requests
    assert first.query["requestId"] == second.query["requestId"]
    assert first.claims is not None and second.claims is not None
    assert sleeps == [1.125]
    assert fake.executions == {second.query["requestId"]: 1}


async def test_a_second_5xx_is_a_provider_error_with_the_request_id(
    fake: FakeSnowflake,
    provider: Snowflake,
    http: httpx.AsyncClient,
    sleeps: Sleeps,
    arranged: tuple[FakeAccount, FakeUser],
) -> None:
    fake.fail_next(500, times=2, code="000603", message="Internal error processing the request.")
    verification = await verify(provider, http, key_form())
    assert verification.outcome is Outcome.PROVIDER_ERROR
    request_id = fake.requests[0].query["requestId"]
    assert verification.request_id == request_id
    assert f"(request {request_id})" in hints_text(verification)
    said = "Snowflake had a server error. Snowflake said: Internal error processing the request."
    assert verification.summary == said
    assert len(sleeps) == 1


async def test_a_resent_statement_carries_its_request_id_and_retry_true(
    fake: FakeSnowflake,
    provider: Snowflake,
    http: httpx.AsyncClient,
    sleeps: Sleeps,
    arranged: tuple[FakeAccount, FakeUser],
) -> None:
    fake.fail_next(502)
    verification = await verify(provider, http, key_form(warehouse=WAREHOUSE, role=ROLE))
    assert verification.outcome is Outcome.OK
    submits = fake.requests_to(STATEMENTS, "POST")
    first, again, show = submits
    assert first.query == {"requestId": first.query["requestId"]}
    assert again.query == {"requestId": first.query["requestId"], "retry": "true"}
    assert show.query == {"requestId": show.query["requestId"]}  # another statement, sent once
    assert fake.executions == {first.query["requestId"]: 1, show.query["requestId"]: 1}


async def test_a_replayed_request_is_not_run_twice(
    fake: FakeSnowflake, http: httpx.AsyncClient, arranged: tuple[FakeAccount, FakeUser]
) -> None:
    # A client that lost the first answer sends the same request again.
    request_id = "0b6f3c55-8a63-4c8e-9a53-2d3f9d0c1e11"
    url = f"https://{ACCOUNT}.snowflakecomputing.com{STATEMENTS}?requestId={request_id}"
    answers = []
    for query in ("", "&retry=true"):
        now = int(fake.clock())
        headers = {
            "Authorization": f"Bearer {_bearer(rsa_key(), iat=now, exp=now + 60)}",
            "X-Snowflake-Authorization-Token-Type": "KEYPAIR_JWT",
            "User-Agent": "tests/1",
        }
        answers.append(
            await http.post(url + query, json={"statement": PROBE_STATEMENT, "timeout": 20}, headers=headers)
        )
    bad = await http.post(url + "&retry=yes", json={"statement": PROBE_STATEMENT}, headers=headers)
    assert bad.status_code == 400
    first, again = answers
    assert first.status_code == again.status_code == 200
    assert first.json()["statementHandle"] == again.json()["statementHandle"]
    assert fake.executions == {request_id: 1}


async def test_a_statement_that_answers_202_is_polled_to_its_result(
    fake: FakeSnowflake,
    provider: Snowflake,
    http: httpx.AsyncClient,
    sleeps: Sleeps,
    arranged: tuple[FakeAccount, FakeUser],
) -> None:
    fake.answer_async(polls=2)
    verification = await verify(provider, http, key_form(role=ROLE))
    assert verification.outcome is Outcome.OK
    assert check(verification, f"role {ROLE}").passed
    assert sleeps == [1.0, 1.0, 1.0]
    polls = fake.requests_to(verification.request_id or "-", "GET")
    assert len(polls) == 3 and all(p.claims is not None for p in polls)


async def test_polling_is_bounded_and_then_cancelled(
    fake: FakeSnowflake,
    provider: Snowflake,
    http: httpx.AsyncClient,
    sleeps: Sleeps,
    arranged: tuple[FakeAccount, FakeUser],
) -> None:
    fake.answer_async(polls=None)
    verification = await verify(provider, http, key_form())
    assert verification.outcome is Outcome.PROVIDER_ERROR
    assert sleeps == [1.0] * 20
    handle = verification.request_id
    assert handle is not None and fake.cancelled == [handle]
    assert len(fake.requests_to(handle, "GET")) == 20
    assert len(fake.requests_to(f"{handle}/cancel", "POST")) == 1
    assert verification.summary == "Snowflake didn't finish the check within 20 seconds."
    assert not check(verification, "check finished").passed
    assert "busy" in hints_text(verification)


async def test_a_shorter_poll_limit_is_honoured(
    fake: FakeSnowflake, http: httpx.AsyncClient, sleeps: Sleeps, arranged: tuple[FakeAccount, FakeUser]
) -> None:
    fake.answer_async(polls=None)
    provider = snowflake(sleep=sleeps, poll_interval=2.0, poll_limit=5.0)
    verification = await verify(provider, http, key_form())
    assert verification.outcome is Outcome.PROVIDER_ERROR
    assert sleeps == [2.0, 2.0, 2.0]


@pytest.mark.parametrize(
    ("status", "code", "message", "outcome", "says"),
    [
        (
            408,
            "000630",
            "Statement reached its statement or warehouse timeout of 20 second(s) and was canceled.",
            Outcome.PROVIDER_ERROR,
            "timed out the check",
        ),
        (
            422,
            "001003",
            "SQL compilation error: syntax error.",
            Outcome.PROVIDER_ERROR,
            "unexpected answer (HTTP 422)",
        ),
        (
            403,
            None,
            None,
            Outcome.FORBIDDEN,
            "Snowflake refused the request. Snowflake said: HTTP 403 Forbidden.",
        ),
        (
            401,
            "390144",
            "JWT token is invalid. [0b6f3c55-8a63-4c8e-9a53-2d3f9d0c1e11]",
            Outcome.UNAUTHORIZED,
            "rejected the key pair",
        ),
        (
            422,
            "390189",
            "Role 'X' specified in the connect string is not granted to this user.",
            Outcome.FORBIDDEN,
            "isn't granted",
        ),
        (
            401,
            "390422",
            "Incoming request with IP/Token 2001:db8::7 is not allowed to access Snowflake.",
            Outcome.FORBIDDEN,
            "network policy",
        ),
    ],
    ids=["408", "422-sql", "403-api", "401-jwt", "422-role", "401-network-policy"],
)
async def test_failures_map_by_code_then_status(
    fake: FakeSnowflake,
    provider: Snowflake,
    http: httpx.AsyncClient,
    arranged: tuple[FakeAccount, FakeUser],
    status: int,
    code: str | None,
    message: str | None,
    outcome: Outcome,
    says: str,
) -> None:
    fake.fail_next(status, code=code, message=message)
    verification = await verify(provider, http, key_form())
    assert verification.outcome is outcome
    assert says in verification.summary
    assert verification.hints
    if code == "390422":
        assert "(2001:db8::7, the address Snowflake saw)" in hints_text(verification)


async def test_a_context_error_on_the_probe_keeps_the_credential_good(
    fake: FakeSnowflake, provider: Snowflake, http: httpx.AsyncClient, arranged: tuple[FakeAccount, FakeUser]
) -> None:
    message = "No active warehouse selected in the current session."
    fake.fail_next(422, code="000606", message=message)
    verification = await verify(provider, http, key_form(role=ROLE, warehouse="etl_wh"))
    assert verification.outcome is Outcome.OK
    failed = check(verification, "warehouse ETL_WH")
    assert not failed.passed and failed.detail == message
    assert "GRANT USAGE ON WAREHOUSE ETL_WH TO ROLE REPORTING" in hints_text(verification)


async def test_text_snowflake_echoes_back_is_scrubbed(
    fake: FakeSnowflake, provider: Snowflake, http: httpx.AsyncClient, arranged: tuple[FakeAccount, FakeUser]
) -> None:
    token = fake.add_token(arranged[1])
    fake.fail_next(401, code="390144", message=f"Token {token} is not valid here.")
    verification = await verify(provider, http, form(token=token))
    assert verification.outcome is Outcome.UNAUTHORIZED
    assert token not in repr(verification)
    assert "Token [redacted] is not valid here." in verification.summary


async def test_no_jwt_or_key_material_reaches_logs_or_results(
    fake: FakeSnowflake,
    provider: Snowflake,
    http: httpx.AsyncClient,
    sent: Sent,
    arranged: tuple[FakeAccount, FakeUser],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    pem = pem_of(rsa_key(), PASSPHRASE)
    values = form(private_key=pem, passphrase=PASSPHRASE, role="nope", warehouse=WAREHOUSE)
    verification = await verify(provider, http, values)
    assert verification.outcome is Outcome.FORBIDDEN
    bearers = [r.headers["authorization"].removeprefix("Bearer ") for r in sent]
    body_lines = [line for line in pem.splitlines() if not line.startswith("-----")]
    readable = [repr(verification), caplog.text, repr(provider), repr(provider.clean(values))]
    for text in readable:
        for secret in [*bearers, PASSPHRASE, *body_lines]:
            assert secret not in text


# --- the network ------------------------------------------------------------------------------------


async def test_a_refused_connection_is_unreachable(sleeps: Sleeps) -> None:
    provider = snowflake(f"http://127.0.0.1:{closed_port()}", sleep=sleeps)
    async with httpx.AsyncClient(timeout=5) as http:
        verification = await verify(provider, http, key_form())
    assert verification.outcome is Outcome.UNREACHABLE
    assert "refused" in verification.summary
    assert verification.hints == provider.unreachable_hints
    assert "orgname-account_name" in hints_text(verification) and "PrivateLink" in hints_text(verification)
    assert sleeps == []


@pytest.fixture
def slow_server(fake: FakeSnowflake) -> Iterator[str]:
    fake.delay = 1.0
    with serve_asgi(fake.app) as url:
        yield url


async def test_a_timeout_is_retried_once_then_unreachable(
    slow_server: str, fake: FakeSnowflake, sleeps: Sleeps, arranged: tuple[FakeAccount, FakeUser]
) -> None:
    provider = snowflake(slow_server, sleep=sleeps, request_timeout=httpx.Timeout(0.2))
    async with httpx.AsyncClient() as http:
        verification = await verify(provider, http, key_form())
    assert verification.outcome is Outcome.UNREACHABLE
    assert "did not answer in time" in verification.summary
    assert len(sleeps) == 1


async def test_the_deadline_bounds_the_whole_verification(
    fake: FakeSnowflake, provider: Snowflake, http: httpx.AsyncClient, arranged: tuple[FakeAccount, FakeUser]
) -> None:
    provider.deadline_seconds = 0.2
    fake.hold()
    try:
        verification = await verify(provider, http, key_form())
    finally:
        fake.release()
    assert verification.outcome is Outcome.UNREACHABLE
    assert "did not finish answering within" in verification.summary


@pytest.mark.parametrize("template", ["{url}/{{account}}", "{url}"], ids=["path-per-account", "one-address"])
async def test_over_real_http_through_the_configured_url(
    fake: FakeSnowflake, arranged: tuple[FakeAccount, FakeUser], template: str
) -> None:
    token = fake.add_token(arranged[1])
    with serve_asgi(fake.app) as url:
        provider = Snowflake.from_environment({"SNOWFLAKE_API_URL": template.format(url=url)})
        async with httpx.AsyncClient(timeout=5) as http:
            by_key = await verify(provider, http, key_form(warehouse=WAREHOUSE, role=ROLE))
            by_token = await verify(provider, http, form(token=token))
            elsewhere = await verify(provider, http, key_form(account="myorg-elsewhere"))
    assert by_key.outcome is by_token.outcome is Outcome.OK
    if "{account}" in template:
        assert fake.requests[0].path == f"/{ACCOUNT}{STATEMENTS}"
        assert elsewhere.outcome is Outcome.INVALID_INPUT
        assert "its operator can check it" in hints_text(elsewhere)
    else:
        assert fake.requests[0].path == STATEMENTS
        assert elsewhere.outcome is Outcome.UNAUTHORIZED  # the JWT names an account the server lacks


# --- the fake itself -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"iat": None}, "JWT_TOKEN_INVALID_ISSUE_TIME_OR_EXPIRATION_TIME"),
        ({"exp_offset": -5}, "JWT_TOKEN_EXPIRED"),
        ({"exp_offset": 7200}, "JWT_TOKEN_LIFETIME_OVER_ONE_HOUR"),
        ({"sub": "MYORG-ANALYTICS.OTHER"}, "JWT_TOKEN_INVALID_USER_IN_ISSUER"),
    ],
    ids=["no-iat", "expired", "too-long", "sub-mismatch"],
)
async def test_the_fake_checks_jwt_claims(
    fake: FakeSnowflake,
    http: httpx.AsyncClient,
    arranged: tuple[FakeAccount, FakeUser],
    claims: dict[str, Any],
    reason: str,
) -> None:
    now = int(fake.clock())
    extra = dict(claims)
    payload: dict[str, Any] = {"iat": now, "exp": now + extra.pop("exp_offset", 60), **extra}
    payload = {k: v for k, v in payload.items() if v is not None}
    headers = {
        "Authorization": f"Bearer {_bearer(rsa_key(), **payload)}",
        "X-Snowflake-Authorization-Token-Type": "KEYPAIR_JWT",
        "User-Agent": "tests/1",
    }
    response = await http.post(
        f"https://{ACCOUNT}.snowflakecomputing.com{STATEMENTS}",
        json={"statement": "SELECT 1"},
        headers=headers,
    )
    assert response.status_code == 401 and response.json()["code"] == "390144"
    assert list(fake.login_failures.values()) == [reason]


async def test_the_fake_refuses_other_statements_and_needs_a_user_agent(
    fake: FakeSnowflake, http: httpx.AsyncClient, arranged: tuple[FakeAccount, FakeUser]
) -> None:
    now = int(fake.clock())
    url = f"https://{ACCOUNT}.snowflakecomputing.com{STATEMENTS}"
    headers = {
        "Authorization": f"Bearer {_bearer(rsa_key(), iat=now, exp=now + 60)}",
        "X-Snowflake-Authorization-Token-Type": "KEYPAIR_JWT",
    }
    no_agent = await http.post(
        url, json={"statement": PROBE_STATEMENT}, headers={**headers, "User-Agent": ""}
    )
    resume = await http.post(
        url,
        json={"statement": "ALTER WAREHOUSE REPORTING_WH RESUME"},
        headers={**headers, "User-Agent": "tests/1"},
    )
    assert (no_agent.status_code, no_agent.json()["code"]) == (400, "391903")
    assert (resume.status_code, resume.json()["code"], resume.json()["sqlState"]) == (422, "001003", "42000")
    assert arranged[0].warehouses[WAREHOUSE].state == "SUSPENDED"


async def test_the_fake_can_hold_requests_until_released(
    fake: FakeSnowflake, provider: Snowflake, http: httpx.AsyncClient, arranged: tuple[FakeAccount, FakeUser]
) -> None:
    fake.hold()
    task = asyncio.create_task(verify(provider, http, key_form()))
    await fake.wait_until_held()
    assert not task.done() and fake.held == 1
    fake.release()
    assert (await task).outcome is Outcome.OK
    assert fake.held == 0


# --- the time budget -------------------------------------------------------------------------------------


class Clock:
    """A monotonic clock the test moves: by each sleep, and by ``per_request`` for each request sent."""

    def __init__(self, per_request: float) -> None:
        self.now = 0.0
        self.per_request = per_request
        self.sleeps: list[float] = []
        self.sent: list[str] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    async def on_request(self, request: httpx.Request) -> None:
        self.sent.append(f"{request.method} {request.url.path}")
        self.now += self.per_request


def clocked(clock: Clock, **options: Any) -> Snowflake:
    return snowflake(retry=RetryPolicy(rng=lambda: 0.5), sleep=clock.sleep, monotonic=clock, **options)


@asynccontextmanager
async def clocked_http(fake: FakeSnowflake, clock: Clock) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=fake.app)
    hooks = {"request": [clock.on_request]}
    async with httpx.AsyncClient(transport=transport, timeout=5, event_hooks=hooks) as http:
        yield http


async def test_a_timeout_is_not_retried_when_the_retry_cannot_finish_in_time(
    slow_server: str, fake: FakeSnowflake, arranged: tuple[FakeAccount, FakeUser]
) -> None:
    # The first POST is taken to have used 50 of the 60 seconds before it timed out.
    clock = Clock(per_request=50.0)
    provider = snowflake(slow_server, sleep=clock.sleep, monotonic=clock, request_timeout=httpx.Timeout(0.2))
    async with httpx.AsyncClient(event_hooks={"request": [clock.on_request]}) as http:
        verification = await verify(provider, http, key_form())
    assert verification.outcome is Outcome.UNREACHABLE
    assert verification.summary == "Snowflake did not answer in time."
    assert verification.hints == provider.unreachable_hints
    assert clock.sleeps == [] and clock.sent == [f"POST {STATEMENTS}"]


@pytest.mark.parametrize(
    ("status", "retry_after", "per_request", "outcome", "says"),
    [
        (429, 20, 40.0, Outcome.RATE_LIMITED, "try again in about 20 seconds"),
        (503, None, 52.0, Outcome.PROVIDER_ERROR, "Snowflake returned a server error (request "),
    ],
    ids=["retry-after-too-long-for-what-is-left", "backoff-too-long-for-what-is-left"],
)
async def test_a_wait_that_does_not_fit_the_deadline_is_skipped(
    fake: FakeSnowflake,
    arranged: tuple[FakeAccount, FakeUser],
    status: int,
    retry_after: int | None,
    per_request: float,
    outcome: Outcome,
    says: str,
) -> None:
    clock = Clock(per_request=per_request)
    fake.fail_next(status, retry_after=retry_after)
    async with clocked_http(fake, clock) as http:
        verification = await verify(clocked(clock), http, key_form())
    assert verification.outcome is outcome
    assert says in hints_text(verification)
    assert verification.retry_after == retry_after
    assert clock.sleeps == [] and clock.sent == [f"POST {STATEMENTS}"]


async def test_a_wait_that_fits_the_deadline_is_taken(
    fake: FakeSnowflake, arranged: tuple[FakeAccount, FakeUser]
) -> None:
    clock = Clock(per_request=10.0)
    fake.fail_next(429, retry_after=20)
    async with clocked_http(fake, clock) as http:
        verification = await verify(clocked(clock), http, key_form())
    assert verification.outcome is Outcome.OK
    assert clock.sleeps == [20.0] and len(clock.sent) == 2


async def test_polling_stops_and_cancels_before_the_deadline(
    fake: FakeSnowflake, arranged: tuple[FakeAccount, FakeUser]
) -> None:
    # Each request takes 2 s and each poll waits 1 s; the poll limit alone would allow ten minutes.
    clock = Clock(per_request=2.0)
    fake.answer_async(polls=None)
    async with clocked_http(fake, clock) as http:
        verification = await verify(clocked(clock, poll_limit=600.0), http, key_form())
    assert verification.outcome is Outcome.PROVIDER_ERROR
    handle = verification.request_id
    assert handle is not None and fake.cancelled == [handle]
    assert clock.sent[-1] == f"POST {STATEMENTS}/{handle}/cancel"
    assert clock.now < 60.0
    polls = fake.requests_to(handle, "GET")
    assert len(polls) == len(clock.sleeps) == 16
    assert verification.summary == "Snowflake didn't finish the check within 50 seconds."
    assert check(verification, "check finished").detail == "still running after 50 s; cancelled"


async def test_no_second_statement_starts_without_time_to_answer(
    fake: FakeSnowflake, arranged: tuple[FakeAccount, FakeUser]
) -> None:
    clock = Clock(per_request=50.0)
    async with clocked_http(fake, clock) as http:
        verification = await verify(clocked(clock), http, key_form(role=ROLE, warehouse=WAREHOUSE))
    assert verification.outcome is Outcome.OK
    assert check(verification, f"warehouse {WAREHOUSE}").passed  # CURRENT_WAREHOUSE() says so
    assert fake.statements == [PROBE_STATEMENT]


# --- opening a stored key ----------------------------------------------------------------------------


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Each time a PEM is actually loaded: the id of the thread that loaded it."""
    calls: list[int] = []
    real = keys.load_key_pair

    def counting(pem: str, passphrase: str, *, checked: bool = True) -> keys.KeyPair:
        calls.append(threading.get_ident())
        return real(pem, passphrase, checked=checked)

    monkeypatch.setattr(keys, "load_key_pair", counting)
    return calls


async def test_a_stored_encrypted_key_is_opened_once_and_off_the_event_loop(
    provider: Snowflake, http: httpx.AsyncClient, arranged: tuple[FakeAccount, FakeUser], loads: list[int]
) -> None:
    stored = provider.clean(key_form())  # as read back from the store: not validated again
    first = await provider.verify(stored, http)
    again = await provider.verify(stored, http)
    assert first.outcome is again.outcome is Outcome.OK
    assert len(loads) == 1
    assert loads[0] != threading.get_ident()


def test_validation_fills_the_cache_the_hint_reads(loads: list[int]) -> None:
    provider = snowflake()
    cleaned = provider.clean(key_form())
    assert provider.validate(cleaned) == {}
    assert provider.credential_hint(cleaned) == fingerprint_from_der(rsa_key())
    assert len(loads) == 1


class HandTime:
    """A monotonic clock that moves only when a test moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_cached_key_goes_when_forgotten_and_when_its_time_is_up_however_often_used(
    loads: list[int],
) -> None:
    clock = HandTime()
    cache = keys.KeyCache(ttl=300, clock=clock)
    first, second = pem_of(rsa_key(2048, 0)), pem_of(rsa_key(2048, 1))
    cache.load(first, "")
    cache.load(second, "")
    cache.forget(first, "")
    assert cache.peek(first, "") is None and cache.peek(second, "") is not None
    clock.now += 299
    assert cache.peek(second, "") is not None
    clock.now += 1
    assert len(cache) == 1  # nothing runs on its own: the next use drops it
    assert cache.peek(second, "") is None and len(cache) == 0
    cache.load(second, "")
    assert len(loads) == 3


def test_forgetting_a_fingerprint_drops_its_key_however_it_was_encrypted(loads: list[int]) -> None:
    cache, key = keys.KeyCache(), rsa_key()
    other = pem_of(rsa_key(2048, 1))
    for pem, passphrase in ((pem_of(key), ""), (pem_of(key, PASSPHRASE), PASSPHRASE), (other, "")):
        cache.load(pem, passphrase)
    cache.forget_fingerprint(fingerprint_from_der(key))
    assert len(cache) == 1 and cache.peek(other, "") is not None


async def test_a_key_is_kept_while_it_works_and_dropped_when_it_fails_or_is_forgotten(
    fake: FakeSnowflake, sleeps: Sleeps, http: httpx.AsyncClient, arranged: tuple[FakeAccount, FakeUser]
) -> None:
    cache = keys.KeyCache()
    provider = snowflake(retry=RetryPolicy(rng=lambda: 0.5), sleep=sleeps, key_cache=cache)
    assert (await verify(provider, http, key_form())).ok
    assert len(cache) == 1
    provider.forget(None)
    provider.forget(fingerprint_from_der(rsa_key(2048, 1)))
    assert len(cache) == 1
    provider.forget(fingerprint_from_der(rsa_key()))
    assert len(cache) == 0
    failed = await verify(provider, http, key_form(rsa_key(2048, 1)))
    assert failed.outcome is Outcome.UNAUTHORIZED and len(cache) == 0


def test_the_key_cache_keeps_no_secret_text_and_drops_the_least_recently_used(loads: list[int]) -> None:
    cache = keys.KeyCache(size=2)
    pems = [pem_of(rsa_key(2048, n), PASSPHRASE) for n in range(3)]
    cache.load(pems[0], PASSPHRASE)
    cache.load(pems[1], PASSPHRASE)
    assert cache.peek(pems[0], PASSPHRASE) is not None  # now the most recently used
    cache.load(pems[2], PASSPHRASE)
    assert len(cache) == 2 and len(loads) == 3
    assert cache.peek(pems[1], PASSPHRASE) is None
    assert cache.load(pems[0], PASSPHRASE).fingerprint == fingerprint_from_der(rsa_key(2048, 0))
    assert len(loads) == 3
    state = repr(vars(cache))
    for pem in pems[:1] + pems[2:]:
        unkeyed = hashlib.sha256((pem + PASSPHRASE).encode()).digest()
        for digest in tuple(vars(cache)["_entries"]):
            assert len(digest) == 32 and digest != unkeyed and PASSPHRASE.encode() not in digest
        for secret in [PASSPHRASE, *(line for line in pem.splitlines() if not line.startswith("-----"))]:
            assert secret not in state


# --- the outbound policy: the account decides a host, which is checked before anything is sent ----------


@pytest.mark.parametrize(
    "typed",
    [
        "evil.com",
        "evil.com#",
        "https://evil.com/",
        "x@evil.com",
        "127.0.0.1",
        "xy12345.evil.com",
        "myorg-acct.snowflakecomputing.com.evil.com",
        "localhost",
        "a.b.c.d",
        "myorg-acct.snowflakecomputing.cn",
    ],
)
def test_a_typed_account_yields_a_host_only_under_snowflakes_domains(typed: str) -> None:
    account = names.normalise_account(typed)
    if account is not None:
        host = snowflake().typed_host(account)
        assert host is not None and host.endswith((".snowflakecomputing.com", ".snowflakecomputing.cn"))
        assert snowflake().policy.problem(host) is None


@pytest.mark.parametrize(
    "addresses", [["10.0.0.7"], ["127.0.0.1"], ["::ffff:169.254.169.254"], ["2002:a00:7::1"]]
)
async def test_an_account_resolving_to_a_private_address_is_sent_nothing(
    fake: FakeSnowflake, http: httpx.AsyncClient, sent: Sent, addresses: list[str]
) -> None:
    arrange(fake)
    provider = snowflake(policy=Policy(SNOWFLAKE_HOSTS, resolve=FakeResolver(addresses)))
    verification = await verify(provider, http, key_form())
    assert verification.outcome is Outcome.INVALID_INPUT
    assert verification.summary.startswith(
        "myorg-analytics.snowflakecomputing.com resolves to an address the bot does not connect to"
    )
    assert "CONNECTIONS_ALLOW_PRIVATE_ADDRESSES=true" in hints_text(verification)
    assert sent == []


def test_an_operator_url_with_the_account_in_its_host_goes_through_the_policy() -> None:
    privatelink = Snowflake.from_environment(
        {"SNOWFLAKE_API_URL": "https://{account}.privatelink.snowflakecomputing.com"}
    )
    assert privatelink.typed_host(ACCOUNT) == "myorg-analytics.privatelink.snowflakecomputing.com"
    assert not privatelink.policy.allow_private
    allowed = Snowflake.from_environment(
        {
            "SNOWFLAKE_API_URL": "https://{account}.privatelink.snowflakecomputing.com",
            "CONNECTIONS_ALLOW_PRIVATE_ADDRESSES": "1",
        }
    )
    assert allowed.policy.allow_private
    # The host is the operator's when the account only fills the path: not checked, as the Cloud API URL.
    assert (
        Snowflake.from_environment({"SNOWFLAKE_API_URL": "http://127.0.0.1:9/{account}"}).typed_host(ACCOUNT)
        is None
    )
    # An operator URL made only of the account cannot be turned into an address by what is typed.
    bare = Snowflake.from_environment({"SNOWFLAKE_API_URL": "https://{account}"})
    found = bare.validate(bare.clean(key_form(account="127.0.0.1")))
    assert "doesn't make an address the bot may call" in found["account"]


async def test_a_fixed_operator_url_is_called_as_it_is(
    fake: FakeSnowflake, http: httpx.AsyncClient, sent: Sent
) -> None:
    arrange(fake)
    resolver = FakeResolver(addresses=["127.0.0.1"])
    provider = Snowflake("http://fake", sleep=Sleeps(), policy=Policy(resolve=resolver))
    verification = await verify(provider, http, key_form())
    assert verification.outcome is Outcome.OK
    assert resolver.asked == [] and {r.url.host for r in sent} == {"fake"}


# --- hints: the bot's own mrkdwn, each value a user or Snowflake chose inert in it -------------------


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda v: errs.key_rejected_hints(v, "SHA256:abc+/=", None), id="key-user"),
        pytest.param(lambda v: errs.key_rejected_hints("BOB", "SHA256:abc+/=", v), id="key-failure-id"),
        pytest.param(lambda v: errs.token_rejected_hints(v, v), id="token"),
        pytest.param(errs.disabled_hints, id="disabled"),
        pytest.param(errs.locked_hints, id="locked"),
        pytest.param(lambda v: errs.role_hints(v, v, token=True), id="role"),
        pytest.param(lambda v: (errs.warehouse_hint(v, v),), id="warehouse"),
        pytest.param(lambda v: (errs.warehouse_case_hint(v, v),), id="warehouse-case"),
        pytest.param(lambda v: (errs.database_hint(v, v),), id="database"),
        pytest.param(errs.provider_error_hints, id="request"),
    ],
)
def test_a_value_in_a_hint_cannot_close_its_code_span_format_or_link(build: Any) -> None:
    assert hint_problems(build) == []


def test_a_hint_keeps_its_own_code_and_link() -> None:
    hints = errs.disabled_hints("BOB") + errs.provider_error_hints("01b2-c3")
    assert "`ALTER USER BOB SET DISABLED = FALSE`" in hints[0]
    assert "check https://status.snowflake.com and" in hints[2]
