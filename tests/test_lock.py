"""The daemon's lock on its state DB (archiver/lock.py): one holder, and who held it last."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from archiver.errors import AlreadyRunning
from archiver.lock import DaemonLock, running


def test_the_next_holder_learns_the_daemon_id_the_last_one_wrote(tmp_path: Path) -> None:
    db = tmp_path / "archiver.db"
    first = DaemonLock(db)
    assert first.acquire() is None, "a fresh state_dir has had no holder"
    first.name("host:1:abc")
    holder = running(db)
    assert holder is not None and (holder.pid, holder.daemon) == (os.getpid(), "host:1:abc")
    with pytest.raises(AlreadyRunning, match=f"pid {os.getpid()}"):
        DaemonLock(db).acquire()
    first.release()
    assert running(db) is None
    second = DaemonLock(db)
    last = second.acquire()
    assert last is not None and last.daemon == "host:1:abc"
    second.release()
