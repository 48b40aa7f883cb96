"""Ending the daemon's asyncio jobs (its loops, polls and downloads) for sure."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import Any


async def cancel(jobs: Collection[asyncio.Task[Any]]) -> None:
    """Cancel the jobs and wait for them, cancelling again those a cancel missed.

    On Python 3.11 asyncio.wait_for (psycopg_pool waits with it) can swallow a cancel; a loop that
    lost it would run on, and the stop would wait for it forever."""
    pending = set(jobs)
    while pending:
        for job in pending:
            job.cancel()
        _, pending = await asyncio.wait(pending, timeout=1.0)
