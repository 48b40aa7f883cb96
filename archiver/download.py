"""Fetch one result URL into staging: streamed, hashed on the way, length-checked, resumable.

Redirects are followed here, hop by hop, so the URL guard judges every hop. A partial
download is kept as `<dest>` with its validator (ETag / Last-Modified) in a resume note
beside it (staging.py names both); the next attempt asks for the rest with Range + If-Range,
and starts over when the server ignores Range, the entity changed (If-Range failed, or a
206 names another validator) or a 206 starts elsewhere, so two versions are never spliced
together. A permanent failure leaves nothing in staging.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urljoin, urlsplit

import aiohttp
from tenacity import retry_if_exception_type, retry_if_not_exception_type

from archiver.files import open_off_loop
from archiver.errors import (DiskFull, DownloadFailed, DownloadInterrupted, PermanentError, TooLarge,
                             TransientError, UrlExpired)
from archiver.pacing import retry_after
from archiver.retry import Backoff
from archiver.staging import discard, resume_note
from archiver.urlguard import unsafe_from

log = logging.getLogger(__name__)

# A batch waits for a free executor thread, which other work shares: at scenario 4's peak
# (S3) batches of 1 MiB held 7-9 MiB; with 256 KiB the daemon's peak RSS is 3-6 MiB lower.
CHUNK = 256 * 1024
MAX_REDIRECTS = 5
HEAD_BYTES = 32


def redact(url: str) -> str:
    """The URL without query or fragment: signed URLs carry their secret there.

    Of a data: URI only its header is kept (`data:image/png;base64`), never the payload.
    """
    if url.startswith("data:"):
        return url.split(",", 1)[0][:200]
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    try:
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:  # a port that is not a number: the message still names the host
        port = ""
    # No user:password@ either: only where the file was asked for.
    return f"{parts.scheme}://{host}{port}{parts.path}"


@dataclass(frozen=True)
class Fetched:
    path: Path
    size: int
    sha256: str
    content_type: str | None
    head: bytes


class _Resume:
    """What the partial file at `dest` holds and how to ask for the rest of it."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self.meta = resume_note(dest)

    def load(self) -> tuple[int, str | None]:
        try:
            validator = json.loads(self.meta.read_text())["validator"]
            # Without a validator nothing proves the next response is of the same version.
            return (self.dest.stat().st_size, validator) if validator else (0, None)
        except (OSError, ValueError, KeyError, TypeError):
            return 0, None

    def save(self, validator: str | None) -> None:
        self.meta.write_text(json.dumps({"validator": validator}))

    def clear(self) -> None:
        self.meta.unlink(missing_ok=True)

    def discard(self) -> None:
        """Forget the partial: the next attempt starts from zero."""
        discard(self.dest)


class Downloader:
    """Downloads with bounded retries; `check_url` is the guard applied to every hop."""

    def __init__(self, session: aiohttp.ClientSession, *, max_bytes: int, per_host: int,
                 check_url: Callable[[str], None] = lambda url: None, attempts: int = 6,
                 max_wait: float = 30.0) -> None:
        self.session = session
        self.max_bytes = max_bytes
        self.per_host = per_host
        self.check_url = check_url
        self.attempts = attempts
        # 0.5 s, 1 s, 2 s… plus up to 1 s of jitter; a Retry-After is honoured up to max_wait.
        self.backoff = Backoff(first=0.5, most=max_wait)
        self.hosts: dict[str, asyncio.Semaphore] = {}

    async def fetch(self, url: str, dest: Path) -> Fetched:
        """Download `url` to `dest`; raises PermanentError, or TransientError once retries run out."""
        # A full disk is not retried here: the caller pauses every download until space returns.
        retry = retry_if_exception_type(TransientError) & retry_if_not_exception_type(DiskFull)
        try:
            async for attempt in self.backoff.retrying(retry, self.attempts):
                with attempt:
                    return await self._attempt(url, dest)
        except PermanentError:
            # Nothing of a download that cannot succeed is worth keeping in staging.
            await asyncio.to_thread(discard, dest)
            raise
        raise AssertionError("unreachable: tenacity reraises the last error")

    async def _attempt(self, url: str, dest: Path) -> Fetched:
        resume = _Resume(dest)
        have, validator = await asyncio.to_thread(resume.load)
        headers = {"Accept-Encoding": "identity"}
        if have and validator:
            headers |= {"Range": f"bytes={have}-", "If-Range": validator}
        host = urlsplit(url).hostname or ""
        sem = self.hosts.setdefault(host, asyncio.Semaphore(self.per_host))
        async with sem:
            resp = await self._open(url, headers)
            try:
                return await self._receive(resp, url, resume, have, validator)
            except OSError as e:  # network errors were mapped already: this is staging
                if e.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise DiskFull(f"staging {dest.parent}: {e.strerror}") from None
                raise
            finally:
                resp.release()

    async def _open(self, url: str, headers: dict[str, str]) -> aiohttp.ClientResponse:
        """GET with redirects followed here, each hop checked by the guard."""
        for _ in range(MAX_REDIRECTS + 1):
            self.check_url(url)
            try:
                resp = await self.session.get(url, headers=headers, allow_redirects=False)
            except (TimeoutError, aiohttp.ClientError, OSError) as e:
                if (unsafe := unsafe_from(e)) is not None:
                    raise unsafe from None
                raise DownloadInterrupted(f"{redact(url)}: {type(e).__name__}") from None
            if resp.status not in (301, 302, 303, 307, 308):
                return resp
            location = resp.headers.get("Location")
            resp.release()
            if not location:
                raise DownloadFailed(f"{redact(url)}: redirect without a Location")
            url = urljoin(url, location)
        raise DownloadFailed(f"more than {MAX_REDIRECTS} redirects")

    async def _receive(self, resp: aiohttp.ClientResponse, url: str, resume: _Resume, have: int,
                       asked: str | None) -> Fetched:
        where, dest = redact(url), resume.dest
        if resp.status in (403, 404, 410):
            raise UrlExpired(f"{where}: HTTP {resp.status}")
        if resp.status == 429 or resp.status >= 500:
            raise DownloadInterrupted(f"{where}: HTTP {resp.status}", retry_after(resp.headers))
        validator = resp.headers.get("ETag") or resp.headers.get("Last-Modified")
        start = _range_start(resp) if resp.status == 206 else None
        if have and start == have and validator in (None, asked):
            total = _range_total(resp)
            hasher = await asyncio.to_thread(_hash_file, dest)
            append, size = True, have
        elif resp.status == 200 or start == 0:
            # Range ignored, or the entity changed (If-Range failed): start from zero.
            total = resp.content_length if resp.status == 200 else _range_total(resp)
            hasher, append, size = hashlib.sha256(), False, 0
        elif have and resp.status in (206, 416):
            # Bytes from elsewhere, of another version (a server ignoring If-Range), or none
            # left to send: appending could splice two versions, so the next try starts over.
            await asyncio.to_thread(resume.discard)
            raise DownloadInterrupted(f"{where}: HTTP {resp.status} to a resume from {have}; starting over")
        else:
            raise DownloadFailed(f"{where}: unexpected HTTP {resp.status}")
        if total is not None and total > self.max_bytes:
            raise TooLarge(f"{where}: {total} bytes is over download.max_bytes ({self.max_bytes})")
        await asyncio.to_thread(resume.save, validator)
        size = await self._stream(resp, dest, append, size, hasher, where)
        if total is not None and size != total:
            raise DownloadInterrupted(f"{where}: body ended at {size} of {total} bytes")
        head = await asyncio.to_thread(_finish, resume)
        return Fetched(dest, size, hasher.hexdigest(), resp.headers.get("Content-Type"), head)

    async def _stream(self, resp: aiohttp.ClientResponse, dest: Path, append: bool, size: int,
                      hasher: Any, where: str) -> int:
        """Receive on the loop; hash and write in a thread, a batch of about CHUNK at a time.

        hashlib releases the GIL, so hashing leaves the event loop, and a thread hop per
        batch instead of per network chunk keeps the loop free for other downloads.
        """
        file = await open_off_loop(dest, "ab" if append else "wb")
        batch: list[bytes] = []
        pending = 0
        try:
            async for chunk in resp.content.iter_any():
                size += len(chunk)
                if size > self.max_bytes:
                    raise TooLarge(f"{where}: more than download.max_bytes ({self.max_bytes})")
                batch.append(chunk)
                pending += len(chunk)
                if pending >= CHUNK:
                    await asyncio.to_thread(_absorb, file, hasher, batch)
                    batch, pending = [], 0
        except (TimeoutError, aiohttp.ClientError, ConnectionError) as e:
            raise DownloadInterrupted(f"{where}: {type(e).__name__} after {size} bytes") from None
        finally:
            # What arrived is kept even when the body broke off: the next try resumes after it.
            await asyncio.to_thread(_absorb, file, hasher, batch, close=True)
        return size


def _absorb(file: BinaryIO, hasher: Any, chunks: list[bytes], close: bool = False) -> None:
    try:
        for chunk in chunks:
            hasher.update(chunk)
            file.write(chunk)
    finally:
        if close:
            file.close()


def _finish(resume: _Resume) -> bytes:
    """The complete file's first bytes (to tell its type); its resume note goes. One thread hop."""
    head = _head(resume.dest)
    resume.clear()
    return head


def _range_start(resp: aiohttp.ClientResponse) -> int | None:
    value = resp.headers.get("Content-Range", "")
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def _range_total(resp: aiohttp.ClientResponse) -> int | None:
    value = resp.headers.get("Content-Range", "")
    total = value.rpartition("/")[2]
    return int(total) if total.isdigit() else None


def _head(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(HEAD_BYTES)


def _hash_file(path: Path) -> Any:
    hasher = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            hasher.update(block)
    return hasher

