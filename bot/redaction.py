"""Keeping secret values out of everything the bot prints.

Two tools, used together:

* :class:`Secret` wraps a plain-text value so that ``repr``/``str``/f-strings, tracebacks and
  pickling never show it. The value is reachable only through :meth:`Secret.reveal`, which makes
  every place that handles plain text easy to find with grep.
* :class:`RedactingFilter` is a logging filter that masks, in every record, the values of all
  ``Secret`` objects alive in the process (and their URL-encoded, JSON-escaped and Basic-auth
  forms), plus the raw request bodies that Bolt logs when a signature check fails.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import re
import threading
import weakref
from collections import Counter
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

__all__ = ["MASK", "RedactingFilter", "Secret", "install_redaction", "mask_hint", "redact"]

MASK = "[redacted]"
_MIN_REGISTERED_LENGTH = 6  # shorter values would mask ordinary words in log lines


class _Registry:
    """Counts the live Secret objects per value, so a value stays masked while any holder lives."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, value: str) -> None:
        if len(value) >= _MIN_REGISTERED_LENGTH:
            with self._lock:
                self._counts[value] += 1

    def discard(self, value: str) -> None:
        with self._lock:
            self._counts[value] -= 1
            if self._counts[value] <= 0:
                del self._counts[value]

    def values(self) -> list[str]:
        with self._lock:
            # Longest first, so a value that contains another is masked whole.
            return sorted(self._counts, key=len, reverse=True)


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
        if any(value in decoded for value in values):
            return match.group(1) + MASK
        return match.group(0)

    return _BASIC_AUTH.sub(replace, text)


def redact(text: str, extra: Iterable[str] = ()) -> str:
    """Mask every registered secret value (and ``extra`` values) in ``text``."""
    values = _registry.values()
    values.extend(v for v in extra if len(v) >= _MIN_REGISTERED_LENGTH)
    if not values:
        return text
    text = _mask_basic_auth(text, values)
    for value in values:
        for form in _encoded_forms(value):
            if form and form in text:
                text = text.replace(form, MASK)
    return text


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
