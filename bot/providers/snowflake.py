"""Snowflake: a user signing in with a key pair (recommended) or a programmatic access token.

Passwords are refused: Snowflake is removing single-factor password sign-in and its SQL API never
took one. The verification follows specs/snowflake/README.md §8 over the SQL API v2 with httpx:

1. ``SELECT CURRENT_ACCOUNT(), CURRENT_USER(), CURRENT_ROLE(), CURRENT_WAREHOUSE(),
   CURRENT_DATABASE()`` with the requested role, warehouse and database in the request body. A
   202 is polled (every ``poll_interval`` seconds, ``poll_limit`` seconds at most) and then
   cancelled. A role that isn't granted fails the request; a warehouse or database that can't be
   used comes back NULL.
2. When a warehouse was asked for, ``SHOW WAREHOUSES LIKE '<name>' WITH PRIVILEGES USAGE``, whose
   rows are compared by exact name here (``_`` and ``%`` are LIKE wildcards, and LIKE ignores
   case). It needs no running warehouse.

Nothing else is sent: no statement that could resume a warehouse (and spend credits). A key-pair
request carries a fresh JWT (one minute, RS256); a failed request is retried once for a 429, a 5xx
or a timeout. A statement is re-sent under the same ``requestId`` with ``retry=true``, as
Snowflake's own clients do, so that Snowflake answers it from the first execution if there was one.

Each verification has a time budget: ``deadline_seconds`` less a reserve for a cancel. A retry, a
backoff, a ``Retry-After`` or a poll that can't fit in what is left is skipped and the outcome known
so far is reported; a statement still running when the time is up is cancelled first.

``SNOWFLAKE_API_URL`` (README, configuration) replaces the account's own address; without an
``{account}`` in it, Snowflake learns the account from the credential (the JWT's ``iss``/``sub``, or
whom the token belongs to).

The account decides the host (``<account>.snowflakecomputing.com``, or ``{account}`` in the host of
``SNOWFLAKE_API_URL``), so that host goes through the outbound policy (:mod:`bot.outbound`): resolved
and checked before anything is sent, and called at the checked address. A ``SNOWFLAKE_API_URL``
whose host the account doesn't decide is the operator's and is called as it is.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Self
from urllib.parse import quote, urlsplit

import httpx

from bot import outbound
from bot.providers import _shared as shared
from bot.providers import _snowflake_errors as errs
from bot.providers import _snowflake_keys as keys
from bot.providers import _snowflake_names as names
from bot.providers.base import (
    Check,
    FieldValues,
    FormField,
    FormSection,
    Outcome,
    Probe,
    Provider,
    Verification,
)
from bot.redaction import Secret
from bot.settings import ConfigError

__all__ = [
    "API_URL_VARIABLE",
    "PROBE_STATEMENT",
    "TOKEN_HINT",
    "RetryPolicy",
    "Snowflake",
    "show_warehouses_statement",
]

logger = logging.getLogger(__name__)

API_URL_VARIABLE = "SNOWFLAKE_API_URL"
SNOWFLAKE_HOSTS = outbound.HostPatterns(("*.snowflakecomputing.com", "*.snowflakecomputing.cn"))
STATEMENTS_PATH = "/api/v2/statements"
PROBE_STATEMENT = (
    "SELECT CURRENT_ACCOUNT(), CURRENT_USER(), CURRENT_ROLE(), CURRENT_WAREHOUSE(), CURRENT_DATABASE()"
)
QUERY_TAG = "connections-bot credential check"
"""Set on every statement, so an admin can tell the bot's checks apart in QUERY_HISTORY."""
KEYPAIR_JWT = "KEYPAIR_JWT"
PROGRAMMATIC_ACCESS_TOKEN = "PROGRAMMATIC_ACCESS_TOKEN"
_MIN_TOKEN_LENGTH = 32
# The key hint of a token credential (the migration f1a3c5e7b9d2 writes the same words).
TOKEN_HINT = "access token"
"""Programmatic access tokens are long random strings (hundreds of characters, so far JWT-shaped,
which Snowflake doesn't promise); a shorter value, or one with spaces, is taken for a password."""
_CANCEL_RESERVE = 5.0
"""Seconds kept at the end of a verification's budget for cancelling a statement and reporting."""
_DEADLINE_MARGIN = 1.0
"""Seconds the budget stays short of ``deadline_seconds``, so the base class's timeout never fires."""
_MIN_ATTEMPT = 5.0
"""The least time worth giving a request after a wait: less, and the wait isn't started."""
_HANDLE = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
_BEARER = re.compile(r"(?i)^bearer\s+")

try:
    USER_AGENT = f"connections-bot/{metadata.version('connections-bot')}"
except metadata.PackageNotFoundError:
    USER_AGENT = "connections-bot/0"


def show_warehouses_statement(warehouse: names.Identifier) -> str:
    """The warehouse probe; the name goes in as an escaped string literal, never as SQL."""
    return f"SHOW WAREHOUSES LIKE {names.sql_string_literal(warehouse.name)} WITH PRIVILEGES USAGE"


@dataclass(frozen=True)
class RetryPolicy(shared.RetryPolicy):
    """Snowflake's: once each after a 429, a 5xx or a timeout, with jittered backoff, as the SQL
    API reference recommends."""

    timeout_retries: int = 1


class Snowflake(Provider):
    key = "snowflake"
    title = "Snowflake"
    description = "Cloud data platform. Connect a user with a key pair or a programmatic access token."
    name_examples = ("Analytics Snowflake", "Snowflake dbt service user")
    hint_field = None  # credential_hint() gives the key's fingerprint or the masked token
    unreachable_hints = errs.UNREACHABLE_HINTS
    deadline_seconds = 60.0
    sections = (
        FormSection(
            title="Snowflake account",
            fields=(
                FormField(
                    name="account",
                    label="Account identifier",
                    hint="In Snowsight open your account menu → View account details and copy the "
                    "account identifier (orgname-account_name). An account locator with its region, "
                    "like xy12345.us-east-2.aws, works too, and so does a pasted account URL.",
                    placeholder="myorg-account_name",
                    max_length=255,
                ),
                FormField(
                    name="user",
                    label="User",
                    hint="The login name of the user the bot signs in as (LOGIN_NAME in DESC USER). "
                    "A service user (TYPE = SERVICE) suits a shared connection best.",
                    placeholder="SVC_REPORTING",
                    max_length=255,
                ),
            ),
        ),
        FormSection(
            title="Authentication",
            description="Give a key pair (recommended) or a programmatic access token, not a password: "
            "Snowflake is ending single-factor password sign-in.",
            fields=(
                FormField(
                    name="private_key",
                    label="Private key",
                    hint="The PKCS#8 PEM file (rsa_key.p8), BEGIN and END lines included: RSA, 2048 or "
                    "3072 bits (a 4096-bit key is longer than a Slack field takes). To create one: "
                    f"{keys.MAKE_KEY}. Then an admin registers its public key (openssl rsa -in "
                    "rsa_key.p8 -pubout) with ALTER USER <user> SET RSA_PUBLIC_KEY='MIIB…'.",
                    placeholder="-----BEGIN PRIVATE KEY----- …",
                    secret=True,
                    optional=True,
                    max_length=3000,
                    multiline=True,
                ),
                FormField(
                    name="passphrase",
                    label="Key passphrase",
                    hint="Only for an encrypted key (BEGIN ENCRYPTED PRIVATE KEY). It is stored "
                    "encrypted, like the key.",
                    secret=True,
                    optional=True,
                    max_length=1024,
                ),
                FormField(
                    name="token",
                    label="Programmatic access token",
                    hint="Instead of a key pair: a programmatic access token for this user (Snowsight → "
                    "your profile → Programmatic access tokens, or ALTER USER … ADD PAT). Snowflake "
                    "accepts one only from a user under a network policy, and it expires (after 15 "
                    "days by default). Not your password.",
                    placeholder="The token's secret, shown once when it is created",
                    secret=True,
                    optional=True,
                    max_length=3000,
                ),
            ),
        ),
        FormSection(
            title="Context (optional)",
            description="Checked with the role you give, without starting any warehouse. Leave a "
            "field empty to use the user's default.",
            fields=(
                FormField(
                    name="role",
                    label="Role",
                    hint="A role granted to the user (for a token with a role restriction: that role). "
                    "Unquoted names are upper-cased; use double quotes for a case-sensitive one.",
                    placeholder="REPORTING",
                    optional=True,
                    max_length=257,
                ),
                FormField(
                    name="warehouse",
                    label="Warehouse",
                    hint="A warehouse the role may use (USAGE). We only check that it exists and may be "
                    "used; we never start it.",
                    placeholder="REPORTING_WH",
                    optional=True,
                    max_length=257,
                ),
                FormField(
                    name="database",
                    label="Database",
                    hint="A database the role may use (USAGE).",
                    placeholder="ANALYTICS",
                    optional=True,
                    max_length=257,
                ),
            ),
        ),
    )

    def __init__(
        self,
        api_url: str | None = None,
        *,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        poll_interval: float = 1.0,
        poll_limit: float = 20.0,
        statement_timeout: int = 20,
        request_timeout: httpx.Timeout | None = None,
        key_cache: keys.KeyCache | None = None,
        policy: outbound.Policy | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/") if api_url else None
        # An operator's URL with {account} in its host is the operator's shape: any public name.
        self.policy = policy or outbound.Policy(SNOWFLAKE_HOSTS if api_url is None else outbound.ANY_NAME)
        self.retry = retry or RetryPolicy()
        self.poll_interval, self.poll_limit = poll_interval, poll_limit
        self.statement_timeout = statement_timeout
        # Longer than the statement's own timeout, so Snowflake's 408 arrives before we give up.
        self.request_timeout = request_timeout or httpx.Timeout(statement_timeout + 10.0, connect=5.0)
        self._sleep, self._clock, self._monotonic = sleep, clock, monotonic
        self._keys = keys.KeyCache() if key_cache is None else key_cache  # an empty cache is falsy

    @classmethod
    def from_environment(cls, env: Mapping[str, str]) -> Self:
        """``SNOWFLAKE_API_URL`` (optional): see the module docstring."""
        url = (env.get(API_URL_VARIABLE) or "").strip()
        policy = outbound.Policy.from_environment(
            env, default=SNOWFLAKE_HOSTS if not url else outbound.ANY_NAME
        )
        if not url:
            return cls(policy=policy)
        try:
            parts = urlsplit(url.replace("{account}", "account"))
            valid = parts.scheme in ("http", "https") and bool(parts.hostname)
            valid = valid and not parts.query and not parts.fragment and parts.username is None
        except ValueError:
            valid = False
        if not valid:
            raise ConfigError(
                f"{API_URL_VARIABLE} must be an http(s) URL without credentials or query, like "
                "https://snowflake-proxy.example.com or https://{account}.privatelink.snowflakecomputing.com"
            )
        if parts.scheme != "https":
            logger.warning(
                "%s is not https: credentials (key-pair JWTs, programmatic access tokens) will be "
                "sent unencrypted to %s. Use this only for a local test server.",
                API_URL_VARIABLE,
                parts.hostname,
            )
        return cls(api_url=url, policy=policy)

    def base_url(self, account: str) -> str:
        """Where the SQL API of ``account`` (a normalised identifier) is reached."""
        if self.api_url is None:
            return f"https://{names.host_of(account)}"
        return self.api_url.replace("{account}", account)

    def typed_host(self, account: str) -> str | None:
        """The host ``account`` decides, which the outbound policy judges; None for an operator's
        URL whose host it doesn't decide."""
        if self.api_url is not None and "{account}" not in urlsplit(self.api_url).netloc:
            return None
        return (urlsplit(self.base_url(account)).hostname or "").rstrip(".")

    async def _route(self, account: str) -> outbound.Route | Probe:
        """How the account's SQL API is reached, or why nothing may be sent to it."""
        host = self.typed_host(account)
        if host is None:
            return outbound.DIRECT
        route = await self.policy.route(host, urlsplit(self.base_url(account)).port or 443)
        if isinstance(route, outbound.Pinned):
            return route
        logger.info("snowflake: not calling the account's address (%s)", route.value)
        not_found = errs.account_not_found_hints(self.api_url is not None)[0]
        return shared.blocked_probe(
            host,
            route,
            not_found_hint=not_found,
            private_hint=errs.PRIVATE_ADDRESS_HINT,
            later_hints=errs.UNREACHABLE_HINTS,
        )

    def clean(self, values: FieldValues) -> dict[str, str | Secret]:
        """Trim; normalise the account identifier, the names, and a PEM or token mangled by copying."""
        cleaned = super().clean(values)
        for name in self.secret_fields:
            if not isinstance(cleaned[name], Secret):
                cleaned[name] = Secret(str(cleaned[name]))
        pem = shared.plain(cleaned, "private_key")
        if pem:
            cleaned["private_key"] = Secret(keys.normalise_pem(pem))
        token = shared.plain(cleaned, "token")
        if token:
            cleaned["token"] = Secret(_BEARER.sub("", shared.unquote(token)))
        _normalise_names(cleaned)
        return cleaned

    def validate(self, values: FieldValues) -> dict[str, str]:
        problems: dict[str, str] = {}
        account = shared.plain(values, "account")
        if account_problem := names.account_problem(account):
            problems["account"] = account_problem
        elif (host := self.typed_host(names.normalise_account(account) or "")) and self.policy.problem(host):
            problems["account"] = errs.HOST_REFUSED
        if user_problem := names.user_problem(shared.plain(values, "user").strip()):
            problems["user"] = user_problem
        pem, passphrase, token = (shared.plain(values, n) for n in ("private_key", "passphrase", "token"))
        if token and (token_problem := _token_problem(token)):
            problems["token"] = token_problem
        elif pem and token:
            problems["token"] = "Give a key pair or a token, not both: clear one of them."
        if not pem and not token:
            problems["private_key"] = (
                "Paste a private key (recommended) or fill in a programmatic access token below. "
                "Snowflake is ending password sign-in, so a password won't do."
            )
        if pem:
            try:
                self._keys.load(pem, passphrase)
            except keys.KeyProblem as problem:
                problems[problem.field] = problem.message
        elif passphrase:
            problems["passphrase"] = "A passphrase goes with an encrypted private key; leave it empty here."
        for name in ("role", "warehouse", "database"):
            if name_problem := names.identifier_problem(shared.plain(values, name).strip(), name):
                problems[name] = name_problem
        return problems

    def config_of(self, values: FieldValues) -> dict[str, str]:
        """Account (normalised), user, role, warehouse and database, when given."""
        config = super().config_of(values)
        _normalise_names(config)
        return config

    def credential_hint(self, values: FieldValues) -> str | None:
        """The public key's fingerprint (``SHA256:…``, as DESC USER shows it), or :data:`TOKEN_HINT`:
        unlike a key pair, a token has no public part, and any of its characters would be a piece
        of the secret shown to every member."""
        pem = shared.plain(values, "private_key")
        if pem:
            try:
                # Called after validate() loaded this very key, so it comes from the cache.
                return self._keys.load(pem, shared.plain(values, "passphrase"), checked=False).fingerprint
            except keys.KeyProblem:
                return None
        token = values.get("token")
        return TOKEN_HINT if isinstance(token, Secret) and token else None

    async def verify(self, values: FieldValues, http: httpx.AsyncClient) -> Verification:
        """The base class's verification; a key that failed it is not kept open in memory."""
        verification = await super().verify(values, http)
        if not verification.ok and (pem := shared.plain(values, "private_key")):
            self._keys.forget(pem, shared.plain(values, "passphrase"))
        return verification

    def forget(self, hint: str | None) -> None:
        """Drop the opened key whose fingerprint is ``hint`` (a token credential keeps nothing)."""
        if hint:
            self._keys.forget_fingerprint(hint)

    async def probe(self, values: FieldValues, http: httpx.AsyncClient) -> Probe:
        """Sign in and look at the session's context; see the module docstring."""
        account = names.normalise_account(shared.plain(values, "account"))
        user = shared.plain(values, "user").strip()
        if account is None or names.user_problem(user):
            summary = "The account identifier or the user can't be used; check them in the form."
            hints = errs.account_not_found_hints(self.api_url is not None)
            return Probe(Outcome.INVALID_INPUT, summary, hints=hints)
        started = self._monotonic()
        route = await self._route(account)
        if isinstance(route, Probe):
            return route
        try:
            credential = _Credential(values, await self._key_pair(values), account, user, self._clock)
        except keys.KeyProblem as problem:
            summary = f"The private key can't be used. {problem.message}"
            return Probe(Outcome.INVALID_INPUT, summary, hints=(errs.KEY_WONT_LOAD,))
        run = _Run(self, http, route, credential, account, user, _Context.of(values), started)
        if credential.fingerprint:
            run.checks.append(Check("key fingerprint", True, credential.fingerprint))

        answer = await run.execute(PROBE_STATEMENT)
        if answer.slow:
            return run.slow()
        if answer.error is not None:
            if answer.error.code not in _CONTEXT_CODES:
                return run.failure(answer.error)
            # The credential works; the requested context is what failed.
            run.checks.append(Check("signed in", True, f"as {user.upper()} on {account}"))
            run.context_failed(answer.error)
            return run.result()
        row = answer.rows[0] if answer.rows else None
        if row is None or not row or row[0] is None or row[1] is None:
            # The account and the user always come back for a session that exists: anything else
            # is not Snowflake's answer to the probe (a proxy, a changed API).
            return run.unexpected()
        return await run.inspect_session([row[i] if i < len(row) else None for i in range(5)])

    async def _key_pair(self, values: FieldValues) -> keys.KeyPair | None:
        """The form's key pair, from the cache or else loaded in a worker thread: opening an
        encrypted key runs its PBKDF2, which would hold up the event loop."""
        pem, passphrase = shared.plain(values, "private_key"), shared.plain(values, "passphrase")
        if not pem:
            return None
        if (found := self._keys.peek(pem, passphrase)) is not None:
            return found
        # Checked by validate() when the key was submitted; a stored one cannot have changed since
        # (sealed with AES-GCM), so the check is not paid again on every (re-)test.
        return await asyncio.to_thread(self._keys.load, pem, passphrase, checked=False)


# The probe failed over the context, not the credential.
_CONTEXT_CODES = frozenset({errs.CODE_NO_WAREHOUSE, errs.CODE_OBJECT_MISSING, errs.CODE_WAREHOUSE_AT_LOGIN})


@dataclass(frozen=True)
class _Context:
    role: names.Identifier | None
    warehouse: names.Identifier | None
    database: names.Identifier | None

    @classmethod
    def of(cls, values: FieldValues) -> _Context:
        def parse(name: str) -> names.Identifier | None:
            text = shared.plain(values, name).strip()
            return names.parse_identifier(text) if text else None

        return cls(parse("role"), parse("warehouse"), parse("database"))

    def body(self) -> dict[str, str]:
        return {key: identifier.name for key, identifier in vars(self).items() if identifier is not None}


class _Credential:
    """What goes in the Authorization header: a fresh JWT per request, or the token."""

    def __init__(
        self, form: FieldValues, key: keys.KeyPair | None, account: str, user: str, clock: Callable[[], float]
    ) -> None:
        pem, passphrase, token = (shared.plain(form, n) for n in ("private_key", "passphrase", "token"))
        if key is None and not token:
            raise keys.KeyProblem("Give a private key or a programmatic access token.")
        self.token_type = KEYPAIR_JWT if key else PROGRAMMATIC_ACCESS_TOKEN
        self._key, self._token, self._user, self._clock = key, token, user, clock
        self._account = names.jwt_account(account)
        self.sent = [v for v in (pem, passphrase, token) if v]
        """Every value that must never be shown: the form's secrets and each JWT minted."""

    @property
    def fingerprint(self) -> str | None:
        return self._key.fingerprint if self._key else None

    @property
    def kind(self) -> str:
        return "key pair" if self._key else "programmatic access token"

    def bearer(self) -> str:
        if self._key is None:
            return self._token
        minted = keys.mint_jwt(self._key, self._account, self._user, int(self._clock()))
        self.sent.append(minted)
        return minted

    def __repr__(self) -> str:
        return f"_Credential({self.token_type})"


@dataclass
class _Answer:
    rows: list[list[str | None]] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    error: errs.ApiError | None = None
    slow: bool = False


class _Run(shared.Run):
    def __init__(
        self,
        provider: Snowflake,
        http: httpx.AsyncClient,
        route: outbound.Route,
        credential: _Credential,
        account: str,
        user: str,
        context: _Context,
        started: float,
    ) -> None:
        super().__init__(provider.retry, provider._sleep)
        self._provider, self._http, self._route, self._credential = provider, http, route, credential
        self._base = provider.base_url(account)
        self._started, self._deadline = started, started + provider.deadline_seconds - _DEADLINE_MARGIN
        self.account, self.user, self.context = account, user, context
        self.problems: list[str] = []
        self.request_id: str | None = None
        self.handle: str | None = None
        self.gave_up_after = provider.poll_limit
        """Seconds after which a statement was given up as slow."""

    @property
    def reference(self) -> str | None:
        """The first statement handle, else our first requestId: what Snowflake support can trace."""
        return self.handle or self.request_id

    @property
    def user_sql(self) -> str:
        """The user as SQL text for hints (login names usually equal user names)."""
        identifier = names.parse_identifier(self.user)
        if identifier is not None and not identifier.quoted:
            return identifier.name
        return names.Identifier(self.user, quoted=True).sql

    def elapsed(self) -> float:
        return self._provider._monotonic() - self._started

    def time_left(self) -> float:
        """Seconds left for work, the cancel reserve excluded."""
        return self._deadline - _CANCEL_RESERVE - self._provider._monotonic()

    def fits(self, wait: float) -> bool:
        return self.time_left() - wait >= _MIN_ATTEMPT

    def _timeout(self, left: float) -> httpx.Timeout:
        """The configured timeouts, none longer than ``left`` seconds."""
        left = max(left, 0.5)
        configured = self._provider.request_timeout.as_dict().items()
        return httpx.Timeout(**{name: left if v is None else min(v, left) for name, v in configured})

    async def send(self, method: str, path: str, *, retry: bool = True, **kwargs: Any) -> httpx.Response:
        """One request with fresh credentials, retried once for a 429, a 5xx or a timeout when the
        time budget allows; ``retry=False`` sends it once, within the cancel reserve."""
        sent = 0

        async def attempt() -> httpx.Response:
            nonlocal sent
            if sent and isinstance(kwargs.get("params"), dict) and "requestId" in kwargs["params"]:
                # A re-sent statement: Snowflake answers it from the first execution, if it ran.
                kwargs["params"] = {**kwargs["params"], "retry": "true"}
            sent += 1
            headers = {
                "Authorization": f"Bearer {self._credential.bearer()}",
                "X-Snowflake-Authorization-Token-Type": self._credential.token_type,
                "Accept": "application/json",
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
            }
            timeout = self._timeout(self.time_left() + (0 if retry else _CANCEL_RESERVE))
            response = await self._route.request(
                self._http, method, self._base + path, headers=headers, timeout=timeout, **kwargs
            )
            logger.info("snowflake %s %s -> %d", method, path, response.status_code)
            return response

        return await (self.retrying(attempt, f"snowflake {method} {path}") if retry else attempt())

    async def execute(self, statement: str) -> _Answer:
        """Submit one statement; poll a 202 within the bounds, then cancel it."""
        if self.request_id is not None and self.time_left() < _MIN_ATTEMPT:
            # The sign-in check always goes out; a later statement only with time to answer.
            self.gave_up_after = self.elapsed()
            return _Answer(slow=True)
        request_id = str(uuid.uuid4())
        self.request_id = self.request_id or request_id
        body: dict[str, Any] = {
            "statement": statement,
            "timeout": self._provider.statement_timeout,
            **self.context.body(),
            "parameters": {"query_tag": QUERY_TAG},
        }
        response = await self.send("POST", STATEMENTS_PATH, params={"requestId": request_id}, json=body)
        waited = 0.0
        handle: str | None = None
        while response.status_code == 202:
            handle = handle or _handle_of(response)
            if handle is None:
                no_handle = errs.ApiError(202, message="Snowflake sent no statement handle to poll.")
                return _Answer(error=no_handle)
            self.handle = self.handle or handle
            if waited >= self._provider.poll_limit or not self.fits(self._provider.poll_interval):
                # Past the poll limit, or the verification's deadline comes first.
                out_of_time = waited < self._provider.poll_limit
                self.gave_up_after = self.elapsed() if out_of_time else self._provider.poll_limit
                await self._cancel(handle)
                return _Answer(slow=True)
            await self._sleep(self._provider.poll_interval)
            waited += self._provider.poll_interval
            response = await self.send("GET", f"{STATEMENTS_PATH}/{quote(handle, safe='')}")
        if response.status_code != 200:
            error = errs.parse_error(response)
            if error.statement_handle and _HANDLE.fullmatch(error.statement_handle):
                self.handle = self.handle or error.statement_handle
            return _Answer(error=error)
        self.handle = self.handle or _handle_of(response)
        parsed = _result_set(shared.json_of(response))
        if parsed is None:
            return _Answer(error=errs.ApiError(200, message="Snowflake's answer had no result set."))
        columns, rows = parsed
        return _Answer(rows=rows, columns=columns)

    async def _cancel(self, handle: str) -> None:
        try:
            await self.send("POST", f"{STATEMENTS_PATH}/{quote(handle, safe='')}/cancel", retry=False)
        except httpx.HTTPError as exc:  # the check is reported as slow either way
            logger.info("snowflake cancel failed: %s", type(exc).__name__)

    async def inspect_session(self, seen: list[str | None]) -> Probe:
        """Check the session against the context asked for; ``seen`` is the probe's row."""
        account_seen, user_seen, role_seen, warehouse_seen, database_seen = seen
        where = f" on account {account_seen}" if account_seen else ""
        self.checks.append(Check("signed in", True, f"as {user_seen or self.user.upper()}{where}"))
        role = self.context.role
        role_sql = role.sql if role else names.sql_name(role_seen) if role_seen else "<role>"
        if role is not None:
            self.checks.append(Check(f"role {role.sql}", True, "granted to the user and in use"))
        elif role_seen:
            self.checks.append(Check("role", True, f"none asked for; the user's default is {role_seen}"))
        self.facts.append(f"role {role_sql}")

        if (warehouse := self.context.warehouse) is not None:
            await self._check_warehouse(warehouse, warehouse_seen, role_sql)
        else:
            unset = "none asked for, and the user has no default: queries will need one"
            detail = f"none asked for; the user's default is {warehouse_seen}" if warehouse_seen else unset
            self.checks.append(Check("warehouse", True, detail))

        database = self.context.database
        if database is not None:
            if database_seen == database.name:
                self.checks.append(Check(f"database {database.sql}", True, "exists and the role may use it"))
                self.facts.append(f"database {database.sql}")
            else:
                self._database_failed(database, role_sql)
        return self.result()

    async def _check_warehouse(self, warehouse: names.Identifier, seen: str | None, role_sql: str) -> None:
        """CURRENT_WAREHOUSE() decides; SHOW WAREHOUSES adds its state, or a near miss in case."""
        name = f"warehouse {warehouse.sql}"
        answer = await self.execute(show_warehouses_statement(warehouse))
        rows: list[dict[str, str | None]] = []
        if answer.error is None and not answer.slow:
            lowered = [c.lower() for c in answer.columns]
            rows = [dict(zip(lowered, row, strict=False)) for row in answer.rows]
        listed = [r for r in rows if r.get("name") == warehouse.name]
        if seen == warehouse.name:
            state = (listed[0].get("state") or "").upper() if listed else ""
            detail = "exists and the role may use it"
            if state == "SUSPENDED":
                detail += "; suspended (we didn't start it; it resumes when a query needs it)"
            elif state:
                detail += f"; {state.lower()}"
            self.checks.append(Check(name, True, detail))
            self.facts.append(name)
            return
        detail = f"not usable with role {role_sql}"
        if answer.error is not None or answer.slow:
            said = "it didn't answer in time" if answer.slow else self.said(answer.error)
            detail += f" (SHOW WAREHOUSES failed: {said})"
        self._unusable(name, detail, role_sql, errs.warehouse_hint(warehouse.sql, role_sql))
        for row in rows:
            other = row.get("name")
            if other and other != warehouse.name and other.upper() == warehouse.name.upper():
                self.hints.append(errs.warehouse_case_hint(warehouse.sql, names.sql_name(other)))
                break

    def _unusable(self, name: str, detail: str, role_sql: str, hint: str) -> None:
        self.checks.append(Check(name, False, detail))
        self.problems.append(f"role {role_sql} can't use {name}")
        self.hints.append(hint)

    def _database_failed(self, database: names.Identifier, role_sql: str) -> None:
        detail, hint = f"not usable with role {role_sql}", errs.database_hint(database.sql, role_sql)
        self._unusable(f"database {database.sql}", detail, role_sql, hint)

    def context_failed(self, error: errs.ApiError) -> None:
        """The probe failed with a warehouse or database error: say which, with its GRANT."""
        role_sql = self.context.role.sql if self.context.role else "<role>"
        said = self.said(error)
        if error.code == errs.CODE_OBJECT_MISSING and self.context.database is not None:
            self._database_failed(self.context.database, role_sql)
        elif (warehouse := self.context.warehouse) is not None:
            hint = errs.warehouse_hint(warehouse.sql, role_sql)
            self._unusable(f"warehouse {warehouse.sql}", said, role_sql, hint)
        else:
            self.checks.append(Check("session context", False, said))
            self.problems.append("its context can't be used")

    def said(self, error: errs.ApiError | None) -> str:
        text = error.text if error is not None else "nothing"
        return shared.scrub(text, self._credential.sent)

    def result(self) -> Probe:
        subject = f"Snowflake accepted the {self._credential.kind} for {self.user} on {self.account}"
        summary = f"{subject}, but {' and '.join(self.problems)}." if self.problems else self.summary(subject)
        return self.probe(Outcome.OK, summary, tuple(self.hints), self.reference)

    def unexpected(self) -> Probe:
        summary = "Snowflake gave an unexpected answer (HTTP 200): no session in the result."
        hints = (
            "Something answered for Snowflake that is not it: check SNOWFLAKE_API_URL and any proxy "
            "between the bot and <account>.snowflakecomputing.com.",
            "If it persists, Snowflake may have changed the SQL API: tell whoever runs this bot.",
        )
        return self.probe(Outcome.PROVIDER_ERROR, summary, hints, self.reference)

    def slow(self) -> Probe:
        limit = self.gave_up_after
        self.checks.append(Check("signed in", True, "Snowflake accepted the request"))
        self.checks.append(Check("check finished", False, f"still running after {limit:.0f} s; cancelled"))
        summary = f"Snowflake didn't finish the check within {limit:.0f} seconds."
        return self.probe(Outcome.PROVIDER_ERROR, summary, errs.slow_hints(limit), self.reference)

    def failure(self, error: errs.ApiError) -> Probe:
        """Map a failed probe to an outcome: by Snowflake's code first, by HTTP status second."""
        code, status, user = error.code, error.status, self.user_sql
        kind, fingerprint = self._credential.kind, self._credential.fingerprint
        subject, token = f"{self.user} on {self.account}", fingerprint is None
        if status == 429:
            hints = errs.rate_limited_hints(self.asked_to_wait)
            found = Outcome.RATE_LIMITED, "Snowflake is rate-limiting us", hints
        elif code == errs.CODE_NETWORK_POLICY:
            hints = errs.network_policy_hints(errs.seen_address(error.message), token)
            found = Outcome.FORBIDDEN, "A network policy blocks the bot", hints
        elif code in (errs.CODE_ROLE_NOT_GRANTED, errs.CODE_ROLE_NOT_ALLOWED):
            role = self.context.role.sql if self.context.role else None
            named = f"role {role}" if role else "the role"
            what = f"The {kind} works, but {named} isn't granted to {self.user}"
            found = Outcome.FORBIDDEN, what, errs.role_hints(role, user, token)
        elif code == errs.CODE_USER_DISABLED:
            found = Outcome.UNAUTHORIZED, f"User {subject} is disabled", errs.disabled_hints(user)
        elif code == errs.CODE_USER_LOCKED:
            found = Outcome.UNAUTHORIZED, f"User {subject} is locked", errs.locked_hints(user)
        elif code == errs.CODE_JWT_INVALID or status == 401:
            failure_id = errs.login_failure_id(error.message)
            if fingerprint:
                hints = errs.key_rejected_hints(user, fingerprint, failure_id)
            else:
                hints = errs.token_rejected_hints(user, failure_id)
            found = Outcome.UNAUTHORIZED, f"Snowflake rejected the {kind} for {subject}", hints
        elif status == 404:
            hints = errs.account_not_found_hints(self._provider.api_url is not None)
            found = Outcome.INVALID_INPUT, f"Snowflake doesn't know the account {self.account}", hints
        elif status == 403:
            found = Outcome.FORBIDDEN, "Snowflake refused the request", errs.api_forbidden_hints()
        elif status == 408 or code == errs.CODE_STATEMENT_TIMEOUT:
            hints = errs.slow_hints(float(self._provider.statement_timeout))
            found = Outcome.PROVIDER_ERROR, "Snowflake timed out the check", hints
        else:
            unexpected = f"Snowflake gave an unexpected answer (HTTP {status})"
            what = "Snowflake had a server error" if status >= 500 else unexpected
            found = Outcome.PROVIDER_ERROR, what, errs.provider_error_hints(self.reference)
        outcome, what, hints = found
        summary = shared.with_said(what, self.said(error), "Snowflake", (".", "!", "?", "]"))
        return self.probe(outcome, summary, hints, self.reference)


def _normalise_names(values: MutableMapping[str, Any]) -> None:
    """The account identifier and the role, warehouse and database names, as stored and shown."""
    if "account" in values:
        values["account"] = names.normalise_account(str(values["account"])) or values["account"]
    for name in ("role", "warehouse", "database"):
        if name in values and (identifier := names.parse_identifier(str(values[name]))) is not None:
            values[name] = identifier.sql


def _token_problem(token: str) -> str | None:
    if "-----BEGIN" in token:
        return "That is a private key: paste it under Private key, and leave this field empty."
    # Only what is clearly a password is refused: the token's format is Snowflake's to change.
    if len(token) < _MIN_TOKEN_LENGTH or any(ch.isspace() for ch in token):
        return errs.PASSWORD_REFUSED
    return None


def _handle_of(response: httpx.Response) -> str | None:
    body = shared.json_of(response)
    handle = body.get("statementHandle") if isinstance(body, dict) else None
    return handle if isinstance(handle, str) and _HANDLE.fullmatch(handle) else None


def _result_set(body: Any) -> tuple[list[str], list[list[str | None]]] | None:
    """The column names and rows of a ResultSet (values are strings or null), or None."""
    if not isinstance(body, dict):
        return None
    meta, data = body.get("resultSetMetaData"), body.get("data")
    if not isinstance(meta, dict) or not isinstance(data, list):
        return None
    row_type = meta.get("rowType")
    described = row_type if isinstance(row_type, list) else []
    columns = [str(c.get("name", "")) for c in described if isinstance(c, dict)]
    rows = [[v if isinstance(v, str) else None for v in row] for row in data if isinstance(row, list)]
    return columns, rows
