"""What the daemon tells its metrics: a no-op base, overridden by archiver.web.metrics.

The daemon always holds a Recorder, so the code that counts never asks whether the
HTTP server is on; prometheus_client is imported only when it is.
"""

from __future__ import annotations


class Recorder:
    """Every event /metrics counts (docs/http-api.md, metrics); the base records nothing."""

    def poll(self, provider: str, result: str, tasks: int = 1) -> None:
        """`tasks` polls answered with `result` (running, succeeded, failed, not_found, or a trouble)."""

    def poll_took(self, provider: str, seconds: float) -> None:
        """One request to the provider's status endpoint took `seconds`."""

    def finished(self, provider: str, outcome: str) -> None:
        """A task ended: `archived` or its reason word."""

    def download(self, result: str, size: int = 0, seconds: float | None = None) -> None:
        """One download attempt ended: `ok`, `retry` or `failed`."""

    def stored(self, result: str) -> None:
        """One write to the store: `ok` or `failed`."""

    def inbox_lines(self, result: str, count: int) -> None:
        """Inbox lines read: `queued`, `known` or `rejected`."""

    def success_to_archived(self, seconds: float) -> None:
        """From success seen to the task's last asset archived."""
