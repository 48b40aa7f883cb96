"""kie's fake APIs: the Market's recordInfo, the product APIs and download-url (docs/providers.md, kie)."""

from __future__ import annotations

import json
import os
from typing import Any

from aiohttp import web

from archiver.testing.base import ApiBase
from archiver.testing.tasks import TASK_CREATED_MS, FakeTask

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


def kie_record(task: FakeTask, step: str, urls: list[str]) -> dict[str, Any]:
    """The `data` of a Market recordInfo answer at `step`; `param` and `resultJson` are JSON strings."""
    state = {"queued": "waiting", "running": "generating", "success": "success", "empty": "success",
             "fail": "fail"}[step]
    done = step in ("success", "empty", "fail")
    return {
        "taskId": task.task_id, "model": task.model, "state": state,
        "param": json.dumps({"model": task.model, "callBackUrl": task.callback, "input": {"prompt": task.prompt}}),
        "resultJson": json.dumps({"resultUrls": urls if step == "success" else []}) if state == "success" else "",
        "failCode": task.fail_code if step == "fail" else "",
        "failMsg": task.fail_msg if step == "fail" else "",
        "completeTime": TASK_CREATED_MS + 10_000 if done else None,
        "createTime": TASK_CREATED_MS, "updateTime": TASK_CREATED_MS + 10_000,
    }


class KieApis(ApiBase):
    def kie_routes(self, app: web.Application) -> None:
        app.router.add_get("/api/v1/jobs/recordInfo", self.kie)
        for path in KIE_PRODUCT_PATHS:
            app.router.add_get(path, self.kie_product)
        app.router.add_post("/api/v1/common/download-url", self.kie_download_url)
        app.router.add_post("/api/v1/gpt4o-image/download-url", self.kie_download_url)

    async def kie(self, request: web.Request) -> web.Response:
        if early := await self._arrive(request, "kie", dict(request.query)):
            return early
        task = self._task("kie", request.query.get("taskId", ""))
        if task is None:
            return web.json_response({"code": 404, "msg": "Task not found"})
        if early := self._throttled(task):
            return early
        step = task.step()
        data = kie_record(task, step, [self.url(task, i) for i in range(len(task.files)) if step == "success"])
        return web.json_response({"code": 200, "msg": "success", "data": data})

    # Product steps: "queued"/"running" (not done), "partial" (Suno FIRST_SUCCESS), "success", "fail".
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
        if early := self._throttled(task):
            return early
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
            data["response"] = {"originImageUrl": f"{self.cdn_root}/cdn/input/0", "resultImageUrl": urls[0]}
        elif api == "mj":
            data |= {"taskType": "mj_txt2img", "resultInfoJson": {"resultUrls": [{"resultUrl": u} for u in urls]}}
        else:
            # Luma's originUrls is the user's input video: never an output to archive.
            origin = [f"{self.cdn_root}/cdn/input/0"] if api == "luma" else None
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
                           "streamAudioUrl": f"{self.cdn_root}/stream/{task.task_id}/{n}",
                           "imageUrl": urls[2 * n + 1], "prompt": "[Verse] la la", "modelName": task.model,
                           "title": "Sea", "tags": "pop", "createTime": "2026-01-05 10:25:00",
                           "duration": 198.44 if ready else 0})
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
        prefix = f"{self.cdn_root}/cdn/"
        if four_o and not body.get("taskId"):
            return web.json_response({"code": 422, "msg": "taskId is required", "data": None})
        if not url.startswith(prefix):
            return web.json_response({"code": 422, "msg": "only kie-generated URLs are accepted", "data": None})
        path = url[len(prefix):].split("?")[0]
        fresh = f"{prefix}{path}?X-Amz-Expires=1200&X-Amz-Signature=FRESH-{os.urandom(4).hex()}"
        return web.json_response({"code": 200, "msg": "success", "data": fresh})
