"""Storage in a local folder: each write goes to a temp file, is fsynced, then renamed.

A write with `if_absent` publishes its temp file with a hard link instead, which fails
when the name exists; a file system without hard links gets check-then-rename.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import itertools
import logging
import os
import re
import secrets
import stat
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from archiver.archive_format.keys import TEMP_NAME, check_key, temp_name
from archiver.archive_format.media import content_type_of_key
from archiver.errors import AlreadyStored, DiskFull, StorageUnavailable
from archiver.files import fsync_dir, makedirs_synced, open_off_loop
from archiver.storage.base import STALE_SHARED, Listed, ObjectInfo

log = logging.getLogger(__name__)

_CHUNK = 1024 * 1024
_READ_CHUNK = 256 * 1024
_LIST_BATCH = 2000  # listed objects per thread hop
# A full quota is a full disk to us: both pause downloads until space is freed.
_FULL = {errno.ENOSPC, errno.EDQUOT}
# What link() answers on a file system without hard links (FAT, some FUSE and SMB mounts).
_NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.ENOSYS, errno.EMLINK}
# In the root: the archive's ID, so that daemons sharing it can prove they see the same folder.
MARKER = ".archiver-root"
_MARKER_ID = re.compile(r"[0-9a-f]{32}")
# Reads go down the tree one folder at a time and refuse a symlink at every step.
_DIR_NOFOLLOW = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_NOFOLLOW = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class LocalStorage:
    """Keys are files under `root`. Blocking work runs in a thread, one hop per call.

    `stat` reports the size only (sha256 None): hashing a stored video on every stat would
    cost a full read, and the sidecar already records the digest.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._links = True  # until link() is refused once: then check-then-rename

    def _path(self, key: str) -> Path:
        if key == MARKER:
            raise ValueError(f"storage key {key!r}: the name of the archive's marker file")
        return self.root.joinpath(*check_key(key))

    async def put_file(self, key: str, source: Path, *, content_type: str, sha256: str,
                       if_absent: bool = False, sync_folder: bool = True) -> None:
        """Move `source` to `key` (copy and verify it when it lives on another file system).

        On AlreadyStored `source` stays where it was.
        """
        path = self._path(key)
        await asyncio.to_thread(self._put_file, key, path, Path(source), sha256.lower(), if_absent, sync_folder)

    def _put_file(self, key: str, path: Path, source: Path, sha256: str, if_absent: bool,
                  sync_folder: bool) -> None:
        tmp = path.with_name(temp_name(path.name))
        try:
            makedirs_synced(path.parent)
            # Same file system: the staged bytes, hashed as they arrived, move into place
            # instead of being written, read and hashed a second time.
            os.rename(source, tmp)
        except FileNotFoundError:
            raise  # the staging file is missing: the caller's problem, not the archive's
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise write_error(e, key, self.root) from e
            self._copy(key, path, source, sha256, if_absent)
            return
        try:
            fd = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            # Publish last: a final name never holds a partial file.
            self._publish(key, tmp, path, if_absent)
            if sync_folder:
                fsync_dir(path.parent)
        except AlreadyStored:
            # The staged file goes back: the caller still holds what it downloaded.
            try:
                os.rename(tmp, source)
            except OSError:
                with contextlib.suppress(OSError):
                    tmp.unlink(missing_ok=True)
            raise
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise write_error(e, key, self.root) from e

    def _publish(self, key: str, tmp: Path, path: Path, if_absent: bool) -> None:
        """Give the fsynced `tmp` its final name; with `if_absent` only if that name is free."""
        if not if_absent:
            os.replace(tmp, path)
            return
        if self._links:
            try:
                os.link(tmp, path)  # atomic: fails with EEXIST whoever got there first
            except FileExistsError:
                raise self._already(key) from None
            except OSError as e:
                if e.errno not in _NO_LINKS:
                    raise
                self._links = False
                log.warning("local archive %s: the file system refuses hard links (%s); writes that "
                            "must not replace an object check first, then rename, which two "
                            "daemons racing on one key can both pass", self.root, e.strerror or e)
            else:
                os.unlink(tmp)
                return
        if os.path.lexists(path):
            raise self._already(key)
        os.replace(tmp, path)

    def _already(self, key: str) -> AlreadyStored:
        return AlreadyStored(f"local archive {self.root}: {key!r} already holds a file; it was "
                             "left as it is", key)

    def _copy(self, key: str, path: Path, source: Path, sha256: str, if_absent: bool) -> None:
        """Staging on another disk: copy, hashing the copy as written; it must match `sha256`."""
        with open(source, "rb") as src:

            def fill(dst: BinaryIO) -> None:
                digest = hashlib.sha256()
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    dst.write(chunk)
                if digest.hexdigest() != sha256:
                    raise StorageUnavailable(
                        f"local archive: copy of {source} for {key!r} has sha256 "
                        f"{digest.hexdigest()}, expected {sha256}; the staging file changed"
                    )

            self._write(key, path, fill, if_absent)
        source.unlink(missing_ok=True)

    async def put_bytes(self, key: str, data: bytes, *, content_type: str, if_absent: bool = False) -> None:
        path = self._path(key)
        await asyncio.to_thread(self._write, key, path, lambda dst: dst.write(data), if_absent)

    def _write(self, key: str, path: Path, fill: Callable[[BinaryIO], object], if_absent: bool) -> None:
        tmp = path.with_name(temp_name(path.name))
        try:
            makedirs_synced(path.parent)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
            try:
                with open(fd, "wb") as dst:
                    fill(dst)
                    dst.flush()
                    os.fsync(dst.fileno())
                # Publish last: a final name never holds a partial file, and until this line
                # the key keeps its old content whole.
                self._publish(key, tmp, path, if_absent)
            except BaseException:
                with contextlib.suppress(OSError):
                    tmp.unlink(missing_ok=True)
                raise
            # The rename survives a power cut only once the folder's entry is on disk.
            fsync_dir(path.parent)
        except OSError as e:
            raise write_error(e, key, self.root) from e

    def _open_object(self, key: str) -> int:
        """A read-only descriptor on the regular file `key`, reached without following a symlink
        anywhere below the root: a link planted in the archive (to /etc/passwd, to the state
        folder) is no object, so serve, verify and the index never read through one.

        The marker file is no object either. Missing, a folder, a FIFO: FileNotFoundError.
        """
        parts = check_key(key)
        if key == MARKER:
            raise _missing(key)
        # The root itself may be a symlink (a mount elsewhere): that one the admin chose.
        try:
            folder = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            raise _missing(key) from None
        except OSError as e:
            raise _read_error(e, key, self.root) from e
        try:
            for part in parts[:-1]:
                inner = os.open(part, _DIR_NOFOLLOW, dir_fd=folder)
                os.close(folder)
                folder = inner
            # O_NONBLOCK: opening a FIFO must not hang; a regular file ignores it.
            fd = os.open(parts[-1], _FILE_NOFOLLOW, dir_fd=folder)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise _missing(key) from None
        except OSError as e:
            if e.errno == errno.ELOOP:  # a symlink where O_NOFOLLOW met it
                raise _missing(key) from None
            raise _read_error(e, key, self.root) from e
        finally:
            os.close(folder)
        try:
            mode = os.fstat(fd).st_mode
        except OSError as e:
            os.close(fd)
            raise _read_error(e, key, self.root) from e
        if not stat.S_ISREG(mode):  # a folder is not an object, as on S3
            os.close(fd)
            raise _missing(key)
        return fd

    async def get(self, key: str) -> bytes:
        return await asyncio.to_thread(self._read, key)

    def _read(self, key: str) -> bytes:
        with open(self._open_object(key), "rb") as f:
            try:
                return f.read()
            except OSError as e:
                raise _read_error(e, key, self.root) from e

    async def exists(self, key: str) -> bool:
        try:
            await self.stat(key)
        except FileNotFoundError:
            return False
        return True

    async def stat(self, key: str) -> ObjectInfo:
        return await asyncio.to_thread(self._stat, key)

    def _stat(self, key: str) -> ObjectInfo:
        fd = self._open_object(key)
        try:
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        return ObjectInfo(size=size, content_type=content_type_of_key(key))

    async def list(self, prefix: str = "") -> AsyncIterator[Listed]:
        """Walk the folder that holds `prefix`, a batch of entries per thread hop."""
        folder = self.root.joinpath(*check_key(prefix.rpartition("/")[0])) if "/" in prefix else self.root
        walker = self._walk(folder, prefix)
        while batch := await asyncio.to_thread(lambda: list(itertools.islice(walker, _LIST_BATCH))):
            for item in batch:
                yield item

    def _walk(self, folder: Path, prefix: str) -> Iterator[Listed]:
        """os.walk descends no symlinked folder; lstat lists no symlinked file; and a prefix
        whose folder is reached through a symlink lists nothing, as reads find nothing there."""
        if folder != self.root:
            real_root = os.path.realpath(self.root)
            if os.path.realpath(folder) != os.path.join(real_root, os.path.relpath(folder, self.root)):
                return
        for path, _, files in os.walk(folder):
            for name in files:
                full = os.path.join(path, name)
                key = os.path.relpath(full, self.root).replace(os.sep, "/")
                if TEMP_NAME.fullmatch(name) or key == MARKER or not key.startswith(prefix):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    st = os.lstat(full)
                    if stat.S_ISREG(st.st_mode):
                        yield Listed(key, st.st_size, st.st_mtime)

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncGenerator[bytes, None]:
        check_key(key)
        f = await open_off_loop(key, "rb", opener=lambda _key, _flags: self._open_object(key))
        try:
            await asyncio.to_thread(f.seek, start)
            left = None if end is None else max(0, end - start)
            while left is None or left > 0:
                want = _READ_CHUNK if left is None else min(_READ_CHUNK, left)
                chunk = await asyncio.to_thread(f.read, want)
                if not chunk:
                    return
                if left is not None:
                    left -= len(chunk)
                yield chunk
        except OSError as e:
            raise _read_error(e, key, self.root) from e
        finally:
            f.close()

    async def start(self, *, shared: bool = False) -> None:
        """Create the root and delete temp files a crash left behind (one walk of the tree);
        with other daemons writing here (shared), only those older than STALE_SHARED."""
        await asyncio.to_thread(self._start, time.time() - STALE_SHARED if shared else float("inf"))

    def _start(self, before: float) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise write_error(e, "", self.root) from e
        removed = 0
        for folder, _, files in os.walk(self.root):
            for name in files:
                path = os.path.join(folder, name)
                if TEMP_NAME.fullmatch(name):
                    with contextlib.suppress(FileNotFoundError):
                        if os.stat(path).st_mtime < before:
                            os.unlink(path)
                            removed += 1
        if removed:
            log.info("removed %d stale temp file(s) under %s", removed, self.root)

    async def close(self) -> None:
        return None


def root_id(root: Path) -> str:
    """The archive's ID in `<root>/.archiver-root`, made (32 random hex digits) if missing.

    Daemons that share a local archive compare it: equal IDs prove one shared folder.
    Of processes racing to make it, O_EXCL lets one write; the others read its ID.
    """
    root = Path(root)
    marker = root / MARKER
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    except FileExistsError:
        if not root.is_dir():
            raise write_error(NotADirectoryError(errno.ENOTDIR, "not a folder"), MARKER, root) from None
        return _read_marker(marker)
    except OSError as e:
        raise write_error(e, MARKER, root) from e
    new = secrets.token_hex(16)
    try:
        with open(fd, "w") as f:
            f.write(new + "\n")
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(root)
    except OSError as e:
        with contextlib.suppress(OSError):
            marker.unlink()  # an empty marker would stop every daemon; the next try makes it anew
        raise write_error(e, MARKER, root) from e
    return new


def _read_marker(marker: Path, wait: float = 2.0) -> str:
    """The ID in an existing marker; its maker may not have written it yet, so wait a little."""
    deadline = time.monotonic() + wait
    while True:
        try:
            text = marker.read_text(errors="replace").strip()
        except OSError as e:
            raise _read_error(e, MARKER, marker.parent) from e
        if _MARKER_ID.fullmatch(text):
            return text
        if time.monotonic() > deadline:
            raise StorageUnavailable(
                f"local archive {marker.parent}: {MARKER} holds no archive ID ({text[:40]!r}); "
                "stop every daemon on this archive, delete that file and start again")
        time.sleep(0.01)


def _missing(key: str) -> FileNotFoundError:
    return FileNotFoundError(errno.ENOENT, "no such key in the archive", key)


def write_error(e: OSError, key: str, root: Path) -> DiskFull | StorageUnavailable:
    """ENOSPC/EDQUOT → DiskFull; any other OSError → StorageUnavailable, saying what to check."""
    reason = e.strerror or str(e)
    if e.errno in _FULL:
        return DiskFull(f"local archive {root}: no space left writing {key!r} ({reason}); "
                        "free space on that disk or move storage.local.root")
    return StorageUnavailable(f"local archive {root}: cannot write {key!r} ({reason}); check "
                              "that the folder is mounted, writable and not a file")


def _read_error(e: OSError, key: str, root: Path) -> StorageUnavailable:
    return StorageUnavailable(f"local archive {root}: cannot read {key!r} ({e.strerror or e}); "
                              "check that the disk is mounted and readable")

