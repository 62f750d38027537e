"""Where a connection's secret lives in a store: ``CONNECTIONS_SECRET_PATH`` rendered for it.

The template may use ``{team}`` (the Slack workspace id), ``{provider}`` (its key),
``{name}`` (the connection's name, slugged) and ``{id}`` (the connection's id). It must hold
``{team}``, so that workspaces of one organisation never share a path, and ``{name}`` or ``{id}``,
so that connections do not. What it renders to uses only characters that both AWS Secrets Manager
names and Vault paths accept.
"""

from __future__ import annotations

import re
import string
import unicodedata
from dataclasses import dataclass
from typing import Final

__all__ = ["DEFAULT_SECRET_PATH", "PATH_MAX_LENGTH", "PathTemplate", "slug"]

DEFAULT_SECRET_PATH: Final = "connections/{team}/{provider}/{name}"
PATH_MAX_LENGTH: Final = 512
"""AWS Secrets Manager's longest secret name; Vault allows more."""
SLUG_MAX_LENGTH: Final = 64

_PLACEHOLDERS: Final = frozenset({"team", "provider", "name", "id"})
_LITERAL: Final = re.compile(r"[A-Za-z0-9/_+=.@-]*")
_NOT_SLUG: Final = re.compile(r"[^a-z0-9._]+")


def slug(name: str) -> str:
    """``name`` as one path segment: accents dropped, lower case, runs of anything else than
    letters, digits, ``.`` and ``_`` turned into one ``-`` ("Prod Warehouse (EU)" →
    ``prod-warehouse-eu``). Empty when nothing is left (a name of emoji only)."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    text = _NOT_SLUG.sub("-", ascii_name.casefold()).strip("-.")
    return text[:SLUG_MAX_LENGTH].rstrip("-.")


@dataclass(frozen=True)
class PathTemplate:
    """A checked ``CONNECTIONS_SECRET_PATH``."""

    template: str = DEFAULT_SECRET_PATH

    def __post_init__(self) -> None:
        names: set[str] = set()
        for literal, placeholder, spec, conversion in string.Formatter().parse(self.template):
            if not _LITERAL.fullmatch(literal):
                raise ValueError(
                    "may hold only letters, digits, / _ + = . @ - and the placeholders "
                    "{team} {provider} {name} {id}"
                )
            if placeholder is None:
                continue
            if placeholder not in _PLACEHOLDERS or spec or conversion:
                raise ValueError(
                    f"has an unknown placeholder {{{placeholder}}}: use {{team}} {{provider}} {{name}} {{id}}"
                )
            names.add(placeholder)
        if "team" not in names or not names & {"name", "id"}:
            raise ValueError(
                "must hold {team} and one of {name} or {id}, so that no two connections share a path"
            )
        if self.template.startswith("/") or "//" in self.template or self.template.endswith("/"):
            raise ValueError("must not start or end with / or hold //")

    def render(self, *, team: str, provider: str, name: str, connection_id: str) -> str:
        """The path of one connection's secret (its id stands in for a name that slugs to nothing)."""
        path = self.template.format(
            team=team, provider=provider, name=slug(name) or connection_id, id=connection_id
        )
        if len(path) > PATH_MAX_LENGTH:
            raise ValueError(f"renders a path longer than {PATH_MAX_LENGTH} characters")
        return path
