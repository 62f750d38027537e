"""No secret leaks, on any journey, for any provider, on either database.

Each case starts a fresh bot with every logger at DEBUG (SQLAlchemy's statements with their
parameters, httpx, httpcore, Bolt, the Slack SDK, psycopg, aiosqlite, asyncio, uvicorn), runs one
user journey, stops the bot, and then searches everything it emitted: every log line, every Slack
Web API call and response_url post, every view and message, every answer it gave Slack, and the
database (every row; for SQLite also the raw file, write-ahead log and journal, both while the bot
ran and after it stopped). The search looks for every secret of the journey's credentials, and
for the JWTs the bot minted from a key pair, as they are and URL-, form- and JSON-encoded, and in
base64 at each alignment inside a larger blob (see ``tests.e2e.test_security.find_leaks``).

The fakes' own records of what they were sent are not searched: the provider is the one place a
credential must go. What the bot logged about those requests is.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

import bot.app as bot_app
import bot.store.db as store_db
from bot import ids
from bot.domain import Health, RotationStatus, Status
from bot.logs import SLACK_LOGGER, slack_logger
from bot.providers.registry import PROVIDERS
from tests.e2e.conftest import SIGNING_SECRET, Bot
from tests.e2e.helpers import stored, visible_text, wait_for_result, wait_until
from tests.e2e.journeys_support import (
    Credential,
    Driver,
    approval_request,
    command,
    journey_bot,
    open_driver,
    open_form_from_card,
)
from tests.e2e.test_approvals import ADMIN, REQUESTER, audit, click, dms_to
from tests.e2e.test_rotation import (
    connection,
    open_rotation_by_button,
    rotation_request_calls,
    rotation_status,
    status_reply,
    updated_in_place,
)
from tests.e2e.test_security import base64_cores, everything_the_bot_emitted, find_leaks
from tests.fakes.confluent_api import FakeConfluent, new_api_key, new_api_secret
from tests.fakes.slack_api import FakeSlack
from tests.support.databases import raw_sqlite_bytes, sqlite_path
from tests.support.private_postgres import private_postgres_server as private_postgres_server
from tests.support.slack_requests import CHANNEL_ID, find_action, payload_body, sign, view_submission

# Driver -> the provider it drives: each provider, with Snowflake's two ways in (an encrypted key
# with its passphrase, and a programmatic access token).
VARIANTS = {
    "confluent_cloud": "confluent_cloud",
    "snowflake_passphrase": "snowflake",
    "snowflake_token": "snowflake",
    "redshift": "redshift",
}
ANSWERS = "answers to Slack"
RUNNING_FILE = "database file while running"

# Loggers set to DEBUG by name, on top of every logger that exists: these are the ones whose
# production level is raised (SQLAlchemy and psycopg set WARNING on import, the bot sets Bolt's
# to WARNING, uvicorn's test servers stop theirs from propagating) or that matter most.
NAMED_LOGGERS = (
    "sqlalchemy",
    "sqlalchemy.engine",
    "sqlalchemy.engine.Engine",
    "sqlalchemy.pool",
    "httpx",
    "httpcore",
    "slack_bolt",
    "slack_sdk",
    SLACK_LOGGER,
    f"{SLACK_LOGGER}.web",
    "psycopg",
    "aiosqlite",
    "aiohttp",
    "asyncio",
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "bot",
)


# --- every logger at DEBUG ---------------------------------------------------------------------------


class DebugEverywhere:
    """Puts every logger at DEBUG, enabled and propagating to the capturing root handler, and
    puts them back afterwards."""

    def __init__(self) -> None:
        self.saved = {name: (lg.level, lg.propagate, lg.disabled) for name, lg in self._loggers()}

    @staticmethod
    def _loggers() -> list[tuple[str, logging.Logger]]:
        names = set(NAMED_LOGGERS) | set(logging.root.manager.loggerDict)
        return [(name, logging.getLogger(name)) for name in sorted(names)]

    def lower(self) -> None:
        for name, logger in self._loggers():
            if name in NAMED_LOGGERS or logger.level > logging.DEBUG:
                logger.setLevel(logging.DEBUG)
            logger.propagate, logger.disabled = True, False

    def stragglers(self) -> list[str]:
        """Loggers whose DEBUG records would not reach the captured log."""
        return [
            name
            for name, logger in self._loggers()
            if not logger.isEnabledFor(logging.DEBUG) or not _reaches_root(logger)
        ]

    def restore(self) -> None:
        for name, logger in self._loggers():
            level, propagate, disabled = self.saved.get(name, (logging.NOTSET, logger.propagate, False))
            logger.setLevel(level)
            logger.propagate, logger.disabled = propagate, disabled


def _reaches_root(logger: logging.Logger) -> bool:
    current: logging.Logger | None = logger
    while current is not None and current is not logging.root:
        if current.disabled or not current.propagate:
            return False
        current = current.parent
    return True


@pytest.fixture
def debug_everywhere(
    captured_logs: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> Iterator[DebugEverywhere]:
    levels = DebugEverywhere()

    def slack_logger_at_debug() -> logging.Logger:
        # Production keeps Bolt at WARNING; here Bolt, and each logger it derives, says everything.
        logger = slack_logger()
        logger.setLevel(logging.DEBUG)
        return logger

    def engine_showing_parameters(*args: Any, **kwargs: Any) -> Any:
        # Production hides statement parameters too; shown, they are searched as well: a secret
        # handed to the database in the clear would be found even if it were never stored.
        return create_async_engine(*args, **{**kwargs, "hide_parameters": False})

    monkeypatch.setattr(bot_app, "slack_logger", slack_logger_at_debug)
    monkeypatch.setattr(store_db, "create_async_engine", engine_showing_parameters)
    levels.lower()
    try:
        yield levels
    finally:
        levels.restore()


# --- what the bot answered Slack ---------------------------------------------------------------------


def record_answers(bot: Bot) -> list[str]:
    """Every HTTP answer the bot gives to Slack's requests from now on (status, headers, body)."""
    answers: list[str] = []

    def keep(response: httpx.Response) -> None:
        response.read()
        answers.append(f"{response.status_code} {dict(response.headers)} {response.text}")

    bot.sender.http.event_hooks["response"].append(keep)
    return answers


def sqlite_file_text(bot: Bot) -> str:
    if not bot.database_url.startswith("sqlite"):
        return ""
    return raw_sqlite_bytes(sqlite_path(bot.database_url)).decode("latin-1")


def outputs_of(bot: Bot, answers: list[str], while_running: str) -> dict[str, str]:
    """Everything the bot emitted, by where; the log is read before the database dump, whose own
    queries the test process logs."""
    logs = bot.log_text()
    outputs = {**everything_the_bot_emitted(bot), "logs": logs, ANSWERS: "\n".join(answers)}
    if while_running:
        outputs[RUNNING_FILE] = while_running
    return outputs


# --- the journeys ------------------------------------------------------------------------------------


class Journey:
    """One user journey against a fresh bot; remembers every credential it typed."""

    def __init__(self, bot: Bot, driver: Driver) -> None:
        self.bot, self.driver = bot, driver
        self.provider = next(p for p in PROVIDERS if p.key == driver.key).from_environment({})
        self.name = f"Leak check {self.provider.title}"
        self.credentials: list[Credential] = []

    def secrets(self) -> dict[str, str]:
        found = dict(self.driver.secrets_sent())
        for n, credential in enumerate(self.credentials):
            found.update({f"{label} of credential #{n + 1}": v for label, v in credential.secrets.items()})
        return found

    def basic_auth(self) -> list[tuple[str, str]]:
        return [c.basic_auth for c in self.credentials if c.basic_auth]

    def credential(self, *, working: bool = True) -> Credential:
        made = self.driver.new_credential() if working else self.driver.wrong_credential()
        self.credentials.append(made)
        return made

    def submit_new(self, credential: Credential) -> tuple[str, str]:
        """Fill the provider's form from its card; the modal's id and the result it shows."""
        view_id = open_form_from_card(self.bot, self.driver.key)
        response = self.bot.sender.submit(view_id, {ids.BLOCK_NAME: self.name, **credential.values})
        assert response.json().get("response_action") == "update", response.text
        return view_id, visible_text(wait_for_result(self.bot.slack, view_id))

    def create(self) -> str:
        """A verified connection awaiting approval; its id."""
        _, result = self.submit_new(self.credential())
        assert "awaits an admin's approval" in result, result
        [row] = [c for c in stored(self.bot.database_url)["connections"] if c.name == self.name]
        assert row.status == Status.PENDING_APPROVAL
        return str(row.id)

    def activate(self) -> str:
        """A connection an admin approved; its id."""
        connection_id = self.create()
        dms = len(dms_to(self.bot, REQUESTER))
        click(self.bot, ids.ACTION_APPROVE, connection_id, approval_request(self.bot, connection_id), ADMIN)
        wait_until(lambda: connection(self.bot, connection_id).status == Status.ACTIVE, what="the approval")
        wait_until(lambda: len(dms_to(self.bot, REQUESTER)) > dms, what="the approval's DM")
        return connection_id

    def retest(self) -> str:
        return command(self.bot, f"test {self.name}", lambda r: "works" in r or "failing" in r, "the re-test")


def create_ok(journey: Journey) -> None:
    journey.create()


def create_failed(journey: Journey) -> None:
    view_id, result = journey.submit_new(journey.credential(working=False))
    assert "awaits an admin's approval" not in result, result
    # Try again brings the form back (name kept, secrets not), and the user gives up.
    assert journey.bot.sender.action(ids.ACTION_TRY_AGAIN, on=view_id).status_code == 200
    wait_for_result(journey.bot.slack, view_id, count=2)
    assert stored(journey.bot.database_url)["credentials"] == []


def approve(journey: Journey) -> None:
    journey.activate()


def reject(journey: Journey) -> None:
    bot = journey.bot
    connection_id = journey.create()
    request = approval_request(bot, connection_id)
    opened = len(bot.slack.calls_to("views.open"))
    click(bot, ids.ACTION_REJECT, connection_id, request, ADMIN)
    modal_id = str(bot.slack.wait_for("views.open", count=opened + 1)[-1].response["view"]["id"])
    answer = bot.sender.submit(modal_id, {ids.BLOCK_REASON: "Use the team's service account"}, user_id=ADMIN)
    assert answer.status_code == 200
    wait_until(lambda: connection(bot, connection_id).status == Status.REJECTED, what="the rejection")
    wait_until(lambda: dms_to(bot, REQUESTER), what="the requester's DM")
    assert stored(bot.database_url)["credentials"] == []


def retest_ok(journey: Journey) -> None:
    connection_id = journey.activate()
    assert "works" in journey.retest()
    assert connection(journey.bot, connection_id).health == Health.HEALTHY


def retest_failing(journey: Journey) -> None:
    bot = journey.bot
    connection_id = journey.activate()
    journey.driver.break_(journey.credentials[-1])
    assert "failing" in journey.retest()
    wait_until(lambda: connection(bot, connection_id).alert_ts is not None, what="the alert")
    # Again with the Re-test button on the status reply, whose result goes to its response_url.
    clicked = bot.sender.action(
        ids.ACTION_RETEST, connection_id, on=status_reply(bot, journey.name, REQUESTER), user_id=REQUESTER
    )
    assert clicked.status_code == 200 and bot.sender.last_response_url
    url = bot.sender.last_response_url
    wait_until(
        lambda: any("failing" in json.dumps(h.body) for h in bot.slack.hooks_to(url)), what="the result"
    )


def rotate(journey: Journey) -> None:
    bot = journey.bot
    connection_id = journey.activate()
    view_id = open_rotation_by_button(
        bot, connection_id, status_reply(bot, journey.name, REQUESTER), REQUESTER
    )
    requests_before = len(rotation_request_calls(bot))
    answer = bot.sender.submit(view_id, journey.credential().values)
    assert answer.json().get("response_action") == "update", answer.text
    assert "await an admin's approval" in visible_text(wait_for_result(bot.slack, view_id))
    wait_until(lambda: len(rotation_request_calls(bot)) > requests_before, what="the rotation request")
    request = bot.slack.message_of(rotation_request_calls(bot)[-1])
    _, button = find_action(request.blocks, ids.ACTION_APPROVE_ROTATION)
    click(bot, ids.ACTION_APPROVE_ROTATION, button["value"], request, ADMIN)
    assert "Approved" in updated_in_place(bot, request)
    assert rotation_status(bot, button["value"]) is RotationStatus.APPROVED
    assert "works" in journey.retest()


def remove(journey: Journey) -> None:
    bot = journey.bot
    connection_id = journey.activate()
    prompt_text = command(bot, f"remove {journey.name}", lambda r: "Remove" in r, "the removal prompt")
    [prompt] = [
        m
        for m in bot.slack.visible_messages(CHANNEL_ID, REQUESTER)
        if m.ephemeral and visible_text(m.blocks) == prompt_text
    ]
    click(bot, ids.ACTION_REMOVE, connection_id, prompt, REQUESTER)
    wait_until(lambda: connection(bot, connection_id).status == Status.REVOKED, what="the removal")
    assert [e.actor for e in audit(bot, "connection.removed")] == [REQUESTER]
    assert stored(bot.database_url)["credentials"] == []


def forged(journey: Journey) -> None:
    """A view submission carrying a real credential, signed with the wrong secret, signed too
    long ago, and not signed at all: each is refused and nothing of it is kept."""
    bot = journey.bot
    view_id = open_form_from_card(bot, journey.driver.key)
    payload = view_submission(
        bot.slack.open_view(view_id),
        {ids.BLOCK_NAME: journey.name, **journey.credential().values},
        user_id=bot.sender.user_id,
        team_id=bot.sender.team_id,
    )
    body = payload_body(payload)
    for headers in (
        sign(body, "not-the-signing-secret"),
        sign(body, SIGNING_SECRET, timestamp=int(time.time()) - 301),
        {"content-type": "application/x-www-form-urlencoded"},
    ):
        assert bot.sender.post_raw(body, headers).status_code == 401
    assert stored(bot.database_url)["connections"] == []


JOURNEYS: dict[str, Callable[[Journey], None]] = {
    "create_ok": create_ok,
    "create_failed": create_failed,
    "approve": approve,
    "reject": reject,
    "retest_ok": retest_ok,
    "retest_failing": retest_failing,
    "rotate": rotate,
    "remove": remove,
    "forged": forged,
}


# --- the matrix --------------------------------------------------------------------------------------


@pytest.fixture(params=list(VARIANTS))
def driver(request: pytest.FixtureRequest, fake_confluent: tuple[FakeConfluent, str]) -> Iterator[Driver]:
    with open_driver(request.param, request, fake_confluent) as opened:
        assert opened.key == VARIANTS[request.param]
        yield opened


@contextmanager
def capturing_bot(
    driver: Driver,
    fake_slack: FakeSlack,
    fake_confluent: tuple[FakeConfluent, str],
    database_url: str,
    logs: io.StringIO,
    levels: DebugEverywhere,
) -> Iterator[tuple[Bot, list[str]]]:
    """A fresh bot whose every log line, Slack call and answer is kept; stopped on leaving."""
    with journey_bot(driver, fake_slack, fake_confluent, database_url, logs) as running:
        # The bot's server configured uvicorn's logging as it started: lower everything again.
        levels.lower()
        yield running, record_answers(running)


def assert_the_capture_saw_everything(logs: str, driver: Driver, journey: str) -> None:
    """The search has something to search: each library logged, SQL with its parameters."""
    for logger in ("sqlalchemy.engine.Engine", SLACK_LOGGER, f"{SLACK_LOGGER}.web", "httpx", "httpcore"):
        assert f" DEBUG {logger}" in logs or f" INFO {logger}:" in logs, f"nothing logged by {logger}"
    assert re.search(r"sqlalchemy\.engine\.Engine: \[(generated in|cached since) [^\]]*\] [({]'", logs)
    assert "hide_parameters" not in logs
    if driver.url and journey != "forged":
        pattern = rf"HTTP Request: \w+ {re.escape(driver.url)}"
        assert re.search(pattern, logs), "no request to the provider was logged"


@pytest.mark.parametrize("journey", list(JOURNEYS))
def test_no_secret_shows_anywhere_after_a_journey(
    journey: str,
    driver: Driver,
    fake_slack: FakeSlack,
    fake_confluent: tuple[FakeConfluent, str],
    migrated_database_url: str,
    captured_logs: io.StringIO,
    debug_everywhere: DebugEverywhere,
) -> None:
    with capturing_bot(
        driver, fake_slack, fake_confluent, migrated_database_url, captured_logs, debug_everywhere
    ) as (running, answers):
        run = Journey(running, driver)
        JOURNEYS[journey](run)
        while_running = sqlite_file_text(running)
    assert debug_everywhere.stragglers() == []

    outputs = outputs_of(running, answers, while_running)
    assert_the_capture_saw_everything(outputs["logs"], driver, journey)
    assert run.secrets()
    leaks = find_leaks(outputs, run.secrets(), run.basic_auth())
    assert not leaks, "secrets showed:\n" + "\n".join(leaks)


# --- the search has teeth ----------------------------------------------------------------------------


def test_every_provider_is_in_the_matrix() -> None:
    assert set(VARIANTS.values()) == {p.key for p in PROVIDERS}


@pytest.mark.parametrize("wrapped", [False, True], ids=["one line", "wrapped"])
@pytest.mark.parametrize("urlsafe", [False, True], ids=["standard", "urlsafe"])
@pytest.mark.parametrize("before", range(6))
def test_a_secret_is_found_inside_a_larger_base64_blob_at_any_alignment(
    before: int, urlsafe: bool, wrapped: bool
) -> None:
    value = secrets.token_urlsafe(24)
    for after in range(4):
        blob = secrets.token_bytes(before) + value.encode() + secrets.token_bytes(after)
        encoded = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(blob).decode()
        if wrapped:
            encoded = "\n".join(encoded[i : i + 64] for i in range(0, len(encoded), 64))
        assert find_leaks({"blob": json.dumps(encoded)}, {"value": value}) != [], (before, after)


def test_base64_of_other_bytes_is_not_taken_for_a_secret() -> None:
    value = secrets.token_urlsafe(24)
    noise = base64.b64encode(secrets.token_bytes(200_000)).decode()
    assert find_leaks({"noise": noise}, {"value": value}) == []
    alignments = set(base64_cores(value.encode()).values())
    assert alignments >= {"base64 at offset 0", "base64 at offset 1", "base64 at offset 2"}


def plant(bot: Bot) -> dict[str, str]:
    """One made-up secret put in each kind of output, each in another encoding; where -> secret."""
    # Hex: a name is shown as literal text, where a leading or trailing "_" of a URL-safe token would be
    # drawn as a look-alike and the search would miss an echo that is there.
    planted = {where: secrets.token_hex(16) for where in ("logs", "slack", "hook", "view", "db", "name")}
    # A log line through the production handler and its filter, base64 at an awkward alignment.
    blob = base64.b64encode(b"x" + planted["logs"].encode() + b"yz").decode()
    logging.getLogger("bot.services.connections").debug("planted blob %s", blob)
    token = {"Authorization": f"Bearer {bot.slack.bot_token}"}
    posted = httpx.post(
        f"{bot.slack.api_url}chat.postMessage",
        headers=token,
        json={"channel": CHANNEL_ID, "text": f"planted {planted['slack']}%"},
    )
    assert posted.json()["ok"], posted.text
    hook = bot.slack.issue_response_url(channel_id=CHANNEL_ID, user_id=REQUESTER)
    assert httpx.post(hook, json={"text": json.dumps({"nested": planted["hook"]})}).status_code == 200
    wrapped = base64.urlsafe_b64encode(b"ab" + planted["view"].encode()).decode()
    home = {"type": "home", "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": wrapped}}]}
    published = httpx.post(
        f"{bot.slack.api_url}views.publish", headers=token, json={"user_id": REQUESTER, "view": home}
    )
    assert published.json()["ok"], published.text
    engine = create_engine(store_db.sync_url(bot.database_url), poolclass=NullPool)
    try:
        with engine.begin() as db:
            db.execute(text("CREATE TABLE planted (value TEXT)"))
            db.execute(text("INSERT INTO planted VALUES (:value)"), {"value": planted["db"]})
    finally:
        engine.dispose()
    # The bot echoes a connection's name in the "Verifying…" view it answers a submission with.
    view_id = open_form_from_card(bot, "confluent_cloud")
    unknown = {"api_key": new_api_key(), "api_secret": new_api_secret()}
    bot.sender.submit(view_id, {ids.BLOCK_NAME: planted["name"], **unknown})
    wait_for_result(bot.slack, view_id)
    return planted


@pytest.fixture
def confluent(fake_confluent: tuple[FakeConfluent, str], request: pytest.FixtureRequest) -> Iterator[Driver]:
    with open_driver("confluent_cloud", request, fake_confluent) as opened:
        yield opened


def test_the_search_finds_a_secret_planted_in_each_kind_of_output(
    confluent: Driver,
    fake_slack: FakeSlack,
    fake_confluent: tuple[FakeConfluent, str],
    migrated_database_url: str,
    captured_logs: io.StringIO,
    debug_everywhere: DebugEverywhere,
) -> None:
    with capturing_bot(
        confluent, fake_slack, fake_confluent, migrated_database_url, captured_logs, debug_everywhere
    ) as (running, answers):
        planted = plant(running)
        while_running = sqlite_file_text(running)
    outputs = outputs_of(running, answers, while_running)

    def where(secret: str) -> set[str]:
        return {line.rsplit(" in the ", 1)[1] for line in find_leaks(outputs, {"planted": secret})}

    assert "logs" in where(planted["logs"])
    assert {"slack calls", "messages"} <= where(planted["slack"])
    assert {"response_url posts", "messages"} <= where(planted["hook"])
    assert "views" in where(planted["view"])
    assert ANSWERS in where(planted["name"])
    databases = (
        {"database", "database file", RUNNING_FILE}
        if running.database_url.startswith("sqlite")
        else {"database"}
    )
    assert databases <= where(planted["db"])
