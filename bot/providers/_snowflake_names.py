"""Snowflake names the user types: the account identifier, the login name, and role, warehouse and
database names; how each is checked offline and normalised.

The facts are in specs/snowflake/README.md §1 and §3. In short:

* An account identifier is ``orgname-account_name`` (also spelt ``orgname.account_name`` or
  ``orgname-account-name``) or a legacy locator: bare ``xy12345`` (AWS us-west-2 only) or
  ``xy12345.<region>[.<cloud>]``, at ``<identifier>.snowflakecomputing.com`` (``.cn`` in China).
  People paste URLs, so the scheme, path and domain are dropped first.
* In a key-pair JWT the account is cut as the Snowflake connector does (before the first ``-`` of
  a ``.global`` identifier, otherwise before the first ``.``), with underscores, upper-cased.
* The SQL API takes role, warehouse and database names case-sensitively: an unquoted name is
  upper-cased, as Snowflake resolves it; a double-quoted one is sent as written inside the quotes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from bot.providers._shared import unquote

ACCOUNT_EXAMPLES = "myorg-account_name (or an account locator such as xy12345.us-east-2.aws)"
_DOMAIN = ".snowflakecomputing.com"
_CHINA_DOMAIN = ".snowflakecomputing.cn"
_SNOWSIGHT = "app.snowflake.com"
_LABEL = re.compile(r"[a-z0-9_-]+")
_MAX_LABELS = 4  # locator, region, cloud, privatelink
_MAX_ACCOUNT = 255
# Suffix labels that follow an identifier without being a region.
_NOT_A_REGION = frozenset({"privatelink", "global"})

_UNQUOTED = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
_MAX_IDENTIFIER = 255
# Inside double quotes Snowflake allows almost anything; we refuse what would need escaping in the
# string literal of SHOW ... LIKE or could break a hint, so no value ever has to be escaped.
_QUOTED_FORBIDDEN = re.compile(r"[\\'`\x00-\x1f\x7f]")
_USER_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f]")
_MAX_USER = 255


def normalise_account(text: str) -> str | None:
    """The account identifier in lower case, without scheme, path or ``.snowflakecomputing.com``
    (``.snowflakecomputing.cn`` stays: it decides the host), with ``orgname.account_name``
    rewritten as ``orgname-account_name``; None when it is not one."""
    text = unquote(text).lower()
    if not text or any(ch.isspace() for ch in text) or not text.isascii():
        return None
    if "://" in text:
        try:
            parts = urlsplit(text)
            host, path = parts.hostname or "", parts.path
            parts.port  # noqa: B018 -- raises ValueError on a malformed port
        except ValueError:
            return None
        if parts.username is not None or parts.password is not None:
            return None
    else:
        host, _, path = text.partition("/")
        host = host.split(":", 1)[0]
    host = host.rstrip(".")
    if host == _SNOWSIGHT:
        return _from_snowsight(path)
    china = host.endswith(_CHINA_DOMAIN)
    if host.endswith(_DOMAIN):
        host = host[: -len(_DOMAIN)]
    elif china:
        host = host[: -len(_CHINA_DOMAIN)]
    elif "://" in text:
        return None  # a URL of some other site
    labels = host.split(".")
    if not 1 <= len(labels) <= _MAX_LABELS or not all(_LABEL.fullmatch(label) for label in labels):
        return None
    if "snowflakecomputing" in labels or labels[0].startswith("-"):
        return None
    if len(labels) == 2 and "-" not in labels[0] + labels[1] and labels[1] not in _NOT_A_REGION:
        # orgname.account_name: a second label without "-" is not a region (every region has one).
        labels = [f"{labels[0]}-{labels[1]}"]
    identifier = ".".join(labels)
    if len(identifier) > _MAX_ACCOUNT:
        return None
    return identifier + _CHINA_DOMAIN if china else identifier


def _from_snowsight(path: str) -> str | None:
    # Snowsight addresses read app.snowflake.com/<orgname>/<account_name>/… (inference: the README
    # does not cover them, but users paste them). Older ones name a region and a locator instead.
    segments = [s for s in path.split("/") if s and not s.startswith("#")]
    if len(segments) < 2:
        return None
    org, account = segments[0], segments[1]
    if not re.fullmatch(r"[a-z0-9]+", org) or not re.fullmatch(r"[a-z0-9_]+", account):
        return None
    return f"{org}-{account}"


def account_problem(text: str) -> str | None:
    """What is wrong with a typed account identifier, or None."""
    if not text.strip():
        return f"Enter the account identifier, like {ACCOUNT_EXAMPLES}."
    lowered = unquote(text).lower()
    if _SNOWSIGHT in lowered and normalise_account(text) is None:
        return (
            "That Snowsight address doesn't show the account identifier. In Snowsight open your "
            f"account menu → View account details and copy the account identifier, like {ACCOUNT_EXAMPLES}."
        )
    if normalise_account(text) is None:
        return (
            f"An account identifier looks like {ACCOUNT_EXAMPLES}: letters, digits, _ and -, in up "
            "to four parts separated by dots. Copy it from Snowsight (account menu → View account details)."
        )
    return None


def host_of(identifier: str) -> str:
    """``<identifier>.snowflakecomputing.com``; ``.cn`` for an account in a China region."""
    if identifier.endswith(_CHINA_DOMAIN):
        return identifier
    if any(label.startswith("cn-") for label in identifier.split(".")[1:]):
        return identifier + _CHINA_DOMAIN
    return identifier + _DOMAIN


def jwt_account(identifier: str) -> str:
    """The account as a key-pair JWT names it (``iss``/``sub``), per the connector's rule."""
    if ".global" in identifier:
        account = identifier.split("-", 1)[0]
    else:
        account = identifier.split(".", 1)[0]
        org, dash, name = account.partition("-")
        if dash:  # orgname-account-name is a spelling of orgname-account_name
            account = f"{org}-{name.replace('-', '_')}"
    return account.upper()


def user_problem(user: str) -> str | None:
    if not user:
        return "Enter the user's login name (LOGIN_NAME in DESC USER)."
    if len(user) > _MAX_USER:
        return f"A login name has at most {_MAX_USER} characters."
    if _USER_FORBIDDEN.search(user):
        return "A login name fits on one line; copy it again from DESC USER (LOGIN_NAME)."
    return None


@dataclass(frozen=True)
class Identifier:
    """A role, warehouse or database name as Snowflake resolves it."""

    name: str
    """The exact, case-sensitive name: what the SQL API body and SHOW output carry."""
    quoted: bool

    @property
    def sql(self) -> str:
        """The name as SQL text, for hints: bare when unquoted, in double quotes otherwise."""
        return '"' + self.name.replace('"', '""') + '"' if self.quoted else self.name


def parse_identifier(text: str) -> Identifier | None:
    """An unquoted name (upper-cased) or a double-quoted one (taken as written); None if neither."""
    text = text.strip()
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        inner = text[1:-1]
        if '"' in inner.replace('""', ""):
            return None
        name = inner.replace('""', '"')
        if not name or len(name) > _MAX_IDENTIFIER or _QUOTED_FORBIDDEN.search(name):
            return None
        if _UNQUOTED.fullmatch(name) and name == name.upper():
            return Identifier(name, quoted=False)  # "ANALYST" is just ANALYST
        return Identifier(name, quoted=True)
    if len(text) <= _MAX_IDENTIFIER and _UNQUOTED.fullmatch(text):
        return Identifier(text.upper(), quoted=False)
    return None


def identifier_problem(text: str, what: str) -> str | None:
    """What is wrong with a typed role/warehouse/database name (``what``), or None."""
    if not text or parse_identifier(text) is not None:
        return None
    if len(text) > _MAX_IDENTIFIER:
        return f"A {what} name has at most {_MAX_IDENTIFIER} characters."
    return (
        f"Type the {what} name as Snowflake shows it: letters, digits, _ and $, starting with a letter "
        'or _ (case doesn\'t matter), or in double quotes for a case-sensitive name, like "My_Name". '
        "Quoted names can't contain ', ` or \\."
    )


def sql_name(name: str) -> str:
    """An exact name (as Snowflake returns it) as SQL text: bare when Snowflake would resolve it
    unquoted, in double quotes otherwise."""
    plain = _UNQUOTED.fullmatch(name) is not None and name == name.upper()
    return Identifier(name, quoted=not plain).sql


def sql_string_literal(text: str) -> str:
    """``text`` as a single-quoted Snowflake string literal (backslash and quote escaped)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"
