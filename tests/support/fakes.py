"""A fake provider API and CDN in one aiohttp app, answering with the documented JSON.

Each FakeTask walks through its provider states, one step per poll of it, and its result
files are served by the CDN part at /cdn/{task_id}/{index}. Every request is logged with
its time so tests can check rate limits and batching from the server's side.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

FAKES = web.AppKey("fakes", "FakeApis")

PNG = b"\x89PNG\r\n\x1a\n"
JPEG = b"\xff\xd8\xff\xe0"
MP4 = b"\x00\x00\x00\x18ftypmp42"


def media_bytes(kind: str, size: int, seed: str) -> bytes:
    """Deterministic bytes of `size` that sniff as png, jpg or mp4."""
    magic = {"png": PNG, "jpg": JPEG, "mp4": MP4}[kind]
    block = hashlib.sha256(seed.encode()).digest()
    return (magic + block * (size // len(block) + 1))[:size]


@dataclass
class FakeTask:
    provider_type: str
    task_id: str
    states: list[str]
    files: list[bytes] = field(default_factory=list)
    model: str = "seedream/4.5-edit"
    prompt: str = "a lighthouse at dusk"
    fail_code: Any = None
    fail_msg: str | None = None
    polls: int = 0

    def state(self) -> str:
        return self.states[min(self.polls, len(self.states) - 1)]


@dataclass
class Request:
    at: float
    path: str
    body: Any


class FakeApis:
    """The fake kie Market API plus a CDN; `base` is set once the server runs."""

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.tasks: dict[str, FakeTask] = {}
        self.requests: list[Request] = []
        self.cdn_hits: dict[str, int] = {}
        self.base = ""

    def add(self, task: FakeTask) -> FakeTask:
        self.tasks[task.task_id] = task
        return task

    def url(self, task: FakeTask, index: int) -> str:
        return f"{self.base}/cdn/{task.task_id}/{index}?sig=SIGNED-{os.urandom(4).hex()}"

    def app(self) -> web.Application:
        app = web.Application()
        app[FAKES] = self
        app.router.add_get("/api/v1/jobs/recordInfo", self.kie)
        app.router.add_get("/cdn/{task_id}/{index}", self.cdn)
        return app

    def _authorised(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.api_key}"

    async def kie(self, request: web.Request) -> web.Response:
        self.requests.append(Request(time.monotonic(), request.path, dict(request.query)))
        if not self._authorised(request):
            return web.json_response({"code": 401, "msg": "You do not have access permissions"})
        task = self.tasks.get(request.query.get("taskId", ""))
        if task is None or task.provider_type != "kie":
            return web.json_response({"code": 404, "msg": "Task not found"})
        state = task.state()
        task.polls += 1
        return web.json_response({"code": 200, "msg": "success", "data": self._kie_record(task, state)})

    def _kie_record(self, task: FakeTask, state: str) -> dict[str, Any]:
        done = state in ("success", "fail")
        result = {"resultUrls": [self.url(task, i) for i in range(len(task.files))]}
        return {
            "taskId": task.task_id,
            "model": task.model,
            "state": state,
            "param": json.dumps({"model": task.model, "input": {"prompt": task.prompt}}),
            "resultJson": json.dumps(result) if state == "success" else "",
            "failCode": task.fail_code if state == "fail" else "",
            "failMsg": task.fail_msg if state == "fail" else "",
            "completeTime": 1763800000000 if done else None,
            "createTime": 1763799990000,
            "updateTime": 1763800000000,
        }

    async def cdn(self, request: web.Request) -> web.StreamResponse:
        task = self.tasks.get(request.match_info["task_id"])
        index = int(request.match_info["index"])
        if task is None or index >= len(task.files):
            return web.Response(status=404)
        name = f"{task.task_id}/{index}"
        self.cdn_hits[name] = self.cdn_hits.get(name, 0) + 1
        return web.Response(body=task.files[index], content_type="application/octet-stream")
