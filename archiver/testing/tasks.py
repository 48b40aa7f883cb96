"""A task at a fake provider, scripted step by step, and a logged API request."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from archiver.testing.media import Body

TASK_CREATED_MS = 1763799990000


@dataclass
class FakeTask:
    """A task at one provider; each poll moves it one step on.

    Steps: "queued", "running", "success", "fail", "empty" (a success without result URLs),
    and per provider "partial" (kie Suno and Runway, Replicate) and "removed" (Replicate).
    `where` is the kie product (`api`), the acedata service, the apipod family, Replicate's
    output shape or the fal app path (owner/app).
    """

    provider_type: str
    task_id: str
    steps: list[str]
    files: list[Body] = field(default_factory=list)
    model: str = "seedream-4.5"
    prompt: str = "a lighthouse at dusk"
    fail_code: Any = None
    fail_msg: str | None = None
    where: str = ""
    slow: float = 0.0  # seconds the CDN takes to stream each file, in small pieces
    polls: int = 0  # polls answered with a step (not the 429s of `throttled`)
    urls: list[str] | None = None  # result URLs to hand out instead of the fake CDN's own
    expired: bool = False  # the CDN refuses the plain URL (403); only a kie download-url link works
    delete_after: float | None = None  # the CDN drops the files this long after success was first told
    succeeded_at: float | None = None  # when a poll first answered success
    callback: str = "https://example.com/cb"  # echoed back in the request the provider reports
    fresh_urls: list[str] | None = None  # handed out from the second poll on, as a provider renews URLs
    running_until: float | None = None  # time.monotonic() before which every poll sees "running"
    throttled: int = 0  # polls still to answer 429 before any step
    retry_after: float = 1.0  # the Retry-After of those 429s
    seen: str | None = None  # the step the last poll saw

    def step(self) -> str:
        """The step this poll sees; each poll moves the task one step on."""
        self.polls += 1
        if self.running_until is not None and time.monotonic() < self.running_until:
            step = "running"
        else:
            step = self.steps[min(self.polls - 1, len(self.steps) - 1)]
        if step == "success" and self.succeeded_at is None:
            self.succeeded_at = time.monotonic()
        self.seen = step
        return step

    def body(self, index: int) -> bytes:
        """File `index`'s bytes; a callable body is called once, and its bytes kept."""
        body = self.files[index]
        if callable(body):
            body = self.files[index] = body()
        return body


@dataclass
class Request:
    """An API request as the fake saw it; `entry` is the API it reached ("kie", "acedata:seedream"…)."""

    at: float
    entry: str
    path: str
    body: Any
    status: int = 200
    key: str = ""  # the API key the request carried
