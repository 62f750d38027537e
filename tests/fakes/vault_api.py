"""A fake HashiCorp Vault (or OpenBao) HTTP API: KV version 2, token and AppRole auth, namespaces.

The store's tests run against OpenBao's own server (``tests/support/openbao_server.py``); this fake
serves what a real server cannot be made to do on demand: a scripted status (a 429 quota, a 500),
a dropped connection, a slow answer, a clock a test moves. It follows the published API documents,
``tests/unit/test_fakes_vault_api.py`` holds it to them, and
``tests/unit/test_fake_vault_matches_openbao.py`` sends the same requests to it and to OpenBao and
compares the answers:

* ``website/content/api-docs/secret/kv/kv-v2.mdx`` (hashicorp/vault; the same file in openbao/openbao);
* ``website/content/api-docs/auth/token.mdx`` and ``website/content/api-docs/auth/approle.mdx``;
* ``website/content/docs/concepts/policies.mdx`` (path rules, capabilities and their priority).

Where the documents give no text (the custom_metadata limits, the error strings), it answers as the
KV engine itself does (hashicorp/vault-plugin-secrets-kv ``path_data.go``, ``path_metadata.go``),
word for word as OpenBao answers.

Contracts encoded here:

* Every path is under ``/v1/``; errors are ``{"errors": [...]}``; a 404 for a path with nothing is
  ``{"errors": []}``, but a read of a soft-deleted or destroyed version answers 404 with the usual
  body and the version's metadata (``data.data`` null).
* ``X-Vault-Token`` is checked against the tokens a test registers (:meth:`FakeVault.add_token`,
  or issued by :meth:`FakeVault.add_approle` logins). A missing, unknown, expired or revoked token
  is ``403 {"errors": ["permission denied"]}``; a live token whose policy does not grant the
  capability (``create`` to write a path that does not exist, ``update`` for one that does,
  ``read``, ``delete``, ``list``), or one used in another namespace, is 403 with the same words as
  go-multierror wraps them (``"1 error occurred:\n\t* permission denied\n\n"``). Tokens get the
  built-in ``default`` policy (which lets a token look itself up) unless registered without it.
* A write whose ``data`` is missing is 400 ``no data provided``; ``"data": null`` writes a version
  that reads back as null; ``data`` or ``options`` that is not an object is 400 in the words of
  Vault's field decoding (go-mapstructure, which merges a list of objects into one).
* A method a path does not serve is 405 (``unsupported operation``); an AppRole login without a
  ``role_id`` is 500 ``missing role_id`` (Vault fails while looking up the login's alias).
* KV v2 writes honour ``options.cas`` (0: only if the key does not exist; N: only if N is the
  current version, soft-deleted or not) and ``cas_required``; answers 400 ``check-and-set parameter
  did not match the current version`` / ``check-and-set parameter required for this call``.
* ``custom_metadata``: a map of string to string, at most 64 keys, each key 1–128 bytes, each value
  1–512 bytes, printable; else 400 ``custom_metadata validation failed: …``.
* ``X-Vault-Namespace`` separates everything: secrets, tokens and AppRoles live in one namespace.
* Sealed (:attr:`FakeVault.sealed`): every request answers ``503 {"errors": ["Vault is sealed"]}``.
* One-shot faults: :meth:`FakeVault.fail_next` (any status), :meth:`FakeVault.drop_next` (the
  connection closes without an answer), :meth:`FakeVault.delay_next`.
* Not implemented (answered 501 so that no test mistakes it for Vault's behaviour): PATCH,
  ``/config``, ``/subkeys``, ``delete_version_after`` taking effect.

Each request is recorded (method, path, query, headers without ``X-Vault-Token``/``Authorization``,
namespace, the token's accessor, the status), never its body: nothing here keeps a secret that was
sent, apart from the stored data itself.

Usage::

    fake = FakeVault()
    token = fake.add_token('path "secret/data/*" { capabilities = ["create", "read"] }')
    with serve_asgi(fake.app) as url: ...
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qsl

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "CAPABILITIES",
    "DEFAULT_POLICY",
    "FakeVault",
    "PolicyRule",
    "RecordedRequest",
    "TlsFiles",
    "parse_policy",
    "tls_files",
]

CAPABILITIES: Final = frozenset({"create", "read", "update", "patch", "delete", "list", "sudo", "deny"})
DEFAULT_POLICY: Final = """
# The part of Vault's built-in `default` policy a token uses on itself.
path "auth/token/lookup-self" { capabilities = ["read"] }
path "auth/token/renew-self" { capabilities = ["update"] }
path "auth/token/revoke-self" { capabilities = ["update"] }
"""
DEFAULT_MAX_VERSIONS: Final = 10
"""kv-v2.mdx, Configure the KV Engine: "When 0 is used or the value is unset, Vault will keep 10 versions"."""
MAX_CUSTOM_METADATA_KEYS: Final = 64
MAX_CUSTOM_METADATA_KEY_LENGTH: Final = 128
MAX_CUSTOM_METADATA_VALUE_LENGTH: Final = 512
CAS_MISMATCH: Final = "check-and-set parameter did not match the current version"
CAS_REQUIRED: Final = "check-and-set parameter required for this call"
PERMISSION_DENIED: Final = "permission denied"
SEALED: Final = "Vault is sealed"
INVALID_LOGIN: Final = "invalid role or secret ID"
MISSING_ROLE_ID: Final = "missing role_id"
UNSUPPORTED_OPERATION: Final = "1 error occurred:\n\t* unsupported operation\n\n"
"""go-multierror's words for one error: Vault wraps what its request handling refuses."""
_DROP_WAIT = 2.0  # how long a dropped request waits for the server to notice the closed socket


# --- policies ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyRule:
    """One ``path "…" { capabilities = [...] }`` block."""

    pattern: str
    capabilities: frozenset[str]

    def matches(self, path: str) -> bool:
        return _pattern_regex(self.pattern).fullmatch(path) is not None

    @property
    def priority(self) -> tuple[int, bool, int, int, str]:
        """Higher sorts first, by the five rules of policies.mdx ("Policy syntax")."""
        wildcards = [i for i, c in enumerate(self.pattern) if c in "+*"]
        first = wildcards[0] if wildcards else len(self.pattern) + 1
        plus_segments = sum(1 for segment in self.pattern.split("/") if segment == "+")
        return (first, not self.pattern.endswith("*"), -plus_segments, len(self.pattern), self.pattern)


_BLOCK = re.compile(
    r'path\s+"(?P<pattern>[^"]*)"\s*\{\s*capabilities\s*=\s*\[(?P<caps>[^\]]*)\]\s*\}', re.DOTALL
)
_COMMENT = re.compile(r"(#|//)[^\n]*")


def parse_policy(text: str) -> tuple[PolicyRule, ...]:
    """The rules of a policy in Vault's HCL form. Only ``capabilities`` is supported; anything else
    (parameter constraints, an unknown capability, a glob not at the end) raises ``ValueError``,
    as Vault refuses to store such a policy."""
    source = _COMMENT.sub("", text)
    rules: list[PolicyRule] = []
    position = 0
    for block in _BLOCK.finditer(source):
        if source[position : block.start()].strip():
            raise ValueError(f"unsupported policy text: {source[position : block.start()].strip()[:40]!r}")
        position = block.end()
        pattern = block["pattern"]
        if "*" in pattern[:-1]:
            raise ValueError(f"a glob (*) may only end a path: {pattern!r}")
        caps = [c.strip() for c in block["caps"].split(",") if c.strip()]
        names = []
        for cap in caps:
            if not (cap.startswith('"') and cap.endswith('"')) or cap[1:-1] not in CAPABILITIES:
                raise ValueError(f"unknown capability {cap} in the rule for {pattern!r}")
            names.append(cap[1:-1])
        rules.append(PolicyRule(pattern, frozenset(names)))
    if source[position:].strip():
        raise ValueError(f"unsupported policy text: {source[position:].strip()[:40]!r}")
    return tuple(rules)


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    glob = pattern.endswith("*")
    body = pattern[:-1] if glob else pattern
    parts = ["[^/]*" if segment == "+" else re.escape(segment) for segment in body.split("/")]
    return re.compile("/".join(parts) + (".*" if glob else ""))


def capabilities_for(rules: Iterable[PolicyRule], path: str) -> frozenset[str]:
    """What ``rules`` grant on ``path``: the highest-priority matching pattern wins; the same
    pattern in several policies adds up; ``deny`` takes everything away."""
    matching = [rule for rule in rules if rule.matches(path)]
    if not matching:
        return frozenset()
    best = max(rule.priority for rule in matching)
    granted = frozenset().union(*(rule.capabilities for rule in matching if rule.priority == best))
    return frozenset() if "deny" in granted else granted


# --- TLS for a test server ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    ca_file: Path
    """The CA certificate (PEM) a client trusts to talk to the server: what VAULT_CACERT names."""
    cert_file: Path
    key_file: Path


def tls_files(directory: Path, host: str = "127.0.0.1") -> TlsFiles:
    """A new private CA and a server certificate it signed for ``host`` (and ``localhost``)."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake Vault test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    try:
        names: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(host))]
    except ValueError:
        names = [x509.DNSName(host)]
    names.append(x509.DNSName("localhost"))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(directory / "vault-ca.pem", directory / "vault-cert.pem", directory / "vault-key.pem")
    files.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


# --- state -------------------------------------------------------------------------------------------


@dataclass
class _Version:
    data: dict[str, Any] | None
    """None: written with ``"data": null``, which Vault accepts and reads back as null."""
    created: datetime
    deleted: datetime | None = None
    destroyed: bool = False

    def metadata(self) -> dict[str, Any]:
        return {
            "created_time": _timestamp(self.created),
            "deletion_time": _timestamp(self.deleted) if self.deleted else "",
            "destroyed": self.destroyed,
        }

    @property
    def readable(self) -> bool:
        return not self.destroyed and (self.deleted is None or self.deleted > datetime.now(UTC))


@dataclass
class _Key:
    created: datetime
    updated: datetime
    versions: dict[int, _Version] = field(default_factory=dict)
    current_version: int = 0
    oldest_version: int = 0
    max_versions: int = 0
    cas_required: bool = False
    delete_version_after: str = "0s"
    custom_metadata: dict[str, str] | None = None


@dataclass
class _Token:
    token: str
    accessor: str
    policies: tuple[str, ...]
    rules: tuple[PolicyRule, ...]
    namespace: str
    root: bool
    ttl: int
    """Seconds it lives from ``issued_at`` (0: forever)."""
    issued_at: float
    issued: datetime
    path: str
    display_name: str

    def expired(self, now: float) -> bool:
        return bool(self.ttl) and now >= self.issued_at + self.ttl


@dataclass
class _AppRole:
    name: str
    role_id: str
    secret_id: str
    policy: str | None
    token_ttl: int
    default_policy: bool


@dataclass
class _Fault:
    kind: str  # "status" | "drop" | "delay"
    path_prefix: str
    method: str | None
    times: int
    status: int = 0
    body: Any = None
    seconds: float = 0.0


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake saw it, without its body and without any token."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    """Lower-cased names; ``x-vault-token`` and ``authorization`` are never kept."""
    namespace: str
    accessor: str | None
    """The accessor of the token that was sent, if the fake knew it."""
    status: int | None
    """The status answered; None when the connection was dropped."""


class FakeVault:
    """State of the fake plus the ASGI ``app`` that serves it."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, mounts: Iterable[str] = ("secret",)):
        self.clock = clock
        """Seconds, for token lifetimes: a test passes a clock it can move."""
        self.sealed = False
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._mounts: dict[str, set[str]] = {"": set(mounts)}
        self._keys: dict[tuple[str, str], dict[str, _Key]] = {}
        self._tokens: dict[str, _Token] = {}
        self._approles: dict[str, dict[str, _AppRole]] = {"": {}}
        self._faults: list[_Fault] = []
        # An ASGI endpoint (not a function) takes every method, LIST and unknown ones included.
        self._router = Starlette(routes=[Route("/v1/{rest:path}", _Endpoint(self._handle))])
        self.app: ASGIApp = _Asgi(self._serve)
        """The ASGI application: faults and the record around the router."""

    # --- arranging -----------------------------------------------------------------------------

    def add_namespace(self, namespace: str, mounts: Iterable[str] = ("secret",)) -> None:
        with self._lock:
            self._mounts[namespace.strip("/")] = set(mounts)
            self._approles.setdefault(namespace.strip("/"), {})

    def add_token(
        self,
        policy: str | None = None,
        *,
        namespace: str = "",
        ttl: int = 0,
        default_policy: bool = True,
        root: bool = False,
    ) -> str:
        """Register a token holding ``policy`` (HCL) in ``namespace`` and return it. ``ttl``
        seconds after now (by :attr:`clock`) it stops working (0: never). ``default_policy=False``
        is Vault's ``no_default_policy``: the token cannot even look itself up."""
        with self._lock:
            issued = self._issue(
                policy,
                namespace=namespace,
                ttl=ttl,
                default_policy=default_policy,
                root=root,
                path="auth/token/create",
                display_name="token",
            )
        return issued.token

    def add_approle(
        self,
        role_id: str,
        secret_id: str,
        policy: str | None = None,
        *,
        name: str = "bot",
        namespace: str = "",
        token_ttl: int = 3600,
        default_policy: bool = True,
    ) -> None:
        """An AppRole whose login with ``role_id`` and ``secret_id`` issues a token holding
        ``policy`` for ``token_ttl`` seconds."""
        role = _AppRole(name, role_id, secret_id, policy, token_ttl, default_policy)
        with self._lock:
            self._approles.setdefault(namespace.strip("/"), {})[role_id] = role

    def write_policy(self, token: str, policy: str | None) -> None:
        """Write anew the policy ``token`` was given, as an operator does with ``vault policy
        write``: "Once a policy is updated, it takes effect immediately to all associated users"
        (``website/content/api-docs/system/policy.mdx``), so the token's next request is judged by
        ``policy``. A token given no policy is taken to name one that did not exist yet (Vault
        lets a token name a policy before it is written)."""
        with self._lock:
            held = self._tokens[token]
            default = "default" in held.policies
            held.rules = parse_policy(policy or "") + (parse_policy(DEFAULT_POLICY) if default else ())
            if "bot" not in held.policies and not held.root:
                held.policies = (*held.policies, "bot")

    def revoke(self, token: str) -> None:
        with self._lock:
            self._tokens.pop(token, None)

    def revoke_all(self) -> None:
        """Revoke every token (as if each had reached its end): logins still work."""
        with self._lock:
            self._tokens = {t: v for t, v in self._tokens.items() if v.root}

    def accessor_of(self, token: str) -> str:
        return self._tokens[token].accessor

    def issued_by_login(self) -> list[str]:
        """Every token an AppRole login issued and not revoked, oldest first (to count logins, and
        to search captured output for them)."""
        with self._lock:
            return [t.token for t in self._tokens.values() if t.path == "auth/approle/login"]

    def fail_next(
        self, status: int, *, path: str = "/v1/", method: str | None = None, body: Any = None, times: int = 1
    ) -> None:
        """Answer the next ``times`` requests under ``path`` with ``status`` (and Vault's body for
        it, or ``body``)."""
        with self._lock:
            self._faults.append(_Fault("status", path, method, times, status=status, body=body))

    def drop_next(self, *, path: str = "/v1/", method: str | None = None, times: int = 1) -> None:
        """Close the connection of the next ``times`` requests under ``path`` without an answer."""
        with self._lock:
            self._faults.append(_Fault("drop", path, method, times))

    def delay_next(
        self, seconds: float, *, path: str = "/v1/", method: str | None = None, times: int = 1
    ) -> None:
        """Answer the next ``times`` requests under ``path`` only after ``seconds``."""
        with self._lock:
            self._faults.append(_Fault("delay", path, method, times, seconds=seconds))

    def stored(self, path: str, *, mount: str = "secret", namespace: str = "") -> dict[str, Any] | None:
        """The current version's data at ``path`` (None if none is readable): for assertions."""
        with self._lock:
            key = self._keys.get((namespace, mount), {}).get(path)
            if key is None or key.current_version not in key.versions:
                return None
            version = key.versions[key.current_version]
            return dict(version.data) if version.readable and version.data is not None else None

    def requests_to(self, prefix: str, method: str | None = None) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.startswith(prefix) and method in (None, r.method)]

    # --- serving -------------------------------------------------------------------------------

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._router(scope, receive, send)
            return
        method, path = scope["method"].upper(), scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        statuses: list[int] = []

        async def recording(message: Message) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])
            await send(message)

        fault = self._take_fault(method, path)
        try:
            if fault is not None and fault.kind == "drop":
                await _drop_connection(receive, send)
            elif fault is not None and fault.kind == "status":
                await self._fault_response(fault, path)(scope, receive, recording)
            else:
                if fault is not None:
                    await asyncio.sleep(fault.seconds)
                await self._router(scope, receive, recording)
        finally:
            token = self._tokens.get(headers.get("x-vault-token", ""))
            self.requests.append(
                RecordedRequest(
                    method=method,
                    path=path,
                    query=dict(parse_qsl(scope.get("query_string", b"").decode())),
                    headers={k: v for k, v in headers.items() if k not in ("x-vault-token", "authorization")},
                    namespace=headers.get("x-vault-namespace", "").strip("/"),
                    accessor=token.accessor if token else None,
                    status=statuses[0] if statuses else None,
                )
            )

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if path.startswith(fault.path_prefix) and fault.method in (None, method):
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _fault_response(self, fault: _Fault, path: str) -> Response:
        body = fault.body
        if body is None:
            if fault.status == 429:
                body = {"errors": [f'request path "{path.removeprefix("/v1/")}": rate limit quota exceeded']}
            elif fault.status == 503:
                body = {"errors": [SEALED]}
            else:
                body = {"errors": [_reason(fault.status).lower()]}
        return JSONResponse(body, fault.status)

    async def _handle(self, request: Request) -> Response:
        if self.sealed:
            return _errors(503, [SEALED])
        operation = _operation(request)
        if operation is None:
            return _errors(405, [])
        namespace = request.headers.get("x-vault-namespace", "").strip("/")
        body: Any = None
        try:
            raw = await request.body()
        except ClientDisconnect:  # the client gave up (a delayed answer): nobody to answer
            return Response(status_code=499)
        if raw and operation == "create":
            try:
                body = json.loads(raw)
            except ValueError as exc:
                return _errors(400, [f"failed to decode JSON input: {exc}"])
        path = request.path_params["rest"]
        if operation == "list" and not path.endswith("/"):
            path += "/"  # as Vault's HTTP layer does: a listing is always of a folder
        with self._lock:
            if path == "auth/approle/login":
                return self._login(operation, namespace, body)
            token = self._caller(request, namespace)
            if path == "auth/token/lookup-self":
                return self._lookup_self(request, operation, token)
            return self._kv(request, operation, namespace, path, body, token)

    # --- auth ----------------------------------------------------------------------------------

    def _issue(
        self,
        policy: str | None,
        *,
        namespace: str,
        ttl: int,
        default_policy: bool,
        root: bool,
        path: str,
        display_name: str,
    ) -> _Token:
        rules = parse_policy(policy or "") + (parse_policy(DEFAULT_POLICY) if default_policy else ())
        names = (("default",) if default_policy else ()) + (("bot",) if policy else ())
        token = _Token(
            token="hvs." + secrets.token_urlsafe(18),
            accessor=secrets.token_urlsafe(18),
            policies=("root",) if root else names,
            rules=rules,
            namespace=namespace.strip("/"),
            root=root,
            ttl=ttl,
            issued_at=self.clock(),
            issued=datetime.now(UTC),
            path=path,
            display_name=display_name,
        )
        self._tokens[token.token] = token  # the caller holds the lock
        return token

    def _caller(self, request: Request, namespace: str) -> _Token | None:
        token = self._tokens.get(request.headers.get("x-vault-token", ""))
        if token is None or token.expired(self.clock()) or token.namespace != namespace:
            return None
        return token

    def _refused(self, request: Request) -> Response:
        """403 as Vault words it: a token it does not know (none, unknown, expired, revoked) is
        refused with a bare "permission denied"; a live token its policies do not allow the call
        (in its namespace or another) gets the ACL check's error, as go-multierror prints it."""
        token = self._tokens.get(request.headers.get("x-vault-token", ""))
        if token is None or token.expired(self.clock()):
            return _errors(403, [PERMISSION_DENIED])
        return _errors(403, [_multierror([PERMISSION_DENIED])])

    def _allowed(self, token: _Token | None, path: str, capability: str) -> bool:
        if token is None:
            return False
        return token.root or capability in capabilities_for(token.rules, path)

    def _login(self, operation: str, namespace: str, body: Any) -> Response:
        if operation != "create" or not isinstance(body, dict) or not body.get("role_id"):
            # Vault's look-ahead for the login's identity alias fails first: a 500, not a 400.
            return _errors(500, [MISSING_ROLE_ID])
        role = self._approles.get(namespace, {}).get(str(body["role_id"]))
        secret_id = str(body.get("secret_id") or "")
        if role is None or not hmac.compare_digest(role.secret_id.encode(), secret_id.encode()):
            return _errors(400, [INVALID_LOGIN])
        token = self._issue(
            role.policy,
            namespace=namespace,
            ttl=role.token_ttl,
            default_policy=role.default_policy,
            root=False,
            path="auth/approle/login",
            display_name="approle",
        )
        auth = {
            "client_token": token.token,
            "accessor": token.accessor,
            "policies": list(token.policies),
            "token_policies": list(token.policies),
            "metadata": {"role_name": role.name},
            "lease_duration": token.ttl,
            "renewable": True,
            "entity_id": "",
            "token_type": "service",
            "orphan": True,
            "num_uses": 0,
            "mfa_requirement": None,
        }
        return _ok(None, auth=auth)

    def _lookup_self(self, request: Request, operation: str, token: _Token | None) -> Response:
        if not self._allowed(token, "auth/token/lookup-self", "read"):
            return self._refused(request)
        assert token is not None
        if operation != "read":
            return _errors(405, [UNSUPPORTED_OPERATION])
        remaining = max(0, int(token.issued_at + token.ttl - self.clock())) if token.ttl else 0
        expire = _timestamp(datetime.now(UTC) + timedelta(seconds=remaining)) if token.ttl else None
        return _ok(
            {
                "accessor": token.accessor,
                "creation_time": int(token.issued.timestamp()),
                "creation_ttl": token.ttl,
                "display_name": token.display_name,
                "entity_id": "",
                "expire_time": expire,
                "explicit_max_ttl": 0,
                "id": token.token,
                "issue_time": _timestamp(token.issued),
                "meta": None,
                "num_uses": 0,
                "orphan": token.path != "auth/token/create",
                "path": token.path,
                "policies": sorted(token.policies),
                "renewable": bool(token.ttl),
                "ttl": remaining,
                "type": "service",
            }
        )

    # --- KV version 2 --------------------------------------------------------------------------

    def _kv(
        self, request: Request, operation: str, namespace: str, path: str, body: Any, token: _Token | None
    ) -> Response:
        mount, kind, key_path = self._split(namespace, path)
        keys = self._keys.setdefault((namespace, mount), {}) if mount else {}
        existing = keys.get(key_path) if mount else None
        capability = {"create": "update" if existing else "create"}.get(operation, operation)
        if kind not in ("data", "metadata") and operation == "create":
            capability = "update"  # no existence check on destroy/delete/undelete: POST is update
        if not self._allowed(token, path, capability):
            return self._refused(request)
        if not mount:
            return _errors(404, [f'no handler for route "{path}". route entry not found.'])
        if kind == "data":
            return self._data(request, operation, keys, key_path, body)
        if kind == "metadata":
            return self._metadata(operation, keys, key_path, body)
        if kind in ("destroy", "delete", "undelete"):
            return self._versions(kind, operation, keys, key_path, body)
        if kind in ("config", "subkeys"):
            return _errors(501, [f"the fake does not implement {kind}"])
        return _errors(404, ["unsupported path"])

    def _split(self, namespace: str, path: str) -> tuple[str, str, str]:
        """(mount, kind, key path) for ``path``; the mount is "" if none serves it."""
        mounts = sorted(self._mounts.get(namespace, set()), key=len, reverse=True)
        for mount in mounts:
            if path.startswith(mount + "/"):
                kind, _, rest = path[len(mount) + 1 :].partition("/")
                return mount, kind, rest
        return "", "", ""

    def _data(
        self, request: Request, operation: str, keys: dict[str, _Key], path: str, body: Any
    ) -> Response:
        if operation == "list":
            return _errors(405, [UNSUPPORTED_OPERATION])
        if operation == "create" and (not path or path.endswith("/")):
            return _errors(400, ["cannot write to a path ending in '/'"])
        if not path:
            return _errors(404, [])
        if path.endswith("/"):
            if operation != "delete":
                return _errors(500, [_multierror(["could not find version data"])])
            path = path.rstrip("/")  # a delete takes the key without its slash
        key = keys.get(path)
        if operation == "read":
            text = request.query_params.get("version", "0")
            try:
                wanted = int(text)
            except ValueError:
                return _errors(
                    400,
                    [
                        _field_error(
                            "version", "cannot parse value as 'int': strconv.ParseInt: invalid syntax"
                        )
                    ],
                )
            if key is None:
                return _errors(404, [])
            number = wanted if wanted > 0 else key.current_version
            version = key.versions.get(number)
            if version is None:
                return _errors(404, [])
            metadata = {**version.metadata(), "custom_metadata": key.custom_metadata, "version": number}
            if not version.readable:
                return _ok({"data": None, "metadata": metadata}, status=404)
            data = dict(version.data) if version.data is not None else None
            return _ok({"data": data, "metadata": metadata})
        if operation == "create":
            return self._write(keys, path, body)
        if operation == "delete":
            if key is not None and key.current_version in key.versions:
                latest = key.versions[key.current_version]
                if latest.deleted is None:
                    latest.deleted = datetime.now(UTC)
                key.updated = datetime.now(UTC)
            return Response(status_code=204)
        if operation == "patch":
            return _errors(501, ["the fake does not implement PATCH"])
        return _errors(405, [UNSUPPORTED_OPERATION])

    def _write(self, keys: dict[str, _Key], path: str, body: Any) -> Response:
        if not isinstance(body, dict) or "data" not in body:
            return _errors(400, ["no data provided"])
        fields: dict[str, dict[str, Any] | None] = {}
        for name in ("data", "options"):
            converted = _as_map(name, body.get(name))
            if isinstance(converted, str):
                return _errors(400, [converted])
            fields[name] = converted
        now = datetime.now(UTC)
        key = keys.get(path) or _Key(created=now, updated=now)
        options = fields["options"] or {}
        if "cas" in options:
            try:
                cas = int(options["cas"])
            except (TypeError, ValueError):
                return _errors(400, ["error parsing check-and-set parameter"])
            if cas != key.current_version:
                return _errors(400, [CAS_MISMATCH])
        elif key.cas_required:
            return _errors(400, [CAS_REQUIRED])
        key.current_version += 1
        key.versions[key.current_version] = _Version(data=json.loads(json.dumps(fields["data"])), created=now)
        key.updated = now
        keep = key.max_versions or DEFAULT_MAX_VERSIONS
        if len(key.versions) > keep:
            last_dropped = key.current_version - keep
            for number in [n for n in key.versions if n <= last_dropped]:
                del key.versions[number]
            key.oldest_version = last_dropped + 1
        keys[path] = key
        version = key.versions[key.current_version]
        return _ok(
            {**version.metadata(), "custom_metadata": key.custom_metadata, "version": key.current_version}
        )

    def _metadata(self, operation: str, keys: dict[str, _Key], path: str, body: Any) -> Response:
        if operation == "list":
            prefix = path
            names = set()
            for name in keys:
                if name.startswith(prefix):
                    rest = name[len(prefix) :]
                    names.add(rest.split("/", 1)[0] + "/" if "/" in rest else rest)
            if not names:
                return _errors(404, [])
            return _ok({"keys": sorted(names)})
        key = keys.get(path)
        if operation == "read":
            if key is None:
                return _errors(404, [])
            return _ok(
                {
                    "cas_required": key.cas_required,
                    "created_time": _timestamp(key.created),
                    "current_version": key.current_version,
                    "custom_metadata": key.custom_metadata,
                    "delete_version_after": key.delete_version_after,
                    "max_versions": key.max_versions,
                    "oldest_version": key.oldest_version,
                    "updated_time": _timestamp(key.updated),
                    "versions": {str(n): v.metadata() for n, v in sorted(key.versions.items())},
                }
            )
        if operation == "delete":
            keys.pop(path, None)
            return Response(status_code=204)
        if operation == "create":
            return self._write_metadata(keys, path, body)
        if operation == "patch":
            return _errors(501, ["the fake does not implement PATCH"])
        return _errors(405, [UNSUPPORTED_OPERATION])

    def _write_metadata(self, keys: dict[str, _Key], path: str, body: Any) -> Response:
        if not path:
            return _errors(400, ["missing path"])
        fields = body if isinstance(body, dict) else {}
        custom = fields.get("custom_metadata")
        if custom is not None:
            problems = _custom_metadata_problems(custom)
            if problems:
                return _errors(400, [_multierror(problems)])
        if "delete_version_after" in fields and str(fields["delete_version_after"]) not in ("0s", "0"):
            return _errors(501, ["the fake does not implement delete_version_after"])
        if not {"max_versions", "cas_required", "custom_metadata", "delete_version_after"} & set(fields):
            return Response(status_code=204)
        now = datetime.now(UTC)
        key = keys.get(path) or _Key(created=now, updated=now)
        if "max_versions" in fields:
            key.max_versions = int(fields["max_versions"])
        if "cas_required" in fields:
            key.cas_required = bool(fields["cas_required"])
        if custom is not None:
            key.custom_metadata = {str(k): str(v) for k, v in custom.items()}
        key.updated = now
        keys[path] = key
        return Response(status_code=204)

    def _versions(self, kind: str, operation: str, keys: dict[str, _Key], path: str, body: Any) -> Response:
        if operation != "create":
            return _errors(405, [UNSUPPORTED_OPERATION])
        numbers = body.get("versions") if isinstance(body, dict) else None
        if not isinstance(numbers, list) or not numbers:
            return _errors(400, ["no version number provided"])
        key = keys.get(path)
        if key is None:
            return Response(status_code=204)
        for number in numbers:
            version = key.versions.get(int(number))
            if version is None:
                continue
            if kind == "destroy":
                version.destroyed = True
            elif kind == "delete" and version.deleted is None:
                version.deleted = datetime.now(UTC)
            elif kind == "undelete" and not version.destroyed:
                version.deleted = None
        key.updated = datetime.now(UTC)
        return Response(status_code=204)


# --- helpers -----------------------------------------------------------------------------------------


class _Asgi:
    """An ASGI 3 application servers recognise as one (they take a bound method for ASGI 2)."""

    def __init__(self, serve: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self._serve = serve

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._serve(scope, receive, send)


class _Endpoint:
    def __init__(self, handle: Callable[[Request], Awaitable[Response]]) -> None:
        self._handle = handle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self._handle(Request(scope, receive))
        await response(scope, receive, send)


def _operation(request: Request) -> str | None:
    """Vault's logical operation for the HTTP method (http/logical.go): unknown methods are None."""
    method = request.method.upper()
    if method == "GET":
        return "list" if request.query_params.get("list", "").lower() == "true" else "read"
    return {"LIST": "list", "POST": "create", "PUT": "create", "DELETE": "delete", "PATCH": "patch"}.get(
        method
    )


def _custom_metadata_problems(custom: Any) -> list[str]:
    prefix = "custom_metadata validation failed"
    if not isinstance(custom, Mapping):
        return [f"{prefix}: custom_metadata must be a map"]
    if len(custom) > MAX_CUSTOM_METADATA_KEYS:
        return [
            f"{prefix}: payload must contain at most {MAX_CUSTOM_METADATA_KEYS} keys, provided {len(custom)}"
        ]
    problems = []
    for key, value in custom.items():
        if not isinstance(value, str):
            problems.append(f"{prefix}: value for key {json.dumps(key)} is not a string")
            continue
        key_length, value_length = len(key.encode()), len(value.encode())
        if not 0 < key_length <= MAX_CUSTOM_METADATA_KEY_LENGTH:
            problems.append(
                f"{prefix}: length of key {json.dumps(key)} is {key_length} but must be "
                f"0 < len(key) <= {MAX_CUSTOM_METADATA_KEY_LENGTH}"
            )
        if not 0 < value_length <= MAX_CUSTOM_METADATA_VALUE_LENGTH:
            problems.append(
                f"{prefix}: length of value for key {json.dumps(key)} is {value_length} but must be "
                f"0 < len(value) <= {MAX_CUSTOM_METADATA_VALUE_LENGTH}"
            )
        if not key.isprintable():
            problems.append(f"{prefix}: key {json.dumps(key)} contains unprintable characters")
        if not value.isprintable():
            problems.append(f"{prefix}: value for key {json.dumps(key)} contains unprintable characters")
    return problems


def _field_error(name: str, problem: str) -> str:
    """A query or body field Vault's framework could not convert (go-mapstructure's words)."""
    return f"Field validation failed: error converting input for field {json.dumps(name)}: '' {problem}"


def _as_map(name: str, value: Any) -> dict[str, Any] | str | None:
    """``value`` of a body field that Vault decodes into a map (with go-mapstructure's weak typing:
    a list of maps merges into one, an empty list is an empty map), or the error text."""
    if value is None or isinstance(value, dict):
        return value
    where, element = ("", value)
    if isinstance(value, list):
        if all(isinstance(item, dict) for item in value):
            return {k: v for item in value for k, v in item.items()}
        where, element = next((f"[{i}]", item) for i, item in enumerate(value) if not isinstance(item, dict))
    found = "string" if isinstance(element, str) else "bool" if isinstance(element, bool) else "json.Number"
    if isinstance(element, list):
        found = "[]interface {}"
    return (
        f"error converting input for field {json.dumps(name)}: '{where}' expected type "
        f"'map[string]interface {{}}', got unconvertible type '{found}'"
    )


def _multierror(problems: list[str]) -> str:
    """The text of Go's hashicorp/go-multierror, which the KV engine answers with."""
    count = "1 error occurred" if len(problems) == 1 else f"{len(problems)} errors occurred"
    return count + ":\n" + "".join(f"\t* {p}\n" for p in problems) + "\n"


def _ok(data: Any, *, auth: Any = None, status: int = 200) -> JSONResponse:
    return JSONResponse(
        {
            "request_id": str(uuid.uuid4()),
            "lease_id": "",
            "renewable": False,
            "lease_duration": 0,
            "data": data,
            "wrap_info": None,
            "warnings": None,
            "auth": auth,
        },
        status,
    )


def _errors(status: int, errors: list[str]) -> JSONResponse:
    return JSONResponse({"errors": errors}, status)


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "error"


async def _drop_connection(receive: Receive, send: Send) -> None:
    """Close the client's socket without a byte of answer. uvicorn passes its own ``send`` bound to
    the connection's request cycle, which holds the transport; behind anything else (an in-process
    transport), the nearest thing is an error the client sees instead of a response."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None:
        raise ConnectionResetError("the fake Vault dropped the connection")
    transport.close()
    # Wait until the server has seen the socket close, so it does not answer with a 500 instead.
    try:
        async with asyncio.timeout(_DROP_WAIT):
            while (await receive())["type"] != "http.disconnect":
                pass
    except TimeoutError:
        pass
