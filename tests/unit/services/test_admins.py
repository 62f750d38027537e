"""AdminPolicy: listed admins, group members through a cached, single-flight, fail-closed lookup."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bot.domain import AdminCheck
from bot.services.admins import (
    LISTED,
    MEMBER,
    NOBODY_CONFIGURED,
    NOT_ADMIN,
    UNCHECKED,
    AdminPolicy,
    DirectoryUnavailable,
)

GROUP = "S0ADMINS1"
ALICE = "U0ALICE01"
BOB = "U0BOB0001"
CAROL = "U0CAROL01"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class MemoryDirectory:
    """Group members in memory; counts lookups, can fail, and can hold lookups until released."""

    def __init__(self, groups: dict[str, set[str]] | None = None) -> None:
        self.groups = groups if groups is not None else {}
        self.calls: list[str] = []
        self.failure: str | None = None
        self.crash: Exception | None = None
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()

    async def members(self, group_id: str) -> frozenset[str]:
        self.calls.append(group_id)
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.crash is not None:
            raise self.crash
        if self.failure is not None:
            raise DirectoryUnavailable(self.failure)
        if group_id not in self.groups:
            raise DirectoryUnavailable("no_such_subteam")
        return frozenset(self.groups[group_id])


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def directory() -> MemoryDirectory:
    return MemoryDirectory({GROUP: {BOB}})


def policy_for(
    directory: MemoryDirectory,
    clock: FakeClock,
    *,
    admins: frozenset[str] = frozenset(),
    group: str | None = GROUP,
    ttl: float = 60.0,
) -> AdminPolicy:
    return AdminPolicy(admins, group, directory, ttl_seconds=ttl, clock=clock)


async def test_a_listed_admin_is_allowed_without_asking_the_directory(
    directory: MemoryDirectory, clock: FakeClock
) -> None:
    directory.failure = "missing_scope"  # would refuse, were the directory asked
    policy = policy_for(directory, clock, admins=frozenset({ALICE}))

    assert await policy.check(ALICE) == AdminCheck(allowed=True, why=LISTED)
    assert directory.calls == []


async def test_a_group_member_is_allowed(directory: MemoryDirectory, clock: FakeClock) -> None:
    policy = policy_for(directory, clock, admins=frozenset({ALICE}))

    assert await policy.check(BOB) == AdminCheck(allowed=True, why=MEMBER)
    assert directory.calls == [GROUP]


async def test_someone_neither_listed_nor_in_the_group_is_refused(
    directory: MemoryDirectory, clock: FakeClock
) -> None:
    policy = policy_for(directory, clock, admins=frozenset({ALICE}))

    check = await policy.check(CAROL)

    assert check == AdminCheck(allowed=False, why=NOT_ADMIN, failed_closed=False)


async def test_listed_admins_without_a_group_need_no_directory(
    directory: MemoryDirectory, clock: FakeClock
) -> None:
    policy = policy_for(directory, clock, admins=frozenset({ALICE}), group=None)

    assert (await policy.check(ALICE)).allowed
    assert await policy.check(BOB) == AdminCheck(allowed=False, why=NOT_ADMIN)
    assert directory.calls == []


async def test_without_admins_or_group_nobody_is_an_admin(
    directory: MemoryDirectory, clock: FakeClock
) -> None:
    policy = policy_for(directory, clock, group=None)

    for user in (ALICE, BOB, CAROL):
        check = await policy.check(user)
        assert check == AdminCheck(allowed=False, why=NOBODY_CONFIGURED)
    assert "no admins are configured" in NOBODY_CONFIGURED
    assert not policy.configured
    assert directory.calls == []


async def test_an_empty_group_setting_means_no_group(directory: MemoryDirectory, clock: FakeClock) -> None:
    policy = policy_for(directory, clock, group="")

    assert policy.group_id is None
    assert (await policy.check(BOB)).why == NOBODY_CONFIGURED
    assert directory.calls == []


async def test_membership_is_looked_up_once_within_the_ttl(
    directory: MemoryDirectory, clock: FakeClock
) -> None:
    policy = policy_for(directory, clock)

    verdicts = []
    for _ in range(5):
        verdicts.append((await policy.check(BOB)).allowed)
        verdicts.append((await policy.check(CAROL)).allowed)
        clock.now += 11.9  # five steps stay under 60 s in total

    assert verdicts == [True, False] * 5
    assert directory.calls == [GROUP]


async def test_membership_is_looked_up_again_once_the_ttl_has_passed(
    directory: MemoryDirectory, clock: FakeClock
) -> None:
    policy = policy_for(directory, clock)
    await policy.check(BOB)

    clock.now += 59.9
    await policy.check(BOB)
    assert directory.calls == [GROUP]

    clock.now += 0.1  # exactly 60 s after the lookup was sent: no longer fresh
    await policy.check(BOB)
    assert directory.calls == [GROUP, GROUP]


async def test_a_removed_member_loses_the_right_after_the_ttl(
    directory: MemoryDirectory, clock: FakeClock
) -> None:
    policy = policy_for(directory, clock)
    assert (await policy.check(BOB)).allowed

    directory.groups[GROUP] = {CAROL}
    clock.now += 30
    assert (await policy.check(BOB)).allowed  # the cached list, still within the ttl
    clock.now += 30

    assert await policy.check(BOB) == AdminCheck(allowed=False, why=NOT_ADMIN)
    assert (await policy.check(CAROL)).allowed


async def test_the_ttl_is_counted_from_when_the_lookup_was_sent(clock: FakeClock) -> None:
    class SlowDirectory(MemoryDirectory):
        async def members(self, group_id: str) -> frozenset[str]:
            clock.now += 45  # Slack took 45 s to answer
            return await super().members(group_id)

    directory = SlowDirectory({GROUP: {BOB}})
    policy = policy_for(directory, clock)
    await policy.check(BOB)

    clock.now += 15  # 60 s after the request, 15 s after the answer
    await policy.check(BOB)

    assert directory.calls == [GROUP, GROUP]


async def test_a_zero_ttl_asks_every_time(directory: MemoryDirectory, clock: FakeClock) -> None:
    policy = policy_for(directory, clock, ttl=0)

    for _ in range(3):
        await policy.check(BOB)

    assert directory.calls == [GROUP] * 3


def test_a_negative_ttl_is_refused(directory: MemoryDirectory, clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="ttl_seconds"):
        policy_for(directory, clock, ttl=-1)


async def test_a_failed_lookup_refuses_says_why_and_is_not_cached(
    directory: MemoryDirectory, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    policy = policy_for(directory, clock, admins=frozenset({ALICE}))
    directory.failure = "missing_scope"

    with caplog.at_level(logging.WARNING, logger="bot.services.admins"):
        check = await policy.check(BOB)

    assert check == AdminCheck(allowed=False, why=f"{UNCHECKED}: missing_scope", failed_closed=True)
    assert "missing_scope" in caplog.text
    assert (await policy.check(ALICE)).allowed  # listed admins are unaffected

    directory.failure = None
    assert await policy.check(BOB) == AdminCheck(allowed=True, why=MEMBER)
    assert directory.calls == [GROUP, GROUP]


async def test_a_failure_after_the_ttl_does_not_fall_back_to_the_stale_list(
    directory: MemoryDirectory, clock: FakeClock
) -> None:
    policy = policy_for(directory, clock)
    assert (await policy.check(BOB)).allowed

    clock.now += 60
    directory.failure = "timeout"

    check = await policy.check(BOB)
    assert (check.allowed, check.failed_closed, check.why) == (False, True, f"{UNCHECKED}: timeout")


async def test_an_unexpected_directory_error_also_fails_closed(
    directory: MemoryDirectory, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    policy = policy_for(directory, clock)
    directory.crash = KeyError("users")

    with caplog.at_level(logging.ERROR, logger="bot.services.admins"):
        check = await policy.check(BOB)

    assert check == AdminCheck(allowed=False, why=f"{UNCHECKED}: unexpected error", failed_closed=True)
    assert any(record.exc_info for record in caplog.records)

    directory.crash = None
    assert (await policy.check(BOB)).allowed
    assert len(directory.calls) == 2


async def test_concurrent_checks_share_one_lookup(directory: MemoryDirectory, clock: FakeClock) -> None:
    policy = policy_for(directory, clock)
    directory.gate = asyncio.Event()
    users = [BOB, CAROL, BOB, CAROL, BOB, BOB]

    checks = asyncio.gather(*(policy.check(user) for user in users))
    await directory.entered.wait()
    for _ in range(10):  # give every check the chance to start a lookup of its own
        await asyncio.sleep(0)
    directory.gate.set()
    results = await checks

    assert [r.allowed for r in results] == [user == BOB for user in users]
    assert directory.calls == [GROUP]


async def test_concurrent_checks_share_a_failure_too_and_the_next_check_asks_again(
    directory: MemoryDirectory, clock: FakeClock
) -> None:
    policy = policy_for(directory, clock)
    directory.gate = asyncio.Event()
    directory.failure = "ratelimited"

    checks = asyncio.gather(*(policy.check(user) for user in (BOB, BOB, CAROL)))
    await directory.entered.wait()
    for _ in range(10):
        await asyncio.sleep(0)
    directory.gate.set()
    results = await checks

    assert all(r.failed_closed and r.why == f"{UNCHECKED}: ratelimited" for r in results)
    assert directory.calls == [GROUP]

    directory.failure = None
    assert (await policy.check(BOB)).allowed
    assert directory.calls == [GROUP, GROUP]


async def test_a_check_that_gives_up_does_not_cancel_the_lookup_others_wait_for(
    directory: MemoryDirectory, clock: FakeClock
) -> None:
    policy = policy_for(directory, clock)
    directory.gate = asyncio.Event()

    impatient = asyncio.create_task(policy.check(BOB))
    await directory.entered.wait()
    patient = asyncio.create_task(policy.check(BOB))
    await asyncio.sleep(0)
    impatient.cancel()
    with pytest.raises(asyncio.CancelledError):
        await impatient
    directory.gate.set()

    assert await patient == AdminCheck(allowed=True, why=MEMBER)
    assert directory.calls == [GROUP]


def test_how_to_become_names_the_group_with_a_mention_when_set(
    directory: MemoryDirectory, clock: FakeClock
) -> None:
    text = policy_for(directory, clock, admins=frozenset({ALICE})).how_to_become()

    assert "CONNECTIONS_ADMINS" in text
    assert f"<!subteam^{GROUP}>" in text


def test_how_to_become_without_a_group_mentions_no_group(
    directory: MemoryDirectory, clock: FakeClock
) -> None:
    text = policy_for(directory, clock, admins=frozenset({ALICE}), group=None).how_to_become()

    assert "CONNECTIONS_ADMINS" in text
    assert "subteam" not in text
    assert "group" not in text


def test_how_to_become_when_nobody_is_configured_says_so(
    directory: MemoryDirectory, clock: FakeClock
) -> None:
    text = policy_for(directory, clock, group=None).how_to_become()

    assert text.startswith("No admins are configured")
    assert "CONNECTIONS_ADMINS" in text


def test_how_to_become_does_not_put_a_malformed_group_id_in_markup(
    directory: MemoryDirectory, clock: FakeClock
) -> None:
    text = policy_for(directory, clock, group="S1> <!channel").how_to_become()

    assert "<" not in text and ">" not in text
    assert "CONNECTIONS_ADMIN_GROUP" in text
