"""The fake Replicate predictions API and fal queue, each answering in its documented JSON."""

from __future__ import annotations

import base64
from typing import Any

from aiohttp import web

from archiver.testing.base import ApiBase
from archiver.testing.media import content_type
from archiver.testing.tasks import FakeTask


class HostedApis(ApiBase):
    def hosted_routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/predictions/{task_id}", self.replicate)
        app.router.add_get("/{owner}/{app}/requests/{task_id}/status", self.fal_status)
        app.router.add_get("/{owner}/{app}/requests/{task_id}", self.fal_result)

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
        if early := self._throttled(task):
            return early
        step = task.step()
        status = {"queued": "starting", "running": "processing", "partial": "processing", "success": "succeeded",
                  "removed": "succeeded", "fail": str(task.fail_code or "failed")}[step]
        files = [self.url(task, i) for i in range(len(task.files))]
        if task.where == "data":
            files = [f"data:{content_type(task.body(i))};base64," + base64.b64encode(task.body(i)).decode()
                     for i in range(len(task.files))]
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
        if early := self._throttled(task):
            return early
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
        if task is None or task.seen not in ("success", "fail"):
            return web.json_response({"detail": "Request not found"}, status=404)
        if task.seen == "fail":
            code = int(task.fail_code)
            kinds = {422: None, 504: "request_timeout", 499: "client_cancelled", 500: "runner_disconnected"}
            if code == 422:
                body: Any = {"detail": [{"loc": ["body", "prompt"], "msg": task.fail_msg,
                                         "type": "content_policy_violation",
                                         "url": "https://docs.fal.ai/errors#content_policy_violation"}]}
            else:
                body = {"detail": task.fail_msg, "error_type": kinds.get(code, "internal_error")}
            return web.json_response(body, status=code)
        files = [{"url": self.url(task, i), "content_type": content_type(task.body(i)), "file_name": f"{i}",
                  "file_size": len(task.body(i))} for i in range(len(task.files))]
        if files and files[0]["content_type"].startswith("video/"):
            return web.json_response({"video": files[0]})
        return web.json_response({"images": files, "seed": 42, "has_nsfw_concepts": [False] * len(files),
                                  "prompt": task.prompt, "timings": {"inference": 3.1}})
