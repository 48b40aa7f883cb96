"""S3Storage beyond the conformance suite: metadata, checksums, cleanup, unreachable store."""

from __future__ import annotations

import base64
import hashlib
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from archiver.config import LocalConfig, S3Config, StorageConfig
from archiver.errors import ConfigError, StorageUnavailable
from archiver.storage import open_storage
from archiver.storage.s3 import MULTIPART_THRESHOLD, S3Storage

PNG = "image/png"


def config(bucket: str, endpoint: str, **kw: Any) -> S3Config:
    return S3Config(bucket=bucket, endpoint_url=endpoint, region="us-east-1", **kw)


def staged(tmp_path: Path, data: bytes) -> tuple[Path, str]:
    path = tmp_path / "staged"
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def head(client: Any, bucket: str, key: str) -> dict[str, Any]:
    return client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")


async def test_metadata_content_type_and_checksum(s3_client: Any, s3_bucket: str,
                                                  moto_server: str, tmp_path: Path) -> None:
    storage = S3Storage(config(s3_bucket, moto_server, prefix="/arch/"))
    source, digest = staged(tmp_path, b"\x89PNG...")
    await storage.put_file("k/00.png", source, content_type=PNG, sha256=digest)
    await storage.put_bytes("k/00.png.json", b"{}", content_type="application/json")
    await storage.close()

    asset = head(s3_client, s3_bucket, "arch/k/00.png")
    assert asset["Metadata"] == {"sha256": digest}
    assert asset["ContentType"] == PNG
    assert asset["ChecksumSHA256"] == base64.b64encode(bytes.fromhex(digest)).decode()
    sidecar = head(s3_client, s3_bucket, "arch/k/00.png.json")
    assert sidecar["ContentType"] == "application/json"
    assert sidecar["Metadata"] == {"sha256": hashlib.sha256(b"{}").hexdigest()}
    assert "ChecksumSHA256" in sidecar


async def test_checksum_off_still_uploads(s3_client: Any, s3_bucket: str, moto_server: str,
                                          tmp_path: Path) -> None:
    """For stores that reject checksum headers: none is sent, metadata still holds ours."""
    storage = S3Storage(config(s3_bucket, moto_server, checksum=False))
    source, digest = staged(tmp_path, b"plain")
    await storage.put_file("00.png", source, content_type=PNG, sha256=digest)
    await storage.put_bytes("00.png.json", b"{}", content_type="application/json")
    assert (await storage.stat("00.png")).sha256 == digest
    for key in ("00.png", "00.png.json"):
        reply = head(s3_client, s3_bucket, key)
        assert not [k for k in reply if k.startswith("Checksum")], reply
        assert "sha256" in reply["Metadata"]


async def test_checksum_off_multipart_upload(s3_client: Any, s3_bucket: str, moto_server: str,
                                             tmp_path: Path) -> None:
    """Above the multipart threshold too: parts go up with no checksum, our digest is kept."""
    source, size = tmp_path / "big.mp4", MULTIPART_THRESHOLD + 5 * 1024**2
    with open(source, "wb") as f:  # mostly a hole: quick to make
        f.truncate(size)
        for offset in (0, MULTIPART_THRESHOLD - 3, size - 4):
            f.seek(offset)
            f.write(b"mark")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    storage = S3Storage(config(s3_bucket, moto_server, checksum=False))
    await storage.put_file("v/00.mp4", source, content_type="video/mp4", sha256=digest)
    await storage.close()
    reply = head(s3_client, s3_bucket, "v/00.mp4")
    etag = reply["ETag"].strip('"')
    assert "-" in etag and int(etag.rpartition("-")[2]) >= 2, f"not a multipart upload: {etag}"
    assert not [k for k in reply if k.startswith("Checksum")], reply
    assert reply["Metadata"] == {"sha256": digest} and reply["ContentLength"] == size
    body = s3_client.get_object(Bucket=s3_bucket, Key="v/00.mp4")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == digest


async def test_start_aborts_stale_uploads_under_prefix(s3_client: Any, s3_bucket: str,
                                                       moto_server: str) -> None:
    s3_client.create_multipart_upload(Bucket=s3_bucket, Key="pre/kie/00.mp4")
    s3_client.create_multipart_upload(Bucket=s3_bucket, Key="other/00.mp4")
    await S3Storage(config(s3_bucket, moto_server, prefix="pre")).start()
    left = s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])
    assert [u["Key"] for u in left] == ["other/00.mp4"]


async def test_missing_bucket_is_storage_unavailable(moto_server: str, tmp_path: Path) -> None:
    storage = S3Storage(config("no-such-bucket-here", moto_server), retries=0)
    with pytest.raises(StorageUnavailable, match="NoSuchBucket"):
        await storage.start()
    with pytest.raises(StorageUnavailable):
        await storage.put_bytes("k.json", b"{}", content_type="application/json")


async def test_unreachable_store_fails_fast(aws_env: None, tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port that was just free: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    storage = S3Storage(config("bucket", f"http://127.0.0.1:{port}"), retries=1)
    source, digest = staged(tmp_path, b"x")
    started = time.monotonic()
    calls: list[Callable[[], Awaitable[object]]] = [
        storage.start,
        lambda: storage.put_file("k.png", source, content_type=PNG, sha256=digest),
        lambda: storage.put_bytes("k.json", b"{}", content_type="application/json"),
        lambda: storage.get("k.png"),
        lambda: storage.exists("k.png"),
        lambda: storage.stat("k.png"),
    ]
    for call in calls:
        with pytest.raises(StorageUnavailable, match="endpoint_url"):
            await call()
    assert time.monotonic() - started < 15
    await storage.close()


def test_construction_needs_a_bucket() -> None:
    with pytest.raises(ConfigError, match="bucket"):
        S3Storage(S3Config())


def test_open_storage_s3(tmp_path: Path) -> None:
    s3 = S3Config(bucket="archive", prefix="p/")
    storage = open_storage(StorageConfig("s3", "{task_id}/{index}", LocalConfig(tmp_path), s3))
    assert isinstance(storage, S3Storage) and storage.prefix == "p/"
