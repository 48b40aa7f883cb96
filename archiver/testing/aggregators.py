"""The fake maxapi, acedata and apipod APIs, each answering in its documented JSON."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from archiver.testing.base import ApiBase
from archiver.testing.media import media_of
from archiver.testing.tasks import FakeTask


class AggregatorApis(ApiBase):
    def aggregator_routes(self, app: web.Application) -> None:
        app.router.add_get("/api/v1/task/{task_id}", self.maxapi)
        app.router.add_post("/{service}/tasks", self.acedata)
        app.router.add_get("/v1/{family}/status/{task_id}", self.apipod)

    async def maxapi(self, request: web.Request) -> web.Response:
        if early := await self._arrive(request, "maxapi", None):
            return early
        task = self._task("maxapi", request.match_info["task_id"])
        if task is None:
            return web.json_response({"code": 404, "msg": "task not found"}, status=404)
        if early := self._throttled(task):
            return early
        step = task.step()
        status = {"queued": "PENDING", "running": "PROCESSING", "success": "SUCCESS", "empty": "SUCCESS",
                  "fail": task.fail_code or "FAILURE"}[step]
        kind = "video" if task.files and media_of(task.body(0)) == "video" else "image"
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

    async def acedata(self, request: web.Request) -> web.Response:
        service = request.match_info["service"]
        body = await request.json()
        if early := await self._arrive(request, f"acedata:{service}", body):
            return early
        if body.get("action") == "retrieve_batch":
            ids = body.get("ids", [])[: body.get("limit", 12)]
            found = [t for i in ids if (t := self._task("acedata", i, service))]
            if early := self._throttled(*found):
                return early
            items = [self._ace_record(t) for t in found]
            return web.json_response({"items": items, "count": len(items)})
        task = self._task("acedata", str(body.get("id")), service)
        if task is None:
            return web.json_response({"success": False, "error": {"code": "not_found",
                                      "message": "task not found"}}, status=404)
        if early := self._throttled(task):
            return early
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

    async def apipod(self, request: web.Request) -> web.Response:
        if early := await self._arrive(request, "apipod", None):
            return early
        family = request.match_info["family"]
        task = self._task("apipod", request.match_info["task_id"], family)
        if task is None:
            return web.json_response({"code": 404, "message": "model or task is unavailable to the caller",
                                      "data": {"type": "not_found_error", "error_code": "not_found"}},
                                     status=404)
        if early := self._throttled(task):
            return early
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
