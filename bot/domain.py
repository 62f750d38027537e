"""The vocabulary shared by services, blocks and listeners: lifecycle, health, and the read models
that services hand out and blocks render. Nothing here does I/O or knows Slack or the database."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from bot.providers.base import Check, Outcome, Verification

__all__ = [
    "HISTORY_SHOWN",
    "HOME_ITEMS_MAX",
    "NAME_FIELD",
    "NAME_MAX_LENGTH",
    "PAGE_SIZE",
    "REASON_MAX_LENGTH",
    "STORE_CHECK",
    "SYSTEM_ACTOR",
    "AdminCheck",
    "ApprovalRequest",
    "AuditEntry",
    "AuditHistory",
    "ChangeKind",
    "ConfigChange",
    "ConnectionSummary",
    "Decision",
    "Health",
    "HealthChange",
    "HistoryEntry",
    "HomeData",
    "InFlightKind",
    "Page",
    "Refusal",
    "Refused",
    "Reminder",
    "Removal",
    "RequestKind",
    "RetestReport",
    "RetestResult",
    "RotationStatus",
    "SecretLocation",
    "Status",
    "StatusReport",
    "Trigger",
    "Verdict",
    "Visibility",
    "name_key",
    "utcnow",
]

NAME_FIELD = "name"
"""The field under which a connection's name is submitted and its problems are reported."""
NAME_MAX_LENGTH = 64
PAGE_SIZE = 20
HOME_ITEMS_MAX = 20
"""The most connections, and the most pending requests, one Home tab lists (it holds 100 blocks)."""
HISTORY_SHOWN = 10
"""How many past verifications ``/connections status`` shows."""
REASON_MAX_LENGTH = 500
"""The most characters of an admin's reason for a rejection."""
SYSTEM_ACTOR = "system"
"""The audit trail's actor for changes nobody in Slack made (an expiry, a scheduled re-test)."""
STORE_CHECK = "Secret store"
"""The name of the check a re-test adds about the secret store that holds the credential (it was
changed outside the bot, deleted, or could not be read)."""

T = TypeVar("T")


def utcnow() -> datetime:
    """The clock every service uses unless a test gives it another."""
    return datetime.now(UTC)


def name_key(name: str) -> str:
    """The form under which names are compared: whitespace collapsed and Unicode case folded, so
    "Prod  Warehouse", "prod warehouse" and "PROD WAREHOUSE" are one name in a workspace. Computed here rather
    than with the database's lower(), which folds only ASCII on SQLite. The word joiner the bot
    puts into names it shows (so a dot cannot make a link) is ignored, so a name copied out of a
    message finds its connection."""
    return " ".join(name.replace("\u2060", "").split()).casefold()


class Status(enum.StrEnum):
    """Where a connection is in its lifecycle (DESIGN.md, "Connection lifecycle")."""

    PENDING_APPROVAL = "pending_approval"
    ACTIVE = "active"
    REJECTED = "rejected"
    EXPIRED = "expired"
    REVOKED = "revoked"

    @property
    def label(self) -> str:
        return "awaiting approval" if self is Status.PENDING_APPROVAL else self.value

    @property
    def holds_name(self) -> bool:
        """Whether a connection in this status keeps its name reserved in the workspace."""
        return self in (Status.PENDING_APPROVAL, Status.ACTIVE)


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


class InFlightKind(enum.StrEnum):
    """What an in-flight verification will store if it passes."""

    CREATE = "create"
    ROTATION = "rotation"


class Trigger(enum.StrEnum):
    """Why a verification ran, as the history records it."""

    CREATE = "create"
    RETEST = "retest"
    """Someone asked from Slack (``/connections test``, a Re-test button)."""
    SCHEDULE = "schedule"
    ROTATION = "rotation"


@dataclass(frozen=True)
class SecretLocation:
    """Where an active connection's credential lives when a secret store holds it: the store
    (its key and how people name it) and the secret's path there, which pipelines reference."""

    store_key: str
    store_title: str
    path: str


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
    secret_location: SecretLocation | None = None
    """Where a secret store holds the credential; None while it is sealed in the bot's database."""


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


@dataclass(frozen=True)
class AdminCheck:
    """The verdict of a rights check on one user (see ``bot.services.admins``).

    ``failed_closed`` is True when the answer is "no" only because Slack could not be asked (the
    user may well be allowed; try again later)."""

    allowed: bool
    why: str
    failed_closed: bool = False


class Refusal(enum.Enum):
    NOT_FOUND = "not_found"
    NOT_ALLOWED = "not_allowed"
    CHECK_FAILED = "check_failed"
    """The user's rights could not be checked (Slack did not answer); try again."""
    WRONG_STATUS = "wrong_status"
    ROTATION_PENDING = "rotation_pending"
    TOO_MANY = "too_many"
    """Past a per-user limit (:mod:`bot.services.limits`); try again later."""
    STORE_FAILED = "store_failed"
    """The secret store refused or did not answer; the message says where and why."""


@dataclass(frozen=True)
class Refused:
    """Why a request changed nothing, with one plain-text sentence or two for the user."""

    reason: Refusal
    message: str
    connection_id: str | None = None
    """The connection the refusal is about, when one was found (to say more about it)."""


# --- approval requests ---------------------------------------------------------------------------


class RequestKind(enum.StrEnum):
    """What an admin is asked to approve: a new connection, or new credentials for an active one."""

    CONNECTION = "connection"
    ROTATION = "rotation"


@dataclass(frozen=True)
class ConfigChange:
    """A non-secret setting a rotation changes: the form's label for it, its value before and after
    ("" when unset). The values are user text."""

    label: str
    before: str
    after: str


@dataclass(frozen=True)
class ApprovalRequest:
    """A request for an admin's decision, as messages show it.

    ``id`` is the subject's own id (the connection's, or the rotation's), carried by the Approve and
    Reject buttons. ``status`` is the subject's status: the connection's for a new connection, the
    rotation's for a rotation. ``connection`` shows the key in use; a rotation also has the new
    key's masked ``new_key_hint`` and the other settings it changes, ``config_changes`` (empty when
    only the secret changes; None for a new connection, or a rotation decided before they were
    recorded). ``checks`` are those of the verification that led to the request.
    """

    kind: RequestKind
    id: str
    team_id: str
    connection: ConnectionSummary
    requested_by: str
    requested_at: datetime
    status: Status | RotationStatus
    checks: tuple[Check, ...] = ()
    decided_by: str | None = None
    decided_at: datetime | None = None
    reason: str | None = None
    message_channel: str | None = None
    message_ts: str | None = None
    new_key_hint: str | None = None
    config_changes: tuple[ConfigChange, ...] | None = None

    @property
    def pending(self) -> bool:
        return self.status in (Status.PENDING_APPROVAL, RotationStatus.PENDING_APPROVAL)


class Verdict(enum.Enum):
    """What a click on Approve or Reject came to."""

    ALLOWED = "allowed"
    """Every check passed; nothing was decided yet (the reject form may open)."""
    DECIDED = "decided"
    ALREADY_DECIDED = "already_decided"
    NOT_FOUND = "not_found"
    SELF_APPROVAL = "self_approval"
    NOT_ADMIN = "not_admin"
    ADMIN_CHECK_FAILED = "admin_check_failed"
    EXPIRED = "expired"
    """The request had outlived its time to live; this click expired it instead of deciding."""
    STORE_FAILED = "store_failed"
    """The secret store refused the approved credential or did not answer: nothing was decided,
    the request still waits, and a click on Approve tries again. ``Decision.problem`` says why."""


@dataclass(frozen=True)
class Decision:
    """The answer to a click: what happened, the request as it is now, and the clicker's rights.
    ``problem`` is, for :attr:`Verdict.STORE_FAILED`, the store's one-line reason (where and its
    error code, never a value), safe to show an admin."""

    verdict: Verdict
    request: ApprovalRequest | None = None
    admin: AdminCheck | None = None
    problem: str | None = None


# --- health and re-tests -------------------------------------------------------------------------


class ChangeKind(enum.Enum):
    FAILED = "failed"
    """Was healthy (or never checked), now failing: raise an alert."""
    STILL_FAILING = "still_failing"
    """Still failing, and the last alert or reminder is older than the reminder period: remind."""
    RECOVERED = "recovered"
    """Was failing and alerted about, now works again: follow up on the alert."""


@dataclass(frozen=True)
class HealthChange:
    """A change worth telling the alert channel about. ``alert_channel``/``alert_ts`` point at the
    alert already posted about this failure, when there is one (reply in its thread)."""

    kind: ChangeKind
    failing_since: datetime | None = None
    alert_channel: str | None = None
    alert_ts: str | None = None


@dataclass(frozen=True)
class RetestResult:
    """One re-test: the connection as it is afterwards, what the provider said, and the change."""

    team_id: str
    connection: ConnectionSummary
    verification: Verification
    change: HealthChange | None = None

    @property
    def ok(self) -> bool:
        return self.verification.ok

    @property
    def conclusive(self) -> bool:
        """False when the provider only rate-limited us, or the credential could not be read from
        its secret store: the credential may be fine."""
        return self.verification.conclusive


@dataclass(frozen=True)
class RetestReport:
    """The results of a bulk re-test, failing ones first (then inconclusive, then healthy)."""

    results: tuple[RetestResult, ...]
    elapsed_ms: int = 0

    @property
    def healthy(self) -> int:
        return sum(1 for r in self.results if r.ok)

    @property
    def failing(self) -> int:
        return sum(1 for r in self.results if not r.ok and r.conclusive)

    @property
    def inconclusive(self) -> int:
        return sum(1 for r in self.results if not r.conclusive)


@dataclass(frozen=True)
class HistoryEntry:
    """One past verification of a connection."""

    at: datetime
    trigger: Trigger
    outcome: Outcome
    summary: str
    latency_ms: int
    actor: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK


@dataclass(frozen=True)
class StatusReport:
    """``/connections status <name>``: the connection, its latest verifications (newest first),
    since when it fails, and the rotation waiting for approval, if any."""

    connection: ConnectionSummary
    history: tuple[HistoryEntry, ...]
    failing_since: datetime | None = None
    pending_rotation: ApprovalRequest | None = None


@dataclass(frozen=True)
class Reminder:
    """A credential past the rotation period, whose owner is to be reminded."""

    team_id: str
    connection: ConnectionSummary
    age_days: int


@dataclass(frozen=True)
class Removal:
    """A removed connection (status ``revoked``), and the rotation its removal cancelled."""

    connection: ConnectionSummary
    removed_by: str
    cancelled_rotation: ApprovalRequest | None = None
    alert_channel: str | None = None
    alert_ts: str | None = None
    """The open alert about the connection's failure, if any: the removal closes it."""


# --- what one user sees --------------------------------------------------------------------------


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
    pending: tuple[ApprovalRequest, ...] = ()
    pending_total: int = 0
    allow_self_approval: bool = False


class Visibility(enum.Enum):
    """Whether an audit history could be shown, and if not, why."""

    SHOWN = "shown"
    NOT_FOUND = "not_found"
    NOT_ADMIN = "not_admin"
    ADMIN_CHECK_FAILED = "admin_check_failed"


@dataclass(frozen=True)
class AuditEntry:
    """One audit event as it is shown and exported."""

    id: int
    created_at: datetime
    team_id: str
    actor: str
    action: str
    connection_id: str | None
    before_status: str | None
    after_status: str | None
    reason: str | None
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The exported object: every field, with ``time`` in ISO 8601, UTC (``…Z``)."""
        return {
            "id": self.id,
            "time": self.created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "team_id": self.team_id,
            "actor": self.actor,
            "action": self.action,
            "connection_id": self.connection_id,
            "before_status": self.before_status,
            "after_status": self.after_status,
            "reason": self.reason,
            "details": self.details,
        }


@dataclass(frozen=True)
class AuditHistory:
    """The answer to ``/connections audit <name>``.

    ``name`` is what was asked for. With :attr:`Visibility.SHOWN`, ``connection`` is the connection
    found and ``events`` its latest ``limit`` events, newest first; ``more`` says older ones exist.
    ``admin`` is the verdict on the asker (absent only when nobody was checked)."""

    visibility: Visibility
    name: str
    limit: int
    connection: ConnectionSummary | None = None
    events: tuple[AuditEntry, ...] = ()
    more: bool = False
    admin: AdminCheck | None = None
