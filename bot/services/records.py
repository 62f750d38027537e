"""What every use case writes and reads the same way: the audit event of a change, the sealed
fields of a credential version, and stored rows as the read models that blocks show."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from bot.crypto import BOUND_SCHEME, Cipher, associated_data, config_digest
from bot.domain import ConfigChange, ConnectionSummary, Health, SecretLocation, Status, Trigger
from bot.providers.base import Check, Provider, Verification
from bot.providers.registry import ProviderRegistry
from bot.redaction import Secret
from bot.store import AuditEvent, Connection, Credential, VerificationRecord
from bot.store.uow import UnitOfWork
from bot.stores.base import store_title

__all__ = [
    "BATCH_SIZE",
    "audit_event",
    "checks_of",
    "config_changes",
    "history_row",
    "seal_credential",
    "sealed_field",
    "secret_location",
    "summarize",
]

BATCH_SIZE = 100
"""The most rows one run of a periodic job takes (expiry, sweep, reminders); a backlog waits for the next."""


def audit_event(
    team_id: str,
    actor: str,
    action: str,
    now: datetime,
    *,
    connection: Connection | ConnectionSummary | None = None,
    connection_id: str | None = None,
    before: str | None = None,
    after: str | None = None,
    reason: str | None = None,
    details: Mapping[str, object] | None = None,
) -> AuditEvent:
    """The audit row of one change. With ``connection``, its id, name and provider are recorded;
    before a connection exists (or without its row), ``connection_id`` and ``details`` say what
    the change was about."""
    recorded = dict(details or {})
    if connection is not None:
        provider = connection.provider if isinstance(connection, Connection) else connection.provider_key
        recorded = {"name": connection.name, "provider": provider, **recorded}
        connection_id = connection.id
    return AuditEvent(
        team_id=team_id,
        actor=actor,
        action=action,
        connection_id=connection_id,
        before_status=before,
        after_status=after,
        reason=reason,
        details=recorded,
        created_at=now,
    )


async def seal_credential(
    tx: UnitOfWork,
    cipher: Cipher,
    secrets: Mapping[str, Secret],
    connection: Connection,
    version: int,
    config: Mapping[str, str],
    now: datetime,
) -> None:
    """Store each secret field of one credential version, sealed with the current master key and
    bound to its row and to ``config``, the non-secret fields it will be used with (a rotation's
    version: the rotation's, which approval copies to the connection); refuses (``MasterKeyMoved``)
    when the data moved to another key meanwhile."""
    await tx.key_canary.require_sealing_key(cipher.key_id)
    for field, secret in secrets.items():
        await tx.credentials.add(sealed_field(cipher, connection, config, field, version, secret, now))


def sealed_field(
    cipher: Cipher,
    connection: Connection,
    config: Mapping[str, str],
    field: str,
    version: int,
    secret: Secret,
    now: datetime,
) -> Credential:
    """One secret field as its row, sealed bound to the connection's provider and ``config``."""
    bound_to = config_digest(connection.provider, config)
    sealed = cipher.seal(secret, associated_data(connection.id, field, version, bound_to))
    return Credential(
        team_id=connection.team_id,
        connection_id=connection.id,
        version=version,
        field=field,
        key_id=sealed.key_id,
        nonce=sealed.nonce,
        ciphertext=sealed.ciphertext,
        scheme=BOUND_SCHEME,
        created_at=now,
    )


def summarize(row: Connection, providers: ProviderRegistry) -> ConnectionSummary:
    """A stored connection as lists, messages and App Home show it."""
    provider = providers.find(row.provider)  # one removed from this build still lists under its key
    return ConnectionSummary(
        id=row.id,
        name=row.name,
        provider_key=row.provider,
        provider_title=row.provider if provider is None else provider.title,
        status=Status(row.status),
        health=Health(row.health),
        created_by=row.created_by,
        created_at=row.created_at,
        last_verified_at=row.last_verified_at,
        key_hint=row.key_hint,
        credential_created_at=row.credential_created_at,
        secret_location=secret_location(row),
    )


def secret_location(row: Connection) -> SecretLocation | None:
    """Where a secret store holds the connection's credential, if one does."""
    if row.secret_store is None or row.secret_path is None:
        return None
    return SecretLocation(row.secret_store, store_title(row.secret_store), row.secret_path)


def history_row(
    verification: Verification, row: Connection, trigger: Trigger, actor: str | None
) -> VerificationRecord:
    """A verification of ``row`` as its history stores it."""
    return VerificationRecord.from_verification(
        verification, team_id=row.team_id, connection_id=row.id, trigger=trigger.value, actor=actor
    )


def checks_of(record: VerificationRecord | None) -> tuple[Check, ...]:
    """The checks a stored verification ran, as providers report them."""
    stored: list[dict[str, Any]] = record.checks if record is not None else []
    return tuple(
        Check(str(c.get("name", "")), bool(c.get("passed")), str(c.get("detail", ""))) for c in stored
    )


def config_changes(
    provider: Provider | None, before: Mapping[str, object], after: Mapping[str, object]
) -> tuple[ConfigChange, ...]:
    """The non-secret settings that differ between ``before`` and ``after``, labelled as the
    provider's form labels them, in its order (a setting it does not declare, under its own key)."""
    labels = {} if provider is None else {f.name: f.label for f in provider.fields if not f.secret}
    keys = [*labels, *sorted((before.keys() | after.keys()) - labels.keys())]
    values = [(key, str(before.get(key) or ""), str(after.get(key) or "")) for key in keys]
    return tuple(ConfigChange(labels.get(key, key), old, new) for key, old, new in values if old != new)
