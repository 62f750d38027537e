"""Re-testing stored credentials, in blocks: the "Re-testing…" notes, one connection's result, the
report of a bulk re-test, a connection's status with its recent history, and short refusals.

A re-test answers "do the stored credentials still work?", so the headline speaks of the
connection's health rather than of a form: ✅ works, ❌ failing, or ⏳ inconclusive when the
provider only rate-limited us (its health is then left as it was). Everything a user or a provider
wrote is escaped; buttons carry the connection id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    ButtonElement,
    HeaderBlock,
    MarkdownTextObject,
    SectionBlock,
)

from blocks.approval import decide_buttons
from blocks.connections import HEALTH_LABELS, RETESTABLE, key_is_stale, retest_button, rotate_button
from blocks.parts import (
    MESSAGE_MAX_BLOCKS,
    Block,
    checks_blocks,
    context,
    hints_blocks,
    message,
    pack_sections,
    quoted_name,
    section,
)
from blocks.removal import remove_button
from blocks.results import latency_text
from blocks.text import (
    HEADER_MAX,
    SECTION_TEXT_MAX,
    credential_age_text,
    duration_text,
    escape,
    one_line,
    plural,
    slack_date,
    truncate,
    user_mention,
)
from bot.domain import (
    HISTORY_SHOWN,
    ApprovalRequest,
    ChangeKind,
    ConnectionSummary,
    HistoryEntry,
    RetestReport,
    RetestResult,
    Status,
    StatusReport,
    Trigger,
)
from bot.providers.base import Outcome, Provider, Verification

__all__ = [
    "DETAILED_FAILING_MAX",
    "failing_duration",
    "provider_title",
    "retest_one_started",
    "retest_report_message",
    "retest_result_message",
    "retest_started",
    "status_message",
    "summary_text",
    "verification_facts",
]

DETAILED_FAILING_MAX = 5
"""Failing connections a bulk report shows in full; the others get one line each."""

# Slack documents no limit on a message's total size beyond 50 blocks of 3000 characters, but
# large payloads are refused in practice; a report this long is past reading anyway.
_REPORT_TEXT_MAX = 30_000
_NAME_MAX = 100
_TITLE_MAX = 100
# Escaping grows text up to fivefold, so this keeps a headline with a name well inside a section.
_SUMMARY_MAX = 400
_LINE_SUMMARY_MAX = 150
_CHECK_NAME_MAX = 100
_CHECK_DETAIL_MAX = 200
_HINT_MAX = 300
_REPORT_CHECKS_MAX = 5
_REPORT_HINTS_MAX = 3
_CHECKS_MAX_BLOCKS = 10
_HINTS_MAX_BLOCKS = 20
_HISTORY_MAX_BLOCKS = 4
_KEY_HINT_MAX = 40
_STATUS_ACTIONS_BLOCK = "connection_status_actions"


# --- shared pieces ------------------------------------------------------------------------------


def provider_title(connection: ConnectionSummary, provider: Provider | None) -> str:
    """The provider's name, escaped; the stored title when the bot no longer offers the provider."""
    title = provider.title if provider is not None else connection.provider_title
    return escape(truncate(one_line(title, connection.provider_key), _TITLE_MAX))


def summary_text(verification: Verification, limit: int = _SUMMARY_MAX) -> str:
    """What the provider said, on one line, shortened and escaped."""
    fallback = verification.outcome.value.replace("_", " ")
    return escape(truncate(one_line(verification.summary, fallback), limit))


def verification_facts(title: str, verification: Verification) -> str:
    """ "Checked in 240 ms · <provider> request id: `…`", for a context line. ``title`` is escaped."""
    facts = [f"Checked in {latency_text(verification.latency_ms)}"]
    if verification.request_id:
        request_id = escape(truncate(one_line(verification.request_id), 200))
        facts.append(f"{title} request id: `{request_id}` (quote it if you contact them)")
    return " · ".join(facts)


# --- starting -----------------------------------------------------------------------------------


def retest_started(count: int) -> dict[str, Any]:
    """Said while a bulk re-test of ``count`` connections runs; for none, that there is nothing to do."""
    if count <= 0:
        text = "There is no active connection to re-test yet. Add one with `/connections`."
    else:
        text = f"⏳ Re-testing {plural(count, 'connection')}…"
    return message(text, [section(text)])


def retest_one_started(name: str) -> dict[str, Any]:
    """Said while one connection is re-tested."""
    text = f"⏳ Re-testing {quoted_name(name)}…"
    return message(text, [section(text)])


# --- one result ---------------------------------------------------------------------------------


def retest_result_message(result: RetestResult, provider: Provider | None) -> dict[str, Any]:
    """One re-test: works, failing (with what to check) or inconclusive; the checks, the latency,
    whether an alert was raised or the connection recovered, and a Re-test button."""
    connection, verification = result.connection, result.verification
    title = provider_title(connection, provider)
    blocks: list[Block] = [section(_headline(result, title))]
    note = _change_note(result)
    if note:
        blocks.append(section(note))
    blocks += checks_blocks(
        verification.checks,
        failures_are_fatal=not result.ok and result.conclusive,
        max_blocks=_CHECKS_MAX_BLOCKS,
    )
    if not result.ok:
        blocks += hints_blocks(verification.hints, max_blocks=_HINTS_MAX_BLOCKS)
    blocks.append(context(verification_facts(title, verification)))
    if connection.status in RETESTABLE:
        blocks.append(dict(ActionsBlock(elements=[retest_button(connection.id)]).to_dict()))
    return message(_result_text(result, title), blocks)


def _headline(result: RetestResult, title: str) -> str:
    connection, verification = result.connection, result.verification
    name = quoted_name(connection.name)
    summary = summary_text(verification)
    if result.ok:
        headline = f"✅ *{name} works.* {title} accepted its stored credentials."
        return f"{headline}\n{summary}" if verification.summary.strip() else headline
    if not result.conclusive:
        return (
            f"⏳ *{name} could not be checked:* {summary}\n"
            f"{title} is rate-limiting requests, so the result is inconclusive and its health is "
            f"unchanged ({HEALTH_LABELS[connection.health]}). Re-test it in a minute."
        )
    if verification.outcome.is_users_to_fix:
        next_step = (
            f"{title} no longer accepts its stored credentials. See what to check below; if the key "
            "was replaced or revoked, rotate it."
        )
    else:
        next_step = f"This may be on {title}'s side and temporary: re-test it in a few minutes."
    return f"❌ *{name} is failing:* {summary}\n{next_step}"


def _change_note(result: RetestResult) -> str:
    change = result.change
    if change is None:
        return ""
    since = f" since {slack_date(change.failing_since)}" if change.failing_since is not None else ""
    if change.kind is ChangeKind.FAILED:
        return "🔔 This is a new failure, so an alert was raised for the team."
    if change.kind is ChangeKind.STILL_FAILING:
        return f"🔴 It has been failing{since}."
    lasted = failing_duration(result)
    return f"🎉 It works again after failing{f' for {lasted}' if lasted else ''}{since}."


def failing_duration(result: RetestResult) -> str:
    """How long the connection has been (or was) failing, "3 hours", from the failure's start to
    this re-test; empty when either is unknown."""
    change, verified = result.change, result.connection.last_verified_at
    if change is None or change.failing_since is None or verified is None:
        return ""
    return duration_text(verified - change.failing_since)


def _result_text(result: RetestResult, title: str) -> str:
    name = quoted_name(result.connection.name)
    if result.ok:
        return f"✅ {name} ({title}) works."
    if not result.conclusive:
        return f"⏳ {name} ({title}) could not be checked (rate-limited); its health is unchanged."
    return f"❌ {name} ({title}) is failing: {summary_text(result.verification, _LINE_SUMMARY_MAX)}"


# --- a bulk report ------------------------------------------------------------------------------


def retest_report_message(report: RetestReport, providers: Mapping[str, Provider]) -> dict[str, Any]:
    """A bulk re-test: the counts first, then the failing connections (the first few in full, with
    a Re-test button each), the inconclusive ones, and the healthy ones one line each. Whatever
    does not fit in one message is counted, with a pointer to ``/connections status``."""
    failing = [r for r in report.results if r.conclusive and not r.ok]
    inconclusive = [r for r in report.results if not r.conclusive]
    healthy = [r for r in report.results if r.ok]

    def title_of(result: RetestResult) -> str:
        return provider_title(result.connection, providers.get(result.connection.provider_key))

    summary = _report_summary(report)
    blocks: list[Block] = [section(summary)]
    # One block is kept for the closing note.
    room = MESSAGE_MAX_BLOCKS - len(blocks) - 1
    chars_left = _REPORT_TEXT_MAX - len(summary)
    detailed = 0
    for result in failing[:DETAILED_FAILING_MAX]:
        block, size = _failing_in_full(result, title_of(result))
        if size > chars_left:
            break
        blocks.append(block)
        detailed += 1
        chars_left -= size
    room -= detailed

    groups: list[tuple[str, list[str]]] = []
    rest = failing[detailed:]
    if rest:
        heading = f"*Also failing ({len(rest)})*" if detailed else f"*Failing ({len(rest)})*"
        groups.append((heading, [_failing_line(r, title_of(r)) for r in rest]))
    if inconclusive:
        groups.append(
            (
                f"*Inconclusive: rate-limited, health unchanged ({len(inconclusive)})*",
                [_inconclusive_line(r, title_of(r)) for r in inconclusive],
            )
        )
    if healthy:
        groups.append((f"*Healthy ({len(healthy)})*", [_healthy_line(r, title_of(r)) for r in healthy]))
    packed, left_out = _pack_counted(groups, max_blocks=room, max_chars=chars_left)
    blocks += packed

    notes = []
    if left_out:
        notes.append(f"{plural(left_out, 'more connection')} left out to fit in one message.")
    if left_out or len(rest) > 0:
        notes.append("For one connection's details and history, use `/connections status &lt;name&gt;`.")
    if notes:
        blocks.append(context(" ".join(notes)))
    return message(_report_text(report), blocks)


def _report_summary(report: RetestReport) -> str:
    total = len(report.results)
    if total == 0:
        return "There was no active connection to re-test."
    icon = "❌" if report.failing else ("⏳" if report.inconclusive else "✅")
    counts = f"{report.healthy} healthy, {report.failing} failing"
    if report.inconclusive:
        counts += f", {report.inconclusive} inconclusive (rate-limited)"
    took = _elapsed_text(report.elapsed_ms)
    return f"{icon} *{counts}*\nRe-tested {plural(total, 'connection')} in {took}."


def _report_text(report: RetestReport) -> str:
    total = len(report.results)
    if total == 0:
        return "There was no active connection to re-test."
    text = f"Re-tested {plural(total, 'connection')}: {report.healthy} healthy, {report.failing} failing"
    if report.inconclusive:
        text += f", {report.inconclusive} inconclusive (rate-limited)"
    return text


def _elapsed_text(elapsed_ms: int) -> str:
    """ "3.4 s", or "2 min 5 s" for a long run."""
    if elapsed_ms < 60_000:
        return latency_text(elapsed_ms)
    minutes, seconds = divmod(round(elapsed_ms / 1000), 60)
    return f"{minutes} min {seconds} s"


def _failing_in_full(result: RetestResult, title: str) -> tuple[Block, int]:
    """One failing connection as one section (with its Re-test button) and its text's length:
    the name and summary, then as many failed checks and hints as fit."""
    connection, verification = result.connection, result.verification
    first = f"❌ *{_name(connection)}* · {title} · {latency_text(verification.latency_ms)}"
    if result.change is not None and result.change.kind is ChangeKind.FAILED:
        first += " · 🔔 new failure"
    lines = [first, summary_text(verification)]
    failed = [c for c in verification.checks if not c.passed][:_REPORT_CHECKS_MAX]
    for check in failed:
        name = escape(truncate(one_line(check.name, "check"), _CHECK_NAME_MAX))
        detail = escape(truncate(one_line(check.detail, ""), _CHECK_DETAIL_MAX))
        lines.append(f"❌ *{name}*" + (f" — {detail}" if detail else ""))
    hints = [h for h in verification.hints if h.strip()][:_REPORT_HINTS_MAX]
    if hints:
        lines.append("*What to check*")
        lines += [f"• {escape(truncate(one_line(h, ''), _HINT_MAX))}" for h in hints]
    text = ""
    for line in lines:
        joined = f"{text}\n{line}" if text else line
        if len(joined) > SECTION_TEXT_MAX:
            break
        text = joined
    accessory = retest_button(connection.id) if connection.status in RETESTABLE else None
    block = SectionBlock(text=MarkdownTextObject(text=text), accessory=accessory)
    return dict(block.to_dict()), len(text)


def _failing_line(result: RetestResult, title: str) -> str:
    summary = summary_text(result.verification, _LINE_SUMMARY_MAX)
    latency = latency_text(result.verification.latency_ms)
    return f"❌ *{_name(result.connection)}* · {title} · {summary} · {latency}"


def _inconclusive_line(result: RetestResult, title: str) -> str:
    summary = summary_text(result.verification, _LINE_SUMMARY_MAX)
    return f"⏳ *{_name(result.connection)}* · {title} · {summary}"


def _healthy_line(result: RetestResult, title: str) -> str:
    return f"✅ *{_name(result.connection)}* · {title} · {latency_text(result.verification.latency_ms)}"


def _pack_counted(
    groups: Sequence[tuple[str, Sequence[str]]], *, max_blocks: int, max_chars: int
) -> tuple[list[Block], int]:
    """Pack the groups' lines into sections, in order, each group's heading kept with its first
    line, until ``max_blocks`` sections or ``max_chars`` characters are used; return the sections
    and how many lines did not fit."""
    texts: list[str] = []
    current = ""
    used = 0
    shown = 0
    total = sum(len(lines) for _, lines in groups)
    full = max_blocks < 1
    for heading, lines in groups:
        for index, line in enumerate(lines):
            unit = f"{heading}\n{line}" if index == 0 else line
            joined = f"{current}\n{unit}" if current else unit
            if len(joined) <= SECTION_TEXT_MAX:
                grown = len(joined) - len(current)
                if full or used + grown > max_chars:
                    full = True
                    break
                current, used = joined, used + grown
            else:
                if full or len(texts) + 2 > max_blocks or used + len(unit) > max_chars:
                    full = True
                    break
                texts.append(current)
                current, used = unit, used + len(unit)
            shown += 1
        if full:
            break
    if current:
        texts.append(current)
    return [section(text) for text in texts], total - shown


def _name(connection: ConnectionSummary) -> str:
    return escape(truncate(one_line(connection.name), _NAME_MAX))


# --- status -------------------------------------------------------------------------------------


PENDING_ROTATION_BLOCK = "status_pending_rotation"
"""block_id of the Approve / Reject buttons of a rotation waiting on the status reply."""


def status_message(
    report: StatusReport, provider: Provider | None, *, now: datetime, rotation_days: float
) -> dict[str, Any]:
    """``/connections status <name>``: the connection's facts, the key's age (flagged when older
    than ``rotation_days``), a rotation awaiting approval, the latest results, and the buttons its
    status allows (Re-test; Rotate and Remove for an active connection)."""
    connection = report.connection
    title = provider_title(connection, provider)
    blocks: list[Block] = [
        dict(HeaderBlock(text=truncate(one_line(connection.name), HEADER_MAX)).to_dict()),
        _status_facts(report, title, now),
    ]
    stale = (
        connection.status is Status.ACTIVE
        and connection.credential_created_at is not None
        and key_is_stale(connection.credential_created_at, now, rotation_days)
    )
    if stale and connection.credential_created_at is not None:
        age = credential_age_text(connection.credential_created_at, now)
        blocks.append(
            section(
                f"⚠️ *This key was stored {age} ago*, more than the {rotation_days:g} days after which "
                "keys should be replaced: rotate it with the *Rotate* button below."
            )
        )
    if report.pending_rotation is not None:
        rotation = report.pending_rotation
        blocks.append(section(_pending_rotation_note(rotation)))
        # Also here, not only in the admin channel: a request that could not be posted there must
        # still be decidable. Shown to anyone; only an admin's click is accepted.
        blocks.append(
            decide_buttons(rotation, block_id=PENDING_ROTATION_BLOCK, noun="rotation", reject_style=None)
        )
    blocks += _history_blocks(report.history)
    actions = _status_actions(connection)
    if actions is not None:
        blocks.append(actions)
    health = HEALTH_LABELS[connection.health]
    text = f"{quoted_name(connection.name)} ({title}): {connection.status.label}, {health}"
    return message(text, blocks)


def _status_facts(report: StatusReport, title: str, now: datetime) -> Block:
    connection = report.connection
    verified = connection.last_verified_at
    key = connection.key_hint
    key_text = f"`{escape(truncate(one_line(key), _KEY_HINT_MAX))}`" if key else "—"
    stored_at = connection.credential_created_at
    if stored_at is not None and connection.status in RETESTABLE:
        age = credential_age_text(stored_at, now)
        key_text += "\nkey stored today" if age == "today" else f"\nkey stored {age} ago"
    fields = [
        f"*Provider*\n{title}",
        f"*Status*\n{connection.status.label}",
        f"*Health*\n{HEALTH_LABELS[connection.health]}",
    ]
    if report.failing_since is not None:
        fields.append(f"*Failing since*\n{slack_date(report.failing_since)}")
    fields += [
        f"*Last verified*\n{slack_date(verified) if verified is not None else 'never'}",
        f"*Key*\n{key_text}",
        f"*Added by*\n{user_mention(connection.created_by)} {slack_date(connection.created_at)}",
    ]
    return dict(SectionBlock(fields=[MarkdownTextObject(text=f) for f in fields]).to_dict())


def _pending_rotation_note(rotation: ApprovalRequest) -> str:
    new_key = rotation.new_key_hint
    key = f" `{escape(truncate(one_line(new_key), _KEY_HINT_MAX))}`" if new_key else ""
    return (
        f"🔄 *A new key{key} is awaiting approval.* {user_mention(rotation.requested_by)} asked "
        f"{slack_date(rotation.requested_at)}; it passed verification and replaces the current key "
        "once an admin approves it. Until then the current key stays in use."
    )


def _history_blocks(history: Sequence[HistoryEntry]) -> list[Block]:
    if not history:
        return [section("*Recent results*\nNo verification recorded yet.")]
    shown = history[:HISTORY_SHOWN]
    heading = "*Last result*" if len(shown) == 1 else f"*Last {len(shown)} results*"
    lines = [heading, *(_history_line(entry) for entry in shown)]
    return pack_sections(lines, _HISTORY_MAX_BLOCKS)


_TRIGGERS = {
    Trigger.CREATE: "created",
    Trigger.RETEST: "re-test",
    Trigger.SCHEDULE: "scheduled",
    Trigger.ROTATION: "rotation",
}


def _history_line(entry: HistoryEntry) -> str:
    trigger = _TRIGGERS.get(entry.trigger, escape(str(entry.trigger)))
    if entry.trigger is Trigger.RETEST and entry.actor:
        trigger += f" by {user_mention(entry.actor)}"
    if entry.ok:
        icon = "✅"
    elif entry.outcome is Outcome.RATE_LIMITED:
        icon = "⏳"
    else:
        icon = "❌"
    fallback = entry.outcome.value.replace("_", " ")
    summary = escape(truncate(one_line(entry.summary, fallback), _LINE_SUMMARY_MAX))
    return f"{slack_date(entry.at)} · {trigger} · {icon} {summary} · {latency_text(entry.latency_ms)}"


def _status_actions(connection: ConnectionSummary) -> Block | None:
    buttons: list[ButtonElement] = []
    if connection.status in RETESTABLE:
        buttons.append(retest_button(connection.id))
    if connection.status is Status.ACTIVE:
        buttons += [rotate_button(connection.id), remove_button(connection)]
    if not buttons:
        return None
    return dict(ActionsBlock(block_id=_STATUS_ACTIONS_BLOCK, elements=buttons).to_dict())
