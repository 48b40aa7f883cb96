"""Processes seen through /proc: a process's children, whether one is still alive, the daemon's thumbnail child."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    """False once `pid` has exited, a zombie no one has reaped yet included."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def thumbnail_child(daemon: int) -> int | None:
    """The daemon's thumbnail process (archiver/thumbs/process.py), if it has one now."""
    for pid in children(daemon):
        try:
            if b"archiver.thumbs.child" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        except OSError:
            continue
    return None


async def until_gone(pid: int, within: float) -> bool:
    """Wait until `pid` has exited; False if it is still alive after `within` seconds."""
    deadline = time.monotonic() + within
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True
