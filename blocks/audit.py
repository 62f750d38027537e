"""The audit trail in blocks: a connection's recent history as ``/connections audit <name>`` shows it
to an admin, and the short replies when it cannot be shown.

Each event is one line: when, who (a mention; the bot itself for system events such as expiry),
what, the status before and after, and the reason. Names and reasons are user text and are escaped;
actions and statuses are shown in words, and unknown values escaped as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from blocks.parts import (
    MESSAGE_MAX_BLOCKS,
    Block,
    admin_unchecked,
    context,
    header,
    message,
    not_admin,
    pack_sections,
    quoted_name,
    reply,
    section,
)
from blocks.text import inline, one_line, plural, slack_date, user_mention
from bot.domain import ConnectionSummary, Status

__all__ = [
    "SYSTEM_ACTOR",
    "AuditLine",
    "audit_admin_check_failed_reply",
    "audit_history_message",
    "audit_not_admin_reply",
    "audit_not_found_reply",
    "audit_usage_reply",
]

SYSTEM_ACTOR = "system"
"""The actor of events nobody caused (an expiry); shown as "the bot"."""

_ACTIONS = {
    "connection.created": "created",
    "connection.approved": "approved",
    "connection.rejected": "rejected",
    "connection.expired": "expired",
    "connection.create_failed": "create failed",
    "connection.retested": "re-tested",
    "connection.health_changed": "health changed",
    "connection.rotation_requested": "rotation requested",
    "connection.rotation_failed": "rotation failed verification",
    "connection.rotated": "rotated",
    "connection.rotation_rejected": "rotation rejected",
    "connection.rotation_expired": "rotation expired",
    "connection.rotation_cancelled": "rotation cancelled",
    "connection.removed": "removed",
}
_REASON_SHOWN_MAX = 300
_UNKNOWN_SHOWN_MAX = 40
_PROVIDER_SHOWN_MAX = 150
_LEFT_OUT = "_Older events were left out to fit in Slack._"
_EXPORT_HINT = "The whole log, for every connection: `connections-bot audit export` on the bot's host."


class AuditLine(Protocol):
    """What a line of the history needs from an event (``bot.services.audit.AuditEntry`` has it)."""

    @property
    def created_at(self) -> datetime: ...
    @property
    def actor(self) -> str: ...
    @property
    def action(self) -> str: ...
    @property
    def before_status(self) -> str | None: ...
    @property
    def after_status(self) -> str | None: ...
    @property
    def reason(self) -> str | None: ...


def audit_history_message(
    connection: ConnectionSummary | str, events: Sequence[AuditLine], *, limit: int, more: bool = False
) -> dict[str, Any]:
    """The ephemeral reply to ``/connections audit <name>``: the connection (its summary, or just
    its name) and at most ``limit`` of ``events``, in the order given (newest first).

    ``more`` says that older events exist beyond those given."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    name = connection.name if isinstance(connection, ConnectionSummary) else connection
    shown = list(events[:limit])
    more = more or len(events) > limit
    blocks: list[Block] = [header(f"Audit: {one_line(name)}")]
    if isinstance(connection, ConnectionSummary):
        blocks.append(context(_facts(connection)))
    if shown:
        room = MESSAGE_MAX_BLOCKS - len(blocks) - 1  # one block is kept for the footer
        blocks += pack_sections([_line(event) for event in shown], room, left_out=_LEFT_OUT)
    else:
        blocks.append(section("No events are recorded for this connection."))
    count = plural(len(shown), "event")
    blocks.append(context(f"{'The last ' if more else ''}{count}, newest first. {_EXPORT_HINT}"))
    return message(f"Audit log of {quoted_name(name)}: {count}", blocks)


def audit_not_found_reply(name: str) -> dict[str, Any]:
    """Told when no connection in the workspace has (or had) the name asked for."""
    return reply(
        f"No connection named {quoted_name(name)} in this workspace, now or before. "
        "Names ignore case; `/connections list` shows them all."
    )


def audit_usage_reply() -> dict[str, Any]:
    """Told when ``/connections audit`` came without a name."""
    return reply(
        "Which connection? Type `/connections audit &lt;name&gt;`, for example "
        "`/connections audit Production warehouse`. Only admins of connections can see it."
    )


def audit_not_admin_reply(how_to_become: str) -> dict[str, Any]:
    """Told to someone who is not an admin of connections, with ``how_to_become`` one (see
    :func:`blocks.parts.not_admin`)."""
    return not_admin("Only admins of connections can see the audit log.", how_to_become)


def audit_admin_check_failed_reply(why: str) -> dict[str, Any]:
    """Told when Slack could not confirm the asker is an admin; ``why`` is a short plain-text reason."""
    return reply(admin_unchecked(why, "the audit log is not shown. Try again in a minute."))


def _facts(summary: ConnectionSummary) -> str:
    provider = inline(summary.provider_title, _PROVIDER_SHOWN_MAX, "a provider")
    return (
        f"{provider} · now *{summary.status.label}* · requested by {user_mention(summary.created_by)} "
        f"{slack_date(summary.created_at)}"
    )


def _line(event: AuditLine) -> str:
    parts = [slack_date(event.created_at), f"{_actor(event.actor)} *{_action(event.action)}*"]
    change = _change(event.before_status, event.after_status)
    if change:
        parts.append(change)
    reason = (event.reason or "").strip()
    if reason:
        parts.append(f"“{inline(reason, _REASON_SHOWN_MAX)}”")
    return "• " + " · ".join(parts)


def _actor(actor: str) -> str:
    return "the bot" if actor == SYSTEM_ACTOR else user_mention(one_line(actor, "someone"))


def _action(action: str) -> str:
    known = _ACTIONS.get(action)
    if known is not None:
        return known
    words = action.removeprefix("connection.").replace("_", " ").replace(".", " ")
    return inline(words, _UNKNOWN_SHOWN_MAX, "changed")


def _change(before: str | None, after: str | None) -> str:
    if before is None and after is None:
        return ""
    was = _status(before) if before is not None else "new"
    now = _status(after) if after is not None else "—"
    return f"{was} → {now}"


def _status(value: str) -> str:
    try:
        return Status(value).label
    except ValueError:
        return inline(value, _UNKNOWN_SHOWN_MAX, "?")
