"""kie.ai Market: GET /api/v1/jobs/recordInfo?taskId=… (digest §2)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, ClassVar
from urllib.parse import quote

from archiver.config import ProviderEntry
from archiver.errors import KeyRejected, ProviderUnavailable, RateLimited
from archiver.model import Phase, TaskStatus
from archiver.providers.base import Http, Reply, bearer, media_from_model, ms_to_iso, text, url_list

_RUNNING = {"waiting": Phase.RUNNING, "queuing": Phase.RUNNING, "generating": Phase.RUNNING}
_POLICY = re.compile(r"prohibit|policy|sensitive|nsfw|moderat|violat|inappropriate", re.I)


class Kie:
    type: ClassVar[str] = "kie"
    requests_per_second: ClassVar[float] = 10.0
    batch_size: ClassVar[int] = 1
    not_found_grace: ClassVar[float] = 0.0

    def __init__(self, entry: ProviderEntry) -> None:
        self.entry = entry

    async def poll(self, http: Http, task_ids: Sequence[str]) -> dict[str, TaskStatus]:
        (task_id,) = task_ids
        url = f"{self.entry.base_url}/api/v1/jobs/recordInfo?taskId={quote(task_id, safe='')}"
        reply = await http("GET", url, headers=bearer(self.entry))
        status = parse(reply)
        return {} if status is None else {task_id: status}


def parse(reply: Reply) -> TaskStatus | None:
    """One recordInfo answer → TaskStatus; None when kie does not know the task."""
    body = reply.json()
    if not isinstance(body, dict):
        raise ProviderUnavailable(f"kie: expected a JSON object, got {type(body).__name__}")
    code = body.get("code")
    message = text(body.get("msg")) or text(body.get("message"))
    if code == 401:
        raise KeyRejected(f"kie: {message or 'unauthorized'}")
    if code == 404 or reply.status == 404:
        return None
    if code == 422:
        # The docs' code table: 422 is "validation error", not "task not found" (that is 404).
        # They are silent on what a query can fail to validate; asking again the same way
        # cannot help, so the task ends with kie's own words.
        return TaskStatus(Phase.FAILED, reason="invalid_parameters", code="422", message=message,
                          response=body)
    if code == 429:
        raise RateLimited(f"kie: {message or 'rate limited'}")
    if code != 200:
        raise ProviderUnavailable(f"kie: code {code!r}: {message or 'no message'}")
    data = body.get("data")
    if not isinstance(data, dict):
        raise ProviderUnavailable("kie: code 200 without a data object")
    return _record(data)


def _record(data: dict[str, Any]) -> TaskStatus:
    state = str(data.get("state") or "")
    try:
        param = _loads(data.get("param"))
    except ProviderUnavailable:
        param = {}  # the echoed request is metadata only; a broken one must not block the result
    model = text(data.get("model")) or text(param.get("model"))
    inputs = param.get("input") if isinstance(param.get("input"), dict) else None
    common: dict[str, Any] = dict(
        model=model,
        prompt=text(inputs.get("prompt")) if inputs else None,
        input=inputs,
        created_at=ms_to_iso(data.get("createTime")),
        completed_at=ms_to_iso(data.get("completeTime")),
        response=data,
    )
    if state == "success":
        result = _loads(data.get("resultJson"))
        urls = url_list(result.get("resultUrls"), "kie: resultJson.resultUrls")
        return TaskStatus(Phase.SUCCEEDED, urls=urls, media=media_from_model(model), **common)
    if state == "fail":
        code, message = text(data.get("failCode")), text(data.get("failMsg"))
        return TaskStatus(Phase.FAILED, reason=fail_reason(code, message), code=code,
                          message=message, **common)
    # waiting / queuing / generating, and any state kie adds later: keep polling.
    return TaskStatus(_RUNNING.get(state, Phase.RUNNING), **common)


def fail_reason(code: str | None, message: str | None) -> str:
    """failCode (string, number or null) and failMsg → our reason word."""
    if message and _POLICY.search(message):
        return "content_moderation"
    return {"402": "insufficient_credits", "422": "invalid_parameters"}.get(code or "", "provider_failed")


def _loads(value: Any) -> dict[str, Any]:
    """kie sends param and resultJson as JSON *strings*; accept an object or nothing too."""
    if isinstance(value, dict):
        return value
    if not value:
        return {}
    try:
        parsed = json.loads(value)
    except (TypeError, ValueError):
        raise ProviderUnavailable("kie: resultJson/param is not valid JSON") from None
    return parsed if isinstance(parsed, dict) else {}
