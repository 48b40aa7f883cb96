"""Opening files off the event loop without leaking one when the caller is cancelled; the state
folder's private modes; folders made and synced so they survive a power cut."""

from __future__ import annotations

import asyncio
import contextlib
import os
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


# The state folder holds raw provider answers (callback tokens among them): only its owner reads
# it, whatever the umask. A folder or file that exists keeps the mode it has.
PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def private_dir(folder: Path) -> None:
    """Create `folder` 0700 (missing parents as the umask says) if it does not exist."""
    folder.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)


def private_file(path: Path) -> None:
    """Create `path` empty and 0600 if it does not exist, in a private folder; SQLite then gives
    its -wal, -shm and -journal files the same mode."""
    private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_FILE)
    except FileExistsError:
        # Never open an existing database here: closing any descriptor of it drops every POSIX
        # lock this process holds on it, those of its open SQLite connections too, and a
        # connection that lost its lock can take the WAL away from under another (corruption).
        return
    os.close(fd)


def makedirs_synced(folder: Path) -> None:
    """Create missing folders, fsyncing each parent so a new folder survives a power cut."""
    missing = []
    while not folder.is_dir():
        missing.append(folder)
        folder = folder.parent
    for new in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made meanwhile by a concurrent put
            new.mkdir()
        fsync_dir(new.parent)


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
