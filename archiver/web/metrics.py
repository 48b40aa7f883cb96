"""Prometheus metrics (docs/http-api.md, metrics), in a registry of their own.

Counters and histograms are fed by the daemon through the Recorder methods; the task
gauges are read from the state DB at scrape time in a fixed number of small queries,
so a scrape costs the same at 100 or 100,000 tasks. A task ID is never a label.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from archiver import __version__
from archiver.recorder import Recorder
from archiver.state import STATE_ERRORS, StateStore

# Video-sized work: from a fast poll to a ten-minute download.
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class StateCollector(Collector):
    """archiver_tasks{state} and archiver_oldest_pending_seconds{provider}, from the state DB."""

    def __init__(self, state: StateStore, providers: Iterable[str]) -> None:
        self.state = state
        self.providers = tuple(providers)
        self.counts: dict[str, int] = {}
        self.firsts: dict[str, float | None] = {}

    async def refresh(self) -> None:
        """Read what collect() reports; prometheus_client collects synchronously."""
        self.counts = await self.state.kept_counts()
        self.firsts = {provider: await self.state.oldest_pending(provider) for provider in self.providers}

    def collect(self) -> Iterator[Metric]:
        tasks = GaugeMetricFamily("archiver_tasks", "Tasks in the state DB, by state.", labels=["state"])
        for state, count in self.counts.items():
            tasks.add_metric([state], count)
        yield tasks
        oldest = GaugeMetricFamily("archiver_oldest_pending_seconds",
                                   "Age of the oldest unfinished task, by provider entry.", labels=["provider"])
        now = time.time()
        for provider, first in self.firsts.items():
            oldest.add_metric([provider], 0.0 if first is None else max(0.0, now - first))
        yield oldest
        yield InfoMetricFamily("archiver_build", "The running archiver.", value={"version": __version__})


class Metrics(Recorder):
    """The Recorder that counts, and renders the Prometheus text."""

    def __init__(self, state: StateStore, providers: Iterable[str]) -> None:
        disable_created_metrics()  # *_created series double the scrape and no dashboard reads them
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = StateCollector(state, providers)
        self.registry.register(self.collector)
        r = self.registry
        self._finished = Counter("archiver_tasks_finished", "Tasks that ended, by outcome (archived or a reason).",
                                 ["provider", "outcome"], registry=r)
        self._polls = Counter("archiver_polls", "Task polls, by what the provider said.", ["provider", "result"],
                              registry=r)
        self._poll_seconds = Histogram("archiver_poll_duration_seconds", "One status request to the provider.",
                                       ["provider"], buckets=BUCKETS, registry=r)
        self._downloads = Counter("archiver_downloads", "Download attempts, by result (ok, retry, failed).",
                                  ["result"], registry=r)
        self._bytes = Counter("archiver_download_bytes", "Bytes downloaded and archived.", registry=r)
        self._download_seconds = Histogram("archiver_download_duration_seconds", "One download, start to end.",
                                           buckets=BUCKETS, registry=r)
        self._latency = Histogram("archiver_success_to_archived_seconds",
                                  "From success seen to the task's last asset archived.", buckets=BUCKETS, registry=r)
        self._writes = Counter("archiver_storage_writes", "Writes to the store, by result (ok, failed).",
                               ["result"], registry=r)
        self._lines = Counter("archiver_inbox_lines", "Inbox lines read, by result (queued, known, rejected).",
                              ["result"], registry=r)

    async def render(self) -> bytes:
        """The Prometheus text; the task gauges are read fresh, and kept as they were if the DB is down."""
        with contextlib.suppress(*STATE_ERRORS):
            await self.collector.refresh()
        return generate_latest(self.registry)

    def poll(self, provider: str, result: str, tasks: int = 1) -> None:
        self._polls.labels(provider, result).inc(tasks)

    def poll_took(self, provider: str, seconds: float) -> None:
        self._poll_seconds.labels(provider).observe(seconds)

    def finished(self, provider: str, outcome: str) -> None:
        self._finished.labels(provider, outcome).inc()

    def download(self, result: str, size: int = 0, seconds: float | None = None) -> None:
        self._downloads.labels(result).inc()
        if size:
            self._bytes.inc(size)
        if seconds is not None:
            self._download_seconds.observe(seconds)

    def stored(self, result: str) -> None:
        self._writes.labels(result).inc()

    def inbox_lines(self, result: str, count: int) -> None:
        if count:
            self._lines.labels(result).inc(count)

    def success_to_archived(self, seconds: float) -> None:
        self._latency.observe(seconds)
