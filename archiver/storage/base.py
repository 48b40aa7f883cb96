"""The Storage plug point: a few primitives every backend offers, errors as builtins.

A key is a relative POSIX path ("provider/2026/11/22/abc/00.png"). `put_file` and
`put_bytes` are atomic: after a crash a key holds the old object, the new one, or
nothing, never a part. Writing the same key twice leaves one object. A missing key
raises FileNotFoundError; a failing store raises StorageUnavailable or DiskFull.

With `if_absent=True` a put writes only where no object exists yet, else it raises
AlreadyStored and leaves the object (and `source`) as they were: S3's `If-None-Match: *`,
a hard link on local disk. A store that cannot do either falls back to check-then-write.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class ObjectInfo:
    """`sha256` is the digest we stored beside the object (S3 metadata), or None.

    `checksum` is the store's own SHA-256 of the whole object (S3 single-part uploads), and
    `content_type` the stored type (local: from the extension).
    """

    size: int
    sha256: str | None = None
    content_type: str | None = None
    checksum: str | None = None


@dataclass(frozen=True)
class Listed:
    """One object found by `Storage.list`; `modified` is Unix seconds."""

    key: str
    size: int
    modified: float


STALE_SHARED = 86400.0  # with other daemons writing, a temp file or upload this old is a crash's litter


class Storage(Protocol):
    """Where assets and sidecars end up."""

    async def put_file(self, key: str, source: Path, *, content_type: str, sha256: str,
                       if_absent: bool = False, sync_folder: bool = True) -> None:
        """Store the file at `source` under `key`; `source` may be moved there (local disk).

        `sync_folder=False`: the caller writes another key into the same folder next, whose
        write makes both names durable (local disk fsyncs the folder once, not twice)."""

    async def put_bytes(self, key: str, data: bytes, *, content_type: str, if_absent: bool = False) -> None:
        """Store small content (a sidecar, a _failed record) under `key`."""

    async def get(self, key: str) -> bytes: ...

    async def exists(self, key: str) -> bool: ...

    async def stat(self, key: str) -> ObjectInfo: ...

    def list(self, prefix: str = "") -> AsyncIterator[Listed]:
        """Every object whose key starts with `prefix`, in no promised order; never a folder."""
        ...

    def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncGenerator[bytes, None]:
        """The bytes of `key` from `start` up to `end` (exclusive), in chunks of bounded size.

        FileNotFoundError is raised before the first chunk, so a server can still answer 404.
        """
        ...

    async def start(self, *, shared: bool = False) -> None:
        """Prepare the store once at daemon start (create the root, clean stale uploads).

        `shared`: other daemons write here too, so only leftovers older than STALE_SHARED go."""

    async def close(self) -> None: ...
