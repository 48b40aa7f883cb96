"""Storage in an S3 bucket or an S3-compatible store: S3's REST calls sent with aiohttp.

The requests, their SigV4 signatures and retries are in s3rest.py; botocore is imported only
for credentials that are not in the environment (files, SSO, instance metadata…). Its client,
models and signer cost a daemon about 20 MiB, over issue 14's 64 MiB (bench/RESULTS.md).

Errors stop here: a missing key becomes FileNotFoundError, a failed `If-None-Match: *`
AlreadyStored, and anything else StorageUnavailable, once our own retries have given up.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import errno
import hashlib
import logging
import os
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote_plus

from tenacity import retry_if_exception_type

from archiver.archive_format.keys import check_key
from archiver.config import S3Config
from archiver.errors import AlreadyStored, ConfigError, StorageUnavailable
from archiver.retry import Backoff
from archiver.storage.base import STALE_SHARED, Listed, ObjectInfo
from archiver.storage.s3rest import NETWORK_ERRORS, Body, Client, Reply, S3Error, Unreachable, find, find_all, text

log = logging.getLogger(__name__)
T = TypeVar("T")

MULTIPART_THRESHOLD = 64 * 1024**2
PART_SIZE = 16 * 1024**2
_MISSING = {"404", "NoSuchKey", "NotFound"}
# How a store without conditional writes answers `If-None-Match: *` (when it does not ignore it).
_NO_CONDITIONAL = {"NotImplemented", "NotSupported"}
CONFLICTS = Backoff(first=0.05, most=2.0, jitter=0.1)  # a 409's retries: 0.05 s, 0.1 s, 0.2 s… 2 s, +0-0.1 s
_READ_CHUNK = 256 * 1024  # what one streamed read holds in memory, whatever the object's size
# Stores (or credentials) that cannot list multipart uploads: start() skips the cleanup.
_NO_LISTING = {"NotImplemented", "AccessDenied", "MethodNotAllowed"}


class S3Storage:
    """Keys live under `config.prefix` in `config.bucket`.

    `retries` is how many times a request is retried after an unreachable store, a 5xx or
    SlowDown (as botocore's standard mode; with archiver/retry.py's backoff) before we raise
    StorageUnavailable.
    """

    def __init__(self, config: S3Config, *, retries: int = 5,
                 multipart_threshold: int = MULTIPART_THRESHOLD) -> None:
        if not config.bucket:
            raise ConfigError("config: storage.s3.bucket: required when storage.backend is s3")
        self.config = config
        self.bucket: str = config.bucket
        prefix = config.prefix.strip("/")
        self.prefix = f"{prefix}/" if prefix else ""  # "archive" and "archive/" mean the same
        self._threshold = multipart_threshold
        self._conditional = True  # until the store refuses If-None-Match: then check-then-write
        self._retries = retries
        self._client = Client(config, retries=retries)

    def _name(self, key: str) -> str:
        check_key(key)
        return self.prefix + key

    def _url(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}"

    async def _call(self, what: str, key: str, call: Awaitable[T]) -> T:
        """Await `call`, translating the store's errors into ours."""
        try:
            return await call
        except S3Error as e:
            if e.code in _MISSING:
                raise FileNotFoundError(errno.ENOENT, "no such key in the bucket", key) from e
            if e.status == 412 or e.code == "PreconditionFailed":
                # Our If-None-Match: * is the only precondition any call of ours sends.
                raise self._already(key) from None
            message = (f"s3: {what} {self._url(key)}: {e.code} {e.message}; check the "
                       "bucket, its region and the credentials' permissions")
            if e.status == 409 or e.code == "ConditionalRequestConflict":
                raise _Conflict(message) from e
            if e.status == 501 or (e.status == 400 and e.code in _NO_CONDITIONAL):
                raise _Refused(message) from e
            raise StorageUnavailable(message) from e
        except Unreachable as e:
            raise StorageUnavailable(f"s3: {what} {self._url(key)}: {e}; check that storage.s3.endpoint_url "
                                     "is reachable and credentials are set") from e

    async def put_file(self, key: str, source: Path, *, content_type: str, sha256: str,
                       if_absent: bool = False, sync_folder: bool = True) -> None:
        """Upload `source` (multipart from 64 MiB), then confirm size and sha256 with HEAD."""
        name = self._name(key)
        sha256 = sha256.lower()
        digest = bytes.fromhex(sha256)  # a malformed digest fails here, before any upload
        # Stat errors are the caller's staging problem and travel as OSError.
        size = (await asyncio.to_thread(os.stat, source)).st_size
        headers = {"Content-Type": content_type, "x-amz-meta-sha256": sha256}
        if size < self._threshold:
            if self.config.checksum:
                # One PUT: the store checks the whole object against our digest.
                headers |= _checksum(digest)
            # The payload hash we sign is the digest the download computed: no second read.
            body = Body.file(source, 0, size, sha256)
            await self._write("put", key, lambda condition: self._client.put(
                name, body, headers | condition), if_absent)
        else:
            # A large upload looks first: no need to send gigabytes to learn that the key is taken.
            await self._write("upload", key, lambda condition: self._upload_parts(
                name, source, size, headers, condition), if_absent, look_first=True)
        await self._confirm(key, size, sha256)

    async def _upload_parts(self, name: str, source: Path, size: int, headers: dict[str, str],
                            complete: dict[str, str]) -> None:
        """A multipart upload, parts of PART_SIZE streamed from disk one at a time; `complete`
        holds the completion's condition (If-None-Match). Aborted on any failure."""
        if self.config.checksum:
            # S3 has no whole-object SHA-256 for multipart uploads: each part carries its own.
            headers = headers | {"x-amz-checksum-algorithm": "SHA256"}
        upload = text(find(await self._client.xml("POST", name, {"uploads": ""}, headers=headers), "UploadId"))
        try:
            parts = []
            for number, start in enumerate(range(0, size, PART_SIZE), 1):
                length = min(PART_SIZE, size - start)
                part_sha = await asyncio.to_thread(_hash_range, source, start, length)
                extra = _checksum(bytes.fromhex(part_sha)) if self.config.checksum else {}
                reply = await self._client.send("PUT", name, {"partNumber": str(number), "uploadId": upload},
                                                headers=extra, body=Body.file(source, start, length, part_sha))
                parts.append((number, reply.headers["ETag"], extra.get("x-amz-checksum-sha256")))
            await self._client.xml("POST", name, {"uploadId": upload}, headers=complete,
                                   body=Body.data_of(_completion(parts)))
        except BaseException:
            # Parts of an upload never completed cost storage until aborted; start() catches the rest.
            await _quietly(self._client.send("DELETE", name, {"uploadId": upload}))
            raise

    async def put_bytes(self, key: str, data: bytes, *, content_type: str, if_absent: bool = False) -> None:
        """One PUT of small content (a sidecar); with a checksum the store verifies the body."""
        name = self._name(key)
        digest = hashlib.sha256(data).digest()
        headers = {"Content-Type": content_type, "x-amz-meta-sha256": digest.hex()}
        if self.config.checksum:
            headers |= _checksum(digest)
        body = Body.data_of(data, digest.hex())
        await self._write("put", key, lambda condition: self._client.put(name, body, headers | condition), if_absent)

    async def _write(self, what: str, key: str, write: Callable[[dict[str, str]], Awaitable[object]],
                     if_absent: bool, *, look_first: bool = False) -> None:
        """Run `write(condition)`; with `if_absent` only where `key` holds no object.

        `condition` is If-None-Match: * while the store honours it. A 409 (another conditional
        write to the key in flight) is retried with backoff, `retries` times; the retry then
        meets that write's object (AlreadyStored) or, if it failed, writes ours.
        """
        if not if_absent:
            await self._call(what, key, write({}))
            return
        async for attempt in CONFLICTS.retrying(retry_if_exception_type(_Conflict), self._retries + 1):
            with attempt:
                await self._write_absent(what, key, write, look_first)

    async def _write_absent(self, what: str, key: str, write: Callable[[dict[str, str]], Awaitable[object]],
                            look_first: bool) -> None:
        """One try of a write where `key` holds no object; _Conflict while another is in flight."""
        if (look_first or not self._conditional) and await self.exists(key):
            raise self._already(key)
        if self._conditional:
            try:
                await self._call(what, key, write({"If-None-Match": "*"}))
                return
            except _Refused as e:
                self._conditional = False
                log.warning("s3: %s does not do conditional writes (If-None-Match: * got: %s); until "
                            "restart, writes that must not replace an object check with HEAD first, "
                            "which two daemons racing on one key can both pass", self._url(""), e.__cause__)
            if await self.exists(key):  # refused: this write, as every one after it, looks first
                raise self._already(key)
        # Check-then-write: two daemons between the HEAD and the PUT both write.
        await self._call(what, key, write({}))

    def _already(self, key: str) -> AlreadyStored:
        return AlreadyStored(f"s3: {self._url(key)} already holds an object; it was left as it is", key)

    async def _confirm(self, key: str, size: int, sha256: str) -> None:
        """Commit point: a put returns only once the store shows our size and digest."""
        try:
            info = await self.stat(key)
        except FileNotFoundError:
            info = None
        if info is None or info.size != size or info.sha256 != sha256:
            raise StorageUnavailable(
                f"s3: {self._url(key)}: after upload the store reports {info}, expected "
                f"{size} bytes with sha256 {sha256}; the write will be retried")

    async def get(self, key: str) -> bytes:
        """The whole object; checked against the store's own SHA-256 when it has one."""
        name = self._name(key)
        reply = await self._call("get", key, self._client.send(
            "GET", name, headers={"x-amz-checksum-mode": "ENABLED"}))
        checksum = _whole_checksum(reply)
        if checksum is not None and hashlib.sha256(reply.body).hexdigest() != checksum:
            raise StorageUnavailable(f"s3: get {self._url(key)}: the body does not match the store's checksum")
        return reply.body

    async def exists(self, key: str) -> bool:
        try:
            await self.stat(key)
        except FileNotFoundError:
            return False
        return True

    async def stat(self, key: str) -> ObjectInfo:
        """Size, our sha256 metadata (None for objects we did not write), type and checksum."""
        name = self._name(key)
        reply = await self._call("head", key, self._client.send(
            "HEAD", name, headers={"x-amz-checksum-mode": "ENABLED"}))
        return ObjectInfo(size=int(reply.headers["Content-Length"]), sha256=reply.headers.get("x-amz-meta-sha256"),
                          content_type=reply.headers.get("Content-Type"), checksum=_whole_checksum(reply))

    async def list(self, prefix: str = "") -> AsyncIterator[Listed]:
        """One page of ListObjectsV2 (up to 1,000 keys) per request."""
        if prefix:
            check_key(prefix.rstrip("/") or "x")
        # Keys come URL-encoded: XML cannot carry every character a key may hold.
        query = {"list-type": "2", "prefix": self.prefix + prefix, "encoding-type": "url"}
        while True:
            page = await self._call("list", prefix, self._client.xml("GET", "", query))
            for obj in find_all(page, "Contents"):
                key = unquote_plus(text(find(obj, "Key"))).removeprefix(self.prefix)
                if key and not key.endswith("/"):
                    modified = dt.datetime.fromisoformat(text(find(obj, "LastModified")))
                    yield Listed(key, int(text(find(obj, "Size"))), modified.timestamp())
            token = find(page, "NextContinuationToken")
            if text(find(page, "IsTruncated")) != "true" or token is None:
                return
            query = query | {"continuation-token": text(token)}

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncGenerator[bytes, None]:
        """A ranged GET streamed in pieces of at most 256 KiB: memory stays flat."""
        name = self._name(key)
        if end is not None and end <= start:
            await self.stat(key)  # nothing to send, but a missing key is still an error
            return
        headers = {}
        if start or end is not None:
            headers["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        async with await self._call("get", key, self._client.open("GET", name, headers=headers)) as resp:
            try:
                async for chunk in resp.content.iter_chunked(_READ_CHUNK):
                    yield chunk
            except NETWORK_ERRORS as e:
                raise StorageUnavailable(f"s3: get {self._url(key)}: {type(e).__name__} while reading") from e

    async def start(self, *, shared: bool = False) -> None:
        """Abort multipart uploads under our prefix left by a crash: all of them, or with other
        daemons writing here (shared), those begun more than STALE_SHARED ago."""
        before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=STALE_SHARED if shared else -60)
        aborted = await self._call("list uploads under", "", self._abort_stale(before))
        if aborted:
            log.info("aborted %d stale multipart upload(s) under %s", aborted, self._url(""))

    async def _abort_stale(self, before: dt.datetime) -> int:
        aborted = 0
        query = {"uploads": "", "prefix": self.prefix, "encoding-type": "url"}
        try:
            while True:
                page = await self._client.xml("GET", "", query)
                for upload in find_all(page, "Upload"):
                    key = unquote_plus(text(find(upload, "Key")))
                    if not key.startswith(self.prefix):
                        continue  # a store that ignores Prefix must not cost others their uploads
                    initiated = find(upload, "Initiated")
                    if initiated is not None and dt.datetime.fromisoformat(text(initiated)) > before:
                        continue  # another daemon's upload in progress
                    try:
                        await self._client.send("DELETE", key, {"uploadId": text(find(upload, "UploadId"))})
                        aborted += 1
                    except S3Error as e:
                        if e.code != "NoSuchUpload":
                            raise
                if text(find(page, "IsTruncated")) != "true":
                    return aborted
                query = query | {"key-marker": unquote_plus(text(find(page, "NextKeyMarker"))),
                                 "upload-id-marker": text(find(page, "NextUploadIdMarker"))}
        except S3Error as e:
            if e.code not in _NO_LISTING:
                raise
            log.warning("cannot list multipart uploads in %s (%s); stale ones are left to "
                        "the bucket's lifecycle rules", self._url(""), e.code)
        return aborted

    async def close(self) -> None:
        await self._client.close()


class _Conflict(StorageUnavailable):
    """409: a concurrent conditional write to the same key; worth another try soon."""


class _Refused(StorageUnavailable):
    """501 (or 400 NotImplemented): the store does not implement a header we sent."""


def _checksum(digest: bytes) -> dict[str, str]:
    """The headers that make the store check a body against its SHA-256."""
    return {"x-amz-sdk-checksum-algorithm": "SHA256", "x-amz-checksum-sha256": base64.b64encode(digest).decode()}


def _whole_checksum(reply: Reply) -> str | None:
    """The store's SHA-256 of the whole object, hex; None for none or a multipart one."""
    checksum = reply.headers.get("x-amz-checksum-sha256")
    # A multipart object's checksum is a digest of part digests ("…-N"): not the file's.
    if not checksum or "-" in checksum or reply.headers.get("x-amz-checksum-type") == "COMPOSITE":
        return None
    return base64.b64decode(checksum).hex()


def _completion(parts: list[tuple[int, str, str | None]]) -> bytes:
    """CompleteMultipartUpload's XML body."""
    from xml.sax.saxutils import escape

    items = "".join(f"<Part><PartNumber>{number}</PartNumber><ETag>{escape(etag)}</ETag>"
                    + (f"<ChecksumSHA256>{checksum}</ChecksumSHA256>" if checksum else "") + "</Part>"
                    for number, etag, checksum in parts)
    return f'<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/">{items}</CompleteMultipartUpload>'.encode()


def _hash_range(path: Path, start: int, length: int) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(start)
        while length > 0 and (block := f.read(min(length, 1 << 20))):
            hasher.update(block)
            length -= len(block)
    return hasher.hexdigest()


async def _quietly(call: Awaitable[object]) -> None:
    with contextlib.suppress(S3Error, Unreachable):
        await call
