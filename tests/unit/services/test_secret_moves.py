"""Moving every active credential between the bot's database and secret stores: each lands in
exactly one place and opens there, whatever stops a run, and nothing secret is printed."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from bot.crypto import BOUND_SCHEME, Cipher, Sealed, associated_data, config_digest
from bot.domain import Status
from bot.redaction import Secret
from bot.services.records import seal_credential, sealed_field
from bot.services.secret_moves import (
    LOCAL,
    MOVED_ACTION,
    CleanupLeft,
    MoveReport,
    Outcome,
    SecretMover,
    stores_in_use,
)
from bot.store import AuditEvent, Connection, Credential, Database, Rotation
from bot.store.models import SecretCleanup
from bot.stores.base import SecretStore
from bot.stores.paths import PathTemplate
from bot.stores.tokens import write_token
from tests.support.databases import dump_database_text
from tests.support.memory_store import MemoryStore
from tests.support.seeding import Seed, seed_connections
from tests.support.slack_requests import TEAM_ID, USER_ID

ALPHA, BETA = "alpha", "beta"
OTHER_TEAM = "T0OTHERTEAM"
PATHS = PathTemplate()
APPROVED_AT = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)


class Killed(BaseException):
    """The process ended here (a BaseException: nothing in the code under test catches it)."""


def kill_at(step: str, nth: int = 1) -> Callable[[str], None]:
    reached = 0

    def checkpoint(name: str) -> None:
        nonlocal reached
        if name == step:
            reached += 1
            if reached == nth:
                raise Killed(step)

    return checkpoint


def memory_store(title: str) -> MemoryStore:
    store = MemoryStore()
    store.title = title
    return store


@pytest.fixture
def alpha() -> MemoryStore:
    return memory_store("Alpha Store")


@pytest.fixture
def beta() -> MemoryStore:
    return memory_store("Beta Store")


@pytest.fixture
def stores(alpha: MemoryStore, beta: MemoryStore) -> dict[str, SecretStore]:
    return {ALPHA: alpha, BETA: beta}


def mover(
    db: Database,
    cipher: Cipher,
    stores: dict[str, SecretStore],
    checkpoint: Callable[[str], None] | None = None,
) -> SecretMover:
    if checkpoint is None:
        return SecretMover(db, cipher, stores, PATHS)
    return SecretMover(db, cipher, stores, PATHS, checkpoint=checkpoint)


@dataclass
class Held:
    """A connection as seeded, and the provider fields its credential must open to."""

    id: str
    team_id: str
    name: str
    fields: dict[str, str]

    @property
    def path(self) -> str:
        return PATHS.render(
            team=self.team_id, provider="confluent_cloud", name=self.name, connection_id=self.id
        )

    @property
    def secret(self) -> str:
        return self.fields["api_secret"]


def new_seed(name: str, team_id: str = TEAM_ID, *, minute: int = 0, **config: str) -> Seed:
    return Seed(
        name=name,
        key=f"KEY{secrets.token_hex(6).upper()}",
        secret=f"sec-{secrets.token_hex(16)}",
        team_id=team_id,
        config=dict(config),
        # A run takes connections oldest first: these make the order the tests count on.
        created_at=APPROVED_AT.replace(minute=minute),
    )


async def seed(url: str, cipher: Cipher, seeds: list[Seed]) -> list[Held]:
    ids = await seed_connections(url, cipher, seeds)
    held = []
    for connection_id, s in zip(ids, seeds, strict=True):
        fields = {"api_key": s.key, "api_secret": s.secret, **s.config}
        held.append(Held(connection_id, s.team_id, s.name, fields))
    return held


async def three(url: str, cipher: Cipher) -> list[Held]:
    """Three active connections, in two workspaces, one with its optional settings."""
    return await seed(
        url,
        cipher,
        [
            new_seed(
                "Prod Cluster",
                minute=1,
                rest_endpoint="https://pkc-1.eu-west-1.aws.confluent.cloud",
                cluster_id="lkc-1",
            ),
            new_seed("staging", minute=2),
            new_seed("prod", team_id=OTHER_TEAM, minute=3),
        ],
    )


async def approve_into(db: Database, store: SecretStore, key: str, held: Held) -> str:
    """What an approval with ``key`` configured leaves: the credential in the store, written with
    its version's token, the reference on the row, no sealed row."""
    written = await store.write(
        held.path,
        held.fields,
        token=write_token(held.id, 1),
        replaces=None,
        metadata={"provider": "confluent_cloud", "connection-id": held.id},
    )
    async with db.transaction() as tx:
        row = await tx.connections.lock(held.team_id, held.id)
        assert row is not None
        row.secret_store, row.secret_path, row.secret_version = key, held.path, written.version
        row.decided_by, row.decided_at = "U0ADMIN", APPROVED_AT
        await tx.credentials.delete_for(held.id)
    return written.version


async def row_of(db: Database, held: Held) -> Connection:
    async with db.read() as tx:
        row = await tx.connections.get(held.team_id, held.id)
    assert row is not None
    return row


async def sealed_rows(db: Database, connection_id: str) -> list[Credential]:
    async with db.read() as tx:
        return list(
            await tx.session.scalars(select(Credential).where(Credential.connection_id == connection_id))
        )


async def opened_locally(db: Database, cipher: Cipher, held: Held) -> dict[str, str]:
    """The connection's credential as the bot opens it from its database: the rows of the version
    in use, bound to its settings, and its settings."""
    row = await row_of(db, held)
    bound_to = config_digest(row.provider, row.config)
    opened = dict(row.config)
    for credential in await sealed_rows(db, held.id):
        assert credential.version == row.credential_version and credential.scheme == BOUND_SCHEME
        aad = associated_data(held.id, credential.field, credential.version, bound_to)
        sealed = Sealed(credential.key_id, credential.nonce, credential.ciphertext)
        opened[credential.field] = cipher.open(sealed, aad).reveal()
    return opened


async def cleanups(db: Database) -> list[SecretCleanup]:
    async with db.read() as tx:
        return await tx.secret_cleanups.pending()


async def moved_events(db: Database) -> list[AuditEvent]:
    async with db.read() as tx:
        statement = select(AuditEvent).where(AuditEvent.action == MOVED_ACTION).order_by(AuditEvent.id)
        return list(await tx.session.scalars(statement))


async def assert_each_in_exactly_one_place(
    db: Database, cipher: Cipher, stores: dict[str, MemoryStore], held: list[Held]
) -> None:
    """Every connection's credential is where its row says, opens there to its fields, and is
    nowhere else: no sealed row beside a store copy, no copy in another store."""
    for one in held:
        row = await row_of(db, one)
        copies = {
            key: store.current(one.path)
            for key, store in stores.items()
            if store.current(one.path) is not None
        }
        if row.secret_store is None:
            assert await opened_locally(db, cipher, one) == one.fields
            assert copies == {}, f"{one.name} is sealed locally and in {sorted(copies)}"
        else:
            assert list(copies) == [row.secret_store], f"{one.name} is in {sorted(copies)}"
            current = copies[row.secret_store]
            assert current is not None and current.version == row.secret_version
            assert row.secret_path == one.path and current.plain() == one.fields
            in_use = [c for c in await sealed_rows(db, one.id) if c.version == row.credential_version]
            assert in_use == []


# --- the three moves --------------------------------------------------------------------------------


async def test_local_to_a_store_moves_every_active_credential_of_every_workspace(
    db: Database,
    migrated_database_url: str,
    cipher: Cipher,
    alpha: MemoryStore,
    stores: dict[str, SecretStore],
) -> None:
    held = await three(migrated_database_url, cipher)
    [waiting] = await seed(
        migrated_database_url,
        cipher,
        [Seed("waiting", "KEYWAITING01", "sec-waiting", status=Status.PENDING_APPROVAL)],
    )
    rotated = held[1]
    async with db.transaction() as tx:  # a rotation of one of them waits for approval
        row = await tx.connections.lock(rotated.team_id, rotated.id)
        assert row is not None
        await tx.rotations.add(
            Rotation(team_id=row.team_id, connection_id=row.id, version=2, requested_by="U0OWNER")
        )
        await seal_credential(
            tx,
            cipher,
            {"api_key": Secret("NEWKEY"), "api_secret": Secret("new-secret")},
            row,
            2,
            {},
            APPROVED_AT,
        )

    report = await mover(db, cipher, stores).move_all(ALPHA)

    assert (report.moved, report.already, report.changed, report.failed, report.left) == (3, 0, 0, [], [])
    assert report.ok
    await assert_each_in_exactly_one_place(db, cipher, {ALPHA: alpha}, held)
    for one in held:
        [version] = alpha.versions(one.path)
        assert version.token == write_token(one.id, 1)
        assert version.metadata["connection-id"] == one.id
        assert version.metadata["provider"] == "confluent_cloud"
        assert version.metadata["owner"] == USER_ID
    assert alpha.current(held[0].path).plain()["cluster_id"] == "lkc-1"  # type: ignore[union-attr]
    assert held[0].path == f"connections/{TEAM_ID}/confluent_cloud/prod-cluster"
    # The pending connection stays sealed where it is; so does the waiting rotation's version.
    assert (await row_of(db, waiting)).secret_store is None
    assert await opened_locally(db, cipher, waiting) == waiting.fields
    assert {(c.version, c.field) for c in await sealed_rows(db, rotated.id)} == {
        (2, "api_key"),
        (2, "api_secret"),
    }
    events = await moved_events(db)
    assert sorted(e.connection_id or "" for e in events) == sorted(one.id for one in held)
    by_id = {e.connection_id: e for e in events}
    assert by_id[held[2].id].team_id == OTHER_TEAM and by_id[held[2].id].actor == "system"
    assert by_id[held[0].id].details == {
        "name": "Prod Cluster",
        "provider": "confluent_cloud",
        "from_store": LOCAL,
        "from_path": None,
        "to_store": ALPHA,
        "to_path": held[0].path,
    }
    assert await cleanups(db) == []


async def test_a_store_to_local_seals_bound_rows_and_deletes_the_store_copy(
    db: Database,
    migrated_database_url: str,
    cipher: Cipher,
    alpha: MemoryStore,
    stores: dict[str, SecretStore],
) -> None:
    held = await three(migrated_database_url, cipher)
    for one in held:
        await approve_into(db, alpha, ALPHA, one)

    report = await mover(db, cipher, stores).move_all(LOCAL)

    assert (report.moved, report.already, report.failed, report.left) == (3, 0, [], [])
    for one in held:
        row = await row_of(db, one)
        assert (row.secret_store, row.secret_path, row.secret_version) == (None, None, None)
    await assert_each_in_exactly_one_place(db, cipher, {ALPHA: alpha}, held)
    assert alpha.paths() == [] and [c.path for c in alpha.made("delete")] == [one.path for one in held]
    assert await cleanups(db) == []
    event = (await moved_events(db))[0]
    assert event.details["from_store"] == ALPHA and event.details["from_path"] == held[0].path
    assert event.details["to_store"] == LOCAL and event.details["to_path"] is None


async def test_a_store_to_another_store(
    db: Database,
    migrated_database_url: str,
    cipher: Cipher,
    alpha: MemoryStore,
    beta: MemoryStore,
    stores: dict[str, SecretStore],
) -> None:
    held = await three(migrated_database_url, cipher)
    for one in held[:2]:
        await approve_into(db, alpha, ALPHA, one)  # the third is still sealed locally

    report = await mover(db, cipher, stores).move_all(BETA)

    assert (report.moved, report.already, report.failed) == (3, 0, [])
    await assert_each_in_exactly_one_place(db, cipher, {ALPHA: alpha, BETA: beta}, held)
    assert {(await row_of(db, one)).secret_store for one in held} == {BETA}
    assert alpha.paths() == [] and await cleanups(db) == []
    assert {c.token for c in beta.made("write")} == {write_token(one.id, 1) for one in held}


async def test_a_second_run_moves_nothing_and_says_so(
    db: Database,
    migrated_database_url: str,
    cipher: Cipher,
    alpha: MemoryStore,
    stores: dict[str, SecretStore],
) -> None:
    held = await three(migrated_database_url, cipher)
    await mover(db, cipher, stores).move_all(ALPHA)
    calls, events = len(alpha.calls), len(await moved_events(db))

    again = await mover(db, cipher, stores).move_all(ALPHA)

    assert (again.moved, again.already, again.changed, again.failed, again.cleaned) == (0, 3, 0, [], 0)
    assert len(alpha.calls) == calls  # not even a read
    assert len(await moved_events(db)) == events
    await assert_each_in_exactly_one_place(db, cipher, {ALPHA: alpha}, held)

    to_local = await mover(db, cipher, stores).move_all(LOCAL)
    assert to_local.moved == 3
    assert (await mover(db, cipher, stores).move_all(LOCAL)).already == 3


# --- refusals ---------------------------------------------------------------------------------------


async def test_a_target_refusing_one_connection_leaves_it_as_it_was_and_moves_the_others(
    db: Database,
    migrated_database_url: str,
    cipher: Cipher,
    alpha: MemoryStore,
    stores: dict[str, SecretStore],
) -> None:
    held = await three(migrated_database_url, cipher)
    taken = held[1]
    theirs = alpha.write_outside(taken.path, {"api_key": "SOMEONE", "api_secret": "else"})

    report = await mover(db, cipher, stores).move_all(ALPHA)

    assert (report.moved, report.changed) == (2, 0) and not report.ok
    [failure] = report.failed
    assert (failure.name, failure.connection_id, failure.team_id) == ("staging", taken.id, TEAM_ID)
    assert failure.where == f"Alpha Store `{taken.path}`"
    assert "holds a secret the bot did not write" in failure.reason
    assert (await row_of(db, taken)).secret_store is None
    assert await opened_locally(db, cipher, taken) == taken.fields
    assert alpha.current(taken.path).version == theirs  # type: ignore[union-attr]
    await assert_each_in_exactly_one_place(db, cipher, {ALPHA: alpha}, [held[0], held[2]])
    assert {(await row_of(db, one)).secret_store for one in (held[0], held[2])} == {ALPHA}


async def test_a_target_that_denies_the_bot_changes_nothing(
    db: Database,
    migrated_database_url: str,
    cipher: Cipher,
    alpha: MemoryStore,
    stores: dict[str, SecretStore],
) -> None:
    held = await three(migrated_database_url, cipher)
    alpha.deny("write")

    report = await mover(db, cipher, stores).move_all(ALPHA)

    assert report.moved == 0 and len(report.failed) == 3
    assert {f.reason for f in report.failed} == {
        f"the bot may not write `{one.path}`: AccessDenied" for one in held
    }
    await assert_each_in_exactly_one_place(db, cipher, {ALPHA: alpha}, held)
    assert await moved_events(db) == []


async def test_a_source_store_that_denies_reading_or_was_changed_outside_the_bot_keeps_its_copy(
    db: Database,
    migrated_database_url: str,
    cipher: Cipher,
    alpha: MemoryStore,
    stores: dict[str, SecretStore],
) -> None:
    held = await three(migrated_database_url, cipher)
    for one in held:
        await approve_into(db, alpha, ALPHA, one)
    changed = held[0]
    outside = alpha.write_outside(changed.path, {**changed.fields, "api_secret": "changed-by-hand"})

    report = await mover(db, cipher, stores).move_all(LOCAL)

    assert report.moved == 2
    [failure] = report.failed
    assert failure.connection_id == changed.id and "changed outside the bot" in failure.reason
    row = await row_of(db, changed)
    assert row.secret_store == ALPHA and alpha.current(changed.path).version == outside  # type: ignore[union-attr]
    assert await sealed_rows(db, changed.id) == []

    alpha.deny("read")
    back = await mover(db, cipher, stores).move_all(ALPHA)
    assert back.moved == 2 and back.already == 1  # the two now local need no read from alpha


async def test_a_connection_in_a_store_that_is_not_configured_is_reported(
    db: Database,
    migrated_database_url: str,
    cipher: Cipher,
    alpha: MemoryStore,
    stores: dict[str, SecretStore],
) -> None:
    held = await three(migrated_database_url, cipher)
    await approve_into(db, alpha, ALPHA, held[0])

    report = await SecretMover(db, cipher, {BETA: stores[BETA]}, PATHS).move_all(BETA)

    assert report.moved == 2
    [failure] = report.failed
    assert failure.reason == "the alpha store is not configured"
    assert await stores_in_use(db) == {ALPHA, BETA}


# --- changes meanwhile ------------------------------------------------------------------------------


async def rotate_locally(db: Database, cipher: Cipher, held: Held, key: str, secret: str) -> None:
    """What approving a rotation does with the credential sealed locally: version 2 replaces 1."""
    async with db.transaction() as tx:
        row = await tx.connections.lock(held.team_id, held.id)
        assert row is not None
        await tx.credentials.delete_for(row.id)
        fresh = {"api_key": Secret(key), "api_secret": Secret(secret)}
        for field, value in fresh.items():
            await tx.credentials.add(sealed_field(cipher, row, row.config, field, 2, value, APPROVED_AT))
        row.credential_version = 2
    held.fields = {**held.fields, "api_key": key, "api_secret": secret}


def once_after_writing(store: MemoryStore, path: str, action: Callable[[], Awaitable[None]]) -> None:
    async def after_write() -> None:
        if store.calls[-1].path == path:
            store.after_write = None
            await action()

    store.after_write = after_write


async def test_a_connection_rotated_while_it_moves_is_skipped_counted_and_moved_next_time(
    db: Database,
    migrated_database_url: str,
    cipher: Cipher,
    alpha: MemoryStore,
    stores: dict[str, SecretStore],
) -> None:
    held = await three(migrated_database_url, cipher)
    rotated = held[1]
    new_secret = f"rotated-{secrets.token_hex(12)}"
    once_after_writing(
        alpha, rotated.path, lambda: rotate_locally(db, cipher, rotated, "ROTATEDKEY1", new_secret)
    )

    report = await mover(db, cipher, stores).move_all(ALPHA)

    assert (report.moved, report.changed, report.failed, report.left) == (2, 1, [], [])
    assert (await row_of(db, rotated)).credential_version == 2
    # What was written for version 1 is not left in the store: the rotated credential is local only.
    await assert_each_in_exactly_one_place(db, cipher, {ALPHA: alpha}, held)
    assert await cleanups(db) == []

    again = await mover(db, cipher, stores).move_all(ALPHA)

    assert (again.moved, again.already, again.changed) == (1, 2, 0)
    await assert_each_in_exactly_one_place(db, cipher, {ALPHA: alpha}, held)
    assert alpha.versions(rotated.path)[-1].token == write_token(rotated.id, 2)


async def test_a_connection_removed_while_it_moves_leaves_no_copy(
    db: Database,
    migrated_database_url: str,
    cipher: Cipher,
    alpha: MemoryStore,
    stores: dict[str, SecretStore],
) -> None:
    held = await three(migrated_database_url, cipher)
    gone = held[0]

    async def revoke() -> None:
        async with db.transaction() as tx:
            assert await tx.connections.transition(gone.team_id, gone.id, Status.ACTIVE, Status.REVOKED)
            await tx.credentials.delete_for(gone.id)

    once_after_writing(alpha, gone.path, revoke)

    report = await mover(db, cipher, stores).move_all(ALPHA)

    assert (report.moved, report.changed) == (2, 1)
    assert alpha.current(gone.path) is None and await cleanups(db) == []


# --- stopped midway ---------------------------------------------------------------------------------

ROUTES = [
    pytest.param(LOCAL, ALPHA, id="local-to-store"),
    pytest.param(ALPHA, LOCAL, id="store-to-local"),
    pytest.param(ALPHA, BETA, id="store-to-store"),
]


@pytest.mark.parametrize(("source", "target"), ROUTES)
@pytest.mark.parametrize("step", ["written", "committed"])
async def test_a_run_killed_midway_and_run_again_leaves_each_credential_in_exactly_one_place(
    db: Database,
    migrated_database_url: str,
    cipher: Cipher,
    alpha: MemoryStore,
    beta: MemoryStore,
    stores: dict[str, SecretStore],
    source: str,
    target: str,
    step: str,
) -> None:
    held = await three(migrated_database_url, cipher)
    if source != LOCAL:
        for one in held:
            await approve_into(db, alpha, source, one)

    with pytest.raises(Killed):
        await mover(db, cipher, stores, kill_at(step, nth=2)).move_all(target)

    stopped = await row_of(db, held[1])
    where_it_is = stopped.secret_store or LOCAL
    assert where_it_is == (target if step == "committed" else source)
    left = await cleanups(db)
    if step == "committed" and source != LOCAL:
        # Committed, not yet deleted from the source: the row says so.
        assert [(c.store, c.path, c.connection_id) for c in left] == [(source, held[1].path, held[1].id)]
    else:
        assert left == []

    again = await mover(db, cipher, stores).move_all(target)

    assert again.failed == [] and again.left == [] and again.changed == 0
    assert (again.moved, again.already) == ((1, 2) if step == "committed" else (2, 1))
    assert again.cleaned == (1 if step == "committed" and source != LOCAL else 0)
    await assert_each_in_exactly_one_place(db, cipher, {ALPHA: alpha, BETA: beta}, held)
    assert await cleanups(db) == []
    if target != LOCAL:
        written_to = stores[target]
        assert isinstance(written_to, MemoryStore)
        for one in held:
            assert len(written_to.versions(one.path)) == 1, "a retry made a second version"
        tokens = [c.token for c in written_to.made("write") if c.path == held[1].path]
        assert tokens == [write_token(held[1].id, 1)] * (2 if step == "written" else 1)


async def test_a_source_copy_the_store_would_not_delete_is_deleted_by_the_next_run(
    db: Database,
    migrated_database_url: str,
    cipher: Cipher,
    alpha: MemoryStore,
    beta: MemoryStore,
    stores: dict[str, SecretStore],
) -> None:
    held = await three(migrated_database_url, cipher)
    for one in held:
        await approve_into(db, alpha, ALPHA, one)
    alpha.deny("delete")

    report = await mover(db, cipher, stores).move_all(BETA)

    assert report.moved == 3 and not report.ok
    assert [left.where for left in report.left] == [f"Alpha Store `{one.path}`" for one in held]
    assert all(left.reason.endswith("AccessDenied") and not left.kept for left in report.left)
    assert len(await cleanups(db)) == 3 and len(alpha.paths()) == 3

    alpha.restore()
    again = await mover(db, cipher, stores).move_all(BETA)

    assert (again.cleaned, again.moved, again.already) == (3, 0, 3) and again.ok
    await assert_each_in_exactly_one_place(db, cipher, {ALPHA: alpha, BETA: beta}, held)
    assert await cleanups(db) == []


async def test_a_pending_cleanup_never_deletes_a_path_in_use_or_changed_outside_the_bot(
    db: Database,
    migrated_database_url: str,
    cipher: Cipher,
    alpha: MemoryStore,
    beta: MemoryStore,
    stores: dict[str, SecretStore],
) -> None:
    held = await three(migrated_database_url, cipher)
    for one in held:
        await approve_into(db, alpha, ALPHA, one)
    with pytest.raises(Killed):  # stopped after its first commit: one cleanup pending
        await mover(db, cipher, stores, kill_at("committed")).move_all(BETA)
    [pending] = await cleanups(db)
    first = next(one for one in held if one.id == pending.connection_id)
    outside = alpha.write_outside(first.path, {**first.fields, "api_secret": "by-hand"})
    # A cleanup of the path the first connection uses now (as a connection of the same name would
    # leave: its path renders the same).
    in_use = beta.current(first.path)
    assert in_use is not None
    async with db.transaction() as tx:
        await tx.secret_cleanups.add(
            SecretCleanup(
                team_id=TEAM_ID, connection_id="gone", store=BETA, path=first.path, version=in_use.version
            )
        )

    report = await mover(db, cipher, stores).move_all(BETA)

    assert report.cleaned == 0
    assert report.left == [
        CleanupLeft(
            f"Alpha Store `{first.path}`",
            "its current version was written outside the bot since; delete it once nobody uses it",
            kept=True,
        )
    ]
    assert alpha.current(first.path).version == outside  # type: ignore[union-attr]
    assert beta.current(first.path) == in_use
    assert first.path not in [c.path for c in beta.made("delete")]
    assert await cleanups(db) == []
    assert (report.moved, report.already) == (2, 1)


# --- what is said -----------------------------------------------------------------------------------


async def test_the_dry_run_plan_reads_and_changes_nothing(
    db: Database,
    migrated_database_url: str,
    cipher: Cipher,
    alpha: MemoryStore,
    stores: dict[str, SecretStore],
) -> None:
    held = await three(migrated_database_url, cipher)
    await approve_into(db, alpha, ALPHA, held[0])
    calls = len(alpha.calls)
    before = dump_database_text(migrated_database_url)

    plan = await mover(db, cipher, stores).plan(BETA)

    assert (dict(plan.to_move), plan.already, plan.cleanups, plan.moving) == ({LOCAL: 2, ALPHA: 1}, 0, 0, 3)
    assert (await mover(db, cipher, stores).plan(ALPHA)).already == 1
    assert len(alpha.calls) == calls and dump_database_text(migrated_database_url) == before


async def test_no_secret_in_logs_reports_or_the_database_whatever_happens(
    db: Database,
    migrated_database_url: str,
    cipher: Cipher,
    alpha: MemoryStore,
    beta: MemoryStore,
    stores: dict[str, SecretStore],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    held = await three(migrated_database_url, cipher)
    alpha.write_outside(held[2].path, {"api_key": "X", "api_secret": "y"})  # one refusal
    reports: list[MoveReport] = [await mover(db, cipher, stores).move_all(ALPHA)]
    with pytest.raises(Killed):
        await mover(db, cipher, stores, kill_at("committed")).move_all(BETA)
    alpha.deny("delete")
    reports.append(await mover(db, cipher, stores).move_all(BETA))
    alpha.restore()
    reports.append(await mover(db, cipher, stores).move_all(LOCAL))
    assert reports[0].failed and reports[1].left and reports[2].moved == 3

    said = "\n".join([caplog.text, *map(repr, reports), *(str(f) for r in reports for f in r.failed)])
    said += "\n".join(repr(c) for store in (alpha, beta) for c in store.calls)
    database = dump_database_text(migrated_database_url)
    for one in held:
        for value in (one.secret, one.fields["api_key"]):
            assert value not in said
            assert value not in database


async def test_outcomes_are_reported_one_by_one(
    db: Database,
    migrated_database_url: str,
    cipher: Cipher,
    alpha: MemoryStore,
    stores: dict[str, SecretStore],
) -> None:
    held = await three(migrated_database_url, cipher)
    await approve_into(db, alpha, ALPHA, held[0])
    alpha.write_outside(held[1].path, {"api_key": "X", "api_secret": "y"})
    started: list[int] = []
    each: list[Outcome] = []

    await mover(db, cipher, stores).move_all(ALPHA, on_start=started.append, on_each=each.append)

    assert started == [3]
    assert sorted(each) == sorted([Outcome.ALREADY, Outcome.FAILED, Outcome.MOVED])
    async with db.read() as tx:
        assert await tx.session.scalar(select(func.count()).select_from(SecretCleanup)) == 0
