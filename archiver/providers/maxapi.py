"""maxapi.io: GET /api/v1/task/{taskId}, envelope {code, msg, data} (docs/providers.md)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any, ClassVar
from urllib.parse import quote

from archiver.errors import KeyRejected, ProviderUnavailable, RateLimited
from archiver.model import Phase, TaskStatus
from archiver.providers.base import Http, Reply, bearer, media_from_model, seconds_to_iso, text, url_list
from archiver.providers.callbacks import query_token
from archiver.providers.entry import NoOptions, ProviderEntry, Schedule
from archiver.values import DEFAULT_POLL_INTERVALS

log = logging.getLogger(__name__)

_RUNNING = {"PENDING", "PROCESSING", "SUBMITTED"}
_ENDED = {"SUCCESS", "FAILURE", "TIMEOUT", "CANCELLED"}
_REASONS = {
    "CONTENT_MODERATION": "content_moderation",
    "INVALID_PARAMETERS": "invalid_parameters",
    "INSUFFICIENT_POINTS": "insufficient_credits",
}
_MEDIA = {"image", "video", "audio"}


class MaxApi:
    type: ClassVar[str] = "maxapi"
    options: ClassVar[type[NoOptions]] = NoOptions
    base_url: ClassVar[str] = "https://api.maxapi.io"
    requests_per_second: ClassVar[float] = 5.0
    poll_intervals: ClassVar[Schedule] = DEFAULT_POLL_INTERVALS
    batch_size: ClassVar[int] = 1
    not_found_grace: float = 0.0
    min_poll_interval: float = 0.0
    empty_success_wait: ClassVar[float | None] = None
    verify_callback = staticmethod(query_token)

    def __init__(self, entry: ProviderEntry) -> None:
        self.entry = entry

    async def poll(self, http: Http, task_ids: Sequence[str]) -> dict[str, TaskStatus]:
        (task_id,) = task_ids
        url = f"{self.entry.base_url}/api/v1/task/{quote(task_id, safe='')}"
        reply = await http("GET", url, headers=bearer(self.entry))
        status = parse(reply, self.entry.name, task_id)
        return {} if status is None else {task_id: status}


def parse(reply: Reply, name: str, task_id: str) -> TaskStatus | None:
    """One query-task answer → TaskStatus; None when maxapi does not know the task."""
    body = reply.json()
    if not isinstance(body, dict):
        raise ProviderUnavailable(f"maxapi: expected a JSON object, got {type(body).__name__}")
    code = _int(body.get("code"))
    message = text(body.get("msg")) or text(body.get("message"))
    # The error envelope may come under HTTP 200 or a real error status: check both.
    if code == 401:
        raise KeyRejected(f"maxapi: {message or 'unauthorized'}")
    if code == 404 or reply.status == 404:
        return None
    if code == 429:
        raise RateLimited(f"maxapi: {message or 'rate limited'}")
    if code != 0 or not 200 <= reply.status < 300:
        raise ProviderUnavailable(f"maxapi: HTTP {reply.status}, code {body.get('code')!r}: "
                                  f"{message or 'no message'}")
    data = body.get("data")
    if not isinstance(data, dict):
        raise ProviderUnavailable("maxapi: code 0 without a data object")
    return _record(data, message, name, task_id)


def _record(data: dict[str, Any], message: str | None, name: str, task_id: str) -> TaskStatus:
    status = data.get("status")
    if not isinstance(status, str):
        raise ProviderUnavailable(f"maxapi: data.status is {type(status).__name__}, not a string")
    status = status.upper()
    inputs = _obj(data.get("input")) or None
    model = text(inputs.get("model")) if inputs else None
    common: dict[str, Any] = {
        "model": model,
        "prompt": text(inputs.get("prompt")) if inputs else None,
        "input": inputs,
        "created_at": _iso(data.get("created_at")),
        # updated_at only means "finished at" once the task has ended.
        "completed_at": _iso(data.get("updated_at")) if status in _ENDED else None,
        "response": data,
    }
    # "ok" is the envelope's success word, not something to say about a failed task.
    message = None if (message or "").lower() in ("ok", "success") else message
    if status == "SUCCESS":
        result = _obj(data.get("result"))
        urls = url_list(result.get("urls"), "maxapi: result.urls")
        # No URLs yet is the poller's to judge (one rule for every provider).
        kind = str(result.get("type") or "").lower()
        media = kind if kind in _MEDIA else media_from_model(model)
        return TaskStatus(Phase.SUCCEEDED, urls=urls, media=media, **common)
    if status == "FAILURE":
        why = text(data.get("failure_reason")) or text(data.get("failReason"))
        return TaskStatus(Phase.FAILED, reason=_REASONS.get((why or "").upper(), "provider_failed"),
                          code=why or status, message=message, **common)
    if status in ("TIMEOUT", "CANCELLED"):
        reason = "cancelled" if status == "CANCELLED" else "provider_failed"
        return TaskStatus(Phase.FAILED, reason=reason, code=status, message=message, **common)
    if status not in _RUNNING:
        log.warning("maxapi: unknown status %r, polling on provider=%s task_id=%s",
                    status, name, task_id)
    return TaskStatus(Phase.RUNNING, **common)


def _int(value: Any) -> int | None:
    """The envelope code as an int; bools and other shapes are not codes."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _iso(value: Any) -> str | None:
    """maxapi's ISO strings (microseconds, Z) → our ISO 8601 UTC; unreadable ones pass through."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return seconds_to_iso(value)
    if not isinstance(value, str) or not value:
        return None
    try:
        stamp = dt.datetime.fromisoformat(value)
    except ValueError:
        return value
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    return stamp.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _obj(value: Any) -> dict[str, Any]:
    """A JSON object, or an empty one for null and every other shape."""
    return value if isinstance(value, dict) else {}
