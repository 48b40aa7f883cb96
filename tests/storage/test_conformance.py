"""One suite every storage backend must pass: LocalStorage on tmp_path, S3Storage on moto, and
S3Storage on a store that ignores `If-None-Match` without a word (s3rver's manners, played by the proxy)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from archiver.archive_format.keys import WRITE_PROBE_KEY
from archiver.config import S3Config
from archiver.errors import AlreadyStored
from archiver.storage import LocalStorage, Storage
from archiver.storage.s3 import S3Storage
from tests.support.s3proxy import S3Proxy
from tests.support.servers import serve

PNG = "image/png"


@dataclass
class Backend:
    name: str
    storage: Storage
    keys: Callable[[], list[str]]  # every stored key, sorted, to count objects
    parts: Callable[[str], int]  # how many parts the store wrote a key in


def _local(root: Path) -> Backend:
    def keys() -> list[str]:
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())

    return Backend("local", LocalStorage(root), keys, lambda key: 1)


def _s3(client: Any, bucket: str, endpoint: str) -> Backend:
    config = S3Config(bucket=bucket, prefix="pre", endpoint_url=endpoint, region="us-east-1")

    def keys() -> list[str]:
        listed = client.list_objects_v2(Bucket=bucket).get("Contents", [])
        # The probe start() writes (storage/s3.py) is the backend's own, not the suite's.
        return sorted(key for o in listed if (key := o["Key"].removeprefix("pre/")) != WRITE_PROBE_KEY)

    def parts(key: str) -> int:
        etag = client.head_object(Bucket=bucket, Key=f"pre/{key}")["ETag"].strip('"')
        return int(etag.rpartition("-")[2]) if "-" in etag else 1  # multipart ETags end "-N"

    return Backend("s3", S3Storage(config), keys, parts)


@pytest.fixture(params=["local", "s3", "s3-ignoring-conditions"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "local":
        b = _local(tmp_path / "archive")
        await b.storage.start()
        yield b
        await b.storage.close()
        return
    # moto checks no signature: the proxy does, on every request as it arrives.
    proxy = S3Proxy(request.getfixturevalue("moto_server"), ignore_conditions=request.param != "s3")
    async with serve(proxy.app()) as url:
        b = _s3(request.getfixturevalue("s3_client"), request.getfixturevalue("s3_bucket"), url)
        await b.storage.start()
        yield b
        await b.storage.close()


def staged(tmp_path: Path, data: bytes) -> tuple[Path, str]:
    path = tmp_path / f"staged-{hashlib.sha256(data).hexdigest()[:8]}"
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def sparse_file(path: Path, size: int) -> None:
    """A file of `size` bytes that is mostly a hole with a few marks: quick to make."""
    with open(path, "wb") as f:
        f.truncate(size)
        for offset in (0, 8 * 1024**2 + 7, 64 * 1024**2, size - 5):
            f.seek(offset)
            f.write(b"mark")


class TestConformance:
    async def test_put_bytes_then_read(self, backend: Backend) -> None:
        s = backend.storage
        await s.put_bytes("a/b.json", b'{"x": 1}', content_type="application/json")
        assert await s.exists("a/b.json")
        assert await s.get("a/b.json") == b'{"x": 1}'
        assert (await s.stat("a/b.json")).size == 8
        assert backend.keys() == ["a/b.json"]

    async def test_put_file_then_read(self, backend: Backend, tmp_path: Path) -> None:
        content = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
        source, digest = staged(tmp_path, content)
        await backend.storage.put_file("p/00.png", source, content_type=PNG, sha256=digest)
        assert await backend.storage.get("p/00.png") == content
        info = await backend.storage.stat("p/00.png")
        assert info.size == len(content)
        assert info.sha256 in (None, digest)  # a backend may report the digest or not
        # A backend may keep `source` or move it into place (local disk does).

    async def test_missing_key(self, backend: Backend) -> None:
        s = backend.storage
        await s.put_bytes("dir/x.json", b"{}", content_type="application/json")
        for key in ("nope.png", "dir/nope.png", "dir", "dir/x.json/deeper"):
            assert not await s.exists(key), key
            with pytest.raises(FileNotFoundError):
                await s.stat(key)
            with pytest.raises(FileNotFoundError):
                await s.get(key)

    async def test_same_key_twice_is_one_object(self, backend: Backend, tmp_path: Path) -> None:
        s = backend.storage
        await s.put_bytes("k/00.png", b"first", content_type=PNG)
        source, digest = staged(tmp_path, b"second, longer")
        await s.put_file("k/00.png", source, content_type=PNG, sha256=digest)
        assert await s.get("k/00.png") == b"second, longer"
        await s.put_bytes("k/00.png", b"third", content_type=PNG)
        assert await s.get("k/00.png") == b"third"
        assert (await s.stat("k/00.png")).size == 5
        assert backend.keys() == ["k/00.png"]

    async def test_put_bytes_if_absent(self, backend: Backend) -> None:
        s = backend.storage
        await s.put_bytes("c/00.json", b"first", content_type="application/json", if_absent=True)
        with pytest.raises(AlreadyStored, match="c/00.json") as caught:
            await s.put_bytes("c/00.json", b"second", content_type="application/json", if_absent=True)
        assert caught.value.key == "c/00.json"
        assert await s.get("c/00.json") == b"first"
        assert backend.keys() == ["c/00.json"]

    async def test_put_file_if_absent(self, backend: Backend, tmp_path: Path) -> None:
        """The first write lands; the second leaves it, and its own source, as they were."""
        s = backend.storage
        first, first_digest = staged(tmp_path, b"\x89PNG first")
        await s.put_file("c/00.png", first, content_type=PNG, sha256=first_digest, if_absent=True)
        second, second_digest = staged(tmp_path, b"\x89PNG second, longer")
        with pytest.raises(AlreadyStored, match="c/00.png"):
            await s.put_file("c/00.png", second, content_type=PNG, sha256=second_digest, if_absent=True)
        with pytest.raises(AlreadyStored):
            await s.put_bytes("c/00.png", b"third", content_type=PNG, if_absent=True)
        assert await s.get("c/00.png") == b"\x89PNG first"
        assert (await s.stat("c/00.png")).size == len(b"\x89PNG first")
        assert second.read_bytes() == b"\x89PNG second, longer"
        assert backend.keys() == ["c/00.png"]
        await s.put_file("c/00.png", second, content_type=PNG, sha256=second_digest)  # replaces, as before
        assert await s.get("c/00.png") == b"\x89PNG second, longer"
        assert backend.keys() == ["c/00.png"]

    @pytest.mark.parametrize("key", [
        "kie/2026/11/22/a.b_c:d-E9/00.png",
        "x/ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-/01.mp4",
        "_failed/kie/task-1.json",
        "top.png",
    ])
    async def test_every_allowed_character(self, backend: Backend, key: str) -> None:
        await backend.storage.put_bytes(key, key.encode(), content_type=PNG)
        assert await backend.storage.get(key) == key.encode()
        assert backend.keys() == [key]

    @pytest.mark.parametrize("key", [
        "../x", "/etc/passwd", "a/../../b", "a\x00b", "", "a//b", "./a", "a/", "a\\..\\b",
        "a/.00.png.tmp-0123456789ab",
    ])
    async def test_hostile_key_refused(self, backend: Backend, key: str) -> None:
        s = backend.storage
        with pytest.raises(ValueError):
            await s.put_bytes(key, b"x", content_type=PNG)
        for read in (s.get, s.exists, s.stat):
            with pytest.raises(ValueError):
                await read(key)
        assert backend.keys() == []

    async def test_missing_source_is_callers_error(self, backend: Backend, tmp_path: Path) -> None:
        """A lost staging file is not a store failure: its own FileNotFoundError travels."""
        with pytest.raises(FileNotFoundError, match="staged"):
            await backend.storage.put_file("k.png", tmp_path / "staged", content_type=PNG,
                                           sha256="00" * 32)
        assert backend.keys() == []

    async def test_asset_then_sidecar(self, backend: Backend, tmp_path: Path) -> None:
        key = "kie/2026/11/22/t1/00.png"
        source, digest = staged(tmp_path, b"asset bytes")
        await backend.storage.put_file(key, source, content_type=PNG, sha256=digest)
        await backend.storage.put_bytes(key + ".json", b'{"sha256": "..."}',
                                        content_type="application/json")
        assert await backend.storage.exists(key)
        assert await backend.storage.exists(key + ".json")
        assert backend.keys() == [key, key + ".json"]

    async def test_large_file(self, backend: Backend, tmp_path: Path) -> None:
        """70 MiB: above the 64 MiB multipart threshold on S3."""
        source, size = tmp_path / "big.mp4", 70 * 1024**2
        sparse_file(source, size)
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
        await backend.storage.put_file("v/00.mp4", source, content_type="video/mp4", sha256=digest)
        assert (await backend.storage.stat("v/00.mp4")).size == size
        assert hashlib.sha256(await backend.storage.get("v/00.mp4")).hexdigest() == digest
        assert backend.parts("v/00.mp4") >= (2 if backend.name.startswith("s3") else 1)

    async def test_list(self, backend: Backend, tmp_path: Path) -> None:
        s = backend.storage
        for key, body in (("kie/2026/a/00.png", b"12345"), ("kie/2026/a/00.png.json", b"{}"),
                          ("kie/2027/b/00.mp4", b"x"), ("_failed/kie/t.json", b"{}"), ("index.html", b"<p>")):
            await s.put_bytes(key, body, content_type=PNG)
        everything = {item.key: item async for item in s.list()}
        assert sorted(everything) == backend.keys()
        assert everything["kie/2026/a/00.png"].size == 5
        assert everything["index.html"].modified > 0
        assert sorted([i.key async for i in s.list("kie/2026/")]) == ["kie/2026/a/00.png", "kie/2026/a/00.png.json"]
        assert sorted([i.key async for i in s.list("kie/202")]) == [
            "kie/2026/a/00.png", "kie/2026/a/00.png.json", "kie/2027/b/00.mp4"]
        assert [i.key async for i in s.list("_failed/")] == ["_failed/kie/t.json"]
        assert [i.key async for i in s.list("nothing/here/")] == []

    async def test_read_streams_ranges(self, backend: Backend, tmp_path: Path) -> None:
        content = bytes(range(256)) * 4096  # 1 MiB: several chunks
        source, digest = staged(tmp_path, content)
        await backend.storage.put_file("v/00.mp4", source, content_type="video/mp4", sha256=digest)
        chunks = [c async for c in backend.storage.read("v/00.mp4")]
        assert b"".join(chunks) == content
        assert len(chunks) > 1 and max(map(len, chunks)) <= 256 * 1024  # bounded memory per chunk
        assert b"".join([c async for c in backend.storage.read("v/00.mp4", 1000, 5000)]) == content[1000:5000]
        assert b"".join([c async for c in backend.storage.read("v/00.mp4", len(content) - 3)]) == content[-3:]
        assert [c async for c in backend.storage.read("v/00.mp4", 10, 10)] == []
        with pytest.raises(FileNotFoundError):
            [c async for c in backend.storage.read("v/nope.mp4")]
        with pytest.raises(ValueError):
            [c async for c in backend.storage.read("../x")]

    async def test_stat_reports_type(self, backend: Backend, tmp_path: Path) -> None:
        source, digest = staged(tmp_path, b"\x89PNG\r\n\x1a\n" + b"x" * 100)
        await backend.storage.put_file("p/00.png", source, content_type=PNG, sha256=digest)
        await backend.storage.put_bytes("p/00.png.json", b"{}", content_type="application/json")
        info = await backend.storage.stat("p/00.png")
        assert info.content_type == PNG
        assert info.checksum in (None, digest)  # the store's own digest, where it keeps one
        assert (await backend.storage.stat("p/00.png.json")).content_type == "application/json"
