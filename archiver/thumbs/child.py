"""The thumbnail process's own main (`python -m archiver.thumbs.child`): it imports make.py and nothing of the
daemon, reads one job a line on stdin, answers each on stdout, and exits at stdin's end (the daemon gone).

A job: `{"path": …, "media": …, "size": …}`. An answer: one JSON line, then `bytes` bytes of WebP when
`ok`; else `error` is `no_poster` or `unreadable`, with `detail`. Plain JSON, never a pickle: this process
reads untrusted files, and what it says must not be able to run code in the daemon.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any, BinaryIO

from archiver.thumbs.make import NoPoster, make_thumb

DETAIL = 300  # characters of an error's text sent back


def answer(job: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    """One job's answer line and its WebP bytes (none for an error)."""
    try:
        thumb = make_thumb(Path(job["path"]), job["media"], int(job["size"]))
    except NoPoster as e:
        return {"ok": False, "error": "no_poster", "detail": str(e)[:DETAIL]}, b""
    except Exception as e:  # Pillow's and FFmpeg's many errors for a bad file (a decompression bomb, too)
        return {"ok": False, "error": "unreadable", "detail": f"{type(e).__name__}: {e}"[:DETAIL]}, b""
    return {"ok": True, "bytes": len(thumb.data), "placeholder": thumb.placeholder, "width": thumb.width,
            "height": thumb.height}, thumb.data


def serve(jobs: BinaryIO, out: BinaryIO) -> None:
    for line in jobs:
        head, data = answer(json.loads(line))
        try:
            out.write(json.dumps(head).encode() + b"\n" + data)
            out.flush()
        except BrokenPipeError:
            return  # the daemon is gone


def main() -> None:
    # Ctrl-C reaches the whole process group: the daemon stops, then closes our stdin.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Thumbnails are background work: the scheduler gives the daemon's downloads the CPU first.
    os.nice(10)
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # what a library prints goes to stderr (the daemon's log), never into the answers
    serve(sys.stdin.buffer, out)


if __name__ == "__main__":
    main()
