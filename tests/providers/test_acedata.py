"""acedata: retrieve vs retrieve_batch on the wire, and what the single-reply fixtures cannot show."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import aiohttp
import pytest

from archiver.errors import ConfigError, KeyRejected
from archiver.archive_format.redaction import REDACTED, redact_secrets
from archiver.model import Phase, TaskStatus
from archiver.pacing import ProviderHttp, TokenBucket
from archiver.providers.acedata import AceData, parse_record, result_urls
from tests.support.providers import API_KEY, entry
from tests.support.servers import HEADERS, REQUESTS, routed, serve

IDS = ["aaaaaaaa-0001", "bbbbbbbb-0002", "cccccccc-0003"]
CDN = "https://platform.cdn.acedata.cloud/seedream"


def record(task_id: str, url: str | None) -> dict[str, Any]:
    response = None if url is None else {"success": True, "task_id": task_id,
                                         "data": [{"image_url": url, "size": "2048x2048"}]}
    return {"id": task_id, "type": "images", "created_at": 1766427547.107,
            "request": {"model": "doubao-seedream-4-0-250828", "prompt": f"prompt {task_id}",
                        "callback_url": "https://hooks.example.com/secret-path"},
            "response": response}


async def poll(provider: AceData, ids: Sequence[str]) -> dict[str, TaskStatus]:
    async with aiohttp.ClientSession() as session:
        return await provider.poll(ProviderHttp("acedata", session, TokenBucket(1000)), ids)


async def test_batch_is_one_request_and_items_map_back_by_id() -> None:
    # Items come back out of order, one asked-for ID is missing, one stranger is present.
    items = [record(IDS[2], f"{CDN}/c.jpg"), record("zzzz-not-asked", f"{CDN}/z.jpg"),
             record(IDS[0], None)]
    app = routed({"/seedream/tasks": (200, json.dumps({"items": items, "count": 3}).encode())})
    async with serve(app) as base:
        result = await poll(AceData(entry("acedata", base, service="seedream")), IDS)
    assert len(app[REQUESTS]) == 1
    method, path, raw = app[REQUESTS][0]
    assert (method, path) == ("POST", "/seedream/tasks")
    assert json.loads(raw) == {"action": "retrieve_batch", "ids": IDS, "limit": len(IDS)}
    assert app[HEADERS][0]["Authorization"] == f"Bearer {API_KEY}"
    assert app[HEADERS][0]["Content-Type"].startswith("application/json")
    assert set(result) == {IDS[0], IDS[2]}  # IDS[1] is unknown: left out
    assert result[IDS[0]].phase == Phase.RUNNING
    assert result[IDS[2]].phase == Phase.SUCCEEDED
    assert result[IDS[2]].urls == (f"{CDN}/c.jpg",)
    assert result[IDS[2]].prompt == f"prompt {IDS[2]}"


async def test_single_id_uses_retrieve() -> None:
    app = routed({"/seedance/tasks": (200, json.dumps(record(IDS[1], f"{CDN}/b.jpg")).encode())})
    async with serve(app) as base:
        result = await poll(AceData(entry("acedata", base, service="seedance")), [IDS[1]])
    (method, path, raw), = app[REQUESTS]
    assert (method, path) == ("POST", "/seedance/tasks")
    assert json.loads(raw) == {"action": "retrieve", "id": IDS[1]}
    status = result[IDS[1]]
    assert status.phase == Phase.SUCCEEDED and status.media == "image"
    assert status.model == "doubao-seedream-4-0-250828"
    assert status.created_at == "2025-12-22T18:19:07.107Z"
    # The callback URL may hold a secret path token: the archive keeps it redacted.
    assert status.input is not None
    assert redact_secrets(status.input)["callback_url"] == REDACTED


async def test_empty_batch_answer_leaves_every_id_unknown() -> None:
    app = routed({"/seedream/tasks": (200, b'{"items": [], "count": 0}')})
    async with serve(app) as base:
        assert await poll(AceData(entry("acedata", base, service="seedream")), IDS) == {}


async def test_used_up_is_a_key_problem_and_never_shows_the_key() -> None:
    body = {"success": False, "error": {"code": "used_up", "message": ""}, "trace_id": "t"}
    app = routed({"/seedream/tasks": (403, json.dumps(body).encode())})
    async with serve(app) as base:
        with pytest.raises(KeyRejected) as caught:
            await poll(AceData(entry("acedata", base, service="seedream")), IDS)
    assert "used_up" in str(caught.value) and "balance" in str(caught.value)
    assert API_KEY not in str(caught.value)


def test_prompt_comes_from_content_text_and_urls_never_from_request() -> None:
    rec = {"id": "x", "finished_at": 1766329500.1,
           "request": {"model": "m", "content": [{"type": "image_url", "image_url": {"url": "https://in/"}},
                                                 {"type": "text", "text": "a cat"}]},
           "response": {"success": True, "data": {"status": "succeeded",
                                                  "video_url": "https://cdn/out.mp4",
                                                  "reference_image_url": "https://in/ref.png"}}}
    status = parse_record(rec)
    assert status.prompt == "a cat"
    assert status.urls == ("https://cdn/out.mp4",)
    assert status.completed_at == "2025-12-21T15:05:00.100Z"


def test_result_urls_walks_nested_lists_and_dedupes() -> None:
    response = {"data": [{"image_url": "https://a/1.png", "sub_image_urls": ["https://a/2.png",
                                                                            "https://a/1.png"]},
                         {"nested": {"urls": ["https://a/3.png", "not-a-url", 5]}}],
                "callback_url": "https://hooks/x", "thumbnail_url": "https://a/t.png"}
    assert [u for u, _ in result_urls(response)] == ["https://a/1.png", "https://a/2.png",
                                                     "https://a/3.png"]


def test_an_entry_without_service_is_refused() -> None:
    with pytest.raises(ConfigError):
        AceData(entry("acedata", "http://127.0.0.1:9"))


async def test_a_broken_record_does_not_stall_its_batch() -> None:
    broken = {**record(IDS[1], None), "response": 42}
    items = [record(IDS[0], f"{CDN}/a.jpg"), broken]
    app = routed({"/seedream/tasks": (200, json.dumps({"items": items, "count": 2}).encode())})
    async with serve(app) as base:
        result = await poll(AceData(entry("acedata", base, service="seedream")), IDS[:2])
    assert set(result) == {IDS[0]}
