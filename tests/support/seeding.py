"""Stored connections for tests that need many, or need them in a given state, without going
through Slack and a provider verification for each one."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from bot.crypto import Cipher
from bot.domain import Health, Status
from bot.redaction import Secret
from bot.services.records import sealed_field
from bot.store import Connection, Database
from tests.support.slack_requests import TEAM_ID, USER_ID

__all__ = ["Seed", "seed_connections"]


@dataclass
class Seed:
    """One Confluent Cloud connection to store, with its key and secret sealed as the bot seals them."""

    name: str
    key: str
    secret: str = field(repr=False)
    team_id: str = TEAM_ID
    created_by: str = USER_ID
    status: Status = Status.ACTIVE
    health: Health = Health.HEALTHY
    next_check_at: datetime | None = None
    credential_created_at: datetime | None = None
    created_at: datetime | None = None
    config: dict[str, str] = field(default_factory=dict)
    """The non-secret fields (REST endpoint, cluster ID)."""


async def seed_connections(url: str, cipher: Cipher, seeds: list[Seed], *, batch: int = 200) -> list[str]:
    """Store ``seeds`` (a few transactions, however many) and return their ids in order."""
    db = Database.from_url(url)
    ids: list[str] = []
    try:
        for start in range(0, len(seeds), batch):
            async with db.transaction() as tx:
                for seed in seeds[start : start + batch]:
                    now = seed.created_at or datetime.now(UTC)
                    connection = Connection(
                        team_id=seed.team_id,
                        name=seed.name,
                        provider="confluent_cloud",
                        config=dict(seed.config),
                        created_by=seed.created_by,
                        status=seed.status,
                        health=seed.health,
                        key_hint=Secret(seed.key).masked(),
                        created_at=now,
                        updated_at=now,
                        last_verified_at=now,
                        credential_created_at=seed.credential_created_at or now,
                        next_check_at=seed.next_check_at,
                    )
                    await tx.connections.add(connection)
                    for name, value in (("api_key", seed.key), ("api_secret", seed.secret)):
                        row = sealed_field(cipher, connection, seed.config, name, 1, Secret(value), now)
                        await tx.credentials.add(row)
                    ids.append(connection.id)
    finally:
        await db.dispose()
    return ids
