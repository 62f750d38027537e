"""What a verification found, in blocks: the headline, the checks, the hints, the next step.

These pieces are shared by the result view in the modal (:mod:`blocks.forms`), the direct message
sent when the user closed the modal, and other messages that report a verification. Everything a
provider or its API wrote is escaped: a check's detail can quote an API response.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from slack_sdk.models.blocks import ButtonElement

from blocks.parts import (
    MESSAGE_MAX_BLOCKS,
    Block,
    actions,
    checks_blocks,
    context,
    hints_blocks,
    item_lines,
    message,
    provider_name,
    quoted_name,
    reply,
    section,
)
from blocks.text import SECTION_TEXT_MAX, escape, inline, literal, one_line, truncate
from bot import ids
from bot.domain import ConfigChange, RequestKind
from bot.providers.base import Provider, Verification

__all__ = [
    "ALSO_CHANGES",
    "NOTHING_SAVED",
    "ONLY_THE_SECRET",
    "TRY_AGAIN_BLOCK",
    "config_change_lines",
    "latency_text",
    "outcome_headline",
    "problem_message",
    "result_blocks",
    "result_message",
    "try_again_block",
    "verification_facts",
]

NOTHING_SAVED = "Nothing was saved."
TRY_AGAIN_BLOCK = "try_again"
"""block_id of the actions block that holds the Try again button."""

ALSO_CHANGES = "*This rotation also changes* (before → after):"
ONLY_THE_SECRET = "*Only the secret changes:* every other setting stays as it is."

# Escaping can make text five times longer (& -> &amp;): 500 characters stay within a section.
_SUMMARY_MAX = 500


def outcome_headline(provider: Provider, verification: Verification, name: str | None = None) -> str:
    """The first lines of a result, in mrkdwn: did the credentials work, and if not, why."""
    summary = literal(truncate(verification.summary.strip(), _SUMMARY_MAX))
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


def latency_text(latency_ms: int) -> str:
    """ "240 ms" below a second, "1.2 s" above."""
    return f"{latency_ms} ms" if latency_ms < 1000 else f"{latency_ms / 1000:.1f} s"


def verification_facts(title: str, verification: Verification) -> str:
    """ "Checked in 240 ms · <provider> request id: `…`", for a context line. ``title`` is escaped."""
    facts = [f"Checked in {latency_text(verification.latency_ms)}"]
    if verification.request_id:
        request_id = inline(verification.request_id, 200)
        facts.append(f"{title} request id: `{request_id}` (quote it if you contact them)")
    return " · ".join(facts)


def config_change_lines(changes: Sequence[ConfigChange]) -> list[str]:
    """What a rotation changes besides the secret, as mrkdwn lines that each fit in a section: a
    heading, then "• *REST endpoint*: https://a → https://b" per setting; or that only the secret
    changes. Values are escaped user text on one line, never shortened: a cut value could hide
    the host it points at."""
    if not changes:
        return [ONLY_THE_SECRET]
    lines = [ALSO_CHANGES]
    for change in changes:
        shown = f"{one_line(change.before, '(not set)')} → {one_line(change.after, '(not set)')}"
        lines += item_lines(f"• *{inline(change.label, 100, 'setting')}*", shown, separator=": ")
    return lines


def try_again_block(value: str) -> Block:
    """The Try again button; ``value`` carries what the listener needs to reopen the form."""
    button = ButtonElement(text="Try again", action_id=ids.ACTION_TRY_AGAIN, value=value, style="primary")
    return actions(button, block_id=TRY_AGAIN_BLOCK)


def result_blocks(
    provider: Provider,
    name: str,
    verification: Verification,
    *,
    approval_note: str = "",
    try_again_value: str | None = None,
    max_blocks: int = MESSAGE_MAX_BLOCKS,
    kind: RequestKind = RequestKind.CONNECTION,
) -> list[Block]:
    """The full result: headline, then on success the checks, the approval note and the latency;
    on failure what to check, the checks, the provider's request id, "Nothing was saved." (for new
    credentials, also that the connection keeps its current key) and, when ``try_again_value`` is
    given, a Try again button.

    ``approval_note`` is mrkdwn written by the caller, so it may link a channel (``<#C123>``);
    anything a user typed must be escaped before it goes in. The name and everything from the
    provider are escaped here."""
    rotation = kind is RequestKind.ROTATION
    # At most six fixed blocks (eight for new credentials); the rest is for the checks and hints.
    room = max_blocks - (8 if rotation else 6)
    if room < 2:
        raise ValueError("max_blocks is too small for a result")
    checks_room = max(1, room // 4)
    blocks: list[Block] = [section(outcome_headline(provider, verification, name))]
    facts = context(verification_facts(escape(provider.title), verification))
    if verification.ok:
        blocks += checks_blocks(verification.checks, failures_are_fatal=False, max_blocks=checks_room)
        if approval_note.strip():
            # Written by the caller in mrkdwn (it may link the admin channel), not user text.
            blocks.append(section(truncate(approval_note.strip(), SECTION_TEXT_MAX)))
        return [*blocks, facts]
    blocks += hints_blocks(verification.hints, max_blocks=room - checks_room)
    blocks += checks_blocks(verification.checks, failures_are_fatal=True, max_blocks=checks_room)
    blocks += [facts, section(f"*{NOTHING_SAVED}*")]
    if rotation:
        title = provider_name(provider)
        blocks.append(section(f"*Nothing changed:* {quoted_name(name)} keeps using its current {title} key."))
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
    kind: RequestKind = RequestKind.CONNECTION,
) -> dict[str, Any]:
    """The result as a direct message, for when the user closed the modal before it came."""
    new = "" if kind is RequestKind.CONNECTION else "new "
    subject = f"the {new}credentials for {quoted_name(name)}"
    if verification.ok:
        text = f"✅ {subject[0].upper()}{subject[1:]} work."
    else:
        summary = inline(verification.summary, 300, "the verification failed")
        shown = quoted_name(name) if kind is RequestKind.CONNECTION else subject
        text = f"❌ Couldn't verify {shown} with {escape(provider.title)}: {summary}"
    blocks = result_blocks(
        provider, name, verification, approval_note=approval_note, try_again_value=try_again_value, kind=kind
    )
    return message(text, blocks)


def problem_message(provider: Provider, name: str, problem: str) -> dict[str, Any]:
    """A failure that is not the provider's answer, as a direct message (see ``problem_view``)."""
    problem_text = literal(truncate(problem.strip(), 2500))
    return reply(f"⚠️ {escape(provider.title)} connection {quoted_name(name)}: {problem_text}")
