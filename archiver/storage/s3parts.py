"""A multipart upload we drive ourselves, for the one thing boto3's upload_file cannot do:
complete it with `If-None-Match: *`. Parts go up one at a time, so one part is in memory."""

from __future__ import annotations

import contextlib
import itertools
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

PART_SIZE = 16 * 1024**2


def upload_parts(client: Any, bucket: str, name: str, source: Path, extra: dict[str, Any],
                 complete: dict[str, Any], part_size: int = PART_SIZE) -> None:
    """Upload `source` to `name` in parts of `part_size`; `extra` holds CreateMultipartUpload's
    arguments, `complete` CompleteMultipartUpload's (IfNoneMatch). Aborted on any failure."""
    upload = client.create_multipart_upload(Bucket=bucket, Key=name, **extra)["UploadId"]
    ids = {"Bucket": bucket, "Key": name, "UploadId": upload}
    checksum = {"ChecksumAlgorithm": extra["ChecksumAlgorithm"]} if "ChecksumAlgorithm" in extra else {}
    try:
        parts = []
        with open(source, "rb") as f:
            for number in itertools.count(1):
                data = f.read(part_size)
                if not data:
                    break
                reply = client.upload_part(PartNumber=number, Body=data, **ids, **checksum)
                part = {"PartNumber": number, "ETag": reply["ETag"]}
                if "ChecksumSHA256" in reply:
                    part["ChecksumSHA256"] = reply["ChecksumSHA256"]
                parts.append(part)
                del data  # the next read must not hold two parts at once
        client.complete_multipart_upload(MultipartUpload={"Parts": parts}, **ids, **complete)
    except BaseException:
        # Parts of an upload never completed cost storage until aborted; start() catches the rest.
        with contextlib.suppress(ClientError, BotoCoreError):
            client.abort_multipart_upload(**ids)
        raise
