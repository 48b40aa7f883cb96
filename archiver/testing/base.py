"""What every fake provider API shares: the task table, the request log, auth, injected
trouble (outages, 429s) and the CDN that serves result files at /cdn/{task_id}/{index}."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections import Counter

from aiohttp import web

from archiver.testing.tasks import FakeTask, Request


class ApiBase:
    """The state of the fake world; `base` (and `cdn_base`, else `base`) is set once it is served."""

    def __init__(self, api_key: str, *more_keys: str) -> None:
        self.api_key = api_key
        self.keys = {api_key, *more_keys}
        self.tasks: dict[tuple[str, str], FakeTask] = {}
        self.requests: list[Request] = []
        self.cdn_hits: dict[str, int] = {}
        self.outage: dict[str, tuple[float, str]] = {}  # entry → (until, "500" | "garbage")
        self.throttle: dict[str, float | str] = {}  # entry → Retry-After (seconds or HTTP date) for its next request
        self.ranges: list[tuple[str, int]] = []  # CDN requests that resumed: (file, first byte)
        self.cdn_first: dict[str, float] = {}  # file → when the CDN first began to serve it
        self.base = ""
        self.cdn_base = ""

    @property
    def cdn_root(self) -> str:
        return self.cdn_base or self.base

    def add(self, task: FakeTask) -> FakeTask:
        self.tasks[(task.provider_type, task.task_id)] = task
        return task

    def url(self, task: FakeTask, index: int) -> str:
        """Result URL `index` of `task` as a poll hands it out: freshly signed each time, by default."""
        if task.fresh_urls is not None and task.polls > 1:
            return task.fresh_urls[index]
        if task.urls is not None:
            return task.urls[index]
        return f"{self.cdn_root}/cdn/{task.task_id}/{index}?sig=SIGNED-{os.urandom(4).hex()}"

    def requests_for(self, entry: str) -> list[Request]:
        return [r for r in self.requests if r.entry == entry]

    def requests_per_key(self) -> dict[str, int]:
        return dict(Counter(r.key for r in self.requests))

    # --- trouble shared by every API --------------------------------------------------------

    async def _arrive(self, request: web.Request, entry: str, body: object,
                      scheme: str = "Bearer") -> web.Response | None:
        """Log the request; answer it here if the entry is throttled, down, or the key is wrong."""
        auth = request.headers.get("Authorization", "")
        key = auth.removeprefix(f"{scheme} ")
        logged = Request(time.monotonic(), entry, request.path_qs, body, key=key)
        self.requests.append(logged)
        if entry in self.throttle:
            logged.status = 429
            return _too_many(self.throttle.pop(entry))
        until, kind = self.outage.get(entry, (0.0, ""))
        if time.monotonic() < until:
            logged.status = 500 if kind == "500" else 200
            if kind == "500":
                return web.Response(status=500, text="upstream exploded")
            return web.Response(text="<html>garbage", content_type="text/html")
        if not auth.startswith(f"{scheme} ") or key not in self.keys:
            logged.status = 401
            return web.json_response({"code": 401, "msg": "unauthorized"}, status=401)
        return None

    def _throttled(self, *tasks: FakeTask | None) -> web.Response | None:
        """A 429 if one of `tasks` still has throttled polls to answer (FakeTask.throttled)."""
        held = [t for t in tasks if t is not None and t.throttled > 0]
        for task in held:
            task.throttled -= 1
        if not held:
            return None
        self.requests[-1].status = 429
        return _too_many(held[0].retry_after)

    def _task(self, provider_type: str, task_id: str, where: str = "") -> FakeTask | None:
        task = self.tasks.get((provider_type, task_id))
        return task if task is not None and task.where == where else None

    # --- CDN ------------------------------------------------------------------------------------

    async def cdn(self, request: web.Request) -> web.StreamResponse:
        """Serve a result file; honours Range with If-Range, as real CDNs do, and can be slow."""
        name = f"{request.match_info['task_id']}/{request.match_info['index']}"
        task = next((t for t in self.tasks.values() if t.task_id == request.match_info["task_id"]), None)
        index = int(request.match_info["index"])
        if task is None or index >= len(task.files):
            return web.Response(status=404)
        if task.expired and "X-Amz-Signature" not in request.query:
            return web.Response(status=403, text="AccessDenied")
        if task.delete_after is not None and task.succeeded_at is not None \
                and time.monotonic() > task.succeeded_at + task.delete_after:
            return web.Response(status=404, text="deleted")
        self.cdn_hits[name] = self.cdn_hits.get(name, 0) + 1
        self.cdn_first.setdefault(name, time.monotonic())
        body = task.body(index)
        etag = f'"{hashlib.sha256(body).hexdigest()[:16]}"'
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


def _too_many(wait: float | str) -> web.Response:
    return web.json_response({"code": 429, "msg": "Rate limit exceeded"}, status=429,
                             headers={"Retry-After": wait if isinstance(wait, str) else f"{wait:g}"})
