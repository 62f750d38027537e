"""A fake Slack Socket Mode server: the WebSocket end of ``apps.connections.open``.

Serve it on loopback (``with socket_mode.serve() as url``) and hand ``url`` to the fake Web API
(``FakeSlack.socket_mode_url``), which answers ``apps.connections.open`` with it. Then it plays Slack's
side of the socket the way Slack's Socket Mode documentation describes:

* on connect it sends ``{"type": "hello", "num_connections", "debug_info", "connection_info"}``;
* ``send_envelope`` delivers ``{"envelope_id", "type", "payload", "accepts_response_payload"}`` to one
  open connection (Slack picks one per envelope; the fake picks the newest);
* the app acknowledges with ``{"envelope_id", "payload"?}``; ``wait_for_ack`` returns that ack;
* ``disconnect`` sends ``{"type": "disconnect", "reason"}``, after which a client reconnects.

Every text frame a client sends is recorded (``received``), and every connection is counted
(``connections``), so tests can check reconnects. The server is aiohttp's, in a daemon thread with its
own event loop, on port 0; it answers pings itself, which slack_sdk's clients use as a liveness check.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import WSCloseCode, WSMsgType, web

from tests.support.slack_requests import API_APP_ID

__all__ = ["Ack", "FakeSocketMode", "Received"]

T = TypeVar("T")

ENVELOPE_TYPES = ("slash_commands", "interactive", "events_api")
# Interactions whose ack can carry an answer (a modal's response_action, options); Slack sets
# accepts_response_payload for these and for slash commands, not for clicks or events.
_INTERACTIONS_WITH_ANSWERS = ("view_submission", "block_suggestion")
_SEND_TIMEOUT = 5.0


@dataclass(frozen=True)
class Received:
    """One text frame a client sent; ``data`` is its JSON object, or ``None`` if it was not one."""

    connection: int
    text: str
    data: dict[str, Any] | None


@dataclass(frozen=True)
class Ack:
    """A client's acknowledgement of an envelope; ``payload`` is the answer it carried, if any."""

    envelope_id: str
    payload: dict[str, Any] | None
    connection: int


@dataclass
class _Connection:
    number: int
    socket: web.WebSocketResponse


class FakeSocketMode:
    """The fake server; ``app_id`` is what ``hello`` names in ``connection_info``."""

    def __init__(self, *, app_id: str = API_APP_ID, host: str = "127.0.0.1") -> None:
        self.app_id = app_id
        self.host = host
        self.url: str | None = None
        self._ticket = secrets.token_urlsafe(24)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._open: list[_Connection] = []
        self._connections = 0
        self._received: list[Received] = []
        self._sent: list[dict[str, Any]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- serving -------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def serve(self, startup_timeout: float = 10.0) -> Iterator[str]:
        """Serve on loopback; yields (and sets ``url`` to) e.g. ``ws://127.0.0.1:5555/link/?ticket=…``."""
        loop = asyncio.new_event_loop()
        started = threading.Event()
        failure: list[BaseException] = []
        holder: dict[str, Any] = {}

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                holder["runner"], holder["port"] = loop.run_until_complete(self._start())
            except BaseException as exc:
                failure.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            loop.run_forever()
            try:
                loop.run_until_complete(self._stop(holder["runner"]))
            finally:
                loop.close()

        thread = threading.Thread(target=run, name=f"socket-mode-{id(self):x}", daemon=True)
        thread.start()
        if not started.wait(startup_timeout) or failure:
            cause = failure[0] if failure else None
            raise RuntimeError(f"the Socket Mode server did not start ({cause!r})") from cause
        self._loop = loop
        self.url = f"ws://{self.host}:{holder['port']}/link/?ticket={self._ticket}&app_id={self.app_id}"
        try:
            yield self.url
        finally:
            self.url = None
            self._loop = None
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10.0)

    async def _start(self) -> tuple[web.AppRunner, int]:
        app = web.Application()
        app.router.add_get("/link/", self._link)
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, self.host, 0).start()
        return runner, int(runner.addresses[0][1])

    async def _stop(self, runner: web.AppRunner) -> None:
        with self._lock:
            sockets = [c.socket for c in self._open]
        for ws in sockets:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(code=WSCloseCode.GOING_AWAY), 2.0)
        await runner.cleanup()

    # -- what tests read -----------------------------------------------------------------------------

    @property
    def connections(self) -> int:
        """How many WebSocket connections clients opened so far (reconnects included)."""
        with self._lock:
            return self._connections

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._open)

    @property
    def received(self) -> list[Received]:
        """Every text frame clients sent, oldest first."""
        with self._lock:
            return list(self._received)

    @property
    def sent(self) -> list[dict[str, Any]]:
        """Every message the fake sent (hello, envelopes, disconnects), oldest first."""
        with self._lock:
            return [dict(m) for m in self._sent]

    def acks(self) -> list[Ack]:
        """Every acknowledgement received, oldest first."""
        return [ack for r in self.received if (ack := _ack_of(r)) is not None]

    def wait_for_connection(self, count: int = 1, timeout: float = 10.0) -> int:
        """Wait until ``count`` connections were opened in all (reconnects included) and one is open
        now; return how many were opened."""
        return self._wait(
            lambda: self._connections if self._connections >= count and self._open else None,
            timeout,
            f"Socket Mode connection number {count}",
        )

    def wait_for_no_connection(self, timeout: float = 10.0) -> int:
        """Wait until every connection is closed; return how many were opened in all."""
        return self._wait(
            lambda: None if self._open else self._connections, timeout, "every connection to close"
        )

    def wait_for_ack(self, envelope_id: str, timeout: float = 5.0) -> Ack:
        """Wait for the client's ack of ``envelope_id``; raise ``AssertionError`` if none arrives."""

        def found() -> Ack | None:
            return next(
                (a for r in self._received if (a := _ack_of(r)) and a.envelope_id == envelope_id), None
            )

        return self._wait(found, timeout, f"the ack of envelope {envelope_id}")

    # -- what tests do -------------------------------------------------------------------------------

    def send_envelope(
        self,
        type: str,
        payload: dict[str, Any],
        *,
        accepts_response_payload: bool | None = None,
        retry_attempt: int = 0,
        retry_reason: str = "",
        envelope_id: str | None = None,
    ) -> str:
        """Deliver ``payload`` in an envelope of ``type`` to the newest open connection; return its id.

        ``accepts_response_payload`` defaults to what Slack sets for the payload: true for slash
        commands and for interactions that can be answered in the ack (view_submission,
        block_suggestion), false otherwise. Events carry ``retry_attempt``/``retry_reason``.
        """
        if type not in ENVELOPE_TYPES:
            raise ValueError(f"Slack sends envelopes of type {ENVELOPE_TYPES}, not {type!r}")
        if accepts_response_payload is None:
            accepts_response_payload = type == "slash_commands" or (
                type == "interactive" and payload.get("type") in _INTERACTIONS_WITH_ANSWERS
            )
        envelope_id = envelope_id or str(uuid.uuid4())
        envelope: dict[str, Any] = {
            "envelope_id": envelope_id,
            "type": type,
            "payload": payload,
            "accepts_response_payload": accepts_response_payload,
        }
        if type == "events_api":
            envelope.update(retry_attempt=retry_attempt, retry_reason=retry_reason)
        self._send_to_newest(envelope)
        return envelope_id

    def disconnect(self, reason: str = "refresh_requested") -> None:
        """Tell the newest connection to reconnect, as Slack does before recycling a socket."""
        self._send_to_newest({"type": "disconnect", "reason": reason, "debug_info": self._debug_info()})

    # -- the WebSocket end ---------------------------------------------------------------------------

    async def _link(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("ticket") != self._ticket:
            return web.Response(status=401, text="invalid ticket")
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        with self._lock:
            self._connections += 1
            number = self._connections
            open_now = len(self._open) + 1
        hello = {
            "type": "hello",
            "num_connections": open_now,
            "debug_info": self._debug_info(),
            "connection_info": {"app_id": self.app_id},
        }
        await ws.send_str(json.dumps(hello))
        connection = _Connection(number, ws)
        with self._lock:
            self._sent.append(hello)
            # Only after hello: Slack sends nothing else before it.
            self._open.append(connection)
            self._changed.notify_all()
        try:
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    continue
                text = str(message.data)
                with self._lock:
                    self._received.append(Received(number, text, _json_object(text)))
                    self._changed.notify_all()
        finally:
            with self._lock:
                self._open = [c for c in self._open if c is not connection]
                self._changed.notify_all()
        return ws

    def _send_to_newest(self, message: dict[str, Any]) -> None:
        loop = self._loop
        if loop is None:
            raise RuntimeError("the fake is not being served; use `with socket_mode.serve():`")
        with self._lock:
            if not self._open:
                raise AssertionError(f"no open Socket Mode connection (opened so far: {self._connections})")
            ws = self._open[-1].socket
            self._sent.append(message)
        asyncio.run_coroutine_threadsafe(ws.send_str(json.dumps(message)), loop).result(_SEND_TIMEOUT)

    def _debug_info(self) -> dict[str, Any]:
        return {"host": "applink-fake-1", "build_number": 1, "approximate_connection_time": 18060}

    def _wait(self, found: Callable[[], T | None], timeout: float, what: str) -> T:
        with self._changed:
            result = found()
            if result is None:
                self._changed.wait_for(lambda: found() is not None, timeout)
                result = found()
            if result is None:
                raise AssertionError(
                    f"timed out after {timeout} s waiting for {what}; connections opened: "
                    f"{self._connections}, open: {len(self._open)}, received: "
                    f"{[r.text[:120] for r in self._received]}"
                )
            return result


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _ack_of(received: Received) -> Ack | None:
    data = received.data
    if data is None or not isinstance(data.get("envelope_id"), str):
        return None
    payload = data.get("payload")
    return Ack(data["envelope_id"], payload if isinstance(payload, dict) else None, received.connection)
