"""What the listeners pass on from Slack, where it lands: ids and names from button values, command
text and private_metadata looked up in the store, names checked before they are stored, and the
listeners' own reply texts, which Slack reads as mrkdwn.

On PostgreSQL a text parameter holding NUL fails the whole query, so before these fixes a button
value or a ``/connections status`` argument with a NUL in it got "Something went wrong" instead of
"not found", and a name with one passed the form's checks only to fail on saving.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import AsyncIterator

import httpx
import pytest

import bot.listeners
import bot.notify
from bot.crypto import Cipher, MasterKey
from bot.domain import NAME_FIELD, RequestKind
from bot.providers.confluent_cloud import ConfluentCloud
from bot.providers.registry import ProviderRegistry
from bot.redaction import Secret
from bot.services.admins import AdminPolicy, DirectoryUnavailable
from bot.services.submissions import Submissions
from bot.store import Database
from tests.e2e.test_fuzz import stray_markup
from tests.fakes.confluent_api import new_api_key, new_api_secret

TEAM = "T0000TEAM"


class Nobody:
    """A group directory that is never asked: no group is configured here."""

    async def members(self, group_id: str) -> frozenset[str]:
        raise DirectoryUnavailable("unused")


# --- the listeners' own reply texts -------------------------------------------------------------------


def listener_texts() -> list[tuple[str, str]]:
    """Every module-level text constant of the listeners and of what tells people in Slack (a
    string, or a table of strings): the replies they send as they are."""
    found = []
    for package in (bot.listeners, bot.notify):
        for module_info in pkgutil.iter_modules(package.__path__):
            module = importlib.import_module(f"{package.__name__}.{module_info.name}")
            for name, value in vars(module).items():
                texts = value.items() if isinstance(value, dict) else [("", value)]
                for key, text in texts:
                    if name.isupper() and isinstance(text, str):
                        where = f"{module_info.name}.{name}" + (f"[{key}]" if key else "")
                        found.append((where, text))
    return found


@pytest.mark.parametrize(("where", "text"), listener_texts(), ids=[where for where, _ in listener_texts()])
def test_no_reply_text_holds_markup_slack_would_misread(where: str, text: str) -> None:
    # "`/connections test <name>`" showed as a broken link: Slack reads every "<…>" as markup.
    assert not stray_markup(text), f"{where}: {stray_markup(text)}"


# --- lookups by whatever a payload holds --------------------------------------------------------------------

HOSTILE = ["\x00", "c1\x00", "Prod\x00warehouse", "x" * 5000, "' OR '1'='1' --", "İ" * 64]


@pytest.mark.parametrize("value", HOSTILE, ids=["nul", "id-nul", "name-nul", "long", "sql", "unicode"])
async def test_a_lookup_of_anything_finds_nothing_rather_than_fail(db: Database, value: str) -> None:
    async with db.read() as tx:
        assert await tx.connections.get(TEAM, value) is None
        assert await tx.connections.find_by_name(TEAM, value) is None
        assert await tx.connections.latest_by_name(TEAM, value) is None
        assert await tx.connections.name_taken(TEAM, value) is False
        assert await tx.rotations.get(TEAM, value) is None
        assert await tx.rotations.pending_for(TEAM, value) is None
    async with db.transaction() as tx:
        assert await tx.connections.lock(TEAM, value) is None


# --- names with control characters ---------------------------------------------------------------------


@pytest.fixture
async def service(db: Database) -> AsyncIterator[Submissions]:
    # Offline checks only: nothing here may reach a provider.
    async with httpx.AsyncClient(transport=httpx.MockTransport(lambda request: httpx.Response(599))) as http:
        providers = ProviderRegistry((ConfluentCloud(),))
        admins = AdminPolicy(frozenset(), None, Nobody())
        yield Submissions(db, Cipher(MasterKey.generate()), providers, http, admins)


@pytest.mark.parametrize("name", ["Prod\x00", "\x1b[31mProd", "Pro\x7fd", "Pro\x08d"])
async def test_a_name_with_control_characters_is_pointed_at_before_anything_is_stored(
    service: Submissions, name: str
) -> None:
    values = {"api_key": Secret(new_api_key()), "api_secret": Secret(new_api_secret())}

    checked = await service.check(RequestKind.CONNECTION, TEAM, ConfluentCloud(), name, dict(values))

    assert set(checked.problems) == {NAME_FIELD}
    assert "control characters" in checked.problems[NAME_FIELD]


@pytest.mark.parametrize("name", ["Prod “warehouse” & <co>", "Prod\twarehouse\n", "日本の倉庫 🔥"])
async def test_a_name_of_printable_text_passes(service: Submissions, name: str) -> None:
    values = {"api_key": Secret(new_api_key()), "api_secret": Secret(new_api_secret())}

    checked = await service.check(RequestKind.CONNECTION, TEAM, ConfluentCloud(), name, dict(values))

    assert checked.problems == {}
