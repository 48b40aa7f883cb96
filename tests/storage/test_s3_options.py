"""storage.s3's options a bucket owner sets, each read back from moto with head_object (or seen
at the proxy where the object cannot show it): profile, addressing_style, storage_class, sse,
sse_kms_key_id and sdk_checksums."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from archiver.config import S3Config
from archiver.errors import ConfigError
from archiver.storage.s3 import PART_SIZE, S3Storage
from tests.support.s3proxy import S3Proxy
from tests.support.servers import serve

SMALL = 5 * 1024**2


def config(bucket: str, endpoint: str, **kw: Any) -> S3Config:
    return S3Config(bucket=bucket, endpoint_url=endpoint, region="us-east-1", **kw)


async def write_asset_and_sidecar(storage: S3Storage, tmp_path: Path, size: int = 100) -> None:
    source = tmp_path / f"staged-{size}"
    source.write_bytes(b"\x89PNG" + b"x" * (size - 4))
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    await storage.put_file("a/00.png", source, content_type="image/png", sha256=digest, if_absent=True)
    await storage.put_bytes("a/00.png.json", b"{}", content_type="application/json", if_absent=True)
    await storage.close()


@pytest.mark.parametrize("size", [100, PART_SIZE + 7])
async def test_storage_class_goes_on_assets_only(s3_client: Any, s3_bucket: str, moto_server: str,
                                                 tmp_path: Path, size: int) -> None:
    storage = S3Storage(config(s3_bucket, moto_server, storage_class="STANDARD_IA"), multipart_threshold=SMALL)
    await write_asset_and_sidecar(storage, tmp_path, size)
    assert s3_client.head_object(Bucket=s3_bucket, Key="a/00.png")["StorageClass"] == "STANDARD_IA"
    assert "StorageClass" not in s3_client.head_object(Bucket=s3_bucket, Key="a/00.png.json")  # STANDARD


@pytest.mark.parametrize("size", [100, PART_SIZE + 7])
async def test_sse_aes256_on_every_object(s3_client: Any, s3_bucket: str, moto_server: str, tmp_path: Path,
                                          size: int) -> None:
    storage = S3Storage(config(s3_bucket, moto_server, sse="AES256"), multipart_threshold=SMALL)
    await write_asset_and_sidecar(storage, tmp_path, size)
    for key in ("a/00.png", "a/00.png.json"):
        assert s3_client.head_object(Bucket=s3_bucket, Key=key)["ServerSideEncryption"] == "AES256"


async def test_sse_kms_with_a_key(s3_client: Any, s3_bucket: str, moto_server: str, tmp_path: Path) -> None:
    key_id = "arn:aws:kms:us-east-1:123456789012:key/0a1b2c3d-aaaa-bbbb-cccc-0123456789ab"
    storage = S3Storage(config(s3_bucket, moto_server, sse="aws:kms", sse_kms_key_id=key_id))
    await write_asset_and_sidecar(storage, tmp_path)
    for key in ("a/00.png", "a/00.png.json"):
        head = s3_client.head_object(Bucket=s3_bucket, Key=key)
        assert head["ServerSideEncryption"] == "aws:kms" and head["SSEKMSKeyId"] == key_id


async def test_profile_names_the_credentials(s3_client: Any, s3_bucket: str, moto_server: str, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """An explicit profile wins over the keys in the environment, as in boto3."""
    (tmp_path / "credentials").write_text("[archive]\naws_access_key_id = from-the-profile\n"
                                          "aws_secret_access_key = testing\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    proxy = S3Proxy(moto_server)
    async with serve(proxy.app()) as url:
        await write_asset_and_sidecar(S3Storage(config(s3_bucket, url, profile="archive")), tmp_path)
    assert {key_id for key_id, _, _ in proxy.signed} == {"from-the-profile"}
    assert s3_client.head_object(Bucket=s3_bucket, Key="a/00.png")["ContentLength"] == 100


async def test_a_missing_profile_stops_the_start(s3_bucket: str, moto_server: str) -> None:
    storage = S3Storage(config(s3_bucket, moto_server, profile="nowhere"))
    with pytest.raises(ConfigError, match="storage.s3.profile: no profile 'nowhere'"):
        await storage.start()
    await storage.close()


@pytest.mark.parametrize("style", ["path", "virtual"])
async def test_addressing_style(s3_client: Any, s3_bucket: str, moto_server: str, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch, style: str) -> None:
    """Virtual-hosted requests name the bucket in the host (reached here through HTTP_PROXY,
    since nothing resolves `bucket.localhost`; an IP address is always path-style); path-style
    ones in the path."""
    proxy = S3Proxy(moto_server)
    async with serve(proxy.app()) as url:
        if style == "virtual":
            monkeypatch.setenv("HTTP_PROXY", url)
            monkeypatch.delenv("NO_PROXY", raising=False)
            monkeypatch.delenv("no_proxy", raising=False)
            endpoint = moto_server.replace("127.0.0.1", "localhost")
        else:
            endpoint = url
        await write_asset_and_sidecar(S3Storage(config(s3_bucket, endpoint, addressing_style=style)), tmp_path)
    hosts = {host.partition(".")[0] for _, _, host in proxy.signed}
    assert hosts == ({s3_bucket} if style == "virtual" else {url.removeprefix("http://").partition(".")[0]})
    assert s3_client.head_object(Bucket=s3_bucket, Key="a/00.png")["ContentType"] == "image/png"


@pytest.mark.parametrize("mode", [None, "when_supported"])
async def test_sdk_checksums_on_a_custom_endpoint(s3_client: Any, s3_bucket: str, moto_server: str,
                                                  tmp_path: Path, mode: str | None) -> None:
    """Unset on a custom endpoint: botocore adds no checksum of its own (when_required); our
    SHA-256 still goes out with `checksum: true`. when_supported: botocore's CRC32 comes back."""
    await write_asset_and_sidecar(S3Storage(config(s3_bucket, moto_server, checksum=False, sdk_checksums=mode)),
                                  tmp_path)
    head = s3_client.head_object(Bucket=s3_bucket, Key="a/00.png", ChecksumMode="ENABLED")
    sdk = [k for k in head if k.startswith("Checksum") and k != "ChecksumType"]
    assert sdk == ([] if mode is None else ["ChecksumCRC32"]), head
    await write_asset_and_sidecar(S3Storage(config(s3_bucket, moto_server, prefix="ours")), tmp_path)
    ours = s3_client.head_object(Bucket=s3_bucket, Key="ours/a/00.png", ChecksumMode="ENABLED")
    assert "ChecksumSHA256" in ours and "ChecksumCRC32" not in ours
