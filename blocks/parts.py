"""The pieces every message is made of: the payload, sections, context lines, headers, buttons and
modals, and the way a name, a provider, a key hint, a user, a reason and a list of checks are shown.

Everything a user or a provider wrote goes through here as :func:`blocks.text.literal` text, but
for a provider's hints: the bot's own mrkdwn, only escaped, with the values in them made inert
where the provider wrote them (:func:`hints_blocks`). User ids become ``<@U…>`` mentions only
when they look like Slack user ids (see :func:`blocks.text.user_mention`). Every mrkdwn object is
``verbatim``: Slack's server then turns no bare URL or channel name into a link, so only the bot's
own ``<…>`` markup links or mentions.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    ButtonElement,
    ContextBlock,
    HeaderBlock,
    MarkdownTextObject,
    SectionBlock,
)
from slack_sdk.models.views import View

from blocks.text import (
    HEADER_MAX,
    SECTION_TEXT_MAX,
    chunks,
    escape,
    inline,
    literal,
    truncate,
    unlinked,
    user_mention,
)
from bot.domain import ConnectionSummary, SecretLocation
from bot.providers.base import Check, Provider

__all__ = [
    "MESSAGE_MAX_BLOCKS",
    "Block",
    "actions",
    "admin_unchecked",
    "by",
    "check_line",
    "checks_blocks",
    "context",
    "fields_section",
    "header",
    "hints_blocks",
    "item_lines",
    "key_text",
    "message",
    "modal",
    "mrkdwn",
    "name_text",
    "named_key",
    "not_admin",
    "pack_sections",
    "provider_name",
    "provider_text",
    "quoted_name",
    "quoted_reason",
    "refusal_message",
    "reply",
    "secret_path_text",
    "section",
    "stored_in",
]

Block = dict[str, Any]

MESSAGE_MAX_BLOCKS = 50
"""Slack's limit for one message (a modal or App Home allows 100)."""

_LEFT_OUT = "_Some items were left out to fit in Slack._"
# Names are at most NAME_MAX_LENGTH when stored; the cap only guards against a caller's mistake.
_NAME_SHOWN_MAX = 100
_PROVIDER_SHOWN_MAX = 150
_KEY_HINT_SHOWN_MAX = 40
# The modal caps reasons at REASON_MAX_LENGTH; this guards a caller passing something longer.
# Escaping and quoting grow a text at most fivefold, so this many characters fit in a section.
_REASON_SHOWN_MAX = 550
_REFUSAL_MAX = 500


def message(text: str, blocks: Sequence[Block]) -> dict[str, Any]:
    """A ``{"text", "blocks"}`` message payload; ``text`` is the notification fallback.

    slack_sdk does not check the 50-block limit of a message, so this does.
    """
    if not text:
        raise ValueError("a message needs fallback text for notifications")
    if not 1 <= len(blocks) <= MESSAGE_MAX_BLOCKS:
        raise ValueError(f"a message holds 1 to {MESSAGE_MAX_BLOCKS} blocks, not {len(blocks)}")
    return {"text": text, "blocks": list(blocks)}


def section(text: str, accessory: ButtonElement | None = None) -> Block:
    """A section holding one mrkdwn text (at most 3000 characters, already escaped), and maybe a button."""
    return dict(SectionBlock(text=mrkdwn(text), accessory=accessory).to_dict())


def context(*texts: str) -> Block:
    """A context line of mrkdwn texts (already escaped), at most ten."""
    return dict(ContextBlock(elements=[mrkdwn(text) for text in texts]).to_dict())


def fields_section(fields: Sequence[str]) -> Block:
    """A section of "*Label*\nvalue" fields, each mrkdwn (already escaped)."""
    return dict(SectionBlock(fields=[mrkdwn(f) for f in fields]).to_dict())


def mrkdwn(text: str) -> MarkdownTextObject:
    """A mrkdwn text object of ours: ``verbatim``, so Slack links and mentions only our ``<…>`` markup."""
    return MarkdownTextObject(text=text, verbatim=True)


def header(text: str) -> Block:
    """A header block (plain text, which never formats), shortened to Slack's limit; nothing in it
    becomes a link (:func:`blocks.text.unlinked`)."""
    return dict(HeaderBlock(text=truncate(unlinked(text), HEADER_MAX)).to_dict())


def actions(*buttons: ButtonElement, block_id: str | None = None) -> Block:
    """An actions block holding ``buttons``."""
    return dict(ActionsBlock(block_id=block_id, elements=list(buttons)).to_dict())


def modal(
    callback_id: str,
    title: str,
    blocks: Sequence[Block],
    *,
    close: str = "Cancel",
    submit: str | None = None,
    private_metadata: str | None = None,
    notify_on_close: bool | None = None,
) -> dict[str, Any]:
    """A modal view. Slack echoes ``private_metadata`` to every client, so it must hold ids only."""
    view = View(
        type="modal",
        callback_id=callback_id,
        title=title,
        submit=submit,
        close=close,
        notify_on_close=notify_on_close,
        private_metadata=private_metadata,
        blocks=list(blocks),
    )
    return dict(view.to_dict())


def reply(text: str) -> dict[str, Any]:
    """A short ephemeral reply of one mrkdwn text (already escaped)."""
    return message(text, [section(text)])


def refusal_message(text: str) -> dict[str, Any]:
    """A short ephemeral reply from one or two plain-text sentences (a refusal, a not-found)."""
    return reply(literal(truncate(text.strip() or "Nothing changed.", _REFUSAL_MAX)))


def not_admin(text: str, how_to_become: str) -> dict[str, Any]:
    """``text`` (a refusal), then ``how_to_become`` an admin: the caller's mrkdwn (it may link a
    channel or a user group), not user text, so it is not escaped."""
    how = how_to_become.strip()
    return reply(f"{text} {how}" if how else text)


def admin_unchecked(why: str, so: str, limit: int = 500) -> str:
    """Slack could not confirm an admin, so we refuse rather than guess: ``why`` (plain text,
    escaped here), then ``so``, what was refused and when to try again."""
    shown = inline(why, limit, "no reason given")
    return f"⚠️ We couldn't check your admin rights with Slack right now ({shown}), so {so}"


def name_text(name: str) -> str:
    """A connection name ready for mrkdwn: one line, shortened, escaped."""
    return inline(name, _NAME_SHOWN_MAX)


def quoted_name(name: str) -> str:
    """A connection name ready for mrkdwn, in quotes."""
    return f"“{name_text(name)}”"


def provider_text(connection: ConnectionSummary) -> str:
    """The connection's provider by its title (its key when the title is blank), escaped."""
    return inline(connection.provider_title, _PROVIDER_SHOWN_MAX, connection.provider_key)


def provider_name(provider: Provider) -> str:
    """A provider's title, escaped."""
    return inline(provider.title, _PROVIDER_SHOWN_MAX, "the provider")


_COPYABLE_PATH = re.compile(r"[A-Za-z0-9/_+=.@-]{1,512}")
"""What ``CONNECTIONS_SECRET_PATH`` can render (see :mod:`bot.stores.paths`)."""


def secret_path_text(path: str) -> str:
    """A secret's path in code, exactly as pipelines reference it, so it can be copied: a path the
    template renders holds none of ``&<>`` and nothing that a code span lets format, mention or
    link, so it is not broken up with invisible characters. Anything else is shown literally."""
    return f"`{path}`" if _COPYABLE_PATH.fullmatch(path) else f"`{inline(path, 512)}`"


def stored_in(location: SecretLocation) -> str:
    """ "AWS Secrets Manager at `connections/T…/<provider>/prod-kafka`"."""
    return f"{inline(location.store_title, 100, location.store_key)} at {secret_path_text(location.path)}"


def key_text(hint: str | None) -> str:
    """A masked key hint (first and last characters) as the store keeps it, in code; never more."""
    return f"`{inline(hint, _KEY_HINT_SHOWN_MAX)}`" if hint else "—"


def named_key(hint: str | None) -> str:
    """ " `ABCD…WXYZ`" to follow "key" in a sentence, or nothing when there is no hint."""
    return f" {key_text(hint)}" if hint else ""


def by(user_id: str | None) -> str:
    """ " by <@U…>", or nothing when nobody did it (an expiry)."""
    return f" by {user_mention(user_id)}" if user_id else ""


def quoted_reason(reason: str | None) -> str:
    """The reason as a mrkdwn block quote, literal line by line so it cannot end the quote early."""
    text = (reason or "").strip()
    if not text:
        return "_No reason was given._"
    lines = truncate(text, _REASON_SHOWN_MAX).splitlines()
    return "\n".join(f"> {literal(line)}" if line.strip() else ">" for line in lines)


def checks_blocks(checks: Sequence[Check], *, failures_are_fatal: bool, max_blocks: int = 10) -> list[Block]:
    """The checks that ran, one line each: ✅ passed, ❌ failed (or ⚠️ when the credentials
    still work, ``failures_are_fatal=False``), with what each found."""
    if not checks:
        return []
    failed_icon = "❌" if failures_are_fatal else "⚠️"
    lines = ["*Checks*"]
    for check in checks:
        icon = "✅" if check.passed else failed_icon
        label = f"{icon} *{inline(check.name, 200)}*"
        lines.extend(item_lines(label, check.detail.strip(), " — ", literal))
    return pack_sections(lines, max_blocks)


def check_line(check: Check, icon: str, detail_max: int) -> str:
    """One check on one line, "❌ *name* — detail", for a compact list of checks."""
    detail = inline(check.detail, detail_max, "")
    return f"{icon} *{inline(check.name, 100, 'check')}*" + (f" — {detail}" if detail else "")


def hints_blocks(hints: Sequence[str], *, max_blocks: int = 20) -> list[Block]:
    """Troubleshooting hints as bullets under "What to check", split across sections as needed.

    A hint is the provider's own mrkdwn, so only escaped: its code spans and links work, and each
    value a user or a server chose is already :func:`bot.markup.inert` in it."""
    if not hints:
        return []
    lines = ["*What to check*"]
    for hint in hints:
        lines.extend(item_lines("•", hint.strip(), " ", escape))
    return pack_sections(lines, max_blocks)


def item_lines(label: str, body: str, separator: str, shown: Callable[[str], str] = literal) -> list[str]:
    """One list item as lines that each fit in a section; the label starts the first one."""
    if not body:
        return [label]
    prefix = label + separator
    first, *rest = chunks(body, SECTION_TEXT_MAX - len(prefix), shown)
    return [prefix + first, *rest]


def pack_sections(lines: Sequence[str], max_blocks: int, *, left_out: str = _LEFT_OUT) -> list[Block]:
    """Pack lines into as few sections as fit, keeping at most ``max_blocks``; past that, the last
    kept section says that ``left_out``."""
    texts: list[str] = []
    current = ""
    for line in lines:
        joined = f"{current}\n{line}" if current else line
        if len(joined) > SECTION_TEXT_MAX:
            texts.append(current)
            joined = line
        current = joined
    if current:
        texts.append(current)
    if len(texts) > max_blocks:
        texts = [*texts[: max_blocks - 1], left_out]
    return [section(text) for text in texts]
