"""fal.ai queue: GET {app}/requests/{id}/status, then the result GET (docs/providers.md, fal).

`COMPLETED` only says that an outcome is stored: the result GET, asked in the same poll
(a large result is kept only 6 minutes), decides success or failure by its HTTP status.
Callbacks carry a ?token= and an ED25519 signature by a key of fal's published JWKS.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self
from urllib.parse import quote

from archiver.errors import ConfigError, KeyRejected, ProviderUnavailable
from archiver.model import Phase, TaskStatus
from archiver.providers.base import Http, Reply, api_key, shorten, text
from archiver.providers.callbacks import Callback, CallbackRefused, Incoming, check_token, parse_json, valid
from archiver.providers.entry import ProviderEntry, Schedule
from archiver.providers.signatures import TOLERANCE, Jwks, fresh, header

log = logging.getLogger(__name__)

_RUNNING = {"IN_QUEUE", "IN_PROGRESS"}
# Output keys that name a file, walked first and in this order; the rest follow as sent.
_FILE_KEYS = ("images", "image", "video", "audio_file", "audio")
_MEDIA = ("image", "video", "audio")
_KEY_MEDIA = {"images": "image", "image": "image", "video": "video", "audio_file": "audio", "audio": "audio"}
_CREDIT = re.compile(r"balance|locked|credit|billing", re.I)
# A model's own error, stored as the result: these statuses are answers, not outages.
_STORED_ERRORS = (499, 500, 502, 503, 504)
JWKS_URL = "https://rest.alpha.fal.ai/.well-known/jwks.json"


def app_path(model_id: str) -> str:
    """The `owner/app` part of a model id that status and result URLs use (docs/providers.md, fal: Endpoints)."""
    parts = [p for p in model_id.strip("/").split("/") if p]
    if len(parts) == 1 and (legacy := re.fullmatch(r"(\d+)-(.+)", parts[0])):
        return f"{legacy.group(1)}/{legacy.group(2)}"
    keep = 3 if parts and parts[0] in ("workflows", "comfy") else 2
    return "/".join(parts[:keep])


@dataclass(frozen=True)
class FalOptions:
    """`app`: the model the entry's requests went to; `jwks_url`: where fal publishes its signing keys."""

    app: str
    jwks_url: str = JWKS_URL
    keys: ClassVar[frozenset[str]] = frozenset({"app", "jwks_url"})

    @classmethod
    def parse(cls, item: Mapping[str, Any], key: str) -> Self:
        app = item.get("app")
        if not isinstance(app, str) or not re.fullmatch(r"[\w.-]+(/[\w.-]+)*", app):
            raise ConfigError(f"config: {key}.app: fal entries name their model, e.g. fal-ai/flux/dev")
        return cls(app, str(item.get("jwks_url") or JWKS_URL))

    @classmethod
    def misplaced(cls, item: Mapping[str, Any], key: str) -> None:
        for name in ("app", "jwks_url"):
            if name in item:
                raise ConfigError(f"config: {key}.{name}: only fal entries take {name}")

    def view(self) -> dict[str, Any]:
        return {"app": self.app, "jwks_url": self.jwks_url}


class Fal:
    type: ClassVar[str] = "fal"
    options: ClassVar[type[FalOptions]] = FalOptions
    base_url: ClassVar[str] = "https://queue.fal.run"
    requests_per_second: ClassVar[float] = 10.0
    # fal keeps a large result only 6 minutes: polls never drift far apart.
    poll_intervals: ClassVar[Schedule] = ((1.0, 30.0), (3.0, 120.0), (10.0, 900.0), (30.0, float("inf")))
    batch_size: ClassVar[int] = 1
    not_found_grace: float = 0.0
    min_poll_interval: float = 0.0
    empty_success_wait: ClassVar[float | None] = None

    def __init__(self, entry: ProviderEntry) -> None:
        self.entry = entry
        self.app = app_path(entry.options_as(FalOptions).app)
        self.headers = {"Authorization": f"Key {api_key(entry, 'Key')}", "Accept": "application/json"}

    async def poll(self, http: Http, task_ids: Sequence[str]) -> dict[str, TaskStatus]:
        (request_id,) = task_ids
        url = f"{self.entry.base_url}/{self.app}/requests/{quote(request_id, safe='')}"
        reply = await http("GET", f"{url}/status", headers=self.headers)
        queued = read_status(reply, self.entry.name, request_id)
        if queued is None or isinstance(queued, TaskStatus):
            return {} if queued is None else {request_id: queued}
        result = await http("GET", url, headers=self.headers, accept=_STORED_ERRORS)
        return {request_id: read_result(result, queued)}

    @staticmethod
    async def verify_callback(call: Incoming) -> Callback:
        """?token= (fal signs for every account, the token says it is ours), then ED25519 with fal's keys."""
        check_token(call)
        try:
            jwks = call.jwks(call.entry.options_as(FalOptions).jwks_url)
            signed = await verify_signature(jwks, call.headers, call.body, now=call.now)
        except (ProviderUnavailable, ConfigError) as e:
            raise CallbackRefused(503, f"fal's signing keys cannot be had now ({e}); send again later") from None
        if not signed:
            raise CallbackRefused(401, "X-Fal-Webhook-Signature does not verify, or X-Fal-Webhook-Timestamp is not "
                                       "within 5 minutes of our clock")
        doc = parse_json(call.body)
        task_id = valid(doc.get("request_id") if isinstance(doc, dict) else None, "request_id")
        return Callback(task_id, f"{task_id}.{call.headers.get('X-Fal-Webhook-Timestamp', '')}")


async def verify_signature(jwks: Jwks, headers: Mapping[str, str], body: bytes, *, now: float | None = None,
                           tolerance: float = TOLERANCE) -> bool:
    """ED25519 over `request_id\\nuser_id\\ntimestamp\\nsha256hex(body)` by any key of fal's set;
    ProviderUnavailable if no keys can be had."""
    request_id, user_id = header(headers, "X-Fal-Webhook-Request-Id"), header(headers, "X-Fal-Webhook-User-Id")
    timestamp = header(headers, "X-Fal-Webhook-Timestamp")
    try:
        signature = bytes.fromhex(header(headers, "X-Fal-Webhook-Signature"))
    except ValueError:
        return False
    if not (request_id and user_id and signature and fresh(timestamp, now, tolerance)):
        return False
    message = "\n".join((request_id, user_id, timestamp, hashlib.sha256(body).hexdigest())).encode()
    return await jwks.verify(signature, message)


def read_status(reply: Reply, name: str, request_id: str) -> TaskStatus | dict[str, Any] | None:
    """The status answer: None if unknown, a TaskStatus while it runs, or the COMPLETED object."""
    if reply.status == 404:
        return None
    body = reply.json()
    if reply.status == 403:
        raise KeyRejected(f"fal: HTTP 403: {_detail(body)}")
    if reply.status not in (200, 202) or not isinstance(body, dict) or not isinstance(body.get("status"), str):
        raise ProviderUnavailable(f"fal: status answered HTTP {reply.status}: {_detail(body)}")
    status = body["status"].upper()
    if status == "COMPLETED":
        return body
    if status in ("FAILED", "CANCELED", "CANCELLED"):  # not in fal's clients; seen in other schemas
        why = "cancelled" if status.startswith("CANCEL") else "provider_failed"
        return TaskStatus(Phase.FAILED, reason=why, code=status, message=text(body.get("error")),
                          response={"status": body})
    if status not in _RUNNING:
        log.warning("fal: unknown status %r, polling on provider=%s task_id=%s", status, name, request_id)
    # A runner failure puts IN_PROGRESS back IN_QUEUE; both just mean "not yet".
    return TaskStatus(Phase.RUNNING, response={"status": body})


def read_result(reply: Reply, status: dict[str, Any]) -> TaskStatus:
    """The result GET: its HTTP status is the outcome (docs/providers.md, fal: Result GET outcomes)."""
    if reply.status == 404:
        return TaskStatus(Phase.FAILED, reason="not_found", code="404", response={"status": status},
                          message="fal no longer has this result (it keeps results 6 minutes to 1 hour)")
    body = reply.json()
    response = {"status": status, "result": shorten(body)}
    if reply.status == 200:
        if not isinstance(body, dict):
            raise ProviderUnavailable(f"fal: result is {type(body).__name__}, not an object")
        found = list(walk(body))
        media = next((m for _, _, m in found if m), "image")
        return TaskStatus(Phase.SUCCEEDED, urls=tuple(u for u, _, _ in found),
                          roles=tuple(r for _, r, _ in found), media=media,
                          prompt=text(body.get("prompt")), response=response)
    if reply.status >= 500 and not _is_error_body(body, reply):
        raise ProviderUnavailable(f"fal: result answered HTTP {reply.status}")
    why, code, message = _failure(reply.status, body, reply.headers)
    if why is None:
        raise ProviderUnavailable(f"fal: result answered HTTP {reply.status}: {message}")
    return TaskStatus(Phase.FAILED, reason=why, code=code, message=message, response=response)


def _failure(http_status: int, body: Any, headers: Mapping[str, str]) -> tuple[str | None, str, str]:
    """(reason, code, message) for a stored error; reason None means "ask again later"."""
    detail = body.get("detail") if isinstance(body, dict) else body
    error_type = (body.get("error_type") if isinstance(body, dict) else None) or _error_type(headers)
    if isinstance(detail, list):  # model errors: [{"loc", "msg", "type", "url"}]
        items = [d for d in detail if isinstance(d, dict)]
        types = [str(d.get("type")) for d in items]
        message = "; ".join(str(d.get("msg")) for d in items) or str(detail)
        code = types[0] if types else str(http_status)
        if "content_policy_violation" in types:
            return "content_moderation", code, message
        return "invalid_parameters" if http_status in (400, 422) else "provider_failed", code, message
    message = text(detail) or "no detail"
    code = str(error_type or http_status)
    if http_status in (402, 403) and _CREDIT.search(message):
        return "insufficient_credits", code, message
    if http_status in (400, 422):
        return "invalid_parameters", code, message
    if http_status == 499:
        return "cancelled", code, message
    if http_status >= 500:
        return "provider_failed", code, message
    return None, code, message


def _is_error_body(body: Any, reply: Reply) -> bool:
    """A 5xx the model stored (a fal error body), not a gateway failing on the way."""
    return (_error_type(reply.headers) is not None
            or (isinstance(body, dict) and ("error_type" in body or "detail" in body)))


def _error_type(headers: Mapping[str, str]) -> str | None:
    """fal's X-Fal-Error-Type header, whatever case the server sent it in."""
    return next((v for k, v in headers.items() if k.lower() == "x-fal-error-type"), None)


def walk(result: dict[str, Any]) -> Iterator[tuple[str, str, str | None]]:
    """(URL, top-level key, media hint) for each file object, file keys first, then the rest."""
    keys = [k for k in _FILE_KEYS if k in result] + [k for k in result if k not in _FILE_KEYS]
    for key in keys:
        yield from _files(result[key], key)


def _files(value: Any, role: str) -> Iterator[tuple[str, str, str | None]]:
    if isinstance(value, dict):
        url = value.get("url")
        if isinstance(url, str) and url.startswith(("https://", "http://", "data:")):
            kind = str(value.get("content_type") or "").split("/")[0]
            yield url, role, kind if kind in _MEDIA else _KEY_MEDIA.get(role)
            return
        for item in value.values():
            yield from _files(item, role)
    elif isinstance(value, list):
        for item in value:
            yield from _files(item, role)


def _detail(body: Any) -> str:
    if isinstance(body, dict):
        return text(body.get("detail")) or text(body.get("error_type")) or "no detail"
    return "no detail"
