"""A fake Confluent Cloud API: the Cloud API's environments list and a cluster's Kafka REST v3.

It follows the published contracts (status codes, headers, error envelopes) and, unlike a mock
server that returns canned examples, it checks HTTP Basic credentials against the accounts a test
registers. One app serves both surfaces, so a test can use the same base URL as the Cloud API URL
and as the cluster's REST endpoint.

Contracts encoded here:

* Cloud API (``/org/v2/…``): every response has ``X-Request-Id``. Errors use the ``Failure``
  body ``{"errors": [{"id", "status", "code", "title", "detail"}]}`` with a *string* status. A 401
  carries ``WWW-Authenticate: Basic error="invalid_key", …``. A 429 has an empty body, with
  ``Retry-After`` (when the fault asks for one) and ``X-RateLimit-Limit/Remaining/Reset``.
* Kafka REST (``/kafka/v3/clusters/{cluster_id}…``): errors are ``{"error_code": int,
  "message": str}`` (40101 authentication, 40301 authorization, 404 unknown cluster, 40002 bad
  topic request). A 429 is a ``text/html`` Jetty page with no rate-limit headers. Creating a
  topic with ``validate_only`` answers 200 and creates nothing; a real create answers 201.

Usage::

    fake = FakeConfluent()
    fake.add_cloud_key("ABCD1234567890AB", "…64 chars…", environments=3)
    fake.add_cluster_key(key, secret, cluster_id="lkc-abc123", can_create_topics=False)
    fake.fail_next("/org/v2/environments", 429, retry_after=2)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=fake.app)) as http: …
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import secrets
import string
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Collection
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

__all__ = [
    "CloudAccount",
    "ClusterAccount",
    "FakeConfluent",
    "RecordedRequest",
    "cloud_error",
    "cloud_error_v2",
    "kafka_error",
    "new_api_key",
    "new_api_secret",
]

_HOLD_LIMIT = 30.0  # a held request goes on by itself after this, so a broken test cannot hang
KAFKA_429_PAGE = (
    '<html> <head> <meta http-equiv="Content-Type" content="text/html;charset=utf-8"/> '
    "<title>Error 429 Too Many Requests</title> </head> <body> <h2>HTTP ERROR 429 Too Many "
    "Requests</h2> <table> <tr> <th>URI:</th> <td>{path}</td> </tr> <tr> <th>STATUS:</th> "
    "<td>429</td> </tr> <tr> <th>MESSAGE:</th> <td>Too Many Requests</td> </tr> <tr> "
    "<th>SERVLET:</th> <td>default</td> </tr> </table> </body> </html>"
)
_CLOUD_TITLES = {
    400: ("invalid_filter", "Invalid Filter"),
    401: ("user_unauthenticated", "Authentication Required"),
    403: ("user_unauthorized", "User Access Unauthorized"),
    404: ("not_found", "Not Found"),
    500: ("out_of_gas", "Internal Server Error"),
    502: ("bad_gateway", "Bad Gateway"),
    503: ("service_unavailable", "Service Unavailable"),
}


# --- credentials a test can use -----------------------------------------------------------------


def new_api_key() -> str:
    """A random key ID in Confluent's format: 16 capital letters and digits."""
    return "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(16))


def new_api_secret(*, legacy: bool = False) -> str:
    """A random secret: 64 base64 characters, or (default) ``cflt`` + 54 + a 6-char CRC32."""
    alphabet = string.ascii_letters + string.digits + "+/"
    if legacy:
        return "".join(secrets.choice(alphabet) for _ in range(64))
    body = "".join(secrets.choice(alphabet) for _ in range(54))
    crc = base64.b64encode(struct.pack("<I", zlib.crc32(body.encode()))).decode()[:6]
    return f"cflt{body}{crc}"


# --- error bodies --------------------------------------------------------------------------------


def cloud_error(
    status: int, code: str | None = None, title: str | None = None, detail: str = ""
) -> dict[str, Any]:
    """The Cloud API's ``Failure`` body; ``status`` is a string there."""
    default_code, default_title = _CLOUD_TITLES.get(status, ("error", "Error"))
    error = {
        "id": str(uuid.uuid4()),
        "status": str(status),
        "code": code or default_code,
        "title": title or default_title,
    }
    if detail:
        error["detail"] = detail
    return {"errors": [error]}


def cloud_error_v2(status: int, code: str, message: str, request_id: str | None = None) -> dict[str, Any]:
    """The newer Cloud envelope that Confluent's API guide says errors "should" use."""
    return {
        "status": status,
        "error": {
            "code": code,
            "message": message,
            "details": [],
            "timestamp": "2026-01-01T00:00:00Z",
            "path": "/org/v2/environments",
            "suggestion": "",
        },
        "requestId": request_id or str(uuid.uuid4()),
        "doc_url": "https://docs.confluent.io/cloud/current/api.html",
    }


def kafka_error(error_code: int, message: str) -> dict[str, Any]:
    """Kafka REST v3's ``Error`` body."""
    return {"error_code": error_code, "message": message}


# --- state -----------------------------------------------------------------------------------------


@dataclass
class CloudAccount:
    key: str
    secret: str
    environments: int = 3
    role: bool = True
    """False: the owner has no role that can describe environments, so the list answers 403."""


@dataclass
class ClusterAccount:
    key: str
    secret: str
    cluster_id: str
    can_describe: bool = True
    can_create_topics: bool = True


@dataclass
class _Fault:
    path_prefix: str
    status: int
    times: int
    retry_after: float | None
    body: Any
    method: str | None


@dataclass(frozen=True)
class _Started:
    """What every handler learns first: an early answer (a fault), the caller's account, the body."""

    early: Response | None
    account: Any
    body: Any

    def answer(self, response: Response) -> _Started:
        return _Started(response, None, self.body)


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake saw it. The password is never kept, only the Basic username."""

    method: str
    path: str
    query: dict[str, str]
    username: str | None
    json: Any
    content_type: str | None
    authenticated: bool | None
    """Whether the credentials were accepted; None when a scripted fault answered first."""
    host: str = ""
    """The Host header's name (without the port): the name the client meant, whatever address it used."""


@dataclass
class FakeConfluent:
    """State of the fake plus the ASGI ``app`` that serves it."""

    delay: float = 0.0
    """Seconds every request waits before it is answered (for timeout tests)."""
    cloud_accounts: dict[str, CloudAccount] = field(default_factory=dict)
    cluster_accounts: dict[str, ClusterAccount] = field(default_factory=dict)
    topics: dict[str, list[str]] = field(default_factory=dict)
    """Topic names per known cluster ID."""
    requests: list[RecordedRequest] = field(default_factory=list)
    request_ids: list[str] = field(default_factory=list)
    """Every ``X-Request-Id`` the Cloud API side handed out, in order."""

    def __post_init__(self) -> None:
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._gate = threading.Event()
        self._gate.set()
        self._held = 0
        self._held_keys: frozenset[str] | None = None
        self.app = Starlette(
            routes=[
                Route("/org/v2/environments", self._environments, methods=["GET"]),
                Route("/kafka/v3/clusters/{cluster_id}", self._cluster, methods=["GET"]),
                Route("/kafka/v3/clusters/{cluster_id}/topics", self._topics, methods=["GET", "POST"]),
                Route("/{path:path}", self._unknown, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
            ]
        )

    # --- arranging ---------------------------------------------------------------------------

    def add_cloud_key(
        self, key: str, secret: str, *, environments: int = 3, role: bool = True
    ) -> CloudAccount:
        account = CloudAccount(key, secret, environments, role)
        self.cloud_accounts[key] = account
        return account

    def add_cluster_key(
        self,
        key: str,
        secret: str,
        *,
        cluster_id: str = "lkc-abc123",
        can_describe: bool = True,
        can_create_topics: bool = True,
        topics: list[str] | None = None,
    ) -> ClusterAccount:
        account = ClusterAccount(key, secret, cluster_id, can_describe, can_create_topics)
        self.cluster_accounts[key] = account
        existing = self.topics.setdefault(cluster_id, [])
        existing.extend(t for t in (topics or []) if t not in existing)
        return account

    def add_cluster(self, cluster_id: str, topics: list[str] | None = None) -> None:
        """A cluster that exists but that no registered key belongs to."""
        self.topics.setdefault(cluster_id, list(topics or []))

    def revoke_key(self, key: str) -> None:
        """Delete ``key`` as deleting an API key in Confluent Cloud does: from now on both surfaces
        answer 401 for it (the Cloud API with its ``invalid_key`` challenge, Kafka REST with 40101).
        Register it again with :meth:`add_cloud_key` / :meth:`add_cluster_key` to restore it."""
        self.cloud_accounts.pop(key, None)
        self.cluster_accounts.pop(key, None)

    def fail_next(
        self,
        path_prefix: str,
        status: int,
        *,
        times: int = 1,
        retry_after: float | None = None,
        body: Any = None,
        method: str | None = None,
    ) -> None:
        """Answer the next ``times`` requests under ``path_prefix`` with ``status``.

        The body defaults to what that surface sends for that status (an empty 429 with rate-limit
        headers on the Cloud API, the HTML page on Kafka REST, the right error envelope otherwise).
        Pass ``body`` (a dict for JSON, a str for HTML) to script another one.
        """
        with self._lock:
            self._faults.append(_Fault(path_prefix, status, times, retry_after, body, method))

    def hold(self, *, keys: Collection[str] | None = None) -> None:
        """Make every request (or only those of ``keys``) wait, from now on, until :meth:`release`."""
        self._held_keys = None if keys is None else frozenset(keys)
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    @property
    def held(self) -> int:
        """How many requests are waiting at the gate right now."""
        return self._held

    async def wait_until_held(self, count: int = 1, timeout: float = 5.0) -> None:
        """Wait until ``count`` requests are waiting at the gate (set by :meth:`hold`)."""
        deadline = time.monotonic() + timeout
        while self._held < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self._held} requests held, expected {count}")
            await asyncio.sleep(0.005)

    def requests_to(self, path_prefix: str, method: str | None = None) -> list[RecordedRequest]:
        return [
            r
            for r in self.requests
            if r.path.startswith(path_prefix) and (method is None or r.method == method)
        ]

    # --- serving -----------------------------------------------------------------------------

    async def _start(self, request: Request, accounts: dict[str, Any]) -> _Started:
        """Record the request, wait as told, and answer scripted faults; look up the caller."""
        username, password = _basic_credentials(request)
        body: Any = None
        raw = await request.body()
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode(errors="replace")
        if self._held_keys is None or username in self._held_keys:
            await self._wait_at_gate()
        if self.delay:
            await asyncio.sleep(self.delay)
        fault = self._take_fault(request)
        account = None
        if fault is None and username is not None and password is not None:
            candidate = accounts.get(username)
            if candidate is not None and hmac.compare_digest(candidate.secret.encode(), password.encode()):
                account = candidate
        self.requests.append(
            RecordedRequest(
                method=request.method,
                path=request.url.path,
                query=dict(request.query_params),
                username=username,
                json=body,
                content_type=request.headers.get("content-type"),
                authenticated=None if fault is not None else account is not None,
                host=request.url.hostname or "",
            )
        )
        early = self._fault_response(fault, request) if fault is not None else None
        return _Started(early, account, body)

    async def _wait_at_gate(self) -> None:
        if self._gate.is_set():
            return
        self._held += 1
        try:
            deadline = time.monotonic() + _HOLD_LIMIT
            while not self._gate.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
        finally:
            self._held -= 1

    def _take_fault(self, request: Request) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if request.url.path.startswith(fault.path_prefix) and fault.method in (None, request.method):
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    async def _environments(self, request: Request) -> Response:
        started = await self._start(request, self.cloud_accounts)
        if started.early is not None:
            return started.early
        account = started.account
        if account is None:
            username, _ = _basic_credentials(request)
            if username in self.cluster_accounts:
                detail = "invalid API key: make sure you're using a Cloud API key"
            else:
                detail = "Valid authentication credentials must be provided"
            return self._cloud_json(401, cloud_error(401, detail=detail), _WWW_AUTHENTICATE)
        if not account.role:
            detail = "The API key's owner is not allowed to describe environments."
            return self._cloud_json(403, cloud_error(403, detail=detail))
        size_text = request.query_params.get("page_size", "10")
        if not size_text.isdigit() or not 1 <= int(size_text) <= 100:
            return self._cloud_json(400, cloud_error(400, detail="page_size must be between 1 and 100"))
        environments = [_environment(i) for i in range(account.environments)]
        base = "https://api.confluent.cloud/org/v2/environments"
        return self._cloud_json(
            200,
            {
                "api_version": "org/v2",
                "kind": "EnvironmentList",
                "metadata": {"first": base, "total_size": account.environments},
                "data": environments[: int(size_text)],
            },
        )

    async def _kafka_start(self, request: Request) -> _Started:
        """Like :meth:`_start`, plus Kafka REST's authentication and cluster lookup."""
        started = await self._start(request, self.cluster_accounts)
        account, cluster_id = started.account, request.path_params["cluster_id"]
        if started.early is not None:
            return started
        if account is None:
            return started.answer(JSONResponse(kafka_error(40101, "Authentication failed"), 401))
        if cluster_id not in self.topics:
            return started.answer(
                JSONResponse(kafka_error(404, f"Cluster {cluster_id} cannot be found."), 404)
            )
        if account.cluster_id != cluster_id:  # each Kafka key is valid for exactly one cluster
            return started.answer(JSONResponse(kafka_error(40101, "Authentication failed"), 401))
        return started

    async def _cluster(self, request: Request) -> Response:
        started = await self._kafka_start(request)
        account = started.account
        if started.early is not None:
            return started.early
        if not account.can_describe:
            return JSONResponse(kafka_error(40301, "Request is not authorized"), 403)
        cluster_id = account.cluster_id
        base = f"{request.base_url}kafka/v3/clusters/{cluster_id}"
        links = ("acls", "brokers", "broker_configs", "consumer_groups", "topics")
        body: dict[str, Any] = {
            "kind": "KafkaCluster",
            "metadata": {"self": base, "resource_name": f"crn:///kafka={cluster_id}"},
            "cluster_id": cluster_id,
            "controller": {"related": f"{base}/brokers/1"},
            "partition_reassignments": {"related": f"{base}/topics/-/partitions/-/reassignment"},
        }
        body.update({name: {"related": f"{base}/{name.replace('_', '-')}"} for name in links})
        return JSONResponse(body)

    async def _topics(self, request: Request) -> Response:
        started = await self._kafka_start(request)
        account = started.account
        if started.early is not None:
            return started.early
        cluster_id = account.cluster_id
        topics = self.topics[cluster_id]
        if request.method == "GET":
            if not account.can_describe:
                return JSONResponse(kafka_error(40301, "Request is not authorized"), 403)
            base = f"{request.base_url}kafka/v3/clusters/{cluster_id}/topics"
            data = [_topic(str(request.base_url), cluster_id, name) for name in topics]
            return JSONResponse(
                {"kind": "KafkaTopicList", "metadata": {"self": base, "next": None}, "data": data}
            )
        body = started.body
        if "application/json" not in (request.headers.get("content-type") or ""):
            return JSONResponse(kafka_error(415, "HTTP 415 Unsupported Media Type"), 415)
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("topic_name"), str)
            or not body["topic_name"]
        ):
            return JSONResponse(kafka_error(400, "topic_name is required"), 400)
        if not account.can_create_topics:  # authorization comes before validate_only is honoured
            return JSONResponse(kafka_error(40301, "Request is not authorized"), 403)
        name = body["topic_name"]
        if name in topics:
            return JSONResponse(kafka_error(40002, f"Topic '{name}' already exists."), 400)
        if body.get("replication_factor") not in (None, 3):
            message = f"Replication factor: {body['replication_factor']} is not allowed."
            return JSONResponse(kafka_error(40002, message), 400)
        if body.get("validate_only") is True:
            return JSONResponse(_topic(str(request.base_url), cluster_id, name), 200)
        topics.append(name)
        return JSONResponse(_topic(str(request.base_url), cluster_id, name), 201)

    async def _unknown(self, request: Request) -> Response:
        await self._start(request, {})
        if request.url.path.startswith("/kafka/"):
            return JSONResponse(kafka_error(404, "HTTP 404 Not Found"), 404)
        return self._cloud_json(404, cloud_error(404))

    def _new_request_id(self, wanted: str | None = None) -> str:
        request_id = wanted or str(uuid.uuid4())
        self.request_ids.append(request_id)
        return request_id

    def _cloud_json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
        # A scripted body in the newer envelope carries its request id; the header repeats it.
        wanted = body.get("requestId") if isinstance(body, dict) else None
        all_headers = {"X-Request-Id": self._new_request_id(wanted), **(headers or {})}
        return JSONResponse(body, status, headers=all_headers)

    def _fault_response(self, fault: _Fault, request: Request) -> Response:
        kafka = request.url.path.startswith("/kafka/")
        status = fault.status
        if status == 429 and fault.body is None:
            if kafka:  # Jetty's DoSFilter page: HTML, and no rate-limit headers at all
                return HTMLResponse(KAFKA_429_PAGE.format(path=request.url.path), 429)
            headers = {
                "X-Request-Id": self._new_request_id(),
                "X-RateLimit-Limit": "50",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(int(fault.retry_after or 60)),
            }
            if fault.retry_after is not None:
                headers["Retry-After"] = str(int(fault.retry_after))
            return Response(status_code=429, headers=headers)
        body = fault.body
        if body is None:
            body = kafka_error(status, _reason(status)) if kafka else cloud_error(status)
        extra = {"Retry-After": str(int(fault.retry_after))} if fault.retry_after is not None else {}
        if isinstance(body, str):
            return HTMLResponse(body, status, headers=extra)
        if kafka:
            return JSONResponse(body, status, headers=extra)
        if status == 401:
            extra.update(_WWW_AUTHENTICATE)
        return self._cloud_json(status, body, extra)


# --- helpers -------------------------------------------------------------------------------------

_WWW_AUTHENTICATE = {
    "WWW-Authenticate": 'Basic error="invalid_key", error_description="The API Key is invalid"'
}


def _basic_credentials(request: Request) -> tuple[str | None, str | None]:
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None, None
    try:
        decoded = base64.b64decode(encoded, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    username, sep, password = decoded.partition(":")
    return (username, password) if sep else (None, None)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _environment(index: int) -> dict[str, Any]:
    env_id = f"env-{index:05d}"
    return {
        "api_version": "org/v2",
        "kind": "Environment",
        "id": env_id,
        "metadata": {
            "self": f"https://api.confluent.cloud/org/v2/environments/{env_id}",
            "resource_name": f"crn://confluent.cloud/organization=0000/environment={env_id}",
            "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z",
        },
        "display_name": f"environment {index}",
        "stream_governance_config": {"package": "ESSENTIALS"},
    }


def _topic(base_url: str, cluster_id: str, name: str) -> dict[str, Any]:
    self_url = f"{base_url}kafka/v3/clusters/{cluster_id}/topics/{name}"
    return {
        "kind": "KafkaTopic",
        "metadata": {"self": self_url, "resource_name": f"crn:///kafka={cluster_id}/topic={name}"},
        "cluster_id": cluster_id,
        "topic_name": name,
        "is_internal": False,
        "replication_factor": 3,
        "partitions_count": 6,
        "partitions": {"related": f"{self_url}/partitions"},
        "configs": {"related": f"{self_url}/configs"},
        "partition_reassignments": {"related": f"{self_url}/partitions/-/reassignments"},
    }
