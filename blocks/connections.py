"""The reply to ``/connections``: provider cards, the workspace's connections, and the help text.

Provider cards come from each provider's declaration; connections from the read model. Names,
key hints and anything else a user typed are escaped, so a name cannot ping a channel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from slack_sdk.models.blocks import ActionsBlock, ButtonElement, HeaderBlock, MarkdownTextObject, SectionBlock

from blocks.results import Block, context, message, section
from blocks.text import escape, one_line, plural, slack_date, truncate, user_mention
from bot import ids
from bot.domain import PAGE_SIZE, ConnectionSummary, Health, Page
from bot.providers.base import Provider

__all__ = [
    "ACTION_PAGE_NEXT",
    "ACTION_PAGE_PREVIOUS",
    "PAGINATION_BLOCK",
    "connections_message",
    "help_message",
    "provider_block_id",
]

ACTION_PAGE_PREVIOUS = ids.ACTION_PAGE_PREVIOUS
ACTION_PAGE_NEXT = ids.ACTION_PAGE_NEXT
PAGINATION_BLOCK = "connections_pagination"
"""block_id of the actions block holding Previous / Next."""

_HEALTH = {
    Health.HEALTHY: "🟢 healthy",
    Health.FAILING: "🔴 failing",
    Health.UNKNOWN: "⚪ not checked yet",
}
_DESCRIPTION_MAX = 1000
_NAME_MAX = 100


def provider_block_id(provider: Provider) -> str:
    """block_id of a provider's card."""
    return f"provider_{provider.key}"


def connections_message(providers: Sequence[Provider], page: Page[ConnectionSummary]) -> dict[str, Any]:
    """Provider cards with a Connect button each, then one page of connections in the given order.

    Previous / Next buttons appear only when there is more than one page.
    """
    blocks: list[Block] = [_header("Connections")]
    if providers:
        blocks.append(context("Pick a provider and click *Connect* to add a connection."))
        blocks.extend(_provider_card(p) for p in providers)
    blocks.append(dict(HeaderBlock(text="In this workspace").to_dict()))
    if page.total == 0:
        blocks.append(
            section("No connections yet. Click *Connect* on a provider above to add the first one.")
        )
    elif not page.items:
        blocks.append(section(f"There is nothing on page {page.number}; the list has fewer pages now."))
    else:
        blocks.extend(_connection(c) for c in page.items)
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
        typed = escape(truncate(one_line(unknown, "").replace("`", "'"), 100))
        blocks.append(section(f"I don't know `{typed}`. Here is what I can do:"))
    blocks.append(_header("/connections"))
    keys = ", ".join(f"`{escape(p.key)}` ({escape(p.title)})" for p in providers) or "none yet"
    commands = [
        ("/connections", "show the providers you can connect and this workspace's connections."),
        ("/connections help", "show this help."),
        (
            "/connections connect <provider key>",
            f"open the form for one provider directly. Provider keys: {keys}.",
        ),
        (
            "/connections list [page]",
            f"list this workspace's connections, newest first, {PAGE_SIZE} per page.",
        ),
        (
            "/connections audit <name>",
            "show who did what to one connection, its last 20 events (admins only).",
        ),
    ]
    lines = [f"• `{escape(command)}`: {explanation}" for command, explanation in commands]
    blocks.append(section("\n".join(lines)))
    if unknown:
        text = "I didn't understand that command. Here is how to use /connections."
    else:
        text = "How to use /connections"
    return message(text, blocks)


def _header(text: str) -> Block:
    return dict(HeaderBlock(text=text).to_dict())


def _provider_card(provider: Provider) -> Block:
    title = escape(truncate(provider.title, 150))
    description = escape(truncate(one_line(provider.description, ""), _DESCRIPTION_MAX))
    button = ButtonElement(text="Connect", action_id=ids.ACTION_CONNECT, value=provider.key, style="primary")
    card = SectionBlock(
        block_id=provider_block_id(provider),
        text=MarkdownTextObject(text=f"*{title}*\n{description}" if description else f"*{title}*"),
        accessory=button,
    )
    return dict(card.to_dict())


def _connection(connection: ConnectionSummary) -> Block:
    name = escape(truncate(one_line(connection.name), _NAME_MAX))
    provider = escape(truncate(connection.provider_title, 150))
    verified = slack_date(connection.last_verified_at) if connection.last_verified_at is not None else "never"
    facts = [connection.status.label, _HEALTH[connection.health], f"last verified {verified}"]
    if connection.key_hint:
        facts.append(f"key `{escape(truncate(one_line(connection.key_hint), 40))}`")
    added = f"added by {user_mention(connection.created_by)}, {slack_date(connection.created_at)}"
    return section(f"*{name}* · {provider}\n{' · '.join(facts)}\n{added}")


def _pagination(page: Page[ConnectionSummary]) -> Block:
    buttons = []
    if page.has_previous:
        target = min(page.number - 1, page.pages)
        buttons.append(ButtonElement(text="Previous", action_id=ACTION_PAGE_PREVIOUS, value=str(target)))
    if page.has_next:
        buttons.append(ButtonElement(text="Next", action_id=ACTION_PAGE_NEXT, value=str(page.number + 1)))
    return dict(ActionsBlock(block_id=PAGINATION_BLOCK, elements=buttons).to_dict())
