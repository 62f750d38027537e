"""Whatever a provider keeps in memory of a credential goes when the credential is destroyed: a
rejected, expired or removed Snowflake connection's opened key, and the key a rotation replaces,
leave the provider's key cache; an approved credential's key stays.

The connections are stored directly (a Snowflake key pair's fingerprint as their hint), the services
deciding on them are the real ones, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from bot.domain import Health, Removal, RequestKind, Status, Verdict, utcnow
from bot.providers import _snowflake_keys as keys
from bot.providers.registry import ProviderRegistry
from bot.providers.snowflake import Snowflake
from bot.services.approvals import ApprovalService
from bot.services.removal import RemovalService
from bot.store import Connection, Database, Rotation
from tests.unit.providers.test_snowflake import fingerprint_from_der, pem_of, rsa_key
from tests.unit.services.test_approvals import ADMIN, REQUESTER, TTL, MemoryDirectory, new_policy

TEAM = "T0FORGET01"


@pytest.fixture
def cache() -> keys.KeyCache:
    return keys.KeyCache()


@pytest.fixture
def providers(cache: keys.KeyCache) -> ProviderRegistry:
    return ProviderRegistry((Snowflake(key_cache=cache),))


@pytest.fixture
def approvals(db: Database, providers: ProviderRegistry) -> ApprovalService:
    return ApprovalService(db, providers, new_policy(MemoryDirectory({})), ttl=TTL)


def opened(cache: keys.KeyCache, key: rsa.RSAPrivateKey) -> bool:
    return cache.peek(pem_of(key), "") is not None


async def stored(db: Database, cache: keys.KeyCache, key: rsa.RSAPrivateKey, status: Status) -> str:
    """A Snowflake connection of ``key`` in ``status``, its key opened as its verification left it."""
    cache.load(pem_of(key), "")
    now = utcnow()
    connection = Connection(
        team_id=TEAM,
        name=f"Warehouse {fingerprint_from_der(key)[7:15]}",
        provider="snowflake",
        status=status,
        health=Health.HEALTHY,
        key_hint=fingerprint_from_der(key),
        created_by=REQUESTER,
        created_at=now,
        updated_at=now,
        last_verified_at=now,
        credential_created_at=now,
    )
    async with db.transaction() as tx:
        await tx.connections.add(connection)
    return connection.id


async def rotation_to(db: Database, cache: keys.KeyCache, connection_id: str, key: rsa.RSAPrivateKey) -> str:
    cache.load(pem_of(key), "")
    now = utcnow()
    rotation = Rotation(
        team_id=TEAM,
        connection_id=connection_id,
        version=2,
        requested_by=REQUESTER,
        key_hint=fingerprint_from_der(key),
        created_at=now,
        updated_at=now,
    )
    async with db.transaction() as tx:
        await tx.rotations.add(rotation)
    return rotation.id


OLD, NEW = rsa_key(2048, 0), rsa_key(2048, 1)


async def test_a_rejected_connection_s_key_is_forgotten_and_an_approved_one_s_kept(
    db: Database, cache: keys.KeyCache, approvals: ApprovalService
) -> None:
    rejected = await stored(db, cache, OLD, Status.PENDING_APPROVAL)
    approved = await stored(db, cache, NEW, Status.PENDING_APPROVAL)
    decision = await approvals.reject(RequestKind.CONNECTION, TEAM, rejected, ADMIN, "not this one")
    assert decision.verdict is Verdict.DECIDED
    assert (await approvals.approve(RequestKind.CONNECTION, TEAM, approved, ADMIN)).verdict is Verdict.DECIDED
    assert not opened(cache, OLD) and opened(cache, NEW)


async def test_an_expired_connection_s_key_is_forgotten(
    db: Database, cache: keys.KeyCache, approvals: ApprovalService
) -> None:
    await stored(db, cache, OLD, Status.PENDING_APPROVAL)
    assert len(await approvals.expire_overdue(utcnow() + TTL + timedelta(minutes=1))) == 1
    assert not opened(cache, OLD)


async def test_a_removed_connection_s_key_is_forgotten(
    db: Database, cache: keys.KeyCache, providers: ProviderRegistry
) -> None:
    connection_id = await stored(db, cache, OLD, Status.ACTIVE)
    removal = RemovalService(db, providers, new_policy(MemoryDirectory({})))
    assert isinstance(await removal.remove(TEAM, connection_id, ADMIN), Removal)
    assert not opened(cache, OLD)


@pytest.mark.parametrize(("decision", "gone", "kept"), [("approve", OLD, NEW), ("reject", NEW, OLD)])
async def test_a_rotation_forgets_the_key_it_destroys(
    db: Database,
    cache: keys.KeyCache,
    approvals: ApprovalService,
    decision: str,
    gone: rsa.RSAPrivateKey,
    kept: rsa.RSAPrivateKey,
) -> None:
    connection_id = await stored(db, cache, OLD, Status.ACTIVE)
    rotation_id = await rotation_to(db, cache, connection_id, NEW)
    if decision == "approve":
        done = await approvals.approve(RequestKind.ROTATION, TEAM, rotation_id, ADMIN)
    else:
        done = await approvals.reject(RequestKind.ROTATION, TEAM, rotation_id, ADMIN, "keep the old key")
    assert done.verdict is Verdict.DECIDED
    assert not opened(cache, gone) and opened(cache, kept)
