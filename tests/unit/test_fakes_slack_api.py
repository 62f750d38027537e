"""The Slack side of the end-to-end harness: the fake Web API, the request builders and the sender.

The fake is driven with slack_sdk's own async clients over real HTTP, so each rule is checked against
what the SDK actually sends; the sender is checked against a small Bolt app.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import httpx
import pytest
from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from tests.fakes.slack_api import FakeSlack
from tests.fakes.socket_mode import FakeSocketMode
from tests.support.servers import serve_asgi
from tests.support.slack_requests import (
    CHANNEL_ID,
    TEAM_ID,
    USER_ID,
    SlackSender,
    block_actions_on_message,
    find_action,
    payload_body,
    sign,
    slash_command,
    view_submission,
)

SIGNING_SECRET = "test-signing-secret"


def plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text}


def text_input(block_id: str, label: str, **element: Any) -> dict[str, Any]:
    return {
        "type": "input",
        "block_id": block_id,
        "label": plain(label),
        "element": {"type": "plain_text_input", "action_id": "value", **element},
    }


def form_modal(title: str = "Create Confluent Cloud") -> dict[str, Any]:
    return {
        "type": "modal",
        "callback_id": "create_connection",
        "title": plain(title),
        "submit": plain("Create"),
        "private_metadata": '{"provider":"confluent_cloud"}',
        "blocks": [
            {"type": "header", "block_id": "account_header", "text": plain("Confluent Account")},
            text_input("name", "Name", max_length=20),
            text_input("api_key", "API Key"),
            {**text_input("note", "Note"), "optional": True},
            {
                "type": "actions",
                "block_id": "help",
                "elements": [{"type": "button", "action_id": "show_help", "text": plain("Where is my key?")}],
            },
        ],
    }


def info_modal(title: str) -> dict[str, Any]:
    return {"type": "modal", "title": plain(title), "blocks": [{"type": "section", "text": plain(title)}]}


def cards(*providers: str) -> list[dict[str, Any]]:
    return [
        {
            "type": "section",
            "block_id": f"provider_{p}",
            "text": {"type": "mrkdwn", "text": f"*{p}*"},
            "accessory": {
                "type": "button",
                "action_id": "connect_provider",
                "text": plain("Connect"),
                "value": p,
            },
        }
        for p in providers
    ]


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    slack = FakeSlack()
    with slack.serve():
        yield slack


@pytest.fixture
def client(fake: FakeSlack) -> AsyncWebClient:
    return AsyncWebClient(token=fake.bot_token, base_url=fake.api_url)


async def error_of(call: Any) -> SlackApiError:
    with pytest.raises(SlackApiError) as raised:
        await call
    return raised.value


# -- servers -----------------------------------------------------------------------------------------


def test_several_servers_run_at_once_on_their_own_ports() -> None:
    def app(name: str) -> Starlette:
        return Starlette(routes=[Route("/", lambda _: PlainTextResponse(name))])

    with serve_asgi(app("one")) as first, serve_asgi(app("two")) as second:
        assert first != second
        assert httpx.get(first).text == "one"
        assert httpx.get(second).text == "two"


def test_a_server_that_fails_to_start_raises_instead_of_hanging() -> None:
    @asynccontextmanager
    async def broken(_: Starlette) -> AsyncIterator[None]:
        raise RuntimeError("no database")
        yield

    with pytest.raises(RuntimeError, match="start-up"), serve_asgi(Starlette(lifespan=broken)):
        pass


# -- authentication, recording, scripting ---------------------------------------------------------------


async def test_auth_test_answers_the_bot_identity_with_scopes(
    client: AsyncWebClient, fake: FakeSlack
) -> None:
    response = await client.auth_test()
    assert response["team_id"] == TEAM_ID
    assert response["user_id"].startswith("U") and response["bot_id"].startswith("B")
    assert "chat:write" in response.headers["x-oauth-scopes"]
    [call] = fake.calls_to("auth.test")
    assert call.ok and call.headers["authorization"] == f"Bearer {fake.bot_token}"


async def test_calls_without_or_with_a_wrong_token_are_refused(fake: FakeSlack) -> None:
    missing = await error_of(AsyncWebClient(base_url=fake.api_url).auth_test())
    wrong = await error_of(
        AsyncWebClient(token="xoxb-someone-else", base_url=fake.api_url).chat_postMessage(
            channel=CHANNEL_ID, text="hi"
        )
    )
    assert missing.response["error"] == "not_authed"
    assert wrong.response["error"] == "invalid_auth"
    assert [(c.method, c.ok, c.error) for c in fake.calls] == [
        ("auth.test", False, "not_authed"),
        ("chat.postMessage", False, "invalid_auth"),
    ]
    assert fake.messages == []


async def test_unknown_method_is_refused(client: AsyncWebClient) -> None:
    error = await error_of(client.api_call("chat.postMesage", json={"channel": CHANNEL_ID, "text": "x"}))
    assert error.response["error"] == "unknown_method"


async def test_fail_next_scripts_one_rate_limited_answer(client: AsyncWebClient, fake: FakeSlack) -> None:
    fake.fail_next("chat.postMessage", retry_after=7)
    error = await error_of(client.chat_postMessage(channel=CHANNEL_ID, text="first"))
    assert error.response.status_code == 429
    assert error.response.headers["Retry-After"] == "7"
    assert error.response["error"] == "ratelimited"
    second = await client.chat_postMessage(channel=CHANNEL_ID, text="second")
    assert second["ok"]
    assert [m.text for m in fake.messages] == ["second"]


async def test_each_call_records_when_it_was_answered_on_the_fakes_clock() -> None:
    now = [100.0]
    fake = FakeSlack(clock=lambda: now[0])
    with fake.serve():
        client = AsyncWebClient(token=fake.bot_token, base_url=fake.api_url)
        await client.auth_test()
        now[0] = 102.5
        await client.auth_test()
    assert [c.at for c in fake.calls] == [100.0, 102.5]


async def test_an_unreachable_fake_refuses_connections_then_serves_again_as_it_was(
    client: AsyncWebClient, fake: FakeSlack
) -> None:
    await client.chat_postMessage(channel=CHANNEL_ID, text="before")
    url = fake.api_url
    response_url = fake.issue_response_url(channel_id=CHANNEL_ID, user_id=USER_ID)

    with fake.unreachable():
        with pytest.raises(aiohttp.ClientConnectorError):
            await AsyncWebClient(token=fake.bot_token, base_url=url).auth_test()
        with pytest.raises(httpx.ConnectError):
            httpx.post(response_url, json={"text": "lost"})

    assert fake.api_url == url
    await client.chat_postMessage(channel=CHANNEL_ID, text="after")
    assert httpx.post(response_url, json={"text": "back"}).status_code == 200
    assert [m.text for m in fake.messages] == ["before", "after", "back"]
    # Refused calls never reached Slack, so there is nothing to record.
    assert [c.method for c in fake.calls] == ["chat.postMessage", "chat.postMessage"]


async def test_wait_for_returns_calls_made_from_another_thread(
    client: AsyncWebClient, fake: FakeSlack
) -> None:
    def later() -> None:
        time.sleep(0.05)
        asyncio.run(AsyncWebClient(token=fake.bot_token, base_url=fake.api_url).auth_test())

    worker = threading.Thread(target=later)
    worker.start()
    calls = await asyncio.to_thread(fake.wait_for, "auth.test", 1, 5.0)
    worker.join()
    assert [c.method for c in calls] == ["auth.test"]


async def test_wait_for_times_out_listing_what_was_received(client: AsyncWebClient, fake: FakeSlack) -> None:
    await client.auth_test()
    with pytest.raises(AssertionError, match=r"got 0; Web API calls received: \['auth.test ok'\]"):
        fake.wait_for("views.open", timeout=0.05)


# -- Socket Mode -----------------------------------------------------------------------------------------


async def test_apps_connections_open_takes_only_the_app_token_and_answers_the_socket_url(
    fake: FakeSlack,
) -> None:
    web = AsyncWebClient(token=fake.bot_token, base_url=fake.api_url)
    not_enabled = await error_of(web.apps_connections_open(app_token=fake.app_token))
    fake.socket_mode_url = "ws://127.0.0.1:1/link/?ticket=t"
    opened = await web.apps_connections_open(app_token=fake.app_token)
    with_bot_token = await error_of(web.apps_connections_open(app_token=fake.bot_token))
    with_other_app = await error_of(web.apps_connections_open(app_token="xapp-1-someone-else"))
    app_token_elsewhere = await error_of(
        AsyncWebClient(token=fake.app_token, base_url=fake.api_url).chat_postMessage(
            channel=CHANNEL_ID, text="hi"
        )
    )

    assert not_enabled.response["error"] == "socket_mode_not_enabled"
    assert opened["url"] == "ws://127.0.0.1:1/link/?ticket=t"
    assert with_bot_token.response["error"] == "not_allowed_token_type"
    assert with_other_app.response["error"] == "invalid_auth"
    assert app_token_elsewhere.response["error"] == "not_allowed_token_type"
    assert fake.messages == []
    calls = fake.calls_to("apps.connections.open")
    assert [c.ok for c in calls] == [False, True, False, False]
    assert calls[1].headers["authorization"] == f"Bearer {fake.app_token}"


async def test_slack_sdks_socket_mode_client_connects_acks_and_reconnects_through_the_fakes(
    fake: FakeSlack,
) -> None:
    socket = FakeSocketMode()
    seen: list[dict[str, Any]] = []

    async def on_message(_client: Any, message: dict[str, Any], _raw: str | None) -> None:
        seen.append(message)

    async def on_request(client: Any, request: SocketModeRequest) -> None:
        answer = {"text": f"ran {request.payload['command']}"} if request.type == "slash_commands" else None
        await client.send_socket_mode_response(SocketModeResponse(request.envelope_id, answer))

    with socket.serve() as url:
        fake.socket_mode_url = url
        client = SocketModeClient(
            app_token=fake.app_token, web_client=AsyncWebClient(base_url=fake.api_url), ping_interval=1
        )
        client.message_listeners.append(on_message)
        client.socket_mode_request_listeners.append(on_request)
        try:
            await client.connect()
            assert await asyncio.to_thread(socket.wait_for_connection, 1) == 1

            command = socket.send_envelope("slash_commands", {"command": "/connections", "text": ""})
            click = socket.send_envelope("interactive", {"type": "block_actions", "actions": []})
            command_ack = await asyncio.to_thread(socket.wait_for_ack, command)
            click_ack = await asyncio.to_thread(socket.wait_for_ack, click)

            socket.disconnect()
            assert await asyncio.to_thread(socket.wait_for_connection, 2) == 2
            # The client reads the new connection's hello on its own time; wait for it, not for a clock.
            for _ in range(500):
                if sum(m.get("type") == "hello" for m in seen) == 2:
                    break
                await asyncio.sleep(0.01)
        finally:
            await client.close()

    assert command_ack.payload == {"text": "ran /connections"}
    assert click_ack.payload is None
    envelopes = [m for m in socket.sent if "envelope_id" in m]
    assert [(e["type"], e["accepts_response_payload"]) for e in envelopes] == [
        ("slash_commands", True),
        ("interactive", False),
    ]
    hellos = [m for m in seen if m.get("type") == "hello"]
    assert len(hellos) == 2
    assert hellos[0]["connection_info"] == {"app_id": socket.app_id}
    assert hellos[0]["num_connections"] == 1
    assert [c.ok for c in fake.calls_to("apps.connections.open")] == [True, True]


def test_the_socket_server_refuses_a_url_it_did_not_issue() -> None:
    socket = FakeSocketMode()
    with socket.serve() as url:
        port = url.split(":")[2].split("/")[0]
        response = httpx.get(f"http://127.0.0.1:{port}/link/?ticket=forged")
        assert response.status_code == 401
        assert socket.connections == 0
        with pytest.raises(AssertionError, match="no open Socket Mode connection"):
            socket.send_envelope("events_api", {"type": "event_callback"})


# -- views -----------------------------------------------------------------------------------------------


async def test_views_open_returns_the_view_as_slack_stores_it(
    client: AsyncWebClient, fake: FakeSlack
) -> None:
    response = await client.views_open(trigger_id=fake.issue_trigger_id(), view=form_modal())
    view = response["view"]
    assert view["id"].startswith("V") and view["hash"]
    assert view["team_id"] == TEAM_ID and view["root_view_id"] == view["id"]
    assert view["state"] == {"values": {}}
    assert view["callback_id"] == "create_connection"
    assert fake.views[view["id"]] == view
    assert fake.is_open(view["id"])
    [call] = fake.calls_to("views.open")
    assert call.body["view"]["title"]["text"] == "Create Confluent Cloud"


async def test_views_open_fills_in_missing_block_ids(client: AsyncWebClient, fake: FakeSlack) -> None:
    view = {
        "type": "modal",
        "title": plain("T"),
        "submit": plain("Go"),
        "blocks": [{"type": "input", "label": plain("L"), "element": {"type": "plain_text_input"}}],
    }
    stored = (await client.views_open(trigger_id=fake.issue_trigger_id(), view=view))["view"]
    assert stored["blocks"][0]["block_id"]
    assert stored["blocks"][0]["element"]["action_id"]


async def test_trigger_ids_must_be_issued_fresh_and_unused(fake: FakeSlack) -> None:
    now = [1000.0]
    fake.clock = lambda: now[0]
    client = AsyncWebClient(token=fake.bot_token, base_url=fake.api_url)

    never_issued = await error_of(client.views_open(trigger_id="123.456.abc", view=form_modal()))
    trigger = fake.issue_trigger_id()
    await client.views_open(trigger_id=trigger, view=form_modal())
    reused = await error_of(client.views_open(trigger_id=trigger, view=form_modal()))
    stale = fake.issue_trigger_id()
    now[0] += fake.trigger_ttl + 0.5
    expired = await error_of(client.views_open(trigger_id=stale, view=form_modal()))

    assert never_issued.response["error"] == "invalid_trigger_id"
    assert reused.response["error"] == "exchanged_trigger_id"
    assert expired.response["error"] == "expired_trigger_id"
    assert len(fake.views) == 1


async def test_invalid_view_is_refused_with_slacks_messages(client: AsyncWebClient, fake: FakeSlack) -> None:
    error = await error_of(
        client.views_open(trigger_id=fake.issue_trigger_id(), view=form_modal("Create Confluent Cloud!!!"))
    )
    assert error.response["error"] == "invalid_arguments"
    assert any("title" in m and "24" in m for m in error.response["response_metadata"]["messages"])
    assert fake.views == {}


async def test_views_open_requires_its_arguments(client: AsyncWebClient) -> None:
    error = await error_of(client.api_call("views.open", json={"view": form_modal()}))
    assert error.response["error"] == "invalid_arguments"
    assert error.response["response_metadata"]["messages"] == ["[ERROR] missing required field: trigger_id"]


async def test_views_update_checks_id_and_hash(client: AsyncWebClient, fake: FakeSlack) -> None:
    opened = (await client.views_open(trigger_id=fake.issue_trigger_id(), view=form_modal()))["view"]

    unknown = await error_of(client.views_update(view_id="VNOTTHERE01", view=info_modal("Verifying")))
    updated = (
        await client.views_update(view_id=opened["id"], hash=opened["hash"], view=info_modal("Verifying"))
    )["view"]
    stale = await error_of(
        client.views_update(view_id=opened["id"], hash=opened["hash"], view=info_modal("Done"))
    )
    too_long = await error_of(client.views_update(view_id=opened["id"], view=info_modal("x" * 25)))

    assert unknown.response["error"] == "not_found"
    assert updated["id"] == opened["id"] and updated["hash"] != opened["hash"]
    assert stale.response["error"] == "hash_conflict"
    assert too_long.response["error"] == "invalid_arguments"
    assert fake.views[opened["id"]]["title"]["text"] == "Verifying"


async def test_a_modal_the_user_closed_answers_views_update_with_not_found(
    client: AsyncWebClient, fake: FakeSlack
) -> None:
    root = (await client.views_open(trigger_id=fake.issue_trigger_id(), view=info_modal("One")))["view"]
    pushed = (
        await client.views_push(trigger_id=fake.issue_trigger_id(view_id=root["id"]), view=info_modal("Two"))
    )["view"]
    other = (await client.views_open(trigger_id=fake.issue_trigger_id(), view=info_modal("Other")))["view"]

    fake.close_modal(root["id"])

    for view_id in (root["id"], pushed["id"]):
        gone = await error_of(client.views_update(view_id=view_id, view=info_modal("Done")))
        assert gone.response["error"] == "not_found"
        assert not fake.is_open(view_id)
    assert (await client.views_update(view_id=other["id"], view=info_modal("Done")))["ok"]
    with pytest.raises(AssertionError, match="not an open modal"):
        fake.close_modal(root["id"])


async def test_views_update_by_external_id(client: AsyncWebClient, fake: FakeSlack) -> None:
    await client.views_open(trigger_id=fake.issue_trigger_id(), view={**form_modal(), "external_id": "ext-1"})
    duplicate = await error_of(
        client.views_open(trigger_id=fake.issue_trigger_id(), view={**form_modal(), "external_id": "ext-1"})
    )
    updated = (
        await client.views_update(external_id="ext-1", view={**info_modal("Done"), "external_id": "ext-1"})
    )["view"]
    assert duplicate.response["error"] == "duplicate_external_id"
    assert fake.views[updated["id"]]["title"]["text"] == "Done"


async def test_views_push_stacks_at_most_three(client: AsyncWebClient, fake: FakeSlack) -> None:
    root = (await client.views_open(trigger_id=fake.issue_trigger_id(), view=info_modal("One")))["view"]
    second = (
        await client.views_push(trigger_id=fake.issue_trigger_id(view_id=root["id"]), view=info_modal("Two"))
    )["view"]
    third = (
        await client.views_push(
            trigger_id=fake.issue_trigger_id(view_id=second["id"]), view=info_modal("Three")
        )
    )["view"]
    fourth = await error_of(
        client.views_push(trigger_id=fake.issue_trigger_id(view_id=third["id"]), view=info_modal("Four"))
    )
    assert second["previous_view_id"] == root["id"] and third["root_view_id"] == root["id"]
    assert fourth.response["error"] == "push_limit_reached"
    with pytest.raises(AssertionError, match="under another modal"):
        fake.open_view(root["id"])


async def test_views_publish_keeps_one_home_per_user(client: AsyncWebClient, fake: FakeSlack) -> None:
    home = {"type": "home", "blocks": cards("confluent_cloud")}
    first = (await client.views_publish(user_id=USER_ID, view=home))["view"]
    second = (await client.views_publish(user_id=USER_ID, view=home, hash=first["hash"]))["view"]
    conflict = await error_of(client.views_publish(user_id=USER_ID, view=home, hash=first["hash"]))
    modal_as_home = await error_of(client.views_publish(user_id=USER_ID, view=form_modal()))
    assert second["id"] == first["id"] and second["hash"] != first["hash"]
    assert conflict.response["error"] == "hash_conflict"
    assert modal_as_home.response["error"] == "invalid_arguments"
    assert fake.home_view(USER_ID) == second


# -- messages -------------------------------------------------------------------------------------------


async def test_post_message_records_and_validates_blocks(client: AsyncWebClient, fake: FakeSlack) -> None:
    fifty = [{"type": "section", "text": plain(f"row {i}")} for i in range(50)]
    posted = await client.chat_postMessage(channel=CHANNEL_ID, text="Connections", blocks=fifty)
    too_many = await error_of(
        client.chat_postMessage(channel=CHANNEL_ID, text="x", blocks=[*fifty, {"type": "divider"}])
    )
    with pytest.warns(UserWarning, match="text"):
        no_text = await error_of(client.chat_postMessage(channel=CHANNEL_ID, text=""))

    assert posted["channel"] == CHANNEL_ID and posted["ts"]
    assert too_many.response["error"] == "invalid_blocks"
    assert any("51 blocks" in m for m in too_many.response["errors"])
    assert no_text.response["error"] == "no_text"
    [message] = fake.messages
    assert (message.channel, message.ts, len(message.blocks), message.ephemeral) == (
        CHANNEL_ID,
        posted["ts"],
        50,
        False,
    )


async def test_chat_update_needs_a_message_the_bot_posted(client: AsyncWebClient, fake: FakeSlack) -> None:
    posted = await client.chat_postMessage(channel=CHANNEL_ID, text="Pending approval")
    missing = await error_of(client.chat_update(channel=CHANNEL_ID, ts="1.000001", text="Approved"))
    await client.chat_update(channel=CHANNEL_ID, ts=posted["ts"], text="Approved")
    assert missing.response["error"] == "message_not_found"
    assert fake.message_of(fake.calls_to("chat.postMessage")[0]).text == "Approved"


async def test_post_ephemeral_needs_a_member_and_is_seen_by_one_user(
    client: AsyncWebClient, fake: FakeSlack
) -> None:
    fake.channel_members[CHANNEL_ID] = {USER_ID}
    outsider = await error_of(client.chat_postEphemeral(channel=CHANNEL_ID, user="U0OUTSIDER1", text="hi"))
    posted = await client.chat_postEphemeral(channel=CHANNEL_ID, user=USER_ID, text="only you")
    assert outsider.response["error"] == "user_not_in_channel"
    assert [m.text for m in fake.visible_messages(CHANNEL_ID, USER_ID)] == ["only you"]
    assert fake.visible_messages(CHANNEL_ID, "U0SOMEONE01") == []
    assert fake.message_of(fake.calls_to("chat.postEphemeral")[-1]).ts == posted["message_ts"]


async def test_conversations_open_and_user_groups(client: AsyncWebClient, fake: FakeSlack) -> None:
    fake.usergroups["S0ADMINS01"] = ["U0ADMIN0001", USER_ID]
    dm = await client.conversations_open(users=USER_ID)
    again = await client.conversations_open(users=USER_ID)
    members = await client.usergroups_users_list(usergroup="S0ADMINS01")
    unknown = await error_of(client.usergroups_users_list(usergroup="S0NOSUCH01"))

    assert dm["channel"]["id"].startswith("D") and again["channel"]["id"] == dm["channel"]["id"]
    assert members["users"] == ["U0ADMIN0001", USER_ID]
    assert unknown.response["error"] == "no_such_subteam"
    call = fake.calls_to("usergroups.users.list")[0]
    assert call.http_method == "GET" and call.body["usergroup"] == "S0ADMINS01"


# -- response_url -----------------------------------------------------------------------------------------


async def test_response_url_posts_are_recorded_and_validated(fake: FakeSlack) -> None:
    url = fake.issue_response_url(channel_id=CHANNEL_ID, user_id=USER_ID)
    hook = AsyncWebhookClient(url)

    shown = await hook.send(text="Connections", blocks=cards("confluent_cloud"))
    bad = await hook.send(text="x", blocks=[{"type": "header", "text": plain("h" * 151)}])
    empty = await hook.send(text="")

    assert (shown.status_code, shown.body) == (200, "ok")
    assert (bad.status_code, bad.body) == (400, "invalid_blocks")
    assert (empty.status_code, empty.body) == (400, "no_text")
    hooks = fake.wait_for_hook(3)
    assert [h.ok for h in hooks] == [True, False, False]
    assert hooks[0].body["blocks"][0]["accessory"]["value"] == "confluent_cloud"
    assert fake.hooks_to(url) == hooks
    [message] = fake.visible_messages(CHANNEL_ID, USER_ID)
    assert message.ephemeral and message.user == USER_ID


async def test_response_url_allows_five_posts(fake: FakeSlack) -> None:
    hook = AsyncWebhookClient(fake.issue_response_url(channel_id=CHANNEL_ID, user_id=USER_ID))
    statuses = [(await hook.send(text=f"update {i}")).status_code for i in range(6)]
    assert statuses == [200] * 5 + [404]
    assert fake.hooks[-1].error == "used_url"


async def test_response_url_of_an_action_replaces_or_deletes_its_message(
    client: AsyncWebClient, fake: FakeSlack
) -> None:
    posted = await client.chat_postMessage(channel=CHANNEL_ID, text="Approve?")
    url = fake.issue_response_url(
        channel_id=CHANNEL_ID, user_id=USER_ID, message_ts=posted["ts"], kind="actions"
    )
    await AsyncWebhookClient(url).send(text="Approved by Jane", replace_original=True)
    assert [m.text for m in fake.messages] == ["Approved by Jane"]
    await AsyncWebhookClient(url).send(delete_original=True)
    assert fake.messages == []


# -- request builders ---------------------------------------------------------------------------------


def test_signature_is_what_slack_sdk_verifies() -> None:
    body = payload_body({"type": "block_actions", "note": "ünïcode & spaces"})
    headers = sign(body, SIGNING_SECRET)
    verifier = SignatureVerifier(SIGNING_SECRET)
    assert verifier.is_valid_request(body, headers)
    assert not verifier.is_valid_request(body + "x", headers)
    assert not SignatureVerifier("another-secret").is_valid_request(body, headers)
    assert not verifier.is_valid_request(body, sign(body, SIGNING_SECRET, timestamp=int(time.time()) - 301))
    assert headers["content-type"] == "application/x-www-form-urlencoded"


def test_payload_body_round_trips() -> None:
    payload = {"type": "view_submission", "view": {"private_metadata": '{"a": "b&c=d"}'}}
    assert json.loads(parse_qs(payload_body(payload))["payload"][0]) == payload


def test_slash_command_fields_are_strings() -> None:
    fields = slash_command(
        "test all",
        team_id=TEAM_ID,
        user_id=USER_ID,
        channel_id=CHANNEL_ID,
        response_url="http://hooks/x",
        trigger_id="1.2.3",
    )
    assert all(isinstance(v, str) for v in fields.values())
    assert (fields["command"], fields["text"], fields["is_enterprise_install"]) == (
        "/connections",
        "test all",
        "false",
    )


def test_click_on_an_ephemeral_message_carries_no_message() -> None:
    common: dict[str, Any] = dict(
        response_url="http://hooks/x",
        trigger_id="1.2.3",
        team_id=TEAM_ID,
        user_id=USER_ID,
        channel_id=CHANNEL_ID,
        blocks=cards("confluent_cloud", "snowflake"),
    )
    ephemeral = block_actions_on_message("connect_provider", "snowflake", ephemeral=True, **common)
    in_channel = block_actions_on_message("connect_provider", "snowflake", ephemeral=False, **common)

    assert "message" not in ephemeral and ephemeral["container"]["is_ephemeral"] is True
    assert in_channel["message"]["blocks"] == common["blocks"]
    assert in_channel["container"]["message_ts"] == in_channel["message"]["ts"]
    [action] = ephemeral["actions"]
    assert (action["block_id"], action["value"], action["type"]) == (
        "provider_snowflake",
        "snowflake",
        "button",
    )


def test_only_rendered_buttons_can_be_clicked() -> None:
    with pytest.raises(ValueError, match="2 elements"):
        find_action(cards("a", "b"), "connect_provider")
    with pytest.raises(ValueError, match="no element"):
        find_action(cards("a"), "connect_provider", "c")


def test_view_submission_fills_each_input_with_its_own_action_id() -> None:
    view = {**form_modal(), "id": "V0A1B2C3D4E", "hash": "1.abc"}
    view["blocks"][2]["element"]["action_id"] = "key_input"
    payload = view_submission(
        view, {"name": "prod-kafka", "api_key": "ABCDEFGH"}, user_id=USER_ID, team_id=TEAM_ID
    )

    assert payload["view"]["state"]["values"] == {
        "name": {"value": {"type": "plain_text_input", "value": "prod-kafka"}},
        "api_key": {"key_input": {"type": "plain_text_input", "value": "ABCDEFGH"}},
        "note": {"value": {"type": "plain_text_input", "value": None}},
    }
    assert (payload["view"]["id"], payload["view"]["hash"]) == ("V0A1B2C3D4E", "1.abc")
    assert payload["view"]["private_metadata"] == view["private_metadata"]
    assert payload["view"]["callback_id"] == "create_connection"


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({"name": "prod", "api_key": "K", "nope": "x"}, "not input blocks"),
        ({"name": "prod"}, "required input 'api_key' is empty"),
        ({"name": "x" * 21, "api_key": "K"}, "max 20"),
    ],
)
def test_view_submission_refuses_what_the_slack_client_would_not_send(
    values: dict[str, str], reason: str
) -> None:
    view = {**form_modal(), "id": "V0A1B2C3D4E", "hash": "1.abc"}
    with pytest.raises(ValueError, match=reason):
        view_submission(view, values, user_id=USER_ID, team_id=TEAM_ID)


# -- the sender against a real Bolt app ------------------------------------------------------------------


def bolt_app(fake: FakeSlack, seen: dict[str, Any], *, update_before_ack: bool = False) -> Starlette:
    """A tiny Bolt app: /connections shows cards, Connect opens the form, submit verifies then updates."""
    bolt = AsyncApp(
        client=AsyncWebClient(token=fake.bot_token, base_url=fake.api_url), signing_secret=SIGNING_SECRET
    )

    @bolt.command("/connections")
    async def command(ack: AsyncAck, respond: AsyncRespond) -> None:
        await ack()
        await respond(text="Connections", blocks=cards("confluent_cloud", "snowflake"))

    @bolt.action("connect_provider")
    async def connect(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        seen["clicked"] = body["actions"][0]["value"]
        seen["has_message"] = "message" in body
        await client.views_open(trigger_id=body["trigger_id"], view=form_modal())

    @bolt.action("show_help")
    async def show_help(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        seen["typed_so_far"] = body["view"]["state"]["values"]["name"]["value"]["value"]
        await client.views_push(trigger_id=body["trigger_id"], view=info_modal("Help"))

    @bolt.view("create_connection")
    async def submitted(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        values = body["view"]["state"]["values"]
        seen["name"] = values["name"]["value"]["value"]
        if values["name"]["value"]["value"] == "taken":
            await ack(response_action="errors", errors={"name": "That name is taken"})
            return
        if values["name"]["value"]["value"] == "long":
            await ack(response_action="update", view=info_modal("A title far too long for Slack"))
            return
        if update_before_ack:
            await client.views_update(view_id=body["view"]["id"], view=info_modal("Connected"))
        await ack(response_action="update", view=info_modal("Verifying…"))
        if not update_before_ack:
            await client.views_update(view_id=body["view"]["id"], view=info_modal("Connected"))

    handler = AsyncSlackRequestHandler(bolt)

    async def events(request: Request) -> Response:
        return await handler.handle(request)

    return Starlette(routes=[Route("/slack/events", events, methods=["POST"])])


@pytest.fixture
def seen() -> dict[str, Any]:
    return {}


@pytest.fixture
def sender(fake: FakeSlack, seen: dict[str, Any]) -> Iterator[SlackSender]:
    with (
        serve_asgi(bolt_app(fake, seen)) as app_url,
        SlackSender(app_url, signing_secret=SIGNING_SECRET, fake=fake) as slack,
    ):
        yield slack


def test_command_click_and_submit_flow_through_bolt(
    sender: SlackSender, fake: FakeSlack, seen: dict[str, Any]
) -> None:
    assert sender.command().status_code == 200
    [hook] = fake.wait_for_hook()

    assert sender.action("connect_provider", "snowflake", on=hook).status_code == 200
    [opened] = fake.wait_for("views.open")
    assert opened.ok, opened.error
    assert (seen["clicked"], seen["has_message"]) == ("snowflake", False)

    view_id = opened.response["view"]["id"]
    assert sender.submit(view_id, {"name": "prod-kafka", "api_key": "ABCDEFGH"}).status_code == 200
    fake.wait_for("views.update")
    assert seen["name"] == "prod-kafka"
    assert [c.ok for c in fake.calls_to("views.update")] == [True]
    assert fake.views[view_id]["title"]["text"] == "Connected"


def test_submission_errors_are_shown_under_the_input(sender: SlackSender, fake: FakeSlack) -> None:
    view_id = open_form(sender, fake)
    sender.submit(view_id, {"name": "taken", "api_key": "K"})
    assert fake.view_errors == {view_id: {"name": "That name is taken"}}
    assert fake.is_open(view_id)


def test_forged_and_stale_requests_are_refused(sender: SlackSender, fake: FakeSlack) -> None:
    body = "command=%2Fconnections&text="
    forged = sender.post_raw(body, sign(body, "not-the-secret"))
    stale = sender.post_raw(body, sign(body, SIGNING_SECRET, timestamp=int(time.time()) - 301))
    assert (forged.status_code, stale.status_code) == (401, 401)
    assert fake.hooks == []


def test_updating_a_view_before_answering_its_submission_is_caught(
    fake: FakeSlack, seen: dict[str, Any]
) -> None:
    fake.ack_timeout = 0.2
    with (
        serve_asgi(bolt_app(fake, seen, update_before_ack=True)) as app_url,
        SlackSender(app_url, signing_secret=SIGNING_SECRET, fake=fake) as slack,
    ):
        slack.command()
        slack.action("connect_provider", "confluent_cloud", on=fake.wait_for_hook()[0])
        view_id = fake.wait_for("views.open")[0].response["view"]["id"]
        with pytest.raises(AssertionError, match="before answering"):
            slack.submit(view_id, {"name": "prod", "api_key": "K"})
    assert fake.views[view_id]["title"]["text"] == "Verifying…"


def open_form(sender: SlackSender, fake: FakeSlack) -> str:
    sender.command()
    sender.action("connect_provider", "confluent_cloud", on=fake.wait_for_hook()[0])
    view_id: str = fake.wait_for("views.open")[0].response["view"]["id"]
    return view_id


def test_click_inside_a_modal_carries_its_state_and_can_push(
    sender: SlackSender, fake: FakeSlack, seen: dict[str, Any]
) -> None:
    view_id = open_form(sender, fake)
    assert sender.action("show_help", on=view_id, values={"name": "draft"}).status_code == 200
    [pushed] = fake.wait_for("views.push")
    assert pushed.ok, pushed.error
    assert seen["typed_so_far"] == "draft"
    assert pushed.response["view"]["previous_view_id"] == view_id
    with pytest.raises(AssertionError, match="under another modal"):
        sender.submit(view_id, {"name": "prod", "api_key": "K"})


def test_an_answer_slack_would_refuse_fails_the_submission(sender: SlackSender, fake: FakeSlack) -> None:
    view_id = open_form(sender, fake)
    with pytest.raises(AssertionError, match="refuse the update view: title"):
        sender.submit(view_id, {"name": "long", "api_key": "K"})
    assert fake.views[view_id]["title"]["text"] == "Create Confluent Cloud"
