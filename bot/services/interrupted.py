"""Verifications that a user waits for, and the ones nobody will finish.

A submitted form is acknowledged with "Verifying…" and checked afterwards; while the check runs, an
:class:`~bot.store.models.InFlightVerification` row says who waits for it, in which modal, and which
process does the work. The row goes in the same transaction as the outcome, so a row that outlives
its process means a user left looking at "Verifying…". :class:`InterruptedVerifications` finds
those rows, removes each with an audit event in one transaction, and hands back what the user must
be told (the listeners tell them). Two sweeps cannot both take a row: the delete decides.

Interrupted are, at start, rows of this machine whose process is gone (or whose pid is ours but
whose instance is not: a restart reused it), and at any time, on any replica, rows past their
deadline, so a replica that never came back still gets its users told.

"This machine" is the same host name, boot (``/proc/sys/kernel/random/boot_id``) and pid namespace
(the inode of ``/proc/self/ns/pid``): only then does a pid name the same process for us as for the
row's writer. Containers on host networking share the host name and may each be pid 1 of their own
namespace. Any other row is left to its deadline, as are rows of a live process.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from bot.domain import InFlightKind, utcnow
from bot.providers.base import Provider, Verification
from bot.services.records import BATCH_SIZE, audit_event
from bot.store import Database
from bot.store.models import InFlightVerification
from bot.store.uow import UnitOfWork

__all__ = [
    "ClaimLost",
    "Interrupted",
    "InterruptedVerifications",
    "ProcessOwner",
    "end_claim",
    "release_quietly",
    "still_claimed",
]

logger = logging.getLogger(__name__)

DEADLINE_GRACE = timedelta(minutes=2)
"""Added to a provider's own verification bound: the form's re-checks, an admin-rights lookup and
the storing transaction (which may wait out SQLite's busy timeout) happen outside that bound."""
REASON_STOPPED = "the bot stopped before the verification finished"
REASON_OVERDUE = "the verification did not finish within its time limit"


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists in our pid namespace (signal 0 checks without sending)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
PID_NAMESPACE_PATH = Path("/proc/self/ns/pid")
BOOT_ID_LENGTH = 36
"""A boot id is a UUID in its canonical text form; longer text is not one and is not stored."""


def current_boot_id(path: Path = BOOT_ID_PATH) -> str | None:
    """This boot of the machine (Linux); ``None`` where the system does not say."""
    try:
        boot_id = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return boot_id if 0 < len(boot_id) <= BOOT_ID_LENGTH else None


def current_pid_namespace(path: Path = PID_NAMESPACE_PATH) -> int | None:
    """The pid namespace this process lives in (Linux); ``None`` where the system does not say."""
    try:
        return path.stat().st_ino
    except OSError:
        return None


@dataclass(frozen=True)
class ProcessOwner:
    """Which running bot does a verification: its host, the machine's boot and the pid namespace
    (so a pid means the same process to every reader), its pid, and an id drawn at each start, so a
    restart that gets the same pid in the same namespace is still told apart."""

    host: str
    pid: int
    boot_id: str | None = None
    pid_namespace: int | None = None
    instance: str = field(default_factory=lambda: str(uuid.uuid4()))

    @classmethod
    def current(cls) -> ProcessOwner:
        return cls(socket.gethostname(), os.getpid(), current_boot_id(), current_pid_namespace())

    def shares_pids_with(self, row: InFlightVerification) -> bool:
        """Whether the row was written on this machine, in this boot and this pid namespace, so
        that its pid names the same process for us as for its writer."""
        return (row.host, row.boot_id, row.pid_namespace) == (self.host, self.boot_id, self.pid_namespace)

    def claim(
        self,
        *,
        kind: InFlightKind,
        team_id: str,
        user_id: str,
        provider: Provider,
        name: str,
        view_id: str,
        config: dict[str, str],
        now: datetime,
        connection_id: str | None = None,
    ) -> InFlightVerification:
        """The row that records a verification this process is about to run."""
        return InFlightVerification(
            team_id=team_id,
            user_id=user_id,
            kind=kind,
            provider=provider.key,
            name=name,
            view_id=view_id,
            host=self.host,
            boot_id=self.boot_id,
            pid_namespace=self.pid_namespace,
            pid=self.pid,
            instance=self.instance,
            started_at=now,
            deadline=verification_deadline(now, provider),
            connection_id=connection_id,
            config=dict(config),
        )


def verification_deadline(started: datetime, provider: Provider) -> datetime:
    """When a verification started at ``started`` is surely over, finished or not."""
    return started + timedelta(seconds=provider.deadline_seconds) + DEADLINE_GRACE


class ClaimLost(Exception):
    """A sweep took the row of a verification that was still running (it overran its deadline, or
    a replica took this process for gone): the user has been told it was interrupted, so its
    outcome must not be stored or shown."""

    def __init__(self, verification: Verification | None) -> None:
        super().__init__("the in-flight verification was taken by a sweep")
        self.verification = verification


async def end_claim(tx: UnitOfWork, claim_id: str | None, verification: Verification | None) -> None:
    """End a verification's claim in the transaction that stores its outcome, so the two land
    together; raises :class:`ClaimLost` (rolling the outcome back) when the claim is gone."""
    if claim_id is not None and not await tx.in_flight.release(claim_id):
        raise ClaimLost(verification)


async def release_quietly(db: Database, claim_id: str | None) -> bool:
    """End a claim whose verification stopped without an outcome. ``False`` only when the claim was
    already gone: a sweep took it and its user was told, so they must not be told again. Never
    raises: a row left behind (the database failed) is taken by a sweep once its deadline passes."""
    if claim_id is None:
        return True
    try:
        async with db.transaction() as tx:
            return await tx.in_flight.release(claim_id)
    except Exception as exc:  # the database may be what failed; the caller has its own news to tell
        logger.warning("could not clear in-flight verification %s: %s", claim_id, type(exc).__name__)
        return True


async def still_claimed(db: Database, claim_id: str | None) -> bool:
    """Whether the claim is still there, so its user has not been told by a sweep; ``True`` when
    the database cannot say (telling twice beats telling nobody)."""
    if claim_id is None:
        return True
    try:
        async with db.read() as tx:
            return await tx.in_flight.holds(claim_id)
    except Exception as exc:
        logger.warning("could not look up in-flight verification %s: %s", claim_id, type(exc).__name__)
        return True


@dataclass(frozen=True)
class Interrupted:
    """A verification that was abandoned: who waits for it, where, and what for (no secret)."""

    kind: InFlightKind
    team_id: str
    user_id: str
    provider_key: str
    name: str
    view_id: str
    config: dict[str, str]
    connection_id: str | None = None

    @classmethod
    def of(cls, row: InFlightVerification) -> Interrupted:
        return cls(
            kind=InFlightKind(row.kind),
            team_id=row.team_id,
            user_id=row.user_id,
            provider_key=row.provider,
            name=row.name,
            view_id=row.view_id,
            config={str(k): str(v) for k, v in (row.config or {}).items()},
            connection_id=row.connection_id,
        )


@dataclass
class InterruptedVerifications:
    """Finds and removes the in-flight rows nobody will finish; see the module docstring."""

    db: Database
    owner: ProcessOwner
    alive: Callable[[int], bool] = pid_alive
    clock: Callable[[], datetime] = utcnow
    batch_size: int = BATCH_SIZE

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")

    async def sweep_at_start(self) -> list[Interrupted]:
        """Take the rows of processes on this machine that are gone, and every row past its deadline."""
        now = self.clock()
        async with self.db.read() as tx:
            rows = tx.in_flight
            local = await rows.on_machine(
                self.owner.host, self.owner.boot_id, self.owner.pid_namespace, self.batch_size
            )
            overdue = await rows.past_deadline(now, self.batch_size)
        candidates = {row.id: (row, REASON_STOPPED) for row in local if self._orphaned(row)}
        for row in overdue:
            candidates.setdefault(row.id, (row, REASON_OVERDUE))
        return await self._take_all(candidates.values(), now)

    async def sweep_overdue(self) -> list[Interrupted]:
        """Take every row past its deadline (for the periodic job, on any replica)."""
        now = self.clock()
        async with self.db.read() as tx:
            overdue = await tx.in_flight.past_deadline(now, self.batch_size)
        return await self._take_all(((row, REASON_OVERDUE) for row in overdue), now)

    def _orphaned(self, row: InFlightVerification) -> bool:
        """Whether a row of this machine (see :meth:`ProcessOwner.shares_pids_with`) belongs to no
        running bot; a row of any other is never taken for one, whatever its pid."""
        if not self.owner.shares_pids_with(row):
            return False
        if row.pid == self.owner.pid:
            return row.instance != self.owner.instance
        return not self.alive(row.pid)

    async def _take_all(
        self, candidates: Iterable[tuple[InFlightVerification, str]], now: datetime
    ) -> list[Interrupted]:
        taken: list[Interrupted] = []
        for row, reason in candidates:
            try:
                found = await self._take(row.id, reason, now)
            except Exception:  # one bad row must not keep the others' users waiting
                logger.exception("could not clear interrupted verification %s; next sweep retries", row.id)
                continue
            if found is not None:
                taken.append(found)
        return taken

    async def _take(self, row_id: str, reason: str, now: datetime) -> Interrupted | None:
        async with self.db.transaction() as tx:
            row = await tx.in_flight.take(row_id)
            if row is None:
                return None
            interrupted = Interrupted.of(row)
            create = interrupted.kind is InFlightKind.CREATE
            await tx.audit.add(
                audit_event(
                    row.team_id,
                    row.user_id,
                    "connection.create_interrupted" if create else "rotation.interrupted",
                    now,
                    connection_id=row.connection_id,
                    reason=reason,
                    details={"provider": row.provider, "name": row.name},
                )
            )
        logger.info(
            "%s verification for %s in team %s was interrupted (%s)",
            interrupted.kind.value,
            interrupted.user_id,
            interrupted.team_id,
            reason,
        )
        return interrupted
