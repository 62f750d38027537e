"""What the health schedule says: in the alert channel, the alert when a connection starts failing,
the reminder (in the alert's thread, at most daily) while it keeps failing, and the follow-up once
it works again; by direct message, the reminder to rotate a key older than the rotation period.

A reminder or a follow-up is posted top-level when the alert never made it to Slack, so each one
names the connection on its own. Names and everything a provider wrote are escaped; the owner is
mentioned only through :func:`~blocks.text.user_mention`.
"""

from __future__ import annotations

from typing import Any

from blocks.approval import rotate_actions
from blocks.connections import RETESTABLE, connection_buttons, retest_button
from blocks.parts import (
    actions,
    checks_blocks,
    context,
    hints_blocks,
    message,
    named_key,
    provider_text,
    quoted_name,
    section,
)
from blocks.results import verification_facts
from blocks.retests import failing_duration, provider_title, summary_text
from blocks.text import plural, slack_date, user_mention
from bot.domain import ConnectionSummary, RetestResult
from bot.providers.base import Provider

__all__ = [
    "health_alert",
    "recovery_reply",
    "resolved_alert",
    "rotation_reminder_dm",
    "still_failing_reminder",
]

_ALERT_ACTIONS_BLOCK = "health_alert_actions"
_TEXT_SUMMARY_MAX = 200


def health_alert(result: RetestResult, provider: Provider | None) -> dict[str, Any]:
    """A connection went from healthy (or never checked) to failing: who owns it, since when, what
    failed and what to check, with Re-test and Rotate buttons carrying the connection id."""
    connection, verification = result.connection, result.verification
    title = provider_title(connection, provider)
    name = quoted_name(connection.name)
    since = _failing_since(result)
    facts = f"Owner: {user_mention(connection.created_by)}" + (f" · failing since {since}" if since else "")
    blocks = [
        section(f"🔴 *{name} ({title}) is failing*\n{facts}"),
        section(f"*What failed:* {summary_text(verification)}"),
        *checks_blocks(
            [c for c in verification.checks if not c.passed], failures_are_fatal=True, max_blocks=5
        ),
        *hints_blocks(verification.hints, max_blocks=10),
        context(verification_facts(title, verification)),
    ]
    buttons = connection_buttons(connection)
    if buttons:
        blocks.append(actions(*buttons, block_id=_ALERT_ACTIONS_BLOCK))
    text = (
        f"🔴 {name} ({title}) is failing: {summary_text(verification, _TEXT_SUMMARY_MAX)} "
        f"(owner {user_mention(connection.created_by)})"
    )
    return message(text, blocks)


def still_failing_reminder(result: RetestResult, provider: Provider | None) -> dict[str, Any]:
    """A connection keeps failing: for how long, what the provider says now, and a Re-test button.

    Names the connection and its owner, so it reads the same top-level as in the alert's thread."""
    connection = result.connection
    title = provider_title(connection, provider)
    name = quoted_name(connection.name)
    lasted = failing_duration(result)
    since = _failing_since(result)
    when = f" for {lasted}" if lasted else ""
    when += f" (since {since})" if since else ""
    owner = user_mention(connection.created_by)
    summary = summary_text(result.verification)
    blocks = [section(f"🔴 {name} ({title}) is still failing{when}. Owner: {owner}\n{summary}")]
    if connection.status in RETESTABLE:
        blocks.append(actions(retest_button(connection.id)))
    text = f"🔴 {name} ({title}) is still failing{f' for {lasted}' if lasted else ''} (owner {owner})"
    return message(text, blocks)


def recovery_reply(result: RetestResult) -> dict[str, Any]:
    """A failing connection works again: how long it was failing. No buttons: nothing to do."""
    connection = result.connection
    title = provider_title(connection, None)
    lasted = failing_duration(result)
    # The latest check is the one that worked, so it says nothing about when the failure began.
    since = _failing_since(result, or_latest_check=False)
    text = f"✅ {quoted_name(connection.name)} ({title}) works again"
    if lasted:
        text += f" after failing for {lasted}"
    blocks = [section(f"{text}{f' (since {since})' if since else ''}.")]
    return message(f"{text}.", blocks)


def resolved_alert(result: RetestResult) -> dict[str, Any]:
    """What the alert itself becomes once the connection works again: the same headline, marked
    resolved, without the buttons (the thread keeps the story)."""
    connection = result.connection
    title = provider_title(connection, None)
    name = quoted_name(connection.name)
    since = _failing_since(result, or_latest_check=False)
    lasted = failing_duration(result)
    failed = f"failed{f' from {since}' if since else ''}{f' for {lasted}' if lasted else ''}"
    recovered = connection.last_verified_at
    back = f" and works again since {slack_date(recovered)}" if recovered is not None else " and works again"
    blocks = [
        section(f"✅ ~{name} ({title}) is failing~ *Resolved*\n{name} {failed}{back}."),
        context(f"Owner: {user_mention(connection.created_by)} · the thread below has the details."),
    ]
    return message(f"✅ Resolved: {name} ({title}) works again", blocks)


def _failing_since(result: RetestResult, *, or_latest_check: bool = True) -> str:
    """When the failure started, as a Slack date; unless ``or_latest_check`` is off, the latest
    check when the start was not recorded (that check failed, so it is the earliest known)."""
    change = result.change
    started = change.failing_since if change is not None else None
    if started is None and or_latest_check:
        started = result.connection.last_verified_at
    return slack_date(started) if started is not None else ""


def rotation_reminder_dm(
    connection: ConnectionSummary, *, age_days: int, rotation_days: float
) -> dict[str, Any]:
    """The direct message to the owner of a credential older than the team's rotation period: how
    old it is, how to rotate it, and a Rotate button carrying ``connection.id``."""
    provider = provider_text(connection)
    name = quoted_name(connection.name)
    age = plural(age_days, "day")
    text = f"🔁 The key of your {provider} connection {name} is {age} old: time to rotate it."
    blocks = [
        section(
            f"🔁 *Time to rotate {name}*\nIts {provider} key{named_key(connection.key_hint)} is {age} old, "
            f"older than your team's rotation period of {_days(rotation_days)}."
        ),
        section(
            "*How to rotate*\n"
            f"1. Create a new key at {provider}.\n"
            "2. Click *Rotate* below and enter it; we check it before anything changes.\n"
            "3. An admin approves the new key; until then the old one keeps working.\n"
            f"4. Once it is approved, delete the old key at {provider}."
        ),
    ]
    if connection.credential_created_at is not None:
        blocks.append(context(f"Key stored {slack_date(connection.credential_created_at)}"))
    blocks.append(rotate_actions(connection))
    return message(text, blocks)


def _days(days: float) -> str:
    """ "90 days", "1 day", "0.5 days": a whole number without its ".0"."""
    return f"{days:.10g} day{'' if days == 1 else 's'}"
