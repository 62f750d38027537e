"""The listeners' answers, called directly as Bolt would call them: each module's routing table,
the ack that comes before any work, what a user is told when the work breaks, and the answers to
Approve / Reject, Connect and the sub-commands for each verdict a service can give.

The services are stand-ins returning what a test sets; Slack is :class:`FakeSlack` on loopback, so
every call the answers make is checked the way Slack would check it (and recorded)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from slack_bolt.async_app import AsyncBoltContext, AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot import ids
from bot.background import Background
from bot.domain import (
    AdminCheck,
    ApprovalRequest,
    ConnectionSummary,
    Decision,
    Health,
    RequestKind,
    Status,
    Verdict,
)
from bot.listeners import (
    approvals,
    commands,
    forms,
    home,
    listing,
    register_listeners,
    removal,
    retests,
    submissions,
)
from bot.listeners.kit import SERVICES_KEY, Click, Command, OnClick
from bot.notify.connections import publish_home
from bot.notify.slack_calls import NOTHING_CHANGED
from bot.providers.registry import ProviderRegistry
from tests.fakes.slack_api import FakeSlack
from tests.support.block_text import visible_text
from tests.unit.blocks.providers import FakeProvider

TEAM = "T0A1B2C3D4E"
ADMIN = "U0ADMIN001"
REQUESTER = "U0REQUEST1"
ADMIN_CHANNEL = "C0ADMINS01"
WHEN = datetime(2026, 5, 1, 9, 30, tzinfo=UTC)
LAKE = FakeProvider("lake", "Data Lake", "A lake.")


def request(
    kind: RequestKind = RequestKind.CONNECTION, status: Status = Status.PENDING_APPROVAL
) -> ApprovalRequest:
    connection = ConnectionSummary(
        id="conn-1",
        name="Prod lake",
        provider_key="lake",
        provider_title="Data Lake",
        status=status,
        health=Health.HEALTHY,
        created_by=REQUESTER,
        created_at=WHEN,
        last_verified_at=WHEN,
        key_hint="ABCD…WXYZ",
    )
    return ApprovalRequest(
        kind=kind,
        id="conn-1" if kind is RequestKind.CONNECTION else "rot-1",
        team_id=TEAM,
        connection=connection,
        requested_by=REQUESTER,
        requested_at=WHEN,
        status=status,
    )


@dataclass
class StandInApprovals:
    """What ApprovalService answers, as a test sets it; remembers what it was asked."""

    decision: Decision = field(default_factory=lambda: Decision(Verdict.NOT_FOUND))
    allowed: Decision = field(default_factory=lambda: Decision(Verdict.ALLOWED))
    described: ApprovalRequest | None = None
    asked: list[tuple[Any, ...]] = field(default_factory=list)
    policy: Any = field(default_factory=lambda: SimpleNamespace(how_to_become=lambda: "Ask in #admins."))

    async def approve(self, *args: Any) -> Decision:
        self.asked.append(("approve", *args))
        return self.decision

    async def may_decide(self, *args: Any) -> Decision:
        self.asked.append(("may_decide", *args))
        if self.allowed.verdict is Verdict.ALLOWED:  # as the service does, with the request it read
            return Decision(Verdict.ALLOWED, self.described, self.allowed.admin)
        return self.allowed

    async def describe(self, *args: Any) -> ApprovalRequest | None:
        self.asked.append(("describe", *args))
        return self.described


class Broken:
    """A service that fails on every call, as a lost database would make it."""

    def __getattr__(self, name: str) -> Any:
        async def fail(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("the database went away")

        return fail


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    fake = FakeSlack()
    with fake.serve():
        yield fake


@pytest.fixture
async def client(slack: FakeSlack) -> AsyncIterator[AsyncWebClient]:
    web = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
    yield web
    if web.session is not None:
        await web.session.close()


def services(**overrides: Any) -> Any:
    settings = SimpleNamespace(admin_channel=ADMIN_CHANNEL, admins=frozenset({ADMIN}), rotation_days=90.0)
    base: dict[str, Any] = {
        "background": Background(),
        "providers": ProviderRegistry((LAKE,)),
        "settings": settings,
        "approvals": StandInApprovals(),
    }
    return SimpleNamespace(**{**base, **overrides})


def click(slack: FakeSlack, client: AsyncWebClient, stand_ins: Any, action_id: str, value: str) -> Click:
    url = slack.issue_response_url(
        channel_id=ADMIN_CHANNEL, user_id=ADMIN, message_ts="1.000001", kind="actions"
    )
    return Click(
        services=stand_ins,
        client=client,
        respond=AsyncRespond(response_url=url),
        team_id=TEAM,
        user_id=ADMIN,
        action_id=action_id,
        value=value,
        trigger_id=slack.issue_trigger_id(),
    )


def replies(slack: FakeSlack) -> list[str]:
    return [visible_text(hook.body.get("blocks") or []) or str(hook.body.get("text")) for hook in slack.hooks]


async def settled(stand_ins: Any) -> None:
    await stand_ins.background.drain(5.0)


# --- routing tables -------------------------------------------------------------------------------


class Routes:
    """Stands in for the Bolt app in ``register``: records every route and what answers it."""

    def __init__(self) -> None:
        self.routes: list[tuple[str, str, Any]] = []
        self.middleware: list[Any] = []

    def _route(self, kind: str, constraint: str) -> Any:
        return lambda listener: self.routes.append((kind, constraint, listener))

    def action(self, constraint: str) -> Any:
        return self._route("action", constraint)

    def view(self, constraint: str) -> Any:
        return self._route("view", constraint)

    def command(self, constraint: str) -> Any:
        return self._route("command", constraint)

    def event(self, constraint: str) -> Any:
        return self._route("event", constraint)

    def use(self, middleware: Any) -> None:
        self.middleware.append(middleware)


@pytest.mark.parametrize(
    ("module", "count"),
    [
        (approvals, 6),
        (commands, 1),
        (forms, 3),
        (home, 1),
        (listing, 2),
        (removal, 1),
        (retests, 1),
        (submissions, 2),
    ],
)
def test_each_module_registers_its_routes(module: Any, count: int) -> None:
    app = Routes()
    module.register(app)
    assert len(app.routes) == count
    assert all(callable(listener) for _, _, listener in app.routes)


def test_every_button_and_form_the_blocks_emit_is_routed_once_and_the_services_are_attached() -> None:
    app = Routes()
    register_listeners(app, services())  # type: ignore[arg-type]
    constraints = [constraint for _, constraint, _ in app.routes]
    # The result views have no submit button; ACTION_PAGE is only the prefix of Previous / Next.
    emitted = [
        value
        for name, value in vars(ids).items()
        if name.startswith(("ACTION_", "VIEW_"))
        and name not in ("ACTION_PAGE", "VIEW_RESULT", "VIEW_ROTATE_RESULT")
    ]
    assert set(emitted) <= set(constraints)
    pairs = [(kind, constraint) for kind, constraint, _ in app.routes]
    assert len(pairs) == len(set(pairs))
    assert ("command", commands.COMMAND) in [(kind, constraint) for kind, constraint, _ in app.routes]
    assert len(app.middleware) == 1


async def test_the_middleware_hands_the_services_to_every_listener() -> None:
    app, stand_ins = Routes(), services()
    register_listeners(app, stand_ins)  # type: ignore[arg-type]
    context = AsyncBoltContext()
    called: list[bool] = []

    async def next_() -> None:
        called.append(True)

    await app.middleware[0](context=context, next=next_)
    assert context[SERVICES_KEY] is stand_ins and called == [True]


def test_the_sub_commands_route_to_their_answers() -> None:
    assert commands.SUB_COMMANDS["test"] is retests.retest
    assert commands.SUB_COMMANDS["status"] is retests.status
    assert commands.SUB_COMMANDS["rotate"] is forms.rotate
    assert commands.SUB_COMMANDS["remove"] is removal.confirm
    assert commands.SUB_COMMANDS[""] is commands.SUB_COMMANDS["list"] is listing.show
    assert set(commands.SUB_COMMANDS) == {
        "",
        "list",
        "connect",
        "test",
        "status",
        "rotate",
        "remove",
        "audit",
        "help",
    }


# --- ack first, then the work; a failure is told, not swallowed ---------------------------------


async def test_a_click_is_acked_before_its_answer_runs_and_a_failure_is_told(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    stand_ins = services(approvals=Broken())
    order: list[str] = []

    async def ack(**_: Any) -> None:
        order.append("ack")

    async def answer(clicked: Click) -> None:
        order.append("answer")
        await clicked.services.approvals.approve()

    url = slack.issue_response_url(
        channel_id=ADMIN_CHANNEL, user_id=ADMIN, message_ts="1.000001", kind="actions"
    )
    body = {
        "user": {"id": ADMIN},
        "team": {"id": TEAM},
        "trigger_id": slack.issue_trigger_id(),
        "container": {"type": "message", "channel_id": ADMIN_CHANNEL, "message_ts": "1.000001"},
    }
    listener = OnClick(answer)
    await listener(
        ack=ack,
        body=body,
        action={"action_id": ids.ACTION_APPROVE, "value": "conn-1"},
        client=client,
        respond=AsyncRespond(response_url=url),
        context=AsyncBoltContext({SERVICES_KEY: stand_ins}),
    )
    assert order == ["ack"]  # nothing of the answer ran before the listener returned
    await settled(stand_ins)
    assert order == ["ack", "answer"]
    assert replies(slack) == [NOTHING_CHANGED]


async def test_a_command_whose_answer_breaks_tells_the_user_what_fits(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    acked: list[str] = []

    async def ack(**_: Any) -> None:
        acked.append("ack")

    for i, (sub, told) in enumerate((("status", NOTHING_CHANGED), ("test", retests.RETEST_FAILED))):
        stand_ins = services(queries=Broken(), retests=Broken())
        url = slack.issue_response_url(channel_id="C0PLACE001", user_id=REQUESTER)

        await commands.connections_command(
            ack=ack,
            command={"text": f"{sub} Prod lake", "user_id": REQUESTER, "team_id": TEAM, "trigger_id": "t"},
            client=client,
            respond=AsyncRespond(response_url=url),
            context=AsyncBoltContext({SERVICES_KEY: stand_ins}),
        )
        assert acked == ["ack"] * (i + 1)
        await settled(stand_ins)
        assert told in replies(slack)[-1]


async def test_a_home_tab_that_cannot_be_built_is_logged_not_raised(
    slack: FakeSlack, client: AsyncWebClient, caplog: pytest.LogCaptureFixture
) -> None:
    # Callers publish after what they did already stands (a decision, a result the user has):
    # a failure here must not turn into "something went wrong".
    published = await publish_home(services(queries=Broken()), client, TEAM, REQUESTER)
    assert published is False
    assert slack.calls_to("views.publish") == []
    assert "could not build the Home tab" in caplog.text


# --- Approve and Reject ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(RequestKind))
async def test_approve_asks_the_approval_path_for_the_kind_its_button_names(
    slack: FakeSlack, client: AsyncWebClient, kind: RequestKind
) -> None:
    stand_ins = services()
    action = ids.ACTION_APPROVE if kind is RequestKind.CONNECTION else ids.ACTION_APPROVE_ROTATION
    await approvals.approve(click(slack, client, stand_ins, action, "req-9"))
    assert stand_ins.approvals.asked == [("approve", kind, TEAM, "req-9", ADMIN)]
    assert "no longer exists" in replies(slack)[-1]


async def test_approve_by_someone_not_an_admin_says_how_to_become_one(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    stand_ins = services()
    stand_ins.approvals.decision = Decision(Verdict.NOT_ADMIN, admin=AdminCheck(False, "not an admin"))
    await approvals.approve(click(slack, client, stand_ins, ids.ACTION_APPROVE, "conn-1"))
    assert replies(slack)[-1].startswith("Only admins of connections can approve or reject. Nothing changed.")
    assert replies(slack)[-1].endswith("Ask in #admins.")
    assert slack.calls_to("chat.update") == []


@pytest.mark.parametrize("kind", list(RequestKind))
async def test_an_approval_the_secret_store_refused_is_told_to_the_clicker_only(
    slack: FakeSlack, client: AsyncWebClient, kind: RequestKind
) -> None:
    stand_ins = services()
    why = "the bot may not write `connections/T0A1B2C3D4E/lake/prod-lake`: AccessDenied"
    stand_ins.approvals.decision = Decision(
        Verdict.STORE_FAILED, request(kind), AdminCheck(True, "listed"), why
    )
    action = ids.ACTION_APPROVE if kind is RequestKind.CONNECTION else ids.ACTION_APPROVE_ROTATION

    await approvals.approve(click(slack, client, stand_ins, action, "conn-1"))

    [answer] = replies(slack)
    assert "Nothing was approved" in answer and "AccessDenied" in answer and "Approve" in answer
    assert slack.calls_to("chat.update") == [] and slack.calls_to("chat.postMessage") == []


async def test_a_decision_made_by_the_click_updates_the_request_and_tells_the_requester(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    decided = request(status=Status.ACTIVE)
    posted = await client.chat_postMessage(channel=ADMIN_CHANNEL, text="Approval requested")
    stored = {"message_channel": ADMIN_CHANNEL, "message_ts": str(posted["ts"])}
    decided = ApprovalRequest(**{**vars(decided), "decided_by": ADMIN, "decided_at": WHEN, **stored})
    stand_ins = services(queries=SimpleNamespace(home=Broken().home))
    stand_ins.approvals.decision = Decision(Verdict.DECIDED, decided)

    await approvals.approve(click(slack, client, stand_ins, ids.ACTION_APPROVE, "conn-1"))

    [update] = slack.calls_to("chat.update")
    assert update.body["ts"] == posted["ts"] and "Approved by" in visible_text(update.body["blocks"])
    dm = [c for c in slack.calls_to("chat.postMessage") if c.body["channel"] == REQUESTER]
    assert len(dm) == 1 and "was approved" in dm[0].body["text"]
    assert slack.hooks == []  # the clicker is told by the request itself, not by a reply


async def test_reject_by_someone_refused_gets_the_reason_and_no_form(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    stand_ins = services()
    stand_ins.approvals.allowed = Decision(Verdict.SELF_APPROVAL, request(RequestKind.ROTATION))
    await approvals.ask_why(click(slack, client, stand_ins, ids.ACTION_REJECT_ROTATION, "rot-1"))
    assert "another admin must decide" in replies(slack)[-1]
    assert slack.calls_to("views.open") == []


@pytest.mark.parametrize("kind", list(RequestKind))
async def test_reject_opens_the_reason_form_naming_the_request_only(
    slack: FakeSlack, client: AsyncWebClient, kind: RequestKind
) -> None:
    stand_ins = services()
    stand_ins.approvals.described = request(kind)
    action = ids.ACTION_REJECT if kind is RequestKind.CONNECTION else ids.ACTION_REJECT_ROTATION

    await approvals.ask_why(click(slack, client, stand_ins, action, "req-9"))

    # The request the rights check read is the one the form names: no second read.
    assert [asked[0] for asked in stand_ins.approvals.asked] == ["may_decide"]
    [opened] = slack.calls_to("views.open")
    view = opened.body["view"]
    assert view["callback_id"] == (
        ids.VIEW_REJECT if kind is RequestKind.CONNECTION else ids.VIEW_REJECT_ROTATION
    )
    # Not the clicked message: the decision updates only where the bot recorded posting the request.
    assert json.loads(view["private_metadata"]) == {kind.value: "req-9"}


# --- forms ----------------------------------------------------------------------------------------


async def test_connect_on_a_provider_this_bot_does_not_offer_says_so(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    await forms.connect_clicked(click(slack, client, services(), ids.ACTION_CONNECT, "gone_provider"))
    assert replies(slack)[-1] == forms.STALE_PROVIDER
    assert slack.calls_to("views.open") == []


async def test_connect_opens_the_providers_form(slack: FakeSlack, client: AsyncWebClient) -> None:
    await forms.connect_clicked(click(slack, client, services(), ids.ACTION_CONNECT, "lake"))
    [opened] = slack.calls_to("views.open")
    assert opened.body["view"]["callback_id"] == ids.VIEW_CREATE
    assert opened.body["view"]["title"]["text"] == "Create Data Lake"


async def test_rotate_without_an_admin_channel_opens_nothing(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    stand_ins = services(settings=SimpleNamespace(admin_channel=None, admins=frozenset(), rotation_days=90.0))
    url = slack.issue_response_url(channel_id="C0PLACE001", user_id=REQUESTER)
    respond = AsyncRespond(response_url=url)
    command = Command(
        services=stand_ins,
        client=client,
        respond=respond,
        team_id=TEAM,
        user_id=REQUESTER,
        sub="rotate",
        argument="Prod lake",
    )
    await forms.rotate(command)
    assert replies(slack)[-1] == forms.NO_APPROVALS
    assert slack.calls_to("views.open") == []
