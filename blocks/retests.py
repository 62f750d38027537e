"""Re-testing stored credentials, in blocks: the "Re-testing…" notes, one connection's result, the
report of a bulk re-test, and a connection's status with its recent history.

The headline speaks of the connection's health: ✅ works, ❌ failing, or ⏳ inconclusive when the
provider only rate-limited us. Everything a user or a provider wrote is escaped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from blocks.approval import decide_buttons
from blocks.connections import (
    HEALTH_LABELS,
    RETESTABLE,
    connection_buttons,
    key_age_fact,
    key_is_stale,
    retest_button,
)
from blocks.parts import (
    MESSAGE_MAX_BLOCKS,
    Block,
    actions,
    check_line,
    checks_blocks,
    context,
    fields_section,
    header,
    hints_blocks,
    key_text,
    message,
    name_text,
    named_key,
    pack_sections,
    quoted_name,
    reply,
    section,
    stored_in,
)
from blocks.removal import remove_button
from blocks.results import latency_text, verification_facts
from blocks.text import (
    SECTION_TEXT_MAX,
    credential_age_text,
    duration_text,
    inline,
    literal,
    one_line,
    own_line,
    plural,
    slack_date,
    user_mention,
)
from bot.domain import (
    HISTORY_SHOWN,
    STORE_CHECK,
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
    "PENDING_ROTATION_BLOCK",
    "failing_duration",
    "provider_title",
    "retest_all_running",
    "retest_one_started",
    "retest_report_message",
    "retest_result_message",
    "retest_started",
    "status_message",
    "summary_text",
]

DETAILED_FAILING_MAX = 5
"""Failing connections a bulk report shows in full; the others get one line each."""
PENDING_ROTATION_BLOCK = "status_pending_rotation"
"""block_id of the Approve / Reject buttons of a rotation waiting on the status reply."""

# Slack documents no limit on a message's total size beyond 50 blocks of 3000 characters, but
# large payloads are refused in practice; a report this long is past reading anyway.
_REPORT_TEXT_MAX = 30_000
_TITLE_MAX = 100
# Escaping grows text up to fivefold, so this keeps a headline with a name well inside a section.
_SUMMARY_MAX = 400
_LINE_SUMMARY_MAX = 150
_CHECK_DETAIL_MAX = 200
_HINT_MAX = 300
_REPORT_CHECKS_MAX = 5
_REPORT_HINTS_MAX = 3
_HISTORY_MAX_BLOCKS = 4
_STATUS_ACTIONS_BLOCK = "connection_status_actions"


def provider_title(connection: ConnectionSummary, provider: Provider | None) -> str:
    """The provider's name, escaped; the stored title when the bot no longer offers the provider."""
    title = provider.title if provider is not None else connection.provider_title
    return inline(title, _TITLE_MAX, connection.provider_key)


def summary_text(verification: Verification | HistoryEntry, limit: int = _SUMMARY_MAX) -> str:
    """What the provider said (or, unsaid, the outcome), on one line, shortened and escaped."""
    return inline(verification.summary, limit, verification.outcome.value.replace("_", " "))


def retest_started(count: int) -> dict[str, Any]:
    """Said while a bulk re-test of ``count`` connections runs; for none, that there is nothing to do."""
    if count <= 0:
        return reply("There is no active connection to re-test yet. Add one with `/connections`.")
    return reply(f"⏳ Re-testing {plural(count, 'connection')}…")


def retest_all_running(
    started_by: str, started_at: datetime, total: int, done: int, now: datetime
) -> dict[str, Any]:
    """Said instead of starting a second ``test all`` in a workspace: who started the running
    one, how long ago, and how far it is."""
    seconds = max(0, round((now - started_at).total_seconds()))
    ago = f"{seconds} s" if seconds < 60 else duration_text(now - started_at)
    return reply(
        f"⏳ {user_mention(started_by)} started a re-test of all {plural(total, 'connection')} {ago} ago; "
        f"{done} done. Its report goes to them; nothing new was started."
    )


def retest_one_started(name: str) -> dict[str, Any]:
    """Said while one connection is re-tested."""
    return reply(f"⏳ Re-testing {quoted_name(name)}…")


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
    blocks += checks_blocks(verification.checks, failures_are_fatal=not result.ok and result.conclusive)
    if not result.ok:
        blocks += hints_blocks(verification.hints)
    blocks.append(context(verification_facts(title, verification)))
    if connection.status in RETESTABLE:
        blocks.append(actions(retest_button(connection.id)))
    return message(_result_text(result, title), blocks)


def _headline(result: RetestResult, title: str) -> str:
    connection, verification = result.connection, result.verification
    name = quoted_name(connection.name)
    summary = summary_text(verification)
    if result.ok:
        headline = f"✅ *{name} works.* {title} accepted its stored credentials."
        return f"{headline}\n{summary}" if verification.summary.strip() else headline
    health = HEALTH_LABELS[connection.health]
    if not result.conclusive and verification.outcome is Outcome.RATE_LIMITED:
        return (
            f"⏳ *{name} could not be checked:* {summary}\n"
            f"{title} is rate-limiting requests, so the result is inconclusive and its health is "
            f"unchanged ({health}). Re-test it in a minute."
        )
    if not result.conclusive:
        return (
            f"⏳ *{name} could not be checked:* {summary}\n"
            f"Its credential could not be read, so the result is inconclusive and its health is "
            f"unchanged ({health}). See what to check below."
        )
    if _store_failed(verification):
        next_step = "Its credential in the secret store could not be used. See what to check below."
    elif verification.outcome.is_users_to_fix:
        next_step = (
            f"{title} no longer accepts its stored credentials. See what to check below; if the key "
            "was replaced or revoked, rotate it."
        )
    else:
        next_step = f"This may be on {title}'s side and temporary: re-test it in a few minutes."
    return f"❌ *{name} is failing:* {summary}\n{next_step}"


def _store_failed(verification: Verification) -> bool:
    """Whether the secret store, not the provider, ended the re-test (nothing was sent)."""
    return not verification.ok and any(c.name == STORE_CHECK and not c.passed for c in verification.checks)


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
        why = "rate-limited" if result.verification.outcome is Outcome.RATE_LIMITED else "credential not read"
        return f"⏳ {name} ({title}) could not be checked ({why}); its health is unchanged."
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

    summary, text = _report_summary(report)
    blocks: list[Block] = [section(summary)]
    chars_left = _REPORT_TEXT_MAX - len(summary)
    detailed = 0
    for result in failing[:DETAILED_FAILING_MAX]:
        block, size = _failing_in_full(result, title_of(result))
        if size > chars_left:
            break
        blocks.append(block)
        detailed += 1
        chars_left -= size

    rest = failing[detailed:]
    why = "rate-limited" if _all_rate_limited(inconclusive) else "not checked"
    groups = [
        (f"*{'Also failing' if detailed else 'Failing'} ({len(rest)})*", rest),
        (f"*Inconclusive: {why}, health unchanged ({len(inconclusive)})*", inconclusive),
        (f"*Healthy ({len(healthy)})*", healthy),
    ]
    lines = [(heading, [_line(r, title_of(r)) for r in results]) for heading, results in groups if results]
    room = MESSAGE_MAX_BLOCKS - len(blocks) - 1  # one block is kept for the closing note
    packed, left_out = _pack_counted(lines, max_blocks=room, max_chars=chars_left)
    blocks += packed
    if left_out or rest:
        note = "For one connection's details and history, use `/connections status &lt;name&gt;`."
        if left_out:
            note = f"{plural(left_out, 'more connection')} left out to fit in one message. {note}"
        blocks.append(context(note))
    return message(text, blocks)


def _report_summary(report: RetestReport) -> tuple[str, str]:
    """The report's first section, and its notification text: the counts."""
    total = len(report.results)
    if total == 0:
        nothing = "There was no active connection to re-test."
        return nothing, nothing
    counts = f"{report.healthy} healthy, {report.failing} failing"
    if report.inconclusive:
        limited = _all_rate_limited([r for r in report.results if not r.conclusive])
        counts += f", {report.inconclusive} inconclusive" + (" (rate-limited)" if limited else "")
    icon = "❌" if report.failing else ("⏳" if report.inconclusive else "✅")
    retested = f"Re-tested {plural(total, 'connection')}"
    return f"{icon} *{counts}*\n{retested} in {_elapsed_text(report.elapsed_ms)}.", f"{retested}: {counts}"


def _all_rate_limited(results: Sequence[RetestResult]) -> bool:
    return all(r.verification.outcome is Outcome.RATE_LIMITED for r in results)


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
    first = f"❌ *{name_text(connection.name)}* · {title} · {latency_text(verification.latency_ms)}"
    if result.change is not None and result.change.kind is ChangeKind.FAILED:
        first += " · 🔔 new failure"
    lines = [first, summary_text(verification)]
    failed = [c for c in verification.checks if not c.passed][:_REPORT_CHECKS_MAX]
    lines += [check_line(check, "❌", _CHECK_DETAIL_MAX) for check in failed]
    hints = [h for h in verification.hints if h.strip()][:_REPORT_HINTS_MAX]
    if hints:
        lines += ["*What to check*", *(f"• {own_line(h, _HINT_MAX)}" for h in hints)]
    text = ""
    for line in lines:
        joined = f"{text}\n{line}" if text else line
        if len(joined) > SECTION_TEXT_MAX:
            break
        text = joined
    button = retest_button(connection.id) if connection.status in RETESTABLE else None
    return section(text, button), len(text)


def _line(result: RetestResult, title: str) -> str:
    """One connection of the report on one line."""
    icon = "✅" if result.ok else ("❌" if result.conclusive else "⏳")
    facts = [f"{icon} *{name_text(result.connection.name)}*", title]
    if not result.ok:
        facts.append(summary_text(result.verification, _LINE_SUMMARY_MAX))
    if result.conclusive:
        facts.append(latency_text(result.verification.latency_ms))
    return " · ".join(facts)


def _pack_counted(
    groups: Sequence[tuple[str, Sequence[str]]], *, max_blocks: int, max_chars: int
) -> tuple[list[Block], int]:
    """Pack the groups' lines into sections, in order, each group's heading kept with its first
    line, until ``max_blocks`` sections or ``max_chars`` characters are used; return the sections
    and how many lines did not fit."""
    units = [
        f"{heading}\n{line}" if i == 0 else line for heading, lines in groups for i, line in enumerate(lines)
    ]
    if max_blocks < 1:
        return [], len(units)
    texts: list[str] = []
    current, used, shown = "", 0, 0
    for unit in units:
        joined = f"{current}\n{unit}" if current else unit
        if len(joined) <= SECTION_TEXT_MAX:
            grown = len(joined) - len(current)
            if used + grown > max_chars:
                break
            current, used = joined, used + grown
        else:
            if len(texts) + 2 > max_blocks or used + len(unit) > max_chars:
                break
            texts.append(current)
            current, used = unit, used + len(unit)
        shown += 1
    if current:
        texts.append(current)
    return [section(text) for text in texts], len(units) - shown


# --- status -------------------------------------------------------------------------------------


def status_message(
    report: StatusReport, provider: Provider | None, *, now: datetime, rotation_days: float
) -> dict[str, Any]:
    """``/connections status <name>``: the connection's facts, the key's age (flagged when older
    than ``rotation_days``), a rotation awaiting approval, the latest results, and the buttons its
    status allows (Re-test; Rotate and Remove for an active connection)."""
    connection = report.connection
    title = provider_title(connection, provider)
    blocks: list[Block] = [header(one_line(connection.name)), _status_facts(report, title, now)]
    stored_at = connection.credential_created_at
    if stored_at is not None and key_is_stale(connection, now, rotation_days):
        stale = (
            f"⚠️ *This key was stored {credential_age_text(stored_at, now)} ago*, more than the "
            f"{rotation_days:g} days after which keys should be replaced: rotate it with the *Rotate* "
            "button below."
        )
        blocks.append(section(stale))
    rotation = report.pending_rotation
    if rotation is not None:
        blocks.append(section(_pending_rotation_note(rotation)))
        # Also here, not only in the admin channel: a request that could not be posted there must
        # still be decidable. Shown to anyone; only an admin's click is accepted.
        blocks.append(
            decide_buttons(rotation, block_id=PENDING_ROTATION_BLOCK, noun="rotation", reject_style=None)
        )
    blocks += _history_blocks(report.history)
    buttons = connection_buttons(connection)
    if connection.status is Status.ACTIVE:
        buttons.append(remove_button(connection))
    if buttons:
        blocks.append(actions(*buttons, block_id=_STATUS_ACTIONS_BLOCK))
    health = HEALTH_LABELS[connection.health]
    text = f"{quoted_name(connection.name)} ({title}): {connection.status.label}, {health}"
    return message(text, blocks)


def _status_facts(report: StatusReport, title: str, now: datetime) -> Block:
    connection = report.connection
    verified = connection.last_verified_at
    age = key_age_fact(connection, now)
    fields = [
        f"*Provider*\n{title}",
        f"*Status*\n{connection.status.label}",
        f"*Health*\n{HEALTH_LABELS[connection.health]}",
    ]
    if report.failing_since is not None:
        fields.append(f"*Failing since*\n{slack_date(report.failing_since)}")
    fields += [
        f"*Last verified*\n{slack_date(verified) if verified is not None else 'never'}",
        f"*Key*\n{key_text(connection.key_hint)}" + (f"\n{age}" if age else ""),
        f"*Added by*\n{user_mention(connection.created_by)} {slack_date(connection.created_at)}",
    ]
    if connection.secret_location is not None:
        fields.append(f"*Stored in*\n{stored_in(connection.secret_location)}")
    return fields_section(fields)


def _pending_rotation_note(rotation: ApprovalRequest) -> str:
    return (
        f"🔄 *A new key{named_key(rotation.new_key_hint)} is awaiting approval.* "
        f"{user_mention(rotation.requested_by)} asked {slack_date(rotation.requested_at)}; it passed "
        "verification and replaces the current key once an admin approves it. Until then the current key "
        "stays in use."
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
    trigger = _TRIGGERS.get(entry.trigger, literal(str(entry.trigger)))
    if entry.trigger is Trigger.RETEST and entry.actor:
        trigger += f" by {user_mention(entry.actor)}"
    icon = "✅" if entry.ok else ("⏳" if entry.outcome is Outcome.RATE_LIMITED else "❌")
    summary = summary_text(entry, _LINE_SUMMARY_MAX)
    return f"{slack_date(entry.at)} · {trigger} · {icon} {summary} · {latency_text(entry.latency_ms)}"
