"""A fake Snowflake SQL API v2: submit a statement, poll it, cancel it.

It follows the published contract (specs/snowflake/snowflake-sql-api-v2.openapi.yaml and the
README beside it) and, unlike a mock server that returns canned examples, it checks credentials the
way Snowflake does: a key-pair JWT is verified against the public keys registered for the user
(RSA_PUBLIC_KEY and RSA_PUBLIC_KEY_2, picked by the fingerprint in ``iss``), with RS256, ``iat``
at most 60 seconds old and a lifetime of at most an hour; a programmatic access token must be one
registered for a user. It then answers the statements the provider sends from the state a test
arranges (users, roles, warehouses, databases) and refuses any other statement.

Which account a request is for:

* the host, for ``https://<identifier>.snowflakecomputing.com`` (an org-account identifier or a
  locator; the tests route that host to the app with ``httpx.ASGITransport``);
* else a path prefix, for ``http://fake/<identifier>/api/v2/statements`` (``SNOWFLAKE_API_URL``
  with ``{account}``);
* else the credential: the account named in the JWT, or the one the token belongs to.

An identifier that names no account answers 404 (Snowflake's SQL API does so for a wrong account).

Contracts encoded here (SPEC, README §3-§4):

* Success is a ``ResultSet`` (200) with ``resultSetMetaData.rowType`` and string ``data``. In async
  mode (:meth:`FakeSnowflake.answer_async`) a submit answers 202 ``QueryStatus`` (code 333334)
  and ``GET /api/v2/statements/{handle}`` answers 202 until the result is ready.
* A rejected JWT is 401 ``{"code": "390144", "message": "JWT token is invalid. [<uuid>]"}``; the
  reason is kept in :attr:`FakeSnowflake.login_failures` under that uuid, with the names
  SYSTEM$GET_LOGIN_FAILURE_DETAILS uses (FINGERPRINT_MISMATCH, …). An unknown token is 401 with a
  message only (the README records no code for it). A disabled or locked user is 401 with 390101 /
  390102; a blocked address 403 with 390422 (the README leaves both statuses open: these are our
  choice); a role the user lacks 422 with 390189 ("not documented" in the README, as a third-party
  fake answers).
* A requested warehouse or database that is missing or not usable by the role does not fail the
  statement: ``CURRENT_WAREHOUSE()`` / ``CURRENT_DATABASE()`` come back NULL.
* ``SHOW WAREHOUSES LIKE '<pattern>' [WITH PRIVILEGES USAGE]`` matches names case-insensitively with
  ``_`` and ``%`` wildcards and lists only warehouses the role may use. No statement ever changes a
  warehouse's state.
* A submit repeated with the same ``requestId`` is answered from the first execution, not run again.
  A client marks such a re-send with ``retry=true`` (anything but ``true``/``false`` is a 400); the
  fake answers it from the first execution either way.
* A 429 has no body (SPEC: "body not guaranteed"), with ``Retry-After`` when the fault asks for one.

Usage::

    fake = FakeSnowflake()
    account = fake.add_account("myorg-analytics", locator="xy12345.us-east-2.aws")
    fake.add_user(account, "SVC_BOT", public_key=key.public_key(), roles=["REPORTING"])
    fake.add_warehouse(account, "REPORTING_WH", usage=["REPORTING"])
    fake.fail_next(429, retry_after=2)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=fake.app)) as http: …
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

__all__ = [
    "PROBE_COLUMNS",
    "FakeAccount",
    "FakeSnowflake",
    "FakeUser",
    "FakeWarehouse",
    "RecordedRequest",
    "new_rsa_key",
    "new_token",
    "snowflake_error",
]

_HOLD_LIMIT = 30.0  # a held request goes on by itself after this, so a broken test cannot hang
_DOMAINS = (".snowflakecomputing.com", ".snowflakecomputing.cn")
_STATEMENTS = "/api/v2/statements"
PROBE_COLUMNS = (
    "CURRENT_ACCOUNT()",
    "CURRENT_USER()",
    "CURRENT_ROLE()",
    "CURRENT_WAREHOUSE()",
    "CURRENT_DATABASE()",
)
_PROBE = "SELECT " + ", ".join(PROBE_COLUMNS)
_SHOW_WAREHOUSES = re.compile(
    r"SHOW\s+WAREHOUSES\s+LIKE\s+'((?:[^'\\]|''|\\.)*)'(\s+WITH\s+PRIVILEGES\s+USAGE)?", re.IGNORECASE
)
_WAREHOUSE_COLUMNS = (
    "name",
    "state",
    "type",
    "size",
    "min_cluster_count",
    "max_cluster_count",
    "started_clusters",
    "running",
    "queued",
    "is_default",
    "is_current",
    "auto_suspend",
    "auto_resume",
    "owner",
)
_BODY_FIELDS = {"statement", "timeout", "database", "schema", "warehouse", "role", "bindings", "parameters"}
_ASYNC_MESSAGE = (
    "Asynchronous execution in progress. Use provided query id to perform query monitoring and management."
)


# --- credentials a test can use -----------------------------------------------------------------


def new_rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def new_token() -> str:
    """A random programmatic access token: JWT-shaped, as Snowflake's are, a few hundred characters."""

    def part(size: int) -> str:
        return base64.urlsafe_b64encode(secrets.token_bytes(size)).rstrip(b"=").decode()

    return f"eyJraWQiOiJwYXQiLCJhbGciOiJFUzI1NiJ9.{part(180)}.{part(64)}"


def snowflake_error(code: str | None, message: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"message": message, **extra}
    if code is not None:
        body = {"code": code, **body}
    return body


def _fingerprint(public_key: rsa.RSAPublicKey) -> str:
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "SHA256:" + base64.b64encode(hashlib.sha256(der).digest()).decode()


# --- state -----------------------------------------------------------------------------------------


@dataclass
class FakeUser:
    name: str
    """The user (and login) name, upper case."""
    public_keys: list[rsa.RSAPublicKey] = field(default_factory=list)
    """RSA_PUBLIC_KEY and RSA_PUBLIC_KEY_2."""
    tokens: dict[str, str | None] = field(default_factory=dict)
    """Programmatic access tokens -> their ROLE_RESTRICTION."""
    roles: set[str] = field(default_factory=set)
    default_role: str = "PUBLIC"
    default_warehouse: str | None = None
    default_database: str | None = None
    disabled: bool = False
    locked: bool = False


@dataclass
class FakeWarehouse:
    name: str
    state: str = "SUSPENDED"
    usage: set[str] = field(default_factory=set)
    """Roles with USAGE on it."""


@dataclass
class FakeAccount:
    identifier: str
    """``orgname-account_name``, lower case."""
    locator: str
    """``xy12345`` or ``xy12345.<region>.<cloud>``, lower case."""
    users: dict[str, FakeUser] = field(default_factory=dict)
    warehouses: dict[str, FakeWarehouse] = field(default_factory=dict)
    databases: dict[str, set[str]] = field(default_factory=dict)
    """Database name -> roles with USAGE on it."""
    blocked_address: str | None = None
    """When set, a network policy refuses every request, naming this address."""

    @property
    def hosts(self) -> set[str]:
        # orgname-account-name is the hyphenated spelling of orgname-account_name in host names.
        return {self.identifier, self.identifier.replace("_", "-"), self.locator}

    @property
    def jwt_names(self) -> set[str]:
        """What a JWT may name: ORGNAME-ACCOUNT_NAME, or the locator without its region."""
        return {self.identifier.upper(), self.locator.split(".", 1)[0].upper()}


@dataclass
class _Fault:
    status: int
    times: int
    code: str | None
    message: str | None
    retry_after: float | None
    method: str | None


@dataclass
class _Statement:
    handle: str
    response: tuple[int, dict[str, Any]]
    polls_left: int | None
    """Polls answered 202 before the result; None: never finishes."""
    cancelled: bool = False


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake saw it. Bearer values are never kept: only a JWT's (public) claims."""

    method: str
    path: str
    host: str
    query: dict[str, str]
    token_type: str | None
    user_agent: str | None
    accept: str | None
    content_type: str | None
    json: Any
    claims: dict[str, Any] | None
    jwt_header: dict[str, Any] | None
    authenticated: bool | None
    """Whether the credential was accepted; None when a scripted fault answered first."""


class _Refusal(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


@dataclass
class FakeSnowflake:
    """State of the fake plus the ASGI ``app`` that serves it."""

    delay: float = 0.0
    """Seconds every request waits before it is answered (for timeout tests)."""
    clock: Callable[[], float] = time.time
    """The fake's idea of now, for a JWT's ``iat`` and ``exp``."""
    accounts: dict[str, FakeAccount] = field(default_factory=dict)
    requests: list[RecordedRequest] = field(default_factory=list)
    statements: list[str] = field(default_factory=list)
    """Every statement submitted with an accepted credential, in order, as sent."""
    executions: dict[str, int] = field(default_factory=dict)
    """requestId -> how many times its statement actually ran."""
    login_failures: dict[str, str] = field(default_factory=dict)
    """What SYSTEM$GET_LOGIN_FAILURE_DETAILS would say, by the uuid in the 401 message."""
    cancelled: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._gate = threading.Event()
        self._gate.set()
        self._held = 0
        self._async_polls: int | None = -1  # -1: answer synchronously
        self._handles: dict[str, _Statement] = {}
        self._by_request_id: dict[str, tuple[int, dict[str, Any]]] = {}
        methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
        self.app = Starlette(
            routes=[
                Route(_STATEMENTS, self._submit, methods=["POST"]),
                Route(_STATEMENTS + "/{handle}", self._status, methods=["GET"]),
                Route(_STATEMENTS + "/{handle}/cancel", self._cancel, methods=["POST"]),
                Route("/{prefix}" + _STATEMENTS, self._submit, methods=["POST"]),
                Route("/{prefix}" + _STATEMENTS + "/{handle}", self._status, methods=["GET"]),
                Route("/{prefix}" + _STATEMENTS + "/{handle}/cancel", self._cancel, methods=["POST"]),
                Route("/{path:path}", self._unknown, methods=methods),
            ]
        )

    # --- arranging ---------------------------------------------------------------------------

    def add_account(self, identifier: str, *, locator: str = "xy12345.us-east-2.aws") -> FakeAccount:
        account = FakeAccount(identifier.lower(), locator.lower())
        self.accounts[account.identifier] = account
        return account

    def add_user(
        self,
        account: FakeAccount,
        name: str,
        *,
        public_key: rsa.RSAPublicKey | None = None,
        public_key_2: rsa.RSAPublicKey | None = None,
        roles: Iterable[str] = (),
        default_role: str = "PUBLIC",
        default_warehouse: str | None = None,
        default_database: str | None = None,
    ) -> FakeUser:
        keys = [k for k in (public_key, public_key_2) if k is not None]
        user = FakeUser(
            name.upper(),
            keys,
            roles={"PUBLIC", *roles},
            default_role=default_role,
            default_warehouse=default_warehouse,
            default_database=default_database,
        )
        account.users[user.name] = user
        return user

    def add_token(self, user: FakeUser, *, role_restriction: str | None = None) -> str:
        token = new_token()
        user.tokens[token] = role_restriction
        return token

    def add_warehouse(
        self, account: FakeAccount, name: str, *, usage: Iterable[str] = (), state: str = "SUSPENDED"
    ) -> FakeWarehouse:
        warehouse = FakeWarehouse(name, state, set(usage))
        account.warehouses[name] = warehouse
        return warehouse

    def add_database(self, account: FakeAccount, name: str, *, usage: Iterable[str] = ()) -> None:
        account.databases[name] = set(usage)

    def block_network(self, account: FakeAccount, address: str = "203.0.113.7") -> None:
        """A network policy that refuses the caller, as Snowflake does with 390422."""
        account.blocked_address = address

    def fail_next(
        self,
        status: int,
        *,
        code: str | None = None,
        message: str | None = None,
        times: int = 1,
        retry_after: float | None = None,
        method: str | None = None,
    ) -> None:
        """Answer the next ``times`` requests (of ``method``, or any) with ``status`` before looking
        at them. The body is ``{"code", "message"}`` when either is given, else empty."""
        with self._lock:
            self._faults.append(_Fault(status, times, code, message, retry_after, method))

    def answer_async(self, polls: int | None = 1) -> None:
        """From now on, answer a submit with 202 and its status with 202 ``polls`` times before the
        result (None: never finish)."""
        self._async_polls = polls

    def hold(self) -> None:
        """Make every request wait, from now on, until :meth:`release`."""
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    @property
    def held(self) -> int:
        return self._held

    async def wait_until_held(self, count: int = 1, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while self._held < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self._held} requests held, expected {count}")
            await asyncio.sleep(0.005)

    def requests_to(self, path_suffix: str, method: str | None = None) -> list[RecordedRequest]:
        return [
            r
            for r in self.requests
            if r.path.endswith(path_suffix) and (method is None or r.method == method)
        ]

    # --- serving -----------------------------------------------------------------------------

    async def _submit(self, request: Request) -> Response:
        try:
            account, user, body = await self._start(request)
        except _Refusal as refusal:
            return refusal.response
        request_id = request.query_params.get("requestId")
        if request_id is not None and not _is_uuid(request_id):
            return _error(400, None, "requestId must be a UUID.")
        if request.query_params.get("retry", "false") not in ("true", "false"):
            return _error(400, None, "retry must be true or false.")
        if "application/json" not in (request.headers.get("content-type") or ""):
            return _error(415, None, "Unsupported media type: the SQL API takes application/json only.")
        problem = _body_problem(body)
        if problem:
            return _error(400, None, problem)
        self.statements.append(body["statement"])
        if request_id is not None and request_id in self._by_request_id:
            status, answer = self._by_request_id[request_id]  # idempotent: not run again
            return JSONResponse(answer, status)
        status, answer = self._execute(account, user, body, request.headers.get("authorization", ""))
        if request_id is not None:
            self.executions[request_id] = self.executions.get(request_id, 0) + 1
            self._by_request_id[request_id] = (status, answer)
        if status == 200 and self._async_polls != -1:
            handle = answer["statementHandle"]
            self._handles[handle] = _Statement(handle, (status, answer), self._async_polls)
            return JSONResponse(_query_status(handle), 202)
        return JSONResponse(answer, status)

    async def _status(self, request: Request) -> Response:
        try:
            await self._start(request)
        except _Refusal as refusal:
            return refusal.response
        statement = self._handles.get(request.path_params["handle"])
        if statement is None:
            return _error(404, None, "Statement not found.")
        if statement.cancelled:
            return _error(
                422, "000604", "SQL execution canceled", sqlState="57014", statementHandle=statement.handle
            )
        if statement.polls_left is None or statement.polls_left > 0:
            if statement.polls_left is not None:
                statement.polls_left -= 1
            return JSONResponse(_query_status(statement.handle), 202)
        status, answer = statement.response
        return JSONResponse(answer, status)

    async def _cancel(self, request: Request) -> Response:
        try:
            await self._start(request)
        except _Refusal as refusal:
            return refusal.response
        handle = request.path_params["handle"]
        statement = self._handles.get(handle)
        if statement is None:
            return _error(404, None, "Statement not found.")
        statement.cancelled = True
        self.cancelled.append(handle)
        return JSONResponse({"statementHandle": handle, "message": "successfully canceled"})

    async def _unknown(self, request: Request) -> Response:
        self._record(request, None, None, None, None)
        return Response(status_code=404)

    async def _start(self, request: Request) -> tuple[FakeAccount, FakeUser, Any]:
        """Record, wait as told, answer faults, then find the account and check the credential."""
        raw = await request.body()
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode(errors="replace")
        await self._wait_at_gate()
        if self.delay:
            await asyncio.sleep(self.delay)
        claims, header = _unverified_jwt(request)
        fault = self._take_fault(request)
        if fault is not None:
            self._record(request, body, claims, header, None)
            raise _Refusal(_fault_response(fault))
        try:
            account, user = self._authenticate(request, claims, header)
        except _Refusal:
            self._record(request, body, claims, header, False)
            raise
        self._record(request, body, claims, header, True)
        if not request.headers.get("user-agent"):
            raise _Refusal(_error(400, "391903", "User-Agent header is required."))
        if account.blocked_address:
            message = (
                f"Incoming request with IP/Token {account.blocked_address} is not allowed to access "
                "Snowflake. Contact your local security administrator."
            )
            raise _Refusal(_error(403, "390422", message, sqlState="08004"))
        return account, user, body

    def _record(
        self,
        request: Request,
        body: Any,
        claims: dict[str, Any] | None,
        header: dict[str, Any] | None,
        authenticated: bool | None,
    ) -> None:
        self.requests.append(
            RecordedRequest(
                method=request.method,
                path=request.url.path,
                host=request.url.hostname or "",
                query=dict(request.query_params),
                token_type=request.headers.get("x-snowflake-authorization-token-type"),
                user_agent=request.headers.get("user-agent"),
                accept=request.headers.get("accept"),
                content_type=request.headers.get("content-type"),
                json=body,
                claims=claims,
                jwt_header=header,
                authenticated=authenticated,
            )
        )

    def _url_account(self, request: Request) -> tuple[bool, FakeAccount | None]:
        """(whether the URL names an account, the account it names)."""
        host = request.url.hostname or ""
        named: str | None = None
        for domain in _DOMAINS:
            if host.endswith(domain):
                named = host[: -len(domain)]
        if named is None and "prefix" in request.path_params:
            named = request.path_params["prefix"].lower()
        if named is None:
            return False, None
        for account in self.accounts.values():
            if named in account.hosts:
                return True, account
        return True, None

    def _authenticate(
        self, request: Request, claims: dict[str, Any] | None, header: dict[str, Any] | None
    ) -> tuple[FakeAccount, FakeUser]:
        names_account, account = self._url_account(request)
        if names_account and account is None:
            raise _Refusal(Response(status_code=404))
        scheme, _, bearer = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not bearer:
            raise _Refusal(_error(401, None, "Unauthorized: the request has no access token."))
        token_type = (request.headers.get("x-snowflake-authorization-token-type") or "OAUTH").upper()
        if token_type == "KEYPAIR_JWT":
            return self._check_jwt(bearer, account, claims, header)
        if token_type == "PROGRAMMATIC_ACCESS_TOKEN":
            for candidate in [account] if account else list(self.accounts.values()):
                for user in candidate.users.values():
                    if bearer in user.tokens:
                        return candidate, self._usable(user)
            raise _Refusal(
                self._login_failed("PAT_INVALID", code=None, text="Programmatic access token is invalid.")
            )
        raise _Refusal(_error(401, "390303", "Invalid OAuth access token."))

    def _check_jwt(
        self,
        token: str,
        account: FakeAccount | None,
        claims: dict[str, Any] | None,
        header: dict[str, Any] | None,
    ) -> tuple[FakeAccount, FakeUser]:
        if claims is None or header is None:
            raise _Refusal(self._login_failed("JWT_TOKEN_INVALID"))
        if header.get("alg") != "RS256":
            raise _Refusal(self._login_failed("JWT_TOKEN_INVALID_SIGNATURE_ALGORITHM"))  # 394305
        issuer, subject = str(claims.get("iss", "")), str(claims.get("sub", ""))
        qualified, marker, fingerprint = issuer.rpartition(".SHA256:")
        if not marker or qualified != subject or "." not in qualified:
            raise _Refusal(self._login_failed("JWT_TOKEN_INVALID_USER_IN_ISSUER"))  # 394300
        account_name, user_name = qualified.split(".", 1)
        if account is None:
            account = next((a for a in self.accounts.values() if account_name in a.jwt_names), None)
        if account is None or account_name not in account.jwt_names:
            raise _Refusal(self._login_failed("JWT_TOKEN_INVALID_ACCOUNT_MISMATCH"))  # 394307
        user = account.users.get(user_name)
        if user is None:
            raise _Refusal(self._login_failed("JWT_TOKEN_INVALID_USER_IN_ISSUER"))  # 394300
        key = next((k for k in user.public_keys if _fingerprint(k) == "SHA256:" + fingerprint), None)
        if key is None:
            raise _Refusal(self._login_failed("JWT_TOKEN_INVALID_PUBLIC_KEY_FINGERPRINT_MISMATCH"))  # 394304
        try:
            jwt.decode(token, key, algorithms=["RS256"], options={"verify_exp": False, "verify_iat": False})
        except jwt.InvalidTokenError:
            raise _Refusal(self._login_failed("JWT_TOKEN_INVALID_SIGNATURE")) from None  # 394306
        issued, expires = claims.get("iat"), claims.get("exp")
        if not isinstance(issued, int | float) or not isinstance(expires, int | float):
            raise _Refusal(self._login_failed("JWT_TOKEN_INVALID_ISSUE_TIME_OR_EXPIRATION_TIME"))  # 394301
        now = self.clock()
        if expires > 10**11:  # milliseconds, which AUTH allows
            issued, expires = issued / 1000, expires / 1000
        if expires < now:
            raise _Refusal(self._login_failed("JWT_TOKEN_EXPIRED"))  # 394303
        if now - issued > 60:
            raise _Refusal(self._login_failed("JWT_TOKEN_INVALID_ISSUE_TIME"))  # 394302
        if expires - issued > 3600:
            # The fake's own strictness: AUTH says a JWT is good for an hour at most.
            raise _Refusal(self._login_failed("JWT_TOKEN_LIFETIME_OVER_ONE_HOUR"))
        return account, self._usable(user)

    def _usable(self, user: FakeUser) -> FakeUser:
        if user.disabled:
            message = "User access disabled. Contact your local system administrator."
            raise _Refusal(_error(401, "390101", message, sqlState="08004"))
        if user.locked:
            message = (
                "User temporarily locked due to too many failed attempts. Try again after 15 minutes "
                "or contact your account administrator for assistance."
            )
            raise _Refusal(_error(401, "390102", message, sqlState="08004"))
        return user

    def _login_failed(
        self, reason: str, *, code: str | None = "390144", text: str = "JWT token is invalid."
    ) -> Response:
        failure_id = str(uuid.uuid4())
        self.login_failures[failure_id] = reason
        return _error(401, code, f"{text} [{failure_id}]")

    def _execute(
        self, account: FakeAccount, user: FakeUser, body: dict[str, Any], authorization: str
    ) -> tuple[int, dict[str, Any]]:
        handle = str(uuid.uuid4())
        token = authorization.partition(" ")[2]
        restriction = user.tokens.get(token) if token in user.tokens else None
        role = body.get("role")
        if role is not None and (role not in user.roles or (restriction is not None and role != restriction)):
            message = (
                f"Role '{role}' specified in the connect string is not granted to this user. Contact your "
                "local system administrator, or attempt to login with another role, e.g. PUBLIC."
            )
            return 422, snowflake_error("390189", message, sqlState="08004", statementHandle=handle)
        if role is None:
            role = restriction or (user.default_role if user.default_role in user.roles else "PUBLIC")
        warehouse = body.get("warehouse", user.default_warehouse)
        found = account.warehouses.get(warehouse) if isinstance(warehouse, str) else None
        current_warehouse = found.name if found is not None and role in found.usage else None
        database = body.get("database", user.default_database)
        usage = account.databases.get(database) if isinstance(database, str) else None
        current_database = database if usage is not None and role in usage else None

        statement = " ".join(body["statement"].split())
        if statement.upper() == _PROBE.upper():
            row = [
                account.locator.split(".", 1)[0].upper(),
                user.name,
                role,
                current_warehouse,
                current_database,
            ]
            return 200, _result_set(handle, list(PROBE_COLUMNS), [row])
        show = _SHOW_WAREHOUSES.fullmatch(statement)
        if show is not None:
            pattern = _string_literal(show.group(1))
            rows = [
                _warehouse_row(w, user, current_warehouse)
                for w in account.warehouses.values()
                if role in w.usage and _like(w.name, pattern)
            ]
            return 200, _result_set(handle, list(_WAREHOUSE_COLUMNS), rows)
        message = f"SQL compilation error:\nsyntax error line 1 at position 0 unexpected '{statement[:20]}'."
        return 422, snowflake_error("001003", message, sqlState="42000", statementHandle=handle)

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
                if fault.method in (None, request.method):
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault
        return None


# --- helpers -------------------------------------------------------------------------------------


def _error(status: int, code: str | None, message: str, **extra: Any) -> Response:
    return JSONResponse(snowflake_error(code, message, **extra), status)


def _fault_response(fault: _Fault) -> Response:
    headers = {"Retry-After": str(int(fault.retry_after))} if fault.retry_after is not None else {}
    if fault.code is None and fault.message is None:
        return Response(status_code=fault.status, headers=headers)
    return JSONResponse(snowflake_error(fault.code, fault.message or ""), fault.status, headers=headers)


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _body_problem(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "The request body must be a JSON object."
    unknown = set(body) - _BODY_FIELDS
    if unknown:
        return f"Unknown field(s) in the request body: {', '.join(sorted(unknown))}."
    if not isinstance(body.get("statement"), str) or not body["statement"].strip():
        return "statement is required."
    timeout = body.get("timeout")
    if timeout is not None and (not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 0):
        return "timeout must be a non-negative integer."
    for name in ("role", "warehouse", "database", "schema"):
        if name in body and not isinstance(body[name], str):
            return f"{name} must be a string."
    return None


def _unverified_jwt(request: Request) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    token_type = (request.headers.get("x-snowflake-authorization-token-type") or "").upper()
    scheme, _, bearer = request.headers.get("authorization", "").partition(" ")
    if token_type != "KEYPAIR_JWT" or scheme.lower() != "bearer":
        return None, None
    try:
        header = jwt.get_unverified_header(bearer)
        claims = jwt.decode(bearer, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return None, None
    return dict(claims), dict(header)


def _query_status(handle: str) -> dict[str, Any]:
    return {
        "code": "333334",
        "message": _ASYNC_MESSAGE,
        "statementHandle": handle,
        "statementStatusUrl": f"{_STATEMENTS}/{handle}",
    }


def _result_set(handle: str, columns: list[str], rows: list[list[str | None]]) -> dict[str, Any]:
    return {
        "resultSetMetaData": {
            "numRows": len(rows),
            "format": "jsonv2",
            "rowType": [
                {
                    "name": name,
                    "type": "text",
                    "length": 16777216,
                    "precision": 0,
                    "scale": 0,
                    "nullable": True,
                }
                for name in columns
            ],
            "partitionInfo": [{"rowCount": len(rows), "uncompressedSize": 64 * (len(rows) + 1)}],
        },
        "data": rows,
        "code": "090001",
        "sqlState": "00000",
        "message": "Statement executed successfully.",
        "statementHandle": handle,
        "statementStatusUrl": f"{_STATEMENTS}/{handle}",
        "createdOn": int(time.time() * 1000),
    }


def _warehouse_row(warehouse: FakeWarehouse, user: FakeUser, current: str | None) -> list[str | None]:
    values = {
        "name": warehouse.name,
        "state": warehouse.state,
        "type": "STANDARD",
        "size": "X-Small",
        "min_cluster_count": "1",
        "max_cluster_count": "1",
        "started_clusters": "1" if warehouse.state == "STARTED" else "0",
        "running": "0",
        "queued": "0",
        "is_default": "Y" if warehouse.name == user.default_warehouse else "N",
        "is_current": "Y" if warehouse.name == current else "N",
        "auto_suspend": "60",
        "auto_resume": "true",
        "owner": "SYSADMIN",
    }
    return [values[c] for c in _WAREHOUSE_COLUMNS]


def _string_literal(text: str) -> str:
    """The value of a single-quoted literal's body: '' is a quote, backslash escapes a character."""
    return re.sub(r"''|\\(.)", lambda m: "'" if m.group(0) == "''" else m.group(1), text)


def _like(name: str, pattern: str) -> bool:
    regex = "".join(".*" if ch == "%" else "." if ch == "_" else re.escape(ch) for ch in pattern)
    return re.fullmatch(regex, name, re.IGNORECASE | re.DOTALL) is not None
