"""maxapi: the request on the wire, times and fields, and what gets logged."""

from __future__ import annotations

import json
import logging
from typing import Any

import aiohttp
import pytest

from archiver.errors import KeyRejected
from archiver.model import Phase, TaskStatus
from archiver.pacing import ProviderHttp, TokenBucket
from archiver.providers.maxapi import MaxApi
from tests.support.providers import API_KEY, entry
from tests.support.servers import HEADERS, REQUESTS, routed, serve

TASK = "9db7d1ed-d1e5-4d11-9f3a-61f653b905ad"
PATH = f"/api/v1/task/{TASK}"


def envelope(status: str, **data: Any) -> bytes:
    task = {"taskId": TASK, "status": status,
            "input": {"model": "nano-banana", "prompt": "a red fox", "ratio": "16:9"},
            "result": None, "failure_reason": None,
            "created_at": "2026-02-10T21:54:46.686768Z", "updated_at": "2026-02-10T21:55:04.039815Z",
            **data}
    return json.dumps({"code": 0, "msg": "ok", "data": task}).encode()


async def poll_once(status: int, body: bytes) -> tuple[dict[str, TaskStatus], Any]:
    app = routed({PATH: (status, body)})
    async with serve(app) as base, aiohttp.ClientSession() as session:
        provider = MaxApi(entry("maxapi", base))
        result = await provider.poll(ProviderHttp("maxapi", session, TokenBucket(1000)), [TASK])
    return result, app


async def test_request_and_fields() -> None:
    result, app = await poll_once(200, envelope(
        "SUCCESS", result={"type": "image", "urls": ["https://example.com/a.png"]}))
    assert [(m, p) for m, p, _ in app[REQUESTS]] == [("GET", PATH)]
    assert app[HEADERS][0]["Authorization"] == f"Bearer {API_KEY}"
    status = result[TASK]
    assert status.phase == Phase.SUCCEEDED
    assert (status.model, status.prompt) == ("nano-banana", "a red fox")
    assert status.input == {"model": "nano-banana", "prompt": "a red fox", "ratio": "16:9"}
    assert status.created_at == "2026-02-10T21:54:46.686Z"
    assert status.completed_at == "2026-02-10T21:55:04.039Z"


async def test_running_task_has_no_completion_time() -> None:
    result, _ = await poll_once(200, envelope("PROCESSING"))
    assert result[TASK].phase == Phase.RUNNING and result[TASK].completed_at is None


async def test_odd_states_are_logged_with_provider_and_task(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "archiver.providers.maxapi")
    await poll_once(200, envelope("WARMING_UP"))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1
    assert all(f"provider=maxapi task_id={TASK}" in line for line in lines)


async def test_key_rejected_message_never_holds_the_key() -> None:
    with pytest.raises(KeyRejected) as caught:
        await poll_once(200, b'{"code":401,"msg":"unauthorized"}')
    assert "unauthorized" in str(caught.value) and API_KEY not in str(caught.value)
