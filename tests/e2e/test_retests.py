"""Re-testing stored credentials from Slack: ``/connections test <name>``, ``test all``, the Re-test
button on the Connections message and on App Home, ``/connections status``, who may re-test, and
what a rate-limiting or silent provider looks like to the user."""

from __future__ import annotations

import asyncio
import io
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot import ids
from bot.crypto import Cipher, MasterKey
from bot.domain import Health, Status, Trigger
from bot.settings import Settings
from tests.e2e.conftest import Bot, CloudKey, bot_env, running_bot
from tests.e2e.helpers import stored, visible_text
from tests.e2e.test_app_home import open_home, publishes_to, republished
from tests.fakes.confluent_api import FakeConfluent, new_api_key, new_api_secret
from tests.fakes.slack_api import FakeSlack, Hook, Message
from tests.support.seeding import Seed, seed_connections
from tests.support.slack_requests import USER_ID, find_action

OWNER = USER_ID
ADMIN = "U0ADMIN0001"
ONCALL_GROUP = "S0ONCALL001"
ONCALL_MEMBER = "U0ONCALL001"
OUTSIDER = "U0OUTSIDER1"
ADMIN_CHANNEL = "C0ADMINS01"
ALERTS = "C0ALERTS001"
WAIT = 15.0
"""How long a test waits for the bot before failing: a bound on hanging, not a measurement."""
ONCALL = {"CONNECTIONS_ONCALL_GROUP": ONCALL_GROUP}
REFUSED = "Only members of the on-call user group and admins of connections can re-test"


# --- the bot and its connections -----------------------------------------------------------------


@pytest.fixture
def retests_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """Extra settings for the bot of a test; indirect parametrisation overrides (None deletes)."""
    env = {
        "CONNECTIONS_ADMIN_CHANNEL": ADMIN_CHANNEL,
        "CONNECTIONS_ADMINS": ADMIN,
        "CONNECTIONS_ALERT_CHANNEL": ALERTS,
    }
    for name, value in getattr(request, "param", {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


@pytest.fixture
def rbot(
    retests_env: dict[str, str],
    fake_slack: FakeSlack,
    fake_confluent: tuple[FakeConfluent, str],
    migrated_database_url: str,
    captured_logs: io.StringIO,
) -> Iterator[Bot]:
    fake_slack.usergroups[ONCALL_GROUP] = [ONCALL_MEMBER]
    settings = Settings.from_mapping(
        bot_env(fake_slack, fake_confluent[1], migrated_database_url, **retests_env)
    )
    with running_bot(settings, fake_slack, fake_confluent[0], captured_logs) as bot:
        yield bot


def new_key(bot: Bot, *, role: bool = True) -> CloudKey:
    """A Cloud API key Confluent knows (``role=False``: its owner may not list environments)."""
    key = CloudKey(new_api_key(), new_api_secret())
    bot.confluent.add_cloud_key(key.key, key.secret, role=role)
    return key


def unknown_key() -> CloudKey:
    """A key Confluent has never heard of, as one deleted since it was stored."""
    return CloudKey(new_api_key(), new_api_secret())


SEEDED_AT = datetime.now(UTC) - timedelta(days=2)


def store(
    bot: Bot,
    name: str,
    key: CloudKey,
    *,
    status: Status = Status.ACTIVE,
    health: Health = Health.HEALTHY,
    owner: str = OWNER,
    next_check_at: datetime | None = None,
    config: dict[str, str] | None = None,
) -> str:
    """Store a connection as the bot would have (sealed with its master key, bound to ``config``),
    last verified two days ago and, unless told otherwise, not due on the schedule before the test
    ends."""
    assert bot.settings.master_key is not None
    cipher = Cipher(MasterKey.from_base64(bot.settings.master_key))
    seed = Seed(
        name,
        key.key,
        key.secret,
        created_by=owner,
        status=status,
        health=health,
        created_at=SEEDED_AT,
        next_check_at=next_check_at or datetime.now(UTC) + timedelta(days=1),
        config=config or {},
    )
    [connection_id] = asyncio.run(seed_connections(bot.database_url, cipher, [seed]))
    return connection_id


def row(bot: Bot, connection_id: str) -> Any:
    [found] = [c for c in stored(bot.database_url)["connections"] if c.id == connection_id]
    return found


def history(bot: Bot, connection_id: str) -> list[Any]:
    records = [v for v in stored(bot.database_url)["verifications"] if v.connection_id == connection_id]
    return sorted(records, key=lambda v: v.created_at)


# --- driving Slack and reading it ----------------------------------------------------------------


def eventually(
    condition: Callable[[], Any], *, what: str, timeout: float = WAIT, every: float = 0.05
) -> None:
    """Poll ``condition()`` (which may read the database, so not too often) until it is true."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def shown(posted: Hook | Message | dict[str, Any]) -> str:
    """The text a user reads in a response_url post, a message or a message body."""
    if isinstance(posted, Hook):
        body = posted.body
    elif isinstance(posted, Message):
        body = {"blocks": posted.blocks, "text": posted.text}
    else:
        body = posted
    return visible_text(body.get("blocks")) or str(body.get("text", ""))


def command(
    bot: Bot, text: str, *, user: str = OWNER, until: Callable[[list[str]], bool], what: str
) -> list[Hook]:
    """Run ``/connections <text>`` as ``user``; return what came back on its response_url once
    ``until`` holds for the texts posted there so far."""
    response = bot.sender.command(text, user_id=user)
    assert response.status_code == 200
    url = bot.sender.last_response_url
    assert url is not None
    eventually(lambda: until([shown(h) for h in bot.slack.hooks_to(url)]), what=what)
    hooks = bot.slack.hooks_to(url)
    assert all(h.ok for h in hooks), [h.error for h in hooks]
    return hooks


def replies(count: int) -> Callable[[list[str]], bool]:
    return lambda texts: len(texts) >= count


def mentioning(text: str) -> Callable[[list[str]], bool]:
    return lambda texts: any(text in t for t in texts)


def retest(bot: Bot, name: str, *, user: str = OWNER) -> tuple[str, Hook]:
    """``/connections test <name>``: the "Re-testing…" note and the result."""
    first, result = command(bot, f"test {name}", user=user, until=replies(2), what=f"the re-test of {name}")
    return shown(first), result


def listing(bot: Bot, user: str = OWNER) -> Message:
    """``/connections`` as ``user``: the Connections message they see."""
    [hook] = command(bot, "", user=user, until=replies(1), what="the Connections message")
    return bot.slack.message_of(hook)


def click_retest(bot: Bot, connection_id: str, on: Message, user: str = OWNER) -> str:
    """Click Re-test on a message; return the clicked response_url."""
    response = bot.sender.action(ids.ACTION_RETEST, connection_id, on=on, user_id=user)
    assert response.status_code == 200
    url = bot.sender.last_response_url
    assert url is not None
    return url


def dms_to(bot: Bot, user: str) -> list[str]:
    return [
        shown(c.body)
        for c in bot.slack.calls_to("chat.postMessage")
        if c.body.get("channel") == user and c.ok
    ]


def alerts(bot: Bot) -> list[Message]:
    """What everyone sees in the alert channel."""
    return [m for m in bot.slack.messages if m.channel == ALERTS and not m.ephemeral]


LATENCY = re.compile(r"Checked in \d+(\.\d)? m?s")


# --- one connection --------------------------------------------------------------------------------


def test_a_healthy_connection_shows_its_checks_and_latency_and_the_status_lists_who_retested(
    rbot: Bot,
) -> None:
    key = new_key(rbot)
    connection_id = store(rbot, "Production Kafka", key, health=Health.UNKNOWN)

    started, result = retest(rbot, "Production Kafka")
    assert started == "⏳ Re-testing “Production Kafka”…"
    text = shown(result)
    assert "✅ *“Production Kafka” works.* Confluent Cloud accepted its stored credentials." in text
    assert "✅ *Cloud API key accepted*" in text and "✅ *3 environments visible*" in text
    assert LATENCY.search(text), text
    assert "❌" not in text
    _, button = find_action(result.body["blocks"], ids.ACTION_RETEST)
    assert button["value"] == connection_id

    after = row(rbot, connection_id)
    assert after.health is Health.HEALTHY
    assert after.last_verified_at is not None and after.last_verified_at > SEEDED_AT
    [record] = history(rbot, connection_id)
    assert (record.trigger, record.actor, record.outcome.value) == (Trigger.RETEST.value, OWNER, "ok")
    [event] = [e for e in stored(rbot.database_url)["audit_events"] if e.action == "connection.retested"]
    assert (event.actor, event.connection_id) == (OWNER, connection_id)
    assert event.details["health_before"] == "unknown" and event.details["health_after"] == "healthy"

    # Someone else re-tests it too; the status shows both, newest first, with who ran each.
    retest(rbot, "Production Kafka", user=ADMIN)
    [status] = command(rbot, "status Production Kafka", until=replies(1), what="the status")
    text = shown(status)
    assert "Production Kafka" in text and "🟢 healthy" in text
    assert "*Last 2 results*" in text
    lines = [line for line in text.splitlines() if "re-test by" in line]
    assert len(lines) == 2, text
    assert f"re-test by <@{ADMIN}>" in lines[0] and f"re-test by <@{OWNER}>" in lines[1]
    assert all("✅" in line for line in lines)
    # Healthy all along: nothing for the alert channel.
    assert alerts(rbot) == []


def test_a_revoked_key_fails_with_the_typo_and_deleted_key_hints(rbot: Bot) -> None:
    key = new_key(rbot)
    connection_id = store(rbot, "Orders", key)
    rbot.confluent.revoke_key(key.key)

    _, result = retest(rbot, "Orders")
    text = shown(result)
    assert "❌ *“Orders” is failing:*" in text
    assert "Confluent Cloud no longer accepts its stored credentials" in text
    assert "Check both for typos" in text
    assert "A key is deleted together with its owner" in text
    assert "❌ *Cloud API key*" in text
    assert LATENCY.search(text), text
    find_action(result.body["blocks"], ids.ACTION_RETEST, connection_id)

    after = row(rbot, connection_id)
    assert after.health is Health.FAILING and after.failing_since is not None
    [record] = history(rbot, connection_id)
    assert record.outcome.value == "unauthorized"
    assert len(rbot.confluent.requests_to("/org/v2/environments")) == 1


def test_a_key_whose_owner_lost_its_role_fails_with_the_rbac_hints(rbot: Bot) -> None:
    key = new_key(rbot)
    connection_id = store(rbot, "Billing", key)
    rbot.confluent.cloud_accounts[key.key].role = False

    _, result = retest(rbot, "Billing")
    text = shown(result)
    assert "❌ *“Billing” is failing:*" in text
    assert "lacks an RBAC role" in text
    for role in ("OrganizationAdmin", "EnvironmentAdmin", "CloudClusterAdmin"):
        assert role in text
    assert "Check both for typos" not in text
    assert row(rbot, connection_id).health is Health.FAILING


def test_an_unknown_name_is_not_found_and_nothing_is_called(rbot: Bot) -> None:
    store(rbot, "Orders", new_key(rbot))
    hooks = command(rbot, "test Shipping", until=mentioning("no connection named"), what="the answer")
    assert "There is no connection named “Shipping”" in shown(hooks[-1])
    assert rbot.confluent.requests == []


# --- every connection ------------------------------------------------------------------------------


def test_test_all_reports_the_failing_first_and_leaves_out_pending_ones(rbot: Bot) -> None:
    healthy = {name: store(rbot, name, new_key(rbot)) for name in ("alpha", "bravo", "charlie")}
    # Named to sort after the healthy ones: only the report's order puts them first.
    revoked = store(rbot, "zulu revoked", unknown_key())
    forbidden = store(rbot, "yankee forbidden", new_key(rbot, role=False))
    pending_key = new_key(rbot)
    store(rbot, "xray pending", pending_key, status=Status.PENDING_APPROVAL, health=Health.UNKNOWN)

    first, report = command(rbot, "test all", until=replies(2), what="the report")
    assert shown(first) == "⏳ Re-testing 5 connections…"
    text = shown(report)
    assert text.startswith("❌ *3 healthy, 2 failing*"), text
    assert "Re-tested 5 connections in" in text
    assert "xray pending" not in text
    positions = {name: text.index(name) for name in [*healthy, "zulu revoked", "yankee forbidden"]}
    assert max(positions["zulu revoked"], positions["yankee forbidden"]) < min(
        positions[name] for name in healthy
    )
    assert "Check both for typos" in text and "lacks an RBAC role" in text
    for connection_id in (revoked, forbidden):
        find_action(report.body["blocks"], ids.ACTION_RETEST, connection_id)

    callers = [r.username for r in rbot.confluent.requests_to("/org/v2/environments")]
    assert len(callers) == 5 and pending_key.key not in callers
    health = {c.name: c.health for c in stored(rbot.database_url)["connections"]}
    assert health == {
        "alpha": Health.HEALTHY,
        "bravo": Health.HEALTHY,
        "charlie": Health.HEALTHY,
        "zulu revoked": Health.FAILING,
        "yankee forbidden": Health.FAILING,
        "xray pending": Health.UNKNOWN,
    }


def test_test_all_with_nothing_active_says_so(rbot: Bot) -> None:
    store(rbot, "xray pending", new_key(rbot), status=Status.PENDING_APPROVAL)
    [hook] = command(rbot, "test all", until=replies(1), what="the answer")
    assert "There is no active connection to re-test yet" in shown(hook)
    assert rbot.confluent.requests == []


# --- the Re-test button ----------------------------------------------------------------------------


def test_retest_on_the_connections_message_replies_to_the_clicker(rbot: Bot) -> None:
    connection_id = store(rbot, "Orders", new_key(rbot), health=Health.UNKNOWN)
    message = listing(rbot)
    assert message.ephemeral and "⚪ not checked yet" in shown(message)

    url = click_retest(rbot, connection_id, message)
    eventually(lambda: rbot.slack.hooks_to(url), what="the reply to the click")
    [reply] = rbot.slack.hooks_to(url)
    assert reply.ok, reply.error
    assert reply.body.get("response_type") == "ephemeral" and reply.body.get("replace_original") is False
    assert "✅ *“Orders” works.*" in shown(reply)
    # The list the user clicked on is left as it was; the result is a message of its own.
    assert "⚪ not checked yet" in shown(rbot.slack.message_of(message))
    assert shown(rbot.slack.message_of(reply)) == shown(reply)
    [record] = history(rbot, connection_id)
    assert (record.trigger, record.actor) == (Trigger.RETEST.value, OWNER)
    assert row(rbot, connection_id).health is Health.HEALTHY


def test_retest_on_app_home_replies_by_dm_and_republishes_home_with_the_new_health(rbot: Bot) -> None:
    key = new_key(rbot)
    connection_id = store(rbot, "Orders", key)
    home = open_home(rbot, OWNER)
    assert "🟢 healthy" in visible_text(home)
    rbot.confluent.revoke_key(key.key)
    published = len(publishes_to(rbot, OWNER))

    response = rbot.sender.action(ids.ACTION_RETEST, connection_id, on=home["id"])
    assert response.status_code == 200
    eventually(lambda: dms_to(rbot, OWNER), what="the direct message with the result")
    [dm] = dms_to(rbot, OWNER)
    assert "❌ *“Orders” is failing:*" in dm and "Check both for typos" in dm
    after = republished(rbot, OWNER, published)
    assert "🔴 failing" in visible_text(after) and "🟢 healthy" not in visible_text(after)
    find_action(after["blocks"], ids.ACTION_RETEST, connection_id)


# --- who may re-test -------------------------------------------------------------------------------


@pytest.mark.parametrize("retests_env", [ONCALL], indirect=True)
def test_with_an_oncall_group_an_outsider_is_refused_everywhere_and_nothing_is_called(rbot: Bot) -> None:
    connection_id = store(rbot, "Orders", new_key(rbot))

    for text in ("test all", "test Orders"):
        hooks = command(rbot, text, user=OUTSIDER, until=mentioning(REFUSED), what=f"the refusal of {text}")
        said = [shown(h) for h in hooks]
        assert "CONNECTIONS_ONCALL_GROUP" in said[-1]
        # Refused before anything was promised.
        assert not any("Re-testing" in s for s in said), said

    url = click_retest(rbot, connection_id, listing(rbot, OUTSIDER), OUTSIDER)
    eventually(lambda: rbot.slack.hooks_to(url), what="the refusal of the click")
    [reply] = rbot.slack.hooks_to(url)
    assert REFUSED in shown(reply) and reply.body.get("response_type") == "ephemeral"

    assert rbot.confluent.requests == []
    assert history(rbot, connection_id) == []
    assert not [e for e in stored(rbot.database_url)["audit_events"] if e.action == "connection.retested"]


@pytest.mark.parametrize("retests_env", [ONCALL], indirect=True)
@pytest.mark.parametrize("user", [ONCALL_MEMBER, ADMIN], ids=["oncall-member", "admin"])
def test_with_an_oncall_group_its_members_and_admins_may_retest(rbot: Bot, user: str) -> None:
    connection_id = store(rbot, "Orders", new_key(rbot))
    _, result = retest(rbot, "Orders", user=user)
    assert "✅ *“Orders” works.*" in shown(result)
    _, report = command(rbot, "test all", user=user, until=replies(2), what="the report")
    assert shown(report).startswith("✅ *1 healthy, 0 failing*")

    url = click_retest(rbot, connection_id, listing(rbot, user), user)
    eventually(lambda: rbot.slack.hooks_to(url), what="the reply to the click")
    assert "✅ *“Orders” works.*" in shown(rbot.slack.hooks_to(url)[0])
    assert [r.actor for r in history(rbot, connection_id)] == [user, user, user]
    assert len(rbot.confluent.requests_to("/org/v2/environments")) == 3
    lookups = rbot.slack.calls_to("usergroups.users.list")
    assert lookups and all(c.body.get("usergroup") == ONCALL_GROUP for c in lookups)


@pytest.mark.parametrize("retests_env", [ONCALL], indirect=True)
def test_when_slack_cannot_say_who_is_on_call_the_retest_is_refused(rbot: Bot) -> None:
    store(rbot, "Orders", new_key(rbot))
    # A failed membership lookup is never cached, so every check asks again; each one fails.
    for _ in range(10):
        rbot.slack.fail_next("usergroups.users.list", error="missing_scope", status=200, retry_after=None)
    hooks = command(
        rbot, "test Orders", user=ONCALL_MEMBER, until=mentioning("could not be checked"), what="the refusal"
    )
    text = shown(hooks[-1])
    assert "missing_scope" in text and "nothing was re-tested" in text
    assert rbot.confluent.requests == []


# --- a provider that says "not now", or nothing ----------------------------------------------------


def test_a_rate_limited_retest_backs_off_and_ends_healthy(rbot: Bot) -> None:
    connection_id = store(rbot, "Orders", new_key(rbot), health=Health.FAILING)
    # Three 429s use up the provider's own retries; the re-test holds back and tries once more.
    rbot.confluent.fail_next("/org/v2/environments", 429, times=3, retry_after=0)

    _, result = retest(rbot, "Orders")
    assert "✅ *“Orders” works.*" in shown(result)
    assert len(rbot.confluent.requests_to("/org/v2/environments")) == 4
    assert row(rbot, connection_id).health is Health.HEALTHY
    assert [r.outcome.value for r in history(rbot, connection_id)] == ["ok"]


def test_a_retest_rate_limited_to_the_end_is_inconclusive_and_leaves_the_health_alone(rbot: Bot) -> None:
    connection_id = store(rbot, "Orders", new_key(rbot), health=Health.HEALTHY)
    rbot.confluent.fail_next("/org/v2/environments", 429, times=50, retry_after=0)

    _, result = retest(rbot, "Orders")
    text = shown(result)
    assert "⏳ *“Orders” could not be checked:*" in text
    assert "rate-limiting requests, so the result is inconclusive and its health is unchanged" in text
    assert "🟢 healthy" in text
    assert "Confluent is rate-limiting us" in text
    after = row(rbot, connection_id)
    assert after.health is Health.HEALTHY and after.last_verified_at == SEEDED_AT
    assert [r.outcome.value for r in history(rbot, connection_id)] == ["rate_limited"]
    assert alerts(rbot) == []


def test_a_provider_that_does_not_answer_in_time_is_reported_unreachable(
    monkeypatch: pytest.MonkeyPatch,
    fake_slack: FakeSlack,
    fake_confluent: tuple[FakeConfluent, str],
    migrated_database_url: str,
    captured_logs: io.StringIO,
) -> None:
    # The bot's provider timeout, shortened so the test need not wait ten seconds.
    monkeypatch.setattr("bot.runtime.PROVIDER_TIMEOUT_SECONDS", 0.5)
    confluent, url = fake_confluent
    settings = Settings.from_mapping(
        bot_env(fake_slack, url, migrated_database_url, CONNECTIONS_ALERT_CHANNEL=ALERTS)
    )
    with running_bot(settings, fake_slack, confluent, captured_logs) as bot:
        connection_id = store(bot, "Orders", new_key(bot))
        confluent.hold()
        try:
            _, result = retest(bot, "Orders")
        finally:
            confluent.release()
        text = shown(result)
        assert "❌ *“Orders” is failing:* Confluent Cloud did not answer in time." in text
        assert "This may be on Confluent Cloud's side and temporary" in text
        assert "We couldn't reach Confluent" in text
        [record] = history(bot, connection_id)
        assert record.outcome.value == "unreachable"


def test_a_name_with_characters_slack_escapes_in_command_text_is_found(rbot: Bot) -> None:
    # Slack sends &, < and > of a command's text as entities; quotes around a name are a habit.
    key = new_key(rbot)
    store(rbot, "Kafka <EU> & US", key, health=Health.UNKNOWN)

    started, result = retest(rbot, "“Kafka &lt;EU&gt; &amp; US”")
    assert "Re-testing" in started and "Kafka &lt;EU&gt; &amp; US" in started
    assert "works." in shown(result)
    [status] = command(rbot, "status Kafka &lt;EU&gt; &amp; US", until=replies(1), what="the status")
    assert "No connection named" not in shown(status)
