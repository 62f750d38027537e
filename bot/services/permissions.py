"""Who may do what to a connection beyond approving it, and how a refusal is told.

* Re-testing: anyone in the workspace by default; with ``CONNECTIONS_ONCALL_GROUP`` set, members
  of that Slack user group and the admins.
* Rotating and removing: the connection's owner (who added it) or an admin.

Like approvals, every check runs on the server for every request, with the user id from Slack's
signed payload, and fails closed (with the reason) when Slack cannot say who is in a group.
"""

from __future__ import annotations

from bot.domain import AdminCheck, Refusal, Refused
from bot.services.admins import AdminPolicy
from bot.store import Connection
from bot.store.uow import UnitOfWork

__all__ = ["RetestPolicy", "find_connection", "owner_or_admin", "owner_refusal"]

ANYONE = "anyone in the workspace may re-test"
ONCALL_MEMBER = "member of the on-call group"
OWNER = "owner of the connection"


class RetestPolicy:
    """Who may re-test stored credentials (see the module docstring)."""

    def __init__(self, oncall: AdminPolicy | None, admins: AdminPolicy) -> None:
        # The on-call group is checked by an AdminPolicy with no listed users: the same cached,
        # single-flight, fail-closed group lookup, under another name.
        self._oncall = oncall
        self._admins = admins

    @property
    def group_id(self) -> str | None:
        return self._oncall.group_id if self._oncall is not None else None

    async def check(self, user_id: str) -> AdminCheck:
        if self._oncall is None:
            return AdminCheck(allowed=True, why=ANYONE)
        oncall = await self._oncall.check(user_id)
        if oncall.allowed:
            return AdminCheck(allowed=True, why=ONCALL_MEMBER)
        admin = await self._admins.check(user_id)
        if admin.allowed:
            return admin
        failed = oncall if oncall.failed_closed else admin
        if failed.failed_closed:
            return AdminCheck(allowed=False, why=failed.why, failed_closed=True)
        return AdminCheck(allowed=False, why="not on call and not an admin")

    def refusal(self, check: AdminCheck) -> Refused:
        """The refusal to show for a check that did not allow."""
        if check.failed_closed:
            return Refused(
                Refusal.CHECK_FAILED,
                f"Your rights could not be checked with Slack ({check.why}), so nothing was re-tested. "
                "Try again in a minute.",
            )
        return Refused(
            Refusal.NOT_ALLOWED,
            "Only members of the on-call user group and admins of connections can re-test "
            "credentials. Ask whoever runs the bot to add you to the group named in "
            "CONNECTIONS_ONCALL_GROUP.",
        )


async def owner_or_admin(admins: AdminPolicy, actor: str, owner: str) -> AdminCheck:
    """Whether ``actor`` may change a connection owned by ``owner``: the owner needs no lookup."""
    if actor == owner:
        return AdminCheck(allowed=True, why=OWNER)
    return await admins.check(actor)


def owner_refusal(check: AdminCheck, what: str) -> Refused:
    """The refusal for :func:`owner_or_admin`; ``what`` is the action ("rotate", "remove")."""
    if check.failed_closed:
        return Refused(
            Refusal.CHECK_FAILED,
            f"Your admin rights could not be checked with Slack ({check.why}), so nothing changed. "
            "Try again in a minute.",
        )
    return Refused(
        Refusal.NOT_ALLOWED,
        f"Only the person who added this connection, or an admin of connections, can {what} it. "
        "Nothing changed.",
    )


async def find_connection(
    tx: UnitOfWork,
    team_id: str,
    *,
    connection_id: str | None = None,
    name: str | None = None,
    any_status: bool = False,
) -> Connection | Refused:
    """The workspace's connection with ``connection_id`` (a button), else the one holding ``name``
    (a command; with ``any_status``, the newest of that name whatever its status), or a NOT_FOUND
    refusal. Another workspace's id is not found, like a made-up one."""
    if connection_id is not None:
        row = await tx.connections.get(team_id, connection_id)
    elif any_status:
        row = await tx.connections.latest_by_name(team_id, name or "")
    else:
        row = await tx.connections.find_by_name(team_id, name or "")
    if row is not None:
        return row
    what = f"connection named “{name}”" if name else "such connection (it may have been removed)"
    return Refused(
        Refusal.NOT_FOUND, f"There is no {what} in this workspace. Run /connections to see them all."
    )
