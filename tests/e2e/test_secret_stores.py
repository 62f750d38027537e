"""The bot with an external secret store, driven as Slack drives it: signed requests to the bot on
loopback, a fake Slack, a fake Confluent Cloud, and each store (:mod:`tests.e2e.stores_support`):
AWS Secrets Manager on moto's server with IAM enforced, the bot signing in as the identity that
holds exactly ``docs/aws-iam-policy.json``, and Vault on OpenBao's own server, the bot's token holding
exactly ``docs/vault-policy.hcl``.

Every journey checks what a user or an admin sees in Slack, what the store holds (read behind the
bot's back, as an admin) and what the database holds, and ends by searching the logs (every logger
at DEBUG), every Slack call and the database for the secrets, the bot's own credential for the
store included. The journeys:

1. create and approve, with the README's promise (a pipeline reads the secret at the path the
   approval showed, with its own identity);
2. re-tests read the store: a revoked key, then versions written outside the bot;
3. rotate and approve, then remove: the new version, then the secret deleted, then the name
   registered and approved again at the same path;
4. a rotation approved after someone changed the secret: refused, their version kept;
5. a store that refuses the bot, until the documented rights are granted;
6. a store that is down (AWS's endpoint closed, Vault sealed), and ``/healthz``.

Each runs with both stores. The first three depend on the database (approval, re-test and removal
transactions) and run on SQLite and PostgreSQL; the others are about the store alone and run on
SQLite only, to keep the file quick. The removal follows the rotation in one journey, so that it
is seen to delete every version.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from bot import ids
from bot.app import BotApp
from bot.domain import Health, RotationStatus, Status
from bot.settings import Settings
from tests.e2e.conftest import SIGNING_SECRET, Bot, CloudKey, bot_env
from tests.e2e.helpers import stored, visible_text, wait_until
from tests.e2e.journeys_support import command
from tests.e2e.stores_support import (
    AwsUnderTest,
    StoreUnderTest,
    VaultUnderTest,
    credentials_in,
    open_store,
    unique_name,
)
from tests.e2e.test_app_home import open_home
from tests.e2e.test_approvals import ADMIN, ADMIN_CHANNEL, REQUESTER, audit, click, dms_to, replies_to
from tests.e2e.test_removal import click_remove, remove_prompt
from tests.e2e.test_rotation import (
    active_connection,
    alerts,
    connection,
    new_cloud_key,
    open_rotation_by_command,
    register,
    request_rotation,
    retest_keys,
    rotation_status,
    status_reply,
    updated_in_place,
)
from tests.e2e.test_security import everything_the_bot_emitted, find_leaks
from tests.fakes.confluent_api import FakeConfluent, new_api_key, new_api_secret
from tests.fakes.slack_api import FakeSlack, Message
from tests.support.block_text import as_read
from tests.support.moto_server import MotoServer
from tests.support.openbao_server import OpenBao
from tests.support.servers import serve_asgi
from tests.support.slack_requests import TEAM_ID, SlackSender

RECOVERY_DAYS = 9
"""CONNECTIONS_AWS_RECOVERY_DAYS for every bot here: neither the bot's default (7) nor AWS's (30)."""
ENVIRONMENTS = "/org/v2/environments"

sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


# --- the bot and its store ----------------------------------------------------------------------------


@pytest.fixture(params=["aws", "vault"])
def store(request: pytest.FixtureRequest) -> Iterator[StoreUnderTest]:
    def aws_server() -> MotoServer:
        server: MotoServer = request.getfixturevalue("aws_server")
        return server

    def openbao_server() -> OpenBao:
        server: OpenBao = request.getfixturevalue("openbao_server")
        return server

    with open_store(request.param, aws_server, openbao_server) as opened:
        yield opened


@dataclass
class Launcher:
    """Starts the bot on this test's database and fakes with a store's settings."""

    slack: FakeSlack
    confluent: tuple[FakeConfluent, str]
    database_url: str
    logs: io.StringIO

    @contextmanager
    def bot(self, store: StoreUnderTest, store_env: dict[str, str]) -> Iterator[Bot]:
        env = bot_env(
            self.slack,
            self.confluent[1],
            self.database_url,
            CONNECTIONS_ADMIN_CHANNEL=ADMIN_CHANNEL,
            CONNECTIONS_ADMINS=ADMIN,
            CONNECTIONS_SECRET_STORE=store.key,
            CONNECTIONS_AWS_RECOVERY_DAYS=str(RECOVERY_DAYS),
            **store_env,
        )
        settings = Settings.from_mapping(env)
        # /healthz answered afresh each time: the tests watch the store go down and come back.
        app = BotApp(settings, drain_seconds=5.0, health_cache_seconds=0)
        with (
            serve_asgi(app) as url,
            SlackSender(url, signing_secret=SIGNING_SECRET, fake=self.slack) as sender,
        ):
            yield Bot(
                url=url,
                settings=settings,
                slack=self.slack,
                confluent=self.confluent[0],
                sender=sender,
                database_url=self.database_url,
                logs=self.logs,
            )


@pytest.fixture
def launcher(
    fake_slack: FakeSlack,
    fake_confluent: tuple[FakeConfluent, str],
    migrated_database_url: str,
    captured_logs: io.StringIO,
) -> Launcher:
    return Launcher(fake_slack, fake_confluent, migrated_database_url, captured_logs)


@pytest.fixture
def sbot(launcher: Launcher, store: StoreUnderTest) -> Iterator[Bot]:
    """The bot with the store and its documented least-privilege identity."""
    with launcher.bot(store, store.env()) as bot:
        yield bot


@pytest.fixture
def name() -> str:
    return unique_name()


def path_of(name: str) -> str:
    """Where the default CONNECTIONS_SECRET_PATH puts a Confluent connection named ``name``
    ("Prod Kafka 1a2b3c4d" becomes ``prod-kafka-1a2b3c4d``)."""
    return f"connections/{TEAM_ID}/confluent_cloud/{name.lower().replace(' ', '-')}"


def fields_of(key: CloudKey) -> dict[str, str]:
    return {"api_key": key.key, "api_secret": key.secret}


def unknown_key() -> CloudKey:
    """A key Confluent never issued."""
    return CloudKey(new_api_key(), new_api_secret())


# --- reading what the bot did -------------------------------------------------------------------------


def local_credentials(bot: Bot, connection_id: str) -> list[Any]:
    """The connection's sealed credential rows in the bot's database."""
    return [c for c in stored(bot.database_url)["credentials"] if c.connection_id == connection_id]


def health(bot: Bot) -> tuple[int, dict[str, Any]]:
    answer = httpx.get(f"{bot.url}/healthz", timeout=30)
    body: dict[str, Any] = answer.json()
    return answer.status_code, body


def where(store: StoreUnderTest, path: str) -> str:
    """How Slack messages name the place of a credential, as a reader reads it."""
    return f"{store.title} at `{path}`"


def still_waiting(bot: Bot, request: Message) -> bool:
    """Whether the request in the admin channel still has its Approve and Reject buttons."""
    return any(b.get("type") == "actions" for b in bot.slack.message_of(request).blocks)


def refusal_to(bot: Bot, user: str, before: int) -> str:
    """The first private reply ``user`` got in the admin channel after the ``before``-th."""
    # A store that does not answer is tried three times, with backoff, before the reply.
    wait_until(lambda: len(replies_to(bot, user)) > before, timeout=15, what=f"the reply to {user}")
    return as_read(replies_to(bot, user)[before])


def assert_nothing_leaked(bot: Bot, store_env: dict[str, str], *keys: CloudKey) -> None:
    secrets = credentials_in(store_env)
    for n, key in enumerate(keys):
        secrets[f"API key #{n + 1}"], secrets[f"API secret #{n + 1}"] = key.key, key.secret
    pairs = [(key.key, key.secret) for key in keys]
    leaks = find_leaks(everything_the_bot_emitted(bot), secrets, pairs)
    assert not leaks, "a secret appeared: " + "; ".join(leaks)


# --- 1. create and approve, and a pipeline reads it where the bot said --------------------------------


SHOWN = re.compile(r"stored in (?P<store>[^`\n]+?) at `(?P<path>[^`]+)`")
"""Where an approved credential lives, as the approval result says it: "stored in <store> at `<path>`"."""


def test_an_approved_credential_goes_to_the_store_and_a_pipeline_reads_it_where_the_bot_said(
    sbot: Bot, store: StoreUnderTest, name: str
) -> None:
    path, key = path_of(name), new_cloud_key(sbot)
    connection_id, request = register(sbot, key, name)

    # Waiting for approval, it is sealed in the bot's database only: nothing unapproved in the store.
    assert store.held(path) is None
    assert len(local_credentials(sbot, connection_id)) == 2

    dms_before = len(dms_to(sbot, REQUESTER))
    click(sbot, ids.ACTION_APPROVE, connection_id, request, ADMIN)
    result = as_read(updated_in_place(sbot, request))
    assert "Approved" in result

    # The README's promise: whoever wires a pipeline takes the path from the message and reads the
    # secret there with the pipeline's own identity, allowed that one secret only
    # (`aws secretsmanager get-secret-value --secret-id <path>`, `vault kv get -mount=secret <path>`).
    shown = SHOWN.search(result)
    assert shown is not None, result
    assert (shown["store"], shown["path"]) == (store.title, path)
    assert store.read_as_pipeline(shown["path"]) == fields_of(key)

    # The requester's DM, the status reply and App Home say where it lives too.
    wait_until(lambda: len(dms_to(sbot, REQUESTER)) > dms_before, what="the requester's DM")
    [dm] = dms_to(sbot, REQUESTER)[dms_before:]
    assert "approved" in dm.lower() and where(store, path) in as_read(dm)
    assert where(store, path) in as_read(visible_text(status_reply(sbot, name, REQUESTER).blocks))
    assert where(store, path) in as_read(visible_text(open_home(sbot, REQUESTER)["blocks"]))

    # The store holds the provider's fields as one JSON object, with the metadata beside it.
    assert store.held(path) == fields_of(key)
    metadata = store.metadata(path)
    approved_at = datetime.fromisoformat(metadata.pop("approved-at"))
    assert metadata == {
        "provider": "confluent_cloud",
        "connection-id": connection_id,
        "owner": REQUESTER,
        "approved-by": ADMIN,
    }
    assert abs(datetime.now(UTC) - approved_at) < timedelta(minutes=5)

    # The database keeps where it is, never what it is.
    row = connection(sbot, connection_id)
    assert local_credentials(sbot, connection_id) == []
    assert (row.status, row.secret_store, row.secret_path) == (Status.ACTIVE, store.key, path)
    assert row.secret_version == store.current_version(path)
    [event] = audit(sbot, "connection.approved")
    assert event.details["secret_store"] == store.key
    assert event.details["secret_path"] == path
    assert event.details["secret_version"] == row.secret_version
    assert event.details["ciphertexts_destroyed"] == 2

    status, body = health(sbot)
    assert (status, body["secret_store"]) == (200, "ok")
    assert_nothing_leaked(sbot, store.env(), key)


# --- 2. re-tests read the store -----------------------------------------------------------------------


def test_retests_use_what_the_store_holds_and_say_when_it_was_changed_outside_the_bot(
    sbot: Bot, store: StoreUnderTest, name: str
) -> None:
    path, key = path_of(name), new_cloud_key(sbot)
    connection_id = active_connection(sbot, key, name)
    written = connection(sbot, connection_id).secret_version
    assert retest_keys(sbot, name) == {key.key}

    # The key is revoked at Confluent: `test all` finds it failing, and the admins are alerted.
    sbot.confluent.revoke_key(key.key)
    report = command(sbot, "test all", lambda r: name in r, "the report of test all")
    assert "failing" in report.lower(), report
    wait_until(lambda: alerts(sbot), what="the alert")
    [alert] = alerts(sbot)
    assert name in visible_text(alert.body["blocks"]) and "failing" in visible_text(alert.body["blocks"])
    assert connection(sbot, connection_id).health is Health.FAILING

    # Someone puts another key in the store without the bot: the re-test tests it, and says so.
    theirs = new_cloud_key(sbot)
    their_version = store.write_outside(path, fields_of(theirs))
    calls = len(sbot.confluent.requests_to(ENVIRONMENTS))
    reply = command(sbot, f"test {name}", lambda r: "works" in r or "failing" in r, "the re-test")
    assert "changed outside the bot" in reply and "works" in reply, reply
    assert {r.username for r in sbot.confluent.requests_to(ENVIRONMENTS)[calls:]} == {theirs.key}
    row = connection(sbot, connection_id)
    assert row.health is Health.HEALTHY
    # The bot still knows which version it wrote: the drift is reported, not adopted.
    assert (row.secret_version, store.current_version(path)) == (written, their_version)
    shown_status = as_read(visible_text(status_reply(sbot, name, REQUESTER).blocks))
    assert "changed outside the bot" in shown_status.lower(), shown_status

    # A key that does not work, put there the same way: failing, and the alert says why.
    broken = unknown_key()
    store.write_outside(path, fields_of(broken))
    reply = command(sbot, f"test {name}", lambda r: "works" in r or "failing" in r, "the failing re-test")
    assert "changed outside the bot" in reply and "failing" in reply, reply
    assert connection(sbot, connection_id).health is Health.FAILING
    wait_until(lambda: len(alerts(sbot)) == 2, what="the second alert")
    assert "changed outside the bot" in as_read(visible_text(alerts(sbot)[-1].body["blocks"])).lower()

    assert local_credentials(sbot, connection_id) == []
    assert_nothing_leaked(sbot, store.env(), key, theirs, broken)


# --- 3. rotation, then removal ------------------------------------------------------------------------


def test_a_rotation_is_a_new_version_in_the_store_and_a_removal_deletes_every_version(
    sbot: Bot, store: StoreUnderTest, name: str
) -> None:
    path, old = path_of(name), new_cloud_key(sbot)
    connection_id = active_connection(sbot, old, name)
    first = connection(sbot, connection_id).secret_version
    assert first is not None

    new = new_cloud_key(sbot)
    rotation_id, request = request_rotation(sbot, open_rotation_by_command(sbot, name), new)
    # The new key waits sealed in the database; the store still holds the approved one.
    assert store.held(path) == fields_of(old)
    assert len(local_credentials(sbot, connection_id)) == 2

    click(sbot, ids.ACTION_APPROVE_ROTATION, rotation_id, request, ADMIN)
    result = as_read(updated_in_place(sbot, request))
    assert "Approved" in result and where(store, path) in result
    assert rotation_status(sbot, rotation_id) is RotationStatus.APPROVED

    row = connection(sbot, connection_id)
    assert store.held(path) == fields_of(new)
    assert row.secret_version == store.current_version(path) != first
    if isinstance(store, AwsUnderTest):
        assert store.stages(path) == {row.secret_version: ["AWSCURRENT"], first: ["AWSPREVIOUS"]}
    else:
        assert isinstance(store, VaultUnderTest)
        assert (first, row.secret_version) == ("1", "2")
        assert store.version(path, 1) == fields_of(old)
    assert local_credentials(sbot, connection_id) == []
    [event] = audit(sbot, "connection.rotated")
    assert (event.details["secret_path"], event.details["secret_version"]) == (path, row.secret_version)
    assert retest_keys(sbot, name) == {new.key}

    # Removal: the prompt says the secret goes too; then it is gone from the store.
    prompt = remove_prompt(sbot, name, REQUESTER)
    assert where(store, path) in as_read(visible_text(prompt.blocks))
    reply = click_remove(sbot, connection_id, prompt, REQUESTER)
    assert f"removed by <@{REQUESTER}>" in reply, reply
    assert store.held(path) is None
    if isinstance(store, AwsUnderTest):
        # Scheduled for deletion with the recovery window asked for: listed only with planned
        # deletions, its DeletedDate ("the date the secret is scheduled for deletion") that far off.
        deleted = store.deleted_date(path)
        assert deleted is not None
        assert abs(deleted - (datetime.now(UTC) + timedelta(days=RECOVERY_DAYS))) < timedelta(hours=1)
        assert not store.listed(path)
    else:
        assert isinstance(store, VaultUnderTest)
        # The key, both its versions and its metadata are gone: nothing to undelete.
        assert store.key_metadata(path) is None
        assert (store.version(path, 1), store.version(path, 2)) == (None, None)

    row = connection(sbot, connection_id)
    assert (row.status, row.secret_store, row.secret_path, row.secret_version) == (
        Status.REVOKED,
        None,
        None,
        None,
    )
    [event] = audit(sbot, "connection.removed")
    assert (event.details["secret_store"], event.details["secret_path"]) == (store.key, path)

    # The name is free again: registered anew and approved, its secret goes to the same path
    # (on AWS the name, still scheduled for deletion, is restored and given the new value).
    again = new_cloud_key(sbot)
    again_id, request = register(sbot, again, name)
    click(sbot, ids.ACTION_APPROVE, again_id, request, ADMIN)
    assert "Approved" in updated_in_place(sbot, request)
    assert store.held(path) == fields_of(again)
    assert connection(sbot, again_id).secret_version == store.current_version(path)
    assert retest_keys(sbot, name) == {again.key}
    assert_nothing_leaked(sbot, store.env(), old, new, again)


# --- 4. rotation after a change made outside the bot --------------------------------------------------


@sqlite_only
def test_a_rotation_approved_after_someone_changed_the_secret_decides_nothing_and_keeps_their_version(
    sbot: Bot, store: StoreUnderTest, name: str
) -> None:
    path, old = path_of(name), new_cloud_key(sbot)
    connection_id = active_connection(sbot, old, name)
    written = connection(sbot, connection_id).secret_version
    new = new_cloud_key(sbot)
    rotation_id, request = request_rotation(sbot, open_rotation_by_command(sbot, name), new)

    theirs = unknown_key()
    their_version = store.write_outside(path, fields_of(theirs))
    before = len(replies_to(sbot, ADMIN))
    click(sbot, ids.ACTION_APPROVE_ROTATION, rotation_id, request, ADMIN)
    reply = refusal_to(sbot, ADMIN, before)
    assert "Nothing was approved" in reply and f"`{path}` changed outside the bot" in reply, reply
    assert "still waits for approval" in reply

    # Nothing decided: the request keeps its buttons, the rotation and its sealed key wait.
    assert still_waiting(sbot, request)
    assert rotation_status(sbot, rotation_id) is RotationStatus.PENDING_APPROVAL
    assert len(local_credentials(sbot, connection_id)) == 2
    assert audit(sbot, "connection.rotated") == []
    # Their version stays where it was, and the bot still knows its own.
    assert (store.held(path), store.current_version(path)) == (fields_of(theirs), their_version)
    assert connection(sbot, connection_id).secret_version == written
    assert_nothing_leaked(sbot, store.env(), old, new, theirs)


# --- 5. a store that refuses the bot ------------------------------------------------------------------


REFUSED = {
    "aws": "the bot may not write `{path}`: AccessDeniedException",
    "vault": "the bot may not write `{path}` in Vault: 403 permission denied",
}


@sqlite_only
def test_a_store_that_refuses_the_bot_leaves_the_request_waiting_until_the_rights_are_granted(
    launcher: Launcher, store: StoreUnderTest, name: str
) -> None:
    path, refusing = path_of(name), store.refusing()
    with launcher.bot(store, refusing.env) as bot:
        key = new_cloud_key(bot)
        connection_id, request = register(bot, key, name)
        before = len(replies_to(bot, ADMIN))
        click(bot, ids.ACTION_APPROVE, connection_id, request, ADMIN)
        reply = refusal_to(bot, ADMIN, before)
        assert "Nothing was approved" in reply and REFUSED[store.key].format(path=path) in reply, reply
        assert "click *Approve* again" in reply

        assert still_waiting(bot, request)
        assert connection(bot, connection_id).status is Status.PENDING_APPROVAL
        assert store.held(path) is None
        assert len(local_credentials(bot, connection_id)) == 2
        assert audit(bot, "connection.approved") == []
        status, body = health(bot)
        assert (status, body["secret_store"], body["database"]) == (503, "failing", "ok")

        # Whoever runs the bot grants the documented rights; Approve again goes through, once.
        refusing.grant()
        click(bot, ids.ACTION_APPROVE, connection_id, request, ADMIN)
        assert "Approved" in updated_in_place(bot, request)
        assert store.held(path) == fields_of(key)
        row = connection(bot, connection_id)
        assert row.status is Status.ACTIVE and row.secret_version == store.current_version(path)
        if isinstance(store, AwsUnderTest):
            assert store.stages(path) == {row.secret_version: ["AWSCURRENT"]}
        else:
            assert row.secret_version == "1"
        assert local_credentials(bot, connection_id) == []
        assert health(bot)[0] == 200
        assert_nothing_leaked(bot, refusing.env, key)


# --- 6. a store that is down --------------------------------------------------------------------------


DOWN = {
    "aws": "AWS Secrets Manager did not answer when the bot tried to write `{path}`",
    "vault": "Vault is sealed or unavailable (503): could not write `{path}`",
}


@sqlite_only
def test_a_store_that_is_down_leaves_the_request_waiting_and_healthz_says_so(
    launcher: Launcher, store: StoreUnderTest, name: str
) -> None:
    path = path_of(name)
    with store.outage() as outage, launcher.bot(store, outage.env) as bot:
        status, body = health(bot)
        assert (status, body["secret_store"]) == (200, "ok")
        key = new_cloud_key(bot)
        connection_id, request = register(bot, key, name)

        outage.down()
        status, body = health(bot)
        assert (status, body["status"], body["secret_store"], body["database"]) == (
            503,
            "unavailable",
            "failing",
            "ok",
        )
        before = len(replies_to(bot, ADMIN))
        click(bot, ids.ACTION_APPROVE, connection_id, request, ADMIN)
        reply = refusal_to(bot, ADMIN, before)
        assert "Nothing was approved" in reply and DOWN[store.key].format(path=path) in reply, reply
        assert still_waiting(bot, request)
        assert connection(bot, connection_id).status is Status.PENDING_APPROVAL
        assert len(local_credentials(bot, connection_id)) == 2

        # Back up: healthy again, and Approve goes through.
        outage.up()
        assert outage.store.held(path) is None
        status, body = health(bot)
        assert (status, body["secret_store"]) == (200, "ok")
        click(bot, ids.ACTION_APPROVE, connection_id, request, ADMIN)
        assert "Approved" in updated_in_place(bot, request)
        assert outage.store.held(path) == fields_of(key)
        assert local_credentials(bot, connection_id) == []
        assert_nothing_leaked(bot, outage.env, key)
