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
from bot.crypto import Cipher, MasterKey
from bot.providers.confluent_cloud import ConfluentCloud
from bot.providers.registry import ProviderRegistry
from bot.redaction import Secret
from bot.services.connections import NAME_FIELD, ConnectionService
from bot.store import Database
from bot.store.uow import UnitOfWork
from tests.e2e.test_fuzz import stray_markup
from tests.fakes.confluent_api import new_api_key, new_api_secret

TEAM = "T0000TEAM"

# --- the listeners' own reply texts -------------------------------------------------------------------


def listener_texts() -> list[tuple[str, str]]:
    """Every module-level text constant of the listeners: the replies they send as they are."""
    found = []
    for module_info in pkgutil.iter_modules(bot.listeners.__path__):
        module = importlib.import_module(f"bot.listeners.{module_info.name}")
        for name, value in vars(module).items():
            if name.isupper() and isinstance(value, str):
                found.append((f"{module_info.name}.{name}", value))
    return found


@pytest.mark.parametrize(("where", "text"), listener_texts(), ids=[where for where, _ in listener_texts()])
def test_no_reply_text_holds_markup_slack_would_misread(where: str, text: str) -> None:
    # "`/connections test <name>`" showed as a broken link: Slack reads every "<…>" as markup.
    assert not stray_markup(text), f"{where}: {stray_markup(text)}"


# --- lookups by whatever a payload holds --------------------------------------------------------------------

HOSTILE = ["\x00", "c1\x00", "Prod\x00warehouse", "x" * 5000, "' OR '1'='1' --", "İ" * 64]


@pytest.mark.parametrize("value", HOSTILE, ids=["nul", "id-nul", "name-nul", "long", "sql", "unicode"])
async def test_a_lookup_of_anything_finds_nothing_rather_than_fail(db: Database, value: str) -> None:
    async with db.read() as session:
        tx = UnitOfWork(session)
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
async def service(db: Database) -> AsyncIterator[ConnectionService]:
    # Offline checks only: nothing here may reach a provider.
    async with httpx.AsyncClient(transport=httpx.MockTransport(lambda request: httpx.Response(599))) as http:
        yield ConnectionService(db, Cipher(MasterKey.generate()), ProviderRegistry((ConfluentCloud(),)), http)


@pytest.mark.parametrize("name", ["Prod\x00", "\x1b[31mProd", "Pro\x7fd", "Pro\x08d"])
async def test_a_name_with_control_characters_is_pointed_at_before_anything_is_stored(
    service: ConnectionService, name: str
) -> None:
    values = {"api_key": Secret(new_api_key()), "api_secret": Secret(new_api_secret())}

    checked = await service.check_form(TEAM, ConfluentCloud(), name, dict(values))

    assert set(checked.problems) == {NAME_FIELD}
    assert "control characters" in checked.problems[NAME_FIELD]


@pytest.mark.parametrize("name", ["Prod “warehouse” & <co>", "Prod\twarehouse\n", "日本の倉庫 🔥"])
async def test_a_name_of_printable_text_passes(service: ConnectionService, name: str) -> None:
    values = {"api_key": Secret(new_api_key()), "api_secret": Secret(new_api_secret())}

    checked = await service.check_form(TEAM, ConfluentCloud(), name, dict(values))

    assert checked.problems == {}
