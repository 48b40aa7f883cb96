"""kie product APIs: the documented query path per product, times, per-task limits, URL refresh."""

from __future__ import annotations

import json
import logging
import random
import time
from typing import Any

import aiohttp
import pytest

from archiver.errors import KeyRejected, ProviderUnavailable
from archiver.model import Phase
from archiver.pacing import ProviderHttp, TokenBucket
from archiver.model import TaskState
from archiver.poller import EntryPoller
from archiver.state import Task
from archiver.providers.kie import Kie
from archiver.providers.kie_products import local_time
from tests.support.providers import API_KEY, entry
from tests.support.servers import HEADERS, REQUESTS, routed, serve

PATHS = {
    "market": "/api/v1/jobs/recordInfo",
    "veo": "/api/v1/veo/record-info",
    "4o-image": "/api/v1/gpt4o-image/record-info",
    "flux-kontext": "/api/v1/flux/kontext/record-info",
    "mj": "/api/v1/mj/record-info",
    "suno": "/api/v1/generate/record-info",
    "runway": "/api/v1/runway/record-detail",
    "luma": "/api/v1/modify/record-info",
}
RUNNING = {"market": {"state": "generating"}, "suno": {"status": "PENDING"}, "runway": {"state": "wait"},
           "4o-image": {"status": "GENERATING"}}


async def call(api: str, replies: dict[str, tuple[int, bytes]], method: str, *args: Any) -> tuple[Any, Any]:
    app = routed(replies)
    async with serve(app) as base, aiohttp.ClientSession() as session:
        provider = Kie(entry("kie", base, api=api))
        result = await getattr(provider, method)(ProviderHttp("kie", session, TokenBucket(1000)), *args)
    return result, app


@pytest.mark.parametrize("api", PATHS)
async def test_each_product_asks_its_own_path(api: str) -> None:
    body = {"code": 200, "msg": "success", "data": {"taskId": "t 1", "successFlag": 0, **RUNNING.get(api, {})}}
    result, app = await call(api, {PATHS[api]: (200, json.dumps(body).encode())}, "poll", ["t 1"])
    assert result["t 1"].phase == Phase.RUNNING
    assert [(m, p) for m, p, _ in app[REQUESTS]] == [("GET", f"{PATHS[api]}?taskId=t%201")]
    assert app[HEADERS][0]["Authorization"] == f"Bearer {API_KEY}"


def test_per_task_limits_and_grace() -> None:
    limits = {api: Kie(entry("kie", "http://127.0.0.1:9", api=api)).min_poll_interval for api in PATHS}
    assert limits.pop("4o-image") == limits.pop("suno") == pytest.approx(1 / 3)  # 3 queries a second per task
    assert set(limits.values()) == {0.0}
    assert Kie(entry("kie", "http://127.0.0.1:9")).not_found_grace == 0.0
    assert Kie(entry("kie", "http://127.0.0.1:9", api="veo")).not_found_grace > 0


def test_the_poller_never_polls_a_task_faster_than_its_limit() -> None:
    fast = entry("kie", "http://127.0.0.1:9", api="suno", poll_intervals=((0.01, float("inf")),))
    poller = EntryPoller(fast, Kie(fast), None, None, lambda t, a, i: None, None, random.Random(1))  # type: ignore[arg-type]
    task = Task(1, "kie", "t1", {}, TaskState.POLLING, time.time(), 0, None, None, None, None, None, None, None, None,
                None, None, None, None, time.time())
    before = time.time()
    assert poller._next_poll(task)["next_poll_at"] - before >= 1 / 3


@pytest.mark.parametrize(("raw", "iso"), [
    ("2026-01-05 10:25:00", "2026-01-05T10:25:00.000"),  # Veo, Runway, Suno: zone not stated, none given
    ("2024-03-20T10:30:00Z", "2024-03-20T10:30:00.000Z"),  # Flux, Midjourney
    (1767608700000, "2026-01-05T10:25:00.000Z"),  # 4o Image, Luma: milliseconds
    ("not a time", "not a time"), (None, None), ("", None),
])
def test_times_in_every_format(raw: Any, iso: str | None) -> None:
    assert local_time(raw) == iso


FRESH = "https://tempfile.aiquickdraw.com/dl/x.png?X-Amz-Expires=1200&X-Amz-Signature=abc"
ORIGINAL = "https://tempfile.aiquickdraw.com/v/x.png"


@pytest.mark.parametrize(("api", "path", "sent"), [
    ("veo", "/api/v1/common/download-url", {"url": ORIGINAL}),
    ("market", "/api/v1/common/download-url", {"url": ORIGINAL}),
    ("4o-image", "/api/v1/gpt4o-image/download-url", {"taskId": "t1", "url": ORIGINAL}),
])
async def test_refresh_asks_the_right_endpoint(api: str, path: str, sent: dict[str, str]) -> None:
    reply = json.dumps({"code": 200, "msg": "success", "data": FRESH}).encode()
    link, app = await call(api, {path: (200, reply)}, "refresh_url", "t1", ORIGINAL)
    assert link == FRESH
    [(method, asked, body)] = app[REQUESTS]
    assert (method, asked, json.loads(body)) == ("POST", path, sent)


async def test_refresh_reads_the_quickstarts_object_too() -> None:
    reply = json.dumps({"code": 200, "data": {"downloadUrl": FRESH}}).encode()
    link, _ = await call("4o-image", {"/api/v1/gpt4o-image/download-url": (200, reply)}, "refresh_url", "t1", ORIGINAL)
    assert link == FRESH


async def test_refresh_refused_gives_none_and_logs_no_url(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "archiver.providers.kie")
    reply = json.dumps({"code": 422, "msg": "only kie-generated URLs are accepted", "data": None}).encode()
    link, _ = await call("veo", {"/api/v1/common/download-url": (200, reply)}, "refresh_url", "t1", ORIGINAL)
    assert link is None
    assert "only kie-generated" in caplog.text and "aiquickdraw" not in caplog.text and "task_id=t1" in caplog.text


@pytest.mark.parametrize(("status", "body", "error"), [
    (200, b'{"code":401,"msg":"You do not have access permissions"}', KeyRejected),
    (200, b"<html>", ProviderUnavailable),
    (500, b"oops", ProviderUnavailable),
])
async def test_refresh_trouble_raises_for_the_poller(status: int, body: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        await call("veo", {"/api/v1/common/download-url": (status, body)}, "refresh_url", "t1", ORIGINAL)


async def test_unknown_words_are_logged_with_provider_and_task(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "archiver.providers.kie_products")
    for api, data in (("veo", {"successFlag": 9}), ("suno", {"status": "NEW_WORD"}), ("runway", {"state": "odd"})):
        body = json.dumps({"code": 200, "msg": "success", "data": {"taskId": "t9", **data}}).encode()
        result, _ = await call(api, {PATHS[api]: (200, body)}, "poll", ["t9"])
        assert result["t9"].phase == Phase.RUNNING
    assert caplog.text.count("provider=kie task_id=t9") == 3
