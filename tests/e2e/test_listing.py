"""The Connections message lists the workspace's connections newest first, 20 to a page."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from bot import ids
from bot.domain import Status
from bot.store import Connection, Database
from tests.e2e.conftest import Bot
from tests.e2e.helpers import latest_message, visible_text
from tests.support.slack_requests import TEAM_ID

OTHER_TEAM_ID = "T0OTHERTEAM"


def seed(
    database_url: str, count: int, team_id: str = TEAM_ID, prefix: str = "conn", start_minute: int = 0
) -> None:
    """``count`` connections named ``<prefix>-00``…, each a minute newer than the one before."""

    async def insert() -> None:
        db = Database.from_url(database_url)
        start = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=start_minute)
        try:
            async with db.transaction() as tx:
                for n in range(count):
                    await tx.connections.add(
                        Connection(
                            team_id=team_id,
                            name=f"{prefix}-{n:02d}",
                            provider="confluent_cloud",
                            created_by="U0SEEDER01",
                            status=Status.ACTIVE if n % 2 else Status.PENDING_APPROVAL,
                            created_at=start + timedelta(minutes=n),
                        )
                    )
        finally:
            await db.dispose()

    asyncio.run(insert())


def names_shown(text: str) -> list[str]:
    """Seeded names in the order shown, whichever workspace they were seeded for."""
    return [word for word in text.replace("*", " ").split() if word.startswith(("conn-", "other-"))]


def newest_first(first: int, last: int) -> list[str]:
    return [f"conn-{n:02d}" for n in range(last, first - 1, -1)]


def test_the_list_pages_past_twenty_newest_first_and_only_for_this_workspace(bot: Bot) -> None:
    seed(bot.database_url, 25)
    # Another workspace's connections, newer than all of ours: if they leaked into the list they
    # would lead page 1, raise the total to 41 and add a third page.
    seed(bot.database_url, 16, team_id=OTHER_TEAM_ID, prefix="other", start_minute=60)
    bot.sender.command("")
    bot.slack.wait_for_hook()
    first = latest_message(bot.slack, bot.sender)
    text = visible_text(first.blocks)
    assert names_shown(text) == newest_first(5, 24)
    assert "awaiting approval" in text and "active" in text
    assert "Page 1 of 2 · 25 connections" in text
    assert "other-" not in text

    bot.sender.action(ids.ACTION_PAGE_NEXT, "2", on=first)
    [_, replaced] = bot.slack.wait_for_hook(count=2)
    assert replaced.ok and replaced.body.get("replace_original") is True
    second = latest_message(bot.slack, bot.sender)
    text = visible_text(second.blocks)
    assert names_shown(text) == newest_first(0, 4)
    assert "Page 2 of 2 · 25 connections" in text
    assert "other-" not in text
    assert len(bot.slack.visible_messages(bot.sender.channel_id, bot.sender.user_id)) == 1

    bot.sender.action(ids.ACTION_PAGE_PREVIOUS, "1", on=second)
    bot.slack.wait_for_hook(count=3)
    assert names_shown(visible_text(latest_message(bot.slack, bot.sender).blocks)) == newest_first(5, 24)


def test_twenty_connections_fit_on_one_page(bot: Bot) -> None:
    seed(bot.database_url, 20)
    bot.sender.command("list")
    bot.slack.wait_for_hook()
    text = visible_text(latest_message(bot.slack, bot.sender).blocks)
    assert names_shown(text) == newest_first(0, 19)
    assert "Page 1 of" not in text
