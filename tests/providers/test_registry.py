"""Registry-wide: every provider's documented fixtures parse to their documented outcome."""

from __future__ import annotations

from pathlib import Path

import pytest

from archiver import errors
from archiver.model import REASONS, Phase
from archiver.providers import PROVIDERS
from tests.providers.conftest import FIXTURES, fixture_files, load_fixture
from tests.support.providers import entry, poll_canned


def test_registry_is_sorted_and_complete() -> None:
    assert list(PROVIDERS) == sorted(PROVIDERS)
    for name, cls in PROVIDERS.items():
        assert cls.type == name
        assert cls.requests_per_second > 0 and cls.batch_size >= 1
        assert (FIXTURES / name).is_dir(), f"{name} has no fixtures"


def test_construction_does_no_io() -> None:
    # Port 9 on loopback is closed: a constructor that dialled out would fail or hang here.
    for name, cls in PROVIDERS.items():
        cls(entry(name, "http://127.0.0.1:9", service="seedream", app="fal-ai/flux/dev"))


@pytest.mark.parametrize("path", fixture_files(), ids=lambda p: f"{p.parent.name}/{p.stem}")
async def test_fixture(path: Path) -> None:
    fixture = load_fixture(path)
    expect = fixture["expect"]
    if "source" in fixture or path.parent.name in ("fal", "replicate") or "api" in fixture.get("entry", {}):
        assert fixture["source"] in ("docs", "constructed"), "say where the answer comes from"
    if "raises" in expect:
        with pytest.raises(getattr(errors, expect["raises"])):
            await poll_canned(path.parent.name, fixture)
        return
    result = await poll_canned(path.parent.name, fixture)
    if expect.get("not_found"):
        assert fixture["task_id"] not in result
        return
    status = result[fixture["task_id"]]
    assert status.phase == Phase(expect["phase"])
    if status.phase == Phase.SUCCEEDED:
        assert list(status.urls) == expect["urls"]
        assert status.media == expect.get("media", status.media)
        assert list(status.roles) == expect.get("roles", list(status.roles))
    if status.phase == Phase.FAILED:
        assert status.reason in REASONS
        for field in ("reason", "code", "message"):
            if field in expect:
                assert getattr(status, field) == expect[field], field
    assert status.response is not None
