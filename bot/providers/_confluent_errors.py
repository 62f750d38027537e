"""What the Confluent provider says about mistakes: offline format checks of the form, Confluent's
error responses, and the hints we give for each kind of failure.

The formats (Confluent's docs, collected in specs/confluent/README.md §4): a key ID is 16
capital letters and digits; a secret is 64 characters of ``[A-Za-z0-9+/]``, and a newer ``cflt``
secret ends in a 6-character Base64 CRC32 of the 54 characters before it, so a typo in one can be
caught offline.

Confluent answers errors in four shapes, depending on the API and its age:

* the Cloud API's ``Failure``: ``{"errors": [{"id", "status", "code", "title", "detail"}]}``
  (``status`` is a string);
* the newer Cloud envelope: ``{"status": 400, "error": {"code", "message", …}, "requestId": …}``
  (the old Metrics API also sent ``{"error": {"code": 403, "message": "invalid API key"}}``);
* Kafka REST v3: ``{"error_code": 40101, "message": "Authentication failed"}``;
* anything else, notably Kafka REST's 429, which is a ``text/html`` Jetty page.

:func:`parse_error` turns all of them into one :class:`ApiError`. Text taken from a response is
trimmed, and never taken from an HTML or non-JSON body, so a user never reads markup.
"""

from __future__ import annotations

import base64
import re
import struct
import zlib
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

import httpx

from bot.markup import inert
from bot.outbound import HostProblem
from bot.providers._shared import KEPT_MAX, json_of, try_again

_WRONG_KIND = (
    "Each kind of key works in one place only: a Kafka cluster key is rejected by the Cloud API, "
    "and a Cloud resource management key is rejected by a Kafka cluster."
)
_PROPAGATION = (
    "Keys created in the last few minutes may still be propagating: a Cloud key takes about 10 "
    "seconds to work, a Kafka cluster key about 2 minutes."
)
_DELETED = (
    "A key is deleted together with its owner (user or service account); check that it still "
    "exists with `confluent api-key list`."
)

CLOUD_UNAUTHORIZED_HINTS = (
    "Confluent rejected the key/secret. Check both for typos, a missing or extra character, or a "
    "stale copy from an old variable.",
    _WRONG_KIND + " If this is a Kafka cluster key, fill in the cluster's REST endpoint and "
    "cluster ID, or create a key for Cloud resource management instead.",
    _PROPAGATION,
    _DELETED,
)

KAFKA_UNAUTHORIZED_HINTS = (
    "The cluster rejected the key/secret. Check both for typos, and that the key belongs to this "
    "cluster: each Kafka key works on exactly one cluster (lkc-…).",
    _WRONG_KIND + " A Cloud API key cannot be used on a cluster: create an API key for the cluster.",
    _PROPAGATION,
    _DELETED,
)

CLOUD_FORBIDDEN_HINTS = (
    "The key was accepted, but its owner (user or service account) lacks an RBAC role that can "
    "describe environments. Ask an admin for OrganizationAdmin, EnvironmentAdmin, "
    "CloudClusterAdmin or Operator.",
    "List the owner's role bindings with `confluent iam rbac role-binding list --principal User:<owner id>`.",
)

KAFKA_FORBIDDEN_HINTS = (
    "The key was accepted, but its owner (user or service account) lacks a role to describe this "
    "cluster or its topics. Check its RBAC role bindings (CloudClusterAdmin or Operator on the "
    "cluster; DeveloperRead, DeveloperManage or ResourceOwner on topics). Basic clusters use ACLs, "
    "not RBAC: check its ACLs there.",
    "List them with `confluent iam rbac role-binding list --principal User:<owner id>` and "
    "`confluent kafka acl list --cluster <cluster id>`.",
)

CREATE_TOPICS_HINT = (
    "The key works but cannot create topics: grant the RBAC role CloudClusterAdmin, or "
    "DeveloperManage or ResourceOwner on the topic prefix (ACL: CREATE). To consume, also grant "
    "DeveloperRead on the topic and on the consumer group (ACL: READ on TOPIC and GROUP). Basic "
    "clusters use ACLs, not RBAC: see `confluent kafka acl list --cluster <cluster id>`."
)

KAFKA_NOT_FOUND_HINTS = (
    "Wrong cluster ID for that endpoint. Copy both from the cluster's Settings page or from "
    "`confluent kafka cluster describe`.",
    "If both are right, the cluster's network access rules may be hiding it from the bot.",
)

NO_ENVIRONMENTS_HINT = (
    "The key works but sees no environments, so its owner probably has no role on any "
    "environment yet (for example EnvironmentAdmin or Operator)."
)

UNREACHABLE_HINTS = (
    "We couldn't reach Confluent. Check the REST endpoint URL (it looks like "
    "`https://pkc-….confluent.cloud:443`).",
    "Clusters on private networking (PrivateLink, peering, private endpoints) aren't reachable from the bot.",
    "If this keeps happening for every connection, the bot's own network or proxy may be blocking Confluent.",
)


REST_PRIVATE_HINT = (
    "Use the cluster's public REST endpoint. A cluster on private networking (PrivateLink, peering) "
    "is reached only by a bot inside that network, whose operator then allows private addresses "
    "(CONNECTIONS_ALLOW_PRIVATE_ADDRESSES=true) and, if needed, the cluster's host names "
    "(CONFLUENT_REST_ALLOWED_HOSTS)."
)

REST_NOT_FOUND_HINT = (
    "Copy the REST endpoint again from the cluster's Settings page, or RestEndpoint in "
    "`confluent kafka cluster describe`: a deleted cluster's endpoint no longer resolves."
)

_ENDPOINT_EXAMPLE = "https://pkc-abcde.us-west4.gcp.confluent.cloud:443"


def rate_limited_hints(wait_seconds: float | None) -> tuple[str, ...]:
    return (
        f"Confluent is rate-limiting us; try again {try_again(wait_seconds)}.",
        "The limit is shared by every caller of the key's organization, so busy automation on "
        "the same account can cause this too.",
    )


def provider_error_hints(request_id: str | None) -> tuple[str, ...]:
    ref = f" (request id {inert(request_id)})" if request_id else ""
    return (
        f"Confluent returned a server error{ref}; try again later.",
        "If it keeps failing, check https://status.confluent.cloud and give Confluent support the "
        "request id.",
    )


@dataclass(frozen=True)
class ApiError:
    """What a non-success response said, whichever envelope it used."""

    status: int
    code: str | None = None
    """``user_unauthenticated``, ``40301``, …; a Kafka ``error_code`` as a string."""
    title: str | None = None
    message: str | None = None
    request_id: str | None = None

    @property
    def text(self) -> str:
        """A short sentence saying what Confluent said, for the summary."""
        parts = [p for p in (self.title, self.message) if p]
        if len(parts) == 2 and parts[1].lower().startswith(parts[0].lower()):
            parts = parts[1:]
        if not parts:
            return f"HTTP {self.status} {httpx.codes.get_reason_phrase(self.status)}".strip()
        return ": ".join(parts)

    @property
    def says_invalid_api_key(self) -> bool:
        """TF treats a Cloud 403 that mentions an invalid API key as a 401."""
        return "invalid api key" in " ".join(p for p in (self.title, self.message) if p).lower()

    @property
    def kafka_code(self) -> int | None:
        return int(self.code) if self.code and self.code.isdigit() else None


def parse_error(response: httpx.Response) -> ApiError:
    """Read any of Confluent's error envelopes; fall back to the HTTP status text."""
    request_id = response.headers.get("x-request-id")
    html = "html" in response.headers.get("content-type", "").lower()
    body = None if html or not response.content else json_of(response)
    if isinstance(body, dict):
        for reader in (_cloud_failure, _cloud_envelope, _kafka_error):
            found = reader(response.status_code, body)
            if found is not None:
                return replace(found, request_id=request_id or found.request_id)
    return ApiError(
        status=response.status_code,
        title=httpx.codes.get_reason_phrase(response.status_code) or None,
        request_id=request_id,
    )


def _cloud_failure(status: int, body: dict[str, Any]) -> ApiError | None:
    errors = body.get("errors")
    if not isinstance(errors, list) or not errors or not isinstance(errors[0], dict):
        return None
    first = errors[0]
    return ApiError(status, _text(first.get("code")), _text(first.get("title")), _text(first.get("detail")))


def _cloud_envelope(status: int, body: dict[str, Any]) -> ApiError | None:
    error = body.get("error")
    if not isinstance(error, dict):
        return None
    return ApiError(
        status=status,
        code=_text(error.get("code")),
        message=_text(error.get("message")),
        request_id=_text(body.get("requestId")),
    )


def _kafka_error(status: int, body: dict[str, Any]) -> ApiError | None:
    if "error_code" not in body:
        return None
    return ApiError(status=status, code=_text(body.get("error_code")), message=_text(body.get("message")))


def _text(value: object) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    return " ".join(str(value).split())[:KEPT_MAX] or None


_KEY = re.compile(r"[A-Z0-9]{16}")
_SECRET = re.compile(r"[A-Za-z0-9+/]{64}")
_CLUSTER_ID = re.compile(r"lkc-[a-z0-9]+")
_OTHER_IDS = {"env-": "an environment ID", "pkc-": "a bootstrap host", "lsrc-": "a Schema Registry ID"}


def secret_checksum_ok(secret: str) -> bool:
    """Whether a ``cflt`` secret's last 6 characters are the Base64 CRC32 of the 54 before them."""
    crc = base64.b64encode(struct.pack("<I", zlib.crc32(secret[4:58].encode()))).decode()
    return crc[:6] == secret[58:]


def looks_swapped(key: str, secret: str) -> bool:
    # A cflt value is a secret wherever it appears; a 64/16 pair the wrong way round is too.
    return key.startswith("cflt") or (bool(_SECRET.fullmatch(key)) and bool(_KEY.fullmatch(secret)))


def key_problem(key: str) -> str | None:
    if not key:
        return "Enter the API key."
    if _KEY.fullmatch(key):
        return None
    rule = "An API key is 16 capital letters and digits"
    if len(key) != 16:
        return f"{rule}; this one has {len(key)} characters."
    if re.fullmatch(r"[A-Za-z0-9]+", key):
        return f"{rule}; this one has lowercase letters."
    return f"{rule}; this one has other characters (spaces or punctuation)."


def secret_problem(secret: str) -> str | None:
    if not secret:
        return "Enter the API secret."
    rule = "An API secret is 64 characters: letters, digits, + and /"
    if len(secret) != 64:
        return f"{rule}; this one has {len(secret)}."
    if not _SECRET.fullmatch(secret):
        return f"{rule}; this one has other characters (spaces or punctuation)."
    if secret.startswith("cflt") and not secret_checksum_ok(secret):
        return "This secret looks mistyped: its last characters don't match the rest. Copy it again."
    return None


def endpoint_problem(endpoint: str) -> str | None:
    """What is wrong with the REST endpoint as a URL; where it points is the outbound policy's
    (:func:`rest_host_problem`)."""
    example = _ENDPOINT_EXAMPLE
    try:
        parts = urlsplit(endpoint)
        parts.port  # noqa: B018 -- raises ValueError on a malformed port
    except ValueError:
        return f"That isn't a valid URL; the REST endpoint looks like {example}."
    if parts.scheme.lower() in ("sasl_ssl", "pkc") or endpoint.endswith(":9092"):
        return f"That is the bootstrap server; the REST endpoint is the https:// URL, like {example}."
    if parts.scheme.lower() != "https" or not parts.hostname or " " in endpoint:
        return f"The REST endpoint is an https:// URL with a host name, like {example}."
    if parts.username is not None or parts.password is not None:
        # Credentials in the URL would be stored and shown as plain configuration.
        return "Leave the key and secret out of the URL; they go in the API Key and API Secret fields."
    if not endpoint.isascii() or any(ch.isspace() or not ch.isprintable() for ch in endpoint):
        return f"The REST endpoint has characters a URL cannot hold; it looks like {example}."
    try:
        httpx.URL(endpoint).host  # noqa: B018 -- decoding the host catches bad IDNA labels
    except (httpx.InvalidURL, ValueError):
        return f"That isn't a valid URL; the REST endpoint looks like {example}."
    if parts.path or parts.query or parts.fragment:
        return f"Give only the base URL, without a path, like {example}."
    return None


def rest_host_problem(problem: HostProblem) -> str:
    """The inline error for a REST endpoint host the outbound policy refuses."""
    example = _ENDPOINT_EXAMPLE
    if problem is HostProblem.ADDRESS:
        return (
            "Use the REST endpoint's host name, not an IP address: the TLS certificate is checked "
            f"against the name. It looks like {example}."
        )
    if problem is HostProblem.LOCAL:
        return (
            "That name only resolves inside a private network; the REST endpoint is a Confluent Cloud "
            f"host, like {example}."
        )
    if problem is HostProblem.NOT_ALLOWED:
        return (
            "The REST endpoint is a Confluent Cloud host (its name ends in .confluent.cloud), like "
            f"{example}; the bot calls no other host."
        )
    return f"That isn't a host name; the REST endpoint looks like {example}."


def cluster_problem(cluster: str) -> str | None:
    if _CLUSTER_ID.fullmatch(cluster):
        return None
    for prefix, what in _OTHER_IDS.items():
        if cluster.startswith(prefix):
            return f"That is {what}; a cluster ID starts with lkc-, like lkc-abc123."
    return "A cluster ID is lkc- followed by lowercase letters and digits, like lkc-abc123."
