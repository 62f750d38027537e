"""The App Home tab: a way to add a connection, the user's own connections, and for admins the
requests waiting for a decision, each with Approve and Reject.

The buttons are the ones channel messages carry, so a click here is handled, and checked, exactly
like one there. Names, reasons and anything else a user or a provider wrote are escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from slack_sdk.models.views import View

from blocks.approval import STATUS_ICONS, decide_buttons
from blocks.connections import connection_line, provider_card
from blocks.parts import (
    Block,
    admin_unchecked,
    check_line,
    context,
    header,
    key_text,
    provider_text,
    quoted_name,
    section,
)
from blocks.text import plural, slack_date, user_mention
from bot.domain import HOME_ITEMS_MAX, ApprovalRequest, ConnectionSummary, HomeData
from bot.providers.base import Check, Provider

__all__ = ["HOME_MAX_BLOCKS", "PROVIDERS_SHOWN_MAX", "decide_block_id", "home_view"]

HOME_MAX_BLOCKS = 100
"""Slack's limit for a Home tab."""
PROVIDERS_SHOWN_MAX = 8
"""Provider cards shown at most; with 20 connections and 20 requests the tab still fits."""

_CHECKS_SHOWN_MAX = 10  # a context block holds at most 10 elements
_CHECK_DETAIL_MAX = 300
_WHY_MAX = 300


def decide_block_id(connection_id: str) -> str:
    """block_id of the Approve / Reject buttons of one request (block ids are unique per view)."""
    return f"home_decide_{connection_id}"[:255]


def home_view(
    data: HomeData,
    providers: Sequence[Provider],
    *,
    now: datetime | None = None,
    rotation_days: float | None = None,
) -> dict[str, Any]:
    """The Home tab of ``data.user_id`` as a ``views.publish`` view (``{"type": "home", ...}``).

    Each connection holding credentials has a Re-test button. With ``now``, a key's age is shown
    in days; with ``rotation_days`` too, a key older than that is flagged for rotation.

    At most :data:`PROVIDERS_SHOWN_MAX` provider cards and ``HOME_ITEMS_MAX`` connections and
    requests are shown; a note says how many more there are and where to see them.
    """
    blocks: list[Block] = [
        header("Connections"),
        context(
            "Your data-platform connections at a glance. Type `/connections` in any channel "
            "to see every connection in this workspace."
        ),
        header("Add a connection"),
        *_provider_cards(providers),
        header("Your connections"),
        *_own_connections(data, now, rotation_days),
    ]
    if data.is_admin:
        blocks += [header("Waiting for your decision"), *_pending_requests(data)]
    elif data.admin_check_failed:
        not_shown = "requests waiting for a decision are not shown. Open this tab again in a minute."
        refused = admin_unchecked(data.admin_why, not_shown, _WHY_MAX)
        blocks += [header("Waiting for your decision"), section(refused)]
    if len(blocks) > HOME_MAX_BLOCKS:
        # The caps above keep every Home within the limit; reaching this is a bug, not user input.
        raise ValueError(f"a Home tab holds at most {HOME_MAX_BLOCKS} blocks, not {len(blocks)}")
    return dict(View(type="home", blocks=blocks).to_dict())


def _provider_cards(providers: Sequence[Provider]) -> list[Block]:
    if not providers:
        return [section("No providers are configured in this bot yet.")]
    shown = providers[:PROVIDERS_SHOWN_MAX]
    blocks = [provider_card(p, f"home_provider_{p.key}") for p in shown]
    if len(providers) > len(shown):
        blocks.append(context(f"{len(providers) - len(shown)} more: type `/connections` to see them all."))
    return blocks


def _own_connections(data: HomeData, now: datetime | None, rotation_days: float | None) -> list[Block]:
    if not data.connections:
        return [section("You haven't added a connection yet. Click *Connect* above to add one.")]
    shown = data.connections[:HOME_ITEMS_MAX]
    blocks = [_own_connection(c, now, rotation_days) for c in shown]
    total = max(data.connections_total, len(data.connections))
    if total > len(shown):
        showing = f"Showing your {len(shown)} newest of {plural(total, 'connection')}."
        blocks.append(context(f"{showing} Type `/connections list` to see them all."))
    return blocks


def _own_connection(
    connection: ConnectionSummary, now: datetime | None, rotation_days: float | None
) -> Block:
    status = f"{STATUS_ICONS[connection.status]} {connection.status.label}"
    added = f"added {slack_date(connection.created_at)}"
    return connection_line(connection, now, rotation_days, status=status, added=added)


def _pending_requests(data: HomeData) -> list[Block]:
    if not data.pending:
        return [section("Nothing is waiting for a decision. New requests also appear in the admin channel.")]
    shown = data.pending[:HOME_ITEMS_MAX]
    blocks = [block for request in shown for block in _pending_request(request, data)]
    total = max(data.pending_total, len(data.pending))
    if total > len(shown):
        showing = f"Showing the {len(shown)} oldest of {plural(total, 'request')}."
        blocks.append(context(f"{showing} Decide on these, or find the others in the admin channel."))
    return blocks


def _pending_request(request: ApprovalRequest, data: HomeData) -> list[Block]:
    connection = request.connection
    facts = (
        f"*{quoted_name(connection.name)}* · {provider_text(connection)}\n"
        f"Requested by {user_mention(request.requested_by)} {slack_date(request.requested_at)}"
        f" · key {key_text(connection.key_hint)}"
    )
    blocks = [section(facts)]
    if request.checks:
        blocks.append(_checks(request.checks))
    if request.requested_by == data.user_id and not data.allow_self_approval:
        blocks.append(context("You asked for this connection, so another admin must approve or reject it."))
    else:
        blocks.append(decide_buttons(request, block_id=decide_block_id(request.id)))
    return blocks


def _checks(checks: Sequence[Check]) -> Block:
    """The latest verification's checks, one context element each (a context holds ten)."""
    shown = list(checks[:_CHECKS_SHOWN_MAX])
    if len(checks) > len(shown):
        shown = shown[:-1]
    # A failed check on a pending request is a warning: the credentials did verify.
    lines = [check_line(check, "✅" if check.passed else "⚠️", _CHECK_DETAIL_MAX) for check in shown]
    if len(checks) > len(shown):
        lines.append(f"and {plural(len(checks) - len(shown), 'more check')}")
    return context(*lines)
