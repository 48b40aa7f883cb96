"""Fake provider APIs (kie, maxapi, acedata, apipod) and a CDN in one aiohttp app.

Each FakeTask walks through generic steps ("queued", "running", "success", "fail", and
"empty": a success without result URLs, for kie, maxapi and acedata), one step per
poll, and the fake answers in each provider's documented JSON. Result files are
served at /cdn/{task_id}/{index}. Every API request is logged with its arrival time and
the provider entry it was for, so tests can check rate limits and batching from the
server's side; `outage` and `throttle` inject trouble per entry.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

PNG = b"\x89PNG\r\n\x1a\n"
JPEG = b"\xff\xd8\xff\xe0"
MP4 = b"\x00\x00\x00\x18ftypmp42"
TASK_CREATED_MS = 1763799990000


def media_bytes(kind: str, size: int, seed: str) -> bytes:
    """Deterministic bytes of `size` that sniff as png, jpg or mp4."""
    magic = {"png": PNG, "jpg": JPEG, "mp4": MP4}[kind]
    block = hashlib.sha256(seed.encode()).digest()
    return (magic + block * (size // len(block) + 1))[:size]


@dataclass
class FakeTask:
    """A task at one provider. `where` is the acedata service or the apipod family."""

    provider_type: str
    task_id: str
    steps: list[str]
    files: list[bytes] = field(default_factory=list)
    model: str = "seedream-4.5"
    prompt: str = "a lighthouse at dusk"
    fail_code: Any = None
    fail_msg: str | None = None
    where: str = ""
    slow: float = 0.0  # seconds the CDN takes to stream each file, in small pieces
    polls: int = 0
    urls: list[str] | None = None  # result URLs to hand out instead of this app's /cdn/ ones
    callback: str = "https://example.com/cb"  # echoed back in the request the provider reports
    fresh_urls: list[str] | None = None  # handed out from the second poll on, as a provider renews URLs

    def step(self) -> str:
        """The step this poll sees; each poll moves the task one step on."""
        step = self.steps[min(self.polls, len(self.steps) - 1)]
        self.polls += 1
        return step


@dataclass
class Request:
    at: float
    entry: str
    path: str
    body: Any
    status: int = 200
    key: str = ""  # the API key the request carried


class FakeApis:
    """All four provider APIs plus a CDN; set `base` once the server runs."""

    def __init__(self, api_key: str, *more_keys: str) -> None:
        self.api_key = api_key
        self.keys = {api_key, *more_keys}
        self.tasks: dict[tuple[str, str], FakeTask] = {}
        self.requests: list[Request] = []
        self.cdn_hits: dict[str, int] = {}
        self.outage: dict[str, tuple[float, str]] = {}  # entry → (until, "500" | "garbage")
        self.throttle: dict[str, float | str] = {}  # entry → Retry-After (seconds or HTTP date) for its next request
        self.ranges: list[tuple[str, int]] = []  # CDN requests that resumed: (file, first byte)
        self.base = ""

    def add(self, task: FakeTask) -> FakeTask:
        self.tasks[(task.provider_type, task.task_id)] = task
        return task

    def url(self, task: FakeTask, index: int) -> str:
        if task.fresh_urls is not None and task.polls > 1:
            return task.fresh_urls[index]
        if task.urls is not None:
            return task.urls[index]
        return f"{self.base}/cdn/{task.task_id}/{index}?sig=SIGNED-{os.urandom(4).hex()}"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/v1/jobs/recordInfo", self.kie)
        app.router.add_get("/api/v1/task/{task_id}", self.maxapi)
        app.router.add_post("/{service}/tasks", self.acedata)
        app.router.add_get("/v1/{family}/status/{task_id}", self.apipod)
        app.router.add_get("/cdn/{task_id}/{index}", self.cdn)
        return app

    def requests_for(self, entry: str) -> list[Request]:
        return [r for r in self.requests if r.entry == entry]

    # --- trouble shared by every API --------------------------------------------------------

    async def _arrive(self, request: web.Request, entry: str, body: Any) -> web.Response | None:
        """Log the request; answer it here if the entry is throttled, down, or the key is wrong."""
        key = request.headers.get("Authorization", "").removeprefix("Bearer ")
        logged = Request(time.monotonic(), entry, request.path_qs, body, key=key)
        self.requests.append(logged)
        if entry in self.throttle:
            logged.status = 429
            wait = self.throttle.pop(entry)
            return web.json_response({"code": 429, "msg": "Rate limit exceeded"}, status=429,
                                     headers={"Retry-After": wait if isinstance(wait, str) else f"{wait:g}"})
        until, kind = self.outage.get(entry, (0.0, ""))
        if time.monotonic() < until:
            logged.status = 500 if kind == "500" else 200
            if kind == "500":
                return web.Response(status=500, text="upstream exploded")
            return web.Response(text="<html>garbage", content_type="text/html")
        if key not in self.keys:
            logged.status = 401
            return web.json_response({"code": 401, "msg": "unauthorized"}, status=401)
        return None

    def _task(self, provider_type: str, task_id: str, where: str = "") -> FakeTask | None:
        task = self.tasks.get((provider_type, task_id))
        return task if task is not None and task.where == where else None

    # --- kie ----------------------------------------------------------------------------------

    async def kie(self, request: web.Request) -> web.Response:
        if early := await self._arrive(request, "kie", dict(request.query)):
            return early
        task = self._task("kie", request.query.get("taskId", ""))
        if task is None:
            return web.json_response({"code": 404, "msg": "Task not found"})
        step = task.step()
        state = {"queued": "waiting", "running": "generating", "success": "success", "empty": "success",
                 "fail": "fail"}[step]
        result = {"resultUrls": [self.url(task, i) for i in range(len(task.files)) if step == "success"]}
        done = step in ("success", "empty", "fail")
        data = {
            "taskId": task.task_id, "model": task.model, "state": state,
            "param": json.dumps({"model": task.model, "callBackUrl": task.callback, "input": {"prompt": task.prompt}}),
            "resultJson": json.dumps(result) if state == "success" else "",
            "failCode": task.fail_code if step == "fail" else "",
            "failMsg": task.fail_msg if step == "fail" else "",
            "completeTime": TASK_CREATED_MS + 10_000 if done else None,
            "createTime": TASK_CREATED_MS, "updateTime": TASK_CREATED_MS + 10_000,
        }
        return web.json_response({"code": 200, "msg": "success", "data": data})

    # --- maxapi -------------------------------------------------------------------------------

    async def maxapi(self, request: web.Request) -> web.Response:
        if early := await self._arrive(request, "maxapi", None):
            return early
        task = self._task("maxapi", request.match_info["task_id"])
        if task is None:
            return web.json_response({"code": 404, "msg": "task not found"}, status=404)
        step = task.step()
        status = {"queued": "PENDING", "running": "PROCESSING", "success": "SUCCESS", "empty": "SUCCESS",
                  "fail": task.fail_code or "FAILURE"}[step]
        kind = "video" if task.files and task.files[0].startswith(MP4) else "image"
        data = {
            "taskId": task.task_id, "status": status,
            "input": {"model": task.model, "prompt": task.prompt, "ratio": "16:9", "callback_url": task.callback},
            "result": ({"type": kind, "urls": [self.url(task, i) for i in range(len(task.files))
                                               if step == "success"]}
                       if status == "SUCCESS" else None),
            "failure_reason": task.fail_msg if step == "fail" else None,
            "created_at": "2026-11-22T10:00:00.000000Z", "updated_at": "2026-11-22T10:00:05.123456Z",
        }
        return web.json_response({"code": 0, "msg": "ok", "data": data})

    # --- acedata ------------------------------------------------------------------------------

    async def acedata(self, request: web.Request) -> web.Response:
        service = request.match_info["service"]
        body = await request.json()
        if early := await self._arrive(request, f"acedata:{service}", body):
            return early
        if body.get("action") == "retrieve_batch":
            ids = body.get("ids", [])[: body.get("limit", 12)]
            items = [self._ace_record(t) for i in ids if (t := self._task("acedata", i, service))]
            return web.json_response({"items": items, "count": len(items)})
        task = self._task("acedata", str(body.get("id")), service)
        if task is None:
            return web.json_response({"success": False, "error": {"code": "not_found",
                                      "message": "task not found"}}, status=404)
        return web.json_response(self._ace_record(task))

    def _ace_record(self, task: FakeTask) -> dict[str, Any]:
        step = task.step()
        record: dict[str, Any] = {
            "_id": f"mongo-{task.task_id}", "id": task.task_id, "trace_id": f"trace-{task.task_id}",
            "type": "videos" if task.where == "seedance" else "images", "created_at": 1763799990.5,
            "request": {"model": task.model, "prompt": task.prompt, "callback_url": task.callback},
            "response": None,
        }
        if step == "success":
            urls = [self.url(task, i) for i in range(len(task.files))]
            data: Any = ({"task_id": "cgt-1", "status": "succeeded", "video_url": urls[0], "last_frame_url": None}
                         if task.where == "seedance" else
                         [{"prompt": task.prompt, "size": "2048x2048", "image_url": u} for u in urls])
            record |= {"finished_at": 1763800000.25,
                       "response": {"success": True, "task_id": task.task_id, "data": data}}
        elif step == "empty":
            record |= {"finished_at": 1763800000.25,
                       "response": {"success": True, "task_id": task.task_id, "data": []}}
        elif step == "fail":
            record |= {"finished_at": 1763800000.25, "response": {
                "success": False, "task_id": task.task_id,
                "error": {"code": task.fail_code, "message": task.fail_msg}}}
        return record

    # --- apipod -------------------------------------------------------------------------------

    async def apipod(self, request: web.Request) -> web.Response:
        if early := await self._arrive(request, "apipod", None):
            return early
        family = request.match_info["family"]
        task = self._task("apipod", request.match_info["task_id"], family)
        if task is None:
            return web.json_response({"code": 404, "message": "model or task is unavailable to the caller",
                                      "data": {"type": "not_found_error", "error_code": "not_found"}},
                                     status=404)
        step = task.step()
        data: dict[str, Any] = {"task_id": task.task_id,
                                "status": {"queued": "pending", "running": "processing",
                                           "success": "completed", "fail": "failed"}[step]}
        if step == "running":
            data["progress"] = 40
        if step == "success":
            data |= {"progress": 100, "result": [self.url(task, i) for i in range(len(task.files))],
                     "completed_at": 1763800000}
        if step == "fail" and family == "images":
            data |= {"error_code": task.fail_code, "error_message": task.fail_msg}
        elif step == "fail":
            data["error"] = task.fail_msg
        return web.json_response({"code": 200, "message": "success", "data": data})

    # --- CDN ------------------------------------------------------------------------------------

    async def cdn(self, request: web.Request) -> web.StreamResponse:
        """Serve a result file; honours Range with If-Range, as real CDNs do, and can be slow."""
        name = f"{request.match_info['task_id']}/{request.match_info['index']}"
        task = next((t for t in self.tasks.values() if t.task_id == request.match_info["task_id"]), None)
        index = int(request.match_info["index"])
        if task is None or index >= len(task.files):
            return web.Response(status=404)
        self.cdn_hits[name] = self.cdn_hits.get(name, 0) + 1
        body, etag = task.files[index], f'"{hashlib.sha256(task.files[index]).hexdigest()[:16]}"'
        start = 0
        if request.http_range.start and request.headers.get("If-Range") == etag:
            start = request.http_range.start
            self.ranges.append((name, start))
        response = web.StreamResponse(status=206 if start else 200, headers={"ETag": etag})
        response.content_type = "application/octet-stream"
        response.content_length = len(body) - start
        if start:
            response.headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
        await response.prepare(request)
        pieces = 20 if task.slow else 1
        step = max(1, -(-len(body) // pieces))
        for offset in range(start, len(body), step):
            await response.write(body[offset:offset + step])
            if task.slow:
                await asyncio.sleep(task.slow / pieces)
        await response.write_eof()
        return response
