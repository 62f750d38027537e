"""Who may approve connections: the admin policy.

An admin is a Slack user listed in ``CONNECTIONS_ADMINS`` or a member of the user group
``CONNECTIONS_ADMIN_GROUP``. :meth:`AdminPolicy.check` runs for *every* click that needs an admin,
with the user id from Slack's signed payload (never a button value or ``private_metadata``).

Only the group's member list is remembered: per group, for at most ``ttl_seconds`` from when the
lookup was sent (so a removed member loses the right within that time), and checks arriving during
a lookup share it. When the directory cannot be asked the answer is "no" (fail closed), the failure
is not cached, and the :class:`AdminCheck` says why.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from bot.domain import AdminCheck

__all__ = ["AdminPolicy", "DirectoryUnavailable", "GroupDirectory"]

logger = logging.getLogger(__name__)

LISTED = "listed in CONNECTIONS_ADMINS"
MEMBER = "member of the admin group"
NOT_ADMIN = "not an admin"
NOBODY_CONFIGURED = "no admins are configured (CONNECTIONS_ADMINS and CONNECTIONS_ADMIN_GROUP are unset)"
UNCHECKED = "could not check group membership"

# Slack user group ids look like S0614TZR7; anything else is not put inside mention markup.
_GROUP_ID = re.compile(r"S[A-Z0-9]{2,30}")


class DirectoryUnavailable(Exception):
    """The directory could not say who is in a group.

    ``reason`` is short and safe to show to users and to log: an error code such as Slack's
    ``missing_scope``, or ``timeout`` / ``unreachable``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class GroupDirectory(Protocol):
    """Where group membership is looked up (Slack user groups in production)."""

    async def members(self, group_id: str) -> frozenset[str]:
        """The user ids in ``group_id`` now; raises :class:`DirectoryUnavailable`."""
        ...


@dataclass(frozen=True)
class _Members:
    users: frozenset[str]
    asked_at: float


class AdminPolicy:
    """Decides whether a Slack user is an admin of connections; see the module docstring."""

    def __init__(
        self,
        admins: frozenset[str],
        group_id: str | None,
        directory: GroupDirectory,
        *,
        ttl_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_seconds < 0:
            raise ValueError("ttl_seconds must not be negative")
        self._admins = frozenset(admins)
        self._group_id = group_id or None
        self._directory = directory
        self._ttl = ttl_seconds
        self._clock = clock
        self._cache: dict[str, _Members] = {}
        self._in_flight: dict[str, asyncio.Task[frozenset[str]]] = {}

    @property
    def group_id(self) -> str | None:
        return self._group_id

    @property
    def configured(self) -> bool:
        """Whether anybody at all can be an admin."""
        return bool(self._admins) or self._group_id is not None

    async def check(self, user_id: str) -> AdminCheck:
        """Whether ``user_id`` (from the signed payload of the click) is an admin, and why.

        A listed admin needs no lookup. Never raises for a directory failure: that is a refusal
        with ``failed_closed`` set."""
        if user_id in self._admins:
            return AdminCheck(allowed=True, why=LISTED)
        if self._group_id is None:
            return AdminCheck(allowed=False, why=NOT_ADMIN if self._admins else NOBODY_CONFIGURED)
        try:
            members = await self._members(self._group_id)
        except DirectoryUnavailable as exc:
            logger.warning("could not check membership of admin group %s: %s", self._group_id, exc.reason)
            return AdminCheck(allowed=False, why=f"{UNCHECKED}: {exc.reason}", failed_closed=True)
        except Exception:
            # A bug in a directory must still refuse, and the user still deserves a reason.
            logger.exception("unexpected error checking membership of admin group %s", self._group_id)
            return AdminCheck(allowed=False, why=f"{UNCHECKED}: unexpected error", failed_closed=True)
        if user_id in members:
            return AdminCheck(allowed=True, why=MEMBER)
        return AdminCheck(allowed=False, why=NOT_ADMIN)

    def how_to_become(self) -> str:
        """One sentence for a refused user on how to become an admin (Slack mrkdwn).

        The group is named with Slack's user group mention (``<!subteam^S…>``) when it is set and
        looks like a group id; no other configured value is echoed."""
        ask = "Ask whoever runs the bot to add your Slack user ID to CONNECTIONS_ADMINS"
        if self._group_id is None:
            return f"{ask}." if self._admins else f"No admins are configured yet. {ask}."
        if _GROUP_ID.fullmatch(self._group_id):
            return f"{ask}, or to add you to the <!subteam^{self._group_id}> user group."
        return f"{ask}, or to add you to the user group named in CONNECTIONS_ADMIN_GROUP."

    async def _members(self, group_id: str) -> frozenset[str]:
        cached = self._cache.get(group_id)
        if cached is not None and self._clock() - cached.asked_at < self._ttl:
            return cached.users
        task = self._in_flight.get(group_id)
        if task is None:
            # A task rather than a lock: everyone waiting shares the one answer, a failure
            # included, so a slow or failing Slack costs one lookup per burst of clicks, not one
            # lookup (and one timeout) per waiting click in turn.
            task = asyncio.create_task(self._lookup(group_id), name=f"admin-group-lookup-{group_id}")
            task.add_done_callback(_consume_outcome)
            self._in_flight[group_id] = task
        # Shielded so that one click giving up does not cancel the lookup the others wait for.
        return await asyncio.shield(task)

    async def _lookup(self, group_id: str) -> frozenset[str]:
        # Timed from before the request: the answer may describe any moment after this one.
        asked_at = self._clock()
        try:
            users = frozenset(await self._directory.members(group_id))
        except BaseException:
            self._cache.pop(group_id, None)
            raise
        finally:
            self._in_flight.pop(group_id, None)
        self._cache[group_id] = _Members(users, asked_at)
        return users


def _consume_outcome(task: asyncio.Task[frozenset[str]]) -> None:
    # Every waiter may have given up; reading the outcome keeps asyncio from reporting a failed
    # lookup as "never retrieved" (check() has already logged it for whoever was waiting).
    if not task.cancelled():
        task.exception()
