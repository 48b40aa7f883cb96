"""apipod: choosing /v1/images or /v1/videos, and remembering the answer in auto mode."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import aiohttp

from archiver.model import Phase, TaskStatus
from archiver.pacing import ProviderHttp, TokenBucket
from archiver.providers.apipod import ApiPod
from tests.support.providers import API_KEY, entry
from tests.support.servers import HEADERS, REQUESTS, routed, serve

TASK = "vid_task_01JEXAMPLE"
IMAGES = f"/v1/images/status/{TASK}"
VIDEOS = f"/v1/videos/status/{TASK}"


def status_body(status: str, **data: Any) -> bytes:
    return json.dumps({"code": 200, "message": "success",
                       "data": {"task_id": TASK, "status": status, **data}}).encode()


async def poll(provider: ApiPod, ids: Sequence[str]) -> dict[str, TaskStatus]:
    async with aiohttp.ClientSession() as session:
        return await provider.poll(ProviderHttp("apipod", session, TokenBucket(1000)), ids)


def paths(app: Any) -> list[str]:
    return [path for _, path, _ in app[REQUESTS]]


async def test_auto_falls_back_to_videos_then_goes_straight_there() -> None:
    # Only /v1/videos knows the task; the images path gets routed's default JSON 404.
    app = routed({VIDEOS: (200, status_body("processing", progress=40))})
    async with serve(app) as base:
        provider = ApiPod(entry("apipod", base, family="auto"))
        first = await poll(provider, [TASK])
        assert first[TASK].phase == Phase.RUNNING
        assert paths(app) == [IMAGES, VIDEOS]
        second = await poll(provider, [TASK])
        assert second[TASK].phase == Phase.RUNNING
        assert paths(app) == [IMAGES, VIDEOS, VIDEOS]
    assert all(h["Authorization"] == f"Bearer {API_KEY}" for h in app[HEADERS])


async def test_auto_image_task_is_one_request() -> None:
    url = "https://s.apipod.ai/images/demo.png"
    app = routed({IMAGES: (200, status_body("completed", result=[url], completed_at=1775137415))})
    async with serve(app) as base:
        result = await poll(ApiPod(entry("apipod", base, family="auto")), [TASK])
    assert paths(app) == [IMAGES]
    assert result[TASK].urls == (url,) and result[TASK].media == "image"
    assert result[TASK].completed_at == "2026-04-02T13:43:35.000Z"


async def test_auto_unknown_everywhere_is_left_out() -> None:
    app = routed({})
    async with serve(app) as base:
        assert await poll(ApiPod(entry("apipod", base, family="auto")), [TASK]) == {}
    assert paths(app) == [IMAGES, VIDEOS]


async def test_fixed_family_never_tries_the_other() -> None:
    app = routed({VIDEOS: (200, status_body("processing"))})
    async with serve(app) as base:
        assert await poll(ApiPod(entry("apipod", base, family="images")), [TASK]) == {}
    assert paths(app) == [IMAGES]


async def test_video_result_is_video_media() -> None:
    url = "https://cdn.example.com/generated.mp4"
    app = routed({VIDEOS: (200, status_body("completed", result=[url]))})
    async with serve(app) as base:
        result = await poll(ApiPod(entry("apipod", base, family="videos")), [TASK])
    assert result[TASK].phase == Phase.SUCCEEDED and result[TASK].media == "video"
