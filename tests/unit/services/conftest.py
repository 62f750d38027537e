"""Fixtures every service test shares: a fake Confluent Cloud reached in-process, and a cipher."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from bot.crypto import Cipher, MasterKey
from tests.fakes.confluent_api import FakeConfluent

API = "https://api.confluent.test"
"""The Confluent Cloud base URL the service tests' providers are built with."""


@pytest.fixture
def fake() -> FakeConfluent:
    return FakeConfluent()


@pytest.fixture
async def http(fake: FakeConfluent) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=fake.app)
    async with httpx.AsyncClient(transport=transport, base_url=API, timeout=5) as client:
        yield client


@pytest.fixture
def cipher() -> Cipher:
    return Cipher(MasterKey.generate())
