"""Slack's Block Kit limits, checked independently of the code under test.

``block_kit_problems(surface, payload)`` returns what Slack would object to in a modal, a Home tab or a
message. It runs explicit checks for the limits Slack documents (several of which ``slack_sdk.models``
does not enforce: blocks per message, section field length, ``plain_text_input.max_length``, unique
block ids, input blocks in messages, ...) and then lets ``slack_sdk.models`` validate whatever the
explicit checks found no fault with, as a backstop for block and element types not covered here.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from slack_sdk.errors import SlackObjectFormationError
from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View

__all__ = ["Surface", "assert_valid", "block_kit_problems"]

Surface = Literal["modal", "home", "message"]

MAX_BLOCKS: dict[str, int] = {"message": 50, "modal": 100, "home": 100}

_TEXT_KEYS = {"plain_text": {"type", "text", "emoji"}, "mrkdwn": {"type", "text", "verbatim"}}
_BLOCK_KEYS: dict[str, set[str]] = {
    "header": {"type", "block_id", "text"},
    "section": {"type", "block_id", "text", "fields", "accessory", "expand"},
    "divider": {"type", "block_id"},
    "context": {"type", "block_id", "elements"},
    "actions": {"type", "block_id", "elements"},
    "input": {"type", "block_id", "label", "element", "hint", "optional", "dispatch_action"},
    "image": {"type", "block_id", "image_url", "slack_file", "alt_text", "title"},
}
_ELEMENT_KEYS: dict[str, set[str]] = {
    "button": {"type", "action_id", "text", "value", "url", "style", "confirm", "accessibility_label"},
    "plain_text_input": {
        "type",
        "action_id",
        "placeholder",
        "initial_value",
        "multiline",
        "min_length",
        "max_length",
        "dispatch_action_config",
        "focus_on_load",
    },
}
_SELECTS = {
    "static_select",
    "external_select",
    "users_select",
    "conversations_select",
    "channels_select",
    "multi_static_select",
    "multi_external_select",
    "multi_users_select",
    "multi_conversations_select",
    "multi_channels_select",
}
_INPUT_ELEMENTS = _SELECTS | {
    "plain_text_input",
    "checkboxes",
    "radio_buttons",
    "datepicker",
    "timepicker",
    "datetimepicker",
    "email_text_input",
    "url_text_input",
    "number_input",
    "file_input",
    "rich_text_input",
}
_ACTIONS_ELEMENTS = _SELECTS | {
    "button",
    "checkboxes",
    "radio_buttons",
    "datepicker",
    "timepicker",
    "datetimepicker",
    "overflow",
    "workflow_button",
    "feedback_buttons",
    "icon_button",
}
_ACCESSORY_ELEMENTS = _SELECTS | {
    "button",
    "image",
    "overflow",
    "datepicker",
    "timepicker",
    "checkboxes",
    "radio_buttons",
    "workflow_button",
}


def _known_block_types() -> set[str]:
    """Every block type slack_sdk can parse; anything else is a typo or a type Slack does not have."""
    found: set[str] = set()
    pending: list[type[Block]] = list(Block.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        kind = getattr(cls, "type", None)
        if isinstance(kind, str):
            found.add(kind)
    return found


_KNOWN_BLOCK_TYPES = _known_block_types()


def block_kit_problems(surface: Surface, payload: Mapping[str, Any]) -> list[str]:
    """Return what Slack would reject in ``payload``; an empty list means it is valid.

    ``surface`` is ``"modal"`` or ``"home"`` for a whole view dict (as passed to ``views.open`` /
    ``views.publish``) or ``"message"`` for a message dict (``{"text": ..., "blocks": [...]}`` as passed
    to ``chat.postMessage`` or a ``response_url``). Each problem names where it is, e.g.
    ``blocks[2] (block_id 'name').label: ...``.
    """
    checker = _Checker(surface)
    checker.check(payload)
    return checker.problems


def assert_valid(surface: Surface, payload: Mapping[str, Any]) -> None:
    """Raise ``AssertionError`` listing every problem Slack would have with ``payload``."""
    problems = block_kit_problems(surface, payload)
    if problems:
        raise AssertionError(f"Slack would reject this {surface}:\n- " + "\n- ".join(problems))


class _Checker:
    def __init__(self, surface: Surface) -> None:
        self.surface = surface
        self.problems: list[str] = []
        self._block_ids: dict[str, int] = {}

    def report(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    # -- the surface ---------------------------------------------------------------------------------

    def check(self, payload: Mapping[str, Any]) -> None:
        if not isinstance(payload, Mapping):
            self.report(self.surface, f"must be an object, got {type(payload).__name__}")
            return
        if self.surface == "message":
            self._message(payload)
        else:
            self._view(payload)
        if not self.problems and self.surface != "message":
            self._sdk_backstop("view", lambda: View(**copy.deepcopy(dict(payload))).to_dict())

    def _message(self, message: Mapping[str, Any]) -> None:
        text, blocks = message.get("text"), message.get("blocks")
        if text is not None and not isinstance(text, str):
            self.report("text", f"must be a string, got {type(text).__name__}")
        if not text and not blocks:
            self.report("message", "needs text or blocks (Slack answers no_text)")
        if blocks is not None:
            self._blocks(blocks, required=False)

    def _view(self, view: Mapping[str, Any]) -> None:
        if view.get("type") != self.surface:
            self.report("type", f"must be {self.surface!r}, got {view.get('type')!r}")
        if self.surface == "modal":
            self._text("title", view.get("title"), plain=True, limit=24)
            self._text("submit", view.get("submit"), plain=True, limit=24, required=False)
            self._text("close", view.get("close"), plain=True, limit=24, required=False)
        else:
            for key in ("submit", "close"):
                if view.get(key) is not None:
                    self.report(key, "a Home tab cannot have submit or close buttons")
        self._string("callback_id", view.get("callback_id"), 255)
        self._string("external_id", view.get("external_id"), 255)
        self._string("private_metadata", view.get("private_metadata"), 3000)
        blocks = view.get("blocks")
        self._blocks(blocks, required=True)
        has_input = isinstance(blocks, list) and any(
            isinstance(b, Mapping) and b.get("type") == "input" for b in blocks
        )
        if self.surface == "modal" and has_input and view.get("submit") is None:
            self.report("submit", "a modal with an input block needs a submit button")

    # -- blocks --------------------------------------------------------------------------------------

    def _blocks(self, blocks: Any, *, required: bool) -> None:
        if blocks is None and not required:
            return
        if not isinstance(blocks, list):
            self.report("blocks", f"must be a list, got {type(blocks).__name__}")
            return
        limit = MAX_BLOCKS[self.surface]
        if required and not blocks:
            self.report("blocks", "must contain at least one block")
        if len(blocks) > limit:
            self.report("blocks", f"{len(blocks)} blocks; a {self.surface} allows at most {limit}")
        for index, block in enumerate(blocks):
            self._block(index, block)

    def _block(self, index: int, block: Any) -> None:
        where = f"blocks[{index}]"
        if not isinstance(block, Mapping):
            self.report(where, f"must be an object, got {type(block).__name__}")
            return
        kind = block.get("type")
        block_id = block.get("block_id")
        if block_id is not None:
            where = f"{where} (block_id {block_id!r})"
        before = len(self.problems)
        if kind not in _KNOWN_BLOCK_TYPES:
            self.report(where, f"unknown block type {kind!r}")
            return
        self._keys(where, block, _BLOCK_KEYS.get(kind))
        if block_id is not None:
            self._string(f"{where}.block_id", block_id, 255, allow_empty=False)
            if isinstance(block_id, str):
                if block_id in self._block_ids:
                    self.report(
                        where, f"block_id repeats blocks[{self._block_ids[block_id]}]; ids must be unique"
                    )
                self._block_ids.setdefault(block_id, index)
        check = getattr(self, f"_block_{kind}", None)
        if check is not None:
            check(where, block)
        if len(self.problems) == before:
            self._sdk_backstop(where, lambda: _parse_block(block))

    def _block_header(self, where: str, block: Mapping[str, Any]) -> None:
        self._text(f"{where}.text", block.get("text"), plain=True, limit=150)

    def _block_section(self, where: str, block: Mapping[str, Any]) -> None:
        text, fields = block.get("text"), block.get("fields")
        if text is None and not fields:
            self.report(where, "a section needs text or fields")
        self._text(f"{where}.text", text, plain=False, limit=3000, required=False)
        if fields is not None:
            if not isinstance(fields, list):
                self.report(f"{where}.fields", "must be a list of text objects")
            else:
                if len(fields) > 10:
                    self.report(f"{where}.fields", f"{len(fields)} fields; Slack allows at most 10")
                for i, item in enumerate(fields):
                    self._text(f"{where}.fields[{i}]", item, plain=False, limit=2000)
        accessory = block.get("accessory")
        if accessory is not None:
            self._element(f"{where}.accessory", accessory, allowed=_ACCESSORY_ELEMENTS)

    def _block_context(self, where: str, block: Mapping[str, Any]) -> None:
        elements = self._element_list(where, block, limit=10)
        for i, item in enumerate(elements):
            at = f"{where}.elements[{i}]"
            if isinstance(item, Mapping) and item.get("type") in _TEXT_KEYS:
                self._text(at, item, plain=False, limit=None)
            else:
                self._element(at, item, allowed={"image"})

    def _block_actions(self, where: str, block: Mapping[str, Any]) -> None:
        action_ids: set[str] = set()
        for i, item in enumerate(self._element_list(where, block, limit=25)):
            self._element(f"{where}.elements[{i}]", item, allowed=_ACTIONS_ELEMENTS)
            action_id = item.get("action_id") if isinstance(item, Mapping) else None
            if isinstance(action_id, str):
                if action_id in action_ids:
                    self.report(where, f"action_id {action_id!r} repeats within the block")
                action_ids.add(action_id)

    def _block_input(self, where: str, block: Mapping[str, Any]) -> None:
        if self.surface == "message":
            self.report(where, "input blocks are only allowed in modals and Home tabs")
        self._text(f"{where}.label", block.get("label"), plain=True, limit=2000)
        self._text(f"{where}.hint", block.get("hint"), plain=True, limit=2000, required=False)
        element = block.get("element")
        if element is None:
            self.report(where, "an input block needs an element")
        else:
            self._element(f"{where}.element", element, allowed=_INPUT_ELEMENTS)
        for flag in ("optional", "dispatch_action"):
            if flag in block and not isinstance(block[flag], bool):
                self.report(f"{where}.{flag}", "must be a boolean")

    def _block_image(self, where: str, block: Mapping[str, Any]) -> None:
        self._image(where, block)
        self._text(f"{where}.title", block.get("title"), plain=True, limit=2000, required=False)

    # -- elements ------------------------------------------------------------------------------------

    def _element_list(self, where: str, block: Mapping[str, Any], *, limit: int) -> list[Any]:
        elements = block.get("elements")
        if not isinstance(elements, list) or not elements:
            self.report(f"{where}.elements", "must be a non-empty list")
            return []
        if len(elements) > limit:
            self.report(f"{where}.elements", f"{len(elements)} elements; Slack allows at most {limit}")
        return elements

    def _element(self, where: str, element: Any, *, allowed: Iterable[str]) -> None:
        if not isinstance(element, Mapping):
            self.report(where, f"must be an object, got {type(element).__name__}")
            return
        kind = element.get("type")
        if not isinstance(kind, str) or kind not in allowed:
            self.report(where, f"element type {kind!r} is not allowed here")
            return
        self._keys(where, element, _ELEMENT_KEYS.get(kind))
        if "action_id" in element:
            self._string(f"{where}.action_id", element["action_id"], 255, allow_empty=False)
        if "placeholder" in element:
            self._text(f"{where}.placeholder", element["placeholder"], plain=True, limit=150)
        if kind == "button":
            self._text(f"{where}.text", element.get("text"), plain=True, limit=75)
            self._string(f"{where}.value", element.get("value"), 2000)
            self._string(f"{where}.url", element.get("url"), 3000)
            if element.get("style") not in (None, "primary", "danger"):
                self.report(f"{where}.style", f"must be 'primary' or 'danger', got {element.get('style')!r}")
            if element.get("confirm") is not None:
                self._confirm(f"{where}.confirm", element["confirm"])
        elif kind == "plain_text_input":
            self._text_input(where, element)
        elif kind == "image":
            self._image(where, element)
        elif kind in _SELECTS and isinstance(element.get("options"), list):
            self._options(where, element["options"])

    def _text_input(self, where: str, element: Mapping[str, Any]) -> None:
        max_length, min_length = element.get("max_length"), element.get("min_length")
        if max_length is not None and (not _is_int(max_length) or not 1 <= max_length <= 3000):
            self.report(f"{where}.max_length", f"must be an integer from 1 to 3000, got {max_length!r}")
            max_length = None
        if min_length is not None and (not _is_int(min_length) or not 0 <= min_length <= 3000):
            self.report(f"{where}.min_length", f"must be an integer from 0 to 3000, got {min_length!r}")
            min_length = None
        if max_length is not None and min_length is not None and min_length > max_length:
            self.report(where, f"min_length {min_length} exceeds max_length {max_length}")
        initial = element.get("initial_value")
        if initial is not None:
            self._string(f"{where}.initial_value", initial, max_length or 3000)

    def _image(self, where: str, image: Mapping[str, Any]) -> None:
        if image.get("image_url") is None and image.get("slack_file") is None:
            self.report(where, "an image needs image_url or slack_file")
        self._string(f"{where}.image_url", image.get("image_url"), 3000)
        self._string(f"{where}.alt_text", image.get("alt_text"), 2000, allow_empty=False)
        if image.get("alt_text") is None:
            self.report(where, "an image needs alt_text")

    def _confirm(self, where: str, confirm: Any) -> None:
        if not isinstance(confirm, Mapping):
            self.report(where, "must be a confirmation dialog object")
            return
        self._text(f"{where}.title", confirm.get("title"), plain=True, limit=100)
        self._text(f"{where}.text", confirm.get("text"), plain=False, limit=300)
        self._text(f"{where}.confirm", confirm.get("confirm"), plain=True, limit=30)
        self._text(f"{where}.deny", confirm.get("deny"), plain=True, limit=30)

    def _options(self, where: str, options: list[Any]) -> None:
        if len(options) > 100:
            self.report(f"{where}.options", f"{len(options)} options; Slack allows at most 100")
        for i, option in enumerate(options):
            at = f"{where}.options[{i}]"
            if not isinstance(option, Mapping):
                self.report(at, "must be an option object")
                continue
            self._text(f"{at}.text", option.get("text"), plain=True, limit=75)
            self._string(f"{at}.value", option.get("value"), 150, allow_empty=False)

    # -- leaves --------------------------------------------------------------------------------------

    def _text(self, where: str, obj: Any, *, plain: bool, limit: int | None, required: bool = True) -> None:
        wanted = "plain_text" if plain else "plain_text or mrkdwn"
        if obj is None:
            if required:
                self.report(where, f"is required (a {wanted} text object)")
            return
        if not isinstance(obj, Mapping):
            self.report(
                where, f'must be a text object {{"type": "{wanted}", "text": ...}}, got {type(obj).__name__}'
            )
            return
        kind = obj.get("type")
        if not isinstance(kind, str) or kind not in (("plain_text",) if plain else ("plain_text", "mrkdwn")):
            self.report(f"{where}.type", f"must be {wanted}, got {kind!r}")
            return
        self._keys(where, obj, _TEXT_KEYS[kind])
        text = obj.get("text")
        if not isinstance(text, str) or not text:
            self.report(f"{where}.text", "must be a non-empty string")
        elif limit is not None and len(text) > limit:
            self.report(f"{where}.text", f"is {len(text)} characters; Slack allows at most {limit}")

    def _string(self, where: str, value: Any, limit: int, *, allow_empty: bool = True) -> None:
        if value is None:
            return
        if not isinstance(value, str):
            self.report(where, f"must be a string, got {type(value).__name__}")
        elif not value and not allow_empty:
            self.report(where, "must not be empty")
        elif len(value) > limit:
            self.report(where, f"is {len(value)} characters; Slack allows at most {limit}")

    def _keys(self, where: str, obj: Mapping[str, Any], allowed: set[str] | None) -> None:
        if allowed is None:
            return
        unknown = sorted(set(obj) - allowed)
        if unknown:
            self.report(where, f"unknown properties {unknown} (Slack rejects additional properties)")

    def _sdk_backstop(self, where: str, run: Any) -> None:
        try:
            run()
        except SlackObjectFormationError as exc:
            self.report(where, f"slack_sdk: {exc}")
        except (TypeError, KeyError, AttributeError, ValueError) as exc:
            self.report(where, f"malformed ({type(exc).__name__}: {exc})")


def _parse_block(block: Mapping[str, Any]) -> None:
    parsed = Block.parse(copy.deepcopy(dict(block)))
    if parsed is None:
        raise ValueError("slack_sdk could not parse the block")
    parsed.to_dict()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
