"""glibc malloc settings for the daemon, made by the process itself (bench and users start it
directly, not only through the systemd unit)."""

from __future__ import annotations

import ctypes
import logging
import os
import sys

log = logging.getLogger(__name__)

# mallopt(3) parameters, from glibc's malloc.h.
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

ARENA_MAX = 2
MMAP_THRESHOLD = 256 * 1024


def tune() -> None:
    """At most 2 arenas, and blocks from 256 KiB always mmap'd (so returned when freed).

    Without this every worker thread gets an arena of its own, and glibc's mmap threshold
    rises to the largest block freed so far: botocore's 1 MiB payload-hash reads and our
    download batches then stay in those arenas after use. In scenario 4 (S3) peak RSS fell
    by 13 MiB. An explicit MALLOC_ARENA_MAX or MALLOC_MMAP_THRESHOLD_ in the environment wins.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt  # glibc; musl and others have none
    except (OSError, AttributeError):
        return
    for name, param, value in (("MALLOC_ARENA_MAX", M_ARENA_MAX, ARENA_MAX),
                               ("MALLOC_MMAP_THRESHOLD_", M_MMAP_THRESHOLD, MMAP_THRESHOLD)):
        if name not in os.environ and not mallopt(param, value):
            log.debug("mallopt(%d, %d) refused", param, value)
