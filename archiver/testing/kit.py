"""FakeProviders: every fake provider API and a CDN on 127.0.0.1, as one async context manager."""

from __future__ import annotations

import itertools
import time
import uuid
from contextlib import AsyncExitStack
from typing import Any

from archiver.testing.apis import FakeApis
from archiver.testing.cdn import FaultCdn, serve_at
from archiver.testing.outcomes import Outcome, succeeds
from archiver.testing.tasks import FakeTask, Request

PROVIDER_TYPES = ("acedata", "apipod", "fal", "kie", "maxapi", "replicate")
# The `where` of a task (FakeTask) when none is given, and the entry option that names it.
DEFAULT_WHERE = {"acedata": "seedream", "apipod": "images", "fal": "fal-ai/flux", "replicate": "list"}
ENTRY_OPTIONS: dict[str, dict[str, Any]] = {"acedata": {"service": "seedream"}, "fal": {"app": "fal-ai/flux/dev"}}


class FakeProviders:
    """The fake APIs of every provider type on one port, and a CDN on another.

        async with FakeProviders() as fake:
            task = fake.task("kie", succeeds("png", "mp4"), running_polls=2)
            config = {"providers": {"kie": fake.entry("kie")}}

    `apis` (FakeApis) and `cdn` (FaultCdn) are the servers' state, for what the helpers
    here do not cover.
    """

    def __init__(self, *, poll_interval: str = "0.5s", file_size: int = 4096) -> None:
        self.poll_interval = poll_interval
        self.file_size = file_size
        self.keys = {t: f"fake-{t}-key-0001" for t in PROVIDER_TYPES}
        self.apis = FakeApis(*self.keys.values())
        self.cdn = FaultCdn()
        self._ids = itertools.count(1)
        self._run = uuid.uuid4().hex[:6]  # made-up task IDs differ between runs on one state DB
        self._stack: AsyncExitStack | None = None

    async def __aenter__(self) -> FakeProviders:
        async with AsyncExitStack() as stack:
            self.apis.base = await stack.enter_async_context(serve_at(self.apis.app()))
            cdn_base = await stack.enter_async_context(serve_at(self.apis.cdn_app(self.cdn.app())))
            self.apis.cdn_base = self.cdn.base = cdn_base
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._stack is not None:
            stack, self._stack = self._stack, None
            await stack.aclose()

    # --- where things are --------------------------------------------------------------------

    @property
    def cdn_url(self) -> str:
        """The CDN's base URL: task files at /cdn/{task_id}/{index}, FaultCdn files at /f/{name}."""
        return self.cdn.base

    def base_url(self, provider_type: str) -> str:
        """The API base URL an entry of this type uses (all types share one server)."""
        self._known(provider_type)
        return self.apis.base

    def key(self, provider_type: str) -> str:
        """The API key this provider type accepts."""
        return self.keys[self._known(provider_type)]

    def entry(self, provider_type: str, **options: Any) -> dict[str, Any]:
        """A provider entry for the config (plain, YAML-able): type, api_key, base_url, fast polls.

        `options` add or replace keys, e.g. `api="veo"` (kie), `service="seedance"` (acedata).
        """
        entry = {"type": provider_type, "api_key": self.key(provider_type),
                 "base_url": self.base_url(provider_type), "poll_intervals": [self.poll_interval]}
        return entry | ENTRY_OPTIONS.get(provider_type, {}) | options

    def entries(self) -> dict[str, dict[str, Any]]:
        """One entry per provider type, named by its type."""
        return {t: self.entry(t) for t in PROVIDER_TYPES}

    # --- tasks ---------------------------------------------------------------------------------

    def task(self, provider_type: str, outcome: Outcome | None = None, *, task_id: str | None = None,
             where: str | None = None, running_polls: int = 0, running_seconds: float = 0.0,
             expiring: bool = False, throttled: int = 0, retry_after: float = 1.0,
             download_seconds: float = 0.0, **fields: Any) -> FakeTask:
        """A task that ends with `outcome` (default: success with one png).

        It is "running" for its first `running_polls` polls and, as well, until `running_seconds`
        have passed. `expiring`: the plain result URLs answer 403 and only a link from kie's
        download-url works. `throttled`: its first polls answer 429 with `retry_after`.
        `download_seconds`: the CDN takes this long to send each file. `where` is the kie
        product (`api`), acedata service, apipod family, Replicate output shape or fal app
        path; `fields` set any other FakeTask field (model, prompt…).
        """
        self._known(provider_type)
        outcome = outcome or succeeds(size=self.file_size)
        where = DEFAULT_WHERE.get(provider_type, "") if where is None else where
        if task_id is None:
            n = next(self._ids)
            task_id = str(uuid.uuid4()) if provider_type == "fal" else f"{provider_type}-{self._run}-{n:04d}"
        code, message = outcome.failure(provider_type, where) if outcome.end == "fail" else (None, None)
        task = FakeTask(provider_type, task_id, ["running"] * running_polls + [outcome.end],
                        outcome.bodies(f"{provider_type}/{task_id}"), fail_code=code, fail_msg=message,
                        where=where, slow=download_seconds, expired=expiring, throttled=throttled,
                        retry_after=retry_after, **fields)
        if running_seconds:
            task.running_until = time.monotonic() + running_seconds
        if expiring:  # stable URLs: asking kie again must not look like a fresh link
            task.urls = [f"{self.cdn_url}/cdn/{task_id}/{i}?sig=SIGNED-{i}" for i in range(len(task.files))]
        return self.apis.add(task)

    # --- what was asked ------------------------------------------------------------------------

    def requests(self, key: str | None = None, api: str | None = None) -> list[Request]:
        """API requests in arrival order, those with `key` or to `api` ("kie", "acedata:seedream"…)."""
        return [r for r in self.apis.requests
                if (key is None or r.key == key) and (api is None or r.entry == api)]

    def requests_per_key(self) -> dict[str, int]:
        """How many API requests carried each key (an unknown or missing key included)."""
        return self.apis.requests_per_key()

    def polls(self, task: FakeTask) -> int:
        """Polls of `task` the fake answered with a step (429s not counted)."""
        return task.polls

    def downloads(self, task: FakeTask) -> int:
        """Requests for `task`'s files that the CDN served."""
        return sum(n for name, n in self.apis.cdn_hits.items() if name.split("/")[0] == task.task_id)

    def _known(self, provider_type: str) -> str:
        if provider_type not in PROVIDER_TYPES:
            raise ValueError(f"no fake for provider type {provider_type!r}; one of {', '.join(PROVIDER_TYPES)}")
        return provider_type

