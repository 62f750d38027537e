"""Tampered button values and private_metadata: ids that name someone else's connection.

Slack echoes button values and private_metadata back as they were sent, but the bot treats them
as untrusted: every click and submission is checked again on the server. Workspace T1 holds an
active connection and a pending one of its owner, with a rotation awaiting approval; workspace T2
holds one of its own. Both belong to one Enterprise Grid organisation on which the bot is installed
org-wide, the one way a bot token serves two workspaces (a payload from a workspace, organisation
or app the token does not belong to is refused before any listener runs: the last tests). A
member of T1 who neither owns them nor is an admin, and an admin of T2, then send the ids of T1's
connections and rotation in every button and form that takes one. Each is refused (or told the
connection is not there) in plain words, the database is left exactly as it was, and nothing of
T1's connections (their names, their keys) shows in the answers to T2. Actions on a connection
that was removed, or deleted outright, and ids that are not ids at all (too long, JSON, SQL, NUL)
get a plain answer too.
"""

from __future__ import annotations

import asyncio
import copy
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, update

from bot import ids
from bot.crypto import Cipher, MasterKey
from bot.domain import Health, Status
from bot.settings import Settings
from bot.store import Connection, Database, Rotation
from tests.e2e import test_approvals
from tests.e2e.conftest import SIGNING_SECRET, Bot, CloudKey, bot_env, running_bot
from tests.e2e.helpers import stored, wait_until
from tests.e2e.test_fuzz import (
    ADMIN,
    ADMIN_CHANNEL,
    WAIT,
    Since,
    assert_answered,
    assert_safe,
    click,
    opened_view,
    post_payload,
    post_placeholder,
    view_updates,
)
from tests.e2e.test_rotation import NAME, REQUESTER, active_connection, replies_in_channel
from tests.fakes.confluent_api import FakeConfluent, new_api_key, new_api_secret
from tests.fakes.slack_api import FakeSlack
from tests.support.databases import dump_database_text
from tests.support.seeding import Seed, seed_connections
from tests.support.slack_requests import (
    CHANNEL_ID,
    TEAM_ID,
    USER_ID,
    SlackSender,
    block_actions_in_view,
    form_body,
    in_org,
    sign,
    slash_command,
    view_submission,
)

OWNER = USER_ID
BYSTANDER = "U0BYSTAND01"
"""A member of T1 who neither added the connections nor is an admin."""
OTHER_TEAM = "T0OTHERTEAM"
ORG = "E0ACMEGRID1"
"""The organisation of both workspaces."""
OTHER_ADMIN = "U0OTHERADM1"
"""An admin of connections, in the other workspace."""

USERS = frozenset({OWNER, BYSTANDER, ADMIN, OTHER_ADMIN})

PROD, STAGING, DEV, THEIRS = "Acme prod warehouse", "Acme staging", "Acme dev", "Globex payroll stream"


@dataclass
class World:
    bot: Bot
    ours: SlackSender
    """Plays Slack for T1."""
    other: SlackSender
    """Plays Slack for T2."""
    prod: str
    """T1's active connection, with a rotation awaiting approval."""
    staging: str
    """T1's connection awaiting approval."""
    rotation: str
    theirs: str
    """T2's connection."""
    key_hint: str
    """How prod's key shows (masked): it must not show in T2."""


def _far_future() -> datetime:
    return datetime.now(UTC) + timedelta(days=365)


async def _store_rotation(url: str, team_id: str, connection_id: str, requested_by: str) -> str:
    db = Database.from_url(url)
    try:
        async with db.transaction() as tx:
            rotation = Rotation(
                team_id=team_id,
                connection_id=connection_id,
                version=2,
                requested_by=requested_by,
                key_hint="NEWK…EY42",
            )
            await tx.rotations.add(rotation)
            return rotation.id
    finally:
        await db.dispose()


@pytest.fixture
def world(
    fake_slack: FakeSlack,
    fake_confluent: tuple[FakeConfluent, str],
    migrated_database_url: str,
    captured_logs: io.StringIO,
) -> Iterator[World]:
    fake_slack.enterprise_id = ORG
    confluent, confluent_url = fake_confluent
    env = bot_env(
        fake_slack,
        confluent_url,
        migrated_database_url,
        CONNECTIONS_ADMIN_CHANNEL=ADMIN_CHANNEL,
        CONNECTIONS_ADMINS=f"{ADMIN},{OTHER_ADMIN}",
    )
    settings = Settings.from_mapping(env)
    assert settings.master_key is not None
    cipher = Cipher(MasterKey.from_base64(settings.master_key))
    key, secret = new_api_key(), new_api_secret()
    confluent.add_cloud_key(key, secret, environments=1)
    later = _far_future()
    seeds = [
        Seed(name=PROD, key=key, secret=secret, created_by=OWNER, next_check_at=later),
        Seed(
            name=STAGING,
            key=key,
            secret=secret,
            created_by=OWNER,
            status=Status.PENDING_APPROVAL,
            next_check_at=later,
        ),
        Seed(
            name=THEIRS,
            key=new_api_key(),
            secret=new_api_secret(),
            team_id=OTHER_TEAM,
            created_by=OTHER_ADMIN,
            next_check_at=later,
        ),
        # With no rotation waiting, so that its owner can open a rotation form.
        Seed(name=DEV, key=new_api_key(), secret=new_api_secret(), created_by=OWNER, next_check_at=later),
    ]
    prod, staging, theirs, _ = asyncio.run(seed_connections(migrated_database_url, cipher, seeds))
    rotation = asyncio.run(_store_rotation(migrated_database_url, TEAM_ID, prod, OWNER))
    with (
        running_bot(settings, fake_slack, confluent, captured_logs) as bot,
        SlackSender(bot.url, signing_secret=SIGNING_SECRET, fake=fake_slack, team_id=OTHER_TEAM) as other,
    ):
        yield World(bot, bot.sender, other, prod, staging, rotation, theirs, key_hint=f"{key[:4]}…{key[-4:]}")


# --- reading answers and rows --------------------------------------------------------------------


def rows(world: World) -> str:
    """Every row of every table, as text: what "nothing changed" compares."""
    return dump_database_text(world.bot.database_url)


def answer_to_click(
    world: World,
    sender: SlackSender,
    action_id: str,
    value: str,
    *,
    user: str,
    expected: str,
    surface: str = "message",
) -> str:
    """Click ``action_id`` carrying ``value`` as ``user``; wait for the answer showing
    ``expected`` (which, and all else sent, must be safe); return everything the user was shown."""
    since = Since.now(world.bot, USERS)
    ts = None
    if surface == "channel":
        ts = post_placeholder(world.bot)
    response = click(
        world.bot,
        sender,
        action_id,
        value,
        user=user,
        surface=surface,
        channel=ADMIN_CHANNEL if surface == "channel" else CHANNEL_ID,
        message_ts=ts,
    )
    assert response.status_code == 200
    assert_answered(since, expected, what=f"the answer to {action_id} with {value[:40]!r} by {user}")
    return "\n".join(since.shown())


def answer_to_command(world: World, sender: SlackSender, text: str, *, user: str, expected: str) -> str:
    since = Since.now(world.bot, USERS)
    assert sender.command(text, user_id=user).status_code == 200
    assert_answered(since, expected, what=f"the answer to /connections {text}")
    return "\n".join(since.shown())


def submit_as(
    world: World, view: dict[str, Any], values: dict[str, str], *, user: str, team: str, metadata: str
) -> dict[str, Any]:
    """Submit ``view`` (as the fake Slack stored it) from ``team`` as ``user``, with its
    private_metadata replaced by ``metadata``; the bot's answer (the ack's JSON)."""
    tampered = {
        **copy.deepcopy(view),
        "private_metadata": metadata,
        "team_id": team,
        "app_installed_team_id": team,
    }
    sender = world.other if team == OTHER_TEAM else world.ours
    payload = view_submission(tampered, values, user_id=user, team_id=team)
    response = post_payload(sender, payload)
    assert response.status_code == 200
    return response.json() if response.content else {}


def a_real_view(world: World, how: str) -> dict[str, Any]:
    """A view the bot opens in T1 through its own flow: the reject form (an admin clicks Reject on
    staging), the rotation's reject form, or a rotation form (of dev, asked for by its owner)."""
    since = Since.now(world.bot, USERS)
    if how == "reject":
        click(world.bot, world.ours, ids.ACTION_REJECT, world.staging, user=ADMIN, surface="home")
    elif how == "reject-rotation":
        click(world.bot, world.ours, ids.ACTION_REJECT_ROTATION, world.rotation, user=ADMIN, surface="home")
    else:
        assert world.ours.command(f"rotate {DEV}", user_id=OWNER).status_code == 200
    return opened_view(since, f"the {how} form")


def assert_nothing_of_ours_shows(shown: str, world: World) -> None:
    for detail in (PROD, STAGING, world.key_hint, "NEWK…EY42"):
        assert detail not in shown, f"{detail!r} of the other workspace showed: {shown[:500]!r}"


# --- a member who is neither the owner nor an admin -----------------------------------------------


BYSTANDER_REFUSALS = [
    (ids.ACTION_ROTATE, "prod", "can rotate it"),
    (ids.ACTION_REMOVE, "prod", "can remove it"),
    (ids.ACTION_APPROVE, "staging", "Only admins of connections"),
    (ids.ACTION_REJECT, "staging", "Only admins of connections"),
    (ids.ACTION_APPROVE_ROTATION, "rotation", "Only admins of connections"),
    (ids.ACTION_REJECT_ROTATION, "rotation", "Only admins of connections"),
]


def test_a_member_cannot_rotate_remove_or_decide_on_someone_elses_connection(world: World) -> None:
    before = rows(world)
    for action_id, target, expected in BYSTANDER_REFUSALS:
        answer_to_click(
            world, world.ours, action_id, getattr(world, target), user=BYSTANDER, expected=expected
        )
    assert rows(world) == before


def test_a_members_forms_naming_someone_elses_connection_are_refused(world: World) -> None:
    reject_form, rotation_form = a_real_view(world, "reject"), a_real_view(world, "rotate")
    before = rows(world)

    answer = submit_as(
        world,
        reject_form,
        {ids.BLOCK_REASON: "Mine now."},
        user=BYSTANDER,
        team=TEAM_ID,
        metadata=json.dumps({"connection": world.staging, "channel": "", "ts": ""}),
    )
    assert answer["response_action"] == "errors"
    assert "Only admins of connections can reject" in answer["errors"][ids.BLOCK_REASON]

    # New credentials that work: only the right to rotate stands in the way.
    key, secret = new_api_key(), new_api_secret()
    world.bot.confluent.add_cloud_key(key, secret, environments=1)
    since = Since.now(world.bot, USERS)
    metadata = json.dumps({"connection": world.prod, "provider": "confluent_cloud", "name": PROD})
    answer = submit_as(
        world,
        rotation_form,
        {"api_key": key, "api_secret": secret},
        user=BYSTANDER,
        team=TEAM_ID,
        metadata=metadata,
    )
    # Refused before anything is claimed or checked: under the form, at once.
    assert answer["response_action"] == "errors"
    assert "can rotate it" in " ".join(answer["errors"].values())
    assert_safe(since, acks=(answer,))
    assert rows(world) == before


# --- another workspace ------------------------------------------------------------------------------


OTHER_WORKSPACE_CLICKS = [
    (ids.ACTION_RETEST, "prod", "There is no such connection"),
    (ids.ACTION_ROTATE, "prod", "There is no such connection"),
    (ids.ACTION_REMOVE, "prod", "There is no such connection"),
    (ids.ACTION_APPROVE, "staging", "no longer exists"),
    (ids.ACTION_REJECT, "staging", "no longer exists"),
    (ids.ACTION_APPROVE_ROTATION, "rotation", "no longer exists"),
    (ids.ACTION_REJECT_ROTATION, "rotation", "no longer exists"),
]


def test_another_workspace_cannot_reach_these_connections_by_id_or_by_name(world: World) -> None:
    before = rows(world)
    for action_id, target, expected in OTHER_WORKSPACE_CLICKS:
        for surface in ("message", "home"):
            shown = answer_to_click(
                world,
                world.other,
                action_id,
                getattr(world, target),
                user=OTHER_ADMIN,
                expected=expected,
                surface=surface,
            )
            assert_nothing_of_ours_shows(shown, world)
    for sub in ("status", "test", "rotate", "remove"):
        shown = answer_to_command(
            world, world.other, f"{sub} {PROD}", user=OTHER_ADMIN, expected="There is no connection named"
        )
        assert world.key_hint not in shown and "healthy" not in shown
    shown = answer_to_command(
        world, world.other, f"audit {PROD}", user=OTHER_ADMIN, expected="No connection named"
    )
    assert world.key_hint not in shown
    shown = answer_to_command(world, world.other, "list", user=OTHER_ADMIN, expected="In this workspace")
    assert THEIRS in shown
    assert_nothing_of_ours_shows(shown, world)
    assert rows(world) == before


def test_another_workspaces_forms_naming_these_connections_are_refused(world: World) -> None:
    reject_form = a_real_view(world, "reject")
    rotation_reject_form = a_real_view(world, "reject-rotation")
    rotation_form = a_real_view(world, "rotate")
    before = rows(world)

    answer = submit_as(
        world,
        reject_form,
        {ids.BLOCK_REASON: "Not yours."},
        user=OTHER_ADMIN,
        team=OTHER_TEAM,
        metadata=json.dumps({"connection": world.staging, "channel": ADMIN_CHANNEL, "ts": "1.000001"}),
    )
    assert answer == {
        "response_action": "errors",
        "errors": {ids.BLOCK_REASON: "This connection no longer exists. Nothing changed."},
    }
    answer = submit_as(
        world,
        rotation_reject_form,
        {ids.BLOCK_REASON: "Not yours."},
        user=OTHER_ADMIN,
        team=OTHER_TEAM,
        metadata=json.dumps({"rotation": world.rotation, "channel": "", "ts": ""}),
    )
    assert answer == {
        "response_action": "errors",
        "errors": {ids.BLOCK_REASON: "This rotation no longer exists. Nothing changed."},
    }

    since = Since.now(world.bot, USERS)
    metadata = json.dumps({"connection": world.prod, "provider": "confluent_cloud", "name": THEIRS})
    answer = submit_as(
        world,
        rotation_form,
        {"api_key": new_api_key(), "api_secret": new_api_secret()},
        user=OTHER_ADMIN,
        team=OTHER_TEAM,
        metadata=metadata,
    )
    assert answer["response_action"] == "errors"
    refusal = " ".join(answer["errors"].values())
    assert "There is no such connection" in refusal
    assert_safe(since, acks=(answer,))
    assert_nothing_of_ours_shows(refusal, world)
    assert rows(world) == before


# --- Try again -----------------------------------------------------------------------------------------


def test_a_try_again_draft_brings_back_only_what_it_carries_never_a_secret_or_a_stored_value(
    world: World,
) -> None:
    sender = world.ours
    since = Since.now(world.bot, USERS)
    assert sender.command("connect confluent_cloud", user_id=BYSTANDER).status_code == 200
    view_id = str(opened_view(since, "the form")["id"])
    sender.submit(
        view_id,
        {ids.BLOCK_NAME: "Mine", "api_key": new_api_key(), "api_secret": new_api_secret()},
        user_id=BYSTANDER,
    )
    wait_until(lambda: view_updates(since, view_id), timeout=WAIT, what="the failed result")
    result = world.bot.slack.open_view(view_id)

    # A draft naming T1's prod, with secrets and a stored connection's fields slipped in.
    draft = json.dumps(
        {
            "p": "confluent_cloud",
            "n": PROD,
            "c": {"api_key": "PLANTEDKEY000000", "api_secret": "planted-secret", "cluster_id": "lkc-planted"},
        }
    )
    tampered = copy.deepcopy(result)
    for block in tampered["blocks"]:
        for element in block.get("elements") or []:
            if element.get("action_id") == ids.ACTION_TRY_AGAIN:
                element["value"] = draft
    clicked = Since.now(world.bot, USERS)
    payload = block_actions_in_view(
        ids.ACTION_TRY_AGAIN,
        draft,
        view=tampered,
        trigger_id=world.bot.slack.issue_trigger_id(view_id=view_id),
        team_id=TEAM_ID,
        user_id=BYSTANDER,
    )
    assert post_payload(sender, payload).status_code == 200
    wait_until(lambda: view_updates(clicked, view_id), timeout=WAIT, what="the form after Try again")
    form = world.bot.slack.views[view_id]
    prefilled = {
        b["block_id"]: b["element"].get("initial_value")
        for b in form["blocks"]
        if b.get("type") == "input" and b["element"].get("initial_value")
    }
    assert prefilled == {ids.BLOCK_NAME: PROD, "cluster_id": "lkc-planted"}
    text = json.dumps(form)
    assert "PLANTEDKEY" not in text and "planted-secret" not in text and world.key_hint not in text


# --- gone connections and ids that are not ids ----------------------------------------------------------


def test_actions_on_a_removed_or_deleted_connection_are_answered_plainly(world: World) -> None:
    answer_to_click(world, world.ours, ids.ACTION_REMOVE, world.prod, user=OWNER, expected="was removed by")
    for action_id, expected in (
        (ids.ACTION_RETEST, "revoked"),
        (ids.ACTION_ROTATE, "revoked"),
        (ids.ACTION_REMOVE, "revoked"),
    ):
        answer_to_click(world, world.ours, action_id, world.prod, user=OWNER, expected=expected)
    # Removing it cancelled its rotation.
    answer_to_click(
        world, world.ours, ids.ACTION_APPROVE_ROTATION, world.rotation, user=ADMIN, expected="cancelled"
    )

    async def delete_staging() -> None:
        db = Database.from_url(world.bot.database_url)
        try:
            async with db.transaction() as tx:
                await tx.session.execute(delete(Connection).where(Connection.id == world.staging))
        finally:
            await db.dispose()

    asyncio.run(delete_staging())
    for action_id, expected in (
        (ids.ACTION_APPROVE, "This connection no longer exists"),
        (ids.ACTION_REJECT, "This connection no longer exists"),
        (ids.ACTION_RETEST, "There is no such connection (it may have been removed)"),
        (ids.ACTION_ROTATE, "There is no such connection (it may have been removed)"),
        (ids.ACTION_REMOVE, "There is no such connection (it may have been removed)"),
    ):
        answer_to_click(world, world.ours, action_id, world.staging, user=ADMIN, expected=expected)


def malformed_ids(world: World) -> list[str]:
    return [
        "x" * 2000,
        "y" * 5000,
        json.dumps({"connection": world.prod, "team": TEAM_ID}),
        f"{world.prod}' OR '1'='1",
        "1; DROP TABLE connections; --",
        f"{world.prod}\x00",
        f" {world.prod} ",
        world.prod.upper(),
        "../" * 20,
        "",
    ]


IDS_TAKEN_BY = [
    (ids.ACTION_RETEST, "There is no such connection"),
    (ids.ACTION_ROTATE, "There is no such connection"),
    (ids.ACTION_REMOVE, "There is no such connection"),
    (ids.ACTION_APPROVE, "no longer exists"),
    (ids.ACTION_REJECT, "no longer exists"),
    (ids.ACTION_APPROVE_ROTATION, "no longer exists"),
    (ids.ACTION_REJECT_ROTATION, "no longer exists"),
]


def test_ids_that_are_not_ids_are_answered_plainly_and_change_nothing(world: World) -> None:
    before = rows(world)
    for action_id, expected in IDS_TAKEN_BY:
        for value in malformed_ids(world):
            answer_to_click(world, world.ours, action_id, value, user=ADMIN, expected=expected)
    assert rows(world) == before


# --- payloads meant for another installation ------------------------------------------------------------


def refused_without_a_trace(bot: Bot, send: Callable[[], httpx.Response], why: str) -> None:
    """``send`` is refused with 403 and one WARNING naming ``why``: no Slack call, no row changed."""
    before, calls, log = rows_of(bot), len(bot.slack.calls), len(bot.log_text())
    assert send().status_code == 403
    assert bot.slack.calls[calls:] == [] and bot.slack.hooks == []
    assert rows_of(bot) == before
    [line] = [line for line in bot.log_text()[log:].splitlines() if " WARNING " in line]
    assert why in line, line


def rows_of(bot: Bot) -> str:
    return dump_database_text(bot.database_url)


def test_a_single_workspace_bot_refuses_payloads_from_any_other_workspace(
    bot: Bot, fake_slack: FakeSlack
) -> None:
    """One bot token belongs to one workspace: the app installed elsewhere too (Slack signs every
    workspace's requests with the app's one secret) must not hand the bot another's clicks."""
    with SlackSender(bot.url, signing_secret=SIGNING_SECRET, fake=fake_slack, team_id=OTHER_TEAM) as other:
        why = f"workspace {OTHER_TEAM}, not {TEAM_ID}"
        refused_without_a_trace(bot, lambda: other.command("list"), why)
        refused_without_a_trace(bot, lambda: other.command("connect confluent_cloud"), why)
        refused_without_a_trace(
            bot, lambda: click(bot, other, ids.ACTION_REMOVE, "c" * 26, user=OTHER_ADMIN, surface="home"), why
        )
        refused_without_a_trace(
            bot, lambda: other.event({"type": "app_home_opened", "user": OTHER_ADMIN}), why
        )
        # An organisation's payload naming this workspace is refused too when the token is not its.
        other.team_id, other.enterprise_id = TEAM_ID, ORG
        refused_without_a_trace(bot, lambda: other.command("list"), f"organisation {ORG}")
    # The bot's own workspace is still served.
    assert bot.sender.command("list").status_code == 200


def test_an_org_wide_bot_refuses_other_organisations_and_other_apps(world: World) -> None:
    bot = world.bot
    with SlackSender(bot.url, signing_secret=SIGNING_SECRET, fake=bot.slack) as stranger:
        stranger.enterprise_id = "E0ELSEWHERE"
        refused_without_a_trace(bot, lambda: stranger.command("list"), f"organisation E0ELSEWHERE, not {ORG}")
        stranger.enterprise_id = None
        refused_without_a_trace(bot, lambda: stranger.command("list"), f"organisation None, not {ORG}")
    payload = in_org(
        {**slash_command_fields(world), "api_app_id": "A0SOMEOTHER"},
        ORG,
    )
    refused_without_a_trace(
        bot,
        lambda: world.ours.post_raw(form_body(payload), sign(form_body(payload), SIGNING_SECRET)),
        "app A0SOMEOTHER",
    )


def slash_command_fields(world: World) -> dict[str, str]:
    return slash_command(
        "list",
        team_id=TEAM_ID,
        user_id=OWNER,
        channel_id=CHANNEL_ID,
        response_url=world.bot.slack.issue_response_url(
            channel_id=CHANNEL_ID, user_id=OWNER, kind="commands"
        ),
        trigger_id=world.bot.slack.issue_trigger_id(),
    )


# --- settings changed in the database --------------------------------------------------------------

abot = test_approvals.abot
approvals_env = test_approvals.approvals_env


def repoint(database_url: str, connection_id: str, config: dict[str, str]) -> None:
    """What someone who can write to the database, but has no master key, would do."""

    async def write() -> None:
        db = Database.from_url(database_url)
        try:
            async with db.transaction() as tx:
                statement = update(Connection).where(Connection.id == connection_id).values(config=config)
                await tx.session.execute(statement)
        finally:
            await db.dispose()

    asyncio.run(write())


def test_a_connection_repointed_in_the_database_is_not_used_and_says_so(
    abot: Bot, cloud_key: CloudKey
) -> None:
    connection_id = active_connection(abot, cloud_key)
    repoint(
        abot.database_url, connection_id, {"rest_endpoint": "https://evil.example", "cluster_id": "lkc-evil1"}
    )
    requests_before = len(abot.confluent.requests)
    replies_before = len(replies_in_channel(abot, REQUESTER))

    abot.sender.command(f"test {NAME}", user_id=REQUESTER)

    def result() -> list[str]:
        return [r for r in replies_in_channel(abot, REQUESTER)[replies_before:] if "Re-testing" not in r]

    wait_until(result, what="the re-test result")
    [reply] = result()
    assert "do not match its sealed credential" in reply and "nothing was sent" in reply
    assert len(abot.confluent.requests) == requests_before  # the credential went nowhere
    warnings = [line for line in abot.log_text().splitlines() if "WARNING" in line]
    assert any("does not match its sealed credential; it was not used" in line for line in warnings)
    [connection] = [c for c in stored(abot.database_url)["connections"] if c.id == connection_id]
    assert connection.health is Health.FAILING
