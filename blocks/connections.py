"""The reply to ``/connections``: provider cards, the workspace's connections, and the help text.

Provider cards come from each provider's declaration; connections from the read model. Names,
key hints and anything else a user typed are escaped, so a name cannot ping a channel.

The pieces every view of a connection shares live here too: the health labels, the key's age with
its rotation warning, and the Re-test and Rotate buttons (each carrying the connection id).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from slack_sdk.models.blocks import ButtonElement, SectionBlock

from blocks.parts import (
    Block,
    actions,
    context,
    header,
    key_text,
    message,
    mrkdwn,
    name_text,
    provider_text,
    section,
    stored_in,
)
from blocks.text import as_utc, credential_age_text, escape, inline, plural, slack_date, user_mention
from bot import ids
from bot.domain import PAGE_SIZE, ConnectionSummary, Health, Page, Status
from bot.providers.base import Provider

__all__ = [
    "ACTION_PAGE_NEXT",
    "ACTION_PAGE_PREVIOUS",
    "HEALTH_LABELS",
    "PAGINATION_BLOCK",
    "RETESTABLE",
    "connection_buttons",
    "connection_line",
    "connections_message",
    "help_message",
    "key_age_fact",
    "key_is_stale",
    "provider_card",
    "retest_button",
    "rotate_button",
]

ACTION_PAGE_PREVIOUS = ids.ACTION_PAGE_PREVIOUS
ACTION_PAGE_NEXT = ids.ACTION_PAGE_NEXT
PAGINATION_BLOCK = "connections_pagination"
"""block_id of the actions block holding Previous / Next."""

HEALTH_LABELS = {
    Health.HEALTHY: "🟢 healthy",
    Health.FAILING: "🔴 failing",
    Health.UNKNOWN: "⚪ not checked yet",
}
RETESTABLE = (Status.ACTIVE, Status.PENDING_APPROVAL)
"""The statuses whose connections still hold stored credentials, so can be re-tested."""
_DESCRIPTION_MAX = 1000


def connections_message(
    providers: Sequence[Provider],
    page: Page[ConnectionSummary],
    *,
    now: datetime | None = None,
    rotation_days: float | None = None,
) -> dict[str, Any]:
    """Provider cards with a Connect button each, then one page of connections in the given order,
    each with a Re-test button while it holds credentials.

    With ``now``, the key's age is shown in days; with ``rotation_days`` too, a key older than that
    is flagged for rotation. Previous / Next buttons appear only when there is more than one page.
    """
    blocks: list[Block] = [header("Connections")]
    if providers:
        blocks.append(context("Pick a provider and click *Connect* to add a connection."))
        blocks.extend(provider_card(p, f"provider_{p.key}") for p in providers)
    blocks.append(header("In this workspace"))
    if page.total == 0:
        blocks.append(
            section("No connections yet. Click *Connect* on a provider above to add the first one.")
        )
    elif not page.items:
        blocks.append(section(f"There is nothing on page {page.number}; the list has fewer pages now."))
    else:
        for item in page.items:
            added = f"added by {user_mention(item.created_by)}, {slack_date(item.created_at)}"
            blocks.append(connection_line(item, now, rotation_days, status=item.status.label, added=added))
    if page.has_previous or page.has_next:
        blocks.append(context(f"Page {page.number} of {page.pages} · {plural(page.total, 'connection')}"))
        blocks.append(_pagination(page))
    return message("Connections", blocks)


def help_message(providers: Sequence[Provider], unknown: str | None = None) -> dict[str, Any]:
    """What ``/connections`` can do. With ``unknown`` (what the user typed that we did not
    understand), it starts by saying so, kindly."""
    blocks: list[Block] = []
    unknown = unknown.strip() if unknown else None
    if unknown:
        typed = inline(unknown.replace("`", "'"), 100, "")
        blocks.append(section(f"I don't know `{typed}`. Here is what I can do:"))
    blocks.append(header("/connections"))
    # The whole line is escaped, so the commands' <placeholders> and the providers' keys show as typed.
    keys = ", ".join(f"`{p.key}` ({p.title})" for p in providers) or "none yet"
    commands = [
        "`/connections`: show the providers you can connect and this workspace's connections.",
        "`/connections help`: show this help.",
        "`/connections connect <provider key>`: open the form for one provider directly. "
        f"Provider keys: {keys}.",
        f"`/connections list [page]`: list this workspace's connections, newest first, {PAGE_SIZE} per page.",
        "`/connections test <name>`: re-verify one connection with its stored credentials and show what "
        "the provider said.",
        "`/connections test all`: re-verify every active connection with its stored credentials; failing "
        "ones come first.",
        "`/connections status <name>`: show one connection's health, key age and its last 10 "
        "verification results.",
        "`/connections rotate <name>`: replace a connection's key (its owner or an admin): the new key is "
        "verified, then approved by an admin, before it replaces the old one.",
        "`/connections remove <name>`: remove a connection (its owner or an admin): it is revoked and its "
        "stored credentials are destroyed.",
        "`/connections audit <name>`: show who did what to one connection, its last 20 events (admins only).",
    ]
    blocks.append(section("\n".join(f"• {escape(line)}" for line in commands)))
    if unknown:
        return message("I didn't understand that command. Here is how to use /connections.", blocks)
    return message("How to use /connections", blocks)


def key_is_stale(connection: ConnectionSummary, now: datetime, rotation_days: float | None) -> bool:
    """Whether ``connection`` is active with a key stored more than ``rotation_days`` before ``now``."""
    stored_at = connection.credential_created_at
    if rotation_days is None or stored_at is None or connection.status is not Status.ACTIVE:
        return False
    return as_utc(now) - as_utc(stored_at) > timedelta(days=rotation_days)


def key_age_fact(
    connection: ConnectionSummary, now: datetime | None = None, rotation_days: float | None = None
) -> str | None:
    """ "key stored 95 days ago", or "⚠️ key 95 days old — rotate it" for an active connection whose
    key is older than ``rotation_days``; without ``now``, when it was stored. ``None`` when the
    connection holds no credential or nobody recorded when it was stored."""
    stored_at = connection.credential_created_at
    if stored_at is None or connection.status not in RETESTABLE:
        return None
    if now is None:
        return f"key stored {slack_date(stored_at)}"
    age = credential_age_text(stored_at, now)
    if key_is_stale(connection, now, rotation_days):
        return "⚠️ key stored today — rotate it" if age == "today" else f"⚠️ key {age} old — rotate it"
    return "key stored today" if age == "today" else f"key stored {age} ago"


def retest_button(connection_id: str) -> ButtonElement:
    """Re-test one connection with its stored credentials."""
    return ButtonElement(text="Re-test", action_id=ids.ACTION_RETEST, value=connection_id)


def rotate_button(connection_id: str) -> ButtonElement:
    """Open the form that replaces a connection's key."""
    return ButtonElement(text="Rotate", action_id=ids.ACTION_ROTATE, value=connection_id)


def connection_buttons(connection: ConnectionSummary) -> list[ButtonElement]:
    """Re-test while the connection holds credentials, and Rotate while it is active."""
    buttons = [retest_button(connection.id)] if connection.status in RETESTABLE else []
    if connection.status is Status.ACTIVE:
        buttons.append(rotate_button(connection.id))
    return buttons


def provider_card(provider: Provider, block_id: str) -> Block:
    """A provider's card: its title, its one line, and Connect."""
    title = inline(provider.title, 150, provider.key)
    description = inline(provider.description, _DESCRIPTION_MAX, "")
    button = ButtonElement(text="Connect", action_id=ids.ACTION_CONNECT, value=provider.key, style="primary")
    card = SectionBlock(
        block_id=block_id[:255],
        text=mrkdwn(f"*{title}*\n{description}" if description else f"*{title}*"),
        accessory=button,
    )
    return dict(card.to_dict())


def connection_line(
    connection: ConnectionSummary,
    now: datetime | None,
    rotation_days: float | None,
    *,
    status: str,
    added: str,
) -> Block:
    """One connection in a list: its name and provider, ``status``, health, last verification, key
    and key age, where a secret store holds it, and ``added``; with a Re-test button while it holds
    credentials."""
    name = name_text(connection.name)
    verified = slack_date(connection.last_verified_at) if connection.last_verified_at is not None else "never"
    facts = [status, HEALTH_LABELS[connection.health], f"last verified {verified}"]
    if connection.key_hint:
        facts.append(f"key {key_text(connection.key_hint)}")
    age = key_age_fact(connection, now, rotation_days)
    if age is not None:
        facts.append(age)
    if connection.secret_location is not None:
        facts.append(f"stored in {stored_in(connection.secret_location)}")
    # The button rides on the line itself: one more block per connection would not fit in a
    # message (50 blocks) or a Home tab (100).
    button = retest_button(connection.id) if connection.status in RETESTABLE else None
    return section(f"*{name}* · {provider_text(connection)}\n{' · '.join(facts)}\n{added}", button)


def _pagination(page: Page[ConnectionSummary]) -> Block:
    buttons = []
    if page.has_previous:
        target = min(page.number - 1, page.pages)
        buttons.append(ButtonElement(text="Previous", action_id=ACTION_PAGE_PREVIOUS, value=str(target)))
    if page.has_next:
        buttons.append(ButtonElement(text="Next", action_id=ACTION_PAGE_NEXT, value=str(page.number + 1)))
    return actions(*buttons, block_id=PAGINATION_BLOCK)
