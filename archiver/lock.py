"""One daemon per SQLite state DB: an flock held for the daemon's life, and what `status` reads of it.

The lock file sits beside the state DB and holds the holder's pid, start time and daemon ID
as JSON. The kernel drops the lock when the process dies, however it dies, so a stale file
never blocks a start, and whoever takes the lock knows the daemon it names is gone.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from archiver.errors import AlreadyRunning
from archiver.files import PRIVATE_FILE, private_dir

TRIES = 3  # `status` holds a shared lock for an instant: a start that meets it looks again


@dataclass(frozen=True)
class Holder:
    """The running daemon, as its lock file tells."""

    pid: int
    started_at: float
    daemon: str = ""  # its ID in the state DB, once it has one


def lock_path(db: Path) -> Path:
    return db.with_name(db.name + ".lock")


class DaemonLock:
    """The exclusive lock a running daemon holds on its state DB."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.fd: int | None = None
        self.me = Holder(os.getpid(), time.time())

    def acquire(self) -> Holder | None:
        """Take the lock or raise AlreadyRunning naming the holder; returns the last holder, now gone."""
        private_dir(self.db.parent)
        fd = os.open(lock_path(self.db), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE)
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
        last = _read(fd)
        self.fd = fd
        self.name("")
        return last

    def name(self, daemon: str) -> None:
        """Write who holds the lock: this process, known in the state DB as `daemon`."""
        assert self.fd is not None
        self.me = Holder(self.me.pid, self.me.started_at, daemon)
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, json.dumps(asdict(self.me)).encode(), 0)

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
        return Holder(int(doc["pid"]), float(doc["started_at"]), str(doc.get("daemon", "")))
    except (ValueError, TypeError, KeyError):
        return None  # the holder is between truncating and writing the file
