"""What a verification found, in blocks: the headline, the checks, the hints, the next step.

These pieces are shared by the result view in the modal (:mod:`blocks.modal`), the direct message
sent when the user closed the modal, and other messages that report a verification. Everything a
provider or its API wrote is escaped: a check's detail can quote an API response.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    ButtonElement,
    ContextBlock,
    MarkdownTextObject,
    SectionBlock,
)

from blocks.text import SECTION_TEXT_MAX, escape, escaped_chunks, one_line, truncate
from bot import ids
from bot.providers.base import Check, Provider, Verification

__all__ = [
    "MESSAGE_MAX_BLOCKS",
    "NOTHING_SAVED",
    "TRY_AGAIN_BLOCK",
    "checks_blocks",
    "context",
    "hints_blocks",
    "latency_text",
    "message",
    "outcome_headline",
    "pack_sections",
    "problem_message",
    "quoted_name",
    "result_blocks",
    "result_message",
    "section",
    "try_again_block",
]

Block = dict[str, Any]

MESSAGE_MAX_BLOCKS = 50
"""Slack's limit for one message (a modal or App Home allows 100)."""
NOTHING_SAVED = "Nothing was saved."
TRY_AGAIN_BLOCK = "try_again"
"""block_id of the actions block that holds the Try again button."""

_LEFT_OUT = "_Some items were left out to fit in Slack._"
# Names are at most NAME_MAX_LENGTH when stored; the cap only guards against a caller's mistake.
_NAME_SHOWN_MAX = 100
# Escaping can make text five times longer (& -> &amp;): 500 characters stay within a section.
_SUMMARY_MAX = 500


def message(text: str, blocks: Sequence[Block]) -> dict[str, Any]:
    """A ``{"text", "blocks"}`` message payload; ``text`` is the notification fallback.

    slack_sdk does not check the 50-block limit of a message, so this does.
    """
    if not text:
        raise ValueError("a message needs fallback text for notifications")
    if not 1 <= len(blocks) <= MESSAGE_MAX_BLOCKS:
        raise ValueError(f"a message holds 1 to {MESSAGE_MAX_BLOCKS} blocks, not {len(blocks)}")
    return {"text": text, "blocks": list(blocks)}


def quoted_name(name: str) -> str:
    """A connection name ready for mrkdwn: one line, shortened, escaped, in quotes."""
    return f"“{escape(truncate(one_line(name), _NAME_SHOWN_MAX))}”"


def outcome_headline(provider: Provider, verification: Verification, name: str | None = None) -> str:
    """The first lines of a result, in mrkdwn: did the credentials work, and if not, why."""
    summary = escape(truncate(verification.summary.strip(), _SUMMARY_MAX))
    subject = f"the credentials for {quoted_name(name)}" if name is not None else "the credentials"
    if verification.ok:
        headline = f"✅ *{subject[0].upper() + subject[1:]} work.*"
        return f"{headline}\n{summary}" if summary else headline
    headline = f"❌ *{summary}*" if summary else "❌ *The verification failed.*"
    title = escape(provider.title)
    if verification.outcome.is_users_to_fix:
        next_step = "Check the details below, then try again."
    else:
        next_step = "This is often temporary: try again in a minute."
    return f"{headline}\nWe couldn't verify {subject} with {title}. {next_step}"


def checks_blocks(checks: Sequence[Check], *, failures_are_fatal: bool, max_blocks: int = 10) -> list[Block]:
    """The checks that ran, one line each: ✅ passed, ❌ failed (or ⚠️ when the credentials
    still work, ``failures_are_fatal=False``), with what each found."""
    if not checks:
        return []
    failed_icon = "❌" if failures_are_fatal else "⚠️"
    lines = ["*Checks*"]
    for check in checks:
        icon = "✅" if check.passed else failed_icon
        label = f"{icon} *{escape(truncate(one_line(check.name), 200))}*"
        lines.extend(_item_lines(label, check.detail.strip(), separator=" — "))
    return pack_sections(lines, max_blocks)


def hints_blocks(hints: Sequence[str], *, title: str = "What to check", max_blocks: int = 20) -> list[Block]:
    """Troubleshooting hints as bullets under a bold title, split across sections as needed."""
    if not hints:
        return []
    lines = [f"*{escape(title)}*"]
    for hint in hints:
        lines.extend(_item_lines("•", hint.strip(), separator=" "))
    return pack_sections(lines, max_blocks)


def latency_text(latency_ms: int) -> str:
    """ "240 ms" below a second, "1.2 s" above."""
    if latency_ms < 1000:
        return f"{latency_ms} ms"
    return f"{latency_ms / 1000:.1f} s"


def try_again_block(value: str) -> Block:
    """The Try again button; ``value`` carries what the listener needs to reopen the form."""
    button = ButtonElement(text="Try again", action_id=ids.ACTION_TRY_AGAIN, value=value, style="primary")
    return dict(ActionsBlock(block_id=TRY_AGAIN_BLOCK, elements=[button]).to_dict())


def result_blocks(
    provider: Provider,
    name: str,
    verification: Verification,
    *,
    approval_note: str = "",
    try_again_value: str | None = None,
    max_blocks: int = MESSAGE_MAX_BLOCKS,
) -> list[Block]:
    """The full result: headline, then on success the checks, the approval note and the latency;
    on failure what to check, the checks, the provider's request id, "Nothing was saved." and
    (when ``try_again_value`` is given) a Try again button.

    ``approval_note`` is mrkdwn written by the caller, so it may link a channel (``<#C123>``);
    anything a user typed must be escaped before it goes in. The name and everything from the
    provider are escaped here."""
    # At most six fixed blocks; the rest is shared by the checks and the hints.
    room = max_blocks - 6
    if room < 2:
        raise ValueError("max_blocks is too small for a result")
    checks_room = max(1, room // 4)
    blocks: list[Block] = [section(outcome_headline(provider, verification, name))]
    if verification.ok:
        blocks += checks_blocks(verification.checks, failures_are_fatal=False, max_blocks=checks_room)
        if approval_note.strip():
            # Written by the caller in mrkdwn (it may link the admin channel), not user text.
            blocks.append(section(truncate(approval_note.strip(), SECTION_TEXT_MAX)))
        blocks.append(context(_facts(provider, verification)))
        return blocks
    blocks += hints_blocks(verification.hints, max_blocks=room - checks_room)
    blocks += checks_blocks(verification.checks, failures_are_fatal=True, max_blocks=checks_room)
    blocks.append(context(_facts(provider, verification)))
    blocks.append(section(f"*{NOTHING_SAVED}*"))
    if try_again_value is not None:
        blocks.append(try_again_block(try_again_value))
    return blocks


def result_message(
    provider: Provider,
    name: str,
    verification: Verification,
    approval_note: str = "",
    *,
    try_again_value: str | None = None,
) -> dict[str, Any]:
    """The result as a direct message, for when the user closed the modal before it came."""
    shown = quoted_name(name)
    if verification.ok:
        text = f"✅ The credentials for {shown} work."
    else:
        summary = escape(truncate(one_line(verification.summary, "the verification failed"), 300))
        text = f"❌ Couldn't verify {shown} with {escape(provider.title)}: {summary}"
    blocks = result_blocks(
        provider,
        name,
        verification,
        approval_note=approval_note,
        try_again_value=try_again_value,
        max_blocks=MESSAGE_MAX_BLOCKS,
    )
    return message(text, blocks)


def problem_message(provider: Provider, name: str, problem: str) -> dict[str, Any]:
    """A failure that is not the provider's answer, as a direct message (see ``problem_view``)."""
    problem_text = escape(truncate(problem.strip(), 2500))
    text = f"⚠️ {escape(provider.title)} connection {quoted_name(name)}: {problem_text}"
    return message(text, [section(text)])


def _facts(provider: Provider, verification: Verification) -> str:
    facts = [f"Checked in {latency_text(verification.latency_ms)}"]
    if verification.request_id:
        request_id = escape(truncate(one_line(verification.request_id), 200))
        facts.append(f"{escape(provider.title)} request id: `{request_id}` (quote it if you contact them)")
    return " · ".join(facts)


def _item_lines(label: str, body: str, *, separator: str) -> list[str]:
    """One list item as lines that each fit in a section; the label starts the first one."""
    if not body:
        return [label]
    prefix = label + separator
    first, *rest = escaped_chunks(body, SECTION_TEXT_MAX - len(prefix))
    return [prefix + first, *rest]


def pack_sections(lines: Sequence[str], max_blocks: int, *, left_out: str = _LEFT_OUT) -> list[Block]:
    """Pack lines into as few sections as fit, keeping at most ``max_blocks``; past that, the last
    kept section says that ``left_out``."""
    texts: list[str] = []
    current = ""
    for line in lines:
        joined = f"{current}\n{line}" if current else line
        if len(joined) <= SECTION_TEXT_MAX:
            current = joined
            continue
        texts.append(current)
        current = line
    if current:
        texts.append(current)
    if len(texts) > max_blocks:
        texts = [*texts[: max_blocks - 1], left_out]
    return [section(text) for text in texts]


def section(text: str) -> Block:
    """A section holding one mrkdwn text (at most 3000 characters, already escaped)."""
    return dict(SectionBlock(text=MarkdownTextObject(text=text)).to_dict())


def context(text: str) -> Block:
    """A context line holding one mrkdwn text (already escaped)."""
    return dict(ContextBlock(elements=[MarkdownTextObject(text=text)]).to_dict())
