"""Verification history and the audit trail."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.providers.base import Check, Outcome, Verification
from bot.store import AuditEvent, Connection, Database, VerificationRecord

TEAM = "T0000TEAM"
OTHER_TEAM = "T0000OTHR"


async def stored_connection(db: Database, team_id: str = TEAM) -> Connection:
    connection = Connection(team_id=team_id, name="prod-kafka", provider="confluent_cloud", created_by="U1")
    async with db.transaction() as tx:
        await tx.connections.add(connection)
    return connection


async def test_verification_record_keeps_what_the_provider_reported(db: Database) -> None:
    connection = await stored_connection(db)
    verification = Verification(
        outcome=Outcome.FORBIDDEN,
        summary="The key cannot read the cluster.",
        checks=(Check("authenticate", True, "HTTP 200"), Check("describe cluster", False, "HTTP 403")),
        hints=("Give the service account CloudClusterAdmin.",),
        latency_ms=321,
        request_id="req-42",
    )
    async with db.transaction() as tx:
        await tx.verifications.add(
            VerificationRecord.from_verification(
                verification, team_id=TEAM, connection_id=connection.id, trigger="retest", actor="U0000ONCALL"
            )
        )

    async with db.read() as tx:
        [record] = await tx.verifications.recent(TEAM, connection.id)
    assert record.outcome is Outcome.FORBIDDEN
    assert record.summary == "The key cannot read the cluster."
    assert record.checks == [
        {"name": "authenticate", "passed": True, "detail": "HTTP 200"},
        {"name": "describe cluster", "passed": False, "detail": "HTTP 403"},
    ]
    assert record.hints == ["Give the service account CloudClusterAdmin."]
    assert (record.latency_ms, record.request_id, record.trigger, record.actor) == (
        321,
        "req-42",
        "retest",
        "U0000ONCALL",
    )


async def test_recent_verifications_are_newest_first_limited_and_scoped(db: Database) -> None:
    connection = await stored_connection(db)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    async with db.transaction() as tx:
        for minute in range(5):
            await tx.verifications.add(
                VerificationRecord(
                    team_id=TEAM,
                    connection_id=connection.id,
                    outcome=Outcome.OK,
                    summary=f"run {minute}",
                    latency_ms=minute,
                    trigger="schedule",
                    created_at=start + timedelta(minutes=minute),
                )
            )

    async with db.read() as tx:
        repository = tx.verifications
        recent = await repository.recent(TEAM, connection.id, limit=3)
        assert await repository.recent(OTHER_TEAM, connection.id) == []
    assert [r.summary for r in recent] == ["run 4", "run 3", "run 2"]


async def test_audit_for_connection_is_newest_first_and_scoped(db: Database) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    async with db.transaction() as tx:
        for i, action in enumerate(["connection.created", "connection.approved", "connection.revoked"]):
            await tx.audit.add(
                AuditEvent(
                    team_id=TEAM,
                    actor="U1",
                    action=action,
                    connection_id="c-1",
                    created_at=start + timedelta(minutes=i),
                    details={"step": i},
                )
            )
        await tx.audit.add(
            AuditEvent(team_id=OTHER_TEAM, actor="U2", action="connection.created", connection_id="c-1")
        )
        await tx.audit.add(
            AuditEvent(team_id=TEAM, actor="U1", action="connection.created", connection_id="c-2")
        )

    async with db.read() as tx:
        events = await tx.audit.for_connection(TEAM, "c-1", limit=2)
    assert [(e.action, e.details) for e in events] == [
        ("connection.revoked", {"step": 2}),
        ("connection.approved", {"step": 1}),
    ]


async def test_audit_ids_increase_and_all_ordered_streams_everything_in_order(db: Database) -> None:
    async with db.transaction() as tx:
        added = []
        for i in range(7):
            event = AuditEvent(
                team_id=TEAM if i % 2 else OTHER_TEAM,
                actor="system",
                action=f"test.step{i}",
                before_status="pending_approval" if i == 3 else None,
                after_status="active" if i == 3 else None,
                reason="approved by admin" if i == 3 else None,
            )
            await tx.audit.add(event)
            added.append(event.id)
    assert added == sorted(added) and len(set(added)) == 7

    async with db.read() as tx:
        streamed = [event async for event in tx.audit.all_ordered(batch_size=3)]
    assert [e.action for e in streamed] == [f"test.step{i}" for i in range(7)]
    assert (streamed[3].before_status, streamed[3].after_status, streamed[3].reason) == (
        "pending_approval",
        "active",
        "approved by admin",
    )
