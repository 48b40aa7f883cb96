"""Storage in an S3 bucket or an S3-compatible store, through botocore run off the event loop.

botocore and boto3 exceptions stop here: a missing key becomes FileNotFoundError, a
failed `If-None-Match: *` AlreadyStored, and anything else StorageUnavailable, once
botocore's own retries have given up.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import errno
import hashlib
import itertools
import logging
import os
import random
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from archiver.config import S3Config
from archiver.errors import AlreadyStored, ConfigError, StorageUnavailable
from archiver.storage.base import STALE_SHARED, Listed, ObjectInfo
from archiver.storage.local import check_key
from archiver.storage.s3models import lean_loader
from archiver.storage.s3parts import PART_SIZE, upload_parts

log = logging.getLogger(__name__)
T = TypeVar("T")

MULTIPART_THRESHOLD = 64 * 1024**2
_MISSING = {"404", "NoSuchKey", "NotFound"}
# How a store without conditional writes answers `If-None-Match: *` (when it does not ignore it).
_NO_CONDITIONAL = {"NotImplemented", "NotSupported"}
_READ_CHUNK = 256 * 1024  # what one streamed read holds in memory, whatever the object's size
# Stores (or credentials) that cannot list multipart uploads: start() skips the cleanup.
_NO_LISTING = {"NotImplemented", "AccessDenied", "MethodNotAllowed"}


class S3Storage:
    """Keys live under `config.prefix` in `config.bucket`; each boto3 call runs in a thread.

    `retries` is how many times botocore retries an unreachable store, a 5xx or SlowDown
    (standard mode, with backoff) before we raise StorageUnavailable.
    """

    def __init__(self, config: S3Config, *, retries: int = 5,
                 multipart_threshold: int = MULTIPART_THRESHOLD) -> None:
        if not config.bucket:
            raise ConfigError("config: storage.s3.bucket: required when storage.backend is s3")
        self.config = config
        self.bucket: str = config.bucket
        prefix = config.prefix.strip("/")
        self.prefix = f"{prefix}/" if prefix else ""  # "archive" and "archive/" mean the same
        self._retries = retries
        self._threshold = multipart_threshold
        self._conditional = True  # until the store refuses If-None-Match: then check-then-write
        self._client_obj: Any = None
        self._lock = threading.Lock()

    def _client(self) -> Any:
        """The botocore client, made on first use in a worker thread: credentials may need I/O.

        botocore's own, not boto3's: boto3 (2 MiB) is imported only for a large upload."""
        with self._lock:
            if self._client_obj is None:
                # "when_required" sends no checksum header at all, for stores that reject them.
                checksums: Literal["when_supported", "when_required"] = (
                    "when_supported" if self.config.checksum else "when_required")
                session = botocore.session.Session()
                session.register_component("data_loader", lean_loader(session.get_config_variable("data_path")))
                self._client_obj = session.create_client(
                    "s3",
                    endpoint_url=self.config.endpoint_url,
                    region_name=self.config.region,
                    config=Config(
                        retries={"mode": "standard", "total_max_attempts": self._retries + 1},
                        connect_timeout=10,
                        read_timeout=60,
                        max_pool_connections=32,
                        request_checksum_calculation=checksums,
                        response_checksum_validation=checksums,
                        # S3-compatible stores (MinIO, R2, Ceph) reliably serve path-style URLs.
                        s3={"addressing_style": "path"} if self.config.endpoint_url else None,
                    ),
                )
            return self._client_obj

    def _name(self, key: str) -> str:
        check_key(key)
        return self.prefix + key

    def _url(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}"

    async def _call(self, what: str, key: str, fn: Callable[[Any], T]) -> T:
        """Run `fn(client)` in a thread, translating botocore's exceptions into ours."""

        def run() -> T:
            try:
                return fn(self._client())
            except ClientError as e:
                error = e.response.get("Error", {})
                code = str(error.get("Code", "?"))
                status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if code in _MISSING:
                    raise FileNotFoundError(errno.ENOENT, "no such key in the bucket", key) from e
                if status == 412 or code == "PreconditionFailed":
                    # Our If-None-Match: * is the only precondition any call of ours sends.
                    raise self._already(key) from None
                message = (f"s3: {what} {self._url(key)}: {code} {error.get('Message', '')}; check the "
                           "bucket, its region and the credentials' permissions")
                if status == 409 or code == "ConditionalRequestConflict":
                    raise _Conflict(message) from e
                if status == 501 or (status == 400 and code in _NO_CONDITIONAL):
                    raise _Refused(message) from e
                raise StorageUnavailable(message) from e
            except BotoCoreError as e:
                raise self._unreachable(what, key, e) from e

        return await asyncio.to_thread(run)

    async def put_file(self, key: str, source: Path, *, content_type: str, sha256: str,
                       if_absent: bool = False, sync_folder: bool = True) -> None:
        """Upload `source` (multipart from 64 MiB), then confirm size and sha256 with HEAD."""
        name = self._name(key)
        sha256 = sha256.lower()
        digest = bytes.fromhex(sha256)  # a malformed digest fails here, before any upload
        # Stat errors are the caller's staging problem and travel as OSError.
        size = (await asyncio.to_thread(os.stat, source)).st_size
        extra: dict[str, Any] = {"ContentType": content_type, "Metadata": {"sha256": sha256}}
        if self.config.checksum:
            extra["ChecksumAlgorithm"] = "SHA256"
            if size < self._threshold:
                # One PUT: the store checks the whole object against our digest.
                extra["ChecksumSHA256"] = base64.b64encode(digest).decode()
            # Multipart: S3 has no whole-object SHA-256, so botocore sends one per part.
        if size < self._threshold:
            # One plain PUT: upload_file would start a transfer manager and its threads.
            def put(client: Any, condition: dict[str, str]) -> None:
                with open(source, "rb") as body:
                    client.put_object(Bucket=self.bucket, Key=name, Body=body, **extra, **condition)

            await self._write("put", key, put, if_absent)
        else:
            def upload(client: Any, condition: dict[str, str]) -> None:
                if condition:  # upload_file cannot send If-None-Match on the completion
                    upload_parts(client, self.bucket, name, source, extra, condition)
                else:
                    self._managed_upload(client, key, name, source, extra)

            # A large upload looks first: no need to send gigabytes to learn that the key is taken.
            await self._write("upload", key, upload, if_absent, look_first=True)
        await self._confirm(key, size, sha256)

    def _managed_upload(self, client: Any, key: str, name: str, source: Path, extra: dict[str, Any]) -> None:
        """boto3's upload_file (parallel parts, retried each), run on our botocore client."""
        from boto3.exceptions import Boto3Error
        from boto3.s3.transfer import S3Transfer, TransferConfig

        # 16 MiB parts and 4 threads: about 64 MiB of buffers per upload, whatever the file size.
        config = TransferConfig(multipart_threshold=self._threshold, multipart_chunksize=PART_SIZE, max_concurrency=4)
        try:
            # boto3-stubs type `config` as botocore's Config; boto3's own upload_file passes this one.
            with S3Transfer(client, config) as transfer:  # type: ignore[arg-type]
                transfer.upload_file(str(source), self.bucket, name, extra_args=extra)
        except Boto3Error as e:
            raise self._unreachable("upload", key, e) from e

    async def put_bytes(self, key: str, data: bytes, *, content_type: str, if_absent: bool = False) -> None:
        """One PUT of small content (a sidecar); with a checksum the store verifies the body."""
        name = self._name(key)
        digest = hashlib.sha256(data).digest()
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": name, "Body": data,
                                "ContentType": content_type, "Metadata": {"sha256": digest.hex()}}
        if self.config.checksum:
            args["ChecksumAlgorithm"] = "SHA256"
            args["ChecksumSHA256"] = base64.b64encode(digest).decode()
        await self._write("put", key, lambda c, condition: c.put_object(**args, **condition), if_absent)

    async def _write(self, what: str, key: str, write: Callable[[Any, dict[str, str]], None],
                     if_absent: bool, *, look_first: bool = False) -> None:
        """Run `write(client, condition)`; with `if_absent` only where `key` holds no object.

        `condition` is IfNoneMatch="*" while the store honours it. A 409 (another conditional
        write to the key in flight) is retried with backoff, `retries` times; the retry then
        meets that write's object (AlreadyStored) or, if it failed, writes ours.
        """
        if not if_absent:
            await self._call(what, key, lambda c: write(c, {}))
            return
        for attempt in itertools.count():
            if (look_first or not self._conditional) and await self.exists(key):
                raise self._already(key)
            if not self._conditional:
                # Check-then-write: two daemons between the HEAD and the PUT both write.
                await self._call(what, key, lambda c: write(c, {}))
                return
            try:
                await self._call(what, key, lambda c: write(c, {"IfNoneMatch": "*"}))
                return
            except _Refused as e:
                self._conditional = False
                log.warning("s3: %s does not do conditional writes (If-None-Match: * got: %s); until "
                            "restart, writes that must not replace an object check with HEAD first, "
                            "which two daemons racing on one key can both pass", self._url(""), e.__cause__)
            except _Conflict:
                if attempt >= self._retries:
                    raise
                await asyncio.sleep(random.uniform(0.5, 1.0) * min(2.0, 0.1 * 2**attempt))

    def _unreachable(self, what: str, key: str, error: Exception) -> StorageUnavailable:
        return StorageUnavailable(f"s3: {what} {self._url(key)}: {error}; check that storage.s3.endpoint_url "
                                  "is reachable and credentials are set")

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
        name = self._name(key)

        def read(client: Any) -> bytes:
            body = client.get_object(Bucket=self.bucket, Key=name)["Body"]
            with body:
                return bytes(body.read())

        return await self._call("get", key, read)

    async def exists(self, key: str) -> bool:
        try:
            await self.stat(key)
        except FileNotFoundError:
            return False
        return True

    async def stat(self, key: str) -> ObjectInfo:
        """Size, our sha256 metadata (None for objects we did not write), type and checksum."""
        name = self._name(key)
        head = await self._call("head", key, lambda c: c.head_object(
            Bucket=self.bucket, Key=name, ChecksumMode="ENABLED"))
        sha256 = head.get("Metadata", {}).get("sha256")
        checksum = head.get("ChecksumSHA256")
        # A multipart object's checksum is a digest of part digests ("…-N"): not the file's.
        whole = bool(checksum) and "-" not in checksum and head.get("ChecksumType") != "COMPOSITE"
        return ObjectInfo(size=int(head["ContentLength"]), sha256=sha256,
                          content_type=head.get("ContentType"),
                          checksum=base64.b64decode(checksum).hex() if whole else None)

    async def list(self, prefix: str = "") -> AsyncIterator[Listed]:
        """One page of ListObjectsV2 (up to 1,000 keys) per thread hop."""
        if prefix:
            check_key(prefix.rstrip("/") or "x")
        pages = iter(await self._call("list", prefix, lambda c: c.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix + prefix)))
        while page := await self._call("list", prefix, lambda c: next(pages, None)):
            for obj in page.get("Contents", []):
                key = obj["Key"].removeprefix(self.prefix)
                if key and not key.endswith("/"):
                    yield Listed(key, int(obj["Size"]), obj["LastModified"].timestamp())

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncGenerator[bytes, None]:
        """A ranged GET streamed in 256 KiB pieces, one thread hop each: memory stays flat."""
        name = self._name(key)
        if end is not None and end <= start:
            await self.stat(key)  # nothing to send, but a missing key is still an error
            return
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": name}
        if start or end is not None:
            args["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        body = (await self._call("get", key, lambda c: c.get_object(**args)))["Body"]
        try:
            while chunk := await self._call("get", key, lambda c: body.read(_READ_CHUNK)):
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

    def _abort_stale(self, client: Any, before: dt.datetime) -> int:
        aborted = 0
        pages = client.get_paginator("list_multipart_uploads")
        try:
            for page in pages.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for upload in page.get("Uploads", []):
                    if not upload["Key"].startswith(self.prefix):
                        continue  # a store that ignores Prefix must not cost others their uploads
                    if upload.get("Initiated", before) > before:
                        continue  # another daemon's upload in progress
                    try:
                        client.abort_multipart_upload(
                            Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
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
        client, self._client_obj = self._client_obj, None
        if client is not None:
            await asyncio.to_thread(client.close)


class _Conflict(StorageUnavailable):
    """409: a concurrent conditional write to the same key; worth another try soon."""


class _Refused(StorageUnavailable):
    """501 (or 400 NotImplemented): the store does not implement a header we sent."""
