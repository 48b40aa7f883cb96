"""Ace Data Cloud: POST /{service}/tasks, retrieve or retrieve_batch; bare task records (docs/providers.md).

A record has no status field: its state is derived from `response`, `state` and
`finished_at` by the rule of the provider's own n8n helper, and its URLs are found by
walking `response` (never `request`), since every service nests them differently.
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
from archiver.providers.base import Http, Reply, bearer, media_from_model, seconds_to_iso, text
from archiver.providers.callbacks import query_token
from archiver.providers.entry import ProviderEntry, Schedule
from archiver.values import DEFAULT_POLL_INTERVALS

log = logging.getLogger(__name__)

_FAILED = {"failed", "error", "cancelled", "canceled"}
_SUCCEEDED = {"succeeded", "success", "completed", "complete"}
_PENDING = {"processing", "queued", "running", "pending"}
# Request-level codes that need a human to act on the key or the account, not a retry.
_KEY_CODES = {
    "invalid_token": "the token is invalid",
    "token_expired": "the token has expired",
    "token_mismatched": "the token is not valid for this service",
    "no_token": "no token was sent",
    "used_up": "the account's balance or quota is used up",
    "disabled": "the credential or application is disabled",
}
_REASONS = {
    "forbidden": "content_moderation",
    "content_moderation": "content_moderation",
    "bad_request": "invalid_parameters",
    "api_not_implemented": "invalid_parameters",
    "used_up": "insufficient_credits",
    "cancelled": "cancelled",
    "canceled": "cancelled",
}
_POLICY = re.compile(r"moderat|polic|nsfw|sensitive|prohibit|violat|inappropriate", re.IGNORECASE)
# Inputs echoed back, previews and hooks: not results of the task.
_SKIP = {"callback_url", "start_image_url", "end_image_url", "last_frame_url", "thumbnail_url"}


@dataclass(frozen=True)
class AceDataOptions:
    """`service`: the API the entry's tasks were made with (seedream, veo…); it is in the query URL."""

    service: str
    keys: ClassVar[frozenset[str]] = frozenset({"service"})

    @classmethod
    def parse(cls, item: Mapping[str, Any], key: str) -> Self:
        if not item.get("service"):
            raise ConfigError(f"config: {key}.service: acedata entries name their service, e.g. seedream")
        return cls(str(item["service"]))

    @classmethod
    def misplaced(cls, item: Mapping[str, Any], key: str) -> None:
        return None  # another type's entry may say its service; nothing reads it

    def view(self) -> dict[str, Any]:
        return {"service": self.service}


class AceData:
    type: ClassVar[str] = "acedata"
    options: ClassVar[type[AceDataOptions]] = AceDataOptions
    base_url: ClassVar[str] = "https://api.acedata.cloud"
    requests_per_second: ClassVar[float] = 1.0
    poll_intervals: ClassVar[Schedule] = DEFAULT_POLL_INTERVALS
    batch_size: ClassVar[int] = 50
    not_found_grace: float = 120.0
    min_poll_interval: float = 0.0
    empty_success_wait: ClassVar[float | None] = None
    verify_callback = staticmethod(query_token)

    def __init__(self, entry: ProviderEntry) -> None:
        self.entry = entry
        service = entry.options_as(AceDataOptions).service
        self.url = f"{entry.base_url}/{quote(service, safe='')}/tasks"

    async def poll(self, http: Http, task_ids: Sequence[str]) -> dict[str, TaskStatus]:
        if not task_ids:
            return {}
        headers = {**bearer(self.entry), "Content-Type": "application/json"}
        if len(task_ids) == 1:
            body: dict[str, Any] = {"action": "retrieve", "id": task_ids[0]}
        else:
            # The default limit is 12: always ask for as many as we name.
            body = {"action": "retrieve_batch", "ids": list(task_ids), "limit": len(task_ids)}
        reply = await http("POST", self.url, headers=headers, json=body)
        answer = _answer(reply)
        if answer is None:
            return {}
        if len(task_ids) == 1:
            return {task_ids[0]: parse_record(_single(answer))}
        result = {}
        for tid, rec in _batch(answer, task_ids).items():
            try:
                result[tid] = parse_record(rec)
            except ProviderUnavailable as e:
                # One broken record must not stall the other tasks of its batch.
                log.warning("%s, skipped provider=%s task_id=%s", e, self.entry.name, tid)
        return result


def _answer(reply: Reply) -> dict[str, Any] | None:
    """The body, after request-level errors are raised; None for "no such task"."""
    body = reply.json()
    if not isinstance(body, dict):
        raise ProviderUnavailable(f"acedata: expected a JSON object, got {type(body).__name__}")
    is_task = any(k in body for k in ("id", "task_id", "request", "response", "items"))
    if 200 <= reply.status < 300 and (is_task or "error" not in body):
        return body or None  # `{}` is how a retrieve says "unknown id"
    error = _obj(body.get("error"))
    code = text(error.get("code")) or ""
    said = text(error.get("message")) or _KEY_CODES.get(code, "no message")
    message = f"acedata: HTTP {reply.status} {code or 'error'}: {said}"
    if code == "not_found":
        return None
    if code in _KEY_CODES:
        raise KeyRejected(message)
    if code == "too_many_requests":
        raise RateLimited(message)
    raise ProviderUnavailable(message)


def _single(body: dict[str, Any]) -> dict[str, Any]:
    # The seedream guide shows retrieve returning only the inner response: wrap it.
    if "success" in body and "request" not in body and "response" not in body:
        return {"response": body}
    if not any(k in body for k in ("id", "request", "response")):
        raise ProviderUnavailable("acedata: the answer is neither a task record nor a response")
    return body


def _batch(body: dict[str, Any], task_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Items matched to the IDs asked for by their record id; missing IDs are unknown."""
    items = body.get("items")
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ProviderUnavailable("acedata: retrieve_batch answer has no list of records in items")
    by_id = {text(item.get("id")) or text(item.get("task_id")): item for item in items}
    return {tid: by_id[tid] for tid in task_ids if tid in by_id}


def parse_record(record: dict[str, Any]) -> TaskStatus:
    """One task record (or wrapped bare response) → TaskStatus."""
    response = record.get("response")
    if response is not None and not isinstance(response, dict):
        raise ProviderUnavailable(f"acedata: response is {type(response).__name__}, not an object")
    resp = response or {}
    request = _obj(record.get("request"))
    model = text(request.get("model"))
    found = result_urls(resp)
    common: dict[str, Any] = {
        "model": model,
        "prompt": _prompt(request),
        "input": request or None,
        "created_at": seconds_to_iso(record.get("created_at")),
        "completed_at": seconds_to_iso(record.get("finished_at")),
        "response": record,
    }
    states = {_word(record.get("state")), _word(resp.get("state"))}
    nested = _nested_states(resp.get("data"))
    failed = (resp.get("success") is False or record.get("success") is False
              or bool(resp.get("error")) or bool(record.get("error"))
              or bool(states & _FAILED) or (bool(nested) and nested <= _FAILED))
    if failed:
        return _failure(resp, record, states | nested, common)
    if nested & _PENDING:
        return TaskStatus(Phase.RUNNING, **common)
    finished = record.get("finished_at") is not None
    succeeded = (resp.get("success") is True or bool(states & _SUCCEEDED)
                 or (bool(nested) and nested <= _SUCCEEDED)
                 or (finished and resp.get("data") is not None)
                 or (finished and "success" not in resp and bool(found)))  # fish: no success field
    if not succeeded:
        return TaskStatus(Phase.RUNNING, **common)
    # No URLs yet is the poller's to judge (one rule for every provider).
    urls = tuple(url for url, _ in found)
    return TaskStatus(Phase.SUCCEEDED, urls=urls, media=_media(found, record, model), **common)


def _failure(resp: dict[str, Any], record: dict[str, Any], states: set[str],
             common: dict[str, Any]) -> TaskStatus:
    error = resp.get("error") or record.get("error")
    if isinstance(error, dict):
        code, message = text(error.get("code")), text(error.get("message"))
    else:
        code, message = None, text(error)
    if code is None and states & {"cancelled", "canceled"}:
        return TaskStatus(Phase.FAILED, reason="cancelled", code="cancelled", message=message,
                          **common)
    reason = _REASONS.get((code or "").lower())
    if reason is None:
        reason = "content_moderation" if _POLICY.search(message or "") else "provider_failed"
    return TaskStatus(Phase.FAILED, reason=reason, code=code or min(states & _FAILED, default=None),
                      message=message, **common)


def result_urls(node: Any) -> list[tuple[str, str]]:
    """(url, key) for every result URL under `node`, in order, de-duplicated."""
    found: list[tuple[str, str]] = []
    _walk(node, found)
    first: dict[str, str] = {}
    for url, key in found:
        first.setdefault(url, key)
    return list(first.items())


def _walk(node: Any, found: list[tuple[str, str]]) -> None:
    if not isinstance(node, dict):
        for item in node if isinstance(node, list) else ():
            _walk(item, found)
        return
    for key, value in node.items():
        if key in _SKIP or key.startswith("reference_"):
            continue
        # midjourney's image_url is a 50% thumbnail of raw_image_url: keep the full size.
        if key == "image_url" and _is_url(node.get("raw_image_url")):
            continue
        if (key == "url" or key.endswith("_url")) and _is_url(value):
            found.append((value, key))
        elif (key == "urls" or key.endswith("_urls")) and isinstance(value, list):
            found.extend((v, key) for v in value if _is_url(v))
            _walk([v for v in value if isinstance(v, (dict, list))], found)
        elif isinstance(value, (dict, list)):
            _walk(value, found)


def _is_url(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("http")


def _media(found: list[tuple[str, str]], record: dict[str, Any], model: str | None) -> str:
    """From the key names (the main asset wins over a cover image), else the record type."""
    for names in (" ".join(key for _, key in found), str(record.get("type") or "").lower()):
        for word, media in (("audio", "audio"), ("video", "video"), ("imag", "image")):
            if word in names:
                return media
    return media_from_model(model)


def _nested_states(data: Any) -> set[str]:
    """status/state words of response.data, a dict (seedance) or a list of items (veo)."""
    items = data if isinstance(data, list) else [data]
    words = {_word(i.get(k)) for i in items if isinstance(i, dict) for k in ("status", "state")}
    return words - {""}


def _word(value: Any) -> str:
    return value.lower() if isinstance(value, str) else ""


def _prompt(request: dict[str, Any]) -> str | None:
    prompt = text(request.get("prompt"))
    if prompt:
        return prompt
    content = request.get("content")
    parts = [p.get("text") for p in content if isinstance(p, dict)] if isinstance(content, list) else []
    return next((t for t in parts if isinstance(t, str) and t), None)


def _obj(value: Any) -> dict[str, Any]:
    """A JSON object, or an empty one for null and every other shape."""
    return value if isinstance(value, dict) else {}
