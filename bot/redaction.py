"""Keeping secret values out of everything the bot prints.

Two tools, used together:

* :class:`Secret` wraps a plain-text value so that ``repr``/``str``/f-strings, tracebacks and
  pickling never show it. The value is reachable only through :meth:`Secret.reveal`, which makes
  every place that handles plain text easy to find with grep.
* :class:`RedactingFilter` is a logging filter that masks, in every record, the values of all
  ``Secret`` objects alive in the process (and their URL-encoded, JSON-escaped and Basic-auth
  forms), plus the raw request bodies that Bolt logs when a signature check fails.

A value of any length is masked. One shorter than :data:`SHORT_SECRET` characters is masked
wherever it stands as a token of its own, not where it is part of a longer word: a 3-letter
password is masked in ``password=abc`` or ``"abc"`` but leaves ``abcdef`` and ``fabc`` alone, so
that it does not punch holes in every word of every log line while its holder lives. Longer values
are masked wherever they occur, inside words too.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import re
import threading
import weakref
from collections import Counter, deque
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

__all__ = ["MASK", "SHORT_SECRET", "RedactingFilter", "Secret", "install_redaction", "mask_hint", "redact"]

MASK = "[redacted]"
SHORT_SECRET = 6
"""Values shorter than this are masked as whole tokens only (see the module docstring)."""


class _Registry:
    """Counts the live Secret objects per value, so a value stays masked while any holder lives."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._released: deque[str] = deque()

    def add(self, value: str) -> None:
        if value:
            with self._lock:
                self._settle()
                self._counts[value] += 1

    def discard(self, value: str) -> None:
        # A finalizer: the garbage collector may run it in a thread that holds the lock already
        # (any allocation can collect), so it only queues; appending to a deque takes no lock.
        self._released.append(value)

    def values(self) -> list[str]:
        with self._lock:
            self._settle()
            # Longest first, so a value that contains another is masked whole.
            return sorted(self._counts, key=len, reverse=True)

    def _settle(self) -> None:
        """Apply the queued discards (the lock held)."""
        while self._released:
            value = self._released.popleft()
            self._counts[value] -= 1
            if self._counts[value] <= 0:
                del self._counts[value]


_registry = _Registry()


class Secret:
    """A sensitive string. Its value never appears in ``repr``, ``str`` or a pickle."""

    __slots__ = ("__weakref__", "_value")

    def __init__(self, value: str) -> None:
        self._value = value
        _registry.add(value)
        weakref.finalize(self, _registry.discard, value)

    def reveal(self) -> str:
        """Return the plain text. Call it only where the value leaves for a provider or the cipher."""
        return self._value

    def masked(self) -> str:
        """The display form: first 4 and last 4 characters, or nothing at all for short values."""
        return mask_hint(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __len__(self) -> int:
        return len(self._value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __format__(self, format_spec: str) -> str:
        return repr(self)

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a Secret cannot be pickled")


def mask_hint(value: str) -> str:
    """``ABCD…89AB`` for a value long enough that 8 shown characters leave most of it hidden."""
    if len(value) < 12:
        return "…"
    return f"{value[:4]}…{value[-4:]}"


def _encoded_forms(value: str) -> Iterable[str]:
    yield value
    yield quote(value, safe="")
    yield quote_plus(value, safe="")
    yield json.dumps(value)[1:-1]
    yield json.dumps(json.dumps(value))[1:-1]
    yield quote(json.dumps(value)[1:-1], safe="")


_BOLT_BODY = re.compile(r"(body: ).*", re.DOTALL)
_BASIC_AUTH = re.compile(r"(?i)(basic\s+)([A-Za-z0-9+/]{8,}={0,2})")


def _mask_basic_auth(text: str, values: list[str]) -> str:
    """Mask a Basic auth header whose base64 payload ("user:password") holds a live secret."""

    def replace(match: re.Match[str]) -> str:
        try:
            decoded = base64.b64decode(match.group(2), validate=True).decode("utf-8", "replace")
        except ValueError:
            return match.group(0)
        parts = decoded.split(":", 1)  # a short value counts as the user or the password, whole
        if any(value in (decoded if len(value) >= SHORT_SECRET else parts) for value in values):
            return match.group(1) + MASK
        return match.group(0)

    return _BASIC_AUTH.sub(replace, text)


def redact(text: str, extra: Iterable[str] = ()) -> str:
    """Mask every registered secret value (and ``extra`` values) in ``text``."""
    values = _registry.values()
    values.extend(v for v in extra if v)
    if not values:
        return text
    text = _mask_basic_auth(text, values)
    for value in values:
        for form in _encoded_forms(value):
            if form and form in text:
                text = text.replace(form, MASK) if len(form) >= SHORT_SECRET else _mask_tokens(text, form)
    return text


def _mask_tokens(text: str, form: str) -> str:
    """Mask ``form`` where it is not glued to a word character that continues it on either side.

    A plain scan rather than a regular expression: ``re`` would keep the secret in its pattern
    cache after its holder is gone."""
    pieces: list[str] = []
    done = 0
    at = text.find(form)
    while at >= 0:
        end = at + len(form)
        if _continues(text, at - 1, form[0]) or _continues(text, end, form[-1]):
            at = text.find(form, at + 1)
            continue
        pieces += (text[done:at], MASK)
        done = end
        at = text.find(form, end)
    return "".join(pieces) + text[done:]


def _continues(text: str, index: int, edge: str) -> bool:
    """Whether ``text[index]`` and the value's ``edge`` character are both word characters, i.e.
    the value is only part of a longer word there."""
    return 0 <= index < len(text) and _wordy(text[index]) and _wordy(edge)


def _wordy(char: str) -> bool:
    return char.isalnum() or char == "_"


class RedactingFilter(logging.Filter):
    """Masks secrets in a record's message and traceback before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record must not stop logging
            message = str(record.msg)
        if record.name.startswith("slack_bolt") or record.name.startswith("connections_bot.slack"):
            # Bolt prints whole raw request bodies (modal state included) on signature failures.
            message = _BOLT_BODY.sub(r"\1" + MASK, message)
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install_redaction(handler: logging.Handler) -> None:
    """Attach the filter to a handler (filters on handlers see records from every logger)."""
    if not any(isinstance(f, RedactingFilter) for f in handler.filters):
        handler.addFilter(RedactingFilter())
