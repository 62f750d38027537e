"""Reading what a user sees in Block Kit: every text of a view, a message or a list of blocks.

Texts are the ``text`` of text objects and of a message's notification fallback, plus the
``initial_value`` an input shows pre-filled; ids, button values and ``private_metadata`` travel
with the payload but are never shown, so they are left out (a test can then assert a secret is not
*visible* separately from asserting it is not *sent*).
"""

from __future__ import annotations

from typing import Any

__all__ = ["visible_text", "visible_texts"]

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
