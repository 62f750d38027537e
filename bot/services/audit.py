"""Reading the audit trail: one connection's recent history for an admin, and the whole log for a SIEM.

The trail itself is written by the use cases that change a connection (create, approve, reject,
expire), each in the transaction of its change; this module only reads it. Every event row is
append-only and never holds a secret, so what is read here can be shown and exported as it is.

Who may read a connection's history is decided on the server, like a decision on it: by
:class:`AdminPolicy`, from the Slack user id of the signed request, before the database is asked
anything. The export has no such check because only an operator with the database URL can run it.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import BinaryIO, TextIO

from bot.domain import AuditEntry, AuditHistory, Refused, Visibility
from bot.providers.registry import ProviderRegistry
from bot.services.admins import AdminPolicy
from bot.services.permissions import find_connection
from bot.services.records import summarize
from bot.store import AuditEvent, Database

__all__ = ["EXPORT_KEYS", "HISTORY_LIMIT", "AuditService", "entry_of", "export_events"]

HISTORY_LIMIT = 20
"""How many events ``/connections audit <name>`` shows, newest first."""
EXPORT_BATCH_SIZE = 500
"""Rows fetched per round trip while exporting, so memory stays flat however long the log is."""

EXPORT_KEYS = (
    "id",
    "time",
    "team_id",
    "actor",
    "action",
    "connection_id",
    "before_status",
    "after_status",
    "reason",
    "details",
)
"""The keys of every exported JSON object, in the order they are written."""


def entry_of(event: AuditEvent) -> AuditEntry:
    """A stored event as it is shown and exported."""
    return AuditEntry(
        id=event.id,
        created_at=event.created_at,
        team_id=event.team_id,
        actor=event.actor,
        action=event.action,
        connection_id=event.connection_id,
        before_status=event.before_status,
        after_status=event.after_status,
        reason=event.reason,
        details=dict(event.details or {}),
    )


@dataclass
class AuditService:
    """Reads the audit trail; see the module docstring."""

    db: Database
    providers: ProviderRegistry
    policy: AdminPolicy

    async def history(self, team_id: str, actor: str, name: str, limit: int = HISTORY_LIMIT) -> AuditHistory:
        """The latest ``limit`` events of the connection called ``name`` in ``team_id``, if ``actor``
        (the Slack user id from the signed request) is an admin.

        The connection is the one holding the name now or else the most recent one that had it
        (names compare case-insensitively), so a rejected or expired connection can still be looked
        into. Another workspace's connections are never found."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        admin = await self.policy.check(actor)
        if not admin.allowed:
            visibility = Visibility.ADMIN_CHECK_FAILED if admin.failed_closed else Visibility.NOT_ADMIN
            return AuditHistory(visibility, name, limit, admin=admin)
        async with self.db.read() as tx:
            # The newest of that name: while a connection holds a name, no newer one can take it.
            row = await find_connection(tx, team_id, name=name, any_status=True)
            if isinstance(row, Refused):
                return AuditHistory(Visibility.NOT_FOUND, name, limit, admin=admin)
            # One more than shown, to know whether older events were left out.
            events = await tx.audit.for_connection(team_id, row.id, limit=limit + 1)
            return AuditHistory(
                Visibility.SHOWN,
                name,
                limit,
                connection=summarize(row, self.providers),
                events=tuple(entry_of(event) for event in events[:limit]),
                more=len(events) > limit,
                admin=admin,
            )


async def export_events(db: Database, out: TextIO | BinaryIO, *, batch_size: int = EXPORT_BATCH_SIZE) -> int:
    """Write every audit event of every workspace to ``out`` as JSON Lines, in the order they were
    recorded (by id), and return how many were written.

    Each line is one JSON object with the keys :data:`EXPORT_KEYS`, ASCII only, so a text stream
    in any encoding (or a binary one) takes it. Rows are streamed ``batch_size`` at a time and
    ``out`` is flushed after each batch; ``out`` is not closed."""
    # A binary stream (a file opened "wb", sys.stdout.buffer) takes bytes; anything else text.
    binary = isinstance(out, io.RawIOBase | io.BufferedIOBase)
    count = 0
    async with db.read() as tx:
        async for event in tx.audit.all_ordered(batch_size=batch_size):
            line = json.dumps(entry_of(event).to_json(), separators=(",", ":")) + "\n"
            out.write(line.encode("ascii") if binary else line)  # type: ignore[arg-type]
            count += 1
            if count % batch_size == 0:
                out.flush()
    out.flush()
    return count
