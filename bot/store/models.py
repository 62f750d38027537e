"""The tables, as typed ORM models. Every row carries the Slack ``team_id`` of its workspace.

No column holds a secret in plain text: credentials are stored only as AES-GCM ciphertext with its
nonce and the id of the key that sealed it; connections keep a masked ``key_hint`` at most.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any, Final

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from bot.crypto import BOUND_SCHEME, LEGACY_SCHEME, associated_data
from bot.domain import NAME_MAX_LENGTH, Health, InFlightKind, RotationStatus, Status, name_key, utcnow
from bot.providers.base import Outcome, Verification
from bot.store.db import Base, StrEnumType, UtcDateTime

__all__ = [
    "IN_FLIGHT_CONNECTION_KEY",
    "IN_FLIGHT_NAME_KEY",
    "NAME_INDEX",
    "ROTATION_PENDING_INDEX",
    "AuditEvent",
    "BulkRetest",
    "Connection",
    "Credential",
    "InFlightKind",
    "InFlightVerification",
    "KeyCanary",
    "Rotation",
    "SecretCleanup",
    "VerificationRecord",
    "new_id",
]

NAME_INDEX: Final = "uq_connections_team_id_name_key"
"""The partial unique index that reserves a name per workspace while a connection holds it."""

_ID_LENGTH = 36
_SLACK_ID_LENGTH = 32  # team, user and enterprise ids are 9-12 characters today


def new_id() -> str:
    """A fresh random primary key (UUID4, canonical text form)."""
    return str(uuid.uuid4())


def _in_values(column: str, values: list[str]) -> str:
    quoted = ", ".join(f"'{value}'" for value in values)
    return f"{column} IN ({quoted})"


def _unique_where(where: str, name: str, *columns: str) -> Index:
    """A unique index over the rows ``where`` holds, alike on SQLite and PostgreSQL."""
    return Index(name, *columns, unique=True, sqlite_where=text(where), postgresql_where=text(where))


# A connection's id, on rows that go with the connection.
_ConnectionId = Annotated[
    str, mapped_column(String(_ID_LENGTH), ForeignKey("connections.id", ondelete="CASCADE"))
]
_NAME_HOLDING_STATUSES = [status.value for status in Status if status.holds_name]


class Connection(Base):
    """A registered connection to a provider, with its lifecycle status and latest health."""

    __tablename__ = "connections"
    __table_args__ = (
        CheckConstraint(_in_values("status", [s.value for s in Status]), name="status"),
        CheckConstraint(_in_values("health", [h.value for h in Health]), name="health"),
        Index("ix_connections_team_id_created_at", "team_id", "created_at"),
        # The expiry job's query: pending requests, oldest first, across workspaces.
        Index("ix_connections_status_created_at", "status", "created_at"),
        # The health schedule's claim: active connections whose next check is due.
        Index("ix_connections_status_next_check_at", "status", "next_check_at"),
        # Rejected, expired and revoked connections leave the index, so their names can be used again.
        _unique_where(_in_values("status", _NAME_HOLDING_STATUSES), NAME_INDEX, "team_id", "name_key"),
    )

    team_id: Mapped[str] = mapped_column(String(_SLACK_ID_LENGTH))
    name: Mapped[str] = mapped_column(String(NAME_MAX_LENGTH))
    # Case folding can lengthen a name (ß -> ss), hence the wider column.
    name_key: Mapped[str] = mapped_column(String(4 * NAME_MAX_LENGTH), init=False)
    provider: Mapped[str] = mapped_column(String(64))
    created_by: Mapped[str] = mapped_column(String(_SLACK_ID_LENGTH))
    status: Mapped[Status] = mapped_column(StrEnumType(Status), default=Status.PENDING_APPROVAL)
    health: Mapped[Health] = mapped_column(StrEnumType(Health), default=Health.UNKNOWN)
    # Non-secret provider fields only. Replace the dict to change it: in-place edits are not tracked.
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default_factory=dict)
    key_hint: Mapped[str | None] = mapped_column(String(64), default=None)
    credential_version: Mapped[int] = mapped_column(Integer, default=1)
    last_verified_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    # Where the approval request was posted, so a decision can update that message in place.
    approval_channel: Mapped[str | None] = mapped_column(String(_SLACK_ID_LENGTH), default=None)
    approval_ts: Mapped[str | None] = mapped_column(String(32), default=None)
    decided_by: Mapped[str | None] = mapped_column(String(_SLACK_ID_LENGTH), default=None)
    decided_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    decision_reason: Mapped[str | None] = mapped_column(Text, default=None)
    # When the credential in use was stored (creation or the last approved rotation).
    credential_created_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    # When the health schedule next re-tests this connection; claiming a check moves it on.
    next_check_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    # Since when the latest verifications have failed (None while healthy).
    failing_since: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    # The open alert about this connection's failure: where it was posted and when we last spoke.
    alert_channel: Mapped[str | None] = mapped_column(String(_SLACK_ID_LENGTH), default=None)
    alert_ts: Mapped[str | None] = mapped_column(String(32), default=None)
    alerted_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    rotation_reminded_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    # Where the credential in use lives when a secret store holds it (all None: sealed rows in
    # `credentials`): the store's key, the secret's path there, and the version the bot wrote.
    secret_store: Mapped[str | None] = mapped_column(String(16), default=None)
    secret_path: Mapped[str | None] = mapped_column(String(512), default=None)
    secret_version: Mapped[str | None] = mapped_column(String(128), default=None)
    id: Mapped[str] = mapped_column(String(_ID_LENGTH), primary_key=True, default_factory=new_id)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default_factory=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default_factory=utcnow, onupdate=utcnow)

    def __post_init__(self) -> None:
        self.name_key = name_key(self.name)


ROTATION_PENDING_INDEX: Final = "uq_rotations_connection_id_pending"
"""At most one rotation per connection waits for approval."""


class Rotation(Base):
    """A request to replace a connection's credential with a new, verified version.

    The new version's ciphertexts are stored beside the old ones under ``version``; the connection
    keeps using its ``credential_version`` until an admin approves, when the two swap in one
    transaction and the old ciphertexts are destroyed."""

    __tablename__ = "rotations"
    __table_args__ = (
        CheckConstraint(_in_values("status", [s.value for s in RotationStatus]), name="status"),
        Index("ix_rotations_status_created_at", "status", "created_at"),
        _unique_where("status = 'pending_approval'", ROTATION_PENDING_INDEX, "connection_id"),
    )

    team_id: Mapped[str] = mapped_column(String(_SLACK_ID_LENGTH))
    connection_id: Mapped[_ConnectionId]
    version: Mapped[int] = mapped_column(Integer)
    requested_by: Mapped[str] = mapped_column(String(_SLACK_ID_LENGTH))
    status: Mapped[RotationStatus] = mapped_column(
        StrEnumType(RotationStatus), default=RotationStatus.PENDING_APPROVAL
    )
    # The new credential's non-secret fields and masked key, applied to the connection on approval.
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default_factory=dict)
    key_hint: Mapped[str | None] = mapped_column(String(64), default=None)
    # The connection's fields when the rotation was asked for, so a decided request still shows
    # what it changed (None on rotations asked for before this was kept).
    replaced_config: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    approval_channel: Mapped[str | None] = mapped_column(String(_SLACK_ID_LENGTH), default=None)
    approval_ts: Mapped[str | None] = mapped_column(String(32), default=None)
    decided_by: Mapped[str | None] = mapped_column(String(_SLACK_ID_LENGTH), default=None)
    decided_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    decision_reason: Mapped[str | None] = mapped_column(Text, default=None)
    id: Mapped[str] = mapped_column(String(_ID_LENGTH), primary_key=True, default_factory=new_id)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default_factory=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default_factory=utcnow, onupdate=utcnow)


class Credential(Base):
    """One encrypted field of one credential version of a connection, bound (``scheme``, see
    :mod:`bot.crypto`) to the configuration that version is used with: the connection's for the
    version in use, the waiting rotation's for the version it would bring in."""

    __tablename__ = "credentials"
    __table_args__ = (UniqueConstraint("connection_id", "version", "field"),)

    team_id: Mapped[str] = mapped_column(String(_SLACK_ID_LENGTH))
    connection_id: Mapped[_ConnectionId]
    version: Mapped[int] = mapped_column(Integer)
    field: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str] = mapped_column(String(64))
    nonce: Mapped[bytes] = mapped_column(LargeBinary, repr=False)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary, repr=False)
    # Rows written before the binding (the migration's default) are legacy until the start-up upgrade.
    scheme: Mapped[int] = mapped_column(Integer, default=LEGACY_SCHEME, server_default=str(LEGACY_SCHEME))
    id: Mapped[str] = mapped_column(String(_ID_LENGTH), primary_key=True, default_factory=new_id)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default_factory=utcnow)

    def aad(self, config: str) -> bytes:
        """The associated data this row was sealed with, given the :func:`~bot.crypto.config_digest`
        of the configuration its version is bound to (ignored by a legacy row)."""
        bound = config if self.scheme == BOUND_SCHEME else None
        return associated_data(self.connection_id, self.field, self.version, bound)


class KeyCanary(Base):
    """A known value sealed with the master key when the database is first used.

    It ties the database to one master key: a process that starts with another key (a second host
    that made its own, a wrong CONNECTIONS_MASTER_KEY) fails to open it and refuses to start, even
    before any credential is stored. There is exactly one row (``id`` is always 1), so two processes
    racing to initialise an empty database cannot both win."""

    __tablename__ = "key_canaries"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    key_id: Mapped[str] = mapped_column(String(64))
    nonce: Mapped[bytes] = mapped_column(LargeBinary, repr=False)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary, repr=False)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, default=1, autoincrement=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default_factory=utcnow)


class VerificationRecord(Base):
    """One verification of a connection's credentials, kept as history."""

    __tablename__ = "verifications"
    __table_args__ = (
        CheckConstraint(_in_values("outcome", [o.value for o in Outcome]), name="outcome"),
        Index("ix_verifications_connection_id_created_at", "connection_id", "created_at"),
    )

    team_id: Mapped[str] = mapped_column(String(_SLACK_ID_LENGTH))
    connection_id: Mapped[_ConnectionId]
    outcome: Mapped[Outcome] = mapped_column(StrEnumType(Outcome))
    summary: Mapped[str] = mapped_column(Text)
    latency_ms: Mapped[int] = mapped_column(Integer)
    trigger: Mapped[str] = mapped_column(String(16))  # a bot.domain.Trigger value
    # [{"name": ..., "passed": ..., "detail": ...}] as in bot.providers.base.Check
    checks: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default_factory=list)
    hints: Mapped[list[str]] = mapped_column(JSON, default_factory=list)
    request_id: Mapped[str | None] = mapped_column(String(255), default=None)
    actor: Mapped[str | None] = mapped_column(String(_SLACK_ID_LENGTH), default=None)
    id: Mapped[str] = mapped_column(String(_ID_LENGTH), primary_key=True, default_factory=new_id)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default_factory=utcnow)

    @classmethod
    def from_verification(
        cls,
        verification: Verification,
        *,
        team_id: str,
        connection_id: str,
        trigger: str,
        actor: str | None = None,
    ) -> VerificationRecord:
        """The history row for a provider's :class:`~bot.providers.base.Verification`."""
        return cls(
            team_id=team_id,
            connection_id=connection_id,
            outcome=verification.outcome,
            summary=verification.summary,
            checks=[asdict(check) for check in verification.checks],
            hints=list(verification.hints),
            latency_ms=verification.latency_ms,
            request_id=verification.request_id,
            trigger=trigger,
            actor=actor,
        )


class AuditEvent(Base):
    """Who did what, when, to which connection. Never a secret.

    ``connection_id`` is deliberately not a foreign key: the audit trail must outlive the
    connections it describes.
    """

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_team_id_connection_id_created_at", "team_id", "connection_id", "created_at"),
        # AUTOINCREMENT: ids are never reused after a delete, so they order the trail for good.
        {"sqlite_autoincrement": True},
    )

    team_id: Mapped[str] = mapped_column(String(_SLACK_ID_LENGTH))
    actor: Mapped[str] = mapped_column(String(_SLACK_ID_LENGTH))  # a Slack user id or "system"
    action: Mapped[str] = mapped_column(String(64))  # e.g. "connection.created"
    connection_id: Mapped[str | None] = mapped_column(String(_ID_LENGTH), default=None)
    before_status: Mapped[str | None] = mapped_column(String(32), default=None)
    after_status: Mapped[str | None] = mapped_column(String(32), default=None)
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default_factory=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default_factory=utcnow)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, init=False)


IN_FLIGHT_NAME_KEY: Final = "uq_in_flight_verifications_team_id_name_key"
"""Reserves a name in a workspace while a new connection of that name is being verified."""
IN_FLIGHT_CONNECTION_KEY: Final = "uq_in_flight_verifications_team_id_connection_id"
"""At most one rotation of a connection is being verified at a time. Scoped by workspace like
every key a user can reach: a connection id in a rotation form is the client's to send, so a claim
in one workspace must not be able to block a connection of another."""


class InFlightVerification(Base):
    """A verification that a user is waiting for (see :mod:`bot.services.interrupted`); for a new
    connection it also reserves the name. ``host``, ``boot_id``, ``pid_namespace``, ``pid`` and
    ``instance`` identify the process doing the work. No secret: ``config`` holds the form's
    non-secret fields, to pre-fill a retry. Deliberately no foreign key to ``connections``: the row
    is bookkeeping and must not stop anything that happens to the connection meanwhile.
    """

    __tablename__ = "in_flight_verifications"
    __table_args__ = (
        CheckConstraint(_in_values("kind", [k.value for k in InFlightKind]), name="kind"),
        # A creation reserves a name and has no connection yet; a rotation names its connection.
        CheckConstraint(
            "(kind = 'create' AND name_key IS NOT NULL AND connection_id IS NULL)"
            " OR (kind = 'rotation' AND connection_id IS NOT NULL AND name_key IS NULL)",
            name="target",
        ),
        # NULLs are distinct in both databases, so each constraint binds only its own kind of row.
        UniqueConstraint("team_id", "name_key", name=IN_FLIGHT_NAME_KEY),
        UniqueConstraint("team_id", "connection_id", name=IN_FLIGHT_CONNECTION_KEY),
        # The sweeps: rows past their deadline, and rows of processes on this host.
        Index("ix_in_flight_verifications_deadline", "deadline"),
        Index("ix_in_flight_verifications_host", "host"),
    )

    team_id: Mapped[str] = mapped_column(String(_SLACK_ID_LENGTH))
    user_id: Mapped[str] = mapped_column(String(_SLACK_ID_LENGTH))
    kind: Mapped[InFlightKind] = mapped_column(StrEnumType(InFlightKind))
    provider: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(NAME_MAX_LENGTH))
    view_id: Mapped[str] = mapped_column(String(64))  # Slack's view ids are 11 characters today
    host: Mapped[str] = mapped_column(String(255))  # the longest host name DNS allows
    pid: Mapped[int] = mapped_column(Integer)
    instance: Mapped[str] = mapped_column(String(_ID_LENGTH))
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    deadline: Mapped[datetime] = mapped_column(UtcDateTime)
    connection_id: Mapped[str | None] = mapped_column(String(_ID_LENGTH), default=None)
    # Non-secret form fields only, as Connection.config.
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default_factory=dict)
    # Unknown (None) where the system does not say; see bot.services.interrupted.
    boot_id: Mapped[str | None] = mapped_column(String(36), default=None)  # a UUID in canonical text
    # An inode number: above 2**31 on Linux (4026531836 for the first namespace), so 64 bits.
    pid_namespace: Mapped[int | None] = mapped_column(BigInteger, default=None)
    name_key: Mapped[str | None] = mapped_column(String(4 * NAME_MAX_LENGTH), init=False, default=None)
    id: Mapped[str] = mapped_column(String(_ID_LENGTH), primary_key=True, default_factory=new_id)

    def __post_init__(self) -> None:
        # Folded as Connection.name_key, so a reservation and a stored name compare alike.
        self.name_key = name_key(self.name) if InFlightKind(self.kind) is InFlightKind.CREATE else None


class BulkRetest(Base):
    """The ``/connections test all`` running in a workspace, whichever replica runs it: one per
    workspace at a time. ``done`` and ``heartbeat_at`` are refreshed while it runs; a row whose
    heartbeat stopped (its process died) may be taken over."""

    __tablename__ = "bulk_retests"

    team_id: Mapped[str] = mapped_column(String(_SLACK_ID_LENGTH), primary_key=True)
    started_by: Mapped[str] = mapped_column(String(_SLACK_ID_LENGTH))
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    heartbeat_at: Mapped[datetime] = mapped_column(UtcDateTime)
    total: Mapped[int] = mapped_column(Integer)
    done: Mapped[int] = mapped_column(Integer, default=0)
    run_id: Mapped[str] = mapped_column(String(_ID_LENGTH), default_factory=new_id)


class SecretCleanup(Base):
    """A secret store's copy of a credential that no connection uses any more and that must be
    deleted there: recorded in the transaction that moved the connection's reference away from it,
    removed once the store deleted it, so a process stopped in between leaves the delete to the
    next run instead of a copy behind for good (see :mod:`bot.services.secret_moves`).

    ``version``: the version the bot wrote there; a path whose current version is another one (a
    change made outside the bot) is not deleted. No foreign key, as for the audit trail: the row is
    bookkeeping about a store, not about the connection's life."""

    __tablename__ = "secret_cleanups"
    __table_args__ = (Index("ix_secret_cleanups_created_at", "created_at"),)

    team_id: Mapped[str] = mapped_column(String(_SLACK_ID_LENGTH))
    connection_id: Mapped[str] = mapped_column(String(_ID_LENGTH))
    store: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(String(512))
    version: Mapped[str | None] = mapped_column(String(128), default=None)
    id: Mapped[str] = mapped_column(String(_ID_LENGTH), primary_key=True, default_factory=new_id)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default_factory=utcnow)
