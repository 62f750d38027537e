"""Removing a connection, driven as Slack drives the bot: ``/connections remove <name>`` asks first,
the Remove button (behind Slack's confirm dialog) revokes the connection, destroys its stored
credentials, cancels a rotation that was waiting, and frees the name; who may, and only once."""

from __future__ import annotations

from bot import ids
from bot.domain import RotationStatus, Status
from tests.e2e import test_approvals
from tests.e2e.conftest import Bot, CloudKey
from tests.e2e.helpers import stored, visible_text, wait_until
from tests.e2e.test_approvals import ADMIN, GROUP_MEMBER, REQUESTER, audit, click, dms_to
from tests.e2e.test_rotation import (
    NAME,
    active_connection,
    command_reply,
    connection,
    mask,
    new_cloud_key,
    open_rotation_by_command,
    opened_credentials,
    register,
    replies_in_channel,
    request_rotation,
    rotation_status,
    updated_in_place,
)
from tests.e2e.test_security import assert_not_leaked
from tests.fakes.slack_api import Message
from tests.support.databases import dump_database_text
from tests.support.slack_requests import CHANNEL_ID, find_action

# The approval tests' fixtures, found by pytest under these names in this module.
abot = test_approvals.abot
approvals_env = test_approvals.approvals_env


def remove_prompt(bot: Bot, name: str, user: str) -> Message:
    """``/connections remove <name>`` as ``user``; the prompt they see, with its Remove button."""
    text = command_reply(bot, f"remove {name}", user)
    [prompt] = [
        m
        for m in bot.slack.visible_messages(CHANNEL_ID, user)
        if m.ephemeral and visible_text(m.blocks) == text
    ]
    return prompt


def click_remove(bot: Bot, connection_id: str, prompt: Message, user: str) -> str:
    """Click Remove (and confirm) on ``prompt`` as ``user``; what they are told."""
    before = len(replies_in_channel(bot, user))
    click(bot, ids.ACTION_REMOVE, connection_id, prompt, user)
    wait_until(lambda: len(replies_in_channel(bot, user)) > before, what="the answer to Remove")
    return replies_in_channel(bot, user)[before]


def test_the_prompt_asks_for_confirmation_and_changes_nothing_by_itself(
    abot: Bot, cloud_key: CloudKey
) -> None:
    connection_id = active_connection(abot, cloud_key)
    prompt = remove_prompt(abot, NAME, REQUESTER)
    text = visible_text(prompt.blocks)
    assert f"Remove “{NAME}”?" in text and "cannot be undone" in text.lower()
    _, button = find_action(prompt.blocks, ids.ACTION_REMOVE)
    assert (button["value"], button["style"], button["text"]["text"]) == (connection_id, "danger", "Remove")
    confirm = button["confirm"]
    assert confirm["title"]["text"] == "Remove connection?"
    assert NAME in confirm["text"]["text"] and "cannot be undone" in confirm["text"]["text"]
    assert (confirm["confirm"]["text"], confirm["deny"]["text"], confirm["style"]) == (
        "Remove",
        "Cancel",
        "danger",
    )

    row = connection(abot, connection_id)
    assert row.status == Status.ACTIVE
    assert len(opened_credentials(abot, connection_id)) == 2
    assert audit(abot, "connection.removed") == []


def test_the_owner_removes_a_connection_with_a_waiting_rotation_and_the_name_is_free_again(
    abot: Bot, cloud_key: CloudKey
) -> None:
    connection_id = active_connection(abot, cloud_key)
    new = new_cloud_key(abot)
    rotation_id, rotation_request = request_rotation(abot, open_rotation_by_command(abot, NAME), new)
    assert len(opened_credentials(abot, connection_id)) == 4
    prompt = remove_prompt(abot, NAME, REQUESTER)
    dms_before = len(dms_to(abot, REQUESTER))

    reply = click_remove(abot, connection_id, prompt, REQUESTER)
    assert f"“{NAME}”" in reply and f"removed by <@{REQUESTER}>" in reply
    assert "stored credentials were destroyed" in reply

    # Revoked, every stored version destroyed, the waiting rotation cancelled.
    row = connection(abot, connection_id)
    assert (row.status, row.next_check_at) == (Status.REVOKED, None)
    assert [c for c in stored(abot.database_url)["credentials"] if c.connection_id == connection_id] == []
    dump = dump_database_text(abot.database_url)
    for secret in (cloud_key.key, cloud_key.secret, new.key, new.secret):
        assert secret not in dump
    assert rotation_status(abot, rotation_id) is RotationStatus.CANCELLED
    [event] = audit(abot, "connection.removed")
    assert (event.actor, event.connection_id, event.before_status, event.after_status) == (
        REQUESTER,
        connection_id,
        Status.ACTIVE,
        Status.REVOKED,
    )
    assert event.details["ciphertexts_destroyed"] == 4
    assert event.details["cancelled_rotation"] == rotation_id

    # The admins' rotation request says so, and the one who asked for the rotation is told.
    cancelled = updated_in_place(abot, rotation_request)
    assert "Cancelled" in cancelled and "connection was removed" in cancelled
    wait_until(lambda: dms_to(abot, REQUESTER)[dms_before:], what="the rotation requester's DM")
    assert any("cancelled" in dm for dm in dms_to(abot, REQUESTER)[dms_before:])

    # A second click (the prompt is still on screen) removes nothing more.
    again = click_remove(abot, connection_id, prompt, REQUESTER)
    assert "already revoked" in again and "nothing to remove" in again
    assert len(audit(abot, "connection.removed")) == 1

    # Its credentials are gone, so there is nothing to re-test; the name can be used again.
    before = len(replies_in_channel(abot, REQUESTER))
    abot.sender.command(f"test {NAME}")
    wait_until(
        lambda: any("revoked" in r for r in replies_in_channel(abot, REQUESTER)[before:]),
        what="the re-test refusal",
    )
    assert any("no stored credentials" in r for r in replies_in_channel(abot, REQUESTER)[before:])
    new_id, _ = register(abot, new, NAME)
    assert new_id != connection_id
    assert connection(abot, new_id).key_hint == mask(new.key)

    assert_not_leaked(abot, cloud_key.key, cloud_key.secret)


def test_an_admin_who_does_not_own_the_connection_may_remove_it_and_the_owner_is_told(
    abot: Bot, cloud_key: CloudKey
) -> None:
    connection_id = active_connection(abot, cloud_key)
    dms_before = len(dms_to(abot, REQUESTER))
    prompt = remove_prompt(abot, NAME, GROUP_MEMBER)  # an admin through the admin user group

    reply = click_remove(abot, connection_id, prompt, GROUP_MEMBER)
    assert f"removed by <@{GROUP_MEMBER}>" in reply
    assert connection(abot, connection_id).status == Status.REVOKED
    assert opened_credentials(abot, connection_id) == {}
    [event] = audit(abot, "connection.removed")
    assert event.actor == GROUP_MEMBER

    # The approval's DM may still be on its way too: look for the removal's among the new ones.
    def removal_dms() -> list[str]:
        return [dm for dm in dms_to(abot, REQUESTER)[dms_before:] if "removed by" in dm]

    wait_until(removal_dms, what="the owner's DM")
    [dm] = removal_dms()
    assert f"“{NAME}”" in dm and f"removed by <@{GROUP_MEMBER}>" in dm


def test_only_an_active_connection_can_be_removed(abot: Bot, cloud_key: CloudKey) -> None:
    assert "/connections remove &lt;name&gt;" in command_reply(abot, "remove", REQUESTER)
    unknown = command_reply(abot, "remove No Such Connection", REQUESTER)
    assert "There is no connection named “No Such Connection”" in unknown

    connection_id, _ = register(abot, cloud_key, NAME)
    pending = command_reply(abot, f"remove {NAME}", ADMIN)
    assert "still awaits approval" in pending and "reject" in pending
    assert all(
        b.get("type") != "actions" for m in abot.slack.visible_messages(CHANNEL_ID, ADMIN) for b in m.blocks
    )
    assert connection(abot, connection_id).status == Status.PENDING_APPROVAL
    assert len(opened_credentials(abot, connection_id)) == 2
    assert audit(abot, "connection.removed") == []


def test_removing_a_failing_connection_closes_its_alert(abot: Bot, cloud_key: CloudKey) -> None:
    connection_id = active_connection(abot, cloud_key)
    abot.confluent.revoke_key(cloud_key.key)
    abot.sender.command(f"test {NAME}")
    wait_until(lambda: connection(abot, connection_id).alert_ts is not None, what="the alert")
    alert_ts = connection(abot, connection_id).alert_ts

    click_remove(abot, connection_id, remove_prompt(abot, NAME, REQUESTER), REQUESTER)

    # A reply in the alert's thread says who removed it, and the alert offers no buttons any more.
    wait_until(
        lambda: any(m.thread_ts == alert_ts for m in abot.slack.messages),
        what="the note in the alert's thread",
    )
    [note] = [m for m in abot.slack.messages if m.thread_ts == alert_ts]
    assert "was removed by" in visible_text(note.blocks)

    def alert() -> Message:
        [shown] = [m for m in abot.slack.messages if m.ts == alert_ts]
        return shown

    wait_until(lambda: "was removed by" in visible_text(alert().blocks), what="the alert updated")
    assert not [b for b in alert().blocks if b.get("type") == "actions"]
