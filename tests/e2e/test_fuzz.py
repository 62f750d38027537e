"""Property-based fuzzing of every text the bot accepts, sent as signed HTTP to the real app.

The texts: slash-command arguments (every sub-command and garbage), every field of each provider's
create form, the rotation form, both reject-reason modals, the button ``value`` of every action id
and the ``private_metadata`` of every view callback. They are any Unicode (surrogates cannot be
sent in JSON), control characters, up to 3,000 characters (Slack's plain_text_input maximum),
Slack markup (``<!channel>``, ``<@U123>``, ``<#C123>``, ``<!subteam^S1>``, ``<https://evil|click>``,
``&lt;`` entities, ``*_~`>``, bare URLs, domains and ``@here``), JSON fragments, newline floods and
right-to-left overrides.

For every input:

* Slack gets its 200 (and an answer it accepts: the fake refuses malformed Block Kit);
* no log line says "unhandled error", ERROR or carries a traceback;
* every mrkdwn text the bot sends (acks, response_url posts, chat and views calls) holds no markup
  that came from user input: each ``<`` opens one of the bot's own mentions of a real user, a date
  or the admin channel, each ``&`` starts ``&amp;``, ``&lt;`` or ``&gt;``, and ``>`` only opens a
  quote at the start of a line; no ``*bold*``, ``_it_``, ``~gone~`` or `` `code` `` typed by a user
  formats, no URL, domain, e-mail, ``@here`` or ``#general`` typed by one is left whole, and every
  mrkdwn object is ``verbatim`` (``tests.support.block_text.markup_problems``);
* the answer is the specific one for that input (the help for an unknown sub-command, the inline
  error under the field for a bad field, "no connection named …"), never "something went wrong".

One bot per database serves the whole module (starting one per example would be most of the run).
Examples are told apart by the Slack calls, response_url posts and log lines that follow their
start. Commands and clicks run in workspaces of their own, where no connection exists (the bot
is installed org-wide, so every workspace of the organisation reaches it); properties
that go through a modal share the fake Slack's workspace, each example with a name of its own.
The number of examples each property ran is printed when the module ends, per database.
"""

from __future__ import annotations

import asyncio
import copy
import io
import json
import logging
import re
import secrets
import unicodedata
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import psycopg
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from psycopg import sql
from sqlalchemy import URL, update

from bot import ids
from bot.crypto import Cipher, MasterKey
from bot.domain import NAME_MAX_LENGTH, RotationStatus, Status
from bot.logs import configure_logging
from bot.payloads import FormDraft, parse_name
from bot.providers.registry import PROVIDERS
from bot.settings import Settings
from bot.store import Connection, Database, Rotation
from bot.store.migrate import upgrade_to_head
from tests.e2e.conftest import SIGNING_SECRET, Bot, bot_env, running_bot
from tests.e2e.helpers import wait_until
from tests.fakes.confluent_api import FakeConfluent, new_api_key, new_api_secret
from tests.fakes.slack_api import Call, FakeSlack, Hook
from tests.fakes.snowflake_api import FakeSnowflake
from tests.support.block_text import markup_problems, user_formatting_or_links, visible_text
from tests.support.processes import refused_port
from tests.support.seeding import Seed, seed_connections
from tests.support.servers import serve_asgi
from tests.support.slack_requests import (
    CHANNEL_ID,
    TEAM_ID,
    USER_ID,
    SlackSender,
    block_actions_in_view,
    block_actions_on_message,
    sign,
    view_submission,
)

pytestmark = pytest.mark.filterwarnings(
    # The served bot runs in this process and its scheduler draws jitter from `random` on its own
    # thread; Hypothesis cannot tell that from a strategy using `random` and warns at random.
    "ignore:Do not use the `random` module inside strategies:hypothesis.errors.HypothesisDeprecationWarning"
)

ADMIN = "U0ADMIN0001"
FUZZ_ORG = "E0FUZZORG01"
"""The bot is installed org-wide on this organisation, so each property's workspace reaches it."""
ADMIN_CHANNEL = "C0ADMINS01"
PROVIDER_KEYS = [provider.key for provider in PROVIDERS]
WAIT = 10.0
"""Seconds to wait for an answer: generous, since other test runs share the machine."""

# --- what counts as safe, specific output --------------------------------------------------------------

REAL_USERS = frozenset({USER_ID, ADMIN})
"""The users these properties act as: the only ones the bot may mention."""
_OWN_MARKUP = (
    r"<!date\^\d+\^[^|<>]*\|[^<>]*>"  # blocks.text.slack_date
    rf"|<#{ADMIN_CHANNEL}>"
)
_BAD_AMPERSAND = re.compile(r"&(?!amp;|lt;|gt;)")
GENERIC_FAILURE = "Something went wrong"
"""How every catch-all failure message starts; never the answer to a bad input."""

MESSAGE_METHODS = frozenset({"chat.postMessage", "chat.postEphemeral", "chat.update"})
VIEW_METHODS = frozenset({"views.open", "views.push", "views.update", "views.publish"})


def stray_markup(text: str, users: frozenset[str] = REAL_USERS) -> list[str]:
    """The pieces of a mrkdwn text that Slack would read as markup the bot did not write itself:
    an angle-bracket sequence other than its dates and its mentions of ``users`` (real users, who
    acted), an ``&`` that does not start an entity, a ``>`` anywhere but at the start of a line
    (a quote), and formatting or a link that the fuzzers' own markup made."""
    mentions = "|".join(re.escape(f"<@{user}>") for user in sorted(users))
    rest = re.sub(f"{mentions}|{_OWN_MARKUP}", "", text)
    found = re.findall(r"<[^>\n]{0,30}>?", rest)
    found += [rest[m.start() : m.start() + 12] for m in _BAD_AMPERSAND.finditer(rest)]
    found += user_formatting_or_links(rest)
    for line in rest.split("\n"):
        if ">" in (line[1:] if line.startswith(">") else line):
            found.append(line[:60])
    return found


def mrkdwn_texts(payload: Any, *, top: bool = True) -> Iterator[str]:
    """Every text Slack parses as mrkdwn in a message or view payload: mrkdwn text objects
    (sections, their fields, context elements, confirm dialogs) and a message's top-level ``text``
    (its notification fallback, parsed like mrkdwn)."""
    if isinstance(payload, dict):
        if top and isinstance(payload.get("text"), str) and payload.get("mrkdwn") is not False:
            yield payload["text"]
        if payload.get("type") == "mrkdwn" and isinstance(payload.get("text"), str):
            yield payload["text"]
        for key, value in payload.items():
            if key not in ("private_metadata", "value") and not isinstance(value, str):
                yield from mrkdwn_texts(value, top=False)
    elif isinstance(payload, list):
        for item in payload:
            yield from mrkdwn_texts(item, top=False)


@dataclass
class Since:
    """What the bot did from one moment on: Slack calls, response_url posts and log lines."""

    bot: Bot
    calls_before: int
    hooks_before: int
    log_before: int
    users: frozenset[str] = REAL_USERS
    """The real users acting meanwhile, whom the bot may mention."""

    @classmethod
    def now(cls, bot: Bot, users: frozenset[str] = REAL_USERS) -> Since:
        return cls(bot, len(bot.slack.calls), len(bot.slack.hooks), len(bot.log_text()), users)

    def calls(self, method: str | None = None) -> list[Call]:
        new = self.bot.slack.calls[self.calls_before :]
        return [c for c in new if method is None or c.method == method]

    def hooks(self, response_url: str | None = None) -> list[Hook]:
        new = self.bot.slack.hooks[self.hooks_before :]
        if response_url is None:
            return new
        path = httpx.URL(response_url).path
        return [h for h in new if h.path == path]

    def logs(self) -> str:
        return self.bot.log_text()[self.log_before :]

    def sent(self) -> list[tuple[str, dict[str, Any]]]:
        """Every message and view the bot sent to Slack since, with where it went."""
        out: list[tuple[str, dict[str, Any]]] = []
        for call in self.calls():
            if call.method in MESSAGE_METHODS:
                out.append((call.method, call.body))
            elif call.method in VIEW_METHODS and isinstance(call.body.get("view"), dict):
                out.append((call.method, {"view": call.body["view"]}))
        out += [("response_url", hook.body) for hook in self.hooks()]
        return out

    def shown(self) -> list[str]:
        """What the user could read in everything sent since, one entry per message or view."""
        return [visible_text(payload) for _, payload in self.sent()]

    def wait_for_text(self, fragment: str, *, what: str) -> None:
        """Wait until something sent since shows ``fragment`` (or a generic failure, which
        :func:`assert_answered` then reports)."""
        wait_until(
            lambda: any(fragment in t or GENERIC_FAILURE in t for t in self.shown()), timeout=WAIT, what=what
        )


def assert_answered(since: Since, fragment: str, *, what: str, acks: tuple[Any, ...] = ()) -> None:
    """Wait for the answer showing ``fragment``; it and everything else sent since is safe."""
    since.wait_for_text(fragment, what=what)
    assert_safe(since, acks=acks)
    shown = since.shown()
    assert any(fragment in t for t in shown), f"{what}: expected {fragment!r}, the user saw {shown}"


def assert_safe(since: Since, *, acks: tuple[Any, ...] = ()) -> None:
    """The properties that hold for every input, over everything sent since (and the acks)."""
    logs = since.logs()
    for marker in ("Traceback", " ERROR ", "unhandled error"):
        assert marker not in logs, f"the bot logged {marker.strip()!r}:\n{logs[-4000:]}"
    refused = [(c.method, c.error) for c in since.calls() if c.method in MESSAGE_METHODS | VIEW_METHODS]
    assert all(error is None for _, error in refused), f"Slack refused what the bot sent: {refused}"
    bad_hooks = [h.error for h in since.hooks() if not h.ok]
    assert not bad_hooks, f"Slack refused response_url posts: {bad_hooks}"
    payloads = [*since.sent(), *(("ack", a) for a in acks if isinstance(a, dict))]
    for where, payload in payloads:
        for text in mrkdwn_texts(payload):
            stray = stray_markup(text, since.users)
            assert not stray, f"{where} sent markup from user input {stray!r} in {text[:400]!r}"
        problems = markup_problems(payload)
        assert not problems, f"{where} sent {problems!r} in {str(payload)[:400]!r}"
        shown = visible_text(payload)
        assert GENERIC_FAILURE not in shown, f"{where} answered with a generic failure: {shown[:400]!r}"


# --- strategies ----------------------------------------------------------------------------------------

MARKUP = (
    "<!channel>",
    "<!here>",
    "<!everyone>",
    "<@U123>",
    "<@W0ADMIN01|admin>",
    f"<@{USER_ID}>",
    "<#C123>",
    "<#C123|general>",
    "<!subteam^S1>",
    "<!subteam^S1|@admins>",
    "<https://evil.example|click>",
    "<http://evil.example>",
    "<mailto:x@evil.example|mail>",
    "<!date^0^{date}|x>",
    "&lt;!channel&gt;",
    "&amp;",
    "&lt;",
    "&gt;",
    "&#60;",
    "<",
    ">",
    "&",
    "https://evil.example/login",
    "www.evil.example",
    "x@evil.example",
    "@here",
    "#general",
    "*bold*",
    "_it_",
    "~gone~",
    "`code`",
    "```block```",
    "> quote",
    ">>> quote",
    ":joy:",
    "\u202e",  # right-to-left override
    "\u2066",
    "\u200f",
    "\u200b",
    "\ufeff",
    "\x00",
    "\x1b[31m",
    "\r\n",
    "\n" * 40,
    " " * 30,
    '{"p":"confluent_cloud","n":"x","c":{"api_secret":"s"}}',
    '{"provider":"confluent_cloud"}',
    '{"connection":"',
    '"}',
    "[" * 50,
    "null",
    "\\u0000",
    "' OR '1'='1' --",
    "%s%n{0}",
    "$(id)",
    "confluent_cloud",
    "all",
    "ß",
    "İ",
    "🔥",
)

_ANY_CHARACTER = st.characters(exclude_categories=("Cs",))  # surrogates cannot be sent in JSON


def texts(max_size: int, *, min_size: int = 0) -> st.SearchStrategy[str]:
    """Hostile text of ``min_size`` to ``max_size`` characters: random Unicode with control
    characters, Slack markup and JSON mixed in, or one piece repeated up to the limit."""
    random_text = st.text(_ANY_CHARACTER, max_size=min(max_size, 300))
    mixed = st.lists(
        st.one_of(st.sampled_from(MARKUP), st.text(_ANY_CHARACTER, max_size=8)), max_size=16
    ).map("".join)
    repeated = st.builds(
        lambda unit, n: unit * n,
        st.sampled_from([*MARKUP, "x", "é"]),
        st.integers(min_value=1, max_value=max_size),
    )
    return (
        st.one_of(random_text, mixed, repeated)
        .map(lambda s: s[:max_size])
        .filter(lambda s: len(s) >= min_size)
    )


FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    # Each example is a few signed requests to a served bot: keep the module well under a minute
    # per database.
    max_examples=40,
)


# --- the served bot, once per database -----------------------------------------------------------------

EXAMPLES: Counter[str] = Counter()
"""Examples run, by "property[database]"; printed when the module ends."""


def count_example(request: pytest.FixtureRequest) -> None:
    EXAMPLES[request.node.name] += 1


@contextmanager
def _module_logs() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    stream = io.StringIO()
    configure_logging("DEBUG", stream=stream)
    try:
        yield stream
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved_handlers:
            root.addHandler(handler)
        root.setLevel(saved_level)


def _libpq(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    ],
)
def module_database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A migrated database for the module's bot: a SQLite file, or a PostgreSQL database dropped after."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'connections.db'}"
        upgrade_to_head(url)
        yield url
        return
    admin_url: URL = request.getfixturevalue("postgres_admin_url")
    name = f"cbfuzz_{secrets.token_hex(6)}"
    with psycopg.connect(_libpq(admin_url), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        url = _libpq(admin_url.set(database=name))
        upgrade_to_head(url)
        yield url
    finally:
        with psycopg.connect(_libpq(admin_url), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


class Fuzz:
    """The module's bot and what the properties set up on it once.

    Not a dataclass: Hypothesis prints a failing example's arguments field by field, and the
    bot's settings hold its master key."""

    def __init__(self, bot: Bot, cipher: Cipher, cloud_key: tuple[str, str]) -> None:
        self.bot = bot
        self.cipher = cipher
        self.cloud_key = cloud_key
        """A key the fake Confluent Cloud accepts."""
        self.senders: dict[str, SlackSender] = {}
        self.forms: dict[str, dict[str, Any]] = {}
        """Views opened once and submitted again and again, by what they are."""
        self.stack = ExitStack()

    def __repr__(self) -> str:
        return f"Fuzz(bot at {self.bot.url})"

    def sender(self, team_id: str) -> SlackSender:
        """A sender playing Slack for the workspace ``team_id`` (a workspace per property)."""
        if team_id not in self.senders:
            self.senders[team_id] = self.stack.enter_context(
                SlackSender(self.bot.url, signing_secret=SIGNING_SECRET, fake=self.bot.slack, team_id=team_id)
            )
        return self.senders[team_id]

    def seed(self, seed: Seed) -> str:
        [connection_id] = asyncio.run(seed_connections(self.bot.database_url, self.cipher, [seed]))
        return connection_id


@pytest.fixture(scope="module")
def fuzz(module_database_url: str, pytestconfig: pytest.Config) -> Iterator[Fuzz]:
    slack, confluent, snowflake = FakeSlack(enterprise_id=FUZZ_ORG), FakeConfluent(), FakeSnowflake()
    with (
        slack.serve(),
        serve_asgi(confluent.app) as confluent_url,
        serve_asgi(snowflake.app) as snowflake_url,
        _module_logs() as logs,
        refused_port() as redshift_port,
    ):
        env = bot_env(
            slack,
            confluent_url,
            module_database_url,
            CONNECTIONS_ADMIN_CHANNEL=ADMIN_CHANNEL,
            CONNECTIONS_ADMINS=ADMIN,
            # Whatever account or endpoint a form names, the bot only ever reaches loopback.
            SNOWFLAKE_API_URL=f"{snowflake_url}/{{account}}",
            REDSHIFT_CONNECT_TO=f"127.0.0.1:{redshift_port}",
            REDSHIFT_SSLMODE="disable",
            # Hypothesis submits far faster than a person: the per-user limits have tests of their own.
            CONNECTIONS_LIMIT_SUBMISSIONS_PER_MINUTE="10000",
            CONNECTIONS_LIMIT_RETESTS_PER_MINUTE="10000",
            CONNECTIONS_LIMIT_ROTATIONS_PER_MINUTE="10000",
        )
        settings_ = Settings.from_mapping(env)
        with running_bot(settings_, slack, confluent, logs) as bot:
            key, secret = new_api_key(), new_api_secret()
            confluent.add_cloud_key(key, secret, environments=2)
            master_key = settings_.master_key
            assert master_key is not None
            state = Fuzz(bot=bot, cipher=Cipher(MasterKey.from_base64(master_key)), cloud_key=(key, secret))
            with state.stack:
                yield state
    report_examples(pytestconfig)


def report_examples(config: pytest.Config) -> None:
    """Print how many examples each property ran (on the terminal, past output capturing)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None or not EXAMPLES:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        for name, count in sorted(EXAMPLES.items()):
            reporter.write_line(f"fuzz examples run: {count:4d}  {name}")
    EXAMPLES.clear()


# --- slash-command text --------------------------------------------------------------------------------

COMMAND_TEAM = "T0FUZZCMD01"
SUB_COMMANDS = ("list", "help", "connect", "test", "status", "rotate", "remove", "audit")


def expected_reply(sub: str, argument: str) -> str:
    """What the answer to ``/connections <sub> <argument>`` shows, in a workspace with no
    connections: the one answer that fits that input."""
    argument = argument.strip()
    if sub == "list":
        return "In this workspace"
    if sub == "help":
        return "show this help"
    if sub == "connect":
        return "I don't know `connect"
    if sub == "audit":
        return "No connection named" if parse_name(argument) else "/connections audit"
    if not argument:
        return {
            "test": "Say which connection to re-test",
            "status": "Say which connection",
            "rotate": "Say which connection to rotate",
            "remove": "Say which connection to remove",
        }[sub]
    if sub == "test" and argument.lower() == "all":
        return "There is no active connection to re-test yet"
    return "There is no connection named"


@settings(FUZZ, max_examples=60)
@example(sub="status", shout=False, argument="prod\x00")
@example(sub="test", shout=False, argument="prod\x00")
@example(sub="audit", shout=False, argument="prod\x00")
@example(sub="rotate", shout=False, argument="prod\x00")
@example(sub="remove", shout=False, argument="prod\x00")
@given(
    sub=st.sampled_from(SUB_COMMANDS),
    shout=st.booleans(),
    argument=texts(2900),
)
def test_every_sub_command_answers_any_argument_specifically(
    fuzz: Fuzz, request: pytest.FixtureRequest, sub: str, shout: bool, argument: str
) -> None:
    assume(argument.strip().lower() not in PROVIDER_KEYS or sub != "connect")
    count_example(request)
    sender = fuzz.sender(COMMAND_TEAM)
    since = Since.now(fuzz.bot)
    # Audit is for admins; everything else is asked by an ordinary member.
    user = ADMIN if sub == "audit" else USER_ID
    response = sender.command(f"{sub.upper() if shout else sub} {argument}", user_id=user)
    assert response.status_code == 200
    expected = expected_reply(sub, argument)
    assert_answered(
        since, expected, what=f"the answer to /connections {sub}", acks=(_json_or_none(response),)
    )


@settings(FUZZ, max_examples=30)
@given(text=texts(3000))
def test_an_unknown_sub_command_gets_the_help(fuzz: Fuzz, request: pytest.FixtureRequest, text: str) -> None:
    first = text.strip().partition(" ")[0].lower()
    assume(first and first not in (*SUB_COMMANDS, ""))
    count_example(request)
    sender = fuzz.sender(COMMAND_TEAM)
    since = Since.now(fuzz.bot)
    response = sender.command(text)
    assert response.status_code == 200
    assert_answered(since, "Here is what I can do", what="the help", acks=(_json_or_none(response),))


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


VIEW_TEAM = TEAM_ID
"""The workspace of every property that goes through a modal: Slack names a view's workspace in
the view itself (``app_installed_team_id``), and the fake Slack keeps its views in this one."""


# --- raw interactions ----------------------------------------------------------------------------------


def post_payload(sender: SlackSender, payload: dict[str, Any]) -> httpx.Response:
    """POST an interaction payload signed as Slack signs it, whatever it holds."""
    return sender.post_payload(payload)


def click(
    bot: Bot,
    sender: SlackSender,
    action_id: str,
    value: str,
    *,
    user: str,
    surface: str,
    channel: str = CHANNEL_ID,
    message_ts: str | None = None,
) -> httpx.Response:
    """A click on a button ``action_id`` carrying ``value``, whatever the bot rendered: on an
    ephemeral reply ("message"), on a message in a channel ("channel", ``message_ts``) or on App
    Home ("home", no response_url)."""
    slack = bot.slack
    trigger_id = slack.issue_trigger_id()
    if surface == "home":
        button = {"type": "button", "action_id": action_id, "value": value, "text": _plain("Click")}
        home = {
            "id": "V0FUZZHOME1",
            "hash": "1700000000.fuzzhome",
            "type": "home",
            "blocks": [{"type": "actions", "block_id": "fuzz", "elements": [button]}],
        }
        payload = block_actions_in_view(
            action_id, value, view=home, trigger_id=trigger_id, team_id=sender.team_id, user_id=user
        )
        return post_payload(sender, payload)
    response_url = slack.issue_response_url(
        channel_id=channel, user_id=user, message_ts=message_ts, kind="actions"
    )
    payload = block_actions_on_message(
        action_id,
        value,
        ephemeral=surface == "message",
        response_url=response_url,
        trigger_id=trigger_id,
        team_id=sender.team_id,
        user_id=user,
        channel_id=channel,
        message_ts=message_ts,
    )
    return post_payload(sender, payload)


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text}


def post_placeholder(bot: Bot, text: str = "An approval request") -> str:
    """A message in the admin channel to click on, posted through the fake as the bot would; its ts."""
    slack = bot.slack
    answer = httpx.post(
        f"{slack.api_url}chat.postMessage",
        headers={"Authorization": f"Bearer {slack.bot_token}"},
        json={"channel": ADMIN_CHANNEL, "text": text},
    ).json()
    assert answer["ok"], answer
    return str(answer["ts"])


def post_request_placeholder(bot: Bot, model: type[Connection] | type[Rotation], row_id: str) -> str:
    """A placeholder posted as the request of ``row_id`` (a connection or a rotation), recorded as
    where the bot posted it, since a decision updates only that message; its ts."""
    ts = post_placeholder(bot, f"A {model.__tablename__} request")

    async def record() -> None:
        db = Database.from_url(bot.database_url)
        try:
            async with db.transaction() as tx:
                where = {"approval_channel": ADMIN_CHANNEL, "approval_ts": ts}
                await tx.session.execute(update(model).where(model.id == row_id).values(**where))
        finally:
            await db.dispose()

    asyncio.run(record())
    return ts


def opened_view(since: Since, what: str) -> dict[str, Any]:
    """The view the bot opened since (views.open), as the fake stores it."""
    wait_until(lambda: any(c.ok for c in since.calls("views.open")), timeout=WAIT, what=what)
    call = next(c for c in since.calls("views.open") if c.ok)
    return copy.deepcopy(since.bot.slack.views[call.response["view"]["id"]])


def view_updates(since: Since, view_id: str) -> list[Call]:
    return [c for c in since.calls("views.update") if c.body.get("view_id") == view_id]


def provider_of(key: str) -> Any:
    return next(p for p in PROVIDERS if p.key == key).from_environment({})


def open_form(fuzz: Fuzz, sender: SlackSender, provider_key: str, *, user: str = USER_ID) -> str:
    """``/connections connect <key>``; the id of the create form it opens."""
    since = Since.now(fuzz.bot)
    assert sender.command(f"connect {provider_key}", user_id=user).status_code == 200
    return str(opened_view(since, f"the {provider_key} form")["id"])


def is_open_as(fuzz: Fuzz, view_id: str | None, callback_id: str) -> bool:
    if view_id is None or not fuzz.bot.slack.is_open(view_id):
        return False
    try:
        view = fuzz.bot.slack.open_view(view_id)
    except AssertionError:
        return False
    return view.get("callback_id") == callback_id


# --- every field of each provider's create form --------------------------------------------------------

FORM_TEAM = VIEW_TEAM
_CONFLUENT_KEY = re.compile(r"[A-Z0-9]{16}")


def form_values(provider_key: str) -> st.SearchStrategy[dict[str, str]]:
    """Hostile text in every input of the provider's form, within what Slack lets a user submit
    (each input's max_length, something in each required one)."""
    provider = provider_of(provider_key)
    fields: dict[str, st.SearchStrategy[str]] = {ids.BLOCK_NAME: texts(NAME_MAX_LENGTH, min_size=1)}
    for f in provider.fields:
        fields[f.name] = texts(f.max_length or 3000, min_size=0 if f.optional else 1)
    if provider_key == "confluent_cloud":
        # A lowercase letter keeps the key from passing the offline checks, so a fuzzed REST
        # endpoint is never called: it is the one address a form can send the bot to.
        fields["api_key"] = texts(99).map(lambda key: key + "x")
    return st.fixed_dictionaries(fields)


@settings(FUZZ, max_examples=30)
@pytest.mark.parametrize("provider_key", PROVIDER_KEYS)
@given(data=st.data())
def test_every_field_of_each_create_form_is_checked_or_verified_and_answered(
    fuzz: Fuzz, request: pytest.FixtureRequest, provider_key: str, data: st.DataObject
) -> None:
    values = data.draw(form_values(provider_key), label="values")
    count_example(request)
    sender = fuzz.sender(FORM_TEAM)
    form_key = f"create:{provider_key}"
    view_id = fuzz.forms.get(form_key, {}).get("id")
    if not is_open_as(fuzz, view_id, ids.VIEW_CREATE):
        view_id = open_form(fuzz, sender, provider_key)
        fuzz.forms[form_key] = {"id": view_id}
    assert view_id is not None
    typed = {k: v for k, v in values.items() if v}
    since = Since.now(fuzz.bot)
    response = sender.submit(view_id, typed)
    assert response.status_code == 200
    answer = _json_or_none(response) or {}
    if answer.get("response_action") == "errors":
        errors = answer["errors"]
        for field_name, message in errors.items():
            assert message.strip() and GENERIC_FAILURE not in message, f"{field_name}: {message!r}"
        if not values[ids.BLOCK_NAME].split():
            assert ids.BLOCK_NAME in errors, "an empty name was not pointed at"
        if provider_key == "confluent_cloud":
            assert "api_key" in errors, "a key with a lowercase letter was not pointed at"
        assert_safe(since, acks=(answer,))
        return
    assert answer.get("response_action") == "update", answer
    # Verified against the loopback fakes: the result replaces "Verifying…".
    wait_until(lambda: view_updates(since, view_id), timeout=WAIT, what="the verification's result")
    assert_safe(since, acks=(answer,))


# --- a name from the form to verification, approval request, Home and Try again ------------------------

NAME_TEAM = VIEW_TEAM


@settings(FUZZ, max_examples=25)
@example(name="prod\x00", works=True)
@example(name="<!channel> & <@U123> *x*", works=False)
@given(name=texts(NAME_MAX_LENGTH, min_size=1), works=st.booleans())
def test_a_name_is_shown_escaped_from_the_form_to_the_approval_request_and_try_again(
    fuzz: Fuzz, request: pytest.FixtureRequest, name: str, works: bool
) -> None:
    count_example(request)
    sender = fuzz.sender(NAME_TEAM)
    view_id = open_form(fuzz, sender, "confluent_cloud")
    key, secret = fuzz.cloud_key
    since = Since.now(fuzz.bot)
    response = sender.submit(
        view_id, {ids.BLOCK_NAME: name, "api_key": key, "api_secret": secret if works else new_api_secret()}
    )
    answer = _json_or_none(response) or {}
    if answer.get("response_action") == "errors":
        # The name is all that can be wrong: empty once trimmed, or taken.
        assert set(answer["errors"]) == {ids.BLOCK_NAME}, answer
        assert_safe(since, acks=(answer,))
        return
    assert answer.get("response_action") == "update", answer
    wait_until(lambda: view_updates(since, view_id), timeout=WAIT, what="the verification's result")
    if works:
        wait_until(lambda: since.calls("views.publish"), timeout=WAIT, what="the requester's Home tab")
        requests = [c for c in since.calls("chat.postMessage") if c.body.get("channel") == ADMIN_CHANNEL]
        assert requests, "no approval request was posted"
    else:
        shown = " ".join(name.split())
        before = Since.now(fuzz.bot)
        assert sender.action(ids.ACTION_TRY_AGAIN, on=view_id).status_code == 200
        wait_until(lambda: view_updates(before, view_id), timeout=WAIT, what="the form, back after Try again")
        form = fuzz.bot.slack.views[view_id]
        name_input = next(b for b in form["blocks"] if b.get("block_id") == ids.BLOCK_NAME)
        assert name_input["element"].get("initial_value") == shown[:NAME_MAX_LENGTH]
    assert_safe(since, acks=(answer,))


# --- the rotation form ---------------------------------------------------------------------------------

ROTATION_TEAM = VIEW_TEAM
ROTATED_NAME = "Rotate *me* & <#C1|x> _now_"


def rotation_target(fuzz: Fuzz) -> str:
    """The active connection the rotation properties rotate (stored once); its id."""
    if "rotation-target" not in fuzz.forms:
        key, secret = fuzz.cloud_key
        connection_id = fuzz.seed(
            Seed(
                name=ROTATED_NAME, key=key, secret=secret, team_id=ROTATION_TEAM, next_check_at=_far_future()
            )
        )
        fuzz.forms["rotation-target"] = {"id": connection_id}
    return str(fuzz.forms["rotation-target"]["id"])


def _far_future() -> datetime:
    """A next scheduled check that never comes during the tests."""
    return datetime.now(UTC) + timedelta(days=365)


@settings(FUZZ, max_examples=30)
@given(
    api_key=st.one_of(texts(99).map(lambda key: key + "x"), st.just(new_api_key())),
    api_secret=texts(200, min_size=1),
    endpoint=texts(255),
    cluster=texts(64),
)
def test_the_rotation_form_checks_or_verifies_any_input_and_answers(
    fuzz: Fuzz, request: pytest.FixtureRequest, api_key: str, api_secret: str, endpoint: str, cluster: str
) -> None:
    if _CONFLUENT_KEY.fullmatch(api_key):
        endpoint = cluster = ""  # a key that may pass: then no cluster to call either
    count_example(request)
    rotation_target(fuzz)
    sender = fuzz.sender(ROTATION_TEAM)
    view_id = fuzz.forms.get("rotate", {}).get("id")
    if not is_open_as(fuzz, view_id, ids.VIEW_ROTATE):
        since = Since.now(fuzz.bot)
        assert sender.command(f"rotate {ROTATED_NAME}").status_code == 200
        view_id = str(opened_view(since, "the rotation form")["id"])
        fuzz.forms["rotate"] = {"id": view_id}
    assert view_id is not None
    values = {"api_key": api_key, "api_secret": api_secret, "rest_endpoint": endpoint, "cluster_id": cluster}
    since = Since.now(fuzz.bot)
    response = sender.submit(view_id, {k: v for k, v in values.items() if v})
    answer = _json_or_none(response) or {}
    if answer.get("response_action") == "errors":
        for field_name, message in answer["errors"].items():
            assert message.strip() and GENERIC_FAILURE not in message, f"{field_name}: {message!r}"
        assert_safe(since, acks=(answer,))
        return
    assert answer.get("response_action") == "update", answer
    wait_until(lambda: view_updates(since, view_id), timeout=WAIT, what="the rotation's result")
    assert_safe(since, acks=(answer,))


# --- the reject-reason modals --------------------------------------------------------------------------

REJECT_TEAM = VIEW_TEAM


def says_something(reason: str) -> bool:
    """Whether a reason holds anything but blanks and control characters (which do not show)."""
    return any(not ch.isspace() and unicodedata.category(ch) != "Cc" for ch in reason)


@settings(FUZZ, max_examples=15)
@example(reason="\x00")
@example(reason="Use <!here> & > quote\x00\n> more")
@given(reason=texts(500, min_size=1))
def test_a_rejection_reason_reaches_the_request_and_the_requester_escaped(
    fuzz: Fuzz, request: pytest.FixtureRequest, reason: str
) -> None:
    count_example(request)
    sender = fuzz.sender(REJECT_TEAM)
    key, secret = fuzz.cloud_key
    name = f"Pending <!here> & *{secrets.token_hex(3)}*"
    connection_id = fuzz.seed(
        Seed(name=name, key=key, secret=secret, team_id=REJECT_TEAM, status=Status.PENDING_APPROVAL)
    )
    ts = post_request_placeholder(fuzz.bot, Connection, connection_id)
    since = Since.now(fuzz.bot)
    click(
        fuzz.bot,
        sender,
        ids.ACTION_REJECT,
        connection_id,
        user=ADMIN,
        surface="channel",
        channel=ADMIN_CHANNEL,
        message_ts=ts,
    )
    view_id = str(opened_view(since, "the reject form")["id"])
    response = sender.submit(view_id, {ids.BLOCK_REASON: reason}, user_id=ADMIN)
    answer = _json_or_none(response) or {}
    if not says_something(reason):
        assert answer.get("response_action") == "errors" and "Say why" in answer["errors"][ids.BLOCK_REASON]
    else:
        assert answer == {}, answer
        # The request is updated in place and the requester told, both with the reason quoted.
        wait_until(lambda: since.calls("chat.update"), timeout=WAIT, what="the updated request")
        wait_until(
            lambda: [c for c in since.calls("chat.postMessage") if c.body.get("channel") == USER_ID],
            timeout=WAIT,
            what="the requester's direct message",
        )
        wait_until(lambda: len(since.calls("views.publish")) >= 2, timeout=WAIT, what="the Home tabs")
    assert_safe(since, acks=(answer,))


def pending_rotation(fuzz: Fuzz) -> str:
    """A rotation of the rotation target awaiting approval: the one left by the previous example
    if it is still undecided, else a new one stored directly; its id."""
    connection_id = rotation_target(fuzz)
    state = fuzz.forms.setdefault("pending-rotation", {"id": None, "version": 1})

    async def still_pending(rotation_id: str | None) -> bool:
        if rotation_id is None:
            return False
        db = Database.from_url(fuzz.bot.database_url)
        try:
            async with db.read() as tx:
                row = await tx.session.get(Rotation, rotation_id)
                return row is not None and row.status is RotationStatus.PENDING_APPROVAL
        finally:
            await db.dispose()

    async def store() -> str:
        db = Database.from_url(fuzz.bot.database_url)
        try:
            async with db.transaction() as tx:
                state["version"] += 1
                rotation = Rotation(
                    team_id=ROTATION_TEAM,
                    connection_id=connection_id,
                    version=state["version"],
                    requested_by=USER_ID,
                    key_hint="ABCD…WXYZ",
                )
                await tx.rotations.add(rotation)
                return rotation.id
        finally:
            await db.dispose()

    if not asyncio.run(still_pending(state["id"])):
        state["id"] = asyncio.run(store())
    return str(state["id"])


@settings(FUZZ, max_examples=15)
@example(reason="\x00")
@example(reason="Use <!here> & > quote\x00\n> more")
@given(reason=texts(500, min_size=1))
def test_a_rotation_rejection_reason_reaches_the_request_and_the_requester_escaped(
    fuzz: Fuzz, request: pytest.FixtureRequest, reason: str
) -> None:
    count_example(request)
    sender = fuzz.sender(ROTATION_TEAM)
    rotation_id = pending_rotation(fuzz)
    ts = post_request_placeholder(fuzz.bot, Rotation, rotation_id)
    since = Since.now(fuzz.bot)
    click(
        fuzz.bot,
        sender,
        ids.ACTION_REJECT_ROTATION,
        rotation_id,
        user=ADMIN,
        surface="channel",
        channel=ADMIN_CHANNEL,
        message_ts=ts,
    )
    view_id = str(opened_view(since, "the rotation's reject form")["id"])
    response = sender.submit(view_id, {ids.BLOCK_REASON: reason}, user_id=ADMIN)
    answer = _json_or_none(response) or {}
    if not says_something(reason):
        assert answer.get("response_action") == "errors" and "Say why" in answer["errors"][ids.BLOCK_REASON]
    else:
        assert answer == {}, answer
        wait_until(lambda: since.calls("chat.update"), timeout=WAIT, what="the updated request")
        wait_until(
            lambda: [c for c in since.calls("chat.postMessage") if c.body.get("channel") == USER_ID],
            timeout=WAIT,
            what="the requester's direct message",
        )
        wait_until(lambda: since.calls("views.publish"), timeout=WAIT, what="the Home tab")
    assert_safe(since, acks=(answer,))


# --- button values of every action id ------------------------------------------------------------------

BUTTON_TEAM = "T0FUZZBTN01"
SURFACES: dict[str, tuple[str, ...]] = {
    # Where Slack can show each button: an ephemeral reply, a channel message, App Home.
    ids.ACTION_CONNECT: ("message", "home"),
    ids.ACTION_PAGE_PREVIOUS: ("message",),
    ids.ACTION_PAGE_NEXT: ("message",),
    ids.ACTION_APPROVE: ("channel", "home"),
    ids.ACTION_REJECT: ("channel", "home"),
    ids.ACTION_RETEST: ("message", "channel", "home"),
    ids.ACTION_ROTATE: ("message", "channel"),
    ids.ACTION_REMOVE: ("message",),
    ids.ACTION_APPROVE_ROTATION: ("channel", "message"),
    ids.ACTION_REJECT_ROTATION: ("channel", "message"),
}


def expected_click_answer(action_id: str, value: str, clicker: str) -> str:
    """What a click shows in a workspace with no connections, whatever its value says."""
    if action_id == ids.ACTION_CONNECT:
        return "That provider is not offered any more"
    if action_id in (ids.ACTION_PAGE_PREVIOUS, ids.ACTION_PAGE_NEXT):
        return "In this workspace"
    if action_id in (
        ids.ACTION_APPROVE,
        ids.ACTION_REJECT,
        ids.ACTION_APPROVE_ROTATION,
        ids.ACTION_REJECT_ROTATION,
    ):
        return "no longer exists" if clicker == ADMIN else "Only admins of connections"
    return "There is no such connection"


CLICKS = [(action_id, surface) for action_id, surfaces in sorted(SURFACES.items()) for surface in surfaces]


@settings(FUZZ, max_examples=60)
@example(click_on=(ids.ACTION_RETEST, "message"), value="0\x00", clicker=USER_ID)
@example(click_on=(ids.ACTION_APPROVE, "home"), value="\x00", clicker=ADMIN)
@example(click_on=(ids.ACTION_REJECT_ROTATION, "channel"), value="\x00", clicker=ADMIN)
@example(click_on=(ids.ACTION_REMOVE, "message"), value="x" * 2000, clicker=ADMIN)
@given(click_on=st.sampled_from(CLICKS), value=texts(2000), clicker=st.sampled_from([USER_ID, ADMIN]))
def test_a_button_value_of_every_action_is_answered_plainly(
    fuzz: Fuzz, request: pytest.FixtureRequest, click_on: tuple[str, str], value: str, clicker: str
) -> None:
    action_id, surface = click_on
    assume(not (action_id == ids.ACTION_CONNECT and value in PROVIDER_KEYS))
    count_example(request)
    sender = fuzz.sender(BUTTON_TEAM)
    ts = post_placeholder(fuzz.bot) if surface == "channel" else None
    channel = ADMIN_CHANNEL if surface == "channel" else CHANNEL_ID
    since = Since.now(fuzz.bot)
    response = click(
        fuzz.bot, sender, action_id, value, user=clicker, surface=surface, channel=channel, message_ts=ts
    )
    assert response.status_code == 200
    expected = expected_click_answer(action_id, value, clicker)
    assert_answered(
        since, expected, what=f"the answer to {action_id} on {surface}", acks=(_json_or_none(response),)
    )


@settings(FUZZ, max_examples=20)
@given(
    value=st.one_of(
        texts(2000),
        st.builds(
            json.dumps,
            st.fixed_dictionaries(
                {
                    "p": st.sampled_from(PROVIDER_KEYS),
                    "n": texts(200),
                    "c": st.dictionaries(
                        st.sampled_from(
                            [
                                "api_key",
                                "api_secret",
                                "rest_endpoint",
                                "cluster_id",
                                "account",
                                "user",
                                "private_key",
                                "password",
                                "endpoint",
                                "x",
                            ]
                        ),
                        texts(100),
                        max_size=4,
                    ),
                }
            ),
        ),
    )
)
def test_try_again_reopens_only_what_a_draft_may_hold(
    fuzz: Fuzz, request: pytest.FixtureRequest, value: str
) -> None:
    count_example(request)
    sender = fuzz.sender(FORM_TEAM)
    result = failed_result_view(fuzz, sender)
    button = {
        "type": "button",
        "action_id": ids.ACTION_TRY_AGAIN,
        "value": value,
        "text": _plain("Try again"),
    }
    tampered = {
        **result,
        "blocks": [*result["blocks"], {"type": "actions", "block_id": "fuzz", "elements": [button]}],
    }
    since = Since.now(fuzz.bot)
    payload = block_actions_in_view(
        ids.ACTION_TRY_AGAIN,
        value,
        view={**tampered, "blocks": tampered["blocks"][-1:]},
        trigger_id=fuzz.bot.slack.issue_trigger_id(view_id=result["id"]),
        team_id=sender.team_id,
        user_id=USER_ID,
    )
    response = post_payload(sender, payload)
    assert response.status_code == 200
    draft = FormDraft.decode(value)
    provider = next((p for p in PROVIDERS if draft is not None and p.key == draft.provider_key), None)
    if draft is None or provider is None:
        # Not a draft the bot wrote: nothing is rebuilt from it (the user is told by direct
        # message to start over).
        assert view_updates(since, result["id"]) == []
    else:
        wait_until(lambda: view_updates(since, result["id"]), timeout=WAIT, what="the form after Try again")
        form = fuzz.bot.slack.views[result["id"]]
        secret_fields = {f.name for f in provider_of(provider.key).fields if f.secret}
        prefilled = {
            b["block_id"]: b["element"]["initial_value"]
            for b in form["blocks"]
            if b.get("type") == "input" and b["element"].get("initial_value")
        }
        assert not secret_fields & set(prefilled), f"a secret field was pre-filled: {sorted(prefilled)}"
    assert_safe(since, acks=(_json_or_none(response),))


def failed_result_view(fuzz: Fuzz, sender: SlackSender) -> dict[str, Any]:
    """A create form's result after a failed verification (with its Try again button), as the
    user sees it now: the one left by the previous example, or a new one."""
    view_id = fuzz.forms.get("failed-result", {}).get("id")
    if is_open_as(fuzz, view_id, ids.VIEW_RESULT):
        return fuzz.bot.slack.open_view(str(view_id))
    # Try again brought back a form (of whichever provider the draft named): start over.
    view_id = open_form(fuzz, sender, "confluent_cloud")
    since = Since.now(fuzz.bot)
    key, _ = fuzz.cloud_key
    name = f"Try again {secrets.token_hex(3)}"
    sender.submit(view_id, {ids.BLOCK_NAME: name, "api_key": key, "api_secret": new_api_secret()})
    wait_until(lambda: view_updates(since, str(view_id)), timeout=WAIT, what="the failed result")
    fuzz.forms["failed-result"] = {"id": view_id}
    return fuzz.bot.slack.open_view(str(view_id))


# --- private_metadata of every view callback -----------------------------------------------------------

METADATA_TEAM = VIEW_TEAM


def metadata_texts(keys: tuple[str, ...]) -> st.SearchStrategy[str]:
    """Hostile private_metadata (at most Slack's 3,000 characters): any text, or a JSON object
    with the keys the bot writes holding hostile values or real provider keys."""
    value = st.one_of(
        texts(300),
        st.sampled_from(PROVIDER_KEYS),
        st.integers(),
        st.none(),
        st.lists(st.text(max_size=5), max_size=3),
    )
    as_json = st.builds(json.dumps, st.fixed_dictionaries({k: value for k in keys}))
    return st.one_of(texts(3000), as_json).filter(lambda s: len(s) <= 3000)


def metadata_view(fuzz: Fuzz, kind: str) -> dict[str, Any]:
    """A real view of ``kind`` (a callback id), opened once through its flow in the metadata
    workspace, to submit again and again with other private_metadata."""
    if kind in fuzz.forms:
        return copy.deepcopy(fuzz.forms[kind])
    sender = fuzz.sender(METADATA_TEAM)
    key, secret = fuzz.cloud_key
    since = Since.now(fuzz.bot)
    if kind == ids.VIEW_CREATE:
        assert sender.command("connect confluent_cloud").status_code == 200
    elif kind == ids.VIEW_ROTATE:
        fuzz.seed(
            Seed(
                name="Metadata target",
                key=key,
                secret=secret,
                team_id=METADATA_TEAM,
                next_check_at=_far_future(),
            )
        )
        assert sender.command("rotate Metadata target").status_code == 200
    elif kind == ids.VIEW_REJECT:
        connection_id = fuzz.seed(
            Seed(
                name=f"Pending {secrets.token_hex(3)}",
                key=key,
                secret=secret,
                team_id=METADATA_TEAM,
                status=Status.PENDING_APPROVAL,
            )
        )
        click(fuzz.bot, sender, ids.ACTION_REJECT, connection_id, user=ADMIN, surface="home")
    else:
        rotation_id = pending_rotation(fuzz)
        click(
            fuzz.bot,
            fuzz.sender(ROTATION_TEAM),
            ids.ACTION_REJECT_ROTATION,
            rotation_id,
            user=ADMIN,
            surface="home",
        )
    fuzz.forms[kind] = opened_view(since, f"a {kind} view")
    return copy.deepcopy(fuzz.forms[kind])


METADATA_CASES: dict[str, tuple[tuple[str, ...], str, str]] = {
    # callback id: (the keys its metadata holds, who submits, the team they submit from)
    ids.VIEW_CREATE: (("provider",), USER_ID, METADATA_TEAM),
    ids.VIEW_ROTATE: (("connection", "provider", "name"), USER_ID, METADATA_TEAM),
    ids.VIEW_REJECT: (("connection", "channel", "ts"), ADMIN, METADATA_TEAM),
    ids.VIEW_REJECT_ROTATION: (("rotation", "channel", "ts"), ADMIN, ROTATION_TEAM),
}


@settings(FUZZ, max_examples=25)
@pytest.mark.parametrize("callback_id", sorted(METADATA_CASES))
@given(data=st.data())
def test_tampered_private_metadata_of_every_view_is_refused_plainly(
    fuzz: Fuzz, request: pytest.FixtureRequest, callback_id: str, data: st.DataObject
) -> None:
    keys, user, team = METADATA_CASES[callback_id]
    metadata = data.draw(metadata_texts(keys), label="private_metadata")
    count_example(request)
    view = metadata_view(fuzz, callback_id)
    view["private_metadata"] = metadata
    inputs = {b["block_id"] for b in view["blocks"] if b.get("type") == "input"}
    if callback_id in (ids.VIEW_REJECT, ids.VIEW_REJECT_ROTATION):
        values = {ids.BLOCK_REASON: "Not this one."}
    else:
        # Values that pass the offline checks, so that the metadata is all that decides.
        key, _ = fuzz.cloud_key
        values = {"api_key": key, "api_secret": new_api_secret()}
        if callback_id == ids.VIEW_CREATE:
            values[ids.BLOCK_NAME] = f"Metadata {secrets.token_hex(3)}"
    since = Since.now(fuzz.bot)
    payload = view_submission(view, values, user_id=user, team_id=team)
    response = post_payload(fuzz.sender(team), payload)
    assert response.status_code == 200
    answer = _json_or_none(response) or {}
    action = answer.get("response_action")
    if action == "errors":
        errors = answer["errors"]
        assert set(errors) <= inputs, (
            f"errors under {sorted(errors)}, not inputs of the view {sorted(inputs)}"
        )
        for message in errors.values():
            assert message.strip() and GENERIC_FAILURE not in message, message
    else:
        # Only metadata naming a real provider gets this far; the connection in it is not
        # this workspace's (or not anyone's), and the result says so.
        assert action == "update", answer
        wait_until(lambda: view_updates(since, view["id"]), timeout=WAIT, what="the result")
    assert_safe(since, acks=(answer,))


# --- whole bodies -----------------------------------------------------------------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
_SHAPED = st.fixed_dictionaries(
    {"type": st.sampled_from(["block_actions", "view_submission", "event_callback", "shortcut", "x"])},
    optional={key: _JSON for key in ("team", "user", "enterprise", "view", "actions", "event", "api_app_id")},
)
_BODIES = st.one_of(
    st.binary(max_size=3000),
    texts(3000).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.one_of(_JSON, _SHAPED).map(lambda v: json.dumps(v).encode()),
    st.one_of(_JSON, _SHAPED).map(lambda v: ("payload=" + quote(json.dumps(v))).encode()),
)


@settings(FUZZ, max_examples=80)
@given(
    body=_BODIES,
    content_type=st.sampled_from(["application/x-www-form-urlencoded", "application/json", "text/plain"]),
)
def test_any_signed_body_gets_a_plain_answer_never_a_500(
    fuzz: Fuzz, request: pytest.FixtureRequest, body: bytes, content_type: str
) -> None:
    count_example(request)
    since = Since.now(fuzz.bot)
    headers = {**sign(body, SIGNING_SECRET), "content-type": content_type}
    response = fuzz.sender(COMMAND_TEAM).post_raw(body, headers)
    assert response.status_code < 500
    assert_safe(since)
