"""Registering connections: list them, check a submitted form, verify and store a new one."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx

from bot.crypto import Cipher, associated_data
from bot.domain import NAME_FIELD, NAME_MAX_LENGTH, PAGE_SIZE, ConnectionSummary, Health, Page, Status
from bot.providers.base import FieldValues, Provider, Verification
from bot.providers.registry import ProviderRegistry
from bot.redaction import Secret
from bot.services.summaries import summarize
from bot.store import NameTaken
from bot.store.models import AuditEvent, Connection, Credential, VerificationRecord
from bot.store.repositories import ConnectionRepository
from bot.store.uow import Database

__all__ = ["NAME_FIELD", "ConnectionService", "CreateOutcome", "CreateRequest", "FormCheck"]

logger = logging.getLogger(__name__)

FIRST_VERSION = 1


@dataclass(frozen=True)
class FormCheck:
    """The offline verdict on a submitted form: cleaned values, or problems by field name."""

    name: str
    values: dict[str, str | Secret]
    problems: dict[str, str]

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class CreateRequest:
    team_id: str
    user_id: str
    provider_key: str
    name: str
    values: FieldValues = field(repr=False)


@dataclass(frozen=True)
class CreateOutcome:
    """What happened to a create request: the verification, and the stored connection if any.

    ``problem`` is set when the credentials verified but could not be stored (the name was taken by
    someone else in the meantime); nothing was stored then either."""

    verification: Verification
    connection_id: str | None = None
    problem: str | None = None

    @property
    def stored(self) -> bool:
        return self.connection_id is not None


def _now() -> datetime:
    return datetime.now(UTC)


class ConnectionService:
    def __init__(
        self,
        db: Database,
        cipher: Cipher,
        providers: ProviderRegistry,
        http: httpx.AsyncClient,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self._db = db
        self._cipher = cipher
        self._providers = providers
        self._http = http
        self._clock = clock

    async def list_connections(self, team_id: str, page: int = 1) -> Page[ConnectionSummary]:
        """A page of the workspace's connections, newest first; an out-of-range page gives the last."""
        async with self._db.read() as session:
            connections = ConnectionRepository(session)
            # Clamp before querying: a page far past the end would overflow OFFSET.
            last_page = max(1, -(-(await connections.count(team_id)) // PAGE_SIZE))
            page = min(max(1, page), last_page)
            rows, total = await connections.list_page(team_id, page, PAGE_SIZE)
        return Page(
            items=tuple(summarize(row, self._providers) for row in rows),
            number=page,
            size=PAGE_SIZE,
            total=total,
        )

    async def check_form(self, team_id: str, provider: Provider, name: str, values: FieldValues) -> FormCheck:
        """Offline checks of a submission, plus the one indexed query that tells whether the name is
        free. No provider call: this runs before Slack is answered."""
        name = " ".join(name.split())
        cleaned = provider.clean(values)
        # Offline but not always cheap (opening an encrypted private key runs its key derivation):
        # on a thread, so other requests' acks are not held up meanwhile.
        problems = await asyncio.to_thread(provider.validate, cleaned)
        if not name:
            example = f", e.g. “{provider.name_examples[0]}”" if provider.name_examples else ""
            problems[NAME_FIELD] = f"Give the connection a name{example}."
        elif len(name) > NAME_MAX_LENGTH:
            problems[NAME_FIELD] = f"Keep the name to {NAME_MAX_LENGTH} characters or fewer."
        else:
            async with self._db.read() as session:
                taken = await ConnectionRepository(session).name_taken(team_id, name)
            if taken:
                problems[NAME_FIELD] = (
                    "A connection with this name already exists in this workspace (names ignore case). "
                    "Pick another name."
                )
        return FormCheck(name=name, values=cleaned, problems=problems)

    async def create(self, request: CreateRequest) -> CreateOutcome:
        """Verify the credentials with the provider, then store them encrypted in one transaction.

        The provider call happens outside any transaction. A failed verification stores nothing
        but an audit event (no secret in it)."""
        provider = self._providers.get(request.provider_key)
        verification = await provider.verify(request.values, self._http)
        now = self._clock()
        if not verification.ok:
            async with self._db.transaction() as tx:
                await tx.audit.add(
                    AuditEvent(
                        team_id=request.team_id,
                        actor=request.user_id,
                        action="connection.create_failed",
                        connection_id=None,
                        before_status=None,
                        after_status=None,
                        reason=verification.outcome.value,
                        details={"provider": provider.key, "name": request.name},
                        created_at=now,
                    )
                )
            return CreateOutcome(verification=verification)

        secrets = provider.secrets_of(request.values)
        connection = Connection(
            team_id=request.team_id,
            name=request.name,
            provider=provider.key,
            status=Status.PENDING_APPROVAL,
            health=Health.HEALTHY,
            config=provider.config_of(request.values),
            key_hint=provider.credential_hint(request.values),
            created_by=request.user_id,
            created_at=now,
            updated_at=now,
            last_verified_at=now,
            credential_version=FIRST_VERSION,
            credential_created_at=now,
        )
        try:
            async with self._db.transaction() as tx:
                await tx.connections.add(connection)
                for field_name, secret in secrets.items():
                    sealed = self._cipher.seal(
                        secret, associated_data(connection.id, field_name, FIRST_VERSION)
                    )
                    await tx.credentials.add(
                        Credential(
                            team_id=request.team_id,
                            connection_id=connection.id,
                            version=FIRST_VERSION,
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
                        team_id=request.team_id,
                        connection_id=connection.id,
                        trigger="create",
                        actor=request.user_id,
                    )
                )
                await tx.audit.add(
                    AuditEvent(
                        team_id=request.team_id,
                        actor=request.user_id,
                        action="connection.created",
                        connection_id=connection.id,
                        before_status=None,
                        after_status=Status.PENDING_APPROVAL,
                        reason=None,
                        details={"provider": provider.key, "name": request.name},
                        created_at=now,
                    )
                )
        except NameTaken:
            return CreateOutcome(
                verification=verification,
                problem=(
                    f"The credentials work, but someone registered a connection named “{request.name}” "
                    "a moment ago. Nothing was saved; try again with another name."
                ),
            )
        logger.info(
            "connection %s created in team %s by %s (%s)",
            connection.id,
            request.team_id,
            request.user_id,
            provider.key,
        )
        return CreateOutcome(verification=verification, connection_id=connection.id)
