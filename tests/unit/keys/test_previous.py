"""``CONNECTIONS_MASTER_KEY_PREVIOUS``: the start log and /healthz say whether any row still needs it."""

from __future__ import annotations

import logging

import pytest

from bot.crypto import Cipher, MasterKey
from bot.keys.previous import log_previous_key, previous_key_state, rows_sealed_with_previous
from bot.keys.rotation import GivenKey, rotate_master_key
from bot.settings import KeySettings
from bot.store import Database
from tests.support.sealed_data import seed_sealed_data


async def test_the_previous_key_is_needed_until_the_rotation_moves_every_row(
    db: Database, migrated_database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    old, new = MasterKey.generate(), MasterKey.generate()
    sealed = await seed_sealed_data(migrated_database_url, old)
    switched = Cipher(new, [old])

    assert await rows_sealed_with_previous(db, switched) == len(sealed.plaintexts) + 1  # and the canary
    assert await previous_key_state(db, switched) == "needed"
    with caplog.at_level(logging.INFO):
        await log_previous_key(db, switched)
    assert f"CONNECTIONS_MASTER_KEY_PREVIOUS (master key {old.key_id}) is still needed" in caplog.text
    assert "run `connections-bot rotate-master-key`" in caplog.text

    settings = KeySettings(master_key=new.to_base64(), master_key_previous=old.to_base64())
    await rotate_master_key(db, settings, given=GivenKey(new, "CONNECTIONS_MASTER_KEY"))
    caplog.clear()

    assert await rows_sealed_with_previous(db, switched) == 0
    assert await previous_key_state(db, switched) == "removable"
    with caplog.at_level(logging.INFO):
        await log_previous_key(db, switched)
    assert "opens no row of this database: remove it" in caplog.text
    assert old.to_base64().reveal() not in caplog.text and new.to_base64().reveal() not in caplog.text


async def test_without_a_previous_key_there_is_nothing_to_say(
    db: Database, migrated_database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    key = MasterKey.generate()
    await seed_sealed_data(migrated_database_url, key)

    with caplog.at_level(logging.INFO):
        await log_previous_key(db, Cipher(key))

    assert await previous_key_state(db, Cipher(key)) is None
    assert "PREVIOUS" not in caplog.text
