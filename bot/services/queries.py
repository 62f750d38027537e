"""What users look at: the workspace's connections, one connection's status, and a Home tab.

Reads only. The Home tab checks admin rights on every build, through the same
:class:`AdminPolicy` that guards the Approve and Reject clicks, so it offers those buttons to the
people whose clicks would be accepted; every click is still checked in full when it arrives. A
check that could not be made (Slack did not answer) shows no pending request and says why.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.domain import (
    HISTORY_SHOWN,
    HOME_ITEMS_MAX,
    PAGE_SIZE,
    ApprovalRequest,
    ConnectionSummary,
    HistoryEntry,
    HomeData,
    Page,
    Refused,
    Status,
    StatusReport,
    Trigger,
)
from bot.providers.base import Outcome
from bot.providers.registry import ProviderRegistry
from bot.services.admins import AdminPolicy
from bot.services.approvals import connection_request, pending_rotation
from bot.services.permissions import find_connection
from bot.services.records import summarize
from bot.store import Database

__all__ = ["Queries"]


@dataclass
class Queries:
    db: Database
    providers: ProviderRegistry
    admins: AdminPolicy
    allow_self_approval: bool = False
    home_limit: int = HOME_ITEMS_MAX

    def __post_init__(self) -> None:
        if self.home_limit < 1:
            raise ValueError("home_limit must be at least 1")

    async def list_connections(self, team_id: str, page: int = 1) -> Page[ConnectionSummary]:
        """A page of the workspace's connections, newest first; an out-of-range page gives the last."""
        async with self.db.read() as tx:
            # Clamp before querying: a page far past the end would overflow OFFSET.
            last_page = max(1, -(-(await tx.connections.count(team_id)) // PAGE_SIZE))
            page = min(max(1, page), last_page)
            rows, total = await tx.connections.list_page(team_id, page, PAGE_SIZE)
        items = tuple(summarize(row, self.providers) for row in rows)
        return Page(items=items, number=page, size=PAGE_SIZE, total=total)

    async def status(self, team_id: str, name: str) -> StatusReport | Refused:
        """The connection named ``name`` (the latest one, in any status), its last verifications,
        newest first, and its rotation waiting for approval."""
        async with self.db.read() as tx:
            row = await find_connection(tx, team_id, name=name, any_status=True)
            if isinstance(row, Refused):
                return row
            records = await tx.verifications.recent(team_id, row.id, limit=HISTORY_SHOWN)
            waiting = await pending_rotation(tx, self.providers, team_id, row.id)
        history = tuple(
            HistoryEntry(
                at=record.created_at,
                trigger=_trigger(record.trigger),
                outcome=Outcome(record.outcome),
                summary=record.summary,
                latency_ms=record.latency_ms,
                actor=record.actor,
            )
            for record in records
        )
        return StatusReport(
            connection=summarize(row, self.providers),
            history=history,
            failing_since=row.failing_since,
            pending_rotation=waiting,
        )

    async def home(self, team_id: str, user_id: str) -> HomeData:
        """The Home tab of ``user_id`` in the workspace ``team_id``."""
        # Asked before the database is opened: a slow group lookup must not hold a connection.
        admin = await self.admins.check(user_id)
        pending: list[ApprovalRequest] = []
        pending_total = 0
        async with self.db.read() as tx:
            own, own_total = await tx.connections.list_matching(team_id, self.home_limit, created_by=user_id)
            if admin.allowed:
                rows, pending_total = await tx.connections.list_matching(
                    team_id, self.home_limit, statuses=[Status.PENDING_APPROVAL], oldest_first=True
                )
                pending = [await connection_request(tx, self.providers, row) for row in rows]
        return HomeData(
            user_id=user_id,
            connections=tuple(summarize(row, self.providers) for row in own),
            connections_total=own_total,
            is_admin=admin.allowed,
            admin_check_failed=admin.failed_closed,
            admin_why=admin.why if admin.failed_closed else "",
            pending=tuple(pending),
            pending_total=pending_total,
            allow_self_approval=self.allow_self_approval,
        )


def _trigger(value: str) -> Trigger:
    try:
        return Trigger(value)
    except ValueError:  # written by a newer bot sharing the database
        return Trigger.RETEST
