"""What the Redshift provider says about failures: connect errors read by their text, and hints.

psycopg 3 gives no SQLSTATE for a failed connection (specs/redshift/README.md §2), so a connect
error is classified by libpq's and the server's message (§3): Redshift and PostgreSQL word the
errors that matter here alike. The server's own words are shown to the user only when they cannot
hold the password.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.markup import inert
from bot.outbound import Blocked
from bot.providers._shared import blocked_probe, shorten, with_said
from bot.providers.base import Outcome, Probe
from bot.redaction import redact

_SAID_MAX = 200

UNREACHABLE_HINTS = (
    "Make the cluster or workgroup publicly accessible (in the Redshift console: Actions → Modify "
    "publicly accessible setting), or it can only be reached from inside its VPC.",
    "Add an inbound rule for TCP 5439 (or the port you use) from the bot's egress IP addresses to the "
    "VPC security group of the cluster or workgroup; check network ACLs and firewalls on the way too.",
    "Check that the cluster isn't paused: its status in the Redshift console should be Available.",
)

TLS_HINTS = (
    "Use the endpoint host exactly as the Redshift console shows it, not an IP address, SSH tunnel, "
    "VPC endpoint or alias: the server's certificate is checked against that name.",
    "The bot trusts the Mozilla root certificates (certifi), which include Amazon Trust Services (the "
    "issuer of Redshift's certificates); a server without TLS, or with a certificate no trusted CA "
    "issued, is refused.",
)

_PASSWORD_HINT = (
    "User or password rejected. Check the password: paste it exactly as it was set, special characters "
    "as they are (not URL-encoded, no quotes around it)."
)
_USER_HINT = (
    "Confirm that the user exists (an admin can run `SELECT usename FROM pg_user;`). It is a database "
    "user made with CREATE USER … PASSWORD, not an IAM user."
)
_DATABASE_HINT = (
    "Database not found. The default database is usually dev; an admin can list them with "
    "`SELECT datname FROM pg_database;`."
)
_DNS_HINT = (
    "Host not found: copy the endpoint again from the Redshift console (the cluster's General "
    "information, or the workgroup's page). A deleted or renamed cluster has a new endpoint."
)
_PRIVATE_HINT = (
    "Use the endpoint of a cluster or workgroup that is publicly accessible. If the bot runs inside the "
    "cluster's VPC, its operator can allow private addresses with CONNECTIONS_ALLOW_PRIVATE_ADDRESSES=true."
)
_DROPPED_HINT = (
    "The connection was closed while it was being set up, which is usually a network hiccup or a "
    "restarting cluster; try again in a minute."
)
_REFUSED_HINT = (
    "Something at that address refused the connection: check the port (5439 unless it was changed). "
    "A security group drops unwanted connections rather than refusing them."
)
_HBA_HINT = (
    "The server refuses this user from the bot's address (its host-based access rules); ask its admin "
    "to allow the bot's egress IP addresses."
)
_SSL_OFF_HINT = (
    "The server requires TLS, but REDSHIFT_SSLMODE=disable turned it off for the bot; that setting is "
    "for tests only: remove it."
)
_NOT_ACCEPTING_HINT = (
    "The database doesn't accept connections right now (maintenance, resize or restore); try again later."
)
PROVIDER_ERROR_HINT = (
    "Redshift answered with an error the bot didn't expect; try again in a minute. If it persists, look "
    "at the cluster's or workgroup's status in the Redshift console."
)
BUSY_HINT = (
    "Redshift took too long to answer simple questions; queries may be waiting in a busy WLM queue. "
    "Try again when the cluster is less busy."
)


def quote_ident(name: str) -> str:
    """``name`` as SQL would need it in a GRANT: bare when it is a plain lower-case identifier."""
    if re.fullmatch(r"[a-z_][a-z0-9_$]*", name):
        return name
    return '"' + name.replace('"', '""') + '"'


def _sql(name: str) -> str:
    """A name a user or the server chose, as SQL in a hint: quoted as needed, and inert."""
    return inert(quote_ident(name))


def _rate_limit_hint(user: str) -> str:
    return (
        "The connection limit is reached, not a problem with the credentials: close idle sessions, or "
        f"raise the user's limit with `ALTER USER {_sql(user)} CONNECTION LIMIT n;`, then try "
        "again. Redshift allows up to 2,000 connections on RA3 nodes and Serverless."
    )


def _connect_hint(database: str, user: str) -> str:
    return (
        f"The user may not connect to this database: an admin can run `GRANT CONNECT ON DATABASE "
        f"{_sql(database)} TO {_sql(user)};`, or use a database the user may use."
    )


def temp_hint(database: str, user: str) -> str:
    return (
        f"`GRANT TEMP ON DATABASE {_sql(database)} TO {_sql(user)};` lets the user create "
        "temporary tables, which many tools need."
    )


def usage_hint(schema: str, user: str) -> str:
    s, u = _sql(schema), _sql(user)
    return (
        f"`GRANT USAGE ON SCHEMA {s} TO {u}; GRANT SELECT ON ALL TABLES IN SCHEMA {s} TO {u};` lets the "
        f"user read schema {inert(schema)} (add `GRANT CREATE ON SCHEMA {s} TO {u};` if it writes there)."
    )


def schema_missing_hint(schema: str, database: str) -> str:
    return (
        f"There is no schema {inert(schema)} in database {inert(database)}: check the spelling and the "
        "database. A name not in double quotes is lower-cased, as in SQL; write a mixed-case name in "
        'quotes, as "Sales".'
    )


@dataclass(frozen=True)
class Target:
    """Where a verification connects, as the user entered it (the names shown in messages)."""

    host: str
    port: int
    database: str
    user: str

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class ConnectFailure:
    probe: Probe
    kind: str
    """A short label for logs (never the error's text)."""
    transient: bool = False
    """Worth one more attempt: the server said "not now" in a way we don't know better."""


def server_said(message: str, password: str) -> str:
    """The server's own words from a psycopg error, on one line, or "" when they could hold the
    password (then nothing of them is shown)."""
    if password and password in message:
        return ""
    text = redact(message)
    for marker in ("FATAL:", "ERROR:"):
        at = text.rfind(marker)
        if at >= 0:
            text = text[at + len(marker) :]
            break
    else:
        text = text.rsplit("failed: ", 1)[-1]
    return shorten(" ".join(text.split()), _SAID_MAX)


def blocked_failure(target: Target, blocked: Blocked) -> ConnectFailure:
    """The outbound policy refused the endpoint, or its name did not resolve; nothing was connected to."""
    probe = blocked_probe(
        target.host,
        blocked,
        not_found_hint=_DNS_HINT,
        private_hint=_PRIVATE_HINT,
        later_hints=UNREACHABLE_HINTS,
    )
    return ConnectFailure(probe, blocked.value)


def classify_connect_error(
    message: str, target: Target, password: str, *, tls_enabled: bool
) -> ConnectFailure:
    """Map the text of a failed connection attempt to an outcome with its hints."""
    text = message.lower()
    # Quoted names (host, user, database) must not decide the kind: a host may be called "ssl-1".
    bare = re.sub(r'"[^"]*"', '""', text)
    said = server_said(message, password)
    where = target.address

    def fail(
        outcome: Outcome, kind: str, summary: str, hints: tuple[str, ...], *, transient: bool = False
    ) -> ConnectFailure:
        return ConnectFailure(Probe(outcome, summary, hints=hints), kind, transient)

    if "failed to resolve host" in text or "could not translate host name" in text:
        temporary = "temporary failure" in text or "try again" in text
        return blocked_failure(target, Blocked.DNS_UNAVAILABLE if temporary else Blocked.NOT_FOUND)
    if "password authentication failed" in text or "authentication failed" in text:
        summary = with_said(f"Amazon Redshift rejected the user {target.user} or its password", said)
        return fail(Outcome.UNAUTHORIZED, "auth", summary, (_PASSWORD_HINT, _USER_HINT))
    if re.search(r'role ".*" does not exist', text) or "no password supplied" in text:
        summary = with_said(f"Amazon Redshift doesn't accept the user {target.user}", said)
        return fail(Outcome.UNAUTHORIZED, "auth", summary, (_USER_HINT, _PASSWORD_HINT))
    if re.search(r'database ".*" does not exist', text):
        summary = with_said(f"There is no database {target.database} at {target.host}", said)
        return fail(Outcome.INVALID_INPUT, "database", summary, (_DATABASE_HINT,))
    if "permission denied for database" in text:
        summary = with_said(f"The user {target.user} may not connect to {target.database}", said)
        return fail(
            Outcome.FORBIDDEN, "connect-privilege", summary, (_connect_hint(target.database, target.user),)
        )
    if (
        "too many connections" in text
        or "connection limit exceeded" in text
        or "remaining connection slots are reserved" in text
    ):
        summary = with_said("Amazon Redshift has no connection to spare right now", said)
        return fail(Outcome.RATE_LIMITED, "connection-limit", summary, (_rate_limit_hint(target.user),))
    if "no pg_hba.conf entry" in text:
        if "ssl off" in text or "no encryption" in text:
            summary = f"{where} only accepts connections over TLS."
            return fail(Outcome.UNREACHABLE, "tls-required", summary, (_SSL_OFF_HINT, *TLS_HINTS))
        summary = with_said(f"{target.host} refuses the user {target.user} from the bot's address", said)
        return fail(Outcome.FORBIDDEN, "host-rules", summary, (_HBA_HINT,))
    if "not currently accepting connections" in text:
        summary = with_said(f"The database {target.database} isn't accepting connections", said)
        return fail(Outcome.PROVIDER_ERROR, "not-accepting", summary, (_NOT_ACCEPTING_HINT,), transient=True)
    # A TLS connection cut short ("SSL SYSCALL error: EOF detected") is a dropped connection, not a
    # TLS misconfiguration, unless the text is about the certificate.
    dropped = any(
        phrase in bare
        for phrase in (
            "ssl syscall error",
            "ssl connection has been closed unexpectedly",
            "eof detected",
            "server closed the connection unexpectedly",
            "connection reset by peer",
        )
    )
    if dropped and not ("certificate" in bare or "verify" in bare):
        summary = with_said(f"{where} closed the connection while it was being set up", said)
        return fail(
            Outcome.PROVIDER_ERROR, "dropped", summary, (_DROPPED_HINT, PROVIDER_ERROR_HINT), transient=True
        )
    if tls_enabled and any(
        word in bare for word in ("ssl", "certificate", "tls", "does not match host name", "sslrootcert")
    ):
        if "does not support ssl" in bare:
            reason = "it doesn't offer TLS"
        elif "does not match host name" in bare:
            reason = "its certificate is for another name"
        elif "certificate" in bare:
            reason = "its certificate couldn't be verified"
        else:
            reason = "the TLS handshake failed"
        return fail(
            Outcome.UNREACHABLE, "tls", f"We couldn't connect to {where} securely: {reason}.", TLS_HINTS
        )
    if "timeout expired" in bare or "timed out" in bare:
        summary = f"{where} didn't answer in time (the connection timed out)."
        return fail(Outcome.UNREACHABLE, "timeout", summary, UNREACHABLE_HINTS)
    if "connection refused" in bare:
        summary = f"{where} refused the connection."
        return fail(Outcome.UNREACHABLE, "refused", summary, (_REFUSED_HINT, *UNREACHABLE_HINTS))
    if any(
        phrase in bare
        for phrase in ("no route to host", "network is unreachable", "could not connect", "host is down")
    ):
        summary = f"We couldn't reach {where}."
        return fail(Outcome.UNREACHABLE, "network", summary, UNREACHABLE_HINTS)
    summary = with_said(f"Amazon Redshift at {where} didn't let us connect", said)
    return fail(Outcome.PROVIDER_ERROR, "other", summary, (PROVIDER_ERROR_HINT,), transient=True)
