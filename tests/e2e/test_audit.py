"""``/connections audit <name>``: an admin reads who did what to a connection; nobody else can."""

from __future__ import annotations

import asyncio

import pytest

from bot import ids
from bot.domain import Status
from bot.store import AuditEvent, Connection, Database
from tests.e2e import test_approvals as approvals
from tests.e2e.conftest import Bot, CloudKey
from tests.e2e.helpers import stored, visible_text, wait_until
from tests.e2e.test_approvals import (
    ADMIN,
    GROUP_MEMBER,
    OUTSIDER,
    REQUESTER,
    SECOND_ADMIN,
    click,
    create_pending,
)
from tests.fakes.slack_api import Message

# The admin-enabled bot of the approval tests, with its settings fixture.
abot = approvals.abot
approvals_env = approvals.approvals_env

NAME = "Production Confluent Cloud"


def run_audit(bot: Bot, text: str, user: str) -> Message:
    """Type ``/connections <text>`` as ``user``; return the private reply they see."""
    response = bot.sender.command(text, user_id=user)
    assert response.status_code == 200
    response_url = bot.sender.last_response_url
    assert response_url is not None
    wait_until(lambda: bot.slack.hooks_to(response_url), what="the reply to the command")
    [hook] = bot.slack.hooks_to(response_url)
    assert hook.ok, hook.error  # the fake refuses payloads that break Block Kit limits
    assert hook.body.get("response_type") == "ephemeral"
    reply = bot.slack.message_of(hook)
    assert reply.ephemeral and reply.user == user
    return reply


def history_lines(reply: Message) -> list[str]:
    return [line for line in visible_text(reply.blocks).splitlines() if line.startswith("• ")]


def approved(bot: Bot, key: CloudKey) -> str:
    connection_id, request = create_pending(bot, key, name=NAME)
    click(bot, ids.ACTION_APPROVE, connection_id, request, ADMIN)
    wait_until(
        lambda: any(e.action == "connection.approved" for e in stored(bot.database_url)["audit_events"])
    )
    return connection_id


def test_an_admin_sees_who_created_and_who_approved_newest_first(abot: Bot, cloud_key: CloudKey) -> None:
    approved(abot, cloud_key)

    reply = run_audit(abot, f"audit {NAME}", SECOND_ADMIN)

    assert reply.blocks[0]["text"]["text"] == f"Audit: {NAME}"
    approval, creation = history_lines(reply)
    assert f"<@{ADMIN}> *approved*" in approval and "awaiting approval → active" in approval
    assert f"<@{REQUESTER}> *created*" in creation and "new → awaiting approval" in creation
    text = visible_text(reply.blocks)
    assert "now *active*" in text and "2 events" in text
    assert cloud_key.key not in text and cloud_key.secret not in text


def test_the_name_is_matched_whatever_its_case_and_quotes(abot: Bot, cloud_key: CloudKey) -> None:
    approved(abot, cloud_key)
    reply = run_audit(abot, f'audit "{NAME.upper()}"', ADMIN)
    assert len(history_lines(reply)) == 2


def test_a_rejected_connection_shows_the_reason(abot: Bot, cloud_key: CloudKey) -> None:
    connection_id, request = create_pending(abot, cloud_key, name=NAME)
    opened = len(abot.slack.calls_to("views.open"))
    click(abot, ids.ACTION_REJECT, connection_id, request, ADMIN)
    modal_id = str(abot.slack.wait_for("views.open", count=opened + 1)[-1].response["view"]["id"])
    abot.sender.submit(modal_id, {ids.BLOCK_REASON: "Use a <!here> service account"}, user_id=ADMIN)
    wait_until(
        lambda: any(e.action == "connection.rejected" for e in stored(abot.database_url)["audit_events"])
    )

    reply = run_audit(abot, f"audit {NAME}", SECOND_ADMIN)

    rejection, _ = history_lines(reply)
    assert f"<@{ADMIN}> *rejected*" in rejection and "awaiting approval → rejected" in rejection
    assert "“Use a &lt;!here&gt; service account”" in rejection
    assert "now *rejected*" in visible_text(reply.blocks)


def test_a_member_of_the_admin_group_may_read_it(abot: Bot, cloud_key: CloudKey) -> None:
    approved(abot, cloud_key)
    reply = run_audit(abot, f"audit {NAME}", GROUP_MEMBER)
    assert len(history_lines(reply)) == 2


def test_anyone_else_is_refused_and_sees_no_history(abot: Bot, cloud_key: CloudKey) -> None:
    approved(abot, cloud_key)
    for user in (OUTSIDER, REQUESTER):
        reply = run_audit(abot, f"audit {NAME}", user)
        text = visible_text(reply.blocks)
        assert "Only admins of connections can see the audit log" in text and "CONNECTIONS_ADMINS" in text
        assert history_lines(reply) == [] and NAME not in text


def test_when_slack_cannot_say_who_is_in_the_group_the_history_is_refused(abot: Bot) -> None:
    # The first question to Slack about the group (no membership is cached to answer instead);
    # the refusal comes before any lookup of the name, so no connection is needed.
    assert abot.slack.calls_to("usergroups.users.list") == []
    abot.slack.fail_next("usergroups.users.list", error="missing_scope", status=200, retry_after=None)
    reply = run_audit(abot, f"audit {NAME}", GROUP_MEMBER)
    text = visible_text(reply.blocks)
    assert "missing_scope" in text and "not shown" in text
    assert history_lines(reply) == []
    [lookup] = abot.slack.calls_to("usergroups.users.list")
    assert not lookup.ok


def test_an_unknown_name_is_not_found(abot: Bot, cloud_key: CloudKey) -> None:
    approved(abot, cloud_key)
    reply = run_audit(abot, "audit Staging <!channel>", ADMIN)
    text = visible_text(reply.blocks)
    assert "No connection named “Staging &lt;!channel&gt;”" in text
    assert history_lines(reply) == []


@pytest.mark.parametrize("text", ["audit", "AUDIT  ", 'audit ""'])
def test_without_a_name_the_user_is_shown_how_to_ask(abot: Bot, text: str) -> None:
    reply = run_audit(abot, text, ADMIN)
    assert "`/connections audit &lt;name&gt;`" in visible_text(reply.blocks)


def test_help_lists_the_audit_command(abot: Bot) -> None:
    reply = run_audit(abot, "help", OUTSIDER)
    assert "/connections audit &lt;name&gt;" in visible_text(reply.blocks)
    assert "admins only" in visible_text(reply.blocks)


def test_an_expired_connection_is_found_and_the_bot_is_named_for_the_expiry(abot: Bot) -> None:
    async def insert() -> None:
        db = Database.from_url(abot.database_url)
        try:
            async with db.transaction() as tx:
                connection = Connection(
                    team_id=abot.sender.team_id,
                    name=NAME,
                    provider="confluent_cloud",
                    created_by=REQUESTER,
                    status=Status.EXPIRED,
                )
                await tx.connections.add(connection)
                for actor, action, before, after in (
                    (REQUESTER, "connection.created", None, Status.PENDING_APPROVAL),
                    ("system", "connection.expired", Status.PENDING_APPROVAL, Status.EXPIRED),
                ):
                    await tx.audit.add(
                        AuditEvent(
                            team_id=abot.sender.team_id,
                            actor=actor,
                            action=action,
                            connection_id=connection.id,
                            before_status=before,
                            after_status=after,
                        )
                    )
        finally:
            await db.dispose()

    asyncio.run(insert())

    reply = run_audit(abot, f"audit {NAME.lower()}", ADMIN)

    expiry, creation = history_lines(reply)
    assert "the bot *expired*" in expiry and "awaiting approval → expired" in expiry
    assert f"<@{REQUESTER}> *created*" in creation
    assert "now *expired*" in visible_text(reply.blocks)
