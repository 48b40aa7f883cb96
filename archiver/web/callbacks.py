"""Provider webhooks (docs/http-api.md, provider callbacks): one verifier per signing scheme, and a replay guard.

A verifier checks a callback and returns the task it names; it never trusts the body's
URLs, since a valid callback is only a hint to poll that task now. The signature maths
lives in archiver.webhook_signatures. To add a scheme, write its verifier and add one line
to VERIFIERS under the provider type it serves; a type not listed uses the `?token=` form.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from archiver.config import ProviderEntry
from archiver.errors import ConfigError, ProviderUnavailable
from archiver.model import valid_task_id
from archiver.webhook_signatures import TOLERANCE, FalJwks, kie_task_id, verify_kie, verify_replicate

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


@dataclass(frozen=True)
class Incoming:
    """One callback as received, with what a verifier may need."""

    entry: ProviderEntry
    headers: Mapping[str, str]
    query: Mapping[str, str]
    body: bytes
    now: float
    jwks: Callable[[str], FalJwks]  # the cached public key set at a URL (fal)

    @property
    def secret(self) -> str:
        assert self.entry.callbacks is not None
        return self.entry.callbacks.secret.reveal()


Verifier = Callable[[Incoming], Awaitable[Callback]]


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise CallbackRefused(400, "the body is not JSON") from None


def _valid(task_id: Any, where: str) -> str:
    if not isinstance(task_id, str) or not valid_task_id(task_id):
        raise CallbackRefused(400, f"no valid task ID in {where}")
    return task_id


def _token(call: Incoming) -> None:
    if not hmac.compare_digest(call.query.get("token", "").encode("utf-8", "replace"), call.secret.encode()):
        raise CallbackRefused(401, "?token= is missing or wrong")


def task_id_of(body: bytes) -> str:
    """The task ID in a callback body: data.taskId, data.task_id, taskId or task_id."""
    return _valid(kie_task_id(_json(body)), "data.taskId, data.task_id, taskId or task_id")


async def kie_hmac(call: Incoming) -> Callback:
    """kie: X-Webhook-Signature = base64(HMAC-SHA256(webhookHmacKey, taskId + "." + timestamp))."""
    stamp = call.headers.get("X-Webhook-Timestamp", "")
    if not stamp or not call.headers.get("X-Webhook-Signature"):
        raise CallbackRefused(401, "X-Webhook-Timestamp and X-Webhook-Signature are required")
    task_id = task_id_of(call.body)
    if not verify_kie(call.secret, call.headers, task_id, now=call.now):
        raise CallbackRefused(401, "X-Webhook-Signature does not match, or X-Webhook-Timestamp is not "
                                   "within 5 minutes of our clock")
    return Callback(task_id, f"{task_id}.{stamp}")


async def standard_webhooks(call: Incoming) -> Callback:
    """Replicate: Standard Webhooks (webhook-id, webhook-timestamp, webhook-signature); the body is the prediction."""
    try:
        if not verify_replicate(call.secret, call.headers, call.body, now=call.now):
            raise CallbackRefused(401, "webhook-signature does not match, or webhook-timestamp is not "
                                       "within 5 minutes of our clock")
    except ConfigError as e:
        raise CallbackRefused(401, f"{e} (fix callbacks.secret)") from None
    doc = _json(call.body)
    task_id = _valid(doc.get("id") if isinstance(doc, dict) else None, "id")
    return Callback(task_id, f"{call.headers.get('webhook-id', '')}.{call.headers.get('webhook-timestamp', '')}")


async def fal_ed25519(call: Incoming) -> Callback:
    """fal: ?token= (fal signs for every account, the token says it is ours), then ED25519 with fal's keys."""
    _token(call)
    try:
        signed = await call.jwks(call.entry.jwks_url).verify(call.headers, call.body, now=call.now)
    except (ProviderUnavailable, ConfigError) as e:
        raise CallbackRefused(503, f"fal's signing keys cannot be had now ({e}); send again later") from None
    if not signed:
        raise CallbackRefused(401, "X-Fal-Webhook-Signature does not verify, or X-Fal-Webhook-Timestamp is not "
                                   "within 5 minutes of our clock")
    doc = _json(call.body)
    task_id = _valid(doc.get("request_id") if isinstance(doc, dict) else None, "request_id")
    return Callback(task_id, f"{task_id}.{call.headers.get('X-Fal-Webhook-Timestamp', '')}")


async def query_token(call: Incoming) -> Callback:
    """Providers with no signing scheme: the callback URL carries ?token=<secret>."""
    _token(call)
    task_id = task_id_of(call.body)
    return Callback(task_id, task_id)


VERIFIERS: dict[str, Verifier] = {
    "fal": fal_ed25519,
    "kie": kie_hmac,
    "replicate": standard_webhooks,
}


def verifier_for(provider_type: str) -> Verifier:
    return VERIFIERS.get(provider_type, query_token)


class ReplayGuard:
    """Remembers accepted callbacks for the window, so that a replayed copy polls nothing."""

    def __init__(self, window: float = TOLERANCE, limit: int = MAX_SEEN) -> None:
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
