"""Finding the connection a Slack request names: by id (a button) or by name (a command)."""

from __future__ import annotations

from bot.services.permissions import Refusal, Refused
from bot.store import Connection
from bot.store.uow import UnitOfWork

__all__ = ["find_connection", "not_found"]


async def find_connection(
    tx: UnitOfWork,
    team_id: str,
    *,
    connection_id: str | None = None,
    name: str | None = None,
    any_status: bool = False,
) -> Connection | Refused:
    """The workspace's connection with ``connection_id``, else the one holding ``name`` (with
    ``any_status``, the newest of that name whatever its status), or a NOT_FOUND refusal. Another
    workspace's id is not found, like a made-up one."""
    if connection_id is not None:
        row = await tx.connections.get(team_id, connection_id)
    elif any_status:
        row = await tx.connections.latest_by_name(team_id, name or "")
    else:
        row = await tx.connections.find_by_name(team_id, name or "")
    return row if row is not None else not_found(name)


def not_found(name: str | None) -> Refused:
    what = f"connection named “{name}”" if name else "such connection (it may have been removed)"
    return Refused(
        Refusal.NOT_FOUND, f"There is no {what} in this workspace. Run /connections to see them all."
    )
