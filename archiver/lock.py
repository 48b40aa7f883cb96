"""One daemon per SQLite state DB: an flock held for the daemon's life, and what `status` reads of it.

The lock file sits beside the state DB and holds the holder's pid and start time as JSON.
The kernel drops the lock when the process dies, however it dies, so a stale file never
blocks a start.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from archiver.errors import AlreadyRunning

TRIES = 3  # `status` holds a shared lock for an instant: a start that meets it looks again


@dataclass(frozen=True)
class Holder:
    """The running daemon, as its lock file tells."""

    pid: int
    started_at: float


def lock_path(db: Path) -> Path:
    return db.with_name(db.name + ".lock")


class DaemonLock:
    """The exclusive lock a running daemon holds on its state DB."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.fd: int | None = None

    def acquire(self) -> Holder:
        """Take the lock or raise AlreadyRunning naming the holder."""
        self.db.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path(self.db), os.O_RDWR | os.O_CREAT, 0o644)
        for attempt in range(TRIES):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt == TRIES - 1:
                    holder = _read(fd)
                    os.close(fd)
                    pid = holder.pid if holder else "?"
                    raise AlreadyRunning(f"another archiver (pid {pid}) is running on {self.db}") from None
                time.sleep(0.1)
        me = Holder(os.getpid(), time.time())
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": me.pid, "started_at": me.started_at}).encode(), 0)
        self.fd = fd
        return me

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the last descriptor drops the flock
            self.fd = None


def running(db: Path) -> Holder | None:
    """The daemon that holds the lock on `db`, or None when none runs."""
    try:
        fd = os.open(lock_path(db), os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read(fd) or Holder(0, 0.0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read(fd: int) -> Holder | None:
    try:
        doc = json.loads(os.pread(fd, 4096, 0) or b"null")
        return Holder(int(doc["pid"]), float(doc["started_at"]))
    except (ValueError, TypeError, KeyError):
        return None  # the holder is between truncating and writing the file
