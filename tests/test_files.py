"""open_off_loop: a file that opens after its caller was cancelled is closed, never leaked.
private_file: an existing state DB is never opened, so its connections keep their locks."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from archiver.files import PRIVATE_FILE, open_off_loop, private_file


def open_on(path: Path) -> int:
    """This process's descriptors open on `path`: other tests' files may close meanwhile, so count only these."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{fd}") == str(path)
    return count


async def test_a_file_opened_for_a_cancelled_caller_is_closed(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
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
            if open_on(fifo) == 1:
                break
        assert open_on(fifo) == 1, "only our writer should be open"
    finally:
        os.close(writer)


async def test_it_opens_and_raises_like_open(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"abc")
    f = await open_off_loop(tmp_path / "a", "rb")
    with f:
        assert f.read() == b"abc"
    with pytest.raises(FileNotFoundError):
        await open_off_loop(tmp_path / "missing", "rb")


# Another process asks for SQLite's exclusive lock over the SHARED byte range (unix VFS: from
# PENDING_BYTE + 2, 510 bytes), as a closing last connection does before it removes the WAL.
EXCLUSIVE = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 510, 0x40000002, 0)
except OSError:
    sys.exit(1)
"""


def test_private_file_leaves_an_open_database_and_its_locks_alone(tmp_path: Path) -> None:
    db = tmp_path / "state" / "archiver.db"
    private_file(db)
    assert (os.stat(db).st_mode & 0o777, db.stat().st_size) == (PRIVATE_FILE, 0)
    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE t (x)")
        private_file(db)  # as a second SqliteState in this process does
        held = subprocess.run([sys.executable, "-c", EXCLUSIVE, str(db)], check=False).returncode
        assert held == 1, "the open connection lost its shared lock: another process could take the WAL away"
    finally:
        conn.close()
