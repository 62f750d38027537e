"""Reading what a user sees in Block Kit: every text of a view, a message or a list of blocks.

Texts are the ``text`` of text objects and of a message's notification fallback, plus the
``initial_value`` an input shows pre-filled; ids, button values and ``private_metadata`` travel
with the payload but are never shown, so they are left out (a test can then assert a secret is not
*visible* separately from asserting it is not *sent*).
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Sequence
from typing import Any

from bot.markup import inert

__all__ = [
    "HOSTILE_HINT",
    "HOSTILE_HINT_SHOWN",
    "HOSTILE_MARKUP",
    "HOSTILE_VALUE",
    "as_read",
    "fold",
    "hint_problems",
    "markup_problems",
    "user_formatting_or_links",
    "visible_text",
    "visible_texts",
]

_SHOWN = frozenset({"text", "initial_value"})
_HIDDEN = frozenset({"action_id", "block_id", "callback_id", "external_id", "private_metadata", "value"})


def visible_texts(node: Any) -> list[str]:
    """Every text a user can read in ``node`` (a view, a message, blocks, or ``None``), in order."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key in _SHOWN and isinstance(item, str):
                    found.append(item)
                elif key not in _HIDDEN:
                    walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(node)
    return found


def visible_text(node: Any) -> str:
    """:func:`visible_texts` joined by newlines, for ``in`` checks and exact comparisons."""
    return "\n".join(visible_texts(node))


HOSTILE_MARKUP = "*bold* _it_ ~gone~ `code` https://evil.example"
"""Text that would format or link in Slack if it were shown as typed, short enough to fit in a
name; tests put it wherever a user or a provider's server chooses text, and
:func:`user_formatting_or_links` finds what got through (``www.evil.example``,
``x@evil.example``, ``@here`` and ``#general`` too)."""

_FORMATTED = re.compile(r"(?<![A-Za-z0-9])([*_~`])(?:bold|it|gone|code)\1(?![A-Za-z0-9])")
_LINKED = re.compile(r"evil\.example|:/+evil|(?<![\w\u2060])[@#](?:here|general)\b")
_FOLDED = str.maketrans(
    {"∗": "*", "﹡": "*", "＊": "*", "ˍ": "_", "⸏": "_", "＿": "_", "∼": "~", "ˋ": "`", "｀": "`"}
)
WORD_JOINER = "\u2060"


def user_formatting_or_links(text: str) -> list[str]:
    """What :data:`HOSTILE_MARKUP` became markup in ``text`` (a text the bot sent): a ``*bold*``,
    ``_it_``, ``~gone~`` or `` `code` `` span at word boundaries, where Slack formats one, and a
    URL, domain, e-mail address, ``@here`` or ``#general`` with nothing breaking it up."""
    return [m.group(0) for m in _FORMATTED.finditer(text)] + [m.group(0) for m in _LINKED.finditer(text)]


HOSTILE_VALUE = f"x` <!channel> {HOSTILE_MARKUP}"
"""A value a user or a server chose (a Snowflake user, a role, a request id) that, written into a
hint's code span as it is, would close the span, then mention, format and link."""


HOSTILE_HINT = (
    f"Run `ALTER USER {inert(HOSTILE_VALUE)} SET DISABLED = FALSE`, or see https://status.confluent.cloud."
)
"""A hint as a provider writes one: its own code span and link, and :data:`HOSTILE_VALUE` made
inert in the span."""
HOSTILE_HINT_SHOWN = re.compile(
    r"Run `ALTER USER x[^`<>]* SET DISABLED = FALSE`, or see https://status\.confluent\.cloud\."
)
""":data:`HOSTILE_HINT` as it must show: its code span whole, closed where the bot closes it, and
its link unbroken (together with :func:`markup_problems`: the value inside neither formats nor
links)."""


def hint_problems(build: Callable[[str], Sequence[str]]) -> list[str]:
    """What :data:`HOSTILE_VALUE` got through in the hints ``build`` writes with it (as a provider
    stores them; the renderer escapes ``&<>``), compared with those it writes with a plain value:
    a backtick of its own (it closed or opened a code span), formatting or a link
    (:func:`user_formatting_or_links`), or the value no longer reading as written."""
    found, holding = [], 0
    for hint, tame in zip(build(HOSTILE_VALUE), build("bob"), strict=True):
        if hint == tame:
            continue
        holding += 1
        found += user_formatting_or_links(hint)
        if hint.count("`") != tame.count("`"):
            found.append(f"the value changed the hint's code spans: {hint[:80]!r}")
        if fold(HOSTILE_VALUE) not in as_read(hint):
            found.append(f"the value does not read as written: {hint[:80]!r}")
    return found if holding else ["no hint holds the value"]


def markup_problems(node: Any) -> list[str]:
    """Every mrkdwn object in ``node`` that is not ``verbatim`` (Slack would turn bare URLs and
    channel names in it into links), and what :func:`user_formatting_or_links` finds in any text
    Slack renders (only links in plain_text; nothing in an input's ``initial_value``, which shows
    as typed)."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if value.get("type") == "mrkdwn" and value.get("verbatim") is not True:
                found.append(f"mrkdwn without verbatim: {str(value.get('text'))[:60]!r}")
            for key, item in value.items():
                if key == "text" and isinstance(item, str):  # plain_text never formats, but may link
                    plain = value.get("type") == "plain_text"
                    found.extend(_LINKED.findall(item) if plain else user_formatting_or_links(item))
                elif key not in _HIDDEN:
                    walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(node)
    return found


def fold(text: str) -> str:
    """``text`` with each look-alike of a markup character read as that character."""
    return text.translate(_FOLDED)


def as_read(shown: str) -> str:
    """What a reader takes literal mrkdwn text for: entities decoded, word joiners unseen,
    look-alikes read as the characters they stand for (compare with :func:`fold` of the input)."""
    return fold(html.unescape(shown).replace(WORD_JOINER, ""))
