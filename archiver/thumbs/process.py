"""The one child process that makes thumbnails (archiver/thumbs/child.py), seen from the daemon.

Decoding a large image takes tens of MiB and seconds of CPU: in a process of its own, neither lands in the
daemon's RSS or holds its GIL, and a decoder that crashes or is killed (OOM) takes only the child down.
It is started at the first thumbnail and again after a death; it exits when its stdin closes, so it
outlives the daemon (even a `kill -9` of it) by one thumbnail at most.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import archiver
from archiver.thumbs.make import NoPoster, Thumb

log = logging.getLogger(__name__)

TIMEOUT = 120.0  # seconds for one thumbnail: longer is a decoder stuck on a hostile file, and the child is killed
GRACE = 5.0  # seconds the child has to exit once its stdin is closed
MAX_BYTES = 64 * 2**20  # a thumbnail larger than this is a child gone wrong (2048 px WebP: a few MiB)
ROOT = str(Path(archiver.__file__).resolve().parent.parent)  # the child imports the same archiver as we do


class Unreadable(Exception):
    """The file cannot be read as its media kind (the child says why)."""


class ChildDied(Exception):
    """The thumbnail process died (killed, out of memory, a crash in a decoder) or stopped answering."""


class ThumbProcess:
    """One child at a time, one thumbnail at a time; `close` ends it."""

    def __init__(self, timeout: float = TIMEOUT) -> None:
        self.timeout = timeout
        self.proc: asyncio.subprocess.Process | None = None
        self.lock = asyncio.Lock()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.returncode is None else None

    async def make(self, path: Path, media: str, size: int) -> Thumb:
        """The thumbnail of `path`; raises NoPoster, Unreadable, or ChildDied (the next call starts a new child)."""
        async with self.lock:
            proc = await self._running()
            assert proc.stdin is not None and proc.stdout is not None
            job = {"path": str(path), "media": media, "size": size}
            try:
                async with asyncio.timeout(self.timeout):
                    proc.stdin.write(json.dumps(job).encode() + b"\n")
                    await proc.stdin.drain()
                    head = json.loads(await proc.stdout.readuntil(b"\n"))
                    data = await proc.stdout.readexactly(_size(head)) if head["ok"] else b""
            except asyncio.CancelledError:  # a stop: the thumbnail in hand is given up, and so is the child
                _kill(proc)
                raise
            except TimeoutError:
                await self._end(proc, kill=True)
                raise ChildDied(f"no answer in {self.timeout:.0f}s: the thumbnail process was killed") from None
            except (OSError, asyncio.IncompleteReadError) as e:  # its pipes closed: it is dying or dead
                raise ChildDied(_how(await self._end(proc, kill=False), e)) from None
            except (asyncio.LimitOverrunError, ValueError, KeyError, TypeError) as e:
                await self._end(proc, kill=True)
                raise ChildDied(f"the thumbnail process answered wrong ({e}), and was killed") from None
        if not head["ok"]:
            raise (NoPoster if head["error"] == "no_poster" else Unreadable)(head["detail"])
        return Thumb(data, head["placeholder"], head["width"], head["height"])

    async def _running(self) -> asyncio.subprocess.Process:
        if self.proc is not None and self.proc.returncode is None:
            return self.proc
        if self.proc is not None:  # it died between two thumbnails (an OOM kill picks the largest process)
            log.warning("%s, between two thumbnails; starting another", _how(await self._end(self.proc, kill=False)))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
        # -P: not the daemon's working directory on sys.path, only ROOT (and what PYTHONPATH had).
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-P", "-m", "archiver.thumbs.child", env=env,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        except OSError as e:  # no process to be had now (EAGAIN, ENOMEM): the next thumbnail tries again
            raise ChildDied(f"the thumbnail process cannot start: {e}") from None
        log.debug("thumbnail process started: pid %d", self.proc.pid)
        return self.proc

    async def close(self) -> None:
        """End the child: its stdin closed, it exits after the thumbnail in hand; killed after GRACE."""
        async with self.lock:
            if self.proc is not None:
                await self._end(self.proc, kill=False)

    async def _end(self, proc: asyncio.subprocess.Process, kill: bool) -> int:
        if proc.returncode is None:
            if kill:
                _kill(proc)
            elif proc.stdin is not None:
                proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), GRACE)
            except TimeoutError:
                _kill(proc)
        code = await proc.wait()
        if proc.stdin is not None:
            proc.stdin.close()
            with contextlib.suppress(OSError):
                await proc.stdin.wait_closed()
        self.proc = None if self.proc is proc else self.proc
        return code


def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
        proc.kill()


def _size(head: dict[str, Any]) -> int:
    size = head["bytes"]
    if not isinstance(size, int) or not 0 < size <= MAX_BYTES:
        raise ValueError(f"a thumbnail of {size!r} bytes")
    return size


def _how(code: int, error: Exception | None = None) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"the thumbnail process died of {signal.Signals(-code).name}"
    return f"the thumbnail process exited with code {code}" + (f" ({type(error).__name__})" if error else "")
