"""Slack mrkdwn's rules for text, shared by the renderers (``blocks``) and the providers' hints.

Slack parses ``&``, ``<`` and ``>`` as control characters (``<!channel>``, ``<@U123>``,
``<https://x|y>``): :func:`escape` stops that, and every mrkdwn text the bot sends goes through
it. Text a user or a provider's server chose must also neither format nor link: :func:`inert`
does that part. ``blocks.text.literal`` is the two together, for text shown on its own; a provider
puts :func:`inert` around each such value it writes into a hint, which stays the bot's own mrkdwn
(its code spans and links work) and is escaped when rendered.
"""

from __future__ import annotations

import re

__all__ = ["WORD_JOINER", "escape", "inert", "unlinked"]

WORD_JOINER = "\u2060"
"""Invisible, and not a character of a host name, a URL scheme, a mention or a channel name."""
_LINK_STARTS = re.compile(r"([.:@#])(?=\S)")
# Slack formats a span between two of these only where each one stands at a word boundary: a
# character between two ASCII letters or digits (snake_case) can neither open nor close one, so it
# stays. Backticks and the full-width forms, which Slack also reads as markup, never stay.
_MARKUP = re.compile(r"(?<![A-Za-z0-9])[*_~]|[*_~](?![A-Za-z0-9])|[`＊＿｀]")
_LOOKALIKES = {"*": "∗", "_": "ˍ", "~": "∼", "`": "ˋ", "＊": "﹡", "＿": "⸏", "｀": "ˋ"}
"""What a markup character that could format is shown as: a character of (nearly) the same
shape that Slack gives no meaning to."""


def escape(text: str) -> str:
    """Escape the bot's own text for mrkdwn so it shows literally: no mentions, no ``<…>`` links,
    no entities; its backticks and asterisks still format.

    ``&`` goes first, so an already escaped ``&lt;`` typed by a user stays visible as typed.
    """
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def inert(text: str) -> str:
    """A value a user or a provider's server chose, made unable to format or link once it is
    part of the bot's mrkdwn, inside a code span or out of it; ``&<>`` are left to :func:`escape`.

    Slack offers no escape for ``*_~```, and a zero-width space beside one *enables* formatting
    (it counts as a word boundary), so each one that could open or close a span (or close the
    code span a hint puts the value in) is shown as its look-alike (``∗ ˍ ∼ ˋ``); one inside a
    word (``prod_kafka``) cannot and stays. Bare URLs, domains, ``@here`` and ``#channel`` are
    broken up by :func:`unlinked`, on top of the ``verbatim`` flag every mrkdwn object of ours
    sets, which only stops Slack's server from turning them into links.
    """
    return unlinked(_MARKUP.sub(lambda m: _LOOKALIKES[m.group(0)], text))


def unlinked(text: str) -> str:
    """``text`` with a word joiner after each ``.``, ``:``, ``@`` and ``#`` that something follows,
    so no URL, domain, e-mail address, mention or channel name in it can be recognised as one."""
    return _LINK_STARTS.sub(r"\1" + WORD_JOINER, text)
