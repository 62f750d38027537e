"""``/connections audit <name>``: an admin reads the recent history of one connection. The asker is
the user id from Slack's signed request; the admin check happens in the service."""

from __future__ import annotations

from typing import Any

from blocks.audit import (
    audit_admin_check_failed_reply,
    audit_history_message,
    audit_not_admin_reply,
    audit_not_found_reply,
    audit_usage_reply,
)
from bot.domain import AuditHistory, Visibility
from bot.listeners.kit import Command

__all__ = ["show"]


async def show(command: Command) -> None:
    """Answer ``/connections audit <name>`` privately to whoever typed it."""
    if not command.name:
        await command.tell(audit_usage_reply())
        return
    audit = command.services.audit
    history = await audit.history(command.team_id, command.user_id, command.name)
    await command.tell(_reply(history, audit.policy.how_to_become()))


def _reply(history: AuditHistory, how_to_become_admin: str) -> dict[str, Any]:
    if history.visibility is Visibility.NOT_ADMIN:
        return audit_not_admin_reply(how_to_become_admin)
    if history.visibility is Visibility.ADMIN_CHECK_FAILED:
        return audit_admin_check_failed_reply(history.admin.why if history.admin else "unknown")
    if history.visibility is Visibility.NOT_FOUND or history.connection is None:
        return audit_not_found_reply(history.name)
    return audit_history_message(history.connection, history.events, limit=history.limit, more=history.more)
