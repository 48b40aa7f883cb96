"""The JSON beside each asset (`archiver.asset/2`; readers take `/1` too), and a task's _failed record
(`archiver.failed/1`).

What a provider reports is stored as returned, but for secrets (redaction.py). Result URLs
are kept without their query string (signed links); the state DB alone has them whole.
The readers here are what verify and a rebuild of the index from the store take from them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from archiver import __version__
from archiver.archive_format.days import asset_entry, day_of_key, failed_entry
from archiver.archive_format.keys import SIDECAR_SUFFIX
from archiver.archive_format.redaction import bare_url, elide, redact_secrets
from archiver.model import utc_iso

ASSET_SCHEMA = "archiver.asset/2"
ASSET_SCHEMAS = ("archiver.asset/1", ASSET_SCHEMA)  # /1 lacks width, height, duration_s and embedded
FAILED_SCHEMA = "archiver.failed/1"


class TaskFields(Protocol):
    """What a sidecar and a _failed record say of their task (a state.Task)."""

    @property
    def provider(self) -> str: ...
    @property
    def task_id(self) -> str: ...
    @property
    def labels(self) -> dict[str, str]: ...
    @property
    def first_seen_at(self) -> float: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def code(self) -> str | None: ...
    @property
    def message(self) -> str | None: ...
    @property
    def model(self) -> str | None: ...
    @property
    def prompt(self) -> str | None: ...
    @property
    def input(self) -> Any: ...
    @property
    def response(self) -> Any: ...
    @property
    def task_created_at(self) -> str | None: ...
    @property
    def task_completed_at(self) -> str | None: ...


class AssetFields(Protocol):
    """What a sidecar says of its asset (a state.Asset)."""

    @property
    def idx(self) -> int: ...
    @property
    def url(self) -> str: ...
    @property
    def role(self) -> str | None: ...
    @property
    def state(self) -> str: ...
    @property
    def key(self) -> str | None: ...


class ProviderFields(Protocol):
    """The provider's entry in the config: only its type is recorded."""

    @property
    def type(self) -> str: ...


def asset_sidecar(task: TaskFields, entry: ProviderFields, asset: AssetFields, *, key: str, count: int,
                  media: str, content_type: str, size: int, sha256: str,
                  downloaded_at: float, archived_at: float, probe: Mapping[str, Any] | None = None) -> bytes:
    """`probe` is what the file says of itself (archiver/thumbs/embedded.py): width, height, duration_s, embedded."""
    probe = probe or {}
    doc: dict[str, Any] = {
        "schema": ASSET_SCHEMA,
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
        "width": probe.get("width"),
        "height": probe.get("height"),
        "duration_s": probe.get("duration_s"),
        "embedded": probe.get("embedded") or {},
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


def failed_record(task: TaskFields, entry: ProviderFields, assets: Sequence[AssetFields], ended_at: float) -> bytes:
    doc: dict[str, Any] = {
        "schema": FAILED_SCHEMA,
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


@dataclass(frozen=True)
class Recorded:
    """What a sidecar records of its asset, for verify to check it against."""

    bytes: int
    sha256: str
    provider: str | None
    task_id: str | None


def read_recorded(data: bytes) -> Recorded:
    """ValueError, KeyError or TypeError when `data` is no sidecar."""
    doc = json.loads(data)
    size, sha256 = int(doc["bytes"]), str(doc["sha256"]).lower()
    return Recorded(size, sha256, doc.get("provider"), doc.get("task_id"))


def read_asset_entry(key: str, data: bytes, pattern: re.Pattern[str] | None,
                     thumb: str | None = None) -> tuple[str, dict[str, Any]]:
    """The day and the day-file entry of the sidecar at `key`; the layout's date wins over archived_at.
    `thumb` is the asset's thumbnail key when the store holds one. A `/1` sidecar has no width or height.

    ValueError, KeyError, TypeError or AttributeError when it is no sidecar of that asset."""
    doc = json.loads(data)
    asset = key.removesuffix(SIDECAR_SUFFIX)
    date = day_of_key(pattern, asset) or str(doc["archived_at"])[:10]
    fields = {name: doc.get(name) for name in ("provider", "provider_type", "task_id", "index", "count", "media",
                                               "model", "prompt", "content_type", "bytes", "sha256",
                                               "archived_at")}
    if doc.get("key") != asset or fields["task_id"] is None:
        raise ValueError(f"its key field says {doc.get('key')!r}")
    size = {name: doc.get(name) if isinstance(doc.get(name), int) else None for name in ("width", "height")}
    return date, asset_entry(key=asset, sidecar=key, labels=doc.get("labels") or {}, thumb=thumb, **size, **fields)


def read_failed_entry(key: str, data: bytes) -> tuple[str, dict[str, Any]]:
    """The day and the day-file entry of the _failed record at `key`; KeyError or TypeError when it is none."""
    doc = json.loads(data)
    return str(doc["failed_at"])[:10], failed_entry(
        provider=doc["provider"], task_id=doc["task_id"], reason=doc["reason"],
        provider_code=doc.get("provider_code"), provider_message=doc.get("provider_message"),
        record=key, labels=doc.get("labels") or {})
