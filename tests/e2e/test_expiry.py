"""A request nobody decides on expires: the message says so, the requester is told, the
credentials are gone, and a late click changes nothing.

The bot runs with a time to live of about two seconds and looks for overdue requests five times a
second, so the whole journey takes a few seconds of real time.
"""

from __future__ import annotations

import time

import pytest

from bot import ids
from bot.domain import Status
from tests.e2e import test_approvals
from tests.e2e.conftest import Bot, CloudKey
from tests.e2e.helpers import stored, visible_text, wait_until
from tests.e2e.test_approvals import (
    ADMIN,
    REQUESTER,
    audit,
    click,
    create_pending,
    dms_to,
    replies_to,
    stale_click,
)
from tests.e2e.test_security import assert_not_leaked
from tests.fakes.slack_api import Message

# The approval tests' fixtures, found by pytest under these names in this module.
abot = test_approvals.abot
approvals_env = test_approvals.approvals_env

EXPIRING = {"CONNECTIONS_APPROVAL_TTL_HOURS": "0.0005", "CONNECTIONS_EXPIRY_CHECK_SECONDS": "0.2"}
"""0.0005 hours is 1.8 seconds: long enough for the request to be posted first."""
EXPIRY_WAIT = 15.0
"""How long a test waits for an expiry before failing (a bound on hanging, not a measurement)."""


def has_buttons(message: Message) -> bool:
    return any(block.get("type") == "actions" for block in message.blocks)


def expired(bot: Bot, request: Message) -> bool:
    return "Expired" in visible_text(bot.slack.message_of(request).blocks)


@pytest.mark.parametrize("approvals_env", [EXPIRING], indirect=True)
def test_an_undecided_request_expires_and_a_late_approval_changes_nothing(
    abot: Bot, cloud_key: CloudKey
) -> None:
    connection_id, request = create_pending(abot, cloud_key)
    assert has_buttons(request)

    wait_until(lambda: expired(abot, request), timeout=EXPIRY_WAIT, what="the request to show it expired")
    updated = abot.slack.message_of(request)
    text = visible_text(updated.blocks)
    assert "nobody decided in time" in text and "Production Confluent Cloud" in text
    assert not has_buttons(updated)
    assert f"{cloud_key.key[:4]}…{cloud_key.key[-4:]}" in text

    wait_until(lambda: dms_to(abot, REQUESTER), what="the requester's DM")
    [dm] = dms_to(abot, REQUESTER)
    assert "expired" in dm and "Production Confluent Cloud" in dm and "/connections" in dm

    rows = stored(abot.database_url)
    [row] = rows["connections"]
    assert (row.id, row.status, row.decided_by) == (connection_id, Status.EXPIRED, None)
    assert rows["credentials"] == []
    [event] = audit(abot, "connection.expired")
    assert (event.actor, event.before_status, event.after_status) == (
        "system",
        Status.PENDING_APPROVAL,
        Status.EXPIRED,
    )
    assert event.reason == "not decided within 0.0005 hours"

    # An admin clicks Approve on the copy of the request still on their screen.
    stale_click(abot, abot.sender, ids.ACTION_APPROVE, connection_id, request, ADMIN)
    wait_until(lambda: replies_to(abot, ADMIN), what="the admin's reply")
    reply = replies_to(abot, ADMIN)[-1]
    assert "Already expired" in reply and "Nothing changed" in reply
    [row] = stored(abot.database_url)["connections"]
    assert (row.status, row.decided_by) == (Status.EXPIRED, None)
    assert audit(abot, "connection.approved") == []
    assert len(audit(abot, "connection.expired")) == 1
    assert len(dms_to(abot, REQUESTER)) == 1
    assert_not_leaked(abot, cloud_key.key, cloud_key.secret)


# Long enough for the approval click to land in time on a loaded machine (5.4 s).
DECIDABLE = {**EXPIRING, "CONNECTIONS_APPROVAL_TTL_HOURS": "0.0015"}


@pytest.mark.parametrize("approvals_env", [DECIDABLE], indirect=True)
def test_a_request_decided_in_time_does_not_expire(abot: Bot, cloud_key: CloudKey) -> None:
    approved_id, approved_request = create_pending(abot, cloud_key, name="decided in time")
    click(abot, ids.ACTION_APPROVE, approved_id, approved_request, ADMIN)
    wait_until(lambda: dms_to(abot, REQUESTER), what="the approval DM")
    # Created later, so it expires later: once it has, the approved one had every chance to.
    later_id, later_request = create_pending(abot, cloud_key, name="left undecided")

    wait_until(lambda: expired(abot, later_request), timeout=EXPIRY_WAIT, what="the later request to expire")

    statuses = {row.id: row.status for row in stored(abot.database_url)["connections"]}
    assert statuses == {approved_id: Status.ACTIVE, later_id: Status.EXPIRED}
    assert "Approved" in visible_text(abot.slack.message_of(approved_request).blocks)
    [event] = audit(abot, "connection.expired")
    assert event.connection_id == later_id
    wait_until(lambda: len(dms_to(abot, REQUESTER)) == 2, what="the expiry DM")
    approved_dm, expired_dm = dms_to(abot, REQUESTER)
    assert "approved" in approved_dm and "decided in time" in approved_dm
    assert "expired" in expired_dm and "left undecided" in expired_dm


@pytest.mark.parametrize(
    "approvals_env",
    [{"CONNECTIONS_APPROVAL_TTL_HOURS": "0.0003", "CONNECTIONS_EXPIRY_CHECK_SECONDS": "3600"}],
    indirect=True,
)
def test_an_approval_clicked_after_the_time_limit_expires_the_request_instead(
    abot: Bot, cloud_key: CloudKey
) -> None:
    connection_id, request = create_pending(abot, cloud_key)
    # The periodic job will not run within this test; the click itself must notice the time is up.
    time.sleep(0.0003 * 3600 + 0.2)
    click(abot, ids.ACTION_APPROVE, connection_id, request, ADMIN)
    wait_until(lambda: replies_to(abot, ADMIN), what="the admin's reply")
    assert "Already expired" in replies_to(abot, ADMIN)[-1]
    wait_until(lambda: expired(abot, request), what="the request to show it expired")
    wait_until(lambda: dms_to(abot, REQUESTER), what="the requester's DM")
    assert "expired" in dms_to(abot, REQUESTER)[-1]
    [row] = stored(abot.database_url)["connections"]
    assert row.status == Status.EXPIRED
    assert audit(abot, "connection.approved") == []
