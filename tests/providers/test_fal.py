"""fal: app path from the model id, status then result in one poll, and the auth word."""

from __future__ import annotations

import json

import aiohttp
import pytest

from archiver.config import Secret
from archiver.model import Phase
from archiver.pacing import ProviderHttp, TokenBucket
from archiver.providers.fal import Fal, app_path
from tests.support.providers import entry
from tests.support.servers import HEADERS, REQUESTS, routed, serve

RID = "019a4b2c-7d3e-7f00-8a1b-2c3d4e5f6a7b"


@pytest.mark.parametrize(("model", "app"), [
    ("fal-ai/flux/dev", "fal-ai/flux"),
    ("fal-ai/kling-video/v2.5-turbo/pro/text-to-video", "fal-ai/kling-video"),
    ("fal-ai/flux", "fal-ai/flux"),
    ("workflows/acme/my-flow/v2", "workflows/acme/my-flow"),
    ("comfy/acme/graph", "comfy/acme/graph"),
    ("12345-myapp", "12345/myapp"),
    ("/fal-ai/flux/dev/", "fal-ai/flux"),
])
def test_app_path(model: str, app: str) -> None:
    assert app_path(model) == app


async def poll(status: int, status_body: dict, result: tuple[int, dict] | None = None):
    base_path = f"/fal-ai/flux/requests/{RID}"
    replies = {f"{base_path}/status": (status, json.dumps(status_body).encode())}
    if result:
        replies[base_path] = (result[0], json.dumps(result[1]).encode())
    app = routed(replies)
    async with serve(app) as base, aiohttp.ClientSession() as session:
        provider = Fal(entry("fal", base, app="fal-ai/flux/dev", api_key=Secret("Key fal-abc:def")))
        found = await provider.poll(ProviderHttp("fal", session, TokenBucket(1000)), [RID])
    return found, app


async def test_running_asks_only_the_status_with_the_key_word() -> None:
    found, app = await poll(202, {"status": "IN_QUEUE", "queue_position": 3})
    assert found[RID].phase == Phase.RUNNING
    assert [(m, p) for m, p, _ in app[REQUESTS]] == [("GET", f"/fal-ai/flux/requests/{RID}/status")]
    assert app[HEADERS][0]["Authorization"] == "Key fal-abc:def"


async def test_completed_fetches_the_result_in_the_same_poll() -> None:
    result = {"images": [{"url": "https://v3.fal.media/files/a.png", "content_type": "image/png"}], "prompt": "a fox"}
    found, app = await poll(200, {"status": "COMPLETED", "metrics": {"inference_time": 3.2}}, (200, result))
    status = found[RID]
    assert (status.phase, status.prompt) == (Phase.SUCCEEDED, "a fox")
    assert status.urls == ("https://v3.fal.media/files/a.png",)
    assert status.response == {"status": {"status": "COMPLETED", "metrics": {"inference_time": 3.2}}, "result": result}
    assert [p for _, p, _ in app[REQUESTS]] == [f"/fal-ai/flux/requests/{RID}/status", f"/fal-ai/flux/requests/{RID}"]
    assert all(h["Authorization"] == "Key fal-abc:def" for h in app[HEADERS])
