"""Stored connections as the read model that lists, messages and App Home show."""

from __future__ import annotations

from bot.domain import ConnectionSummary, Health, Status
from bot.providers.registry import ProviderRegistry, UnknownProvider
from bot.store import Connection

__all__ = ["summarize"]


def summarize(row: Connection, providers: ProviderRegistry) -> ConnectionSummary:
    try:
        title = providers.get(row.provider).title
    except UnknownProvider:
        # A provider removed from this build still lists under its key.
        title = row.provider
    return ConnectionSummary(
        id=row.id,
        name=row.name,
        provider_key=row.provider,
        provider_title=title,
        status=Status(row.status),
        health=Health(row.health),
        created_by=row.created_by,
        created_at=row.created_at,
        last_verified_at=row.last_verified_at,
        key_hint=row.key_hint,
        credential_created_at=row.credential_created_at,
    )
