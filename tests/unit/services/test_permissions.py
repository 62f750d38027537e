"""RetestPolicy and owner_or_admin: who may re-test, rotate and remove, and how a refusal reads.

The policies are real :class:`AdminPolicy` objects; only the directory of Slack user groups is an
in-memory stand-in that counts lookups and can fail as Slack does.
"""

from __future__ import annotations

import pytest

from bot.domain import AdminCheck, Refusal, Refused
from bot.services.admins import LISTED, MEMBER, NOT_ADMIN, UNCHECKED, AdminPolicy, DirectoryUnavailable
from bot.services.permissions import ANYONE, ONCALL_MEMBER, OWNER, RetestPolicy, owner_or_admin, owner_refusal

ONCALL_GROUP = "S0ONCALL01"
ADMIN_GROUP = "S0ADMINS01"
ONCALL_MEMBER_ID = "U0ONCALL01"
LISTED_ADMIN = "U0ADMIN001"
GROUP_ADMIN = "U0ADMIN002"
OUTSIDER = "U0OUTSID01"
OWNER_ID = "U0OWNER001"


class MemoryDirectory:
    """Slack user groups in memory; set ``failures`` (group id -> reason) to make lookups fail."""

    def __init__(self, groups: dict[str, set[str]]) -> None:
        self.groups = groups
        self.failures: dict[str, str] = {}
        self.lookups: list[str] = []

    async def members(self, group_id: str) -> frozenset[str]:
        self.lookups.append(group_id)
        if group_id in self.failures:
            raise DirectoryUnavailable(self.failures[group_id])
        return frozenset(self.groups.get(group_id, set()))


@pytest.fixture
def directory() -> MemoryDirectory:
    return MemoryDirectory({ONCALL_GROUP: {ONCALL_MEMBER_ID}, ADMIN_GROUP: {GROUP_ADMIN}})


def admins_of(directory: MemoryDirectory, *, group: str | None = ADMIN_GROUP) -> AdminPolicy:
    # No caching, so a failure a test sets takes effect on the next check.
    return AdminPolicy(frozenset({LISTED_ADMIN}), group, directory, ttl_seconds=0)


def oncall_of(directory: MemoryDirectory) -> AdminPolicy:
    # As the runtime builds it: an AdminPolicy with no listed users, only the on-call group.
    return AdminPolicy(frozenset(), ONCALL_GROUP, directory, ttl_seconds=0)


# --- RetestPolicy without an on-call group ------------------------------------------------------


@pytest.mark.parametrize("user", [OUTSIDER, LISTED_ADMIN, ONCALL_MEMBER_ID])
async def test_without_an_oncall_group_anyone_may_retest_and_nobody_is_looked_up(
    directory: MemoryDirectory, user: str
) -> None:
    directory.failures[ADMIN_GROUP] = "missing_scope"  # would refuse, were the directory asked
    policy = RetestPolicy(None, admins_of(directory))

    assert await policy.check(user) == AdminCheck(allowed=True, why=ANYONE)
    assert directory.lookups == []
    assert policy.group_id is None, "not restricted to an on-call group"


# --- RetestPolicy with an on-call group ---------------------------------------------------------


async def test_with_an_oncall_group_its_members_may_retest(directory: MemoryDirectory) -> None:
    policy = RetestPolicy(oncall_of(directory), admins_of(directory))

    assert await policy.check(ONCALL_MEMBER_ID) == AdminCheck(allowed=True, why=ONCALL_MEMBER)
    assert policy.group_id == ONCALL_GROUP, "restricted to the on-call group"
    # A member needs no admin lookup.
    assert directory.lookups == [ONCALL_GROUP]


@pytest.mark.parametrize(("user", "why"), [(LISTED_ADMIN, LISTED), (GROUP_ADMIN, MEMBER)])
async def test_with_an_oncall_group_admins_may_retest_too(
    directory: MemoryDirectory, user: str, why: str
) -> None:
    policy = RetestPolicy(oncall_of(directory), admins_of(directory))

    assert await policy.check(user) == AdminCheck(allowed=True, why=why)


async def test_with_an_oncall_group_everybody_else_is_refused(directory: MemoryDirectory) -> None:
    policy = RetestPolicy(oncall_of(directory), admins_of(directory))

    check = await policy.check(OUTSIDER)

    assert not check.allowed
    assert not check.failed_closed
    assert check.why == "not on call and not an admin"
    refused = policy.refusal(check)
    assert refused.reason is Refusal.NOT_ALLOWED
    assert "on-call user group" in refused.message
    assert "CONNECTIONS_ONCALL_GROUP" in refused.message


async def test_an_oncall_lookup_failure_fails_closed_with_the_reason(directory: MemoryDirectory) -> None:
    directory.failures[ONCALL_GROUP] = "missing_scope"
    policy = RetestPolicy(oncall_of(directory), admins_of(directory))

    check = await policy.check(OUTSIDER)

    assert check == AdminCheck(allowed=False, why=f"{UNCHECKED}: missing_scope", failed_closed=True)
    refused = policy.refusal(check)
    assert refused.reason is Refusal.CHECK_FAILED
    assert "missing_scope" in refused.message
    assert "nothing was re-tested" in refused.message
    assert "Try again" in refused.message


async def test_an_oncall_member_is_refused_while_the_directory_fails(directory: MemoryDirectory) -> None:
    directory.failures[ONCALL_GROUP] = "timeout"
    policy = RetestPolicy(oncall_of(directory), admins_of(directory))

    check = await policy.check(ONCALL_MEMBER_ID)

    assert not check.allowed
    assert check.failed_closed
    assert policy.refusal(check).reason is Refusal.CHECK_FAILED


async def test_an_admin_group_lookup_failure_also_fails_closed(directory: MemoryDirectory) -> None:
    directory.failures[ADMIN_GROUP] = "ratelimited"
    policy = RetestPolicy(oncall_of(directory), admins_of(directory))

    check = await policy.check(OUTSIDER)

    assert check == AdminCheck(allowed=False, why=f"{UNCHECKED}: ratelimited", failed_closed=True)
    assert policy.refusal(check).reason is Refusal.CHECK_FAILED


async def test_a_listed_admin_may_retest_while_the_directory_fails(directory: MemoryDirectory) -> None:
    directory.failures[ONCALL_GROUP] = "missing_scope"
    directory.failures[ADMIN_GROUP] = "missing_scope"
    policy = RetestPolicy(oncall_of(directory), admins_of(directory))

    assert await policy.check(LISTED_ADMIN) == AdminCheck(allowed=True, why=LISTED)


async def test_with_only_listed_admins_an_outsider_is_plainly_refused(directory: MemoryDirectory) -> None:
    policy = RetestPolicy(oncall_of(directory), admins_of(directory, group=None))

    check = await policy.check(OUTSIDER)

    assert check == AdminCheck(allowed=False, why="not on call and not an admin")
    assert policy.refusal(check).reason is Refusal.NOT_ALLOWED


async def test_every_check_asks_again(directory: MemoryDirectory) -> None:
    policy = RetestPolicy(oncall_of(directory), admins_of(directory))

    assert (await policy.check(ONCALL_MEMBER_ID)).allowed
    directory.groups[ONCALL_GROUP] = set()
    # Removed from the group: the next check refuses (nothing is remembered between checks).
    assert not (await policy.check(ONCALL_MEMBER_ID)).allowed


# --- owner_or_admin -----------------------------------------------------------------------------


async def test_the_owner_may_change_their_connection_without_a_lookup(directory: MemoryDirectory) -> None:
    directory.failures[ADMIN_GROUP] = "missing_scope"

    check = await owner_or_admin(admins_of(directory), OWNER_ID, OWNER_ID)

    assert check == AdminCheck(allowed=True, why=OWNER)
    assert directory.lookups == []


@pytest.mark.parametrize(("actor", "why"), [(LISTED_ADMIN, LISTED), (GROUP_ADMIN, MEMBER)])
async def test_an_admin_may_change_anyones_connection(
    directory: MemoryDirectory, actor: str, why: str
) -> None:
    assert await owner_or_admin(admins_of(directory), actor, OWNER_ID) == AdminCheck(allowed=True, why=why)


async def test_someone_else_may_not_change_the_connection(directory: MemoryDirectory) -> None:
    check = await owner_or_admin(admins_of(directory), OUTSIDER, OWNER_ID)

    assert check == AdminCheck(allowed=False, why=NOT_ADMIN)
    refused = owner_refusal(check, "rotate")
    assert refused == Refused(
        Refusal.NOT_ALLOWED,
        "Only the person who added this connection, or an admin of connections, can rotate it. "
        "Nothing changed.",
    )


async def test_owner_or_admin_fails_closed_when_the_directory_fails(directory: MemoryDirectory) -> None:
    directory.failures[ADMIN_GROUP] = "timeout"

    check = await owner_or_admin(admins_of(directory), OUTSIDER, OWNER_ID)

    assert check.failed_closed and not check.allowed
    refused = owner_refusal(check, "remove")
    assert refused.reason is Refusal.CHECK_FAILED
    assert "timeout" in refused.message
    assert "nothing changed" in refused.message


async def test_a_user_id_that_only_looks_like_the_owner_is_not_the_owner(directory: MemoryDirectory) -> None:
    check = await owner_or_admin(admins_of(directory), OWNER_ID.lower(), OWNER_ID)

    assert not check.allowed


def test_a_refusal_cannot_be_changed() -> None:
    refused = Refused(Refusal.WRONG_STATUS, "It is revoked.")

    with pytest.raises(AttributeError):
        refused.reason = Refusal.NOT_FOUND  # type: ignore[misc]
