"""``POST /slack/events`` before Bolt: what anyone on the internet can send is read with a bound,
checked for Slack's signature, and parsed, before Bolt sees it.

Bolt's own adapter reads the whole body into memory, decodes and parses it, and only then checks
the signature: an unsigned body of any size, or one that fails to decode, costs memory or an
ERROR with a traceback. Here a body over the limit is refused after at most ``max_body_bytes``
have been read; one without a valid signature gets 401 and a rate-limited WARNING that says why
(never the body); a signed body Bolt could not parse gets 400 and one WARNING.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from urllib.parse import parse_qsl

from slack_bolt.adapter.starlette.async_handler import to_starlette_response
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.request.internals import parse_body
from slack_bolt.response import BoltResponse
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from bot.log_throttle import LogThrottle

__all__ = ["SIGNATURE_MAX_AGE_SECONDS", "SlackRequestGuard"]

logger = logging.getLogger(__name__)

SIGNATURE_MAX_AGE_SECONDS = 300
"""How far a request's timestamp may be from this host's clock (Slack's rule: 5 minutes)."""

_REFUSED = "refused a request to /slack/events: "
_SIGNATURE_HINT = (
    "; if Slack's own requests are refused, SLACK_SIGNING_SECRET is not this app's: copy the "
    "Signing Secret from the app's Basic Information page (api.slack.com/apps) and restart"
)

Dispatch = Callable[[AsyncBoltRequest], Awaitable[BoltResponse]]

_ROUTED_BY: dict[str, tuple[str | int, ...]] = {
    "block_actions": ("actions", 0, "action_id"),
    "block_suggestion": ("action_id",),
    "view_submission": ("view", "callback_id"),
    "view_closed": ("view", "callback_id"),
    "event_callback": ("event", "type"),
    "shortcut": ("callback_id",),
    "message_action": ("callback_id",),
}
"""Where Bolt's router reads each kind of payload, by ``type``, assuming Slack's shapes: a signed
body with something else there would fail inside Bolt (a 500 and a traceback), not be refused."""


class _Gone(Exception):
    """The client went away before its body was read."""


class SlackRequestGuard:
    """The ASGI endpoint of ``POST /slack/events``: hands ``dispatch`` (Bolt's) only a request
    that fits in ``max_body_bytes``, carries a valid Slack signature and parses."""

    def __init__(
        self,
        dispatch: Dispatch,
        *,
        signing_secret: str,
        max_body_bytes: int,
        clock: Callable[[], float] = time.time,
        throttle: LogThrottle | None = None,
    ) -> None:
        self._dispatch = dispatch
        self._secret = signing_secret.encode()
        self._max = max_body_bytes
        self._clock = clock
        self._throttle = throttle or LogThrottle(logger)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        length = headers.get("content-length", "")
        try:
            body = None if length.isdigit() and int(length) > self._max else await self._read(receive)
        except _Gone:
            return
        if body is None:
            self._throttle.warning(
                "too large",
                _REFUSED + "its body is over CONNECTIONS_MAX_BODY_BYTES (%d bytes)",
                self._max,
            )
            await Response(status_code=413)(scope, receive, send)
            return
        unsigned = self._unsigned(headers, body)
        if unsigned is not None:
            self._throttle.warning(unsigned[0], _REFUSED + unsigned[1])
            await Response(status_code=401)(scope, receive, send)
            return
        parsed = _bolt_request(body, headers, scope.get("query_string", b"").decode("latin-1"))
        if isinstance(parsed, str):
            # Signed, so Slack (or someone holding the secret) sent it: worth a line every time.
            logger.warning("%s%s; answered 400", _REFUSED + "a signed body ", parsed)
            await Response(status_code=400)(scope, receive, send)
            return
        answer = await self._dispatch(parsed)
        await to_starlette_response(answer)(scope, receive, send)

    async def _read(self, receive: Receive) -> bytes | None:
        """The body, or None as soon as more than the limit has arrived (the rest is never read)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Gone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _unsigned(self, headers: dict[str, str], body: bytes) -> tuple[str, str] | None:
        """Why the request is not signed by Slack (a throttle key and a log line), or None."""
        timestamp, signature = headers.get("x-slack-request-timestamp"), headers.get("x-slack-signature")
        if not timestamp or not signature or not timestamp.isdigit():
            return (
                "missing headers",
                "it has no X-Slack-Signature and X-Slack-Request-Timestamp (a number) headers, so "
                "Slack did not send it (or a proxy in front of the bot drops them)",
            )
        skew = abs(self._clock() - int(timestamp))
        if skew > SIGNATURE_MAX_AGE_SECONDS:
            return (
                "stale",
                f"its timestamp is {skew:.0f} s away from this host's clock (at most "
                f"{SIGNATURE_MAX_AGE_SECONDS} s is accepted): a replayed request, or this host's "
                "clock is wrong (check its time synchronisation)",
            )
        digest = hmac.new(self._secret, b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256)
        if not hmac.compare_digest(f"v0={digest.hexdigest()}", signature):
            return "bad signature", "its signature does not match" + _SIGNATURE_HINT
        return None


def _bolt_request(body: bytes, headers: Mapping[str, str], query: str) -> AsyncBoltRequest | str:
    """The request as Bolt reads it, or what is wrong with the body (never the body itself)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return "is not UTF-8"
    text = _without_payload_word(text, headers.get("content-type"))
    # Bolt's own parser, so that what passes here is what Bolt will read.
    try:
        parsed = parse_body(text, headers.get("content-type"))
    except RecursionError:
        return "holds JSON nested too deep"
    except ValueError:
        return "holds JSON that does not parse"
    if not isinstance(parsed, dict):
        return "holds JSON that is not an object"
    if not any(key in parsed for key in ("type", "command", "ssl_check")):
        return "is neither a slash command, an interaction (a form with a payload) nor an event"
    route = ("command",) if "command" in parsed else _ROUTED_BY.get(str(parsed.get("type")), ())
    if route and not isinstance(_at(parsed, route), str):
        return "lacks the text field its kind of payload is routed by"
    try:
        return AsyncBoltRequest(body=text, query=query, headers=dict(headers))
    except Exception:
        # Bolt reads ids out of the parsed body assuming Slack's shapes ({"team": 5} fails inside
        # it). Nothing has happened yet, so whatever it trips on is only a malformed request.
        return "holds fields of types Slack never sends"


def _without_payload_word(text: str, content_type: str | None) -> str:
    """A form body Bolt will not mistake for an interaction. Bolt takes any form with the word
    ``payload`` anywhere in it for one and reads ``{}`` when it has no ``payload`` field, which lost
    ``/connections status payload-db``. The signature is already checked, so the body may be
    re-encoded: ``%61`` decodes back to the same ``a``."""
    if content_type == "application/json" or text.startswith("{") or "payload" not in text:
        return text
    if any(name == "payload" for name, _ in parse_qsl(text, keep_blank_values=True)):
        return text
    return text.replace("payload", "p%61yload")


def _at(value: object, path: tuple[str | int, ...]) -> object:
    """``value[path[0]][path[1]]…``, or None where the path does not exist."""
    for step in path:
        if isinstance(step, int):
            value = value[step] if isinstance(value, list) and len(value) > step else None
        else:
            value = value.get(step) if isinstance(value, dict) else None
    return value
