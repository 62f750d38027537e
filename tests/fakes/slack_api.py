"""A fake Slack Web API and response_url endpoint that records every call and rejects what Slack would.

Serve ``FakeSlack().app`` on loopback (``with fake.serve() as url``) and point the app's ``WebClient``
at ``fake.api_url``. Every ``/api/<method>`` call is recorded as a ``Call``, every response_url post as a
``Hook``. The fake keeps the state a user would see: open views (``fake.views``, with Slack's ids and
hashes), messages in channels (``fake.messages``) and inline form errors (``fake.view_errors``).

Rules it enforces, as Slack does: a bot token on every call (the app-level token on
``apps.connections.open``, which answers ``socket_mode_url``, and on no other method); trigger ids
that were issued, are used once and within ``trigger_ttl`` seconds; Block Kit limits
(``tests.support.block_kit``) on every view and message; ``hash`` on ``views.update``/``views.publish``;
at most 3 stacked modals; at most 5 posts per response_url; required arguments (from Slack's Web API
OpenAPI spec). ``fail_next`` scripts errors; ``close_modal`` plays a user closing a modal (Slack then
answers ``views.update`` of it ``not_found``); ``unreachable()`` takes the fake off the network for a while.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import json
import secrets
import socket
import string
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.support.block_kit import block_kit_problems
from tests.support.servers import serve_asgi
from tests.support.slack_requests import API_APP_ID, BOT_ID, BOT_USER_ID, TEAM_DOMAIN, TEAM_ID

__all__ = ["Call", "FakeSlack", "Hook", "Message"]

# Methods Slack only accepts an app-level (xapp-) token for; every other method wants the bot token.
APP_TOKEN_METHODS = frozenset({"apps.connections.open"})
DEFAULT_SCOPES = "commands,chat:write,im:write,users:read,usergroups:read,channels:read,groups:read"
MAX_VIEW_STACK = 3
MAX_RESPONSE_URL_USES = 5
MAX_VIEW_BYTES = 250_000
_JSON_FIELDS = ("view", "blocks", "attachments")
_ALNUM = string.ascii_uppercase + string.digits


@dataclass(frozen=True)
class Call:
    """One Web API call as the fake received and answered it (JSON-string ``view``/``blocks`` decoded)."""

    method: str
    http_method: str
    headers: dict[str, str]
    body: dict[str, Any]
    ok: bool
    error: str | None
    response: dict[str, Any] = field(default_factory=dict)
    at: float = 0.0
    """When the fake answered it, on the fake's ``clock`` (``time.monotonic`` by default)."""


@dataclass(frozen=True)
class Hook:
    """One POST to a response_url; ``ts`` is the message it created, replaced or deleted."""

    path: str
    body: dict[str, Any]
    ok: bool
    error: str | None
    channel_id: str | None = None
    user_id: str | None = None
    ts: str | None = None


@dataclass(frozen=True)
class Message:
    """A message as users see it now; ``user`` is the only viewer of an ephemeral one."""

    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    ephemeral: bool
    user: str | None = None
    thread_ts: str | None = None
    """The parent message's ts, for a reply in a thread."""


class SlackError(Exception):
    """Answer the call with ``{"ok": false, "error": error}`` (plus ``messages`` as Slack words them)."""

    def __init__(self, error: str, messages: list[str] | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.messages = messages or []


@dataclass
class _Trigger:
    issued_at: float
    view_id: str | None
    used: bool = False


@dataclass
class _ResponseUrl:
    channel_id: str
    user_id: str
    message_ts: str | None
    uses: int = 0


class FakeSlack:
    """The fake; configure ``usergroups``, ``users`` and ``channel_members`` before the app calls it."""

    def __init__(
        self,
        *,
        bot_token: str = "xoxb-fake-bot-token",
        app_token: str = "xapp-1-A0A1B2C3D4E-1111111111111-fakeapptoken",
        team_id: str = TEAM_ID,
        enterprise_id: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        trigger_ttl: float = 3.0,
        ack_timeout: float = 3.0,
        scopes: str = DEFAULT_SCOPES,
    ) -> None:
        self.bot_token = bot_token
        self.app_token = app_token
        # What apps.connections.open answers: the URL of a served tests.fakes.socket_mode.FakeSocketMode.
        self.socket_mode_url: str | None = None
        self.team_id = team_id
        # Set: the app is installed org-wide on this Enterprise Grid organisation (auth.test says
        # so, and SlackSender puts it in every payload), so any workspace of it reaches the bot.
        self.enterprise_id = enterprise_id
        self.clock = clock
        self.trigger_ttl = trigger_ttl
        self.ack_timeout = ack_timeout
        self.scopes = scopes
        self.usergroups: dict[str, list[str]] = {}
        self.users: dict[str, dict[str, Any]] = {}
        self.channel_members: dict[str, set[str]] = {}
        self.base_url: str | None = None
        self._server: contextlib.ExitStack | None = None
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._calls: list[Call] = []
        self._hooks: list[Hook] = []
        self._views: dict[str, dict[str, Any]] = {}
        self._closed_by_user: set[str] = set()
        self._stacks: list[list[str]] = []
        self._homes: dict[str, str] = {}
        self._view_errors: dict[str, dict[str, str]] = {}
        self._messages: dict[str, Message] = {}
        self._dms: dict[tuple[str, ...], str] = {}
        self._triggers: dict[str, _Trigger] = {}
        self._response_urls: dict[str, _ResponseUrl] = {}
        self._scripted: dict[str, deque[tuple[str, int, int | None]]] = {}
        self._submissions: dict[str, threading.Event] = {}
        self._late_acks: set[str] = set()
        self._ts = itertools.count(1)
        self._trigger_seq = itertools.count(7311111111300)
        self._handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "auth.test": self._auth_test,
            "bots.info": self._bots_info,
            "apps.connections.open": self._apps_connections_open,
            "views.open": self._views_open,
            "views.push": self._views_push,
            "views.update": self._views_update,
            "views.publish": self._views_publish,
            "chat.postMessage": self._chat_post_message,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "chat.update": self._chat_update,
            "conversations.open": self._conversations_open,
            "conversations.members": self._conversations_members,
            "usergroups.users.list": self._usergroups_users_list,
            "users.info": self._users_info,
        }
        self.app = Starlette(
            routes=[
                Route("/api/{method}", self._api, methods=["GET", "POST"]),
                Route("/hooks/{rest:path}", self._hook, methods=["POST"]),
            ]
        )

    # -- serving -------------------------------------------------------------------------------------

    @contextmanager
    def serve(self) -> Iterator[str]:
        """Serve the fake on loopback; yields (and sets ``base_url`` to) e.g. ``http://127.0.0.1:5555``."""
        self.base_url = self._start(port=0)
        try:
            yield self.base_url
        finally:
            self._stop()
            self.base_url = None

    @contextmanager
    def unreachable(self) -> Iterator[None]:
        """Slack cannot be reached while the block runs: the fake stops listening, so every Web API
        call and response_url post is refused at the TCP level (as with a network outage), then
        serves again on the same address with the state it had."""
        if self.base_url is None or self._server is None:
            raise RuntimeError("the fake is not being served; use `with fake.serve():`")
        port = urlsplit(self.base_url).port
        assert port is not None
        self._stop()
        try:
            # Held, not listening, so connections are refused and no other test worker's server
            # can take the address meanwhile.
            with socket.socket() as holder:
                holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT
                holder.bind(("127.0.0.1", port))
                yield
        finally:
            self._start(port=port)

    def _start(self, *, port: int) -> str:
        stack = contextlib.ExitStack()
        url = stack.enter_context(serve_asgi(self.app, port=port))
        self._server = stack
        return url

    def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    @property
    def api_url(self) -> str:
        """The Web API base URL for ``WebClient(base_url=...)`` / ``SLACK_API_URL``."""
        if self.base_url is None:
            raise RuntimeError("the fake is not being served; use `with fake.serve():`")
        return f"{self.base_url}/api/"

    # -- what tests read -----------------------------------------------------------------------------

    @property
    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    @property
    def hooks(self) -> list[Hook]:
        with self._lock:
            return list(self._hooks)

    @property
    def views(self) -> dict[str, dict[str, Any]]:
        """Every view by id, as the user last saw it (closed ones included; see ``is_open``)."""
        with self._lock:
            return copy.deepcopy(self._views)

    @property
    def view_errors(self) -> dict[str, dict[str, str]]:
        """Inline errors shown under inputs after ``response_action: errors``, by view id."""
        with self._lock:
            return copy.deepcopy(self._view_errors)

    @property
    def messages(self) -> list[Message]:
        """Messages that still exist (posted, updated, or shown through a response_url), oldest first."""
        with self._lock:
            return list(self._messages.values())

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def hooks_to(self, response_url: str) -> list[Hook]:
        path = urlsplit(response_url).path
        return [h for h in self.hooks if h.path == path]

    def home_view(self, user_id: str) -> dict[str, Any] | None:
        with self._lock:
            view_id = self._homes.get(user_id)
            return copy.deepcopy(self._views[view_id]) if view_id else None

    def is_open(self, view_id: str) -> bool:
        with self._lock:
            return any(view_id in stack for stack in self._stacks) or view_id in self._homes.values()

    def open_view(self, view_id: str) -> dict[str, Any]:
        """The view ``view_id`` if a user can act on it now (a Home tab or the top modal of a stack)."""
        with self._lock:
            on_top = any(stack[-1] == view_id for stack in self._stacks)
            if not on_top and view_id not in self._homes.values():
                state = "open under another modal" if self.is_open(view_id) else "not open"
                raise AssertionError(f"view {view_id} is {state}; open: {[s[-1] for s in self._stacks]}")
            return copy.deepcopy(self._views[view_id])

    def visible_messages(self, channel_id: str, user_id: str) -> list[Message]:
        """What ``user_id`` sees in ``channel_id``: channel messages plus their own ephemeral ones."""
        return [
            m for m in self.messages if m.channel == channel_id and (not m.ephemeral or m.user == user_id)
        ]

    def message_of(self, posted: Message | Call | Hook) -> Message:
        """The current version of the message a ``Call`` or ``Hook`` posted (or of ``posted`` itself)."""
        if isinstance(posted, Message):
            ts: str | None = posted.ts
        elif isinstance(posted, Hook):
            ts = posted.ts
        else:
            ts = posted.response.get("ts") or posted.response.get("message_ts")
        with self._lock:
            if ts is None or ts not in self._messages:
                raise AssertionError(f"no such message (ts={ts!r}); it was never shown or was deleted")
            return self._messages[ts]

    def wait_for(self, method: str, count: int = 1, timeout: float = 5.0) -> list[Call]:
        """Wait until ``method`` was called ``count`` times; return those calls (all of them)."""
        return self._wait(lambda: [c for c in self._calls if c.method == method], count, timeout, method)

    def wait_for_hook(self, count: int = 1, timeout: float = 5.0) -> list[Hook]:
        """Wait until ``count`` response_url posts arrived; return them all."""
        return self._wait(lambda: list(self._hooks), count, timeout, "response_url")

    # -- what tests (and SlackSender) set up -----------------------------------------------------------

    def issue_trigger_id(self, *, view_id: str | None = None) -> str:
        """A trigger id as Slack puts in an interaction; ``view_id`` = the view it happened in."""
        trigger_id = f"{next(self._trigger_seq)}.7222222222222.{secrets.token_hex(16)}"
        with self._lock:
            self._triggers[trigger_id] = _Trigger(issued_at=self.clock(), view_id=view_id)
        return trigger_id

    def issue_response_url(
        self, *, channel_id: str, user_id: str, message_ts: str | None = None, kind: str = "commands"
    ) -> str:
        """A response_url on this fake; ``message_ts`` = the message an action happened on."""
        if self.base_url is None:
            raise RuntimeError("the fake is not being served; use `with fake.serve():`")
        path = f"/hooks/{kind}/{self.team_id}/{next(self._trigger_seq)}/{secrets.token_urlsafe(18)}"
        with self._lock:
            self._response_urls[path] = _ResponseUrl(channel_id, user_id, message_ts)
        return self.base_url + path

    def close_modal(self, view_id: str) -> None:
        """The user closes the modal ``view_id`` (its X or Cancel): it leaves the screen with the
        views stacked on it, and Slack answers a later ``views.update`` of any of them ``not_found``."""
        with self._lock:
            stack = self._stack_of(view_id)
            if stack is None:
                raise AssertionError(f"view {view_id} is not an open modal")
            closed = stack[stack.index(view_id) :]
            del stack[stack.index(view_id) :]
            self._closed_by_user.update(closed)
            self._stacks = [s for s in self._stacks if s]
            self._changed.notify_all()

    def fail_next(
        self, method: str, error: str = "ratelimited", status: int = 429, retry_after: int | None = 1
    ) -> None:
        """Make the next call to ``method`` fail with ``error`` (HTTP ``status``, ``Retry-After``)."""
        with self._lock:
            self._scripted.setdefault(method, deque()).append((error, status, retry_after))

    # -- the app's answers to interactions (called by SlackSender) -----------------------------------

    def show_command_ack(self, response_url: str, status: int, content_type: str, body: bytes) -> None:
        """Show the message in a slash command's ack body, as Slack does; raise if Slack would refuse it."""
        text = body.decode("utf-8", "replace").strip()
        if status != 200 or not text:
            return
        data = _json_object(text) if content_type.startswith("application/json") else {"text": text}
        if data is None:
            raise AssertionError(f"Slack cannot parse the command's ack ({len(text)} characters, not JSON)")
        problems = block_kit_problems("message", data)
        if problems:
            raise AssertionError("Slack would refuse the command's ack message: " + "; ".join(problems))
        with self._lock:
            ctx = self._response_urls[urlsplit(response_url).path]
            self._add_message(ctx.channel_id, data, data.get("response_type") != "in_channel", ctx.user_id)

    def begin_submission(self, view_id: str) -> None:
        """A view_submission for ``view_id`` is in flight: hold ``views.update`` calls until its answer."""
        with self._lock:
            self._submissions[view_id] = threading.Event()

    def end_submission(self, view_id: str, status: int, content_type: str, body: bytes) -> None:
        """Apply the app's answer to a view_submission to the open views, as Slack would.

        Raises ``AssertionError`` when Slack would show the user an error instead, or when the app
        updated the view before answering (Slack would then overwrite that update with the answer).
        """
        with self._lock:
            event = self._submissions.pop(view_id, None)
            late = view_id in self._late_acks
            self._late_acks.discard(view_id)
            try:
                self._apply_view_answer(view_id, status, body.decode("utf-8", "replace").strip())
            finally:
                if event is not None:
                    event.set()
                self._changed.notify_all()
        if late:
            raise AssertionError(
                f"the app called views.update on {view_id} before answering its view_submission; "
                "Slack applies the answer afterwards and it overwrites that update"
            )

    # -- HTTP endpoints ------------------------------------------------------------------------------

    async def _api(self, request: Request) -> Response:
        method = request.path_params["method"]
        raw = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            body = _parse_params(request, raw)
        except ValueError:
            return self._answer(method, request.method, headers, {}, SlackError("invalid_json"), 200, None)
        held = self._held_view(method, body)
        if held is not None:
            await self._await_submission(held)
        status, retry_after = 200, None
        try:
            result: dict[str, Any] | SlackError = self._dispatch(method, headers, body)
        except _Scripted as scripted:
            result, status, retry_after = SlackError(scripted.error), scripted.status, scripted.retry_after
        except SlackError as exc:
            result = exc
        return self._answer(method, request.method, headers, body, result, status, retry_after)

    def _answer(
        self,
        method: str,
        http_method: str,
        headers: dict[str, str],
        body: dict[str, Any],
        result: dict[str, Any] | SlackError,
        status: int,
        retry_after: int | None,
    ) -> Response:
        if isinstance(result, SlackError):
            payload: dict[str, Any] = {"ok": False, "error": result.error}
            if result.messages:
                payload["response_metadata"] = {"messages": result.messages}
                if result.error == "invalid_blocks":
                    payload["errors"] = result.messages
        else:
            payload = {"ok": True, **result}
        extra = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        if method == "auth.test" and payload["ok"]:
            extra["x-oauth-scopes"] = self.scopes
        call = Call(
            method,
            http_method,
            headers,
            body,
            payload["ok"],
            payload.get("error"),
            copy.deepcopy(payload),
            at=self.clock(),
        )
        with self._lock:
            self._calls.append(call)
            self._changed.notify_all()
        return JSONResponse(payload, status_code=status, headers=extra)

    def _dispatch(self, method: str, headers: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        handler = self._handlers.get(method)
        if handler is None:
            raise SlackError("unknown_method")
        authorization = headers.get("authorization")
        if not authorization:
            raise SlackError("not_authed")
        wanted, other = (
            (self.app_token, self.bot_token)
            if method in APP_TOKEN_METHODS
            else (self.bot_token, self.app_token)
        )
        if authorization == f"Bearer {other}":
            raise SlackError("not_allowed_token_type")
        if authorization != f"Bearer {wanted}":
            raise SlackError("invalid_auth")
        with self._lock:
            scripted = self._scripted.get(method)
            if scripted:
                raise _Scripted(*scripted.popleft())
            return handler(body)

    async def _hook(self, request: Request) -> Response:
        path = request.url.path
        data = _json_object((await request.body()).decode("utf-8", "replace"))
        with self._lock:
            ctx = self._response_urls.get(path)
            status, error, ts = self._post_to_response_url(ctx, data)
            channel_id, user_id = (ctx.channel_id, ctx.user_id) if ctx else (None, None)
            self._hooks.append(Hook(path, data or {}, error is None, error, channel_id, user_id, ts))
            self._changed.notify_all()
        return PlainTextResponse(error or "ok", status_code=status)

    def _post_to_response_url(
        self, ctx: _ResponseUrl | None, data: dict[str, Any] | None
    ) -> tuple[int, str | None, str | None]:
        if data is None or data.get("response_type", "ephemeral") not in ("ephemeral", "in_channel"):
            return 400, "invalid_payload", None
        if any(k in data and not isinstance(data[k], bool) for k in ("replace_original", "delete_original")):
            return 400, "invalid_payload", None
        if ctx is not None:
            ctx.uses += 1
            if ctx.uses > MAX_RESPONSE_URL_USES:
                return 404, "used_url", None
        delete = data.get("delete_original") is True
        if not delete and not data.get("text") and not data.get("blocks"):
            return 400, "no_text", None
        if not delete and block_kit_problems("message", data):
            return 400, "invalid_blocks", None
        if ctx is None:
            return 200, None, None
        original = self._messages.get(ctx.message_ts) if ctx.message_ts else None
        if delete:
            if original is not None:
                del self._messages[original.ts]
            return 200, None, ctx.message_ts
        if original is not None and data.get("replace_original") is True:
            self._messages[original.ts] = replace(
                original, text=data.get("text", ""), blocks=copy.deepcopy(data.get("blocks", []))
            )
            return 200, None, original.ts
        message = self._add_message(
            ctx.channel_id, data, data.get("response_type") != "in_channel", ctx.user_id
        )
        return 200, None, message.ts

    # -- Web API methods (called under the lock) -----------------------------------------------------

    def _auth_test(self, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": f"https://{TEAM_DOMAIN}.slack.com/",
            "team": "Acme Data",
            "user": "connections",
            "team_id": self.team_id,
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
            **({"enterprise_id": self.enterprise_id} if self.enterprise_id else {}),
            "is_enterprise_install": self.enterprise_id is not None,
        }

    def _bots_info(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("bot") != BOT_ID:
            raise SlackError("bot_not_found")
        return {
            "bot": {
                "id": BOT_ID,
                "deleted": False,
                "name": "connections",
                "updated": 1700000000,
                "app_id": API_APP_ID,
                "user_id": BOT_USER_ID,
                "icons": {f"image_{n}": f"https://a.slack-edge.com/bot_{n}.png" for n in (36, 48, 72)},
            }
        }

    def _apps_connections_open(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.socket_mode_url is None:
            # Slack's wording for an app without Socket Mode is not documented; this is the fake's own.
            raise SlackError("socket_mode_not_enabled")
        return {"url": self.socket_mode_url}

    def _views_open(self, body: dict[str, Any]) -> dict[str, Any]:
        trigger = self._trigger(_required(body, "trigger_id"))
        view = self._checked_view(_required(body, "view"), "modal")
        trigger.used = True
        stored = self._store_view(view)
        self._stacks.append([stored["id"]])
        return {"view": stored}

    def _views_push(self, body: dict[str, Any]) -> dict[str, Any]:
        trigger = self._trigger(_required(body, "trigger_id"))
        view = self._checked_view(_required(body, "view"), "modal")
        stack = self._stack_of(trigger.view_id) if trigger.view_id else None
        if stack is not None and len(stack) >= MAX_VIEW_STACK:
            raise SlackError("push_limit_reached")
        trigger.used = True
        if stack is None:
            # A trigger from outside a modal has nothing to push onto: Slack opens a new stack.
            stored = self._store_view(view)
            self._stacks.append([stored["id"]])
        else:
            stored = self._store_view(view, root=stack[0], previous=stack[-1])
            stack.append(stored["id"])
        return {"view": stored}

    def _views_update(self, body: dict[str, Any]) -> dict[str, Any]:
        view_arg = _required(body, "view")
        view_id = self._resolve_view_id(body)
        current = self._views.get(view_id) if view_id else None
        if current is None or current["id"] in self._closed_by_user:
            raise SlackError("not_found")
        if body.get("hash") and body["hash"] != current["hash"]:
            raise SlackError("hash_conflict")
        view = self._checked_view(view_arg, current["type"], replacing=current["id"])
        stored = self._store_view(
            view, view_id=current["id"], root=current["root_view_id"], previous=current["previous_view_id"]
        )
        self._view_errors.pop(current["id"], None)
        return {"view": stored}

    def _views_publish(self, body: dict[str, Any]) -> dict[str, Any]:
        user_id = _required(body, "user_id")
        view = self._checked_view(_required(body, "view"), "home")
        current_id = self._homes.get(user_id)
        if current_id and body.get("hash") and body["hash"] != self._views[current_id]["hash"]:
            raise SlackError("hash_conflict")
        stored = self._store_view(view, view_id=current_id)
        self._homes[user_id] = stored["id"]
        return {"view": stored}

    def _chat_post_message(self, body: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(body)
        self._checked_message(body)
        thread_ts = body.get("thread_ts")
        if thread_ts is not None:
            # A reply must name a message of the same channel; Slack would otherwise post it
            # somewhere the test did not mean (or refuse it).
            parent = self._messages.get(str(thread_ts))
            if parent is None or parent.channel != channel or parent.ephemeral:
                raise SlackError("thread_not_found")
        message = self._add_message(channel, body, ephemeral=False)
        return {"channel": channel, "ts": message.ts, "message": self._message_json(message)}

    def _chat_post_ephemeral(self, body: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(body)
        user = _required(body, "user")
        self._checked_message(body)
        members = self.channel_members.get(channel)
        if members is not None and user not in members:
            raise SlackError("user_not_in_channel")
        return {"message_ts": self._add_message(channel, body, ephemeral=True, user=user).ts}

    def _chat_update(self, body: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(body)
        ts = _required(body, "ts")
        original = self._messages.get(ts)
        if original is None or original.channel != channel or original.ephemeral:
            raise SlackError("message_not_found")
        self._checked_message(body)
        updated = replace(original, text=body.get("text", ""), blocks=copy.deepcopy(body.get("blocks") or []))
        self._messages[ts] = updated
        return {"channel": channel, "ts": ts, "text": updated.text, "message": self._message_json(updated)}

    def _conversations_open(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("channel"):
            return {"channel": {"id": body["channel"]}}
        users = body.get("users")
        if not users:
            raise SlackError("users_list_not_supplied")
        return {"channel": {"id": self._dm(str(users).split(","))}}

    def _conversations_members(self, body: dict[str, Any]) -> dict[str, Any]:
        members = self.channel_members.get(_required(body, "channel"))
        if members is None:
            raise SlackError("channel_not_found")
        return {"members": sorted(members), "response_metadata": {"next_cursor": ""}}

    def _usergroups_users_list(self, body: dict[str, Any]) -> dict[str, Any]:
        usergroup = _required(body, "usergroup")
        if usergroup not in self.usergroups:
            raise SlackError("no_such_subteam")
        return {"users": list(self.usergroups[usergroup])}

    def _users_info(self, body: dict[str, Any]) -> dict[str, Any]:
        user_id = _required(body, "user")
        if user_id not in self.users:
            raise SlackError("user_not_found")
        return {"user": {"id": user_id, "team_id": self.team_id, **self.users[user_id]}}

    # -- helpers (called under the lock) -------------------------------------------------------------

    def _trigger(self, trigger_id: str) -> _Trigger:
        trigger = self._triggers.get(trigger_id)
        if trigger is None:
            raise SlackError("invalid_trigger_id")
        if trigger.used:
            raise SlackError("exchanged_trigger_id")
        if self.clock() - trigger.issued_at > self.trigger_ttl:
            raise SlackError("expired_trigger_id")
        return trigger

    def _checked_view(self, view: Any, surface: str, replacing: str | None = None) -> dict[str, Any]:
        if not isinstance(view, dict):
            raise SlackError("invalid_arguments", ["[ERROR] view must be a JSON object"])
        problems = block_kit_problems("home" if surface == "home" else "modal", view)
        if problems:
            raise SlackError("invalid_arguments", [f"[ERROR] {p}" for p in problems])
        if len(json.dumps(view)) > MAX_VIEW_BYTES:
            raise SlackError("view_too_large")
        external_id = view.get("external_id")
        if external_id and any(
            v.get("external_id") == external_id and v["id"] != replacing for v in self._views.values()
        ):
            raise SlackError("duplicate_external_id")
        return view

    def _checked_message(self, body: dict[str, Any]) -> None:
        if not body.get("text") and not body.get("blocks"):
            raise SlackError("no_text")
        problems = block_kit_problems("message", {"text": body.get("text"), "blocks": body.get("blocks")})
        if problems:
            raise SlackError("invalid_blocks", [f"[ERROR] {p}" for p in problems])

    def _store_view(
        self,
        view: dict[str, Any],
        *,
        view_id: str | None = None,
        root: str | None = None,
        previous: str | None = None,
    ) -> dict[str, Any]:
        view = copy.deepcopy(view)
        _fill_missing_ids(view.get("blocks") or [])
        view_id = view_id or self._new_id("V", self._views)
        stored = {
            "private_metadata": "",
            "callback_id": "",
            "external_id": "",
            "clear_on_close": False,
            "notify_on_close": False,
            "close": None,
            "submit": None,
            **view,
            "id": view_id,
            "team_id": self.team_id,
            "state": {"values": {}},
            "hash": f"{int(time.time())}.{secrets.token_hex(4)}",
            "root_view_id": root or view_id,
            "previous_view_id": previous,
            "app_id": API_APP_ID,
            "bot_id": BOT_ID,
            "app_installed_team_id": self.team_id,
        }
        self._views[view_id] = stored
        return copy.deepcopy(stored)

    def _resolve_view_id(self, body: dict[str, Any]) -> str | None:
        if body.get("view_id"):
            return str(body["view_id"])
        if body.get("external_id"):
            return next(
                (i for i, v in self._views.items() if v.get("external_id") == body["external_id"]), None
            )
        raise SlackError("invalid_arguments", ["[ERROR] either view_id or external_id is required"])

    def _stack_of(self, view_id: str | None) -> list[str] | None:
        return next((stack for stack in self._stacks if view_id in stack), None)

    def _channel(self, body: dict[str, Any]) -> str:
        channel = body.get("channel")
        if not channel:
            raise SlackError("channel_not_found")
        # Posting to a user id posts into the bot's DM with that user.
        return self._dm([channel]) if channel[0] in "UW" else str(channel)

    def _dm(self, users: list[str]) -> str:
        key = tuple(sorted(u.strip() for u in users))
        if key not in self._dms:
            self._dms[key] = self._new_id("D", set(self._dms.values()))
        return self._dms[key]

    def _add_message(
        self, channel: str, data: dict[str, Any], ephemeral: bool, user: str | None = None
    ) -> Message:
        ts = f"{int(time.time())}.{next(self._ts):06d}"
        blocks = copy.deepcopy(data.get("blocks") or [])
        thread_ts = data.get("thread_ts")
        message = Message(
            channel,
            ts,
            data.get("text") or "",
            blocks,
            ephemeral,
            user if ephemeral else None,
            thread_ts=str(thread_ts) if thread_ts and not ephemeral else None,
        )
        self._messages[ts] = message
        return message

    def _message_json(self, message: Message) -> dict[str, Any]:
        return {
            "type": "message",
            "subtype": "bot_message",
            "text": message.text,
            "ts": message.ts,
            "user": BOT_USER_ID,
            "bot_id": BOT_ID,
            "app_id": API_APP_ID,
            "team": self.team_id,
            "blocks": copy.deepcopy(message.blocks),
            **({"thread_ts": message.thread_ts} if message.thread_ts else {}),
        }

    def _new_id(self, prefix: str, taken: Any) -> str:
        while True:
            candidate = prefix + "".join(secrets.choice(_ALNUM) for _ in range(10))
            if candidate not in taken:
                return candidate

    # -- view_submission answers ---------------------------------------------------------------------

    def _held_view(self, method: str, body: dict[str, Any]) -> str | None:
        """The view a views.update/views.push targets while a submission of it awaits its answer."""
        with self._lock:
            if method == "views.update":
                try:
                    target = self._resolve_view_id(body)
                except SlackError:
                    return None
            elif method == "views.push":
                trigger = self._triggers.get(str(body.get("trigger_id")))
                target = trigger.view_id if trigger else None
            else:
                return None
            return target if target in self._submissions else None

    async def _await_submission(self, view_id: str) -> None:
        with self._lock:
            event = self._submissions.get(view_id)
        if event is None:
            return
        # Slack applies the answer to a submission before later API calls on that view; an app that
        # updates first and answers afterwards would deadlock here, until Slack's 3 s ack window ends.
        if not await asyncio.to_thread(event.wait, self.ack_timeout):
            with self._lock:
                self._late_acks.add(view_id)

    def _apply_view_answer(self, view_id: str, status: int, text: str) -> None:
        if status != 200:
            return  # Slack shows the user an error and leaves the view as it was.
        data = _json_object(text) if text else {}
        if data is None:
            raise AssertionError(
                f"Slack cannot parse the answer to a view_submission ({len(text)} characters, not JSON)"
            )
        action = data.get("response_action")
        stack = self._stack_of(view_id)
        if stack is None:
            raise AssertionError(f"view {view_id} was submitted but is not open")
        if action is None:
            stack.remove(view_id)
        elif action == "clear":
            stack.clear()
        elif action == "errors":
            self._apply_errors(view_id, data.get("errors"))
            return
        elif action in ("update", "push"):
            problems = block_kit_problems("modal", data.get("view") or {})
            if problems:
                raise AssertionError(f"Slack would refuse the {action} view: " + "; ".join(problems))
            current = self._views[view_id]
            if action == "update":
                self._store_view(
                    data["view"],
                    view_id=view_id,
                    root=current["root_view_id"],
                    previous=current["previous_view_id"],
                )
            elif len(stack) >= MAX_VIEW_STACK:
                raise AssertionError("Slack would refuse the push: at most 3 modals can be stacked")
            else:
                stack.append(self._store_view(data["view"], root=stack[0], previous=view_id)["id"])
        else:
            raise AssertionError(f"unknown response_action {action!r}")
        self._view_errors.pop(view_id, None)
        self._stacks = [s for s in self._stacks if s]

    def _apply_errors(self, view_id: str, errors: Any) -> None:
        inputs = {b.get("block_id") for b in self._views[view_id]["blocks"] if b.get("type") == "input"}
        if not isinstance(errors, dict) or not errors:
            raise AssertionError("response_action errors needs a non-empty errors object")
        strays = sorted(set(errors) - inputs)
        if strays:
            raise AssertionError(
                f"errors name {strays}, which are not input block_ids of the view ({sorted(inputs)})"
            )
        self._view_errors[view_id] = {str(k): str(v) for k, v in errors.items()}

    def _wait(self, collect: Callable[[], list[Any]], count: int, timeout: float, what: str) -> list[Any]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = collect()
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    received = [f"{c.method} {'ok' if c.ok else c.error}" for c in self._calls]
                    hooks = [f"{h.path} {'ok' if h.ok else h.error}" for h in self._hooks]
                    raise AssertionError(
                        f"expected {count} {what} call(s) within {timeout} s, got {len(found)}; "
                        f"Web API calls received: {received or 'none'}; response_url posts: {hooks or 'none'}"
                    )
                self._changed.wait(remaining)


class _Scripted(Exception):
    def __init__(self, error: str, status: int, retry_after: int | None) -> None:
        super().__init__(error)
        self.error, self.status, self.retry_after = error, status, retry_after


def _required(body: dict[str, Any], name: str) -> Any:
    value = body.get(name)
    if value in (None, ""):
        raise SlackError("invalid_arguments", [f"[ERROR] missing required field: {name}"])
    return value


def _parse_params(request: Request, raw: bytes) -> dict[str, Any]:
    """Query string plus a JSON or form body, with JSON-string view/blocks decoded (as Slack reads them)."""
    params: dict[str, Any] = dict(request.query_params)
    text = raw.decode("utf-8")
    if text.strip():
        if request.headers.get("content-type", "").startswith("application/json") or text.lstrip().startswith(
            "{"
        ):
            parsed = json.loads(text)
            if not isinstance(parsed, dict):
                raise ValueError("not a JSON object")
            params.update(parsed)
        else:
            params.update(parse_qsl(text, keep_blank_values=True))
    for name in _JSON_FIELDS:
        if isinstance(params.get(name), str):
            # Unparseable JSON stays a string, which the method then rejects.
            with contextlib.suppress(ValueError):
                params[name] = json.loads(params[name])
    return params


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        parsed = json.loads(text)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _fill_missing_ids(blocks: list[dict[str, Any]]) -> None:
    """Slack gives blocks and interactive elements without ids random ones (state.values uses them)."""
    for block in blocks:
        if isinstance(block, dict):
            block.setdefault("block_id", secrets.token_urlsafe(3))
            elements = [block.get("element"), block.get("accessory"), *(block.get("elements") or [])]
            for element in elements:
                if isinstance(element, dict) and element.get("type") not in (
                    None,
                    "image",
                    "plain_text",
                    "mrkdwn",
                ):
                    element.setdefault("action_id", secrets.token_urlsafe(3))
