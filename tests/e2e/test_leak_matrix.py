"""No secret leaks, on any journey, for any provider, on either database, with any secret store.

Each case starts a fresh bot with every logger at DEBUG (SQLAlchemy's statements with their
parameters, httpx, httpcore, Bolt, the Slack SDK, psycopg, aiosqlite, asyncio, uvicorn, and the
secret stores' clients: botocore, boto3, urllib3, requests, hvac), runs one user journey, asks
``/healthz``, stops the bot, and then searches everything it emitted: every log line, every Slack
Web API call and response_url post, every view and message, every answer it gave Slack and the
health answer, and the database (every row; for SQLite also the raw file, write-ahead log and
journal, both while the bot ran and after it stopped). The search looks for every secret of the
journey's credentials, and for the JWTs the bot minted from a key pair, as they are and URL-, form-
and JSON-encoded, and in base64 at each alignment inside a larger blob (see
``tests.e2e.test_security.find_leaks``).

The fakes' own records of what they were sent are not searched: the provider is the one place a
credential must go. What the bot logged about those requests is.

The matrix has two parts:

* the credentials kept in the bot's database (``local``): 9 journeys × 4 credential kinds × both
  databases (72 cases);
* the credentials delivered to a secret store: every journey with AWS Secrets Manager (moto's
  server, the bot signing in as the IAM identity that holds exactly ``docs/aws-iam-policy.json``)
  and with Vault (OpenBao's own server, the bot's token holding exactly ``docs/vault-policy.hcl``), on
  SQLite, with fewer credential kinds (32 cases). A store's side of the bot is the same for every
  provider (one JSON object of the provider's fields written, read back and deleted) and for
  either database, which the local part covers for every kind. So: rotate, the journey that makes
  every store call but the delete (the approval's write, a new version over it, re-tests reading
  it back), with all 4 kinds; the other four journeys that approve a credential (approve, re-test
  ok and failing, remove) with the two kinds whose fields differ most in shape: a Confluent key and
  secret (also sent as a Basic auth pair) and a Snowflake encrypted key pair (a multi-line PEM,
  which each JSON encoding escapes again, and its passphrase); the four that never reach a store
  (create ok and failed, reject, forged) with the Confluent key, each proving the store was sent
  nothing. A store case takes about as long as a local one, so with ``-n 2`` these 32 add about
  half again to the file's time; every journey × kind × store (72 cases) would double it.

With a store, the store's values are, like the provider's fake, the one place a credential must
go, and are not searched; what the bot wrote beside them (names, descriptions, tags, custom
metadata) is, as is the bot's own credential for the store. botocore prints request bodies,
``SecretString`` included, at DEBUG; the production handler drops every DEBUG record of the store
clients' loggers (``bot.logs.wire_record_dropped``). Each store case proves the capture still saw
the store's work: the bot's own lines about it, the client's DEBUG records reaching the logging
system (counted ahead of the handler) and none of them in the output, ``/healthz``'s store check,
and the store's own record of what was written (something only after an approval).
``test_a_store_client_debug_line_holding_a_secret_never_reaches_the_output`` shows that such a
line does hold a secret, in a form that masking live secrets would miss.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
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
from bot.logs import SLACK_LOGGER, WIRE_LOGGERS, slack_logger
from bot.providers.registry import PROVIDERS
from bot.redaction import Secret, redact
from bot.stores.aws import AwsSecretsManager
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
from tests.support.moto_server import MotoServer
from tests.support.openbao_server import OpenBao
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
    # The secret stores' clients: botocore prints whole request bodies at DEBUG.
    *WIRE_LOGGERS,
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
        self.approved = False
        """Whether an admin approved a credential: the only way one reaches a secret store."""

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
        self.approved = True
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


# --- the secret stores ------------------------------------------------------------------------------

VAULT_POLICY = Path(__file__).resolve().parents[2] / "docs" / "vault-policy.hcl"
WIRE_DEBUG_LINE = re.compile(rf" DEBUG (?:{'|'.join(map(re.escape, WIRE_LOGGERS))})[.:]")


@dataclass
class StoreUnderTest:
    """A secret store the bot delivers approved credentials to, and how the test looks at it."""

    key: str
    title: str
    prefix: str
    """Every path of this case starts with it: the stores' servers outlive a case."""
    env: dict[str, str]
    own_secrets: dict[str, str]
    """The bot's own credential for the store, by label: searched for like the providers'."""
    client_logger: str
    """The wire logger the store's client library speaks through."""
    written: Callable[[], list[str]]
    """The paths the bot wrote a secret to, as the store itself saw it."""
    metadata: Callable[[], str]
    """What the bot wrote beside the values (names, descriptions, tags, custom metadata): searched."""

    @property
    def template(self) -> str:
        return f"{self.prefix}/{{team}}/{{provider}}/{{name}}"


def case_prefix() -> str:
    # Under connections/, where the documented IAM and Vault policies let the bot write.
    return f"connections/leak-{secrets.token_hex(6)}"


def aws_store(server: MotoServer) -> StoreUnderTest:
    """Moto's server, the bot signing in as the identity that holds exactly the documented policy."""
    prefix = case_prefix()
    admin = server.secrets()

    def listed() -> list[dict[str, Any]]:
        pages = admin.get_paginator("list_secrets").paginate(
            IncludePlannedDeletion=True, Filters=[{"Key": "name", "Values": [prefix + "/"]}]
        )
        return [
            dict(s)
            for page in pages
            for s in page["SecretList"]
            if s.get("Name", "").startswith(prefix + "/")
        ]

    def metadata() -> str:
        return json.dumps([(s["Name"], s.get("Description"), s.get("Tags")) for s in listed()], default=str)

    env = server.environment(server.bot, CONNECTIONS_SECRET_STORE="aws")
    return StoreUnderTest(
        key="aws",
        title="AWS Secrets Manager",
        prefix=prefix,
        env=env,
        own_secrets={"the bot's AWS secret access key": server.bot.secret_access_key},
        client_logger="botocore",
        written=lambda: sorted(s["Name"] for s in listed()),
        metadata=metadata,
    )


def vault_store(server: OpenBao) -> StoreUnderTest:
    """OpenBao's own server (the worker's), the bot's token holding exactly the documented policy."""
    token = server.bot_token
    prefix = case_prefix()

    def written() -> list[str]:
        # As the server itself saw it: its audit log (which keeps no value, only HMACs).
        return sorted(
            {
                entry.path.removeprefix("secret/data/")
                for entry in server.audited()
                if entry.operation in ("create", "update")
                and entry.path.startswith(f"secret/data/{prefix}/")
                and not entry.error
            }
        )

    def metadata() -> str:
        found = []
        for path in written():
            held = server.metadata(path)
            if held is not None:  # a removed connection's metadata is gone
                found.append((path, held.get("custom_metadata")))
        return json.dumps(found)

    return StoreUnderTest(
        key="vault",
        title="Vault",
        prefix=prefix,
        env=server.environment(token, CONNECTIONS_SECRET_STORE="vault"),
        own_secrets={"the bot's Vault token": token},
        client_logger="urllib3",
        written=written,
        metadata=metadata,
    )


@pytest.fixture(params=["aws", "vault"])
def store(request: pytest.FixtureRequest) -> StoreUnderTest:
    if request.param == "aws":
        return aws_store(request.getfixturevalue("aws_server"))
    return vault_store(request.getfixturevalue("openbao_server"))


class WireRecords(logging.Handler):
    """Every record of a store client's wire logger, as it was logged: put first on the root
    logger, it sees each record before the production handler drops or masks it. Its text is
    kept only when asked for (botocore logs a lot)."""

    def __init__(self, *, keep_text: bool = False) -> None:
        super().__init__(logging.DEBUG)
        self.keep_text = keep_text
        self.records: list[tuple[str, int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if _wire(record.name, WIRE_LOGGERS):
            text = record.getMessage() if self.keep_text else ""
            self.records.append((record.name, record.levelno, text))

    def count(self, logger: str, level: int) -> int:
        return sum(1 for name, at, _ in self.records if at == level and _wire(name, (logger,)))

    def text(self, logger: str) -> str:
        assert self.keep_text
        return "\n".join(text for name, _, text in self.records if _wire(name, (logger,)))


def _wire(name: str, loggers: tuple[str, ...]) -> bool:
    return any(name == logger or name.startswith(logger + ".") for logger in loggers)


@contextmanager
def watching_wire_loggers(*, keep_text: bool = False) -> Iterator[WireRecords]:
    watcher = WireRecords(keep_text=keep_text)
    logging.root.handlers.insert(0, watcher)
    try:
        yield watcher
    finally:
        logging.root.removeHandler(watcher)


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
    store: StoreUnderTest | None = None,
) -> Iterator[tuple[Bot, list[str]]]:
    """A fresh bot whose every log line, Slack call and answer is kept; stopped on leaving."""
    extra = {} if store is None else {**store.env, "CONNECTIONS_SECRET_PATH": store.template}
    with journey_bot(driver, fake_slack, fake_confluent, database_url, logs, **extra) as running:
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


def assert_the_capture_saw_the_store(
    logs: str, store: StoreUnderTest, wire: WireRecords, run: Journey
) -> None:
    """The bot worked with the store, its client logged that work at DEBUG, and the handler let
    none of those lines through: what the search then finds absent was there to be found."""
    assert f"approved credentials go to {store.title} at {store.template}" in logs
    assert wire.count(store.client_logger, logging.DEBUG) > 0, f"{store.client_logger} logged nothing"
    assert not WIRE_DEBUG_LINE.search(logs), "a store client's DEBUG line reached the output"
    written = store.written()
    if run.approved:
        assert written, "the approved credential never reached the store"
        assert re.search(rf"request \S+ approved into {store.key}\b", logs)
    else:
        assert written == [], "an unapproved credential reached the store"


def run_journey(
    journey: str,
    driver: Driver,
    fake_slack: FakeSlack,
    fake_confluent: tuple[FakeConfluent, str],
    database_url: str,
    logs: io.StringIO,
    levels: DebugEverywhere,
    store: StoreUnderTest | None = None,
) -> None:
    """One case of the matrix: the journey, then the search of everything the bot emitted."""
    with (
        watching_wire_loggers() as wire,
        capturing_bot(driver, fake_slack, fake_confluent, database_url, logs, levels, store) as (
            running,
            answers,
        ),
    ):
        run = Journey(running, driver)
        JOURNEYS[journey](run)
        health = httpx.get(f"{running.url}/healthz")
        while_running = sqlite_file_text(running)
    assert levels.stragglers() == []

    outputs = outputs_of(running, answers, while_running)
    outputs["health answer"] = health.text
    assert_the_capture_saw_everything(outputs["logs"], driver, journey)
    hidden = run.secrets()
    assert hidden
    if store is not None:
        # The store holds each approved credential, as the provider does: the one place it must
        # go. Everything else the bot put there is searched, and its own credential for the store.
        assert health.json()["secret_store"] == "ok", health.text
        assert_the_capture_saw_the_store(outputs["logs"], store, wire, run)
        outputs["store's names and metadata"] = store.metadata()
        hidden |= store.own_secrets
    leaks = find_leaks(outputs, hidden, run.basic_auth())
    assert not leaks, "secrets showed:\n" + "\n".join(leaks)


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
    run_journey(
        journey, driver, fake_slack, fake_confluent, migrated_database_url, captured_logs, debug_everywhere
    )


REACH_THE_STORE = ("approve", "retest_ok", "retest_failing", "rotate", "remove")
"""The journeys in which an admin approves a credential: the others never send a store anything."""
EVERY_KIND_WITH_A_STORE = "rotate"
"""Approval, a new version written over the bot's last, re-tests reading it back: all the store's calls
but the delete."""
SHAPES_OF_FIELDS = ("confluent_cloud", "snowflake_passphrase")
"""A key and secret (sent as a Basic auth pair), and a multi-line PEM key with its passphrase."""


def kinds_with_a_store(journey: str) -> list[str]:
    """The credential kinds ``journey`` runs with for each store (the module docstring says why)."""
    if journey == EVERY_KIND_WITH_A_STORE:
        return list(VARIANTS)
    if journey in REACH_THE_STORE:
        return list(SHAPES_OF_FIELDS)
    return ["confluent_cloud"]


STORE_CASES = [
    pytest.param(journey, variant, id=f"{variant}-{journey}")
    for journey in JOURNEYS
    for variant in kinds_with_a_store(journey)
]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(("journey", "driver"), STORE_CASES, indirect=["driver"])
def test_no_secret_shows_anywhere_after_a_journey_with_a_secret_store(
    journey: str,
    driver: Driver,
    store: StoreUnderTest,
    fake_slack: FakeSlack,
    fake_confluent: tuple[FakeConfluent, str],
    migrated_database_url: str,
    captured_logs: io.StringIO,
    debug_everywhere: DebugEverywhere,
) -> None:
    run_journey(
        journey,
        driver,
        fake_slack,
        fake_confluent,
        migrated_database_url,
        captured_logs,
        debug_everywhere,
        store,
    )


# --- the search has teeth ----------------------------------------------------------------------------


def test_every_provider_is_in_the_matrix() -> None:
    assert set(VARIANTS.values()) == {p.key for p in PROVIDERS}


def test_every_journey_and_every_credential_kind_meet_each_store() -> None:
    journeys = {param.values[0] for param in STORE_CASES}
    kinds = {param.values[1] for param in STORE_CASES}
    assert journeys == set(JOURNEYS) and kinds == set(VARIANTS)
    assert set(REACH_THE_STORE) < set(JOURNEYS)


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


def test_a_store_client_debug_line_holding_a_secret_never_reaches_the_output(
    aws_server: MotoServer, captured_logs: io.StringIO, debug_everywhere: DebugEverywhere
) -> None:
    """botocore at DEBUG prints each request's body, ``SecretString`` and all, escaped past what
    the redaction filter recognises: the handler must drop such a line, not hope to mask it."""
    first, second = secrets.token_hex(16), secrets.token_hex(16)
    # Two lines, as a PEM key has: escaped once by the store and again by botocore, the value as a
    # whole no longer shows, while each line does.
    planted = Secret(f"{first}\n{second}")
    hidden = {"the planted secret's first line": first, "its second line": second}
    store = AwsSecretsManager.from_environment(aws_server.environment(aws_server.bot))
    path = f"{case_prefix()}/T0PLANTED/confluent_cloud/planted"

    async def write() -> None:
        try:
            fields: dict[str, str | Secret] = {"api_key": "PLANTEDKEY0001", "api_secret": planted}
            await store.write(path, fields, token=str(uuid.uuid4()), replaces=None, metadata={})
        finally:
            await store.close()

    with watching_wire_loggers(keep_text=True) as wire:
        asyncio.run(write())
        # The same loggers' INFO lines do reach the output: the handler was listening.
        logging.getLogger("botocore.endpoint").info("botocore INFO goes through")

    body_lines = wire.text("botocore.endpoint")
    assert aws_server.secrets().describe_secret(SecretId=path)["Name"] == path
    assert find_leaks({"botocore's DEBUG lines": body_lines}, hidden), "botocore printed no body"
    # Masking live secrets, all that protects other loggers, would have let the lines through.
    assert find_leaks({"botocore's DEBUG lines, masked": redact(body_lines)}, hidden)
    logs = captured_logs.getvalue()
    assert " INFO botocore.endpoint: botocore INFO goes through" in logs
    assert not WIRE_DEBUG_LINE.search(logs)
    assert find_leaks({"logs": logs}, hidden) == []
