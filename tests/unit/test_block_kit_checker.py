"""The Block Kit checker catches each Slack limit, at exactly the documented boundary."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.block_kit import Surface, assert_valid, block_kit_problems


def plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text}


def mrkdwn(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text}


def button(
    action_id: str = "connect_provider", text: str = "Connect", value: str = "confluent_cloud"
) -> dict[str, Any]:
    return {"type": "button", "action_id": action_id, "text": plain(text), "value": value}


def modal() -> dict[str, Any]:
    """A well-formed modal shaped like the bot's "Create Confluent Cloud" form."""
    return {
        "type": "modal",
        "callback_id": "create_connection",
        "title": plain("Create Confluent Cloud"),
        "submit": plain("Create"),
        "close": plain("Cancel"),
        "private_metadata": '{"provider":"confluent_cloud"}',
        "blocks": [
            {"type": "header", "block_id": "account_header", "text": plain("Confluent Account")},
            {
                "type": "section",
                "block_id": "intro",
                "text": mrkdwn("*Confluent Cloud* needs a Cloud API key."),
                "fields": [mrkdwn("*Scope*"), plain("Cloud resource management")],
                "accessory": button("help", "Help", "docs"),
            },
            {"type": "divider"},
            {
                "type": "input",
                "block_id": "name",
                "label": plain("Name"),
                "hint": plain("A unique name, e.g. prod-kafka"),
                "element": {
                    "type": "plain_text_input",
                    "action_id": "value",
                    "placeholder": plain("prod-kafka"),
                    "max_length": 64,
                    "initial_value": "prod-kafka",
                },
            },
            {"type": "context", "block_id": "note", "elements": [mrkdwn("Secrets are stored encrypted.")]},
            {"type": "actions", "block_id": "more", "elements": [button("try_again", "Try again", "{}")]},
        ],
    }


def message() -> dict[str, Any]:
    """A well-formed message shaped like the /connections provider cards."""
    return {
        "text": "Connections",
        "blocks": [
            {"type": "header", "block_id": "connections_header", "text": plain("Connections")},
            {
                "type": "section",
                "block_id": "provider_confluent_cloud",
                "text": mrkdwn("*Confluent Cloud*\nManaged Apache Kafka."),
                "accessory": button(),
            },
        ],
    }


def block(view: dict[str, Any], block_id: str) -> dict[str, Any]:
    return next(b for b in view["blocks"] if b.get("block_id") == block_id)


def text_input(view: dict[str, Any]) -> dict[str, Any]:
    element: dict[str, Any] = block(view, "name")["element"]
    return element


def test_well_formed_modal_and_message_pass() -> None:
    assert block_kit_problems("modal", modal()) == []
    assert block_kit_problems("message", message()) == []
    assert block_kit_problems("home", {"type": "home", "blocks": message()["blocks"]}) == []
    assert_valid("modal", modal())


def test_assert_valid_lists_every_problem() -> None:
    view = modal()
    view["title"] = plain("x" * 25)
    view["private_metadata"] = "m" * 3001
    with pytest.raises(AssertionError) as raised:
        assert_valid("modal", view)
    assert "title.text" in str(raised.value)
    assert "private_metadata" in str(raised.value)


Mutation = Callable[[dict[str, Any], int], None]


def _fields(v: dict[str, Any], n: int) -> None:
    block(v, "intro")["fields"] = [plain(f"f{i}") for i in range(n)]


def _context(v: dict[str, Any], n: int) -> None:
    block(v, "note")["elements"] = [plain(f"c{i}") for i in range(n)]


def _actions(v: dict[str, Any], n: int) -> None:
    block(v, "more")["elements"] = [button(f"a{i}") for i in range(n)]


def _blocks(v: dict[str, Any], n: int) -> None:
    v["blocks"] = [v["blocks"][0]] + [{"type": "divider"} for _ in range(n - 1)]


def _initial_value(v: dict[str, Any], n: int) -> None:
    text_input(v)["max_length"] = 10
    text_input(v)["initial_value"] = "x" * n


# (what, surface, limit, set the thing to length/count n); n == limit passes, limit + 1 fails.
LIMITS: list[tuple[str, Surface, int, Mutation]] = [
    ("modal blocks", "modal", 100, _blocks),
    ("home blocks", "home", 100, _blocks),
    ("message blocks", "message", 50, _blocks),
    ("modal title", "modal", 24, lambda v, n: v.update(title=plain("t" * n))),
    ("modal submit", "modal", 24, lambda v, n: v.update(submit=plain("s" * n))),
    ("modal close", "modal", 24, lambda v, n: v.update(close=plain("c" * n))),
    ("private_metadata", "modal", 3000, lambda v, n: v.update(private_metadata="m" * n)),
    ("callback_id", "modal", 255, lambda v, n: v.update(callback_id="c" * n)),
    ("block_id", "modal", 255, lambda v, n: block(v, "intro").update(block_id="b" * n)),
    ("action_id", "modal", 255, lambda v, n: text_input(v).update(action_id="a" * n)),
    ("header text", "modal", 150, lambda v, n: block(v, "account_header").update(text=plain("h" * n))),
    ("section text", "modal", 3000, lambda v, n: block(v, "intro").update(text=mrkdwn("s" * n))),
    ("section field count", "modal", 10, _fields),
    ("section field text", "modal", 2000, lambda v, n: block(v, "intro").update(fields=[mrkdwn("f" * n)])),
    ("context elements", "modal", 10, _context),
    ("actions elements", "modal", 25, _actions),
    ("button text", "message", 75, lambda v, n: v["blocks"][1]["accessory"].update(text=plain("b" * n))),
    ("button value", "message", 2000, lambda v, n: v["blocks"][1]["accessory"].update(value="v" * n)),
    ("input label", "modal", 2000, lambda v, n: block(v, "name").update(label=plain("l" * n))),
    ("input hint", "modal", 2000, lambda v, n: block(v, "name").update(hint=plain("h" * n))),
    ("placeholder", "modal", 150, lambda v, n: text_input(v).update(placeholder=plain("p" * n))),
    ("max_length", "modal", 3000, lambda v, n: text_input(v).update(max_length=n, initial_value="x")),
    ("initial_value within max_length", "modal", 10, _initial_value),
]


@pytest.mark.parametrize(("what", "surface", "limit", "mutate"), LIMITS, ids=[c[0] for c in LIMITS])
def test_each_limit_is_enforced_at_its_boundary(
    what: str, surface: Surface, limit: int, mutate: Mutation
) -> None:
    base = message() if surface == "message" else modal()
    if surface == "home":
        base = {"type": "home", "blocks": modal()["blocks"]}
    at_limit, over_limit = copy.deepcopy(base), copy.deepcopy(base)
    mutate(at_limit, limit)
    mutate(over_limit, limit + 1)

    assert block_kit_problems(surface, at_limit) == []
    problems = block_kit_problems(surface, over_limit)
    assert problems, f"{what} over its limit was not reported"
    assert any(str(limit) in p for p in problems), problems


def _rule_cases() -> list[tuple[str, Surface, Callable[[], dict[str, Any]], str]]:
    def with_(
        base: Callable[[], dict[str, Any]], change: Callable[[dict[str, Any]], object]
    ) -> Callable[[], dict[str, Any]]:
        def build() -> dict[str, Any]:
            payload = base()
            change(payload)
            return payload

        return build

    input_block = modal()["blocks"][3]
    return [
        (
            "max_length below 1",
            "modal",
            with_(modal, lambda v: text_input(v).update(max_length=0)),
            "max_length",
        ),
        (
            "duplicate block_id",
            "modal",
            with_(modal, lambda v: block(v, "note").update(block_id="intro")),
            "unique",
        ),
        (
            "input block in a message",
            "message",
            with_(message, lambda m: m["blocks"].append(input_block)),
            "only allowed in modals",
        ),
        ("modal input without submit", "modal", with_(modal, lambda v: v.pop("submit")), "needs a submit"),
        (
            "header text as mrkdwn",
            "modal",
            with_(modal, lambda v: block(v, "account_header").update(text=mrkdwn("Hi"))),
            "must be plain_text",
        ),
        ("title as a bare string", "modal", with_(modal, lambda v: v.update(title="Create")), "text object"),
        (
            "section text with an unknown text type",
            "message",
            with_(message, lambda m: m["blocks"][1].update(text={"type": "markdown", "text": "x"})),
            "plain_text or mrkdwn",
        ),
        (
            "plain_text with verbatim",
            "message",
            with_(message, lambda m: m["blocks"][0].update(text={**plain("x"), "verbatim": True})),
            "unknown properties",
        ),
        (
            "empty text",
            "message",
            with_(message, lambda m: m["blocks"][1].update(text=mrkdwn(""))),
            "non-empty",
        ),
        (
            "unknown block type",
            "message",
            with_(message, lambda m: m["blocks"].append({"type": "sectoin", "text": mrkdwn("x")})),
            "unknown block type 'sectoin'",
        ),
        (
            "misspelt block property",
            "message",
            with_(message, lambda m: m["blocks"][1].update(acessory=button("x"))),
            "acessory",
        ),
        ("message without text or blocks", "message", lambda: {"text": ""}, "no_text"),
        (
            "home with a submit button",
            "home",
            lambda: {"type": "home", "submit": plain("Go"), "blocks": [{"type": "divider"}]},
            "cannot have submit",
        ),
        ("modal surface given a home view", "modal", with_(modal, lambda v: v.update(type="home")), "type"),
        (
            "button in an input block",
            "modal",
            with_(modal, lambda v: block(v, "name").update(element=button("x"))),
            "not allowed here",
        ),
        (
            "repeated action_id within a block",
            "modal",
            with_(modal, lambda v: block(v, "more").update(elements=[button("a"), button("a")])),
            "repeats within the block",
        ),
        (
            "select with options and option_groups (caught by slack_sdk)",
            "message",
            with_(
                message,
                lambda m: m["blocks"].append(
                    {
                        "type": "actions",
                        "elements": [
                            {
                                "type": "static_select",
                                "action_id": "pick",
                                "options": [{"text": plain("A"), "value": "a"}],
                                "option_groups": [
                                    {"label": plain("G"), "options": [{"text": plain("B"), "value": "b"}]}
                                ],
                            }
                        ],
                    }
                ),
            ),
            "slack_sdk: options and option_groups cannot both be specified",
        ),
    ]


RULES = _rule_cases()


@pytest.mark.parametrize(("what", "surface", "build", "expected"), RULES, ids=[c[0] for c in RULES])
def test_each_rule_is_enforced(
    what: str, surface: Surface, build: Callable[[], dict[str, Any]], expected: str
) -> None:
    problems = block_kit_problems(surface, build())
    assert any(expected in p for p in problems), f"{what}: {problems}"


def test_problem_names_the_block_it_is_in() -> None:
    view = modal()
    block(view, "account_header")["text"] = plain("h" * 151)
    assert block_kit_problems("modal", view) == [
        "blocks[0] (block_id 'account_header').text.text: is 151 characters; Slack allows at most 150"
    ]
