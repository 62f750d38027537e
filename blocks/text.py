"""Text helpers for Slack's mrkdwn: showing text someone else wrote, shortening it, dates and plurals.

Slack parses ``&``, ``<`` and ``>`` in mrkdwn (and in a message's ``text``) as control
characters: ``<!channel>`` pings a channel, ``<@U123>`` mentions a user, ``<https://x|y>`` makes a
link. :func:`escape` stops that, for the bot's own sentences. Text that a user or a provider's
server chose (a connection name, a reason, a database user, an error message) must also neither
format nor link, so it goes through :func:`literal` instead (or :func:`inline`, which shortens it
first); see there for how. A plain_text object never formats, and :func:`unlinked` keeps a URL in
it from becoming a link.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

__all__ = [
    "HEADER_MAX",
    "SECTION_TEXT_MAX",
    "as_utc",
    "credential_age_text",
    "duration_text",
    "escape",
    "inline",
    "literal",
    "literal_chunks",
    "one_line",
    "plural",
    "slack_date",
    "truncate",
    "unlinked",
    "user_mention",
]

SECTION_TEXT_MAX = 3000
"""Characters in a section's text (and our cap for one context element)."""
HEADER_MAX = 150
"""Characters in a header block's text."""


def escape(text: str) -> str:
    """Escape the bot's own text for mrkdwn so it shows literally: no mentions, no ``<…>`` links,
    no entities; its backticks and asterisks still format. Text someone else chose: :func:`literal`.

    ``&`` goes first, so an already escaped ``&lt;`` typed by a user stays visible as typed.
    """
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_WORD_JOINER = "\u2060"
"""Invisible, and not a character of a host name, a URL scheme, a mention or a channel name."""
_LINK_STARTS = re.compile(r"([.:@#])(?=\S)")
# Slack formats a span between two of these only where each one stands at a word boundary: a
# character between two ASCII letters or digits (snake_case) can neither open nor close one, so it
# stays. Backticks and the full-width forms, which Slack also reads as markup, never stay.
_MARKUP = re.compile(r"(?<![A-Za-z0-9])[*_~]|[*_~](?![A-Za-z0-9])|[`＊＿｀]")
_LOOKALIKES = {"*": "∗", "_": "ˍ", "~": "∼", "`": "ˋ", "＊": "﹡", "＿": "⸏", "｀": "ˋ"}
"""What a markup character that could format is shown as: a character of (nearly) the same
shape that Slack gives no meaning to."""


def literal(text: str) -> str:
    """Text a user or a provider's server wrote, for mrkdwn: shown as written, and unable to
    mention, link or format anything.

    :func:`escape` stops mentions and ``<…|…>`` links. Slack offers no escape for ``*_~```, and a
    zero-width space beside one *enables* formatting (it counts as a word boundary), so each one
    that could open or close a span is shown as its look-alike (``∗ ˍ ∼ ˋ``); one inside a
    word (``prod_kafka``) cannot and stays. Bare URLs, domains, ``@here`` and ``#channel`` get a
    word joiner after their ``.``, ``:``, ``@`` or ``#`` (:func:`unlinked`), on top of the
    ``verbatim`` flag every mrkdwn object of ours sets, which only stops Slack's server from
    turning them into links.
    """
    return unlinked(_MARKUP.sub(lambda m: _LOOKALIKES[m.group(0)], escape(text)))


def unlinked(text: str) -> str:
    """``text`` with a word joiner after each ``.``, ``:``, ``@`` and ``#`` that something follows,
    so no URL, domain, e-mail address, mention or channel name in it can be recognised as one."""
    return _LINK_STARTS.sub(r"\1" + _WORD_JOINER, text)


def truncate(text: str, limit: int) -> str:
    """Return ``text`` if it fits in ``limit`` characters, else its start followed by "…".

    Truncate before escaping: cutting escaped text could split an entity such as ``&amp;``.
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    if len(text) <= limit:
        return text
    return text[: limit - 1].rstrip() + "…"


def one_line(text: str, fallback: str = "(no name)") -> str:
    """Collapse runs of whitespace (newlines included) so user text cannot break a layout."""
    collapsed = " ".join(text.split())
    return collapsed or fallback


def inline(text: str, limit: int, fallback: str = "(no name)") -> str:
    """User text for a line of mrkdwn: on one line, shortened to ``limit``, then :func:`literal`."""
    return literal(truncate(one_line(text, fallback), limit))


def literal_chunks(text: str, limit: int) -> list[str]:
    """``text`` through :func:`literal`, cut into pieces of at most ``limit`` characters each.

    Cuts fall between words where possible and never inside an entity, because the measuring is
    done on the shown text but the cutting on the original.
    """
    if limit < len("&amp;"):
        raise ValueError("limit is too small to hold one escaped character")
    pieces: list[str] = []
    current = ""
    for word in text.split(" "):
        candidate = word if not current else current + " " + word
        if len(literal(candidate)) <= limit:
            current = candidate
            continue
        if current:
            pieces.append(literal(current))
            current = ""
        if len(literal(word)) <= limit:
            current = word
            continue
        # A single word longer than the limit (a URL, a token): cut it character by character.
        for char in word:
            if len(literal(current + char)) > limit:
                pieces.append(literal(current))
                current = ""
            current += char
    if current or not pieces:
        pieces.append(literal(current))
    return pieces


def as_utc(dt: datetime) -> datetime:
    """``dt`` in UTC; a naive ``dt`` is taken to be UTC already, as the store writes them."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def slack_date(dt: datetime, fallback_fmt: str = "%Y-%m-%d %H:%M UTC") -> str:
    """A date Slack shows in each reader's own time zone, e.g. "Yesterday at 3:04 PM"; clients that
    cannot render it show the fallback, in UTC (see :func:`as_utc` for a naive ``dt``)."""
    aware = as_utc(dt)
    fallback = escape(aware.strftime(fallback_fmt)).replace("|", "/")
    return f"<!date^{int(aware.timestamp())}^{{date_short_pretty}} at {{time}}|{fallback}>"


def credential_age_text(stored_at: datetime, now: datetime) -> str:
    """How long ago a credential was stored, in whole days: "today", "1 day", "95 days"; a
    ``stored_at`` after ``now`` (clocks a little apart) counts as today."""
    days = (as_utc(now) - as_utc(stored_at)).days
    return "today" if days < 1 else plural(days, "day")


def duration_text(delta: timedelta) -> str:
    """A rough length of time for people: "less than a minute", "5 minutes", "3 hours", "2 days"."""
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 60:
        return "less than a minute"
    if seconds < 3600:
        return plural(seconds // 60, "minute")
    if seconds < 86400:
        return plural(seconds // 3600, "hour")
    return plural(seconds // 86400, "day")


def plural(n: int, word: str, many: str | None = None) -> str:
    """ "1 connection", "0 connections"; pass ``many`` for irregular plurals."""
    form = word if n == 1 else (many if many is not None else word + "s")
    return f"{n} {form}"


_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")


def user_mention(user_id: str) -> str:
    """``<@U…>`` for a Slack user id as Slack sends it; anything else as escaped text, never a mention."""
    return f"<@{user_id}>" if _USER_ID.match(user_id) else literal(truncate(user_id, 40))
