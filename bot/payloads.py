"""What we round-trip through Slack: ``private_metadata``, button values, and the parts of a
payload a listener reads (a form's values, a reason, the workspace).

Slack echoes these back on later requests, so they are treated as untrusted input: parsed
defensively, and never holding a secret (Slack shows them to the client)."""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from slack_bolt.async_app import AsyncBoltContext

from bot import ids
from bot.domain import NAME_MAX_LENGTH, RequestKind
from bot.providers.base import Provider
from bot.redaction import Secret

__all__ = [
    "FormDraft",
    "RotationForm",
    "first_input",
    "form_fits",
    "form_metadata",
    "parse_form_metadata",
    "parse_id",
    "parse_json_object",
    "parse_name",
    "parse_page",
    "parse_rotation_metadata",
    "read_form",
    "read_reason",
    "team_of",
    "try_again_value",
]


@dataclass(frozen=True)
class FormDraft:
    """The non-secret part of a form, kept so that "Try again" does not make the user retype it."""

    provider_key: str
    name: str = ""
    config: dict[str, str] = field(default_factory=dict)

    def encode(self) -> str:
        return json.dumps({"p": self.provider_key, "n": self.name, "c": self.config}, separators=(",", ":"))

    @classmethod
    def decode(cls, text: str) -> FormDraft | None:
        data = _parse_json(text)
        if not isinstance(data, dict) or not isinstance(data.get("p"), str):
            return None
        name = data.get("n")
        raw_config = data.get("c")
        config = (
            {str(k): v for k, v in raw_config.items() if isinstance(v, str)}
            if isinstance(raw_config, dict)
            else {}
        )
        return cls(provider_key=data["p"], name=name if isinstance(name, str) else "", config=config)

    def initial_values(self, provider: Provider) -> dict[str, str]:
        """Pre-fill values for the form: the name and the provider's non-secret fields only."""
        allowed = {f.name for f in provider.fields if not f.secret}
        values = {k: v for k, v in self.config.items() if k in allowed}
        if self.name:
            values[ids.BLOCK_NAME] = self.name
        return values


def try_again_value(kind: RequestKind, provider_key: str, name: str, config: Mapping[str, str]) -> str | None:
    """What a Try again button carries: a new connection's form comes back with its non-secret
    fields; new credentials are asked for from scratch (no button value)."""
    return FormDraft(provider_key, name, dict(config)).encode() if kind is RequestKind.CONNECTION else None


_MAX_ROUND_TRIP = 3000
"""Slack caps private_metadata at 3000 characters and a button value at 2000; anything longer was
not written by us."""


def _parse_json(text: object) -> Any:
    if not isinstance(text, str) or len(text) > _MAX_ROUND_TRIP:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # a deeply nested value is tampering, not a crash
        return None


def parse_json_object(text: object) -> dict[str, Any]:
    """A JSON object we round-tripped through Slack, or {} when it is missing or tampered with."""
    data = _parse_json(text)
    return data if isinstance(data, dict) else {}


_ID_MAX = 36
"""Our ids are UUIDs in their 36-character text form."""


def parse_id(value: object) -> str | None:
    """An id as we write them into button values and private_metadata, or None for anything that
    cannot be one (too long, blanks, control or non-ASCII characters)."""
    if not isinstance(value, str) or not 0 < len(value) <= _ID_MAX:
        return None
    return value if value.isascii() and value.isprintable() and " " not in value else None


@dataclass(frozen=True)
class RotationForm:
    """What a rotation form carries in its private_metadata: the connection, its provider, and
    its name (only shown, never looked up)."""

    connection_id: str
    provider_key: str
    name: str


def parse_rotation_metadata(text: object) -> RotationForm | None:
    """A rotation form's private_metadata, or None when it is not one we wrote; the name comes
    back on one line, without control characters, at most as long as a stored name."""
    data = parse_json_object(text)
    connection_id = parse_id(data.get("connection"))
    provider_key, name = data.get("provider"), data.get("name")
    if connection_id is None or not isinstance(provider_key, str):
        return None
    shown = "".join(ch for ch in name if unicodedata.category(ch) != "Cc") if isinstance(name, str) else ""
    return RotationForm(connection_id, provider_key, " ".join(shown.split())[:NAME_MAX_LENGTH])


def parse_page(text: str) -> int:
    """A page number typed or sent back by a button; anything else is page 1."""
    text = text.strip()
    if text.isascii() and text.isdigit() and len(text) <= 6:
        return max(1, int(text))
    return 1


def form_metadata(provider: Provider) -> str:
    """The private_metadata of a "Create <provider>" form."""
    return json.dumps({"provider": provider.key})


def parse_form_metadata(text: str | None) -> str | None:
    """The provider key stored in a form's private_metadata, or None if it is unusable."""
    data = _parse_json(text or "")
    key = data.get("provider") if isinstance(data, dict) else None
    return key if isinstance(key, str) else None


def _input_blocks(view: Mapping[str, Any]) -> list[str]:
    """The block_ids of the view's inputs, in order, as Slack echoes the view back."""
    blocks = view.get("blocks")
    return [
        str(block["block_id"])
        for block in (blocks if isinstance(blocks, list) else [])
        if isinstance(block, Mapping) and block.get("type") == "input" and block.get("block_id")
    ]


def first_input(view: Mapping[str, Any]) -> str:
    """Where an error about the whole form goes: Slack refuses a submission's errors under
    anything but an input of the submitted view, and then shows the user only its own failure."""
    found = _input_blocks(view)
    return found[0] if found else ids.BLOCK_NAME


def form_fits(view: Mapping[str, Any], provider: Provider) -> bool:
    """Whether the view holds an input for each of the provider's fields: false when the
    private_metadata names another provider than the one the form was built for."""
    return {f.name for f in provider.fields} <= set(_input_blocks(view))


def read_form(view: Mapping[str, Any], provider: Provider) -> tuple[str, dict[str, str | Secret]]:
    """The submitted name and field values; secret fields are wrapped at once."""
    state = view.get("state", {}).get("values", {})

    def text(block_id: str) -> str:
        value = state.get(block_id, {}).get(ids.INPUT_ACTION, {}).get("value")
        return value if isinstance(value, str) else ""

    values: dict[str, str | Secret] = {}
    for f in provider.fields:
        raw = text(f.name)
        values[f.name] = Secret(raw) if f.secret else raw
    return text(ids.BLOCK_NAME), values


def read_reason(view: Mapping[str, Any]) -> str:
    """The reason typed into a reject modal, trimmed, without control characters other than
    line breaks and tabs: they do not show, and PostgreSQL cannot store NUL at all."""
    state = view.get("state", {}).get("values", {})
    value = state.get(ids.BLOCK_REASON, {}).get(ids.INPUT_ACTION, {}).get("value")
    text = value if isinstance(value, str) else ""
    return "".join(ch for ch in text if ch.isspace() or unicodedata.category(ch) != "Cc").strip()


def team_of(context: AsyncBoltContext, body: Mapping[str, Any]) -> str:
    """The workspace a request comes from: Bolt's context, else the payload's team or user."""
    team = (
        context.team_id
        or body.get("team_id")
        or (body.get("team") or {}).get("id")
        or (body.get("user") or {}).get("team_id")
    )
    if not team:
        raise ValueError("a Slack request without a team id")
    return str(team)


_QUOTES = {'"': '"', "'": "'", "“": "”", "‘": "’", "`": "`"}


def parse_name(argument: str) -> str:
    """The connection name typed after a sub-command: Slack's escaping of ``&``, ``<`` and ``>`` in a
    command's text undone, and one pair of surrounding quotes dropped (people quote names with
    spaces out of habit)."""
    name = argument.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&").strip()
    if len(name) >= 2 and _QUOTES.get(name[0]) == name[-1]:
        name = name[1:-1].strip()
    return name
