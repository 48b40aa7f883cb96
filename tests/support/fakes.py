"""Fake provider APIs (kie and its products, maxapi, acedata, apipod, Replicate, fal) and a
CDN in one aiohttp app.

Each FakeTask walks through generic steps ("queued", "running", "success", "fail", and
"empty": a success without result URLs, for kie, maxapi, acedata and apipod), one step per poll,
and the fake answers in each provider's documented JSON. Result files are served at
/cdn/{task_id}/{index}. Every API request is logged with its arrival time and the provider
entry it was for, so tests can check rate limits and batching from the server's side;
`outage` and `throttle` inject trouble per entry.
"""

from __future__ import annotations

import asyncio
import base64
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
MP3 = b"ID3\x04\x00\x00\x00\x00\x00\x00"
WAV = b"RIFF\x24\x00\x00\x00WAVEfmt "
M4A = b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00"
FLAC = b"fLaC\x00\x00\x00\x22"
AAC = b"\xff\xf1\x50\x80"
TASK_CREATED_MS = 1763799990000


def media_bytes(kind: str, size: int, seed: str) -> bytes:
    """Deterministic bytes of `size` that sniff as png, jpg, mp4 or an audio format."""
    magic = {"png": PNG, "jpg": JPEG, "mp4": MP4, "mp3": MP3, "wav": WAV, "m4a": M4A, "flac": FLAC,
             "aac": AAC}[kind]
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
    expired: bool = False  # the CDN refuses the plain URL (403); only a kie download-url link works
    delete_after: float | None = None  # the CDN drops the files this long after success was first told
    succeeded_at: float | None = None  # when a poll first answered success
    callback: str = "https://example.com/cb"  # echoed back in the request the provider reports
    fresh_urls: list[str] | None = None  # handed out from the second poll on, as a provider renews URLs

    def step(self) -> str:
        """The step this poll sees; each poll moves the task one step on."""
        step = self.steps[min(self.polls, len(self.steps) - 1)]
        self.polls += 1
        if step == "success" and self.succeeded_at is None:
            self.succeeded_at = time.monotonic()
        return step


# kie's product query paths, as documented (docs/providers.md, kie), by `api`.
KIE_PRODUCT_PATHS = {
    "/api/v1/veo/record-info": "veo",
    "/api/v1/gpt4o-image/record-info": "4o-image",
    "/api/v1/flux/kontext/record-info": "flux-kontext",
    "/api/v1/mj/record-info": "mj",
    "/api/v1/generate/record-info": "suno",
    "/api/v1/runway/record-detail": "runway",
    "/api/v1/modify/record-info": "luma",
}
DATA_PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(40))


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
        self.cdn_first: dict[str, float] = {}  # file → when the CDN first began to serve it
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
        for path in KIE_PRODUCT_PATHS:
            app.router.add_get(path, self.kie_product)
        app.router.add_post("/api/v1/common/download-url", self.kie_download_url)
        app.router.add_post("/api/v1/gpt4o-image/download-url", self.kie_download_url)
        app.router.add_get("/v1/predictions/{task_id}", self.replicate)
        app.router.add_get("/{owner}/{app}/requests/{task_id}/status", self.fal_status)
        app.router.add_get("/{owner}/{app}/requests/{task_id}", self.fal_result)
        return app

    def requests_for(self, entry: str) -> list[Request]:
        return [r for r in self.requests if r.entry == entry]

    # --- trouble shared by every API --------------------------------------------------------

    async def _arrive(self, request: web.Request, entry: str, body: Any,
                      scheme: str = "Bearer") -> web.Response | None:
        """Log the request; answer it here if the entry is throttled, down, or the key is wrong."""
        auth = request.headers.get("Authorization", "")
        key = auth.removeprefix(f"{scheme} ")
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
        if not auth.startswith(f"{scheme} ") or key not in self.keys:
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
                                           "success": "completed", "empty": "completed", "fail": "failed"}[step]}
        if step == "running":
            data["progress"] = 40
        if step in ("success", "empty"):
            data |= {"progress": 100, "completed_at": 1763800000,
                     "result": [self.url(task, i) for i in range(len(task.files)) if step == "success"]}
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
        if task.expired and "X-Amz-Signature" not in request.query:
            return web.Response(status=403, text="AccessDenied")
        if task.delete_after is not None and task.succeeded_at is not None \
                and time.monotonic() > task.succeeded_at + task.delete_after:
            return web.Response(status=404, text="deleted")
        self.cdn_hits[name] = self.cdn_hits.get(name, 0) + 1
        self.cdn_first.setdefault(name, time.monotonic())
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

    # --- kie product APIs (docs/providers.md) -----------------------------------------------------
    # Steps: "queued"/"running" (not done), "partial" (Suno FIRST_SUCCESS), "success", "fail".
    # On "fail", fail_code is the product's failure signal: the successFlag (2, 3), Suno's status
    # word or Runway's failCode; fail_msg is errorMessage / failMsg. Luma with fail_code 4 succeeds
    # with flag 4.

    async def kie_product(self, request: web.Request) -> web.Response:
        api = KIE_PRODUCT_PATHS[request.path]
        if early := await self._arrive(request, f"kie:{api}", dict(request.query)):
            return early
        task = self._task("kie", request.query.get("taskId", ""), api)
        if task is None:
            return web.json_response({"code": 422, "msg": "record is null", "data": None})
        step = task.step()
        urls = [self.url(task, i) for i in range(len(task.files))]
        data = {"suno": self._suno, "runway": self._runway}.get(api, self._flagged)(task, api, step, urls)
        return web.json_response({"code": 200, "msg": "success", "data": data})

    def _flagged(self, task: FakeTask, api: str, step: str, urls: list[str]) -> dict[str, Any]:
        """Veo, 4o Image, Flux Kontext, Midjourney and Luma: a successFlag and their own URL places."""
        flag = {"success": 1, "fail": task.fail_code if isinstance(task.fail_code, int) else 2}.get(step, 0)
        if api == "luma" and step == "success" and task.fail_code == 4:
            flag = 4  # the callback failed, the generation succeeded
        times = ({"createTime": TASK_CREATED_MS, "completeTime": TASK_CREATED_MS + 60_000}
                 if api in ("4o-image", "luma") else
                 {"createTime": "2026-01-05 10:25:00", "completeTime": "2026-01-05 10:30:00"} if api == "veo" else
                 {"createTime": "2026-01-05T10:25:00Z", "completeTime": "2026-01-05T10:30:00Z"})
        data: dict[str, Any] = {
            "taskId": task.task_id, "paramJson": json.dumps({"prompt": task.prompt, "model": task.model}),
            "successFlag": flag, "response": None,
            "errorCode": 400 if step == "fail" else None,
            "errorMessage": task.fail_msg if step == "fail" else "", **times,
        }
        if api == "4o-image":
            data["status"] = {"success": "SUCCESS", "fail": "GENERATE_FAILED"}.get(step, "GENERATING")
            data["progress"] = "1.00" if step == "success" else "0.50"
        if step != "success":
            return data
        if api == "flux-kontext":
            data["response"] = {"originImageUrl": f"{self.base}/cdn/input/0", "resultImageUrl": urls[0]}
        elif api == "mj":
            data |= {"taskType": "mj_txt2img", "resultInfoJson": {"resultUrls": [{"resultUrl": u} for u in urls]}}
        else:
            # Luma's originUrls is the user's input video: never an output to archive.
            origin = [f"{self.base}/cdn/input/0"] if api == "luma" else None
            data["response"] = {"taskId": task.task_id, "resultUrls": urls, "originUrls": origin}
        return data

    def _suno(self, task: FakeTask, api: str, step: str, urls: list[str]) -> dict[str, Any]:
        """Files come in pairs per track: audio, cover. FIRST_SUCCESS has the first track only."""
        status = {"queued": "PENDING", "running": "TEXT_SUCCESS", "partial": "FIRST_SUCCESS", "success": "SUCCESS",
                  "fail": str(task.fail_code)}[step]
        tracks = []
        for n in range(len(urls) // 2):
            ready = step == "success" or (step == "partial" and n == 0)
            tracks.append({"id": f"{task.task_id}-{n}", "audioUrl": urls[2 * n] if ready else "",
                           "streamAudioUrl": f"{self.base}/stream/{task.task_id}/{n}", "imageUrl": urls[2 * n + 1],
                           "prompt": "[Verse] la la", "modelName": task.model, "title": "Sea", "tags": "pop",
                           "createTime": "2026-01-05 10:25:00", "duration": 198.44 if ready else 0})
        return {"taskId": task.task_id, "parentMusicId": "", "param": json.dumps({"prompt": task.prompt}),
                "status": status, "type": "GENERATE", "operationType": "generate",
                "response": {"taskId": task.task_id, "sunoData": tracks if step in ("partial", "success") else []},
                "errorCode": 400 if step == "fail" else None, "errorMessage": task.fail_msg if step == "fail" else None}

    def _runway(self, task: FakeTask, api: str, step: str, urls: list[str]) -> dict[str, Any]:
        state = {"queued": "wait", "running": "queueing", "partial": "generating", "success": "success",
                 "fail": "fail"}[step]
        video = ({"videoId": f"v-{task.task_id}", "taskId": task.task_id, "videoUrl": urls[0],
                  "imageUrl": urls[1] if len(urls) > 1 else ""} if step == "success" else None)
        return {"taskId": task.task_id, "parentTaskId": "", "state": state, "generateTime": "2026-01-05 14:30:45",
                "generateParam": {"prompt": task.prompt}, "videoInfo": video,
                "failCode": task.fail_code if step == "fail" else "",
                "failMsg": task.fail_msg if step == "fail" else "", "expireFlag": 0}

    async def kie_download_url(self, request: web.Request) -> web.Response:
        """common/download-url (and the 4o variant, which also wants the taskId): a 20-minute link."""
        body = await request.json()
        if early := await self._arrive(request, "kie:download-url", body):
            return early
        url = str(body.get("url") or "")
        four_o = request.path.startswith("/api/v1/gpt4o-image/")
        prefix = f"{self.base}/cdn/"
        if four_o and not body.get("taskId"):
            return web.json_response({"code": 422, "msg": "taskId is required", "data": None})
        if not url.startswith(prefix):
            return web.json_response({"code": 422, "msg": "only kie-generated URLs are accepted", "data": None})
        path = url[len(prefix):].split("?")[0]
        fresh = f"{prefix}{path}?X-Amz-Expires=1200&X-Amz-Signature=FRESH-{os.urandom(4).hex()}"
        return web.json_response({"code": 200, "msg": "success", "data": fresh})

    # --- Replicate (replicate.md) -------------------------------------------------------------
    # `where` is the output shape: "list", "string", "dict" (video + audio) or "data" (data: URIs).
    # Steps: "queued" → starting, "running" → processing, "partial" → processing with output,
    # "success", "removed" (succeeded, data_removed), "fail" (fail_code: failed, canceled, aborted).

    async def replicate(self, request: web.Request) -> web.Response:
        if early := await self._arrive(request, "replicate", None):
            return early
        task = next((t for (kind, _), t in self.tasks.items()
                     if kind == "replicate" and t.task_id == request.match_info["task_id"]), None)
        if task is None:
            return web.json_response({"title": "Not found", "detail": "Not found.", "status": 404}, status=404)
        step = task.step()
        status = {"queued": "starting", "running": "processing", "partial": "processing", "success": "succeeded",
                  "removed": "succeeded", "fail": str(task.fail_code or "failed")}[step]
        files = [self.url(task, i) for i in range(len(task.files))]
        if task.where == "data":
            files = ["data:image/png;base64," + base64.b64encode(f).decode() for f in task.files]
        output: Any = None
        if step in ("partial", "success"):
            output = {"list": files, "string": files[0] if files else None,
                      "dict": dict(zip(("video", "audio"), files, strict=False)), "data": files}[task.where]
        done = step in ("success", "removed", "fail")
        pid = task.task_id
        return web.json_response({
            "id": pid, "model": task.model, "version": "5599ed30703defd1d160a25a63321b4d", "status": status,
            "input": {} if step == "removed" else {"prompt": task.prompt},
            "output": output, "error": task.fail_msg if step == "fail" else None, "logs": "",
            "data_removed": step == "removed", "source": "api",
            "created_at": "2026-01-05T10:00:00.120000Z",
            "started_at": None if step == "queued" else "2026-01-05T10:00:01.400000Z",
            "completed_at": "2026-01-05T10:00:03.900000Z" if done else None,
            "metrics": {"predict_time": 2.41, "total_time": 3.78} if done else {},
            "urls": {"get": f"{self.base}/v1/predictions/{pid}", "cancel": f"{self.base}/v1/predictions/{pid}/cancel"},
        })

    # --- fal queue (fal.md) -----------------------------------------------------------------------
    # `where` is the app path (owner/app). Steps: "queued" → IN_QUEUE, "running" → IN_PROGRESS,
    # "success" / "fail" → COMPLETED; the result GET then answers 200, or fail_code as the HTTP
    # status with fal's error body for it (fail_msg as the detail).

    def _fal_task(self, request: web.Request) -> FakeTask | None:
        app = f"{request.match_info['owner']}/{request.match_info['app']}"
        return self._task("fal", request.match_info["task_id"], app)

    async def fal_status(self, request: web.Request) -> web.Response:
        if early := await self._arrive(request, "fal", None, scheme="Key"):
            return early
        task = self._fal_task(request)
        if task is None:
            return web.json_response({"detail": "Request not found"}, status=404)
        step = task.step()
        base = f"{self.base}/{task.where}/requests/{task.task_id}"
        status = {"queued": "IN_QUEUE", "running": "IN_PROGRESS"}.get(step, "COMPLETED")
        body: dict[str, Any] = {"status": status, "request_id": task.task_id, "response_url": base,
                                "status_url": f"{base}/status", "cancel_url": f"{base}/cancel"}
        if status == "IN_QUEUE":
            body["queue_position"] = 1
        if status == "COMPLETED":
            body |= {"logs": None, "metrics": {"inference_time": 3.2}}
        return web.json_response(body, status=200 if status == "COMPLETED" else 202)

    async def fal_result(self, request: web.Request) -> web.Response:
        if early := await self._arrive(request, "fal", None, scheme="Key"):
            return early
        task = self._fal_task(request)
        step = task.steps[min(task.polls, len(task.steps)) - 1] if task and task.polls else None
        if task is None or step not in ("success", "fail"):
            return web.json_response({"detail": "Request not found"}, status=404)
        if step == "fail":
            code = int(task.fail_code)
            kinds = {422: None, 504: "request_timeout", 499: "client_cancelled", 500: "runner_disconnected"}
            if code == 422:
                body: Any = {"detail": [{"loc": ["body", "prompt"], "msg": task.fail_msg,
                                         "type": "content_policy_violation",
                                         "url": "https://docs.fal.ai/errors#content_policy_violation"}]}
            else:
                body = {"detail": task.fail_msg, "error_type": kinds.get(code, "internal_error")}
            return web.json_response(body, status=code)
        files = [{"url": self.url(task, i), "content_type": _mime(f), "file_name": f"{i}", "file_size": len(f)}
                 for i, f in enumerate(task.files)]
        if files and files[0]["content_type"] == "video/mp4":
            return web.json_response({"video": files[0]})
        return web.json_response({"images": files, "seed": 42, "has_nsfw_concepts": [False] * len(files),
                                  "prompt": task.prompt, "timings": {"inference": 3.1}})


def _mime(body: bytes) -> str:
    return "video/mp4" if body.startswith(MP4) else "image/png" if body.startswith(PNG) else "image/jpeg"
