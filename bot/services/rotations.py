"""Rotating a connection's credential: verify the new one, have an admin approve it, then swap.

A verified rotation stores the new version's ciphertexts beside the old ones and waits, as a
:class:`~bot.store.models.Rotation`, for the same admin approval as a new connection (the same
rights, the same self-approval rule, the same time to live). The connection keeps using its old
credential until then. Approval swaps the two in one transaction (the connection's credential
version, masked key and non-secret fields) and destroys the old ciphertexts; rejection or expiry
destroys the new ones. Each decision is one conditional UPDATE, so two clicks cannot both win.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy.exc import OperationalError

from bot.crypto import Cipher, associated_data
from bot.domain import ConnectionSummary, RotationStatus, Status, Trigger
from bot.providers.base import Check, FieldValues, Provider, Verification
from bot.providers.registry import ProviderRegistry, UnknownProvider
from bot.services.admins import AdminCheck, AdminPolicy
from bot.services.approvals import REASON_MAX_LENGTH, Verdict
from bot.services.expiry import SYSTEM_ACTOR
from bot.services.interrupted import (
    CLAIM_LOCK_WAIT_MS,
    ClaimBusy,
    ClaimLost,
    ProcessOwner,
    end_claim,
    lock_wait_exceeded,
    release_quietly,
    still_claimed,
)
from bot.services.lookup import find_connection
from bot.services.permissions import Refusal, Refused, owner_or_admin, owner_refusal
from bot.services.summaries import summarize
from bot.store import (
    AuditEvent,
    Connection,
    Credential,
    Database,
    MasterKeyMoved,
    Rotation,
    RotationPending,
    VerificationRecord,
)
from bot.store.models import InFlightKind
from bot.store.uow import UnitOfWork

__all__ = [
    "RotationDecision",
    "RotationOutcome",
    "RotationService",
    "RotationSummary",
    "RotationTarget",
    "cancel_pending",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RotationTarget:
    """A connection that may be rotated now: what the form needs to show."""

    connection: ConnectionSummary
    provider: Provider
    config: dict[str, str]


@dataclass(frozen=True)
class RotationSummary:
    """A rotation as messages show it: the connection (with the key in use), who asked, the new
    masked key, the checks its verification ran, and the decision once there is one."""

    id: str
    team_id: str
    connection: ConnectionSummary
    requested_by: str
    requested_at: datetime
    new_key_hint: str | None
    status: RotationStatus
    checks: tuple[Check, ...] = ()
    decided_by: str | None = None
    decided_at: datetime | None = None
    reason: str | None = None
    approval_channel: str | None = None
    approval_ts: str | None = None


@dataclass(frozen=True)
class RotationDecision:
    """The answer to a click on a rotation request (verdicts as for new connections)."""

    verdict: Verdict
    rotation: RotationSummary | None = None
    admin: AdminCheck | None = None


@dataclass(frozen=True)
class RotationOutcome:
    """What became of a submitted rotation: refused before any provider call, or verified (and,
    when the verification passed, stored as ``rotation_id`` awaiting approval). ``abandoned`` means
    a sweep took the request's claim first (it overran its deadline): its user was told it was
    interrupted, and nothing was stored."""

    verification: Verification | None = None
    rotation_id: str | None = None
    refused: Refused | None = None
    abandoned: bool = False

    @property
    def stored(self) -> bool:
        return self.rotation_id is not None


def _now() -> datetime:
    return datetime.now(UTC)


class RotationService:
    def __init__(
        self,
        db: Database,
        cipher: Cipher,
        providers: ProviderRegistry,
        http: httpx.AsyncClient,
        policy: AdminPolicy,
        *,
        ttl: timedelta,
        allow_self_approval: bool = False,
        clock: Callable[[], datetime] = _now,
        owner: ProcessOwner | None = None,
    ) -> None:
        self._owner = owner or ProcessOwner.current()
        self._db = db
        self._cipher = cipher
        self._providers = providers
        self._http = http
        self._policy = policy
        self._ttl = ttl
        self._allow_self_approval = allow_self_approval
        self._clock = clock

    @property
    def policy(self) -> AdminPolicy:
        return self._policy

    # --- asking ---------------------------------------------------------------------------------

    async def check_form(self, provider: Provider, values: FieldValues) -> dict[str, str]:
        """The provider's offline checks of a rotation form, on a thread (see
        ConnectionService.check_form): problems by field name."""
        return await asyncio.to_thread(provider.validate, values)

    async def may_rotate(
        self, team_id: str, actor: str, *, connection_id: str | None = None, name: str | None = None
    ) -> RotationTarget | Refused:
        """Whether ``actor`` may rotate the connection (owner or admin, active, no rotation
        waiting); checked when the form is asked for and again when it is submitted."""
        async with self._db.read() as session:
            tx = UnitOfWork(session)
            row = await find_connection(tx, team_id, connection_id=connection_id, name=name)
            if isinstance(row, Refused):
                return row
            summary = summarize(row, self._providers)
            pending = await tx.rotations.pending_for(team_id, row.id)
            pending_summary = await self._summary(tx, pending, row) if pending is not None else None
        if row.status is not Status.ACTIVE:
            return Refused(
                Refusal.WRONG_STATUS,
                f"“{row.name}” is {row.status.label}; only active connections can be rotated.",
            )
        check = await owner_or_admin(self._policy, actor, row.created_by)
        if not check.allowed:
            return owner_refusal(check, "rotate")
        if pending_summary is not None:
            return Refused(
                Refusal.ROTATION_PENDING,
                f"A rotation of “{row.name}” is already waiting for an admin's approval. An admin "
                "can reject it if it should be replaced.",
                connection_id=row.id,
            )
        try:
            provider = self._providers.get(row.provider)
        except UnknownProvider:
            return Refused(Refusal.WRONG_STATUS, f"This bot no longer offers {row.provider!r}.")
        return RotationTarget(summary, provider, {str(k): str(v) for k, v in row.config.items()})

    async def claim(
        self,
        team_id: str,
        actor: str,
        provider: Provider,
        connection_id: str,
        *,
        name: str,
        config: dict[str, str],
        view_id: str,
    ) -> str | None:
        """Record, before the form is acknowledged, that ``actor`` waits in ``view_id`` for the
        verification of a new credential of the connection; the claim's id, or ``None`` while
        another rotation of the connection is being verified. Raises :class:`ClaimBusy` when the
        database stays locked past :data:`CLAIM_LOCK_WAIT_MS` (nothing is recorded then)."""
        row = self._owner.claim(
            kind=InFlightKind.ROTATION,
            team_id=team_id,
            user_id=actor,
            provider=provider,
            name=name,
            view_id=view_id,
            config=config,
            now=self._clock(),
            connection_id=connection_id,
        )
        try:
            async with self._db.transaction(lock_wait_ms=CLAIM_LOCK_WAIT_MS) as tx:
                claimed = await tx.in_flight.claim(row)
        except OperationalError as error:
            if lock_wait_exceeded(error):  # nothing was written; the form can be submitted again
                raise ClaimBusy from None
            raise
        return row.id if claimed else None

    async def release_claim(self, claim_id: str | None) -> bool:
        """End the claim of a verification that stopped without an outcome; never raises.
        ``False`` when a sweep had taken it: its user was told, and must not be told again."""
        return await release_quietly(self._db, claim_id)

    async def claim_held(self, claim_id: str | None) -> bool:
        """Whether the claim is still this process's to end (no sweep took it and told its user)."""
        return await still_claimed(self._db, claim_id)

    async def request(
        self,
        team_id: str,
        connection_id: str,
        actor: str,
        values: FieldValues,
        *,
        claim_id: str | None = None,
    ) -> RotationOutcome:
        """Verify the new credential and, if it works, store it as a rotation awaiting approval.
        The provider call happens outside any transaction; a failure stores nothing but an audit
        event. The claim (see :meth:`claim`) ends in the transaction that stores the outcome, or,
        if anything raises, right away."""
        try:
            return await self._verify_and_store(team_id, connection_id, actor, values, claim_id)
        except ClaimLost as lost:
            logger.warning(
                "a rotation of connection %s overran its deadline and was reported as interrupted; "
                "its outcome was dropped",
                connection_id,
            )
            return RotationOutcome(verification=lost.verification, abandoned=True)
        except Exception:
            if not await self.release_claim(claim_id):
                # A sweep took the claim and told the user it was interrupted: one answer is enough.
                logger.exception("a rotation of connection %s failed after it was reported", connection_id)
                return RotationOutcome(abandoned=True)
            raise

    async def _verify_and_store(
        self, team_id: str, connection_id: str, actor: str, values: FieldValues, claim_id: str | None
    ) -> RotationOutcome:
        target = await self.may_rotate(team_id, actor, connection_id=connection_id)
        if isinstance(target, Refused):
            if claim_id is not None:
                async with self._db.transaction() as tx:
                    await end_claim(tx, claim_id, None)
            return RotationOutcome(refused=target)
        provider = target.provider
        verification = await provider.verify(values, self._http)
        now = self._clock()
        connection = target.connection
        if not verification.ok:
            async with self._db.transaction() as tx:
                await end_claim(tx, claim_id, verification)
                event = _event(team_id, actor, "connection.rotation_failed", connection, now)
                await tx.audit.add(AuditEvent(**(event | {"reason": verification.outcome.value})))
            return RotationOutcome(verification=verification)
        secrets = provider.secrets_of(values)
        try:
            async with self._db.transaction() as tx:
                await end_claim(tx, claim_id, verification)
                row = await tx.connections.lock(team_id, connection_id)
                if row is None or row.status is not Status.ACTIVE:
                    return RotationOutcome(
                        verification=verification,
                        refused=Refused(
                            Refusal.WRONG_STATUS,
                            "The connection was removed meanwhile, so the new credentials were not saved.",
                        ),
                    )
                version = max(row.credential_version, await tx.rotations.latest_version(row.id)) + 1
                rotation = Rotation(
                    team_id=team_id,
                    connection_id=row.id,
                    version=version,
                    requested_by=actor,
                    config=provider.config_of(values),
                    key_hint=provider.credential_hint(values),
                    created_at=now,
                    updated_at=now,
                )
                await tx.rotations.add(rotation)
                await tx.key_canary.require_sealing_key(self._cipher.key_id)
                for field_name, secret in secrets.items():
                    sealed = self._cipher.seal(secret, associated_data(row.id, field_name, version))
                    await tx.credentials.add(
                        Credential(
                            team_id=team_id,
                            connection_id=row.id,
                            version=version,
                            field=field_name,
                            key_id=sealed.key_id,
                            nonce=sealed.nonce,
                            ciphertext=sealed.ciphertext,
                            created_at=now,
                        )
                    )
                await tx.verifications.add(
                    VerificationRecord.from_verification(
                        verification,
                        team_id=team_id,
                        connection_id=row.id,
                        trigger=Trigger.ROTATION.value,
                        actor=actor,
                    )
                )
                await tx.audit.add(
                    AuditEvent(**_event(team_id, actor, "connection.rotation_requested", connection, now))
                )
        except RotationPending:
            # The conflict rolled the whole transaction back, the claim's end with it.
            await self.release_claim(claim_id)
            return RotationOutcome(
                verification=verification,
                refused=Refused(
                    Refusal.ROTATION_PENDING,
                    "Someone else asked to rotate this connection a moment ago; nothing was saved.",
                ),
            )
        except MasterKeyMoved as moved:
            await self.release_claim(claim_id)
            logger.error("not storing a rotation of connection %s: %s", connection_id, moved)
            return RotationOutcome(
                verification=verification,
                refused=Refused(
                    Refusal.CHECK_FAILED,
                    "The new credentials work, but the bot's master key was rotated while it was running, "
                    "so nothing was saved. Ask whoever runs the bot to restart it, then rotate again.",
                ),
            )
        logger.info("rotation %s of connection %s requested by %s", rotation.id, row.id, actor)
        return RotationOutcome(verification=verification, rotation_id=rotation.id)

    async def describe(self, team_id: str, rotation_id: str) -> RotationSummary | None:
        async with self._db.read() as session:
            tx = UnitOfWork(session)
            rotation = await tx.rotations.get(team_id, rotation_id)
            if rotation is None:
                return None
            connection = await tx.connections.get(team_id, rotation.connection_id)
            return None if connection is None else await self._summary(tx, rotation, connection)

    async def pending_for(self, team_id: str, connection_id: str) -> RotationSummary | None:
        async with self._db.read() as session:
            tx = UnitOfWork(session)
            rotation = await tx.rotations.pending_for(team_id, connection_id)
            connection = await tx.connections.get(team_id, connection_id)
            if rotation is None or connection is None:
                return None
            return await self._summary(tx, rotation, connection)

    async def record_request_message(self, team_id: str, rotation_id: str, channel: str, ts: str) -> None:
        async with self._db.transaction() as tx:
            rotation = await tx.rotations.get(team_id, rotation_id)
            if rotation is not None:
                rotation.approval_channel, rotation.approval_ts = channel, ts

    # --- deciding ---------------------------------------------------------------------------------

    async def may_decide(self, team_id: str, rotation_id: str, actor: str) -> RotationDecision:
        admin = await self._policy.check(actor)
        async with self._db.read() as session:
            refusal = await self._refusal(UnitOfWork(session), team_id, rotation_id, actor, admin)
        return refusal or RotationDecision(Verdict.DECIDED, admin=admin)

    async def approve(self, team_id: str, rotation_id: str, actor: str) -> RotationDecision:
        return await self._decide(team_id, rotation_id, actor, RotationStatus.APPROVED, None)

    async def reject(self, team_id: str, rotation_id: str, actor: str, reason: str) -> RotationDecision:
        reason = reason.strip()[:REASON_MAX_LENGTH].rstrip()
        if not reason:
            raise ValueError("a rejection needs a reason")
        return await self._decide(team_id, rotation_id, actor, RotationStatus.REJECTED, reason)

    async def expire_overdue(self, now: datetime | None = None, limit: int = 100) -> list[RotationDecision]:
        """Expire rotations nobody decided on within the approval time to live; their new
        ciphertexts are destroyed and the old credential stays in use."""
        now = self._clock() if now is None else now
        async with self._db.read() as session:
            overdue = await UnitOfWork(session).rotations.pending_created_before(now - self._ttl, limit)
        expired = []
        for rotation in overdue:
            async with self._db.transaction() as tx:
                decision = await self._close(
                    tx, rotation.team_id, rotation.id, RotationStatus.EXPIRED, SYSTEM_ACTOR, None, now
                )
            if decision is not None:
                expired.append(decision)
        return expired

    async def _decide(
        self, team_id: str, rotation_id: str, actor: str, to: RotationStatus, reason: str | None
    ) -> RotationDecision:
        admin = await self._policy.check(actor)
        now = self._clock()
        async with self._db.read() as session:
            current = await UnitOfWork(session).rotations.get(team_id, rotation_id)
        if (
            admin.allowed
            and current is not None
            and current.status is RotationStatus.PENDING_APPROVAL
            and now - current.created_at >= self._ttl
        ):
            async with self._db.transaction() as tx:
                expired = await self._close(
                    tx, team_id, rotation_id, RotationStatus.EXPIRED, SYSTEM_ACTOR, None, now
                )
            if expired is not None:
                return RotationDecision(Verdict.EXPIRED, expired.rotation, admin)
        async with self._db.transaction() as tx:
            refusal = await self._refusal(tx, team_id, rotation_id, actor, admin)
            if refusal is not None:
                return refusal
            decision = await self._close(tx, team_id, rotation_id, to, actor, reason, now)
            if decision is None:
                rotation = await tx.rotations.get(team_id, rotation_id)
                connection = (
                    await tx.connections.get(team_id, rotation.connection_id)
                    if rotation is not None
                    else None
                )
                if rotation is None or connection is None:
                    return RotationDecision(Verdict.NOT_FOUND, admin=admin)
                await tx.session.refresh(rotation)
                summary = await self._summary(tx, rotation, connection)
                return RotationDecision(Verdict.ALREADY_DECIDED, summary, admin)
            return RotationDecision(Verdict.DECIDED, decision.rotation, admin)

    async def _refusal(
        self, tx: UnitOfWork, team_id: str, rotation_id: str, actor: str, admin: AdminCheck
    ) -> RotationDecision | None:
        if not admin.allowed:
            verdict = Verdict.ADMIN_CHECK_FAILED if admin.failed_closed else Verdict.NOT_ADMIN
            return RotationDecision(verdict, admin=admin)
        rotation = await tx.rotations.get(team_id, rotation_id)
        connection = await tx.connections.get(team_id, rotation.connection_id) if rotation else None
        if rotation is None or connection is None:
            return RotationDecision(Verdict.NOT_FOUND, admin=admin)
        if rotation.status is not RotationStatus.PENDING_APPROVAL:
            return RotationDecision(
                Verdict.ALREADY_DECIDED, await self._summary(tx, rotation, connection), admin
            )
        if rotation.requested_by == actor and not self._allow_self_approval:
            return RotationDecision(
                Verdict.SELF_APPROVAL, await self._summary(tx, rotation, connection), admin
            )
        return None

    async def _close(
        self,
        tx: UnitOfWork,
        team_id: str,
        rotation_id: str,
        to: RotationStatus,
        actor: str,
        reason: str | None,
        now: datetime,
    ) -> RotationDecision | None:
        """Move a waiting rotation to ``to`` with everything that goes with it, if this call's
        conditional UPDATE wins; None if someone else decided first.

        The connection row is locked *before* the rotation is updated: a removal takes the
        same two rows in that order (connection, then its waiting rotation), and two
        transactions taking them in opposite orders would deadlock."""
        found = await tx.rotations.get(team_id, rotation_id)
        if found is None:
            return None
        connection = await tx.connections.lock(team_id, found.connection_id)
        if connection is None:
            return None
        won = await tx.rotations.transition(
            team_id,
            rotation_id,
            RotationStatus.PENDING_APPROVAL,
            to,
            decided_by=None if actor == SYSTEM_ACTOR else actor,
            decided_at=now,
            decision_reason=reason,
            updated_at=now,
        )
        if not won:
            return None
        rotation = found
        await tx.session.refresh(rotation)
        if to is RotationStatus.APPROVED:
            connection.credential_version = rotation.version
            connection.key_hint = rotation.key_hint
            connection.config = dict(rotation.config)
            connection.credential_created_at = now
            connection.rotation_reminded_at = None
            # Re-test the new credential soon: a recovery then follows the usual path (and closes
            # an open alert) instead of being assumed here.
            connection.next_check_at = now
            connection.updated_at = now
            await tx.credentials.delete_other_versions(connection.id, keep=rotation.version)
        else:
            await tx.credentials.delete_for(connection.id, rotation.version)
        action = {
            RotationStatus.APPROVED: "connection.rotated",
            RotationStatus.REJECTED: "connection.rotation_rejected",
            RotationStatus.EXPIRED: "connection.rotation_expired",
            RotationStatus.CANCELLED: "connection.rotation_cancelled",
        }[to]
        summary = summarize(connection, self._providers)
        event = _event(team_id, actor, action, summary, now) | {"reason": reason}
        event["details"] = {**event["details"], "rotation": rotation.id, "version": rotation.version}
        await tx.audit.add(AuditEvent(**event))
        return RotationDecision(Verdict.DECIDED, await self._summary(tx, rotation, connection))

    async def _summary(self, tx: UnitOfWork, rotation: Rotation, connection: Connection) -> RotationSummary:
        record = await tx.verifications.latest_with_trigger(
            connection.team_id, connection.id, Trigger.ROTATION.value
        )
        checks = (
            tuple(
                Check(str(c.get("name", "")), bool(c.get("passed")), str(c.get("detail", "")))
                for c in record.checks
            )
            if record is not None
            else ()
        )
        return RotationSummary(
            id=rotation.id,
            team_id=rotation.team_id,
            connection=summarize(connection, self._providers),
            requested_by=rotation.requested_by,
            requested_at=rotation.created_at,
            new_key_hint=rotation.key_hint,
            status=rotation.status,
            checks=checks,
            decided_by=rotation.decided_by,
            decided_at=rotation.decided_at,
            reason=rotation.decision_reason,
            approval_channel=rotation.approval_channel,
            approval_ts=rotation.approval_ts,
        )


async def cancel_pending(
    tx: UnitOfWork, providers: ProviderRegistry, team_id: str, connection_id: str, actor: str, now: datetime
) -> RotationSummary | None:
    """Cancel the rotation waiting on a connection that is being removed (in the removal's
    transaction); its summary, for updating the request message, if there was one."""
    rotation = await tx.rotations.pending_for(team_id, connection_id)
    if rotation is None:
        return None
    won = await tx.rotations.transition(
        team_id,
        rotation.id,
        RotationStatus.PENDING_APPROVAL,
        RotationStatus.CANCELLED,
        decided_by=actor,
        decided_at=now,
        decision_reason="the connection was removed",
        updated_at=now,
    )
    if not won:
        return None
    await tx.session.refresh(rotation)
    connection = await tx.connections.get(team_id, connection_id)
    if connection is None:
        return None
    return RotationSummary(
        id=rotation.id,
        team_id=team_id,
        connection=summarize(connection, providers),
        requested_by=rotation.requested_by,
        requested_at=rotation.created_at,
        new_key_hint=rotation.key_hint,
        status=rotation.status,
        decided_by=rotation.decided_by,
        decided_at=rotation.decided_at,
        reason=rotation.decision_reason,
        approval_channel=rotation.approval_channel,
        approval_ts=rotation.approval_ts,
    )


def _event(
    team_id: str, actor: str, action: str, connection: ConnectionSummary, now: datetime
) -> dict[str, Any]:
    return {
        "team_id": team_id,
        "actor": actor,
        "action": action,
        "connection_id": connection.id,
        "before_status": connection.status.value,
        "after_status": connection.status.value,
        "reason": None,
        "details": {"name": connection.name, "provider": connection.provider_key},
        "created_at": now,
    }
