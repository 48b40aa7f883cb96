"""kie.ai: Market (GET /api/v1/jobs/recordInfo, docs/providers.md) and the product APIs of
kie_products.py, chosen by the entry's `api`; the fresh link for an expired URL; and the
HMAC-signed callbacks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self
from urllib.parse import quote

from archiver.errors import ConfigError, KeyRejected, ProviderUnavailable, RateLimited
from archiver.model import Phase, TaskStatus
from archiver.providers.base import Http, Reply, bearer, media_from_model, ms_to_iso, text, url_list
from archiver.providers.callbacks import Callback, CallbackRefused, Incoming, task_id_of
from archiver.providers.entry import ProviderEntry, Schedule
from archiver.providers.kie_products import PRODUCTS, Read, envelope_state, reason
from archiver.providers.signatures import TOLERANCE, fresh, header
from archiver.values import DEFAULT_POLL_INTERVALS

log = logging.getLogger(__name__)

PRODUCT_NOT_FOUND_GRACE = 20.0  # a product task may not be visible at once (docs/providers.md)
_RUNNING = {"waiting": Phase.RUNNING, "queuing": Phase.RUNNING, "generating": Phase.RUNNING}
_POLICY = re.compile(r"prohibit|policy|sensitive|nsfw|moderat|violat|inappropriate", re.I)


APIS = ("market", *PRODUCTS)  # the values of an entry's `api`


@dataclass(frozen=True)
class KieOptions:
    """`api`: Market (the default) or one of the product APIs, which have their own query paths."""

    api: str = "market"
    keys: ClassVar[frozenset[str]] = frozenset({"api"})

    @classmethod
    def parse(cls, item: Mapping[str, Any], key: str) -> Self:
        if "api" in item and item["api"] not in APIS:
            cls.misplaced(item, key)
        return cls(item.get("api", "market"))

    @classmethod
    def misplaced(cls, item: Mapping[str, Any], key: str) -> None:
        raise ConfigError(f"config: {key}.api: kie entries only, one of {', '.join(APIS)}")

    def view(self) -> dict[str, Any]:
        return {"api": self.api}


class Kie:
    type: ClassVar[str] = "kie"
    options: ClassVar[type[KieOptions]] = KieOptions
    base_url: ClassVar[str] = "https://api.kie.ai"
    requests_per_second: ClassVar[float] = 10.0
    poll_intervals: ClassVar[Schedule] = DEFAULT_POLL_INTERVALS
    batch_size: ClassVar[int] = 1
    not_found_grace: float = 0.0
    min_poll_interval: float = 0.0
    empty_success_wait: ClassVar[float | None] = None

    def __init__(self, entry: ProviderEntry) -> None:
        self.entry = entry
        self.api = entry.options_as(KieOptions).api
        self.product = PRODUCTS.get(self.api)  # None for Market
        # Per entry: a product task may be invisible for a moment, a Market one is not.
        self.not_found_grace = PRODUCT_NOT_FOUND_GRACE if self.product else 0.0
        # The docs' per-task query limit of some products (4o Image and Suno: 3 a second).
        self.min_poll_interval = self.product.min_poll_interval if self.product else 0.0

    async def poll(self, http: Http, task_ids: Sequence[str]) -> dict[str, TaskStatus]:
        (task_id,) = task_ids
        path = self.product.path if self.product else "/api/v1/jobs/recordInfo"
        url = f"{self.entry.base_url}{path}?taskId={quote(task_id, safe='')}"
        reply = await http("GET", url, headers=bearer(self.entry))
        status = parse(reply, self.product.read if self.product else None, self.entry.name)
        return {} if status is None else {task_id: status}

    async def refresh_url(self, http: Http, task_id: str, url: str) -> str | None:
        """A fresh, 20-minute link for a kie file URL (docs/providers.md); None if kie gives none."""
        if self.api == "4o-image":
            path, body = "/api/v1/gpt4o-image/download-url", {"taskId": task_id, "url": url}
        else:
            path, body = "/api/v1/common/download-url", {"url": url}
        reply = await http("POST", f"{self.entry.base_url}{path}", json=body,
                           headers=bearer(self.entry) | {"Content-Type": "application/json"})
        doc = reply.json()
        code = doc.get("code") if isinstance(doc, dict) else None
        if code == 401:
            raise KeyRejected("kie: download-url: unauthorized")
        if code == 429:
            raise RateLimited("kie: download-url: rate limited")
        data = doc.get("data") if code == 200 else None
        if isinstance(data, dict):  # the 4o quickstart's sample reads data.downloadUrl
            data = data.get("downloadUrl")
        if isinstance(data, str) and data.startswith(("https://", "http://")):
            return data
        message = (text(doc.get("msg")) or text(doc.get("message"))) if isinstance(doc, dict) else None
        log.warning("kie: download-url gave no link (HTTP %d, code %r: %s) for task_id=%s", reply.status,
                    code, message or "no message", task_id)
        return None

    @staticmethod
    async def verify_callback(call: Incoming) -> Callback:
        """X-Webhook-Signature = base64(HMAC-SHA256(webhookHmacKey, taskId + "." + timestamp))."""
        stamp = call.headers.get("X-Webhook-Timestamp", "")
        if not stamp or not call.headers.get("X-Webhook-Signature"):
            raise CallbackRefused(401, "X-Webhook-Timestamp and X-Webhook-Signature are required")
        task_id = task_id_of(call.body)
        if not verify_signature(call.secret, call.headers, task_id, now=call.now):
            raise CallbackRefused(401, "X-Webhook-Signature does not match, or X-Webhook-Timestamp is not "
                                       "within 5 minutes of our clock")
        return Callback(task_id, f"{task_id}.{stamp}")


def verify_signature(hmac_key: str, headers: Mapping[str, str], task_id: str, *, now: float | None = None,
                     tolerance: float = TOLERANCE) -> bool:
    """kie's X-Webhook-Signature over `taskId.timestamp`; a hint to poll, never proof of the body."""
    timestamp, signature = header(headers, "X-Webhook-Timestamp"), header(headers, "X-Webhook-Signature")
    if not (task_id and signature and fresh(timestamp, now, tolerance)):
        return False
    digest = hmac.new(hmac_key.encode(), f"{task_id}.{timestamp}".encode(), hashlib.sha256).digest()
    return hmac.compare_digest(base64.b64encode(digest), signature.encode())


def parse(reply: Reply, read: Read | None = None, name: str = "kie") -> TaskStatus | None:
    """One query answer → TaskStatus; None when kie does not know the task.

    `read` turns a product's `data` into a TaskStatus; without it this is Market's recordInfo.
    """
    body = reply.json()
    if not isinstance(body, dict):
        raise ProviderUnavailable(f"kie: expected a JSON object, got {type(body).__name__}")
    code = body.get("code")
    message = text(body.get("msg")) or text(body.get("message"))
    if code == 401:
        raise KeyRejected(f"kie: {message or 'unauthorized'}")
    if code == 429:
        raise RateLimited(f"kie: {message or 'rate limited'}")
    if read is not None and code != 200:
        return _product_envelope(reply, code, message, body)
    if code == 404 or reply.status == 404:
        return None
    if code == 422:
        # The docs' code table: 422 is "validation error", not "task not found" (that is 404).
        # They are silent on what a query can fail to validate; asking again the same way
        # cannot help, so the task ends with kie's own words.
        return TaskStatus(Phase.FAILED, reason="invalid_parameters", code="422", message=message,
                          response=body)
    if code != 200:
        raise ProviderUnavailable(f"kie: code {code!r}: {message or 'no message'}")
    data = body.get("data")
    if not isinstance(data, dict):
        raise ProviderUnavailable("kie: code 200 without a data object")
    return read(data, name) if read else _record(data)


def _product_envelope(reply: Reply, code: object, message: str | None, body: dict[str, Any]) -> TaskStatus | None:
    """A product's non-200 body code: unknown task, not done yet, a failure, or try later."""
    number = code if isinstance(code, int) and not isinstance(code, bool) else None
    phase = envelope_state(number or 0, message) if number else None
    if phase == Phase.NOT_FOUND or (phase is None and reply.status == 404):
        return None
    if phase == Phase.RUNNING:
        return TaskStatus(Phase.RUNNING, response=body)
    if number in (400, 402, 451):
        return TaskStatus(Phase.FAILED, reason=reason(str(number), message), code=str(number),
                          message=message, response=body)
    # 455 maintenance, 500, 505 feature disabled, or no code at all: ask again later.
    raise ProviderUnavailable(f"kie: code {code!r}: {message or 'no message'}")


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
