"""The outbound policy: which typed hosts the bot calls, which addresses it connects to, and that a
request goes to the checked address with TLS verified against the name."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bot.outbound import (
    ANY_NAME,
    DIRECT,
    Blocked,
    HostPatterns,
    HostProblem,
    Pinned,
    Policy,
    is_public,
    resolve_host,
)
from bot.settings import ConfigError
from tests.fakes.dns import PUBLIC_IP, FakeResolver

NAME = "pkc-abcde.us-west4.gcp.confluent.cloud"
ONLY_CLOUD = HostPatterns(("*.confluent.cloud",))


def teredo(server: str, client: str) -> str:
    """A Teredo address (2001::/32): the server's IPv4, then flags and port, then the client's IPv4
    XOR-ed with all ones, as RFC 4380 stores it."""
    value = (0x20010000 << 96) | (int(ipaddress.IPv4Address(server)) << 64) | (0x8000 << 48) | (0x1234 << 32)
    return str(ipaddress.IPv6Address(value | (int(ipaddress.IPv4Address(client)) ^ 0xFFFFFFFF)))


# --- addresses -------------------------------------------------------------------------------------------

REFUSED = [
    "0.0.0.0",
    "0.1.2.3",
    "10.0.0.1",
    "100.64.0.1",  # carrier-grade NAT
    "100.127.255.254",
    "127.0.0.1",
    "127.255.255.254",
    "169.254.169.254",  # cloud metadata
    "172.16.0.1",
    "172.31.255.254",
    "192.0.0.9",
    "192.0.2.1",  # documentation
    "192.88.99.1",  # 6to4 relay anycast
    "192.168.1.1",
    "198.18.0.1",  # benchmarking
    "198.51.100.7",
    "203.0.113.7",
    "224.0.0.251",  # multicast
    "239.255.255.250",
    "240.0.0.1",  # reserved
    "255.255.255.255",
    "::",
    "::1",
    "fe80::1",
    "fe80::1%eth0",
    "fec0::1",  # site-local
    "fc00::1",  # unique local
    "fd00:ec2::254",  # the EC2 metadata service over IPv6
    "ff02::1",  # multicast
    "100::1",  # discard
    "2001:db8::1",  # documentation
    "3fff::1",
    "2001:2::1",  # benchmarking
    "2001:10::1",  # ORCHID
    "5f00::1",
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:169.254.169.254",
    "::ffff:10.0.0.1",
    "::127.0.0.1",  # IPv4-compatible
    "::10.0.0.1",
    "::ffff:0:10.0.0.1",  # IPv4-translated (SIIT)
    "64:ff9b::127.0.0.1",  # NAT64
    "64:ff9b::a9fe:a9fe",
    "64:ff9b::10.0.0.1",
    "64:ff9b:1::808:808",  # local-use NAT64 is a private network's, whatever it embeds
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
    "2002:c0a8:101::1",  # 6to4 of 192.168.1.1
    teredo("65.54.227.120", "10.0.0.1"),  # a private client behind a public server
    teredo("127.0.0.1", "8.8.8.8"),  # a loopback server
    "not an address",
    "",
]

PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    PUBLIC_IP,
    "100.63.255.255",  # just below CGNAT
    "100.128.0.0",  # just above it
    "2606:4700:4700::1111",
    "2a00:1450:4001::200e",
    "::ffff:8.8.8.8",
    "64:ff9b::8.8.8.8",
    "2002:808:808::1",
    teredo("65.54.227.120", "8.8.4.4"),
]


@pytest.mark.parametrize("address", REFUSED)
def test_these_addresses_are_refused(address: str) -> None:
    assert not is_public(address)


@pytest.mark.parametrize("address", PUBLIC)
def test_these_addresses_are_public(address: str) -> None:
    assert is_public(address)


@pytest.mark.parametrize(
    "address",
    [
        "::10.0.0.1",
        "::ffff:0:10.0.0.1",
        "64:ff9b::10.0.0.1",
        "64:ff9b:1::808:808",
        "2002:a9fe:a9fe::1",
        "fec0::1",
        "5f00::1",
        "224.0.0.251",
        "192.88.99.1",
    ],
)
def test_what_is_global_lets_through_is_refused(address: str) -> None:
    # Python's own check (3.11) passes these: embedded private addresses, site-local, multicast.
    assert ipaddress.ip_address(address).is_global
    assert not is_public(address)


def test_the_teredo_client_is_decoded_from_its_xor_ed_form() -> None:
    address = ipaddress.IPv6Address(teredo("65.54.227.120", "10.0.0.1"))
    assert address.teredo == (ipaddress.IPv4Address("65.54.227.120"), ipaddress.IPv4Address("10.0.0.1"))
    assert "10.0.0.1" not in str(address)  # stored XOR-ed: a naive look would not find it


# --- names, offline ----------------------------------------------------------------------------------------

OFFLINE = [
    ("127.0.0.1", HostProblem.ADDRESS),
    ("169.254.169.254", HostProblem.ADDRESS),
    ("10.0.0.1", HostProblem.ADDRESS),
    ("::1", HostProblem.ADDRESS),
    ("[::1]", HostProblem.ADDRESS),
    ("fe80::1%eth0", HostProblem.ADDRESS),
    ("::ffff:127.0.0.1", HostProblem.ADDRESS),
    ("0x7f.1", HostProblem.ADDRESS),  # inet_aton reads these as 127.0.0.1
    ("2130706433", HostProblem.ADDRESS),
    ("0x7f000001", HostProblem.ADDRESS),
    ("127.1", HostProblem.ADDRESS),
    ("0177.0.0.1", HostProblem.ADDRESS),
    ("017700000001", HostProblem.ADDRESS),
    ("pkc.confluent.cloud.1", HostProblem.ADDRESS),  # no top-level domain is a number
    ("localhost", HostProblem.LOCAL),
    ("db", HostProblem.LOCAL),  # one label: the resolver's search domains decide
    ("api.localhost", HostProblem.LOCAL),
    ("metadata.google.internal", HostProblem.LOCAL),
    ("printer.local", HostProblem.LOCAL),
    ("nas.localdomain", HostProblem.LOCAL),
    ("router.home.arpa", HostProblem.LOCAL),
    ("", HostProblem.NOT_A_NAME),
    ("a..b.com", HostProblem.NOT_A_NAME),
    ("-a.example.com", HostProblem.NOT_A_NAME),
    ("exa mple.com", HostProblem.NOT_A_NAME),
    ("bücher.example.com", HostProblem.NOT_A_NAME),
    ("a@b.example.com", HostProblem.NOT_A_NAME),
    ("x" * 64 + ".example.com", HostProblem.NOT_A_NAME),
    ("example.com", None),
    ("myorg-acct_1.snowflakecomputing.com", None),
]


@pytest.mark.parametrize(("host", "problem"), OFFLINE)
def test_a_typed_host_is_judged_offline(host: str, problem: HostProblem | None) -> None:
    assert Policy().problem(host) is problem


@pytest.mark.parametrize(
    ("host", "problem"),
    [
        (NAME, None),
        ("confluent.cloud", HostProblem.NOT_ALLOWED),  # a pattern *.x needs a name under x
        ("evil.com", HostProblem.NOT_ALLOWED),
        ("pkc.confluent.cloud.evil.com", HostProblem.NOT_ALLOWED),
        ("evilconfluent.cloud", HostProblem.NOT_ALLOWED),
        ("2130706433", HostProblem.ADDRESS),  # what it is wins over where it is
        ("x.confluent.cloud.local", HostProblem.LOCAL),
    ],
)
def test_a_host_outside_the_allowed_patterns_is_refused(host: str, problem: HostProblem | None) -> None:
    assert Policy(ONLY_CLOUD).problem(host) is problem


def test_patterns_come_from_the_operators_variable() -> None:
    env = {"X_ALLOWED_HOSTS": " *.Example.com , kafka.corp.test. "}
    policy = Policy.from_environment(env, default=ONLY_CLOUD, patterns_variable="X_ALLOWED_HOSTS")
    assert policy.allowed == HostPatterns(("*.example.com", "kafka.corp.test"))
    assert policy.problem("a.b.example.com") is None and policy.problem("kafka.corp.test") is None
    assert policy.problem(NAME) is HostProblem.NOT_ALLOWED  # the variable replaces the default
    assert (
        Policy.from_environment({}, default=ONLY_CLOUD, patterns_variable="X_ALLOWED_HOSTS").allowed
        == ONLY_CLOUD
    )
    anything = Policy.from_environment({"X": "*"}, default=ONLY_CLOUD, patterns_variable="X")
    assert anything.allowed == ANY_NAME and anything.problem("evil.com") is None
    assert anything.problem("10.0.0.1") is HostProblem.ADDRESS  # never an address, whatever the patterns


def test_a_local_domain_is_allowed_only_when_the_operator_names_it() -> None:
    policy = Policy.from_environment({"X": "*.svc.cluster.local"}, patterns_variable="X")
    assert policy.problem("kafka.svc.cluster.local") is None
    assert policy.problem("other.local") is HostProblem.LOCAL


@pytest.mark.parametrize("text", ["10.0.0.1", "*.10.0.0.1", "a b.com", "*.[::1]", "0x7f.1"])
def test_a_malformed_pattern_names_the_variable(text: str) -> None:
    with pytest.raises(ConfigError, match="X_ALLOWED_HOSTS"):
        Policy.from_environment({"X_ALLOWED_HOSTS": text}, patterns_variable="X_ALLOWED_HOSTS")


def test_private_addresses_are_allowed_by_one_setting_or_a_providers_older_name() -> None:
    assert not Policy.from_environment({}).allow_private
    assert Policy.from_environment({"CONNECTIONS_ALLOW_PRIVATE_ADDRESSES": "true"}).allow_private
    assert Policy.from_environment({"OLD": "yes"}, private_aliases=("OLD",)).allow_private
    assert not Policy.from_environment({"OLD": "yes"}).allow_private
    with pytest.raises(ConfigError, match="CONNECTIONS_ALLOW_PRIVATE_ADDRESSES"):
        Policy.from_environment({"CONNECTIONS_ALLOW_PRIVATE_ADDRESSES": "maybe"})


# --- resolving and pinning ---------------------------------------------------------------------------------


async def test_a_host_is_resolved_once_and_pinned_to_its_first_address() -> None:
    resolver = FakeResolver(addresses=[PUBLIC_IP, "52.10.20.31"])
    assert await Policy(ONLY_CLOUD, resolve=resolver).route(NAME, 443) == Pinned(NAME, PUBLIC_IP)
    assert resolver.asked == [(NAME, 443)]


@pytest.mark.parametrize("address", ["10.0.0.7", "127.0.0.1", "64:ff9b::a9fe:a9fe", "fd00:ec2::254"])
async def test_one_refused_address_refuses_the_host(address: str) -> None:
    resolver = FakeResolver(addresses=[PUBLIC_IP, address])
    assert await Policy(resolve=resolver).route(NAME, 443) is Blocked.REFUSED_ADDRESS
    assert await Policy(allow_private=True, resolve=resolver).route(NAME, 443) == Pinned(NAME, PUBLIC_IP)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "0x7f.1", "evil.com"])
async def test_a_host_refused_offline_is_not_even_looked_up(host: str) -> None:
    resolver = FakeResolver()
    assert (
        await Policy(ONLY_CLOUD, allow_private=True, resolve=resolver).route(host, 443)
        is Blocked.REFUSED_NAME
    )
    assert resolver.asked == []


@pytest.mark.parametrize(
    ("resolver", "blocked"),
    [
        (
            FakeResolver(error=socket.gaierror(socket.EAI_NONAME, "Name or service not known")),
            Blocked.NOT_FOUND,
        ),
        (FakeResolver(addresses=[]), Blocked.NOT_FOUND),
        (FakeResolver(error=socket.gaierror(socket.EAI_AGAIN, "try again")), Blocked.DNS_UNAVAILABLE),
        (FakeResolver(hang=True), Blocked.DNS_UNAVAILABLE),
    ],
)
async def test_a_failed_lookup_is_told_apart(resolver: FakeResolver, blocked: Blocked) -> None:
    assert await Policy(resolve=resolver, resolve_budget=0.05).route(NAME, 443) is blocked


async def test_the_system_resolver_answers_and_loopback_is_refused() -> None:
    addresses = await resolve_host("localhost", 443)
    assert addresses and len(addresses) == len(set(addresses))
    assert not any(is_public(address) for address in addresses)


@dataclass
class Seen:
    requests: list[httpx.Request] = field(default_factory=list)

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(200)


@pytest.mark.parametrize(
    ("url", "address", "sent_to", "host_header"),
    [
        (f"https://{NAME}/kafka/v3", PUBLIC_IP, f"https://{PUBLIC_IP}/kafka/v3", NAME),
        (f"https://{NAME}:443/x?y=1", PUBLIC_IP, f"https://{PUBLIC_IP}/x?y=1", NAME),
        (f"https://{NAME}:8443/x", PUBLIC_IP, f"https://{PUBLIC_IP}:8443/x", f"{NAME}:8443"),
        (f"https://{NAME}/x", "2606:4700::1", "https://[2606:4700::1]/x", NAME),
    ],
)
async def test_a_pinned_request_goes_to_the_address_under_the_name(
    url: str, address: str, sent_to: str, host_header: str
) -> None:
    seen = Seen()
    async with httpx.AsyncClient(transport=httpx.MockTransport(seen.handler)) as http:
        response = await Pinned(NAME, address).request(
            http, "GET", url, headers={"Accept": "application/json"}
        )
    assert response.status_code == 200
    [request] = seen.requests
    assert str(request.url) == sent_to
    assert request.headers["host"] == host_header and request.headers["accept"] == "application/json"
    assert request.extensions["sni_hostname"] == NAME


async def test_a_pinned_route_sends_only_to_its_own_host() -> None:
    seen = Seen()
    async with httpx.AsyncClient(transport=httpx.MockTransport(seen.handler)) as http:
        with pytest.raises(ValueError, match="only sends to the host it checked"):
            await Pinned(NAME, PUBLIC_IP).request(http, "GET", "https://elsewhere.confluent.cloud/")
        await DIRECT.request(http, "GET", "https://api.example.com/x")
    assert [str(r.url) for r in seen.requests] == ["https://api.example.com/x"]


# --- over real TLS ------------------------------------------------------------------------------------------


@dataclass
class Pki:
    ca: ssl.SSLContext
    """A client context trusting only the test CA."""
    cert: Path
    key: Path


def make_pki(tmp_path: Path, name: str) -> Pki:
    """A CA and a server certificate for ``name`` (a DNS name only: no IP address in it)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "outbound test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    cert.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    trusting = ssl.create_default_context(cadata=ca.public_bytes(serialization.Encoding.PEM).decode())
    return Pki(trusting, cert, key)


@dataclass
class TlsServer:
    port: int
    server_names: list[str | None] = field(default_factory=list)
    """The SNI of every handshake that reached the server."""
    heads: list[str] = field(default_factory=list)
    """The head of every request that got through TLS."""


@asynccontextmanager
async def tls_server(pki: Pki) -> AsyncIterator[TlsServer]:
    """An HTTPS server on 127.0.0.1 that answers 200 "ok" and records what reached it."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.cert, pki.key)
    state = TlsServer(port=0)

    def on_sni(_sock: ssl.SSLObject, server_name: str | None, _context: ssl.SSLContext) -> None:
        state.server_names.append(server_name)

    context.sni_callback = on_sni

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            state.heads.append(head.decode("latin-1"))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
            pass  # a client that gave up on the handshake
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    state.port = server.sockets[0].getsockname()[1]
    async with server:
        yield state


async def test_over_tls_the_checked_address_is_reached_and_the_certificate_checked_for_the_name(
    tmp_path: Path,
) -> None:
    pki = make_pki(tmp_path, NAME)
    policy = Policy(ONLY_CLOUD, allow_private=True, resolve=FakeResolver(addresses=["127.0.0.1"]))
    async with tls_server(pki) as server, httpx.AsyncClient(verify=pki.ca, timeout=5) as http:
        route = await policy.route(NAME, server.port)
        assert route == Pinned(NAME, "127.0.0.1")
        response = await route.request(http, "GET", f"https://{NAME}:{server.port}/kafka/v3/clusters")
        # The certificate names no address: what passed was checked against the name.
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await http.get(f"https://127.0.0.1:{server.port}/")
    assert response.status_code == 200 and response.text == "ok"
    assert server.server_names[0] == NAME
    [head] = server.heads
    assert head.startswith("GET /kafka/v3/clusters HTTP/1.1\r\n")
    assert f"\r\nHost: {NAME}:{server.port}\r\n" in head


async def test_over_tls_a_certificate_for_another_name_fails_and_nothing_is_sent(tmp_path: Path) -> None:
    # The server at the checked address holds a certificate for another name: the handshake fails
    # on the typed name, so no request (and no credential) gets through.
    pki = make_pki(tmp_path, "other.confluent.cloud")
    async with tls_server(pki) as server, httpx.AsyncClient(verify=pki.ca, timeout=5) as http:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await Pinned(NAME, "127.0.0.1").request(http, "GET", f"https://{NAME}:{server.port}/")
    assert server.heads == []
    assert server.server_names[0] == NAME
