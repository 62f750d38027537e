"""``/connections audit <name>``: an admin reads the recent history of one connection.

The command listener acks and hands the work here (see :mod:`bot.listeners.commands`); the asker
is the user id from Slack's signed request, and the admin check happens in the service.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncRespond

from blocks.audit import (
    audit_admin_check_failed_reply,
    audit_history_message,
    audit_not_admin_reply,
    audit_not_found_reply,
    audit_usage_reply,
)
from bot.listeners.state import parse_name
from bot.runtime import Services
from bot.services.audit import AuditHistory, Visibility

__all__ = ["show_audit"]

logger = logging.getLogger(__name__)


async def show_audit(
    services: Services, respond: AsyncRespond, team_id: str, actor: str, argument: str
) -> None:
    """Answer ``/connections audit <argument>`` privately to ``actor``."""
    name = parse_name(argument)
    if not name:
        await respond(response_type="ephemeral", **audit_usage_reply())
        return
    try:
        history = await services.audit.history(team_id, actor, name)
    except Exception:
        logger.exception("reading the audit log failed")
        await respond(
            response_type="ephemeral", text="Something went wrong on our side; try again in a minute."
        )
        return
    await respond(response_type="ephemeral", **_reply(services, history))


def _reply(services: Services, history: AuditHistory) -> dict[str, Any]:
    if history.visibility is Visibility.NOT_ADMIN:
        return audit_not_admin_reply(services.audit.policy.how_to_become())
    if history.visibility is Visibility.ADMIN_CHECK_FAILED:
        why = history.admin.why if history.admin else "unknown"
        return audit_admin_check_failed_reply(why)
    if history.visibility is Visibility.NOT_FOUND or history.connection is None:
        return audit_not_found_reply(history.name)
    return audit_history_message(history.connection, history.events, limit=history.limit, more=history.more)
