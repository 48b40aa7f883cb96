"""Provider callbacks (docs/http-api.md): what a verifier is given, what it returns, and the shared parts.

A verifier checks a callback and returns the task it names; it never trusts the body's URLs,
since a valid callback is only a hint to poll that task now. Each provider names its verifier
(`Provider.verify_callback`): its own signing scheme, or `query_token` when it has none.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from archiver.model import valid_task_id
from archiver.providers.entry import ProviderEntry
from archiver.providers.signatures import Jwks


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
    jwks: Callable[[str], Jwks]  # the cached public key set at a URL

    @property
    def secret(self) -> str:
        assert self.entry.callbacks is not None
        return self.entry.callbacks.secret.reveal()


Verifier = Callable[[Incoming], Awaitable[Callback]]


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise CallbackRefused(400, "the body is not JSON") from None


def valid(task_id: Any, where: str) -> str:
    """`task_id` if it is one; else the callback is refused, naming where it was looked for."""
    if not isinstance(task_id, str) or not valid_task_id(task_id):
        raise CallbackRefused(400, f"no valid task ID in {where}")
    return task_id


def check_token(call: Incoming) -> None:
    if not hmac.compare_digest(call.query.get("token", "").encode("utf-8", "replace"), call.secret.encode()):
        raise CallbackRefused(401, "?token= is missing or wrong")


def task_id_in(body: Any) -> str:
    """Where a task ID sits in a callback: data.taskId (kie's Veo, 4o, Flux), data.task_id (Suno, Runway),
    or the same at the top level; "" if none."""
    data = body.get("data") if isinstance(body, dict) else None
    for place in (data, body):
        if isinstance(place, dict):
            for key in ("taskId", "task_id"):
                if isinstance(place.get(key), str) and place[key]:
                    return str(place[key])
    return ""


def task_id_of(body: bytes) -> str:
    """The task ID in a callback body: data.taskId, data.task_id, taskId or task_id."""
    return valid(task_id_in(parse_json(body)), "data.taskId, data.task_id, taskId or task_id")


async def query_token(call: Incoming) -> Callback:
    """Providers with no signing scheme: the callback URL carries ?token=<secret>."""
    check_token(call)
    task_id = task_id_of(call.body)
    return Callback(task_id, task_id)
