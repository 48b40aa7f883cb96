"""open_off_loop: a file that opens after its caller was cancelled is closed, never leaked."""

from __future__ import annotations

import asyncio
import gc
import os
from pathlib import Path

import pytest

from archiver.files import open_off_loop


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_a_file_opened_for_a_cancelled_caller_is_closed(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    before = open_fds()
    job = asyncio.create_task(open_off_loop(fifo, "rb"))
    await asyncio.sleep(0.1)  # its thread now waits in open() for a writer
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    writer = os.open(fifo, os.O_WRONLY)  # the thread's open() returns now, for nobody
    try:
        for _ in range(200):
            await asyncio.sleep(0.01)
            gc.collect()  # a leaked file object would warn here (filterwarnings = error)
            if open_fds() == before + 1:
                break
        assert open_fds() == before + 1, "only our writer should be open"
    finally:
        os.close(writer)


async def test_it_opens_and_raises_like_open(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"abc")
    f = await open_off_loop(tmp_path / "a", "rb")
    with f:
        assert f.read() == b"abc"
    with pytest.raises(FileNotFoundError):
        await open_off_loop(tmp_path / "missing", "rb")
