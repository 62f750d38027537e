"""Text helpers for Slack's mrkdwn: showing text someone else wrote, shortening it, dates and plurals.

Slack parses ``&``, ``<`` and ``>`` in mrkdwn (and in a message's ``text``) as control
characters: ``<!channel>`` pings a channel, ``<@U123>`` mentions a user, ``<https://x|y>`` makes a
link. :func:`escape` stops that, for the bot's own sentences (a provider's hints among them, whose
values the provider made :func:`bot.markup.inert`). Text that a user or a provider's server chose
(a connection name, a reason, a database user, an error message) must also neither format nor
link, so it goes through :func:`literal` instead (or :func:`inline`, which shortens it first); the
rules are in :mod:`bot.markup`. A plain_text object never formats, and :func:`unlinked` keeps a
URL in it from becoming a link.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from bot.markup import escape, inert, unlinked

__all__ = [
    "HEADER_MAX",
    "SECTION_TEXT_MAX",
    "as_utc",
    "chunks",
    "credential_age_text",
    "duration_text",
    "escape",
    "inline",
    "literal",
    "one_line",
    "own_line",
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


def literal(text: str) -> str:
    """Text a user or a provider's server wrote, for mrkdwn: shown as written, and unable to
    mention, link or format anything (:func:`bot.markup.escape` of :func:`bot.markup.inert`)."""
    return escape(inert(text))


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


def own_line(text: str, limit: int) -> str:
    """The bot's own mrkdwn sentence (a provider's hint) on one line, shortened to ``limit``, then
    :func:`escape`: its code spans and links still work, and one the cut left open is closed."""
    shown = truncate(one_line(text, ""), limit)
    return escape(shown + "`" if shown.count("`") % 2 else shown)


def chunks(text: str, limit: int, shown: Callable[[str], str] = literal) -> list[str]:
    """``text`` as ``shown`` renders it (:func:`literal`; :func:`escape` for the bot's own
    mrkdwn), cut into pieces of at most ``limit`` characters each.

    Cuts fall between words where possible and never inside an entity, because the measuring is
    done on the shown text but the cutting on the original.
    """
    if limit < len("&amp;"):
        raise ValueError("limit is too small to hold one escaped character")
    pieces: list[str] = []
    current = ""
    for word in text.split(" "):
        candidate = word if not current else current + " " + word
        if len(shown(candidate)) <= limit:
            current = candidate
            continue
        if current:
            pieces.append(shown(current))
            current = ""
        if len(shown(word)) <= limit:
            current = word
            continue
        # A single word longer than the limit (a URL, a token): cut it character by character.
        for char in word:
            if len(shown(current + char)) > limit:
                pieces.append(shown(current))
                current = ""
            current += char
    if current or not pieces:
        pieces.append(shown(current))
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
