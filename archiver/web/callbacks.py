"""Provider webhooks (design.md §12): one verifier per signing scheme, and a replay guard.

A verifier checks a callback and returns the task it names; it never trusts the body's
URLs, since a valid callback is only a hint to poll that task now. To add a scheme
(Replicate's Standard Webhooks, fal's ED25519), write its verifier and add one line to
VERIFIERS under the provider type it serves.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from archiver.model import valid_task_id

WINDOW = 300.0  # a signed callback is good for 5 minutes either side of our clock
MAX_SEEN = 100_000  # replay keys remembered at most; the oldest go first


class CallbackRefused(Exception):
    """The callback is not accepted; `status` is the HTTP answer (400 or 401)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Callback:
    task_id: str
    replay_key: str  # what a replayed copy of this callback repeats exactly


# (headers, query, body, secret, now) → the verified callback, or CallbackRefused
Verifier = Callable[[Mapping[str, str], Mapping[str, str], bytes, str, float], Callback]


def task_id_of(body: bytes) -> str:
    """The task ID in a callback body: data.taskId, data.task_id, taskId or task_id."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        raise CallbackRefused(400, "the body is not JSON") from None
    places: list[Any] = []
    if isinstance(doc, dict):
        data = doc.get("data")
        if isinstance(data, dict):
            places += [data.get("taskId"), data.get("task_id")]
        places += [doc.get("taskId"), doc.get("task_id")]
    task_id = next((p for p in places if p is not None), None)
    if not isinstance(task_id, str) or not valid_task_id(task_id):
        raise CallbackRefused(400, "no valid task ID in data.taskId, data.task_id, taskId or task_id")
    return task_id


def kie_hmac(headers: Mapping[str, str], query: Mapping[str, str], body: bytes, secret: str,
             now: float) -> Callback:
    """kie: X-Webhook-Signature = base64(HMAC-SHA256(webhookHmacKey, taskId + "." + timestamp))."""
    stamp, signature = headers.get("X-Webhook-Timestamp", ""), headers.get("X-Webhook-Signature", "")
    if not stamp or not signature:
        raise CallbackRefused(401, "X-Webhook-Timestamp and X-Webhook-Signature are required")
    if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12) or abs(now - int(stamp)) > WINDOW:
        raise CallbackRefused(401, "X-Webhook-Timestamp is not within 5 minutes of our clock")
    task_id = task_id_of(body)
    expected = base64.b64encode(hmac.new(secret.encode(), f"{task_id}.{stamp}".encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(expected, signature.encode("utf-8", "replace")):
        raise CallbackRefused(401, "X-Webhook-Signature does not match")
    return Callback(task_id, f"{task_id}.{stamp}")


def query_token(headers: Mapping[str, str], query: Mapping[str, str], body: bytes, secret: str,
                now: float) -> Callback:
    """Providers with no signing scheme: the callback URL carries ?token=<secret>."""
    if not hmac.compare_digest(query.get("token", "").encode("utf-8", "replace"), secret.encode()):
        raise CallbackRefused(401, "?token= is missing or wrong")
    task_id = task_id_of(body)
    return Callback(task_id, task_id)


VERIFIERS: dict[str, Verifier] = {
    "kie": kie_hmac,
}


def verifier_for(provider_type: str) -> Verifier:
    return VERIFIERS.get(provider_type, query_token)


class ReplayGuard:
    """Remembers accepted callbacks for the window, so that a replayed copy polls nothing."""

    def __init__(self, window: float = WINDOW, limit: int = MAX_SEEN) -> None:
        self.window = window
        self.limit = limit
        self.seen: dict[str, float] = {}  # key → when first accepted; insertion order is time order

    def first(self, key: str, now: float) -> bool:
        """True the first time `key` is seen within the window."""
        while self.seen:
            old, at = next(iter(self.seen.items()))
            if now - at <= self.window and len(self.seen) < self.limit:
                break
            del self.seen[old]
        if key in self.seen:
            return False
        self.seen[key] = now
        return True
