"""The one policy for hosts a user typed: which names may be called, and which addresses reached.

A host from a form (an endpoint, an account's address) is judged twice. Offline, as the form is
validated: it must be a host name (never an IP address in any spelling, ``127.1`` and ``0x7f.1``
included), not a name that only resolves inside a private network (``localhost``, ``.local``,
``.internal``), and within the provider's allowed patterns. Then, before anything is sent: the bot
resolves the name itself and refuses it unless every address is public, decoding the IPv6 forms
that carry an IPv4 address (mapped, compatible, NAT64, 6to4, Teredo), which Python's ``is_global``
lets through. The request then goes to the address that was checked, the name kept for the
``Host`` header and for TLS (SNI and certificate), so a second DNS answer cannot move it.

Operators widen the policy per provider (allowed host patterns) and for all providers at once
(``CONNECTIONS_ALLOW_PRIVATE_ADDRESSES``, for a bot inside a private network). Fixed URLs the
operator configured are not user input and are sent as they are (:data:`DIRECT`).
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from bot.settings import ConfigError

__all__ = [
    "ALLOW_PRIVATE_VARIABLE",
    "ANY_NAME",
    "DIRECT",
    "Blocked",
    "HostPatterns",
    "HostProblem",
    "Pinned",
    "Policy",
    "Resolver",
    "Route",
    "flag",
    "is_public",
    "name_problem",
    "resolve_host",
]

ALLOW_PRIVATE_VARIABLE = "CONNECTIONS_ALLOW_PRIVATE_ADDRESSES"

Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""``(host, port)`` -> the IP addresses the host resolves to; raises OSError (``socket.gaierror``)."""


async def resolve_host(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to, in the resolver's order, each once."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


# --- addresses ----------------------------------------------------------------------------------

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network
_REFUSED_V4 = tuple(
    _V4(net)
    for net in (
        "0.0.0.0/8",  # "this network", 0.0.0.0 included
        "10.0.0.0/8",
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, the cloud metadata services
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation
        "192.88.99.0/24",  # 6to4 relays
        "192.168.0.0/16",
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and the broadcast address
    )
)
_GLOBAL_UNICAST = _V6("2000::/3")
"""Every other IPv6 block is loopback, link- or site-local, unique-local, multicast or reserved."""
_REFUSED_V6 = tuple(
    _V6(net)
    for net in (
        "64:ff9b:1::/48",  # local-use NAT64 (RFC 8215): a private network's translator
        "2001:2::/48",  # benchmarking
        "2001:10::/28",  # ORCHID
        "2001:20::/28",  # ORCHIDv2
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation
        "5f00::/16",  # segment routing
    )
)
_MAPPED = _V6("::ffff:0:0/96")
_TRANSLATED = _V6("::ffff:0:0:0/96")  # SIIT
_COMPATIBLE = _V6("::/96")
_NAT64 = _V6("64:ff9b::/96")


def _embedded(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...] | None:
    """The IPv4 addresses an IPv6 address stands for, or None when it carries none."""
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _MAPPED or ip in _TRANSLATED or ip in _NAT64:
        return (low32,)
    if ip in _COMPATIBLE and int(ip) > 1:  # :: and ::1 are themselves
        return (low32,)
    if ip.sixtofour is not None:
        return (ip.sixtofour,)
    if ip.teredo is not None:
        return ip.teredo  # (server, client); the client address, stored XOR-ed, comes decoded
    return None


def is_public(address: str) -> bool:
    """Whether the bot may connect to ``address``: not loopback, private, link-local, CGNAT,
    multicast, reserved, unspecified or documentation, in IPv4 or IPv6, nor an IPv6 address
    embedding such an IPv4 one. Anything that isn't an address is refused."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # fe80::1%eth0
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded(ip)
        if inner is not None:
            return all(is_public(str(v4)) for v4 in inner)
        refused = ip not in _GLOBAL_UNICAST or any(ip in net for net in _REFUSED_V6)
    else:
        refused = any(ip in net for net in _REFUSED_V4)
    # is_global as a second opinion: newer Pythons know registry entries added since.
    return not refused and ip.is_global


# --- names ---------------------------------------------------------------------------------------


class HostProblem(enum.StrEnum):
    """Why a typed host is refused without asking DNS; each provider words it for its form."""

    NOT_A_NAME = "not-a-name"
    """Empty, too long, or characters a host name cannot hold."""
    ADDRESS = "address"
    """An IP address in any spelling: ``10.0.0.1``, ``[::1]``, ``2130706433``, ``0x7f.1``, ``0177.0.0.1``."""
    LOCAL = "local"
    """A name that only resolves inside a private network: ``localhost``, ``.local``, one label."""
    NOT_ALLOWED = "not-allowed"
    """A name outside the provider's allowed patterns."""


_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_NUMERIC_LABEL = re.compile(r"0x[0-9a-f]*|\d+")
"""A last label that makes the host a number to inet_aton (``127.1``, ``0x7f.1``): no top-level
domain is numeric."""
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain", ".home.arpa")


def name_problem(host: str) -> HostProblem | None:
    """What makes ``host`` (lower case, no trailing dot) no public host name, whatever the patterns."""
    if ":" in host or host.startswith("[") or _is_ip(host):
        return HostProblem.ADDRESS
    if not host or len(host) > 253 or not host.isascii():
        return HostProblem.NOT_A_NAME
    labels = host.split(".")
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        return HostProblem.ADDRESS
    if not all(_LABEL.fullmatch(label) for label in labels):
        return HostProblem.NOT_A_NAME
    if len(labels) == 1 or host.endswith(_LOCAL_SUFFIXES):
        return HostProblem.LOCAL
    return None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class HostPatterns:
    """Where a provider may be called: ``*.example.com`` (any name under it) or an exact name.
    No patterns (or ``*``) means any public host name."""

    patterns: tuple[str, ...] = ()

    def allows(self, host: str) -> bool:
        if not self.patterns:
            return True
        return any(
            host.endswith(pattern[1:]) if pattern.startswith("*.") else host == pattern
            for pattern in self.patterns
        )

    @classmethod
    def parse(cls, text: str, variable: str) -> HostPatterns:
        """Comma-separated patterns from ``variable``; a malformed one raises ConfigError."""
        patterns = tuple(p.strip().lower().rstrip(".") for p in text.split(",") if p.strip())
        if "*" in patterns:
            return ANY_NAME
        for pattern in patterns:
            if name_problem(pattern.removeprefix("*.")) not in (None, HostProblem.LOCAL):
                raise ConfigError(
                    f"{variable} must be comma-separated host names or *.domain patterns, "
                    f"like *.example.com; {pattern!r} is neither"
                )
        return cls(patterns)


ANY_NAME = HostPatterns()


# --- routes ---------------------------------------------------------------------------------------


class Route(Protocol):
    """How a request reaches its host: as it is, or pinned to a checked address."""

    async def request(
        self, http: httpx.AsyncClient, method: str, url: str, **kwargs: Any
    ) -> httpx.Response: ...


class _Direct:
    async def request(self, http: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return await http.request(method, url, **kwargs)


DIRECT: Route = _Direct()
"""For a URL the operator configured: sent as it is."""


@dataclass(frozen=True)
class Pinned:
    """A host that passed the policy, and the address it was checked at."""

    host: str
    address: str

    async def request(self, http: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send to the checked address: the URL's host becomes the address, while the ``Host``
        header and the TLS server name (httpcore's ``sni_hostname``, which the certificate is
        verified against) stay the name. Connections are pooled per address, so a kept one is
        only ever reused for an address that passed the policy."""
        target = httpx.URL(url)
        if target.host.rstrip(".") != self.host:
            raise ValueError("a pinned route only sends to the host it checked")
        headers = httpx.Headers(kwargs.pop("headers", None))
        headers["Host"] = target.netloc.decode("ascii")
        extensions = {**kwargs.pop("extensions", {}), "sni_hostname": self.host}
        pinned = target.copy_with(host=self.address.split("%", 1)[0])
        return await http.request(method, pinned, headers=headers, extensions=extensions, **kwargs)


class Blocked(enum.StrEnum):
    """Why nothing was sent to a host."""

    REFUSED_NAME = "refused-name"
    """The offline check refuses it (a connection stored before the policy, or a wider one)."""
    REFUSED_ADDRESS = "private-address"
    """It resolves to an address the bot does not connect to."""
    NOT_FOUND = "dns"
    DNS_UNAVAILABLE = "dns-unavailable"


def flag(env: Mapping[str, str], name: str) -> bool:
    """A true/false setting; anything else raises ConfigError naming it."""
    text = (env.get(name) or "").strip().lower()
    if text not in ("", "true", "false", "1", "0", "yes", "no"):
        raise ConfigError(f"{name} must be true or false")
    return text in ("true", "1", "yes")


@dataclass(frozen=True)
class Policy:
    """One provider's outbound policy."""

    allowed: HostPatterns = ANY_NAME
    allow_private: bool = False
    resolve: Resolver = resolve_host
    resolve_budget: float = 3.0

    @classmethod
    def from_environment(
        cls,
        env: Mapping[str, str],
        *,
        default: HostPatterns = ANY_NAME,
        patterns_variable: str | None = None,
        private_aliases: tuple[str, ...] = (),
    ) -> Policy:
        """The provider's allowed patterns (``patterns_variable`` when set, else ``default``), and
        whether private addresses are allowed (:data:`ALLOW_PRIVATE_VARIABLE`, or one of the
        provider's older names for it)."""
        text = (env.get(patterns_variable) or "").strip() if patterns_variable else ""
        allowed = HostPatterns.parse(text, str(patterns_variable)) if text else default
        private = any([flag(env, name) for name in (ALLOW_PRIVATE_VARIABLE, *private_aliases)])
        return cls(allowed, allow_private=private)

    def problem(self, host: str) -> HostProblem | None:
        """What is wrong with ``host`` (lower case, without a trailing dot), without any I/O. A
        local name is refused unless the operator's patterns name it."""
        found = name_problem(host)
        if found is HostProblem.LOCAL and self.allowed.patterns and self.allowed.allows(host):
            return None
        if found is None and not self.allowed.allows(host):
            return HostProblem.NOT_ALLOWED
        return found

    async def route(self, host: str, port: int) -> Pinned | Blocked:
        """``host`` checked offline, resolved once, and pinned to its first address when every
        address it has may be connected to; otherwise why not. Nothing is connected to here."""
        if self.problem(host) is not None:
            return Blocked.REFUSED_NAME
        try:
            async with asyncio.timeout(self.resolve_budget):
                addresses = list(await self.resolve(host, port))
        except OSError as exc:  # socket.gaierror, or TimeoutError
            gone = isinstance(exc, socket.gaierror) and exc.errno not in (socket.EAI_AGAIN, socket.EAI_FAIL)
            return Blocked.NOT_FOUND if gone else Blocked.DNS_UNAVAILABLE
        if not addresses:
            return Blocked.NOT_FOUND
        if not self.allow_private and not all(is_public(a) for a in addresses):
            return Blocked.REFUSED_ADDRESS
        return Pinned(host, addresses[0])
