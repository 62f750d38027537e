"""What the Snowflake provider says about failures: the SQL API's error bodies, and the hints for
each kind of failure (specs/snowflake/README.md §4 and §5).

The SQL API answers errors with ``{"code", "message", "sqlState"?, "statementHandle"?, …}``
(QueryStatus / QueryFailureStatus); authentication failures may carry only ``code`` and
``message``, and a 429 or a gateway's 5xx may have no body at all. Codes are matched first, the
HTTP status second, because Snowflake documents the codes better than the statuses they come with.
Text taken from a response is trimmed to one short line and never taken from a non-JSON body.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

import httpx

from bot.markup import inert
from bot.providers._shared import KEPT_MAX, json_of, try_again

CODE_JWT_INVALID = "390144"
CODE_USER_DISABLED = "390101"
CODE_USER_LOCKED = "390102"
CODE_ROLE_NOT_GRANTED = "390189"
CODE_ROLE_NOT_ALLOWED = "390186"  # seen for scoped OAuth; the same fix
CODE_NETWORK_POLICY = "390422"
CODE_WAREHOUSE_AT_LOGIN = "390201"
CODE_NO_WAREHOUSE = "000606"
CODE_OBJECT_MISSING = "002003"
CODE_STATEMENT_TIMEOUT = "000630"

_FAILURE_ID = re.compile(r"\[([0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})\]")
_ADDRESS = re.compile(
    r"(?<![\w.:])([0-9]{1,3}(?:\.[0-9]{1,3}){3}|[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7})(?![\w.:])"
)

PASSWORD_REFUSED = (
    "That looks like a password, not a token. Snowflake is blocking single-factor password sign-in "
    "(fully enforced by October 2026) and its SQL API never takes passwords. Use a key pair instead: "
    "create one with openssl genrsa 2048 | openssl pkcs8 -topk8 -nocrypt -out rsa_key.p8, have an admin "
    "register the public key (openssl rsa -in rsa_key.p8 -pubout) with ALTER USER … SET "
    "RSA_PUBLIC_KEY='MIIB…', and paste rsa_key.p8 under Private key. A programmatic access token works too."
)

KEY_WONT_LOAD = (
    "Paste the PKCS#8 PEM file (BEGIN PRIVATE KEY, or BEGIN ENCRYPTED PRIVATE KEY with its "
    "passphrase): an RSA key of at least 2048 bits."
)

_ACCOUNT_FORMS = (
    "Use the account identifier from Snowsight (account menu → View account details): "
    "`orgname-account_name`, or the full account locator with its region, like `xy12345.us-east-2.aws`."
)

UNREACHABLE_HINTS = (
    "We couldn't reach Snowflake. Check the account identifier: a wrong one often has no address at all. "
    + _ACCOUNT_FORMS,
    "Accounts that allow only private connectivity (PrivateLink) can't be reached from the bot unless "
    "its operator points it there.",
    "If this keeps happening for every connection, the bot's own network or proxy may be blocking "
    "snowflakecomputing.com.",
)


PRIVATE_ADDRESS_HINT = (
    "Use the account's public address. An account reached over PrivateLink resolves to private "
    "addresses: only a bot inside that network reaches it, whose operator then allows private "
    "addresses (CONNECTIONS_ALLOW_PRIVATE_ADDRESSES=true)."
)
HOST_REFUSED = "That account identifier doesn't make an address the bot may call. " + _ACCOUNT_FORMS.replace(
    "`", ""
)


def account_not_found_hints(custom_url: bool) -> tuple[str, ...]:
    hints = ["Snowflake doesn't know this account. " + _ACCOUNT_FORMS]
    hints.append(
        "A bare locator (`xy12345`) works only for AWS us-west-2; elsewhere add the region and "
        "cloud, like `xy12345.east-us-2.azure`."
    )
    if custom_url:
        hints.append("The bot reaches Snowflake through a configured address; its operator can check it.")
    return tuple(hints)


def key_rejected_hints(user: str, fingerprint: str, failure_id: str | None) -> tuple[str, ...]:
    user = inert(user)
    return (
        f"Snowflake didn't accept the key for this user. Run `DESC USER {user}` and compare "
        f"RSA_PUBLIC_KEY_FP (and RSA_PUBLIC_KEY_2_FP) with this key's fingerprint `{fingerprint}`.",
        f"If they differ, register this key: `ALTER USER {user} SET RSA_PUBLIC_KEY='MIIB…'` (the public "
        "key without its BEGIN/END lines; use RSA_PUBLIC_KEY_2 to rotate without downtime).",
        "If the fingerprint matches, check the account identifier (`orgname-account_name`, no region) and "
        "the login name: the same key on another account or user is rejected the same way.",
        _failure_details(failure_id),
    )


def token_rejected_hints(user: str, failure_id: str | None) -> tuple[str, ...]:
    return (
        "Snowflake didn't accept the programmatic access token. Check that it was copied whole and "
        f"hasn't expired (15 days by default) or been removed: `SHOW USER PATS FOR USER {inert(user)}`.",
        "A token works only for the user it was created for, on its own account: check the login name "
        "and the account identifier.",
        "A token with a role restriction stops working when that role is revoked from the user.",
        _failure_details(failure_id),
    )


def _failure_details(failure_id: str | None) -> str:
    if failure_id:
        return (
            "An admin can see the exact reason with "
            f"`SELECT SYSTEM$GET_LOGIN_FAILURE_DETAILS('{inert(failure_id)}');` (for a few hours after "
            "the attempt)."
        )
    return "An admin can look for the failed sign-in in the LOGIN_HISTORY of the account."


def disabled_hints(user: str) -> tuple[str, ...]:
    return (
        f"The user is disabled. An admin can enable it with `ALTER USER {inert(user)} SET DISABLED = FALSE`.",
    )


def locked_hints(user: str) -> tuple[str, ...]:
    return (
        "The user is locked after too many failed sign-ins. Wait 15 minutes, or ask an admin to run "
        f"`ALTER USER {inert(user)} SET MINS_TO_UNLOCK = 0`.",
    )


def network_policy_hints(address: str | None, token: bool) -> tuple[str, ...]:
    # Not made inert: seen_address() printed it from a parsed IP address (digits, dots, colons),
    # which cannot format or link, and an admin copies it into a network policy as shown.
    where = f" ({address}, the address Snowflake saw)" if address else ""
    hints = [
        f"A network policy blocks the bot's address{where}. Ask an admin to add the bot's egress "
        "address to the network policy that applies to this user (`NETWORK_POLICY` in `DESC USER`) "
        "or to the account.",
    ]
    if token:
        hints.append(
            "Programmatic access tokens are only accepted from users under a network policy, so the "
            "policy must allow the bot rather than be removed."
        )
    return tuple(hints)


def role_hints(role: str | None, user: str, token: bool) -> tuple[str, ...]:
    target, user = inert(role) if role else "<role>", inert(user)
    hints = [
        f"The role isn't granted to this user: `GRANT ROLE {target} TO USER {user}`, "
        "or leave Role empty to use the user's default role.",
    ]
    if token:
        hints.append(
            "A token with a role restriction works only with that role: leave Role empty, or use the "
            "role in ROLE_RESTRICTION (`SHOW USER PATS FOR USER " + user + "`)."
        )
    return tuple(hints)


def warehouse_hint(warehouse: str, role: str) -> str:
    warehouse, role = inert(warehouse), inert(role)
    return (
        f"Warehouse {warehouse} doesn't exist or role {role} can't use it: `GRANT USAGE ON WAREHOUSE "
        f"{warehouse} TO ROLE {role}`, and check the name (case matters for names in double quotes)."
    )


def warehouse_case_hint(typed: str, found: str) -> str:
    typed, found = inert(typed), inert(found)
    return (
        f"There is a warehouse named {found}, which differs from {typed} only in case: enter it as "
        f"{found} (names in double quotes keep their case; others are upper-cased)."
    )


def database_hint(database: str, role: str) -> str:
    database, role = inert(database), inert(role)
    return (
        f"Database {database} doesn't exist or role {role} can't use it: `GRANT USAGE ON DATABASE "
        f"{database} TO ROLE {role}` (and USAGE on its schemas, SELECT on tables, as needed)."
    )


def api_forbidden_hints() -> tuple[str, ...]:
    return (
        "Snowflake refused the request. The SQL API may be turned off for this account, or an "
        "account-level policy blocks it; ask an admin.",
        "Check the account identifier too. " + _ACCOUNT_FORMS,
    )


def rate_limited_hints(wait_seconds: float | None) -> tuple[str, ...]:
    return (f"Snowflake is rate-limiting requests for this account; try again {try_again(wait_seconds)}.",)


def provider_error_hints(reference: str | None) -> tuple[str, ...]:
    ref = f" (request {inert(reference)})" if reference else ""
    return (
        f"Snowflake returned a server error{ref}; try again later.",
        "If it keeps failing, check https://status.snowflake.com and give Snowflake support the request id.",
    )


def slow_hints(seconds: float) -> tuple[str, ...]:
    return (
        f"Snowflake accepted the request but hadn't finished the check after {seconds:.0f} seconds; "
        "the account may be busy. Try again in a minute.",
    )


@dataclass(frozen=True)
class ApiError:
    """What a non-success response said."""

    status: int
    code: str | None = None
    message: str | None = None
    statement_handle: str | None = None

    @property
    def text(self) -> str:
        if self.message:
            return self.message
        return f"HTTP {self.status} {httpx.codes.get_reason_phrase(self.status)}".strip()


def parse_error(response: httpx.Response) -> ApiError:
    """Read the SQL API's error body; fall back to the HTTP status text."""
    is_json = "json" in response.headers.get("content-type", "").lower()
    body = json_of(response) if is_json and response.content else None
    if not isinstance(body, dict):
        return ApiError(response.status_code)
    code, message, handle = (_text(body.get(name)) for name in ("code", "message", "statementHandle"))
    return ApiError(response.status_code, code, message, handle)


def _text(value: object) -> str | None:
    if value is None or isinstance(value, dict | list | bool):
        return None
    text = " ".join(str(value).split())
    return text[:KEPT_MAX] or None


def login_failure_id(message: str | None) -> str | None:
    """The ``[uuid]`` Snowflake appends to a failed sign-in, for SYSTEM$GET_LOGIN_FAILURE_DETAILS."""
    found = _FAILURE_ID.search(message or "")
    return found.group(1) if found else None


def seen_address(message: str | None) -> str | None:
    """The client address a 390422 message names ("Incoming request with IP/Token a.b.c.d …")."""
    for candidate in _ADDRESS.findall(message or ""):
        try:
            return str(ipaddress.ip_address(candidate))
        except ValueError:
            continue
    return None
