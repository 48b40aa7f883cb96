"""Records shared across archiver: task states, provider answers, asset metadata. No I/O."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

TASK_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,200}")


def valid_task_id(task_id: str) -> bool:
    """True for an opaque ID as docs/operations.md (the inbox) allows: 1–200 of [A-Za-z0-9._:-], not . or .."""
    return bool(TASK_ID_RE.fullmatch(task_id)) and task_id not in (".", "..")


class TaskState(StrEnum):
    """A task's life in archiver (docs/design.md, one task's way)."""

    QUEUED = "queued"
    POLLING = "polling"
    DOWNLOADING = "downloading"
    ARCHIVED = "archived"
    FAILED = "failed"


ENDED = (TaskState.ARCHIVED, TaskState.FAILED)


class Phase(StrEnum):
    """What a provider says of a task, normalised."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    NOT_FOUND = "not_found"


REASONS = (
    "provider_failed",
    "content_moderation",
    "invalid_parameters",
    "insufficient_credits",
    "timed_out",
    "not_found",
    "cancelled",
    "download_failed",
    "url_expired",
    "too_large",
    "unsafe_url",
    "storage_failed",
)


@dataclass(frozen=True)
class TaskRef:
    """One inbox entry: which provider entry, which task, and the user's labels."""

    provider: str
    task_id: str
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskStatus:
    """A provider's answer about one task, turned into our terms.

    `reason` is one of REASONS when phase is FAILED; `code` and `message` keep the
    provider's own words. `response` is the provider's task object as returned.
    `roles`, when the provider says which file is which, holds one word per URL.
    """

    phase: Phase
    urls: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    media: str | None = None
    reason: str | None = None
    code: str | None = None
    message: str | None = None
    model: str | None = None
    prompt: str | None = None
    input: dict[str, Any] | None = None
    created_at: str | None = None
    completed_at: str | None = None
    response: Any = None


def utc_iso(ts: float | None) -> str | None:
    """Unix seconds → ISO 8601 UTC with a Z, or None."""
    if ts is None:
        return None
    stamp = dt.datetime.fromtimestamp(ts, dt.UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")
