"""APIPod: GET /v1/{images|videos}/status/{task_id}, envelope {code, message, data} (docs/providers.md).

A task ID does not say its family. With `family: auto` a poll asks images first and,
on a 404, videos; the family that answered is remembered so later polls ask it directly.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self
from urllib.parse import quote

from archiver.errors import ConfigError, KeyRejected, ProviderUnavailable, RateLimited
from archiver.model import Phase, TaskStatus
from archiver.providers.base import Http, Reply, bearer, seconds_to_iso, text, url_list
from archiver.providers.callbacks import query_token
from archiver.providers.entry import ProviderEntry, Schedule
from archiver.values import DEFAULT_POLL_INTERVALS

log = logging.getLogger(__name__)

FAMILIES = ("images", "videos")
_MEDIA = {"images": "image", "videos": "video"}
_REASONS = {"insufficient_quota": "insufficient_credits", "invalid_request": "invalid_parameters"}
_POLICY = re.compile(r"moderat|polic|nsfw|sensitive|prohibit|violat|inappropriate|unsafe",
                     re.IGNORECASE)


@dataclass(frozen=True)
class ApiPodOptions:
    """`family`: images, videos, or auto (ask images, then videos)."""

    family: str = "auto"
    keys: ClassVar[frozenset[str]] = frozenset({"family"})

    @classmethod
    def parse(cls, item: Mapping[str, Any], key: str) -> Self:
        cls.misplaced(item, key)
        return cls(item.get("family", "auto"))

    @classmethod
    def misplaced(cls, item: Mapping[str, Any], key: str) -> None:
        # Checked on every entry, though only apipod reads it: a typo there was always an error.
        if item.get("family", "auto") not in (*FAMILIES, "auto"):
            raise ConfigError(f"config: {key}.family: expected images, videos or auto")

    def view(self) -> dict[str, Any]:
        return {"family": self.family}


class ApiPod:
    type: ClassVar[str] = "apipod"
    options: ClassVar[type[ApiPodOptions]] = ApiPodOptions
    base_url: ClassVar[str] = "https://api.apipod.ai"
    requests_per_second: ClassVar[float] = 5.0
    poll_intervals: ClassVar[Schedule] = DEFAULT_POLL_INTERVALS
    batch_size: ClassVar[int] = 1
    not_found_grace: float = 0.0
    min_poll_interval: float = 0.0
    # `completed` with an empty result is "not yet deliverable" (the docs): the poller's rule for a
    # success without URLs, with 5 minutes instead of one before it ends provider_failed.
    empty_success_wait: ClassVar[float | None] = 300.0
    verify_callback = staticmethod(query_token)

    def __init__(self, entry: ProviderEntry) -> None:
        self.entry = entry
        self.family = entry.options_as(ApiPodOptions).family
        self.family_of: dict[str, str] = {}  # auto mode: task id → the family that answered

    async def poll(self, http: Http, task_ids: Sequence[str]) -> dict[str, TaskStatus]:
        (task_id,) = task_ids
        auto = self.family not in FAMILIES
        known = self.family_of.get(task_id) if auto else self.family
        for family in (known,) if known else FAMILIES:
            url = f"{self.entry.base_url}/v1/{family}/status/{quote(task_id, safe='')}"
            reply = await http("GET", url, headers=bearer(self.entry))
            status = parse(reply, family, self.entry.name, task_id)
            if status is None:
                continue
            if auto:
                # Forget ended tasks so the map holds only tasks still in flight.
                if status.phase == Phase.RUNNING or (status.phase == Phase.SUCCEEDED and not status.urls):
                    self.family_of[task_id] = family
                else:
                    self.family_of.pop(task_id, None)
            return {task_id: status}
        return {}


def parse(reply: Reply, family: str, name: str, task_id: str) -> TaskStatus | None:
    """One status answer → TaskStatus; None when this family does not know the task."""
    body = reply.json()
    if not isinstance(body, dict):
        raise ProviderUnavailable(f"apipod: expected a JSON object, got {type(body).__name__}")
    if _not_found(reply, body):
        return None
    data = body.get("data")
    if not isinstance(data, dict):
        raise ProviderUnavailable("apipod: code 200 without a data object")
    return _record(data, family, name, task_id)


def _not_found(reply: Reply, body: dict[str, Any]) -> bool:
    """False for a success envelope, True for "unknown task"; raises for any other error.

    Both error envelopes are read, under HTTP 200 as well as under a real error status.
    """
    code = body.get("code")
    openai = body.get("error") if isinstance(body.get("error"), dict) else None
    if openai is None and code in (200, "200") and 200 <= reply.status < 300:
        return False
    if openai is not None:
        machine = text(openai.get("code")) or text(openai.get("type"))
        said = text(openai.get("message"))
    else:
        data = _obj(body.get("data"))
        machine = text(data.get("error_code")) or text(data.get("type"))
        said = text(body.get("message")) or text(body.get("msg"))
    message = f"apipod: HTTP {reply.status}, code {code!r} {machine or ''}: {said or 'no message'}"
    if code in (401, "401") or machine == "invalid_api_key":
        raise KeyRejected(message)
    if code in (402, "402") or machine == "insufficient_quota":
        # An empty balance needs a human, as a bad key does: the entry's tasks wait.
        raise KeyRejected(f"apipod: insufficient quota: {said or 'add balance'}")
    if code in (429, "429") or machine == "rate_limit_exceeded":
        raise RateLimited(message)
    if code in (404, "404") or reply.status == 404:
        return True
    raise ProviderUnavailable(message)


def _record(data: dict[str, Any], family: str, name: str, task_id: str) -> TaskStatus:
    status = data.get("status")
    if not isinstance(status, str):
        raise ProviderUnavailable(f"apipod: data.status is {type(status).__name__}, not a string")
    status = status.lower()
    common: dict[str, Any] = {"completed_at": _epoch(data.get("completed_at")), "response": data}
    if status == "completed":
        # No URLs yet: the poller asks again for empty_success_wait (the docs: "not yet deliverable").
        urls = url_list(data.get("result"), "apipod: data.result")
        return TaskStatus(Phase.SUCCEEDED, urls=urls, media=_MEDIA[family], **common)
    if status in ("failed", "cancelled", "canceled"):
        code = text(data.get("error_code"))
        message = text(data.get("error_message")) or text(data.get("error"))
        reason = "cancelled" if status != "failed" else _reason(code, message)
        return TaskStatus(Phase.FAILED, reason=reason, code=code or status, message=message,
                          **common)
    if status not in ("pending", "processing"):
        log.warning("apipod: unknown status %r, polling on provider=%s task_id=%s",
                    status, name, task_id)
    return TaskStatus(Phase.RUNNING, **common)


def _reason(code: str | None, message: str | None) -> str:
    """error_code / error text → our reason word; unknown codes may pass on a new task."""
    known = _REASONS.get((code or "").lower())
    if known:
        return known
    if _POLICY.search(code or "") or _POLICY.search(message or "") or "content" in (code or "").lower():
        return "content_moderation"
    return "provider_failed"


def _epoch(value: Any) -> str | None:
    """Unix seconds per the new docs; the old spec said milliseconds, so accept those too."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 1e11:
        value = value / 1000
    return seconds_to_iso(value)


def _obj(value: Any) -> dict[str, Any]:
    """A JSON object, or an empty one for null and every other shape."""
    return value if isinstance(value, dict) else {}
