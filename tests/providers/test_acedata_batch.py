"""acedata: every task-record fixture, seen as an item of one retrieve_batch answer, reads
as it does alone. A batch answer is `{"items": [record, …], "count": N}` (docs/providers.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp

from archiver.model import Phase
from archiver.pacing import ProviderHttp, TokenBucket
from archiver.providers.acedata import AceData
from tests.providers.conftest import fixture_files, load_fixture
from tests.support.providers import entry
from tests.support.servers import REQUESTS, routed, serve


def is_record(body: Any) -> bool:
    """A task record; a bare response (the seedream guide's retrieve) never comes in a batch."""
    return isinstance(body, dict) and any(k in body for k in ("id", "request", "response"))


def record_fixtures() -> dict[str, dict[str, Any]]:
    """Fixtures of a record with an outcome, by the batch ID each is given."""
    found = {}
    for path in fixture_files("acedata"):
        fixture = load_fixture(path)
        if "phase" in fixture["expect"] and is_record(fixture["body"]):
            found[f"batch-{Path(path).stem}"] = fixture
    return found


async def test_record_shapes_inside_a_batch() -> None:
    fixtures = record_fixtures()
    assert len(fixtures) >= 20  # every outcome and service shape in fixtures/acedata/
    items = [fixture["body"] | {"id": batch_id} for batch_id, fixture in fixtures.items()]
    items.reverse()  # the answer need not keep the order of the IDs asked for
    app = routed({"/seedream/tasks": (200, json.dumps({"items": items, "count": len(items)}).encode())})
    async with serve(app) as base, aiohttp.ClientSession() as session:
        provider = AceData(entry("acedata", base, service="seedream"))
        result = await provider.poll(ProviderHttp("acedata", session, TokenBucket(1000)), list(fixtures))
    [(_, _, raw)] = app[REQUESTS]
    assert json.loads(raw)["action"] == "retrieve_batch"
    assert set(result) == set(fixtures)
    for batch_id, fixture in fixtures.items():
        status, expect = result[batch_id], fixture["expect"]
        assert status.phase == Phase(expect["phase"]), batch_id
        if status.phase == Phase.SUCCEEDED:
            assert list(status.urls) == expect["urls"], batch_id
            assert status.media == expect.get("media", status.media), batch_id
        for field in ("reason", "code", "message"):
            if field in expect:
                assert getattr(status, field) == expect[field], (batch_id, field)
        assert status.response["id"] == batch_id
