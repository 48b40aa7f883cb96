"""What the state layer hands out: tasks, assets, the inbox position, rejected lines, daemons."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from archiver.model import TaskState, TaskRef

KEEP_REJECTS = 50  # rejected inbox lines kept for `archiver status`, newest first
LIVE = (TaskState.QUEUED, TaskState.POLLING, TaskState.DOWNLOADING)  # a daemon holds a lease on these
CLAIM_BATCH = 2000  # tasks one claim takes at most: a start with a big backlog takes it in steps
# tasks, assets, bytes, failed, newest asset, newest failure, thumbnails recorded (a thumbnail moves its day too)
Fingerprint = tuple[int, int, int, int, float, float, int]


@dataclass(frozen=True)
class Position:
    """Where the inbox reader stands: the file's identity and the next byte to read."""

    dev: int
    ino: int
    offset: int
    line_no: int


@dataclass(frozen=True)
class Rejected:
    line_no: int
    reason: str
    line: str


@dataclass(frozen=True)
class Task:
    pk: int
    provider: str
    task_id: str
    labels: dict[str, str]
    state: TaskState
    first_seen_at: float
    polls: int
    unknown_since: float | None
    success_seen_at: float | None
    reason: str | None
    code: str | None
    message: str | None
    media: str | None
    model: str | None
    prompt: str | None
    input: Any
    response: Any
    task_created_at: str | None
    task_completed_at: str | None
    updated_at: float
    last_error: str | None = None
    running_for: float = 0.0  # seconds the provider has said "still running" (give_up_after)
    next_poll_at: float = 0.0  # when the poller asks next (docs/design.md, scheduling under a rate limit)
    answered_at: float | None = None  # the last "still running", with no failed poll since
    empty_polls: int = 0  # successes without a result URL seen so far
    empty_since: float | None = None


@dataclass(frozen=True)
class Claimed:
    """A task a claim took: enough to route it. A claim takes up to CLAIM_BATCH, so whole rows would weigh."""

    pk: int
    provider: str
    state: TaskState


@dataclass(frozen=True)
class Polled:
    """One poll that left its task waiting: counted, and when (and in which lane) to ask next."""

    pk: int
    at: float  # when the answer came; a first poll's history row and updated_at carry it
    next_poll_at: float = 0.0
    lane: int = 0
    error: str | None = None
    unknown_since: float | None = None
    running_for: float | None = None  # None keeps the stored value
    answered_at: float | None = None
    empty: tuple[int, float | None] = (0, None)  # successes without a result URL so far, and since when


@dataclass(frozen=True)
class Asset:
    task: int
    idx: int
    url: str
    key: str | None
    state: str
    bytes: int | None
    sha256: str | None
    content_type: str | None
    downloaded_at: float | None
    archived_at: float | None
    role: str | None = None


@dataclass(frozen=True)
class Daemon:
    """One running daemon as the state DB knows it: who, since when, alive when, holding what."""

    id: str
    host: str
    pid: int
    started_at: float
    seen_at: float
    holds: dict[str, int]  # live tasks it holds, by state


@dataclass(frozen=True)
class Health:
    daemon: str  # the daemon's id; one row per (daemon, name)
    name: str
    state: str
    message: str | None
    at: float  # when the current state began


@dataclass(frozen=True, slots=True)
class IndexedAsset:
    """One archived asset with what its sidecar says of its task; `count` is the task's asset rows."""

    provider: str
    task_id: str
    labels: dict[str, str]
    hint: str | None  # the task's media, as the provider said it
    model: str | None
    prompt: str | None
    success_seen_at: float | None
    idx: int
    key: str
    bytes: int | None
    sha256: str | None
    content_type: str | None
    archived_at: float
    count: int
    width: int | None = None
    height: int | None = None
    thumb: str | None = None  # the thumbnail's key, once made
    placeholder: str | None = None  # its dominant colour, #rrggbb

    @property
    def seen(self) -> float:
        """When the asset belongs: the success seen, else its archiving."""
        return self.success_seen_at or self.archived_at


@dataclass(frozen=True, slots=True)
class IndexedFailure:
    """One failed task as the index shows it."""

    provider: str
    task_id: str
    labels: dict[str, str]
    reason: str | None
    code: str | None
    message: str | None
    updated_at: float

    @property
    def seen(self) -> float:
        """When the failure belongs: its task's end."""
        return self.updated_at


def per_ref(refs: Sequence[TaskRef], rows: Iterable[Any]) -> list[Any]:
    """Each ref's newly inserted row, or None where the task was known already (or came earlier in `refs`)."""
    made = {(row["provider"], row["task_id"]): row for row in rows}
    return [made.pop((ref.provider, ref.task_id), None) for ref in refs]


def task_from_row(row: Any) -> Task:
    return Task(
        pk=row["id"], provider=row["provider"], task_id=row["task_id"],
        labels=json.loads(row["labels"]), state=TaskState(row["state"]),
        first_seen_at=row["first_seen_at"], polls=row["polls"],
        unknown_since=row["unknown_since"], success_seen_at=row["success_seen_at"],
        reason=row["reason"], code=row["code"], message=row["message"],
        media=row["media"], model=row["model"], prompt=row["prompt"],
        input=json.loads(row["input"]) if row["input"] else None,
        response=json.loads(row["response"]) if row["response"] else None,
        task_created_at=row["task_created_at"], task_completed_at=row["task_completed_at"],
        updated_at=row["updated_at"], last_error=row["last_error"], running_for=row["running_for"],
        next_poll_at=row["next_poll_at"], answered_at=row["answered_at"], empty_polls=row["empty_polls"],
        empty_since=row["empty_since"],
    )


def asset_from_row(row: Any) -> Asset:
    return Asset(*(row[k] for k in ("task", "idx", "url", "key", "state", "bytes", "sha256",
                                    "content_type", "downloaded_at", "archived_at", "role")))


def indexed_asset(row: Any) -> IndexedAsset:
    return IndexedAsset(
        provider=row["provider"], task_id=row["task_id"], labels=json.loads(row["labels"]), hint=row["hint"],
        model=row["model"], prompt=row["prompt"], success_seen_at=row["success_seen_at"], idx=row["idx"],
        key=row["key"], bytes=row["bytes"], sha256=row["sha256"], content_type=row["content_type"],
        archived_at=row["archived_at"], count=row["count"], width=row["width"], height=row["height"],
        thumb=row["thumb"], placeholder=row["placeholder"])


def indexed_failure(row: Any) -> IndexedFailure:
    return IndexedFailure(provider=row["provider"], task_id=row["task_id"], labels=json.loads(row["labels"]),
                          reason=row["reason"], code=row["code"], message=row["message"],
                          updated_at=row["updated_at"])
