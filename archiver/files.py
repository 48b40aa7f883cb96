"""Opening files off the event loop without leaking one when the caller is cancelled."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, cast

Opener = Callable[[str, int], int]


async def open_off_loop(path: Path | str, mode: str, opener: Opener | None = None) -> BinaryIO:
    """open() in binary `mode` (with open()'s `opener`) in a thread; a file that opens after its
    caller was cancelled is closed, not leaked."""
    job = asyncio.ensure_future(asyncio.to_thread(_open, path, mode, opener))
    try:
        return await asyncio.shield(job)
    except asyncio.CancelledError:
        job.add_done_callback(_close_opened)
        raise


def _open(path: Path | str, mode: str, opener: Opener | None) -> BinaryIO:
    assert "b" in mode
    return cast(BinaryIO, open(path, mode, opener=opener))  # noqa: SIM115 - the caller closes it


def _close_opened(job: asyncio.Future[BinaryIO]) -> None:
    if not job.cancelled() and job.exception() is None:
        job.result().close()
