"""`archiver serve`'s app over a generated archive, on local disk and moto S3, through real HTTP."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest

from archiver.browse.index import rebuild
from archiver.browse.serve import app, byte_range, key_of
from archiver.storage.local import MARKER, root_id
from tests.browse.conftest import World, make_world
from tests.support.servers import serve


@pytest.fixture
async def served(world: World) -> AsyncIterator[tuple[World, str]]:
    await rebuild(world.config, world.storage, from_store=False)
    async with serve(app(world.storage)) as base:
        yield world, base


async def raw(base: str, request_line: str) -> tuple[int, bytes]:
    """Send the request line byte for byte (no client normalising the path); return status and body."""
    url = urlsplit(base)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    writer.write(f"{request_line} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    answer = await reader.read()
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_serves_page_assets_and_sidecars(served: tuple[World, str]) -> None:
    world, base = served
    asset = world.made.assets[0]["key"]
    body, _ = world.made.objects[asset]
    async with aiohttp.ClientSession() as http:
        async with http.get(base + "/") as r:
            assert r.status == 200 and r.content_type == "text/html"
            assert b"dataset.key" in await r.read()
        async with http.get(f"{base}/{asset}") as r:
            assert r.status == 200 and r.content_type == "image/png"
            assert r.headers["Accept-Ranges"] == "bytes"
            assert await r.read() == body
        async with http.get(f"{base}/{asset}.json") as r:
            assert r.content_type == "application/json" and (await r.json())["key"] == asset
        async with http.get(f"{base}/_index/days.json") as r:
            assert r.status == 200 and r.headers["Cache-Control"] == "no-cache"
        async with http.head(f"{base}/{asset}") as r:
            assert r.status == 200 and int(r.headers["Content-Length"]) == len(body) and await r.read() == b""


async def test_range_requests(served: tuple[World, str]) -> None:
    world, base = served
    asset = world.made.assets[0]["key"]
    body, _ = world.made.objects[asset]
    size = len(body)
    async with aiohttp.ClientSession() as http:
        for header, part in (("bytes=10-19", body[10:20]), ("bytes=-5", body[-5:]), ("bytes=100-", body[100:]),
                             (f"bytes=0-{size + 50}", body)):
            async with http.get(f"{base}/{asset}", headers={"Range": header}) as r:
                assert r.status == 206, header
                assert await r.read() == part, header
                start = size - len(part)if header == "bytes=-5" else int(header[6:].split("-")[0])
                assert r.headers["Content-Range"] == f"bytes {start}-{start + len(part) - 1}/{size}"
        async with http.get(f"{base}/{asset}", headers={"Range": f"bytes={size}-"}) as r:
            assert r.status == 416 and r.headers["Content-Range"] == f"bytes */{size}"
        async with http.get(f"{base}/{asset}", headers={"Range": "bytes=0-1,5-9"}) as r:
            assert r.status == 200 and await r.read() == body  # several ranges: the whole body


async def test_read_only(served: tuple[World, str]) -> None:
    world, base = served
    asset = world.made.assets[0]["key"]
    async with aiohttp.ClientSession() as http:
        for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
            async with http.request(method, f"{base}/{asset}", data=b"x") as r:
                assert r.status == 405, method
                assert set(r.headers["Allow"].split(",")) == {"GET", "HEAD"}
    assert await world.storage.get(asset) == world.made.objects[asset][0]


OUTSIDE = ["/../config.yaml", "/%2e%2e/config.yaml", "/%2E%2E/%2e%2e/etc/passwd", "/kie/../../config.yaml",
           "//etc/passwd", "/%2fetc/passwd", "/etc/passwd", "/.%2e/config.yaml", "/kie%5c..%5c..%5cconfig.yaml",
           "/kie/", "/kie", "/_index/", "/_index/days", "/nope.png", "/%00", "/./index.html", "http://evil/x"]


async def test_nothing_outside_the_root_and_no_listing(served: tuple[World, str]) -> None:
    world, base = served
    for path in OUTSIDE:
        status, body = await raw(base, f"GET {path}")
        assert status in (400, 404), (path, status)
        assert b"unused" not in body and b"root:" not in body  # neither the config nor /etc/passwd leaked


def test_key_of() -> None:
    assert key_of("/") == "index.html"
    assert key_of("/kie/2026/t:1/00.png?x=1") == "kie/2026/t:1/00.png"
    assert key_of("/a%20b/c.png") == "a b/c.png"
    for bad in ("/..", "/a/%2e%2e/b", "//x", "/a/", "x", "/a\\b"):
        assert key_of(bad) is None, bad


def test_byte_range() -> None:
    assert byte_range(None, 10) is None
    assert byte_range("bytes=2-4", 10) == (2, 5)
    assert byte_range("bytes=-3", 10) == (7, 10)
    assert byte_range("bytes=-30", 10) == (0, 10)
    assert byte_range("items=1-2", 10) is None
    with pytest.raises(ValueError):
        byte_range("bytes=10-", 10)
    with pytest.raises(ValueError):
        byte_range("bytes=5-2", 10)


async def test_cli_serve(world: World) -> None:
    """The real command serves the page and an asset, and stops cleanly on SIGTERM."""
    await rebuild(world.config, world.storage, from_store=False)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "archiver", "-c", str(world.config_path), "serve", "--listen", "127.0.0.1:0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()  # type: ignore[union-attr]
        assert "http://127.0.0.1:" in line, line
        base = next(w for w in line.split() if w.startswith("http://")).rstrip("/")
        async with aiohttp.ClientSession() as http:
            async with http.get(base + "/") as r:
                assert r.status == 200 and r.content_type == "text/html"
            async with http.get(f"{base}/{world.made.assets[0]['key']}") as r:
                assert await r.read() == world.made.objects[world.made.assets[0]["key"]][0]
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 20) == 0


async def test_local_serves_no_symlink_and_not_the_marker(tmp_path: Path) -> None:
    """Links planted in a local archive lead nowhere: not to /etc/passwd, not to the state DB,
    not through a linked folder; the root's marker file is a 404 too, as on S3."""
    world = await make_world(tmp_path, "local", tasks=4, days=1)
    await rebuild(world.config, world.storage, from_store=False)
    root = tmp_path / "archive"
    root_id(root)
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0 the secret")
    asset = world.made.assets[0]["key"]
    (root / "passwd.txt").symlink_to(secret)
    (root / "etc-passwd").symlink_to("/etc/passwd")
    (root / "state").symlink_to(world.db.parent, target_is_directory=True)
    (root / "linked").symlink_to(tmp_path, target_is_directory=True)
    (root / "inside.png").symlink_to(root / asset)  # even a link that stays inside is no object
    os.mkfifo(root / "fifo.png")
    assert world.db.exists()
    async with serve(app(world.storage)) as base, aiohttp.ClientSession() as http:
        for path in ("/passwd.txt", "/etc-passwd", "/state/archiver.db", "/linked/secret.txt",
                     "/linked/state/archiver.db", "/inside.png", "/fifo.png", f"/{MARKER}"):
            for method in ("GET", "HEAD"):
                async with http.request(method, base + path) as r:
                    body = await r.read()
                    assert r.status == 404, (method, path, r.status, body[:300])
                    assert b"secret" not in body and b"SQLite" not in body and b"root:" not in body
        async with http.get(f"{base}/{asset}") as r:
            assert r.status == 200 and await r.read() == world.made.objects[asset][0]
    await world.storage.close()
