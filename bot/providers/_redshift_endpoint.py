"""Redshift endpoints: reading what users paste, and telling a cluster from a Serverless workgroup.

The shapes (specs/redshift/README.md §1): a provisioned cluster's endpoint is
``<cluster>.<id>.<region>.redshift.amazonaws.com`` (redshift_connector classifies hosts with
``(.+)\\.(.+)\\.(.+).redshift(-dev)?\\.amazonaws\\.com``); a Serverless workgroup's is
``<workgroup>.<account-id>.<region>.redshift-serverless.amazonaws.com``. Users often paste the
console's ``host:5439/dev`` or a JDBC URL instead of the bare host, so those are taken apart.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import unquote

from bot.outbound import HostProblem, name_problem

DEFAULT_PORT = 5439
SERVERLESS_PORTS = (range(5431, 5456), range(8191, 8216))
"""The ports a Serverless workgroup may listen on (MG ``serverless-connecting``)."""

_URL_SCHEMES = ("jdbc:redshift://", "redshift://", "postgresql://", "postgres://")
_PROVISIONED = re.compile(
    r"(?P<name>[a-z0-9-]+)\.(?P<id>[a-z0-9]+)\.(?P<region>[a-z0-9-]+)\.redshift(?:-dev)?\.amazonaws\.com"
)
_SERVERLESS = re.compile(
    r"(?P<name>[a-z0-9-]+)\.(?P<id>\d{12})\.(?P<region>[a-z0-9-]+)\.redshift-serverless\.amazonaws\.com"
)
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_AUTHORITY = re.compile(r"(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+\.?|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?")
"""What reads as ``host.name[:port]`` (or ``[IPv6]:port``): nothing of a password."""

_SHAPES = (
    "A cluster's endpoint looks like examplecluster.abc123xyz789.us-west-2.redshift.amazonaws.com, "
    "a Serverless workgroup's like default.123456789012.us-east-1.redshift-serverless.amazonaws.com."
)


class EndpointKind(enum.StrEnum):
    PROVISIONED = "provisioned"
    SERVERLESS = "serverless"
    CUSTOM = "custom"
    """Any other DNS name: a custom domain name set up for the cluster or workgroup."""


@dataclass(frozen=True)
class Endpoint:
    host: str
    kind: EndpointKind
    name: str = ""
    """The cluster identifier or workgroup name (empty for a custom domain)."""
    region: str = ""

    def describe(self) -> str:
        """ "provisioned cluster examplecluster in us-west-2", and the like."""
        if self.kind is EndpointKind.CUSTOM:
            return f"custom domain {self.host}"
        kind = "provisioned cluster" if self.kind is EndpointKind.PROVISIONED else "Serverless workgroup"
        return f"{kind} {self.name} in {self.region}"


@dataclass(frozen=True)
class Pasted:
    """The parts of a pasted endpoint or URL; empty where the paste did not say."""

    host: str
    port: str = ""
    database: str = ""


def _without_userinfo(rest: str) -> tuple[str, bool]:
    """``rest`` (a URL after its scheme) with any ``user:password@`` dropped, and whether there was
    one. The password may hold ``/ ? # @``, so the userinfo runs to the last ``@``, unless every
    ``@`` sits in a ``?key=value`` query after a plain host (JDBC's ``?password=…``)."""
    first_at = rest.find("@")
    if first_at < 0:
        return rest, False
    query = rest.find("?")
    if 0 <= query < first_at and "=" in rest[query:first_at]:
        authority = re.split(r"[/;#]", rest[:query], maxsplit=1)[0]
        if _AUTHORITY.fullmatch(authority):
            return rest, False  # the query, @ and all, is dropped with the rest of it
    return rest[rest.rfind("@") + 1 :], True


def split_pasted(text: str) -> Pasted:
    """Take ``jdbc:redshift://host:5439/dev``, ``postgresql://user@host/dev`` or the console's
    ``host:5439/dev`` apart. The userinfo of a URL (user and password) is dropped whole, never kept
    in a plain field. Text with another scheme (``jdbc:redshift:iam://``) is returned whole, for
    validation to explain."""
    text = text.strip()
    lowered = text.lower()
    rest = text
    for scheme in _URL_SCHEMES:
        if lowered.startswith(scheme):
            rest = text[len(scheme) :]
            break
    else:
        if "://" in text or lowered.startswith("jdbc:"):
            return Pasted(host=text)
    rest, had_userinfo = _without_userinfo(rest)
    rest = rest.split("?", 1)[0].split("#", 1)[0].split(";", 1)[0]
    authority, _, path = rest.partition("/")
    if had_userinfo and not _AUTHORITY.fullmatch(authority):
        # What follows the last @ may still be part of a password: keep none of it.
        return Pasted(host="")
    if authority.startswith("["):  # [IPv6]:port
        host, _, after = authority[1:].partition("]")
        port = after.removeprefix(":")
    elif authority.count(":") == 1:
        host, _, port = authority.partition(":")
    else:
        host, port = authority, ""
    database = unquote(path.strip("/"))
    return Pasted(host=host.strip().lower().rstrip("."), port=port.strip(), database=database)


def classify(host: str) -> Endpoint:
    """Which kind of endpoint ``host`` (lower case, as cleaned) is."""
    if match := _PROVISIONED.fullmatch(host):
        return Endpoint(host, EndpointKind.PROVISIONED, match["name"], match["region"])
    if match := _SERVERLESS.fullmatch(host):
        return Endpoint(host, EndpointKind.SERVERLESS, match["name"], match["region"])
    return Endpoint(host, EndpointKind.CUSTOM)


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def endpoint_problem(host: str) -> str | None:
    """What is wrong with a cleaned endpoint host, or None. No I/O: the name is not resolved."""
    if "://" in host or host.startswith("jdbc:"):
        if ":iam:" in host or host.startswith("jdbc:redshift:iam"):
            return (
                "IAM URLs (jdbc:redshift:iam://) need AWS credentials, which this form doesn't take: "
                "paste the endpoint and use a database user and password."
            )
        return "Paste the endpoint host, or a jdbc:redshift://, redshift:// or postgresql:// URL."
    labels = host.split(".")
    problem = name_problem(host)  # the outbound policy's offline part
    if problem is HostProblem.ADDRESS or host == "localhost":
        return (
            "Use the endpoint's host name from the Redshift console, not an IP address or localhost: "
            "the TLS certificate is checked against that name."
        )
    if problem is HostProblem.NOT_A_NAME or not all(_LABEL.fullmatch(label) for label in labels):
        return f"That isn't a host name. {_SHAPES}"
    if len(labels) == 1:
        return f"That looks like a cluster or workgroup name on its own; paste the whole endpoint. {_SHAPES}"
    if problem is HostProblem.LOCAL:
        return (
            "That name only resolves inside a private network; use the endpoint's public host name "
            f"from the Redshift console. {_SHAPES}"
        )
    kind = classify(host).kind
    if kind is EndpointKind.CUSTOM and (host.endswith(".amazonaws.com") or ".amazonaws.com." in host):
        return f"That isn't a Redshift endpoint. {_SHAPES}"
    return None


def parse_port(text: str) -> int:
    """The port of a cleaned form value: empty means the default, 5439. Raises ValueError."""
    if not text:
        return DEFAULT_PORT
    if not text.isascii() or not text.isdigit():
        raise ValueError(text)
    return int(text)


def port_problem(text: str, endpoint: Endpoint | None) -> str | None:
    """What is wrong with the port, given the endpoint's kind when it is known."""
    try:
        port = parse_port(text)
    except ValueError:
        return "The port is a number, usually 5439; leave it empty for 5439."
    if not 1 <= port <= 65535:
        return "A port is between 1 and 65535; Redshift's default is 5439."
    serverless = endpoint is not None and endpoint.kind is EndpointKind.SERVERLESS
    if serverless and not any(port in allowed for allowed in SERVERLESS_PORTS):
        return "A Serverless workgroup listens on 5439, or a port in 5431–5455 or 8191–8215."
    return None
