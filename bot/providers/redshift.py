"""Amazon Redshift: a database user and password, checked over the PostgreSQL wire protocol.

The verification follows specs/redshift/README.md §5: connect with psycopg 3 (TLS verified against
the endpoint's name, a connect timeout), then ask one leader-node question per statement: who am
I and where (``current_user``, ``current_database()``, ``version()``), may I create temporary
tables, and, when a schema is given, may I use it. Redshift needs two shims in psycopg: its client
encoding is called ``UNICODE``, and it rejects ``DEALLOCATE``, so nothing is prepared.

The endpoint is user input, so it goes through the bot's outbound policy (:mod:`bot.outbound`):
resolved first, connected to only when every address is public; libpq then gets the checked
address as ``hostaddr`` and the endpoint as ``host``, so TLS still checks the name and a second DNS
answer cannot swap the address.

Its settings (``REDSHIFT_SSLMODE``, ``REDSHIFT_SSLROOTCERT``, ``REDSHIFT_CONNECT_TO``, and
``REDSHIFT_ALLOW_PRIVATE_ADDRESSES``, an older name of ``CONNECTIONS_ALLOW_PRIVATE_ADDRESSES`` that
applies to Redshift only) are read by :meth:`Redshift.from_environment` and described in
the README's configuration table; anything weaker than ``verify-full`` is warned about at start.

A connect error carries no SQLSTATE in psycopg, so it is classified by its text
(:mod:`bot.providers._redshift_errors`). The password goes to psycopg's ``connect`` as a keyword
and nowhere else; an error text is shown only when it cannot hold the password.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import ssl
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, LiteralString, Protocol, Self

import certifi
import httpx
import psycopg
from psycopg import _encodings

from bot import outbound
from bot.providers import _redshift_endpoint as endpoints
from bot.providers import _redshift_errors as errs
from bot.providers import _shared as shared
from bot.providers.base import Check, FieldValues, FormField, FormSection, Outcome, Probe, Provider
from bot.redaction import Secret
from bot.settings import ConfigError

__all__ = [
    "SSL_MODES",
    "ConnectParams",
    "Connector",
    "PsycopgSession",
    "Redshift",
    "Session",
    "default_rootcert",
    "install_unicode_alias",
    "psycopg_connect",
    "schema_identifier",
    "server_product",
]

logger = logging.getLogger(__name__)

SSL_MODES = ("verify-full", "verify-ca", "require", "disable")
"""libpq ``sslmode`` values REDSHIFT_SSLMODE accepts; only ``verify-full`` is for production."""

_KEY_HINT_MAX = 64  # the store's key_hint column
_STATEMENT_TIMEOUT: LiteralString = "SET statement_timeout TO 10000"
_WHO_AM_I: LiteralString = "SELECT current_user, current_database(), version()"
_MAY_TEMP: LiteralString = "SELECT has_database_privilege(current_database(), 'TEMP')"
_MAY_USE_SCHEMA: LiteralString = "SELECT has_schema_privilege(%s, 'USAGE')"


@dataclass(frozen=True)
class ConnectParams:
    """What one connection attempt is made with; the password stays wrapped until psycopg."""

    host: str
    """The endpoint's name: libpq checks the server certificate against it."""
    port: int
    dbname: str
    user: str
    password: Secret
    sslmode: str
    sslrootcert: str | None
    connect_timeout: int
    hostaddr: str | None = None
    """Set by REDSHIFT_CONNECT_TO: the address connected to instead of resolving ``host``."""


class Session(Protocol):
    """The little of a database connection the probe uses."""

    async def execute(self, query: LiteralString) -> None: ...

    async def fetch_one(
        self, query: LiteralString, params: tuple[str, ...] = ()
    ) -> tuple[Any, ...] | None: ...

    async def close(self) -> None: ...


Connector = Callable[[ConnectParams], Awaitable[Session]]
ALLOW_PRIVATE_ALIAS = "REDSHIFT_ALLOW_PRIVATE_ADDRESSES"


def default_rootcert() -> str:
    """certifi's CA bundle. ``sslrootcert=system`` is not a safe default: psycopg-binary's own
    OpenSSL looks for a CA file that Debian does not have, and then trusts nothing."""
    return certifi.where()


def install_unicode_alias(codecs: MutableMapping[bytes, str] | None = None) -> None:
    """Let psycopg decode a connection whose client encoding is ``UNICODE``, as Redshift reports it
    (psycopg/psycopg#122). Idempotent, and harmless for PostgreSQL, which says ``UTF8``."""
    table = _encodings.py_codecs if codecs is None else codecs
    table.setdefault(b"UNICODE", "utf-8")


class PsycopgSession:
    def __init__(self, connection: psycopg.AsyncConnection[Any]) -> None:
        self.connection = connection

    async def execute(self, query: LiteralString) -> None:
        await self.connection.execute(query)

    async def fetch_one(self, query: LiteralString, params: tuple[str, ...] = ()) -> tuple[Any, ...] | None:
        cursor = await self.connection.execute(query, params or None)
        row: tuple[Any, ...] | None = await cursor.fetchone()
        return row

    async def close(self) -> None:
        await self.connection.close()


async def psycopg_connect(params: ConnectParams) -> PsycopgSession:
    """Connect with psycopg 3, autocommit, and nothing ever prepared (Redshift rejects
    ``DEALLOCATE ALL``, which psycopg sends to drop prepared statements)."""
    install_unicode_alias()
    # psycopg leaves out the keywords that are None (no sslrootcert with sslmode=disable).
    keywords = vars(params) | {"password": params.password.reveal()}  # each field is a libpq keyword
    connection = await psycopg.AsyncConnection.connect(**keywords, autocommit=True, prepare_threshold=None)
    return PsycopgSession(connection)


def server_product(version: str) -> tuple[bool, str]:
    """Whether ``version()`` is Redshift's, and the product as shown ("Amazon Redshift 1.0.54321",
    "PostgreSQL 15.18")."""
    if "Redshift" in version:
        found = re.search(r"Redshift\s+([\d.]+)", version)
        return True, f"Amazon Redshift {found[1]}" if found else "Amazon Redshift"
    found = re.match(r"PostgreSQL\s+[\w.]+", version)
    return False, found[0] if found else " ".join(version.split()[:2]) or "an unknown server"


def _truthy(value: object) -> bool | None:
    """Redshift answers privilege questions as CHAR ('t'), PostgreSQL as boolean."""
    if isinstance(value, bool):
        return value
    text = value.strip().lower() if isinstance(value, str) else ""
    return {"t": True, "true": True, "f": False, "false": False}.get(text)


def schema_identifier(text: str) -> str:
    """The schema as Redshift names it: unquoted names are folded to lower case, a double-quoted
    one is kept as written (without its quotes)."""
    if len(text) >= 2 and text.startswith('"') and text.endswith('"'):
        return text[1:-1].replace('""', '"')
    return text.lower()


def _rootcert(raw: str | None) -> str:
    text = (raw or "").strip()
    if not text or text == "certifi":
        return default_rootcert()
    if text == "system":
        return text
    if not Path(text).is_file():
        raise ConfigError("REDSHIFT_SSLROOTCERT must be 'certifi', 'system' or the path of a CA bundle file")
    try:
        context = ssl.create_default_context(cafile=text)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ConfigError(f"REDSHIFT_SSLROOTCERT {text} holds no readable certificate") from exc
    if context.cert_store_stats()["x509"] == 0:
        raise ConfigError(f"REDSHIFT_SSLROOTCERT {text} holds no certificate")
    return text


def _connect_to(raw: str | None) -> tuple[str, int] | None:
    text = (raw or "").strip()
    if not text:
        return None
    host, colon, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    # isdigit() alone would let "²" through to int(); only ASCII digits are a port.
    valid = bool(colon) and port.isascii() and port.isdigit() and 1 <= int(port) <= 65535
    if not valid or not re.fullmatch(r"[A-Za-z0-9.:-]+", host):
        raise ConfigError("REDSHIFT_CONNECT_TO must be host:port, e.g. 127.0.0.1:5439")
    return host, int(port)


class Redshift(Provider):
    """The Amazon Redshift provider plug-in (provisioned clusters and Serverless workgroups)."""

    key = "redshift"
    title = "Redshift"
    description = (
        "Amazon Redshift clusters and Serverless workgroups. Connect with a database user and password."
    )
    name_examples = ("Analytics warehouse", "Redshift Serverless (prod)")
    hint_field = None  # the password says nothing masked; credential_hint gives user@cluster
    unreachable_hints = errs.UNREACHABLE_HINTS
    sections = (
        FormSection(
            title="Redshift endpoint",
            fields=(
                FormField(
                    name="endpoint",
                    label="Endpoint",
                    hint="The cluster's endpoint from its General information in the Redshift console, "
                    "or the workgroup's for Serverless. A pasted JDBC URL is read too.",
                    placeholder="examplecluster.abc123xyz789.us-west-2.redshift.amazonaws.com",
                    max_length=512,
                ),
                FormField(
                    name="port",
                    label="Port",
                    hint="Leave empty for 5439, the default.",
                    placeholder="5439",
                    optional=True,
                    max_length=5,
                ),
                FormField(
                    name="database",
                    label="Database",
                    hint="The database to connect to; usually dev.",
                    placeholder="dev",
                    max_length=127,
                ),
            ),
        ),
        FormSection(
            title="Database user",
            description="A database user (CREATE USER … PASSWORD), not an IAM user.",
            fields=(
                FormField(
                    name="user",
                    label="User",
                    hint="The database user the connection signs in as.",
                    placeholder="analyst",
                    max_length=128,
                ),
                FormField(
                    name="password",
                    label="Password",
                    hint="The user's password, exactly as it was set.",
                    secret=True,
                    max_length=256,
                ),
            ),
        ),
        FormSection(
            title="Privileges (optional)",
            fields=(
                FormField(
                    name="schema",
                    label="Schema",
                    hint="A schema the user must be able to use; the check tells whether it may. As in SQL, "
                    'a name is lower-cased unless it is in double quotes ("Sales").',
                    placeholder="public",
                    optional=True,
                    max_length=127,
                ),
            ),
        ),
    )

    def __init__(
        self,
        *,
        sslmode: str = "verify-full",
        sslrootcert: str | None = None,
        connect_to: tuple[str, int] | None = None,
        policy: outbound.Policy | None = None,
        connector: Connector = psycopg_connect,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        connect_timeout: int = 10,
        connect_budget: float = 15.0,
        probe_budget: float = 20.0,
        retry_delay: float = 1.0,
    ) -> None:
        if sslmode not in SSL_MODES:
            raise ValueError(f"sslmode must be one of {', '.join(SSL_MODES)}")
        self.sslmode, self.connect_to = sslmode, connect_to
        self.policy = policy or outbound.Policy()
        """Any public host name; the endpoint's shape is checked by :mod:`._redshift_endpoint`."""
        self.sslrootcert = default_rootcert() if sslrootcert is None else sslrootcert
        self.connect_timeout, self.retry_delay, self.probe_budget = connect_timeout, retry_delay, probe_budget
        self.connect_budget = connect_budget
        self._connector, self._sleep = connector, sleep
        if sslmode != "verify-full":
            risk = (
                "passwords and data may travel unencrypted"
                if sslmode == "disable"
                else "the server is not authenticated by its name, so passwords and data may travel to "
                "an impostor"
            )
            logger.warning(
                "Redshift TLS is relaxed to sslmode=%s: %s. This is for tests only.", sslmode, risk
            )

    @classmethod
    def from_environment(cls, env: Mapping[str, str]) -> Self:
        """The settings listed in the module's docstring; a bad value raises ConfigError naming it.
        With ``REDSHIFT_CONNECT_TO`` set to an IP, the endpoint's name is still the one TLS checks."""
        sslmode = (env.get("REDSHIFT_SSLMODE") or "").strip().lower() or "verify-full"
        if sslmode not in SSL_MODES:
            raise ConfigError(f"REDSHIFT_SSLMODE must be one of {', '.join(SSL_MODES)}")
        rootcert = _rootcert(env.get("REDSHIFT_SSLROOTCERT"))
        if sslmode == "verify-ca" and rootcert == "system":
            raise ConfigError(
                "REDSHIFT_SSLMODE=verify-ca needs REDSHIFT_SSLROOTCERT set to a CA bundle file "
                "('system' works only with verify-full)"
            )
        return cls(
            sslmode=sslmode,
            sslrootcert=rootcert,
            connect_to=_connect_to(env.get("REDSHIFT_CONNECT_TO")),
            policy=outbound.Policy.from_environment(env, private_aliases=(ALLOW_PRIVATE_ALIAS,)),
        )

    def clean(self, values: FieldValues) -> dict[str, str | Secret]:
        """Trim, and take a pasted URL or ``host:5439/dev`` apart into endpoint, port and
        database (the fields the user filled in win over the URL's parts)."""
        cleaned = super().clean(values)
        pasted = endpoints.split_pasted(str(cleaned["endpoint"]))
        cleaned["endpoint"] = pasted.host
        for name, found in (("port", pasted.port), ("database", pasted.database)):
            if not cleaned[name] and found:
                cleaned[name] = found
        return cleaned

    def validate(self, values: FieldValues) -> dict[str, str]:
        problems: dict[str, str] = {}
        host = shared.plain(values, "endpoint")
        endpoint: endpoints.Endpoint | None = None
        if not host:
            problems["endpoint"] = "Paste the endpoint from the Redshift console."
        elif problem := endpoints.endpoint_problem(host):
            problems["endpoint"] = problem
        else:
            endpoint = endpoints.classify(host)
        if problem := endpoints.port_problem(shared.plain(values, "port"), endpoint):
            problems["port"] = problem
        if not shared.plain(values, "database"):
            problems["database"] = "Name the database to connect to; it is usually dev."
        if not shared.plain(values, "user"):
            problems["user"] = "Enter the database user."
        if not shared.plain(values, "password"):
            problems["password"] = "Enter the user's password."
        return problems

    def credential_hint(self, values: FieldValues) -> str | None:
        """``user@cluster`` (the endpoint's first label): public, and tells credentials apart."""
        user, host = shared.plain(values, "user"), shared.plain(values, "endpoint")
        return shared.shorten(f"{user}@{host.split('.', 1)[0]}", _KEY_HINT_MAX) if user and host else None

    def connect_params(self, values: FieldValues) -> ConnectParams:
        """The connection the probe makes for cleaned, valid ``values``."""
        host = shared.plain(values, "endpoint")
        port = endpoints.parse_port(shared.plain(values, "port"))
        hostaddr: str | None = None
        if self.connect_to is not None:
            elsewhere, port = self.connect_to
            if endpoints.is_ip(elsewhere):
                hostaddr = elsewhere
            else:
                host = elsewhere
        password = values.get("password")
        verifies = self.sslmode.startswith("verify-")
        # libpq refuses sslrootcert=system with any mode but verify-full, and a root file turns
        # require into verify-ca: only a bundle set on purpose does that.
        chosen = self.sslrootcert not in ("system", default_rootcert())
        rootcert = self.sslrootcert if verifies or (self.sslmode == "require" and chosen) else None
        return ConnectParams(
            host=host,
            port=port,
            dbname=shared.plain(values, "database"),
            user=shared.plain(values, "user"),
            password=password if isinstance(password, Secret) else Secret(str(password or "")),
            sslmode=self.sslmode,
            sslrootcert=rootcert,
            connect_timeout=self.connect_timeout,
            hostaddr=hostaddr,
        )

    async def probe(self, values: FieldValues, http: httpx.AsyncClient) -> Probe:
        """Connect and ask who we are and what we may do; ``http`` is not used."""
        params = self.connect_params(values)
        host = shared.plain(values, "endpoint")
        port = endpoints.parse_port(shared.plain(values, "port"))
        target = errs.Target(host, port, params.dbname, params.user)
        if self.connect_to is None:
            address = await self._checked_address(params.host, params.port, target)
            if isinstance(address, errs.ConnectFailure):
                return address.probe
            params = dataclasses.replace(params, hostaddr=address)
        session = await self._connect(params, target)
        if isinstance(session, errs.ConnectFailure):
            return session.probe
        password = params.password.reveal()
        try:
            async with asyncio.timeout(self.probe_budget):
                schema = schema_identifier(shared.plain(values, "schema"))
                return await self._ask(session, endpoints.classify(host), schema)
        except (TimeoutError, psycopg.errors.QueryCanceled):
            logger.info("redshift %s: the checks took too long", target.address)
            summary = f"We connected to {target.address}, but the checks didn't finish in time."
            return Probe(Outcome.PROVIDER_ERROR, summary, hints=(errs.BUSY_HINT,))
        except psycopg.Error as exc:
            logger.info("redshift %s: a check failed (SQLSTATE %s)", target.address, exc.sqlstate)
            what = f"We connected to {target.address}, but a check failed"
            summary = shared.with_said(what, errs.server_said(str(exc), password))
            return Probe(Outcome.PROVIDER_ERROR, summary, hints=(errs.PROVIDER_ERROR_HINT,))
        finally:
            await self._close(session, target)

    async def _checked_address(self, host: str, port: int, target: errs.Target) -> str | errs.ConnectFailure:
        """The address to connect to, as the outbound policy checked it. Nothing is connected to here."""
        route = await self.policy.route(host, port)
        if isinstance(route, outbound.Pinned):
            return route.address
        failure = errs.blocked_failure(target, route)
        logger.info("redshift %s: not connecting (%s)", target.address, failure.kind)
        return failure

    async def _connect(self, params: ConnectParams, target: errs.Target) -> Session | errs.ConnectFailure:
        """One attempt, and one more after a short pause when the failure looked transient."""
        password = params.password.reveal()
        tls = self.sslmode != "disable"
        retried = False
        while True:
            try:
                async with asyncio.timeout(self.connect_budget):
                    return await self._connector(params)
            except (psycopg.Error, OSError) as exc:  # OSError includes TimeoutError
                text = "connection timeout expired" if isinstance(exc, TimeoutError) else str(exc)
                failure = errs.classify_connect_error(text, target, password, tls_enabled=tls)
            logger.info("redshift %s: connecting failed (%s)", target.address, failure.kind)
            if not failure.transient or retried:
                return failure
            retried = True
            await self._sleep(self.retry_delay)

    async def _ask(self, session: Session, endpoint: endpoints.Endpoint, schema: str) -> Probe:
        """The probes, one leader-node statement each (Redshift refuses to mix them with tables)."""
        await session.execute(_STATEMENT_TIMEOUT)
        row = await session.fetch_one(_WHO_AM_I)
        if row is None or len(row) < 3:
            raise psycopg.DataError("no answer to the identity question")
        if not all(isinstance(value, str) and value for value in row[:3]):
            # current_user, current_database() and version() are always text on a real server.
            raise psycopg.DataError("an identity answer that is not text")
        user, database, version = str(row[0]), str(row[1]), str(row[2])
        is_redshift, product = server_product(version)
        kind = endpoint.describe()
        detail = f"{product}; {kind}" if is_redshift else f"{product}, not Amazon Redshift; {kind}"
        checks = [Check(f"Signed in as {user} to {database}", True, detail)]
        hints: list[str] = []
        missing: list[str] = []

        def lacks(name: str, detail: str, hint: str) -> None:
            checks.append(Check(name, False, detail))
            hints.append(hint)
            missing.append(name)

        name = f"TEMP on database {database}"
        if _truthy((await session.fetch_one(_MAY_TEMP) or (None,))[0]):
            checks.append(Check(name, True, "It may create temporary tables."))
        else:
            lacks(name, "It may not create temporary tables.", errs.temp_hint(database, user))

        if schema:
            name = f"USAGE on schema {schema}"
            try:
                usage = _truthy((await session.fetch_one(_MAY_USE_SCHEMA, (schema,)) or (None,))[0])
            except psycopg.errors.InvalidSchemaName:
                missing_hint = errs.schema_missing_hint(schema, database)
                lacks(name, f"There is no schema {schema} in {database}.", missing_hint)
            else:
                if usage:
                    checks.append(Check(name, True, "It may use the schema."))
                else:
                    lacks(name, "It may not use the schema.", errs.usage_hint(schema, user))

        who = f"{user} on database {database}"
        accepted = f"{product} accepted {who}" if is_redshift else f"The server accepted {who} ({product})"
        summary = f"{accepted}, but the user lacks {' and '.join(missing)}." if missing else f"{accepted}."
        return Probe(Outcome.OK, summary, tuple(checks), tuple(hints))

    async def _close(self, session: Session, target: errs.Target) -> None:
        try:
            async with asyncio.timeout(5):
                await session.close()
        except (TimeoutError, psycopg.Error, OSError) as exc:
            # The verification is decided; a failed goodbye only merits a note.
            logger.info("redshift %s: closing the connection failed (%s)", target.address, type(exc).__name__)
