"""Storage in an S3 bucket or an S3-compatible store, through boto3's client (s3client.py).

Each call runs in the client's pool of threads. botocore retries a store that is unreachable,
answers 5xx or SlowDown (standard mode) before we see an error; we retry only a 409 (another
conditional write to the key in flight), on archiver/retry.py's policy.

Errors stop here: a missing key becomes FileNotFoundError, a failed `If-None-Match: *`
AlreadyStored, a missing profile ConfigError, and anything else StorageUnavailable, whose
message names the bucket and key (never a credential).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import errno
import hashlib
import logging
import os
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError
from botocore.parsers import ResponseParserError
from tenacity import retry_if_exception_type

from archiver.archive_format.keys import WRITE_PROBE_KEY, check_key
from archiver.config import S3Config
from archiver.errors import AlreadyStored, ConfigError, StorageUnavailable
from archiver.retry import Backoff
from archiver.storage.base import STALE_SHARED, Listed, ObjectInfo
from archiver.storage.s3client import Client
from archiver.storage.s3parts import PART_SIZE, Pieces, upload_parts

log = logging.getLogger(__name__)
T = TypeVar("T")

__all__ = ["MULTIPART_THRESHOLD", "PART_SIZE", "S3Storage"]

MULTIPART_THRESHOLD = 64 * 1024**2
_MISSING = {"404", "NoSuchKey", "NotFound"}
# How a store without conditional writes answers `If-None-Match: *` (when it does not ignore it).
_NO_CONDITIONAL = {"NotImplemented", "NotSupported"}
CONFLICTS = Backoff(first=0.05, most=2.0, jitter=0.1)  # a 409's retries: 0.05 s, 0.1 s, 0.2 s… 2 s, +0-0.1 s
_READ_CHUNK = 256 * 1024  # what one streamed read holds in memory, whatever the object's size
# Stores (or credentials) that cannot list multipart uploads: start() skips the cleanup.
_NO_LISTING = {"NotImplemented", "AccessDenied", "MethodNotAllowed"}
Write = Callable[[Any, dict[str, str]], object]  # (client, condition) → a write, run in a pool thread


class S3Storage:
    """Keys live under `config.prefix` in `config.bucket`.

    `retries` is how many times botocore retries a request after an unreachable store, a 5xx
    or SlowDown (standard mode, with its backoff) before we raise StorageUnavailable; a 409 is
    retried as many times by us.
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
        # Every object: server-side encryption as the bucket owner asked.
        self._sse: dict[str, str] = {}
        if config.sse:
            self._sse["ServerSideEncryption"] = config.sse
        if config.sse_kms_key_id:
            self._sse["SSEKMSKeyId"] = config.sse_kms_key_id
        # Assets only: a sidecar is small and read often (verify, the index), and the cooler
        # classes bill each object as 128 KiB and each read; sidecars stay STANDARD.
        self._asset_class = {"StorageClass": config.storage_class} if config.storage_class else {}

    def _name(self, key: str) -> str:
        check_key(key)
        return self.prefix + key

    def _url(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}"

    async def _call(self, what: str, key: str, call: Callable[[Any], T]) -> T:
        """`call(client)` in a pool thread, the store's errors translated into ours."""
        try:
            return await self._client.run(call)
        except ClientError as e:
            raise self._translate(what, key, e) from e
        except ResponseParserError as e:  # not an S3 store at that URL, or a proxy's page
            raise StorageUnavailable(f"s3: {what} {self._url(key)}: InvalidReply: the answer is not S3's XML; "
                                     "check storage.s3.endpoint_url") from e
        except BotoCoreError as e:
            raise StorageUnavailable(f"s3: {what} {self._url(key)}: {e}; check that storage.s3.endpoint_url "
                                     "is reachable and credentials are set") from e

    def _translate(self, what: str, key: str, e: ClientError) -> Exception:
        error = e.response.get("Error", {})
        code = str(error.get("Code", "?"))
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in _MISSING:
            return FileNotFoundError(errno.ENOENT, "no such key in the bucket", key)
        if status == 412 or code == "PreconditionFailed":
            # Our If-None-Match: * is the only precondition any call of ours sends.
            return self._already(key)
        message = (f"s3: {what} {self._url(key)}: {code} {error.get('Message', '')}; check the "
                   "bucket, its region and the credentials' permissions")
        if status == 409 or code == "ConditionalRequestConflict":
            return _Conflict(message)
        if status == 501 or (status == 400 and code in _NO_CONDITIONAL):
            return _Refused(message)
        return StorageUnavailable(message)

    async def put_file(self, key: str, source: Path, *, content_type: str, sha256: str,
                       if_absent: bool = False, sync_folder: bool = True) -> None:
        """Upload `source` (multipart from 64 MiB), then confirm size and sha256 with HEAD."""
        name = self._name(key)
        sha256 = sha256.lower()
        digest = bytes.fromhex(sha256)  # a malformed digest fails here, before any upload
        # Stat errors are the caller's staging problem and travel as OSError.
        size = (await asyncio.to_thread(os.stat, source)).st_size
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": name, "ContentType": content_type,
                                "Metadata": {"sha256": sha256}, **self._sse, **self._asset_class}
        if size < self._threshold:
            if self.config.checksum:
                # One PUT: the store checks the whole object against the download's digest, and
                # keeps it as the object's ChecksumSHA256, which plain `verify` trusts.
                args |= _checksum(digest)

            def put(client: Any, condition: dict[str, str]) -> None:
                with open(source, "rb") as body:  # streamed from disk, seekable for retries
                    client.put_object(Body=Pieces(body), **args, **condition)

            await self._write("put", key, put, if_absent)
        else:
            if self.config.checksum:
                # S3 has no whole-object SHA-256 for multipart uploads: each part carries its own.
                args["ChecksumAlgorithm"] = "SHA256"

            def upload(client: Any, condition: dict[str, str]) -> None:
                upload_parts(client, args, source, size, condition, checksum=self.config.checksum)

            # A large upload looks first: no need to send gigabytes to learn that the key is taken.
            await self._write("upload", key, upload, if_absent, look_first=True)
        await self._confirm(key, size, sha256)

    async def put_bytes(self, key: str, data: bytes, *, content_type: str, if_absent: bool = False) -> None:
        """One PUT of small content (a sidecar); with a checksum the store verifies the body."""
        name = self._name(key)
        digest = hashlib.sha256(data).digest()
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": name, "Body": data, "ContentType": content_type,
                                "Metadata": {"sha256": digest.hex()}, **self._sse}
        if self.config.checksum:
            args |= _checksum(digest)
        await self._write("put", key, lambda client, condition: client.put_object(**args, **condition), if_absent)

    async def _write(self, what: str, key: str, write: Write, if_absent: bool, *, look_first: bool = False) -> None:
        """Run `write(client, condition)`; with `if_absent` only where `key` holds no object.

        `condition` is IfNoneMatch="*" while the store honours it. A 409 (another conditional
        write to the key in flight) is retried with backoff, `retries` times; the retry then
        meets that write's object (AlreadyStored) or, if it failed, writes ours.
        """
        if not if_absent:
            await self._call(what, key, lambda client: write(client, {}))
            return
        async for attempt in CONFLICTS.retrying(retry_if_exception_type(_Conflict), self._retries + 1):
            with attempt:
                await self._write_absent(what, key, write, look_first)

    async def _write_absent(self, what: str, key: str, write: Write, look_first: bool) -> None:
        """One try of a write where `key` holds no object; _Conflict while another is in flight."""
        if (look_first or not self._conditional) and await self.exists(key):
            raise self._already(key)
        if self._conditional:
            try:
                await self._call(what, key, lambda client: write(client, {"IfNoneMatch": "*"}))
                return
            except _Refused as e:
                self._no_conditional(str(e))
            if await self.exists(key):  # refused: this write, as every one after it, looks first
                raise self._already(key)
        # Check-then-write: two daemons between the HEAD and the PUT both write.
        await self._call(what, key, lambda client: write(client, {}))

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

        def read(client: Any) -> tuple[bytes, str | None]:
            reply = client.get_object(Bucket=self.bucket, Key=name, ChecksumMode="ENABLED")
            with reply["Body"] as body:
                return bytes(body.read()), _whole_checksum(reply)

        data, checksum = await self._call("get", key, read)
        if checksum is not None and hashlib.sha256(data).hexdigest() != checksum:
            raise StorageUnavailable(f"s3: get {self._url(key)}: the body does not match the store's checksum")
        return data

    async def exists(self, key: str) -> bool:
        try:
            await self.stat(key)
        except FileNotFoundError:
            return False
        return True

    async def stat(self, key: str) -> ObjectInfo:
        """Size, our sha256 metadata (None for objects we did not write), type and checksum."""
        name = self._name(key)
        head = await self._call("head", key, lambda client: client.head_object(
            Bucket=self.bucket, Key=name, ChecksumMode="ENABLED"))
        return ObjectInfo(size=int(head["ContentLength"]), sha256=head.get("Metadata", {}).get("sha256"),
                          content_type=head.get("ContentType"), checksum=_whole_checksum(head))

    async def list(self, prefix: str = "") -> AsyncIterator[Listed]:
        """One page of ListObjectsV2 (up to 1,000 keys) per thread hop."""
        if prefix:
            check_key(prefix.rstrip("/") or "x")
        args = {"Bucket": self.bucket, "Prefix": self.prefix + prefix}
        while True:
            page = await self._call("list", prefix, lambda client, query=args: client.list_objects_v2(**query))
            for obj in page.get("Contents", []):
                key = obj["Key"].removeprefix(self.prefix)
                # The probe is the backend's bookkeeping, as a local root's marker file is.
                if key and not key.endswith("/") and key != WRITE_PROBE_KEY:
                    yield Listed(key, int(obj["Size"]), obj["LastModified"].timestamp())
            if not page.get("IsTruncated") or not page.get("NextContinuationToken"):
                return
            args = args | {"ContinuationToken": page["NextContinuationToken"]}

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncGenerator[bytes, None]:
        """A ranged GET streamed in pieces of at most 256 KiB, one thread hop each: memory stays flat."""
        name = self._name(key)
        if end is not None and end <= start:
            await self.stat(key)  # nothing to send, but a missing key is still an error
            return
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": name}
        if start or end is not None:
            args["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        body = (await self._call("get", key, lambda client: client.get_object(**args)))["Body"]
        try:
            while chunk := await self._call("get", key, lambda _: body.read(_READ_CHUNK)):
                yield chunk
        finally:
            body.close()

    async def start(self, *, shared: bool = False) -> None:
        """Abort multipart uploads under our prefix left by a crash: all of them, or with other
        daemons writing here (shared), those begun more than STALE_SHARED ago."""
        before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=STALE_SHARED if shared else -60)
        aborted = await self._call("list uploads under", "", lambda client: self._abort_stale(client, before))
        if aborted:
            log.info("aborted %d stale multipart upload(s) under %s", aborted, self._url(""))
        await self._probe_conditional()

    async def _probe_conditional(self) -> None:
        """Write WRITE_PROBE_KEY with `If-None-Match: *` until the store says it is there.

        Some stores (s3rver, older MinIO and Ceph) ignore the header without a word: a second
        conditional write replaces the first. Such a store gets check-then-write, as one that
        answers 501 does. One PUT at a start once the probe object exists; two the first time.
        """
        name = self._name(WRITE_PROBE_KEY)
        body = b"archiver writes this object at each start to learn whether this store honours If-None-Match\n"
        for _ in range(2):
            try:
                await self._call("put", WRITE_PROBE_KEY, lambda client: client.put_object(
                    Bucket=self.bucket, Key=name, Body=body, ContentType="text/plain", IfNoneMatch="*", **self._sse))
            except (AlreadyStored, _Conflict):
                return  # honoured (412), or another daemon's probe in flight (409): conditional writes work
            except _Refused as e:
                self._no_conditional(str(e))
                return
        self._no_conditional(f"a second conditional write to {self._url(WRITE_PROBE_KEY)} succeeded")

    def _no_conditional(self, why: str) -> None:
        self._conditional = False
        log.warning("s3: %s does not do conditional writes (If-None-Match: * got: %s); until restart, writes "
                    "that must not replace an object check with HEAD first, which two daemons racing on one "
                    "key can both pass", self._url(""), why)

    def _abort_stale(self, client: Any, before: dt.datetime) -> int:
        aborted = 0
        try:
            for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket,
                                                                                 Prefix=self.prefix):
                for upload in page.get("Uploads", []):
                    if not upload["Key"].startswith(self.prefix):
                        continue  # a store that ignores Prefix must not cost others their uploads
                    if upload.get("Initiated", before) > before:
                        continue  # another daemon's upload in progress
                    try:
                        client.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"],
                                                      UploadId=upload["UploadId"])
                        aborted += 1
                    except ClientError as e:
                        if e.response.get("Error", {}).get("Code") != "NoSuchUpload":
                            raise
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code")
            if code not in _NO_LISTING:
                raise
            log.warning("cannot list multipart uploads in %s (%s); stale ones are left to "
                        "the bucket's lifecycle rules", self._url(""), code)
        return aborted

    async def close(self) -> None:
        await self._client.close()


class _Conflict(StorageUnavailable):
    """409: a concurrent conditional write to the same key; worth another try soon."""


class _Refused(StorageUnavailable):
    """501 (or 400 NotImplemented): the store does not implement a header we sent."""


def _checksum(digest: bytes) -> dict[str, str]:
    """The arguments that make the store check a body against its SHA-256, and keep it."""
    return {"ChecksumAlgorithm": "SHA256", "ChecksumSHA256": base64.b64encode(digest).decode()}


def _whole_checksum(reply: dict[str, Any]) -> str | None:
    """The store's SHA-256 of the whole object, hex; None for none or a multipart one."""
    checksum = reply.get("ChecksumSHA256")
    # A multipart object's checksum is a digest of part digests ("…-N"): not the file's.
    if not checksum or "-" in checksum or reply.get("ChecksumType") == "COMPOSITE":
        return None
    return base64.b64decode(checksum).hex()
