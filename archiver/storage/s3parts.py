"""A multipart upload from the staged file, driven by us: boto3's upload_file cannot complete
with `If-None-Match: *`, and holds several parts in memory at once.

Parts go up one at a time, each streamed from disk (s3transfer's ReadFileChunk, seekable for
botocore's retries) in pieces of 64 KiB, so an upload never holds a part in memory.
Runs in one of the client's pool threads.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from s3transfer.utils import ReadFileChunk

PART_SIZE = 16 * 1024**2
_CREATE = ("Bucket", "Key", "ContentType", "Metadata", "ChecksumAlgorithm", "ServerSideEncryption",
           "SSEKMSKeyId", "StorageClass")


def upload_parts(client: Any, args: dict[str, Any], source: Path, size: int, complete: dict[str, str], *,
                 checksum: bool, part_size: int = PART_SIZE) -> None:
    """Upload `source` (`size` bytes) in parts of `part_size`; `args` holds CreateMultipartUpload's
    arguments, `complete` CompleteMultipartUpload's condition (IfNoneMatch). With `checksum` each
    part carries its SHA-256, which the store checks. Aborted on any failure."""
    create = {k: v for k, v in args.items() if k in _CREATE}
    upload = client.create_multipart_upload(**create)["UploadId"]
    ids = {"Bucket": args["Bucket"], "Key": args["Key"], "UploadId": upload}
    try:
        parts = []
        for number, start in enumerate(range(0, size, part_size), 1):
            length = min(part_size, size - start)
            part: dict[str, Any] = {"PartNumber": number}
            extra = {}
            if checksum:
                part["ChecksumSHA256"] = base64.b64encode(_hash_range(source, start, length)).decode()
                extra = {"ChecksumAlgorithm": "SHA256", "ChecksumSHA256": part["ChecksumSHA256"]}
            with ReadFileChunk.from_filename(str(source), start, length, enable_callbacks=False) as body:
                part["ETag"] = client.upload_part(PartNumber=number, Body=Pieces(body), **ids, **extra)["ETag"]
            parts.append(part)
        client.complete_multipart_upload(MultipartUpload={"Parts": parts}, **ids, **complete)
    except BaseException:
        # Parts of an upload never completed cost storage until aborted; start() catches the rest.
        with contextlib.suppress(ClientError, BotoCoreError):
            client.abort_multipart_upload(**ids)
        raise


class Pieces:
    """A file read at most PIECE bytes at a time, whatever the reader asks (botocore hashes a body
    in 1 MiB reads): small buffers come back to malloc's free lists, where 1 MiB ones raise glibc's
    mmap threshold and then stay in each thread's arena. `read()` with no size still reads all."""

    PIECE = 64 * 1024

    def __init__(self, file: Any) -> None:
        self._file = file

    def read(self, size: int = -1) -> bytes:
        return self._file.read(size if size is None or size < 0 else min(size, self.PIECE))

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()


def _hash_range(path: Path, start: int, length: int) -> bytes:
    hasher = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(start)
        while length > 0 and (block := f.read(min(length, 1 << 20))):
            hasher.update(block)
            length -= len(block)
    return hasher.digest()
