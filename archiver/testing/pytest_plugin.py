"""The `fake_providers` fixture: a running FakeProviders per test.

Enable it in a conftest.py with `pytest_plugins = ["archiver.testing.pytest_plugin"]`.
The fixture is async: it needs pytest-asyncio (either mode).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from archiver.testing.kit import FakeProviders


@pytest_asyncio.fixture
async def fake_providers() -> AsyncIterator[FakeProviders]:
    """Fake APIs of every provider type and a CDN on 127.0.0.1, stopped after the test."""
    async with FakeProviders() as fake:
        yield fake
