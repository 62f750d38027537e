"""What a user's App Home tab shows: their own connections and, for admins, the requests waiting
for a decision.

Admin rights are checked here, on every build of the tab, through the same :class:`AdminPolicy`
that guards the Approve and Reject clicks, so the tab offers those buttons to the people whose
clicks would be accepted. It only *offers* them: every click is checked again in full when it
arrives. A check that could not be made (Slack did not answer) shows no pending request and says
why, rather than guessing either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.domain import ConnectionSummary, Status
from bot.providers.base import Check
from bot.providers.registry import ProviderRegistry
from bot.services.admins import AdminPolicy
from bot.services.summaries import summarize
from bot.store import Database
from bot.store.repositories import ConnectionRepository, VerificationRepository

__all__ = ["HOME_ITEMS_MAX", "HomeData", "HomeService", "PendingRequest"]

HOME_ITEMS_MAX = 20
"""The most connections, and the most pending requests, one Home tab lists (it holds 100 blocks)."""


@dataclass(frozen=True)
class PendingRequest:
    """A connection awaiting approval, with the checks of its latest verification."""

    connection: ConnectionSummary
    checks: tuple[Check, ...] = ()


@dataclass(frozen=True)
class HomeData:
    """Everything one user's Home tab shows; no secret, only masked key hints.

    ``connections`` are the user's own, newest first; ``pending`` the workspace's requests awaiting
    approval, oldest first, filled only for an admin. The totals count every match, so the tab can
    say how many were left out. ``admin_check_failed`` is set when the user's admin rights could not
    be checked (``admin_why`` says why, in plain text); ``is_admin`` is then False."""

    user_id: str
    connections: tuple[ConnectionSummary, ...] = ()
    connections_total: int = 0
    is_admin: bool = False
    admin_check_failed: bool = False
    admin_why: str = ""
    pending: tuple[PendingRequest, ...] = ()
    pending_total: int = 0
    allow_self_approval: bool = False


class HomeService:
    def __init__(
        self,
        db: Database,
        providers: ProviderRegistry,
        policy: AdminPolicy,
        *,
        allow_self_approval: bool = False,
        limit: int = HOME_ITEMS_MAX,
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self._db = db
        self._providers = providers
        self._policy = policy
        self._allow_self_approval = allow_self_approval
        self._limit = limit

    async def home_for(self, team_id: str, user_id: str) -> HomeData:
        """The Home tab of ``user_id`` in the workspace ``team_id``."""
        # Asked before the database is opened: a slow group lookup must not hold a connection.
        admin = await self._policy.check(user_id)
        pending: tuple[PendingRequest, ...] = ()
        pending_total = 0
        async with self._db.read() as session:
            connections = ConnectionRepository(session)
            own, own_total = await connections.list_matching(team_id, self._limit, created_by=user_id)
            if admin.allowed:
                rows, pending_total = await connections.list_matching(
                    team_id, self._limit, statuses=[Status.PENDING_APPROVAL], oldest_first=True
                )
                verifications = VerificationRepository(session)
                pending = tuple(
                    [
                        PendingRequest(
                            summarize(row, self._providers),
                            await _latest_checks(verifications, team_id, row.id),
                        )
                        for row in rows
                    ]
                )
        return HomeData(
            user_id=user_id,
            connections=tuple(summarize(row, self._providers) for row in own),
            connections_total=own_total,
            is_admin=admin.allowed,
            admin_check_failed=admin.failed_closed,
            admin_why=admin.why if admin.failed_closed else "",
            pending=pending,
            pending_total=pending_total,
            allow_self_approval=self._allow_self_approval,
        )


async def _latest_checks(
    verifications: VerificationRepository, team_id: str, connection_id: str
) -> tuple[Check, ...]:
    records = await verifications.recent(team_id, connection_id, limit=1)
    return tuple(_check(c) for c in records[0].checks) if records else ()


def _check(stored: dict[str, Any]) -> Check:
    return Check(str(stored.get("name", "")), bool(stored.get("passed")), str(stored.get("detail", "")))
