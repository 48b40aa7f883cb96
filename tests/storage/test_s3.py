"""S3Storage beyond the conformance suite: metadata, checksums, cleanup, unreachable store."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from yarl import URL

from archiver.config import LocalConfig, S3Config, StorageConfig
from archiver.errors import AlreadyStored, ConfigError, StorageUnavailable
from archiver.storage import open_storage
from archiver.storage.s3 import MULTIPART_THRESHOLD, PART_SIZE, S3Storage
from archiver.storage.s3parts import upload_parts
from tests.support.s3proxy import Fault, S3Proxy
from tests.support.servers import canned, serve

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
    await storage.close()
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
    storage = S3Storage(config(s3_bucket, moto_server, prefix="pre"))
    await storage.start()
    await storage.close()
    left = s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])
    assert [u["Key"] for u in left] == ["other/00.mp4"]


async def test_missing_bucket_is_storage_unavailable(moto_server: str, tmp_path: Path) -> None:
    storage = S3Storage(config("no-such-bucket-here", moto_server), retries=0)
    with pytest.raises(StorageUnavailable, match="NoSuchBucket"):
        await storage.start()
    with pytest.raises(StorageUnavailable):
        await storage.put_bytes("k.json", b"{}", content_type="application/json")
    await storage.close()


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


SMALL = 5 * 1024**2  # S3's smallest part: a multipart threshold that keeps these tests quick


def marked_file(path: Path, size: int, mark: bytes) -> str:
    """A sparse file of `size` bytes with `mark` here and there; returns its sha256."""
    with open(path, "wb") as f:
        f.truncate(size)
        for offset in (0, PART_SIZE - 3, size - len(mark)):
            f.seek(offset)
            f.write(mark)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def parts_of(reply: dict[str, Any]) -> int:
    etag = reply["ETag"].strip('"')
    return int(etag.rpartition("-")[2]) if "-" in etag else 1


async def test_conditional_multipart_upload(s3_client: Any, s3_bucket: str, moto_server: str,
                                            tmp_path: Path) -> None:
    """Above the threshold, if_absent goes up in our own parts and completes If-None-Match."""
    storage = S3Storage(config(s3_bucket, moto_server), multipart_threshold=SMALL)
    first, second = tmp_path / "first.mp4", tmp_path / "second.mp4"
    digest = marked_file(first, PART_SIZE + SMALL + 7, b"first")
    marked_file(second, PART_SIZE + SMALL + 7, b"other")
    await storage.put_file("v/00.mp4", first, content_type="video/mp4", sha256=digest, if_absent=True)
    reply = head(s3_client, s3_bucket, "v/00.mp4")
    assert parts_of(reply) == 2, reply["ETag"]
    assert reply["Metadata"] == {"sha256": digest} and reply["ContentType"] == "video/mp4"
    assert "ChecksumSHA256" in reply  # the parts went up with their checksums
    with pytest.raises(AlreadyStored, match="v/00.mp4"):
        await storage.put_file("v/00.mp4", second, content_type="video/mp4",
                               sha256=hashlib.sha256(second.read_bytes()).hexdigest(), if_absent=True)
    assert head(s3_client, s3_bucket, "v/00.mp4")["ETag"] == reply["ETag"]
    body = s3_client.get_object(Bucket=s3_bucket, Key="v/00.mp4")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == digest
    assert (await storage.stat("v/00.mp4")).sha256 == digest
    assert s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    await storage.close()


async def test_completion_honours_if_none_match(s3_client: Any, s3_bucket: str, moto_server: str,
                                               tmp_path: Path) -> None:
    """The store, not our HEAD, has the last word: a completion onto a taken key fails 412
    (moto 5.2 checks If-None-Match in CompleteMultipartUpload), and the upload is aborted."""
    s3_client.put_object(Bucket=s3_bucket, Key="taken.mp4", Body=b"already here")
    source = tmp_path / "big.mp4"
    marked_file(source, PART_SIZE + 10, b"mark")
    # The parts step alone, as if another writer took the key after put_file's HEAD.
    args = {"Bucket": s3_bucket, "Key": "taken.mp4", "ContentType": "video/mp4", "ChecksumAlgorithm": "SHA256"}
    with pytest.raises(ClientError) as caught:
        upload_parts(s3_client, args, source, PART_SIZE + 10, {"IfNoneMatch": "*"}, checksum=True)
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert s3_client.get_object(Bucket=s3_bucket, Key="taken.mp4")["Body"].read() == b"already here"
    assert s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


async def test_versioned_bucket_keeps_one_version(s3_client: Any, s3_bucket: str, moto_server: str,
                                                  tmp_path: Path) -> None:
    s3_client.put_bucket_versioning(Bucket=s3_bucket, VersioningConfiguration={"Status": "Enabled"})
    storage = S3Storage(config(s3_bucket, moto_server), multipart_threshold=SMALL)
    big = tmp_path / "big.mp4"
    digest = marked_file(big, PART_SIZE + 1, b"big")
    small, small_digest = staged(tmp_path, b"\x89PNG small")
    writes: list[Callable[[], Awaitable[None]]] = [
        lambda: storage.put_bytes("a/00.png.json", b"{}", content_type="application/json", if_absent=True),
        lambda: storage.put_file("a/00.png", small, content_type=PNG, sha256=small_digest, if_absent=True),
        lambda: storage.put_file("a/01.mp4", big, content_type="video/mp4", sha256=digest, if_absent=True),
    ]
    for write in writes:
        await write()
    for write in writes:
        with pytest.raises(AlreadyStored):
            await write()
    versions = s3_client.list_object_versions(Bucket=s3_bucket)
    assert sorted(v["Key"] for v in versions["Versions"]) == ["a/00.png", "a/00.png.json", "a/01.mp4"]
    assert "DeleteMarkers" not in versions
    await storage.close()


@pytest.mark.parametrize("refuse", [(501, "NotImplemented"), (400, "NotImplemented")])
async def test_store_without_conditional_writes(s3_client: Any, s3_bucket: str, moto_server: str,
                                                tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                refuse: tuple[int, str]) -> None:
    """One warning, then check-then-write for the rest of the run: still one object per key."""
    proxy = S3Proxy(moto_server, refuse=refuse)
    big = tmp_path / "big.mp4"
    digest = marked_file(big, PART_SIZE + 1, b"big")
    async with serve(proxy.app()) as url:
        storage = S3Storage(config(s3_bucket, url), multipart_threshold=SMALL)
        with caplog.at_level(logging.WARNING, logger="archiver.storage.s3"):
            await storage.put_bytes("k.json", b"first", content_type="application/json", if_absent=True)
            with pytest.raises(AlreadyStored):
                await storage.put_bytes("k.json", b"second", content_type="application/json", if_absent=True)
            await storage.put_file("v.mp4", big, content_type="video/mp4", sha256=digest, if_absent=True)
            with pytest.raises(AlreadyStored):
                await storage.put_file("v.mp4", big, content_type="video/mp4", sha256=digest, if_absent=True)
            await storage.put_bytes("k.json", b"replaced", content_type="application/json")  # as before
        await storage.close()
    warnings = [r for r in caplog.records if "conditional writes" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert [seen for seen in proxy.seen if seen[2]] == [("PUT", f"/{s3_bucket}/k.json", True)]
    heads = [path for method, path, _ in proxy.seen if method == "HEAD"]
    assert f"/{s3_bucket}/k.json" in heads and f"/{s3_bucket}/v.mp4" in heads
    assert s3_client.get_object(Bucket=s3_bucket, Key="k.json")["Body"].read() == b"replaced"
    assert parts_of(head(s3_client, s3_bucket, "v.mp4")) == 2


async def test_conflict_is_retried(s3_client: Any, s3_bucket: str, moto_server: str) -> None:
    """409 ConditionalRequestConflict: another conditional write is in flight; try again."""
    proxy = S3Proxy(moto_server, conflicts=2)
    async with serve(proxy.app()) as url:
        storage = S3Storage(config(s3_bucket, url), retries=2)
        await storage.put_bytes("k.json", b"ours", content_type="application/json", if_absent=True)
        proxy.conflicts = 3  # one more than the retries
        with pytest.raises(StorageUnavailable, match="ConditionalRequestConflict"):
            await storage.put_bytes("n.json", b"x", content_type="application/json", if_absent=True)
        await storage.close()
    assert [p for m, p, conditional in proxy.seen if conditional] == [f"/{s3_bucket}/k.json"] * 3 + [
        f"/{s3_bucket}/n.json"] * 3
    assert s3_client.get_object(Bucket=s3_bucket, Key="k.json")["Body"].read() == b"ours"
    assert "Contents" not in s3_client.list_objects_v2(Bucket=s3_bucket, Prefix="n.json")


async def test_conflict_on_completion_starts_over(s3_client: Any, s3_bucket: str, moto_server: str,
                                                  tmp_path: Path) -> None:
    """A 409 on CompleteMultipartUpload: AWS says re-upload; the failed upload is aborted."""
    proxy = S3Proxy(moto_server, conflicts=1)
    big = tmp_path / "big.mp4"
    digest = marked_file(big, PART_SIZE + 1, b"big")
    async with serve(proxy.app()) as url:
        storage = S3Storage(config(s3_bucket, url), multipart_threshold=SMALL)
        await storage.put_file("v.mp4", big, content_type="video/mp4", sha256=digest, if_absent=True)
        await storage.close()
    creates = [p for m, p, _ in proxy.seen if m == "POST" and p.endswith("?uploads")]
    assert len(creates) == 2
    assert s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    body = s3_client.get_object(Bucket=s3_bucket, Key="v.mp4")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == digest


async def test_failed_multipart_upload_is_storage_unavailable(moto_server: str, tmp_path: Path) -> None:
    """A refusal of the multipart upload's first step comes out as ours, naming the store's code."""
    storage = S3Storage(config("no-such-bucket", moto_server), multipart_threshold=SMALL)
    source, digest = staged(tmp_path, b"x" * (SMALL + 1))
    with pytest.raises(StorageUnavailable, match="upload s3://no-such-bucket/v.mp4: .*NoSuchBucket"):
        await storage.put_file("v.mp4", source, content_type="video/mp4", sha256=digest)
    await storage.close()


async def test_signatures_are_checked_on_the_way(s3_bucket: str, moto_server: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The proxy (which the conformance suite runs behind) refuses a request signed with another
    secret, as AWS would: its check is real, so the suite's passing means our signatures are."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    async with serve(S3Proxy(moto_server).app()) as url:
        storage = S3Storage(config(s3_bucket, url), retries=0)
        with pytest.raises(StorageUnavailable, match="SignatureDoesNotMatch") as caught:
            await storage.put_bytes("k.json", b"{}", content_type="application/json")
        await storage.close()
    assert "not-the-secret" not in str(caught.value) and "Signature=" not in str(caught.value)


@pytest.mark.parametrize("source", ["file", "session token"])
async def test_credentials_beyond_plain_keys(s3_bucket: str, moto_server: str, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch, source: str) -> None:
    """Keys from a credentials file (botocore's provider chain) or with a session token in the
    environment: requests still go up signed as the store checks them."""
    if source == "file":
        (tmp_path / "credentials").write_text("[default]\naws_access_key_id = testing\n"
                                              "aws_secret_access_key = testing\n")
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
        monkeypatch.delenv("AWS_ACCESS_KEY_ID")
        monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    else:
        monkeypatch.setenv("AWS_SESSION_TOKEN", "a-token")
    proxy = S3Proxy(moto_server)
    async with serve(proxy.app()) as url:
        storage = S3Storage(config(s3_bucket, url), retries=0)
        await storage.put_bytes("k.json", b"{}", content_type="application/json")
        assert await storage.get("k.json") == b"{}"
        await storage.close()
    assert proxy.tokens == ([None, None] if source == "file" else ["a-token", "a-token"])


async def test_proxy_from_the_environment(s3_client: Any, s3_bucket: str, moto_server: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP_PROXY is honoured as botocore honoured it: every request goes through the proxy."""
    proxy = S3Proxy(moto_server)
    async with serve(proxy.app()) as url:
        monkeypatch.setenv("HTTP_PROXY", url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        storage = S3Storage(config(s3_bucket, moto_server), retries=0)
        await storage.put_bytes("k.json", b"{}", content_type="application/json")
        assert (await storage.stat("k.json")).size == 2
        await storage.close()
    assert [(method, path) for method, path, _ in proxy.seen] == [
        ("PUT", f"/{s3_bucket}/k.json"), ("HEAD", f"/{s3_bucket}/k.json")]
    assert s3_client.get_object(Bucket=s3_bucket, Key="k.json")["Body"].read() == b"{}"


async def test_a_reply_that_is_not_s3s_xml_is_storage_unavailable(aws_env: None) -> None:
    """An endpoint_url that is not an S3 store (a web page answers): ours, not a parse error
    (botocore takes a 200 it cannot parse for a 500, and retries it)."""
    async with serve(canned(200, b"<html><body>hello")) as url:
        storage = S3Storage(config("bucket", url), retries=0)
        with pytest.raises(StorageUnavailable, match="list uploads under s3://bucket/: 500"):
            await storage.start()
        await storage.close()


# A store having a bad day: each fault is retried, and the object ends up whole. Through the
# Storage interface only, so these hold for whichever S3 client S3Storage is built on.
FAULTS = ["503 SlowDown", "500 InternalError", "reset"]


def whole(client: Any, bucket: str, key: str) -> str:
    """The sha256 of the object as the store serves it."""
    return hashlib.sha256(client.get_object(Bucket=bucket, Key=key)["Body"].read()).hexdigest()


@pytest.mark.parametrize("fault", FAULTS)
async def test_a_fault_on_a_single_put_is_retried(s3_client: Any, s3_bucket: str, moto_server: str,
                                                  tmp_path: Path, fault: str) -> None:
    """Under the multipart threshold: one PUT, its first try answered with `fault` (a reset
    comes a megabyte into the body)."""
    source, digest = staged(tmp_path, os.urandom(3 * 1024**2))
    proxy = S3Proxy(moto_server, script=[Fault("PutObject", fault)])
    async with serve(proxy.app()) as url:
        storage = S3Storage(config(s3_bucket, url), multipart_threshold=SMALL)
        await storage.put_file("v/00.mp4", source, content_type="video/mp4", sha256=digest, if_absent=True)
        await storage.close()
    assert proxy.script[0].played, "the fault was never played: the test proves nothing"
    puts = [path for op, path in proxy.operations if op == "PutObject"]
    assert puts == [f"/{s3_bucket}/v/00.mp4"] * 2, "the PUT was not sent again, once"
    assert whole(s3_client, s3_bucket, "v/00.mp4") == digest


async def test_faults_in_a_multipart_upload_are_retried(s3_client: Any, s3_bucket: str, moto_server: str,
                                                        tmp_path: Path) -> None:
    """Every step of a multipart upload meets a fault once; each step is tried again, the
    upload is not started over, and the object is whole."""
    source = tmp_path / "big.mp4"
    digest = marked_file(source, PART_SIZE + SMALL + 7, b"big")
    script = [Fault("CreateMultipartUpload", "503 SlowDown"), Fault("UploadPart", "reset", part=1),
              Fault("UploadPart", "500 InternalError", part=2), Fault("CompleteMultipartUpload", "503 SlowDown")]
    proxy = S3Proxy(moto_server, script=script)
    async with serve(proxy.app()) as url:
        storage = S3Storage(config(s3_bucket, url), multipart_threshold=SMALL)
        await storage.put_file("v/00.mp4", source, content_type="video/mp4", sha256=digest, if_absent=True)
        await storage.close()
    assert [f.played != "" for f in script] == [True] * 4, [f.played for f in script]
    sent = [op for op, _ in proxy.operations]
    assert sent.count("CreateMultipartUpload") == 2, "the upload was started over, or not retried"
    assert sent.count("UploadPart") == 4 and sent.count("CompleteMultipartUpload") == 2, sent
    assert "AbortMultipartUpload" not in sent, sent
    parts = sorted(URL(path).query["partNumber"] for op, path in proxy.operations if op == "UploadPart")
    assert parts == ["1", "1", "2", "2"]
    assert parts_of(head(s3_client, s3_bucket, "v/00.mp4")) == 2
    assert whole(s3_client, s3_bucket, "v/00.mp4") == digest
    assert s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


async def test_start_learns_that_a_store_ignores_if_none_match(s3_client: Any, s3_bucket: str, moto_server: str,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """A store that drops the header without a word (s3rver) gets check-then-write from the start."""
    proxy = S3Proxy(moto_server, ignore_conditions=True)
    async with serve(proxy.app()) as url:
        storage = S3Storage(config(s3_bucket, url))
        with caplog.at_level(logging.WARNING, logger="archiver.storage.s3"):
            await storage.start()
            await storage.put_bytes("k.json", b"first", content_type="application/json", if_absent=True)
            with pytest.raises(AlreadyStored):
                await storage.put_bytes("k.json", b"second", content_type="application/json", if_absent=True)
        await storage.close()
    assert any("a second conditional write" in r.getMessage() for r in caplog.records)
    assert s3_client.get_object(Bucket=s3_bucket, Key="k.json")["Body"].read() == b"first"


async def test_start_probes_once_a_store_that_honours_if_none_match(s3_client: Any, s3_bucket: str,
                                                                    moto_server: str,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """Two PUTs of the probe at the first start (the second gets 412), one at each start after; no warning."""
    proxy = S3Proxy(moto_server)
    async with serve(proxy.app()) as url:
        for n in range(2):
            storage = S3Storage(config(s3_bucket, url))
            with caplog.at_level(logging.WARNING, logger="archiver.storage.s3"):
                await storage.start()
                await storage.put_bytes(f"k{n}.json", b"first", content_type="application/json", if_absent=True)
                with pytest.raises(AlreadyStored):
                    await storage.put_bytes(f"k{n}.json", b"x", content_type="application/json", if_absent=True)
            await storage.close()
    probes = [seen for seen in proxy.seen if seen[1] == f"/{s3_bucket}/_index/write-probe"]
    assert probes == [("PUT", f"/{s3_bucket}/_index/write-probe", True)] * 3
    assert not [seen for seen in proxy.seen if seen[0] == "HEAD"]  # no check-then-write
    assert not caplog.records
