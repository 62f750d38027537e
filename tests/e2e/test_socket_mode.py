"""The bot in Socket Mode, run as an operator runs it: ``connections-bot serve`` with an app-level token
and no signing secret. It asks the fake Web API for a WebSocket URL (``apps.connections.open``),
connects to the fake Socket Mode server, and gets commands, clicks and form submissions as envelopes
that it must acknowledge over the socket."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bot import ids
from bot.app import SHUTDOWN_DRAIN_SECONDS
from tests.e2e.conftest import CloudKey
from tests.e2e.helpers import form_values, visible_text, wait_for_result, wait_until
from tests.e2e.test_cli import EXE, clean_env, serving
from tests.fakes.confluent_api import FakeConfluent, new_api_key, new_api_secret
from tests.fakes.slack_api import FakeSlack, Message
from tests.fakes.socket_mode import Ack, FakeSocketMode
from tests.support.slack_requests import (
    CHANNEL_ID,
    TEAM_ID,
    USER_ID,
    block_actions_on_message,
    find_action,
    form_body,
    slash_command,
    view_submission,
)


@dataclass
class SocketBot:
    """A ``connections-bot serve`` process in Socket Mode and the fakes it talks to."""

    url: str
    process: subprocess.Popen[str]
    slack: FakeSlack
    socket: FakeSocketMode
    database_url: str

    def command(self, text: str = "") -> tuple[Ack, str]:
        """Run ``/connections <text>`` over the socket; return the ack and the command's response_url."""
        response_url = self.slack.issue_response_url(channel_id=CHANNEL_ID, user_id=USER_ID)
        payload = slash_command(
            text,
            team_id=TEAM_ID,
            user_id=USER_ID,
            channel_id=CHANNEL_ID,
            response_url=response_url,
            trigger_id=self.slack.issue_trigger_id(),
        )
        ack = self.socket.wait_for_ack(self.socket.send_envelope("slash_commands", payload))
        if ack.payload:
            # A message in the ack is shown to the user, as one in an HTTP ack body is.
            body = json.dumps(ack.payload).encode()
            self.slack.show_command_ack(response_url, 200, "application/json", body)
        return ack, response_url

    def click(self, action_id: str, value: str, *, on: Message) -> Ack:
        """Click a button on a message the user sees, over the socket."""
        payload = block_actions_on_message(
            action_id,
            value,
            ephemeral=on.ephemeral,
            response_url=self.slack.issue_response_url(
                channel_id=on.channel, user_id=USER_ID, message_ts=on.ts, kind="actions"
            ),
            trigger_id=self.slack.issue_trigger_id(),
            team_id=TEAM_ID,
            user_id=USER_ID,
            channel_id=on.channel,
            blocks=on.blocks,
            message_ts=on.ts,
            message_text=on.text,
        )
        return self.socket.wait_for_ack(self.socket.send_envelope("interactive", payload))

    def submit(self, view_id: str, values: Mapping[str, str]) -> Ack:
        """Submit the open modal over the socket; its answer (in the ack) is applied as Slack would."""
        payload = view_submission(
            self.slack.open_view(view_id),
            values,
            user_id=USER_ID,
            team_id=TEAM_ID,
            trigger_id=self.slack.issue_trigger_id(view_id=view_id),
        )
        self.slack.begin_submission(view_id)
        try:
            ack = self.socket.wait_for_ack(self.socket.send_envelope("interactive", payload))
        except BaseException:
            self.slack.end_submission(view_id, 0, "", b"")
            raise
        body = json.dumps(ack.payload).encode() if ack.payload else b""
        self.slack.end_submission(view_id, 200, "application/json", body)
        return ack

    def stop(self) -> str:
        """SIGTERM the process, wait for it to stop, and return everything it wrote to stderr."""
        self.process.terminate()
        _, stderr = self.process.communicate(timeout=20)
        return stderr


@pytest.fixture
def socket_bot(
    tmp_path: Path, fake_slack: FakeSlack, fake_confluent: tuple[FakeConfluent, str]
) -> Iterator[SocketBot]:
    _, confluent_url = fake_confluent
    socket = FakeSocketMode()
    database_url = f"sqlite:///{tmp_path / 'socket-mode.db'}"
    with socket.serve() as socket_url:
        fake_slack.socket_mode_url = socket_url
        env = clean_env(
            tmp_path,
            SLACK_BOT_TOKEN=fake_slack.bot_token,
            SLACK_APP_TOKEN=fake_slack.app_token,
            SLACK_API_URL=fake_slack.api_url,
            CONFLUENT_CLOUD_API_URL=confluent_url,
            DATABASE_URL=database_url,
        )
        assert "SLACK_SIGNING_SECRET" not in env
        with serving(env, tmp_path) as (url, process):
            socket.wait_for_connection()
            yield SocketBot(url, process, fake_slack, socket, database_url)


def connections_message(bot: SocketBot) -> Message:
    """Run ``/connections`` and return the message the user sees."""
    _, response_url = bot.command("")
    [hook] = bot.slack.wait_for_hook()
    assert hook.ok, hook.error
    assert bot.slack.hooks_to(response_url) == [hook]
    return bot.slack.message_of(hook)


def open_form(bot: SocketBot) -> str:
    """Click Connect on the Confluent Cloud card; return the id of the modal it opened."""
    bot.click(ids.ACTION_CONNECT, "confluent_cloud", on=connections_message(bot))
    [call] = bot.slack.wait_for("views.open")
    assert call.ok, call.error
    return str(call.response["view"]["id"])


def test_it_connects_with_the_app_token_and_serves_healthz(socket_bot: SocketBot) -> None:
    [opened] = socket_bot.slack.calls_to("apps.connections.open")
    assert opened.ok
    assert opened.headers["authorization"] == f"Bearer {socket_bot.slack.app_token}"
    assert socket_bot.socket.connections == 1
    assert socket_bot.socket.sent[0]["type"] == "hello"
    health = httpx.get(f"{socket_bot.url}/healthz")
    assert health.status_code == 200
    assert health.json()["slack_socket"] == "ok"


def test_a_slash_command_is_acked_on_the_socket_and_answered_at_its_response_url(
    socket_bot: SocketBot,
) -> None:
    message = connections_message(socket_bot)

    [ack] = socket_bot.socket.acks()
    assert ack.connection == 1
    assert message.ephemeral and message.user == USER_ID and message.channel == CHANNEL_ID
    text = visible_text(message.blocks)
    assert "Confluent Cloud" in text
    _, connect = find_action(message.blocks, ids.ACTION_CONNECT, "confluent_cloud")
    assert connect["text"]["text"] == "Connect"


def test_a_connect_click_on_the_socket_opens_the_create_confluent_cloud_modal(socket_bot: SocketBot) -> None:
    message = connections_message(socket_bot)

    ack = socket_bot.click(ids.ACTION_CONNECT, "confluent_cloud", on=message)

    assert ack.payload is None
    [call] = socket_bot.slack.wait_for("views.open")
    assert call.ok, call.error
    assert call.headers["authorization"] == f"Bearer {socket_bot.slack.bot_token}"
    assert call.body["view"]["title"]["text"] == "Create Confluent Cloud"
    assert call.body["view"]["callback_id"] == ids.VIEW_CREATE
    assert socket_bot.slack.is_open(call.response["view"]["id"])


def test_a_form_with_a_problem_gets_its_inline_errors_in_the_ack(socket_bot: SocketBot) -> None:
    view_id = open_form(socket_bot)

    # The key and the secret pasted into each other's boxes: caught offline, answered in the ack.
    ack = socket_bot.submit(view_id, form_values("prod", new_api_secret(), new_api_key()))

    assert ack.payload is not None
    assert ack.payload["response_action"] == "errors"
    assert "swapped" in ack.payload["errors"]["api_key"].lower()
    assert socket_bot.slack.view_errors[view_id]["api_key"] == ack.payload["errors"]["api_key"]
    assert socket_bot.slack.is_open(view_id)


def test_a_valid_form_shows_verifying_in_the_ack_and_the_outcome_after_it(
    socket_bot: SocketBot, cloud_key: CloudKey
) -> None:
    view_id = open_form(socket_bot)

    ack = socket_bot.submit(
        view_id, form_values("Production Confluent Cloud", cloud_key.key, cloud_key.secret)
    )

    assert ack.payload is not None
    assert ack.payload["response_action"] == "update"
    assert "Verifying" in visible_text(ack.payload["view"])
    result = visible_text(wait_for_result(socket_bot.slack, view_id))
    assert "Cloud API key accepted" in result
    assert cloud_key.secret not in json.dumps(socket_bot.slack.views[view_id])


def test_after_slack_asks_it_to_reconnect_it_keeps_answering_on_the_new_connection(
    socket_bot: SocketBot,
) -> None:
    # Slack recycles Socket Mode connections every few hours, announcing it with a disconnect message.
    socket_bot.socket.disconnect("refresh_requested")
    assert socket_bot.socket.wait_for_connection(2) == 2

    ack, _ = socket_bot.command("")

    assert ack.connection == 2
    assert socket_bot.slack.wait_for_hook()[0].ok
    assert [c.ok for c in socket_bot.slack.calls_to("apps.connections.open")] == [True, True]


def test_there_is_no_http_request_url_in_socket_mode(socket_bot: SocketBot) -> None:
    body = form_body(
        slash_command(
            "",
            team_id=TEAM_ID,
            user_id=USER_ID,
            channel_id=CHANNEL_ID,
            response_url=socket_bot.slack.issue_response_url(channel_id=CHANNEL_ID, user_id=USER_ID),
            trigger_id=socket_bot.slack.issue_trigger_id(),
        )
    )
    response = httpx.post(
        f"{socket_bot.url}/slack/events",
        content=body,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 404
    assert socket_bot.slack.hooks == []


def test_sigterm_stops_it_and_its_stderr_never_holds_a_token_or_a_secret(
    socket_bot: SocketBot, cloud_key: CloudKey
) -> None:
    view_id = open_form(socket_bot)
    socket_bot.submit(view_id, form_values("prod", cloud_key.key, cloud_key.secret))
    wait_for_result(socket_bot.slack, view_id)

    stderr = socket_bot.stop()

    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal as servers do.
    assert socket_bot.process.returncode in (0, -signal.SIGTERM)
    assert "connected to Slack in Socket Mode" in stderr
    assert "stopped" in stderr
    for secret in (socket_bot.slack.app_token, socket_bot.slack.bot_token, cloud_key.secret):
        assert secret not in stderr
    # The process is gone, and with it its end of the socket.
    assert socket_bot.socket.wait_for_no_connection() == 1


def test_on_sigterm_the_socket_closes_before_the_work_in_flight_finishes(
    socket_bot: SocketBot, fake_confluent: tuple[FakeConfluent, str], cloud_key: CloudKey
) -> None:
    confluent, _ = fake_confluent
    view_id = open_form(socket_bot)
    confluent.hold()
    try:
        socket_bot.submit(view_id, form_values("prod", cloud_key.key, cloud_key.secret))
        wait_until(lambda: confluent.held >= 1, what="the verification request to reach Confluent")
        socket_bot.process.terminate()
        # Slack must stop sending this process envelopes while it finishes the verification: it
        # would ack them and then drop their work. Waiting a quarter of the drain's allowance tells a
        # socket closed first apart from one closed only after the drain.
        socket_bot.socket.wait_for_no_connection(timeout=SHUTDOWN_DRAIN_SECONDS / 4)
        assert confluent.held == 1
    finally:
        confluent.release()
    assert "Cloud API key accepted" in visible_text(wait_for_result(socket_bot.slack, view_id))
    socket_bot.process.wait(timeout=20)


def test_an_app_token_slack_refuses_stops_start_up_with_exit_2(tmp_path: Path, fake_slack: FakeSlack) -> None:
    revoked = "xapp-1-A0A1B2C3D4E-2222222222222-revokedapptoken"
    env = clean_env(
        tmp_path,
        SLACK_BOT_TOKEN=fake_slack.bot_token,
        SLACK_APP_TOKEN=revoked,
        SLACK_API_URL=fake_slack.api_url,
        DATABASE_URL=f"sqlite:///{tmp_path / 'socket-mode.db'}",
        HOST="127.0.0.1",
        PORT="0",
    )
    process = subprocess.Popen(
        [EXE, "serve"], env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        _, stderr = process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        process.terminate()
        _, stderr = process.communicate(timeout=20)

    assert [c.error for c in fake_slack.calls_to("apps.connections.open")][:1] == ["invalid_auth"]
    assert process.returncode == 2
    assert "SLACK_APP_TOKEN" in stderr
    assert revoked not in stderr
