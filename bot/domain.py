"""The vocabulary shared by services, blocks and listeners: lifecycle, health, and read models."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

__all__ = [
    "NAME_FIELD",
    "NAME_MAX_LENGTH",
    "PAGE_SIZE",
    "ConnectionSummary",
    "Health",
    "Page",
    "RotationStatus",
    "Status",
    "Trigger",
    "name_key",
]

NAME_FIELD = "name"
"""The field under which a connection's name is submitted and its problems are reported."""
NAME_MAX_LENGTH = 64
PAGE_SIZE = 20

T = TypeVar("T")


def name_key(name: str) -> str:
    """The form under which names are compared: whitespace collapsed and Unicode case folded, so
    "Prod  Warehouse", "prod warehouse" and "PROD WAREHOUSE" are one name in a workspace. Computed here rather
    than with the database's lower(), which folds only ASCII on SQLite."""
    return " ".join(name.split()).casefold()


class Status(enum.StrEnum):
    """Where a connection is in its lifecycle (DESIGN.md, "Connection lifecycle")."""

    PENDING_APPROVAL = "pending_approval"
    ACTIVE = "active"
    REJECTED = "rejected"
    EXPIRED = "expired"
    REVOKED = "revoked"

    @property
    def label(self) -> str:
        return _STATUS_LABELS[self]

    @property
    def holds_name(self) -> bool:
        """Whether a connection in this status keeps its name reserved in the workspace."""
        return self in (Status.PENDING_APPROVAL, Status.ACTIVE)


_STATUS_LABELS = {
    Status.PENDING_APPROVAL: "awaiting approval",
    Status.ACTIVE: "active",
    Status.REJECTED: "rejected",
    Status.EXPIRED: "expired",
    Status.REVOKED: "revoked",
}


class Health(enum.StrEnum):
    """The result of the latest verification, independent of the lifecycle."""

    UNKNOWN = "unknown"
    HEALTHY = "healthy"
    FAILING = "failing"


class RotationStatus(enum.StrEnum):
    """Where a credential rotation is: waiting for an admin, or done one way or another."""

    PENDING_APPROVAL = "pending_approval"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    """The connection was removed while the rotation waited."""


class Trigger(enum.StrEnum):
    """Why a verification ran, as the history records it."""

    CREATE = "create"
    RETEST = "retest"
    """Someone asked from Slack (``/connections test``, a Re-test button)."""
    SCHEDULE = "schedule"
    ROTATION = "rotation"


@dataclass(frozen=True)
class ConnectionSummary:
    """A connection as lists show it: no secret, only the masked key hint."""

    id: str
    name: str
    provider_key: str
    provider_title: str
    status: Status
    health: Health
    created_by: str
    created_at: datetime
    last_verified_at: datetime | None
    key_hint: str | None
    credential_created_at: datetime | None = None
    """When the credential in use was stored: its age is what rotation reminders go by."""


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list; ``number`` counts from 1."""

    items: tuple[T, ...]
    number: int
    size: int
    total: int

    @property
    def has_previous(self) -> bool:
        return self.number > 1

    @property
    def has_next(self) -> bool:
        return self.number * self.size < self.total

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.size))
