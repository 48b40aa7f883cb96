"""Replicate: GET /v1/predictions/{id} (docs/providers.md, Replicate).

API outputs vanish about an hour after the prediction ends, so success is acted on at
the first poll that sees it; `data_removed` after success means the files are gone.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import quote

from archiver.errors import ConfigError, KeyRejected, ProviderUnavailable
from archiver.model import Phase, TaskStatus
from archiver.providers.base import Http, Reply, api_key, iso_time, shorten, text
from archiver.providers.callbacks import Callback, CallbackRefused, Incoming, parse_json, valid
from archiver.providers.entry import NoOptions, ProviderEntry, Schedule
from archiver.providers.signatures import TOLERANCE, fresh, header

log = logging.getLogger(__name__)

_RUNNING = {"starting", "processing"}
_CODE = re.compile(r"\bE\d{3,4}\b")
_POLICY = re.compile(r"\bE005\b|flagged as sensitive|nsfw|safety (checker|filter)|content policy", re.I)
_BAD_INPUT = re.compile(r"\bE1001\b|input validation|validation error|invalid input", re.I)
_MEDIA_KEYS = {"video": "video", "audio": "audio", "image": "image", "images": "image"}
_EXT_MEDIA = {"mp4": "video", "webm": "video", "mov": "video", "mp3": "audio", "wav": "audio",
              "m4a": "audio", "flac": "audio", "aac": "audio"}


class Replicate:
    type: ClassVar[str] = "replicate"
    options: ClassVar[type[NoOptions]] = NoOptions
    base_url: ClassVar[str] = "https://api.replicate.com"
    requests_per_second: ClassVar[float] = 40.0
    # Replicate deletes API outputs about an hour after they finish: polls never drift far apart.
    poll_intervals: ClassVar[Schedule] = ((1.0, 30.0), (2.0, 120.0), (5.0, 900.0), (10.0, float("inf")))
    batch_size: ClassVar[int] = 1
    not_found_grace: float = 0.0
    min_poll_interval: float = 0.0
    empty_success_wait: ClassVar[float | None] = None

    def __init__(self, entry: ProviderEntry) -> None:
        self.entry = entry

    async def poll(self, http: Http, task_ids: Sequence[str]) -> dict[str, TaskStatus]:
        (task_id,) = task_ids
        url = f"{self.entry.base_url}/v1/predictions/{quote(task_id, safe='')}"
        # Configured keys may carry "Token " (older docs); Bearer is what we send.
        headers = {"Authorization": f"Bearer {api_key(self.entry, 'Bearer')}", "Accept": "application/json"}
        status = parse(await http("GET", url, headers=headers), self.entry.name, task_id)
        return {} if status is None else {task_id: status}

    @staticmethod
    async def verify_callback(call: Incoming) -> Callback:
        """Standard Webhooks (webhook-id, webhook-timestamp, webhook-signature); the body is the prediction."""
        try:
            if not verify_signature(call.secret, call.headers, call.body, now=call.now):
                raise CallbackRefused(401, "webhook-signature does not match, or webhook-timestamp is not "
                                           "within 5 minutes of our clock")
        except ConfigError as e:
            raise CallbackRefused(401, f"{e} (fix callbacks.secret)") from None
        doc = parse_json(call.body)
        task_id = valid(doc.get("id") if isinstance(doc, dict) else None, "id")
        return Callback(task_id, f"{call.headers.get('webhook-id', '')}.{call.headers.get('webhook-timestamp', '')}")


def verify_signature(secret: str, headers: Mapping[str, str], body: bytes, *, now: float | None = None,
                     tolerance: float = TOLERANCE) -> bool:
    """Standard Webhooks: any `v1,<base64>` entry of webhook-signature is the HMAC-SHA256 of
    `id.timestamp.body` with the `whsec_` secret."""
    msg_id, timestamp = header(headers, "webhook-id"), header(headers, "webhook-timestamp")
    signatures = header(headers, "webhook-signature")
    if not (msg_id and signatures and fresh(timestamp, now, tolerance)):
        return False
    try:
        key = base64.b64decode(secret.strip().removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError("replicate webhook secret: not a whsec_<base64> key") from None
    signed = f"{msg_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
    matched = False
    for entry in signatures.split():
        version, _, signature = entry.partition(",")
        # Compare every entry, so the time taken does not say which one matched.
        matched |= version == "v1" and hmac.compare_digest(signature.encode(), expected)
    return matched


def parse(reply: Reply, name: str, task_id: str) -> TaskStatus | None:
    """One prediction → TaskStatus; None when Replicate does not know it (or it is another account's)."""
    if reply.status == 404:
        return None
    body = reply.json()
    if reply.status == 402:
        detail = text(body.get("detail")) if isinstance(body, dict) else None
        return TaskStatus(Phase.FAILED, reason="insufficient_credits", code="402", message=detail, response=body)
    if reply.status == 403:
        raise KeyRejected(f"replicate: HTTP 403: {_detail(body)}")
    if not 200 <= reply.status < 300:
        raise ProviderUnavailable(f"replicate: HTTP {reply.status}: {_detail(body)}")
    if not isinstance(body, dict) or not isinstance(body.get("status"), str):
        raise ProviderUnavailable("replicate: expected a prediction object with a status")
    return _prediction(body, name, task_id)


def _prediction(body: dict[str, Any], name: str, task_id: str) -> TaskStatus:
    status = body["status"].lower()
    inputs = body.get("input") if isinstance(body.get("input"), dict) else None
    common: dict[str, Any] = {
        "model": text(body.get("model")),
        "prompt": text(inputs.get("prompt")) if inputs else None,
        "input": shorten(inputs) or None,
        "created_at": iso_time(body.get("created_at")),
        "completed_at": iso_time(body.get("completed_at")),
        "response": shorten(body),
    }
    if status == "succeeded":
        if body.get("data_removed") is True:
            return TaskStatus(Phase.FAILED, reason="url_expired", code="data_removed",
                              message="Replicate removed the output (API outputs are kept about an hour)",
                              **common)
        found = list(walk(body.get("output")))
        roles = tuple(role or "result" for _, role in found) if isinstance(body.get("output"), dict) else ()
        urls = tuple(url for url, _ in found)
        return TaskStatus(Phase.SUCCEEDED, urls=urls, roles=roles, media=_media(found), **common)
    if status == "failed":
        error = text(body.get("error"))
        code = _CODE.search(error or "")
        return TaskStatus(Phase.FAILED, reason=reason(error), code=code.group(0) if code else "failed",
                          message=error, **common)
    if status in ("canceled", "cancelled", "aborted"):
        return TaskStatus(Phase.FAILED, reason="cancelled", code=status, message=text(body.get("error")),
                          **common)
    if status not in _RUNNING:
        log.warning("replicate: unknown status %r, polling on provider=%s task_id=%s", status, name, task_id)
    # Output may fill while still processing; only `succeeded` counts.
    return TaskStatus(Phase.RUNNING, **common)


def reason(error: str | None) -> str:
    """Replicate's free-text `error` (with an E#### code inside, if any) → our reason word."""
    if error and _POLICY.search(error):
        return "content_moderation"
    if error and _BAD_INPUT.search(error):
        return "invalid_parameters"
    return "provider_failed"


def walk(output: Any, role: str | None = None) -> Iterator[tuple[str, str | None]]:
    """Every file in an output, in document order: (URL or data: URI, top-level key if a dict)."""
    if isinstance(output, str):
        if output.startswith(("https://", "http://", "data:")):
            yield output, role
    elif isinstance(output, list):
        for item in output:
            yield from walk(item, role)
    elif isinstance(output, dict):
        for key, value in output.items():
            yield from walk(value, role or str(key))


def _media(found: list[tuple[str, str | None]]) -> str:
    """A hint only: the downloaded bytes decide each file's media."""
    if not found:
        return "image"
    url, role = found[0]
    if role in _MEDIA_KEYS:
        return _MEDIA_KEYS[role]
    if url.startswith("data:"):
        kind = url[5:].split("/")[0]
        return kind if kind in ("image", "video", "audio") else "image"
    ext = url.split("?")[0].rsplit(".", 1)[-1].lower()
    return _EXT_MEDIA.get(ext, "image")


def _detail(body: Any) -> str:
    return (text(body.get("detail")) or text(body.get("title")) or "no detail") if isinstance(body, dict) \
        else "no detail"
