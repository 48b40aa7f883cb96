"""A store having a bad day, played by tests/support/s3proxy.py in front of moto: every fault
ends with the object whole and one version of each key in a versioned bucket, or with an
error that says what is wrong. Through the Storage interface only."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from archiver.config import S3Config
from archiver.errors import AlreadyStored, StorageUnavailable
from archiver.storage.s3 import PART_SIZE, S3Storage
from tests.support.s3proxy import LANDS_THEN_412, Fault, S3Proxy
from tests.support.servers import serve

SMALL = 5 * 1024**2  # S3's smallest part: a multipart threshold that keeps these tests quick


def config(bucket: str, endpoint: str, **kw: Any) -> S3Config:
    return S3Config(bucket=bucket, endpoint_url=endpoint, region="us-east-1", **kw)


def versioned(client: Any, bucket: str) -> str:
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return bucket


def versions(client: Any, bucket: str) -> list[str]:
    listed = client.list_object_versions(Bucket=bucket)
    assert "DeleteMarkers" not in listed
    return sorted(v["Key"] for v in listed.get("Versions", []))


def whole(client: Any, bucket: str, key: str) -> str:
    return hashlib.sha256(client.get_object(Bucket=bucket, Key=key)["Body"].read()).hexdigest()


def staged(path: Path, size: int) -> str:
    data = os.urandom(size)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


# (fault, how big the asset is): each step of a single PUT and of a multipart upload.
SCRIPTS = {
    "put: 503 SlowDown": ([Fault("PutObject", "503 SlowDown")], SMALL - 1),
    "put: 500 InternalError": ([Fault("PutObject", "500 InternalError")], SMALL - 1),
    "put: reset mid-body": ([Fault("PutObject", "reset")], SMALL - 1),
    "put: 412 on the conditional write": ([Fault("PutObject", LANDS_THEN_412)], SMALL - 1),
    "parts: 503 on create": ([Fault("CreateMultipartUpload", "503 SlowDown")], PART_SIZE + 7),
    "parts: reset mid-part": ([Fault("UploadPart", "reset", part=2)], PART_SIZE + SMALL + 7),
    "parts: 500 on a part": ([Fault("UploadPart", "500 InternalError", part=1)], PART_SIZE + 7),
    "parts: 412 on the completion": ([Fault("CompleteMultipartUpload", LANDS_THEN_412)], PART_SIZE + 7),
}


@pytest.mark.parametrize("name", SCRIPTS)
async def test_each_fault_ends_whole_with_one_version(s3_client: Any, s3_bucket: str, moto_server: str,
                                                      tmp_path: Path, name: str) -> None:
    """The asset and then its sidecar, both if_absent, as the archiver writes them. A 412 means
    the key was written meanwhile (here: by a write of the same bytes): AlreadyStored, and the
    object left as it is, which the archiver then compares by checksum."""
    bucket = versioned(s3_client, s3_bucket)
    script, size = SCRIPTS[name]
    source = tmp_path / "staged.mp4"
    digest = staged(source, size)
    proxy = S3Proxy(moto_server, script=script)
    async with serve(proxy.app()) as url:
        storage = S3Storage(config(bucket, url), multipart_threshold=SMALL)
        if script[0].answer == LANDS_THEN_412:
            with pytest.raises(AlreadyStored, match="already holds an object"):
                await storage.put_file("v/00.mp4", source, content_type="video/mp4", sha256=digest, if_absent=True)
        else:
            await storage.put_file("v/00.mp4", source, content_type="video/mp4", sha256=digest, if_absent=True)
        await storage.put_bytes("v/00.mp4.json", b"{}", content_type="application/json", if_absent=True)
        assert (await storage.stat("v/00.mp4")).sha256 == digest
        await storage.close()
    assert script[0].played, "the fault was never played: the test proves nothing"
    assert versions(s3_client, bucket) == ["v/00.mp4", "v/00.mp4.json"]
    assert whole(s3_client, bucket, "v/00.mp4") == digest
    assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


async def test_faults_past_the_retries_are_a_clear_error(s3_client: Any, s3_bucket: str, moto_server: str,
                                                         tmp_path: Path) -> None:
    """A store that keeps failing: StorageUnavailable naming the key and the store's code, and
    nothing written (the asset waits and is tried again later)."""
    source = tmp_path / "staged.png"
    digest = staged(source, 1000)
    script = [Fault("PutObject", "503 SlowDown") for _ in range(3)]
    async with serve(S3Proxy(moto_server, script=script).app()) as url:
        storage = S3Storage(config(s3_bucket, url), retries=2)
        with pytest.raises(StorageUnavailable, match=r"put s3://.*/k/00.png: SlowDown .*region"):
            await storage.put_file("k/00.png", source, content_type="image/png", sha256=digest, if_absent=True)
        await storage.close()
    assert all(f.played for f in script)
    assert "Contents" not in s3_client.list_objects_v2(Bucket=s3_bucket)


@pytest.mark.parametrize("size", [1000, PART_SIZE + 7])
async def test_wrong_region_is_followed(s3_client: Any, s3_bucket: str, moto_server: str, tmp_path: Path,
                                        size: int) -> None:
    """The bucket is in eu-west-1, the config says us-east-1: S3's 301 names the region, and
    botocore signs again for it (once: it remembers the bucket's region)."""
    bucket = versioned(s3_client, s3_bucket)
    source = tmp_path / "staged.mp4"
    digest = staged(source, size)
    proxy = S3Proxy(moto_server, region="eu-west-1")
    async with serve(proxy.app()) as url:
        storage = S3Storage(config(bucket, url), multipart_threshold=SMALL)
        await storage.put_file("v/00.mp4", source, content_type="video/mp4", sha256=digest, if_absent=True)
        await storage.put_bytes("v/00.mp4.json", b"{}", content_type="application/json", if_absent=True)
        assert b"".join([c async for c in storage.read("v/00.mp4", 0, 10)]) == source.read_bytes()[:10]
        await storage.close()
    regions = [region for _, region, _ in proxy.signed]
    assert regions[0] == "us-east-1" and set(regions[1:]) == {"eu-west-1"}, regions
    assert versions(s3_client, bucket) == ["v/00.mp4", "v/00.mp4.json"]
    assert whole(s3_client, bucket, "v/00.mp4") == digest


async def test_wrong_region_unsaid_is_a_clear_error(s3_client: Any, s3_bucket: str, moto_server: str) -> None:
    """A store that refuses the region without naming its own: an error that says to check it."""
    async with serve(S3Proxy(moto_server, region="eu-west-1", say_region=False).app()) as url:
        storage = S3Storage(config(s3_bucket, url), retries=0)
        with pytest.raises(StorageUnavailable, match=r"AuthorizationHeaderMalformed .*check the bucket, its region"):
            await storage.put_bytes("k.json", b"{}", content_type="application/json", if_absent=True)
        await storage.close()
    assert "Contents" not in s3_client.list_objects_v2(Bucket=s3_bucket)
