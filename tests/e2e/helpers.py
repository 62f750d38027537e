"""Driving the bot the way a user does (opening and filling the create form) and reading what
the user sees and what the bot stored. ``visible_text`` lives in :mod:`tests.support.block_text`
and is re-exported here for the end-to-end tests."""

from __future__ import annotations

from typing import Any

from bot import ids
from tests.fakes.slack_api import FakeSlack
from tests.support.block_text import visible_text
from tests.support.slack_requests import SlackSender

__all__ = [
    "form_values",
    "input_block",
    "latest_message",
    "open_create_form",
    "stored",
    "visible_text",
    "wait_for_result",
    "wait_until",
]


def latest_message(slack: FakeSlack, sender: SlackSender) -> Any:
    messages = slack.visible_messages(sender.channel_id, sender.user_id)
    assert messages, "the user sees no message"
    return messages[-1]


def open_create_form(slack: FakeSlack, sender: SlackSender) -> str:
    """Type /connections, click Connect on the Confluent Cloud card; return the modal's view id."""
    hooks_before = len(slack.hooks)
    response = sender.command("")
    assert response.status_code == 200
    # Wait for this command's reply, not an earlier one.
    slack.wait_for_hook(count=hooks_before + 1)
    message = latest_message(slack, sender)
    opened_before = len(slack.calls_to("views.open"))
    sender.action(ids.ACTION_CONNECT, "confluent_cloud", on=message)
    call = slack.wait_for("views.open", count=opened_before + 1)[-1]
    assert call.ok, call.error
    return str(call.response["view"]["id"])


def form_values(name: str, key: str, secret: str, **extra: str) -> dict[str, str]:
    return {ids.BLOCK_NAME: name, "api_key": key, "api_secret": secret, **extra}


def wait_for_result(slack: FakeSlack, view_id: str, count: int = 1) -> dict[str, Any]:
    """The view after the bot's ``count``-th views.update of ``view_id`` (by default the one that
    replaced "Verifying…" with the outcome)."""

    def updates() -> list[Any]:
        return [c for c in slack.calls_to("views.update") if c.body.get("view_id") == view_id]

    wait_until(lambda: len(updates()) >= count, what=f"views.update #{count} of {view_id}")
    last = updates()[-1]
    assert last.ok, last.error
    return slack.views[view_id]


def input_block(view: dict[str, Any], block_id: str) -> dict[str, Any]:
    for block in view["blocks"]:
        if block.get("type") == "input" and block.get("block_id") == block_id:
            return dict(block)
    raise AssertionError(f"no input {block_id!r} in the view")


def stored(database_url: str) -> dict[str, list[Any]]:
    """Every row the bot stored, by table, read with a fresh engine."""
    import asyncio

    from sqlalchemy import select

    from bot.store import AuditEvent, Connection, Credential, Database, VerificationRecord

    async def read() -> dict[str, list[Any]]:
        db = Database.from_url(database_url)
        try:
            async with db.read() as tx:
                result: dict[str, list[Any]] = {}
                for name, model in (
                    ("connections", Connection),
                    ("credentials", Credential),
                    ("verifications", VerificationRecord),
                    ("audit_events", AuditEvent),
                ):
                    result[name] = list((await tx.session.scalars(select(model))).all())
                return result
        finally:
            await db.dispose()

    return asyncio.run(read())


def wait_until(condition: Any, timeout: float = 5.0, what: str = "condition") -> None:
    """Poll ``condition()`` until it is true; fail with ``what`` after ``timeout`` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)
