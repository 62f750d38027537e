"""Requests built exactly as Slack builds them: signed slash commands, block_actions, view_submission
and Events API deliveries.

The payload builders re-create the shapes Slack sends (see Slack's interaction payload reference);
``SlackSender`` signs them, POSTs them to the app's ``/slack/events`` and keeps the fake Slack Web API
(``tests.fakes.slack_api.FakeSlack``) in step: it issues trigger ids and response URLs through the fake,
and applies the app's answers to what the user sees (a command's ack message, a view_submission's
``response_action``).
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import itertools
import json
import secrets
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import httpx

if TYPE_CHECKING:
    from tests.fakes.slack_api import Call, FakeSlack, Hook, Message

__all__ = [
    "API_APP_ID",
    "BOT_ID",
    "BOT_USER_ID",
    "CHANNEL_ID",
    "CHANNEL_NAME",
    "TEAM_DOMAIN",
    "TEAM_ID",
    "USER_ID",
    "USER_NAME",
    "SlackSender",
    "block_actions_in_view",
    "block_actions_on_message",
    "event_callback",
    "find_action",
    "form_body",
    "in_org",
    "new_trigger_id",
    "payload_body",
    "sign",
    "slash_command",
    "view_submission",
]

TEAM_ID = "T0A1B2C3D4E"
TEAM_DOMAIN = "acme-data"
USER_ID = "U0A1B2C3D4E"
USER_NAME = "jane.doe"
CHANNEL_ID = "C0A1B2C3D4E"
CHANNEL_NAME = "data-platform"
API_APP_ID = "A0A1B2C3D4E"
BOT_ID = "B0A1B2C3D4E"
BOT_USER_ID = "U0BOTUSER01"
ORG_NAME = "Acme Group"
# The deprecated verification token Slack still puts in every payload; Bolt ignores it.
_LEGACY_TOKEN = "legacy-verification-token"

_trigger_counter = itertools.count(7311111111200)


def new_trigger_id() -> str:
    """A fresh Slack-shaped trigger id (``<13 digits>.<13 digits>.<32 hex>``)."""
    return f"{next(_trigger_counter)}.7222222222222.{secrets.token_hex(16)}"


# -- signing and encoding --------------------------------------------------------------------------


def sign(body: bytes | str, signing_secret: str, timestamp: int | None = None) -> dict[str, str]:
    """Headers Slack sends with ``body``: a v0 HMAC-SHA256 signature over ``v0:{timestamp}:{body}``."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    raw = body.encode() if isinstance(body, str) else body
    digest = hmac.new(signing_secret.encode(), b"v0:" + ts.encode() + b":" + raw, hashlib.sha256)
    return {
        "content-type": "application/x-www-form-urlencoded",
        "x-slack-request-timestamp": ts,
        "x-slack-signature": f"v0={digest.hexdigest()}",
    }


def form_body(fields: Mapping[str, str]) -> str:
    """A slash command's body: the form fields, URL-encoded."""
    return urlencode(fields)


def payload_body(payload: Mapping[str, Any]) -> str:
    """An interaction's body: ``payload=`` plus the URL-encoded JSON payload."""
    return "payload=" + quote(json.dumps(payload))


def in_org(payload: Mapping[str, Any], enterprise_id: str | None) -> dict[str, Any]:
    """``payload`` (a slash command's fields, an interaction or an event) as Slack sends it for an
    app installed org-wide on the Enterprise Grid organisation ``enterprise_id``; unchanged for None."""
    stamped = copy.deepcopy(dict(payload))
    if enterprise_id is None:
        return stamped
    if "command" in stamped:
        stamped.update(enterprise_id=enterprise_id, enterprise_name=ORG_NAME, is_enterprise_install="true")
    elif stamped.get("type") == "event_callback":
        stamped.update(enterprise_id=enterprise_id, context_enterprise_id=enterprise_id)
        for authorization in stamped.get("authorizations", []):
            authorization.update(enterprise_id=enterprise_id, is_enterprise_install=True)
    else:
        stamped.update(enterprise={"id": enterprise_id, "name": ORG_NAME}, is_enterprise_install=True)
    return stamped


# -- payload builders ------------------------------------------------------------------------------


def slash_command(
    text: str = "",
    *,
    team_id: str,
    user_id: str,
    channel_id: str,
    response_url: str,
    trigger_id: str,
    command: str = "/connections",
    user_name: str | None = None,
    channel_name: str = CHANNEL_NAME,
    team_domain: str = TEAM_DOMAIN,
) -> dict[str, str]:
    """The form fields of a slash command (every value a string, as Slack sends them)."""
    return {
        "token": _LEGACY_TOKEN,
        "team_id": team_id,
        "team_domain": team_domain,
        "enterprise_id": "",
        "enterprise_name": "",
        "channel_id": channel_id,
        "channel_name": channel_name,
        "user_id": user_id,
        "user_name": user_name or _user_name(user_id),
        "command": command,
        "text": text,
        "api_app_id": API_APP_ID,
        "is_enterprise_install": "false",
        "response_url": response_url,
        "trigger_id": trigger_id,
    }


def block_actions_on_message(
    action_id: str,
    value: str | None,
    *,
    ephemeral: bool,
    response_url: str,
    trigger_id: str,
    team_id: str,
    user_id: str,
    channel_id: str,
    block_id: str | None = None,
    blocks: Sequence[Mapping[str, Any]] | None = None,
    message_ts: str | None = None,
    message_text: str = "",
    channel_name: str = CHANNEL_NAME,
) -> dict[str, Any]:
    """A button click on a message.

    With ``blocks`` (the message as the user sees it) the clicked button is looked up there, so a test
    can only click what was rendered; without them a generic button with ``block_id`` is assumed.
    A click on an ephemeral message carries ``container.is_ephemeral: true`` and no ``message`` key.
    """
    found_block_id, element = _clicked(blocks, action_id, value, block_id)
    ts = message_ts or _now_ts()
    payload: dict[str, Any] = {
        **_envelope("block_actions", team_id=team_id, user_id=user_id),
        "container": {
            "type": "message",
            "message_ts": ts,
            "channel_id": channel_id,
            "is_ephemeral": ephemeral,
        },
        "trigger_id": trigger_id,
        "channel": {"id": channel_id, "name": channel_name},
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [_action(element, found_block_id)],
    }
    if not ephemeral:
        payload["message"] = {
            "type": "message",
            "subtype": "bot_message",
            "text": message_text,
            "ts": ts,
            "bot_id": BOT_ID,
            "app_id": API_APP_ID,
            "user": BOT_USER_ID,
            "team": team_id,
            "blocks": copy.deepcopy(list(blocks or [])),
        }
    return payload


def block_actions_in_view(
    action_id: str,
    value: str | None,
    *,
    view: Mapping[str, Any],
    trigger_id: str,
    team_id: str,
    user_id: str,
    values: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A button click inside a modal or Home tab; ``view`` is the view as the fake Slack API stored it.

    ``values`` are what the user has typed so far into the view's text inputs (by input block_id); Slack
    sends the whole state with every block_actions payload.
    """
    block_id, element = find_action(view.get("blocks", []), action_id, value)
    state = _state(view, values or {}, submitting=False)
    return {
        **_envelope("block_actions", team_id=team_id, user_id=user_id),
        "container": {"type": "view", "view_id": view["id"]},
        "trigger_id": trigger_id,
        "view": _echo_view(view, state, team_id),
        "state": {"values": state},
        "actions": [_action(element, block_id)],
    }


def view_submission(
    view: Mapping[str, Any],
    values: Mapping[str, str],
    *,
    user_id: str,
    team_id: str,
    view_id: str | None = None,
    trigger_id: str | None = None,
) -> dict[str, Any]:
    """The user pressed the modal's submit button after typing ``values`` (by input block_id).

    Every input block of ``view`` appears in ``state.values[block_id][its action_id]``; inputs left out of
    ``values`` keep their ``initial_value`` or arrive as ``None``. Raises ``ValueError`` for what the Slack
    client would not let a user submit: a value for a block that is not an input, an empty required
    input, or text outside the input's ``min_length``/``max_length``.
    """
    state = _state(view, values, submitting=True)
    echoed = _echo_view(view, state, team_id)
    if view_id is not None:
        echoed["id"] = view_id
    return {
        **_envelope("view_submission", team_id=team_id, user_id=user_id),
        "trigger_id": trigger_id or new_trigger_id(),
        "view": echoed,
        "response_urls": [],
    }


def event_callback(
    event: Mapping[str, Any], *, team_id: str, api_app_id: str = API_APP_ID, event_id: str | None = None
) -> dict[str, Any]:
    """An Events API delivery of ``event`` (e.g. ``app_home_opened``), as Slack POSTs it in JSON.

    ``event_id`` identifies the event across Slack's redeliveries; a fresh one by default."""
    return {
        "token": _LEGACY_TOKEN,
        "team_id": team_id,
        "context_team_id": team_id,
        "context_enterprise_id": None,
        "api_app_id": api_app_id,
        "event": copy.deepcopy(dict(event)),
        "type": "event_callback",
        "event_id": event_id or "Ev" + secrets.token_hex(5).upper(),
        "event_time": int(time.time()),
        "authorizations": [
            {
                "enterprise_id": None,
                "team_id": team_id,
                "user_id": BOT_USER_ID,
                "is_bot": True,
                "is_enterprise_install": False,
            }
        ],
        "is_ext_shared_channel": False,
        "event_context": "4-" + secrets.token_urlsafe(24),
    }


def find_action(
    blocks: Sequence[Mapping[str, Any]], action_id: str, value: str | None = None
) -> tuple[str, dict[str, Any]]:
    """Return ``(block_id, element)`` of the one clickable element with ``action_id`` (and ``value``).

    Raises ``ValueError`` when there is none, or several and ``value`` does not pick one.
    """
    matches: list[tuple[str, dict[str, Any]]] = []
    for block in blocks:
        candidates = list(block.get("elements") or []) if block.get("type") == "actions" else []
        if block.get("type") == "section" and block.get("accessory"):
            candidates.append(block["accessory"])
        for element in candidates:
            if element.get("action_id") == action_id and (value is None or element.get("value") == value):
                matches.append((str(block.get("block_id", "")), dict(element)))
    if len(matches) != 1:
        seen = [
            (b.get("block_id"), e.get("action_id"), e.get("value"))
            for b in blocks
            for e in [
                *(b.get("elements") or [] if b.get("type") == "actions" else []),
                b.get("accessory") or {},
            ]
            if e.get("action_id")
        ]
        what = "no element" if not matches else f"{len(matches)} elements"
        raise ValueError(f"{what} with action_id={action_id!r} value={value!r} to click; clickable: {seen}")
    return matches[0]


# -- the sender ------------------------------------------------------------------------------------


class SlackSender:
    """Plays Slack's side of the app's Request URL: signs requests and POSTs them to ``/slack/events``.

    Trigger ids and response URLs come from ``fake`` (a served ``FakeSlack``), so the fake can refuse an
    expired or reused trigger id and record what is posted to a response URL.
    """

    def __init__(
        self,
        app_url: str,
        *,
        signing_secret: str,
        fake: FakeSlack,
        team_id: str = TEAM_ID,
        user_id: str = USER_ID,
        channel_id: str = CHANNEL_ID,
        path: str = "/slack/events",
        timeout: float = 10.0,
    ) -> None:
        self.http = httpx.Client(base_url=app_url, timeout=timeout)
        self.signing_secret = signing_secret
        self.fake = fake
        self.team_id = team_id
        self.enterprise_id = fake.enterprise_id
        """The organisation of an org-wide install (from ``fake``), put in every payload."""
        self.user_id = user_id
        self.channel_id = channel_id
        self.path = path
        self.last_trigger_id: str | None = None
        self.last_response_url: str | None = None

    def __enter__(self) -> SlackSender:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def command(
        self,
        text: str = "",
        *,
        command: str = "/connections",
        user_id: str | None = None,
        channel_id: str | None = None,
    ) -> httpx.Response:
        """Run ``/connections <text>``; a message in the ack is shown to the user like Slack does."""
        user, channel = user_id or self.user_id, channel_id or self.channel_id
        trigger_id = self.fake.issue_trigger_id()
        response_url = self.fake.issue_response_url(channel_id=channel, user_id=user, kind="commands")
        fields = slash_command(
            text,
            team_id=self.team_id,
            user_id=user,
            channel_id=channel,
            response_url=response_url,
            trigger_id=trigger_id,
            command=command,
        )
        self.last_trigger_id, self.last_response_url = trigger_id, response_url
        response = self._post(form_body(in_org(fields, self.enterprise_id)))
        self.fake.show_command_ack(
            response_url, response.status_code, response.headers.get("content-type", ""), response.content
        )
        return response

    def action(
        self,
        action_id: str,
        value: str | None = None,
        *,
        on: str | Message | Call | Hook,
        user_id: str | None = None,
        values: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Click the button ``action_id`` (``value`` picks one of several) on what the user sees.

        ``on`` is a view id (a modal or Home tab in ``fake.views``; ``values`` = text typed so far) or a
        message: a ``Message``, or the ``Call``/``Hook`` that posted it.
        """
        user = user_id or self.user_id
        if isinstance(on, str):
            view = self.fake.open_view(on)
            trigger_id = self.fake.issue_trigger_id(view_id=on)
            payload = block_actions_in_view(
                action_id,
                value,
                view=view,
                trigger_id=trigger_id,
                team_id=self.team_id,
                user_id=user,
                values=values,
            )
        else:
            message = self.fake.message_of(on)
            if message.ephemeral and message.user != user:
                raise AssertionError(
                    f"{user} cannot see the ephemeral message {message.ts} sent to {message.user}"
                )
            trigger_id = self.fake.issue_trigger_id()
            response_url = self.fake.issue_response_url(
                channel_id=message.channel, user_id=user, message_ts=message.ts, kind="actions"
            )
            self.last_response_url = response_url
            payload = block_actions_on_message(
                action_id,
                value,
                ephemeral=message.ephemeral,
                response_url=response_url,
                trigger_id=trigger_id,
                team_id=self.team_id,
                user_id=user,
                channel_id=message.channel,
                blocks=message.blocks,
                message_ts=message.ts,
                message_text=message.text,
            )
        self.last_trigger_id = trigger_id
        return self.post_payload(payload)

    def submit(
        self, view_id: str, values: Mapping[str, str] | None = None, *, user_id: str | None = None
    ) -> httpx.Response:
        """Submit the open modal ``view_id`` with ``values`` typed into its inputs (by block_id).

        The app's answer is applied to ``fake.views`` as Slack would (close, ``update``, ``push``,
        ``errors``, ``clear``); an answer Slack would refuse raises ``AssertionError``.
        """
        view = self.fake.open_view(view_id)
        trigger_id = self.fake.issue_trigger_id(view_id=view_id)
        payload = view_submission(
            view, values or {}, user_id=user_id or self.user_id, team_id=self.team_id, trigger_id=trigger_id
        )
        self.last_trigger_id = trigger_id
        self.fake.begin_submission(view_id)
        try:
            response = self.post_payload(payload)
        except BaseException:
            self.fake.end_submission(view_id, 0, "", b"")
            raise
        self.fake.end_submission(
            view_id, response.status_code, response.headers.get("content-type", ""), response.content
        )
        return response

    def event(
        self, event: Mapping[str, Any], *, retry_num: int | None = None, event_id: str | None = None
    ) -> httpx.Response:
        """Deliver ``event`` through the Events API: a signed JSON ``event_callback``.

        ``retry_num`` makes it a redelivery, with the ``X-Slack-Retry-Num`` and
        ``X-Slack-Retry-Reason`` headers Slack adds when it did not get a 2xx in time."""
        body = json.dumps(
            in_org(event_callback(event, team_id=self.team_id, event_id=event_id), self.enterprise_id)
        )
        headers = {**sign(body, self.signing_secret), "content-type": "application/json"}
        if retry_num is not None:
            headers["x-slack-retry-num"] = str(retry_num)
            headers["x-slack-retry-reason"] = "http_timeout"
        return self.http.post(self.path, content=body, headers=headers)

    def post_raw(self, body: bytes | str, headers: Mapping[str, str]) -> httpx.Response:
        """POST ``body`` with exactly ``headers`` (forged signatures, stale timestamps, ...)."""
        return self.http.post(self.path, content=body, headers=dict(headers))

    def post_payload(self, payload: Mapping[str, Any]) -> httpx.Response:
        """POST an interaction ``payload``, whatever it holds, signed and in this sender's organisation."""
        return self._post(payload_body(in_org(payload, self.enterprise_id)))

    def _post(self, body: str) -> httpx.Response:
        return self.http.post(self.path, content=body, headers=sign(body, self.signing_secret))


# -- helpers ---------------------------------------------------------------------------------------

_VIEW_DEFAULTS: dict[str, Any] = {
    "private_metadata": "",
    "callback_id": "",
    "external_id": "",
    "clear_on_close": False,
    "notify_on_close": False,
    "previous_view_id": None,
    "close": None,
    "submit": None,
}


def _envelope(kind: str, *, team_id: str, user_id: str) -> dict[str, Any]:
    return {
        "type": kind,
        "user": {
            "id": user_id,
            "username": _user_name(user_id),
            "name": _user_name(user_id),
            "team_id": team_id,
        },
        "api_app_id": API_APP_ID,
        "token": _LEGACY_TOKEN,
        "team": {"id": team_id, "domain": TEAM_DOMAIN},
        "enterprise": None,
        "is_enterprise_install": False,
    }


def _user_name(user_id: str) -> str:
    return USER_NAME if user_id == USER_ID else user_id.lower()


def _now_ts() -> str:
    return f"{time.time():.6f}"


def _clicked(
    blocks: Sequence[Mapping[str, Any]] | None, action_id: str, value: str | None, block_id: str | None
) -> tuple[str, dict[str, Any]]:
    if blocks is not None:
        found_block_id, element = find_action(blocks, action_id, value)
        if block_id is not None and block_id != found_block_id:
            raise ValueError(f"the {action_id!r} element is in block {found_block_id!r}, not {block_id!r}")
        return found_block_id, element
    element = {"type": "button", "action_id": action_id, "text": {"type": "plain_text", "text": action_id}}
    if value is not None:
        element["value"] = value
    return block_id or "actions", element


def _action(element: Mapping[str, Any], block_id: str) -> dict[str, Any]:
    if element.get("type") != "button":
        raise ValueError(f"only button clicks are modelled, not {element.get('type')!r}")
    action: dict[str, Any] = {
        "action_id": element["action_id"],
        "block_id": block_id,
        "text": {"emoji": True, **element["text"]},
        "type": "button",
        "action_ts": _now_ts(),
    }
    if "value" in element:
        action["value"] = element["value"]
    if "style" in element:
        action["style"] = element["style"]
    return action


def _echo_view(view: Mapping[str, Any], state: dict[str, Any], team_id: str) -> dict[str, Any]:
    if "id" not in view or "hash" not in view:
        raise ValueError(
            "pass the view as the fake Slack API stored it: it needs the id and hash Slack added"
        )
    echoed: dict[str, Any] = {
        **_VIEW_DEFAULTS,
        "team_id": team_id,
        "app_id": API_APP_ID,
        "bot_id": BOT_ID,
        "app_installed_team_id": team_id,
        "root_view_id": view["id"],
        **copy.deepcopy(dict(view)),
    }
    echoed["state"] = {"values": state}
    return echoed


def _state(view: Mapping[str, Any], values: Mapping[str, str], *, submitting: bool) -> dict[str, Any]:
    inputs = {
        b["block_id"]: b for b in view.get("blocks", []) if b.get("type") == "input" and "block_id" in b
    }
    unknown = sorted(set(values) - set(inputs))
    if unknown:
        raise ValueError(f"{unknown} are not input blocks of the view; inputs: {sorted(inputs)}")
    state: dict[str, Any] = {}
    for block_id, block in inputs.items():
        element = block.get("element", {})
        if element.get("type") != "plain_text_input":
            if block_id in values:
                raise ValueError(
                    f"only plain_text_input values are modelled, {block_id!r} is {element.get('type')!r}"
                )
            continue
        typed = values.get(block_id, element.get("initial_value"))
        if submitting:
            _check_typed(block_id, block, element, typed)
        state[block_id] = {element["action_id"]: {"type": "plain_text_input", "value": typed or None}}
    return state


def _check_typed(
    block_id: str, block: Mapping[str, Any], element: Mapping[str, Any], typed: str | None
) -> None:
    if not typed:
        if not block.get("optional", False):
            raise ValueError(f"Slack would not submit: the required input {block_id!r} is empty")
        return
    max_length, min_length = element.get("max_length"), element.get("min_length")
    if max_length is not None and len(typed) > max_length:
        raise ValueError(
            f"Slack would not submit: {block_id!r} holds {len(typed)} characters, max {max_length}"
        )
    if min_length is not None and len(typed) < min_length:
        raise ValueError(
            f"Slack would not submit: {block_id!r} holds {len(typed)} characters, min {min_length}"
        )
