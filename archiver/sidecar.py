"""The JSON written beside each asset (docs/archive-format.md, the sidecar) and the _failed record of a task.

What a provider reports is stored as returned, but for secrets: one rule, `redact_secrets`,
applies to every provider's parameters and answers before they reach the archive. Result URLs
are kept without their query string (signed links); the state DB alone has them whole.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

from archiver import __version__
from archiver.config import ProviderEntry
from archiver.datauri import elide
from archiver.download import bare_url
from archiver.model import utc_iso
from archiver.state import Asset, Task


def asset_sidecar(task: Task, entry: ProviderEntry, asset: Asset, *, key: str, count: int,
                  media: str, content_type: str, size: int, sha256: str,
                  downloaded_at: float, archived_at: float) -> bytes:
    doc: dict[str, Any] = {
        "schema": "archiver.asset/1",
        "provider": task.provider,
        "provider_type": entry.type,
        "task_id": task.task_id,
        "index": asset.idx,
        "count": count,
        "media": media,
        "model": task.model,
        "prompt": task.prompt,
        "input": redact_secrets(task.input),
        # Without its query: a published archive must not hand out signed links to the provider's files.
        # An inline (data:) result is in the archive already; its header and size say what it was.
        "source_url": elide(asset.url) if asset.url.startswith("data:") else bare_url(asset.url),
        "key": key,
        "content_type": content_type,
        "bytes": size,
        "sha256": sha256,
        "task_created_at": task.task_created_at,
        "task_completed_at": task.task_completed_at,
        "first_seen_at": utc_iso(task.first_seen_at),
        "downloaded_at": utc_iso(downloaded_at),
        "archived_at": utc_iso(archived_at),
        "labels": task.labels,
        "provider_response": redact_secrets(task.response),
        "archiver_version": __version__,
    }
    if asset.role:
        doc["role"] = asset.role
    return _dump(doc)


def failed_record(task: Task, entry: ProviderEntry, assets: list[Asset], ended_at: float) -> bytes:
    doc: dict[str, Any] = {
        "schema": "archiver.failed/1",
        "provider": task.provider,
        "provider_type": entry.type,
        "task_id": task.task_id,
        "reason": task.reason,
        "provider_code": task.code,
        "provider_message": task.message,
        "first_seen_at": utc_iso(task.first_seen_at),
        "failed_at": utc_iso(ended_at),
        "labels": task.labels,
        "archived_keys": [a.key for a in assets if a.state == "archived"],
        "provider_response": redact_secrets(task.response),
        "archiver_version": __version__,
    }
    return _dump(doc)


def _dump(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


REDACTED = "[redacted]"
_SECRET_WORDS = {"key", "keys", "token", "tokens", "secret", "secrets", "authorization", "password"}
_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")


@functools.lru_cache(maxsize=4096)  # the same few field names, in every sidecar
def is_secret_field(name: str) -> bool:
    """Callback and webhook URLs, and fields named like *token*, *secret*, *key*, authorization."""
    squashed = re.sub(r"[^a-z]", "", name.lower())
    words = {w.lower() for w in _WORD.findall(name)}
    return "callback" in squashed or "webhook" in squashed or bool(words & _SECRET_WORDS)


def redact_secrets(value: Any) -> Any:
    """A copy of a provider's JSON with secret fields replaced, also inside JSON-in-a-string (kie's param).

    URLs lose their query string (a signature or a token lives there) and data: URIs their payload."""
    if isinstance(value, dict):
        return {k: REDACTED if is_secret_field(str(k)) and v not in (None, "") else redact_secrets(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [redact_secrets(v) for v in value]
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            inner = json.loads(value)
        except ValueError:
            return value
        cleaned = redact_secrets(inner)
        return value if cleaned == inner else json.dumps(cleaned, ensure_ascii=False)
    if isinstance(value, str) and value.startswith(("http://", "https://")) and ("?" in value or "@" in value):
        return bare_url(value)
    if isinstance(value, str) and "data:" in value:
        return elide(value)
    return value
