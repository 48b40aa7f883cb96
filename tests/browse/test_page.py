"""The page in a real headless Chromium: served by `archiver serve` (local and S3) and by a plain static server."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from archiver.browse.index import rebuild
from archiver.browse.serve import app
from tests.browse.conftest import World, make_world
from tests.support.browser import chromium, record_webm
from tests.support.servers import serve

ALL_LOADED = "That is everything."


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with chromium() as b:
        yield b


async def video_world(tmp_path: Path, browser: Any, request: pytest.FixtureRequest, backend: str) -> World:
    s3 = None
    if backend == "s3":
        s3 = {"bucket": request.getfixturevalue("s3_bucket"), "prefix": "ai/", "region": "us-east-1",
              "endpoint_url": request.getfixturevalue("moto_server")}
    world = await make_world(tmp_path, backend, s3, tasks=45, days=3, video=await record_webm(browser), audio=True)
    await rebuild(world.config, world.storage, from_store=False)
    return world


async def open_everything(page: Any, url: str) -> None:
    """Open the page and scroll until every day file is loaded."""
    await page.goto(url)
    await page.wait_for_selector("body[data-ready]")
    for _ in range(100):
        if (await page.text_content("#more")) == ALL_LOADED:
            return
        await page.mouse.wheel(0, 20000)
        await asyncio.sleep(0.1)
    raise AssertionError(f"not every day loaded: {await page.text_content('#stats')}")


async def visible_keys(page: Any) -> list[str]:
    return await page.eval_on_selector_all(
        "#assets [data-key]", "els => els.filter(e => e.offsetParent !== null).map(e => e.dataset.key)")


async def check_page(page: Any, base: str, world: World, shot: Path) -> None:
    """Everything the issue asks of the page, through what a user sees and clicks."""
    page.set_default_timeout(60_000)  # a shared, loaded machine can be slow; the test's own timeout still holds
    outside: list[str] = []
    page.on("request", lambda r: None if r.url.startswith(base) else outside.append(r.url))
    await open_everything(page, base + "/")
    made = world.made
    assert sorted(await visible_keys(page)) == sorted(a["key"] for a in made.assets)  # every asset, by data-key

    # Videos load their source (with Range, as a browser asks for media).
    video = made.assets[[a["media"] for a in made.assets].index("video")]["key"]
    loaded = await page.eval_on_selector(f'[data-key="{video}"] video', """v => new Promise(done => {
        if (v.readyState >= 1) return done(v.videoWidth);
        v.addEventListener('loadedmetadata', () => done(v.videoWidth)); v.addEventListener('error', () => done(-1));
        v.load(); })""")
    assert loaded == 160
    sound = made.assets[[a["media"] for a in made.assets].index("audio")]["key"]
    duration = await page.eval_on_selector(f'[data-key="{sound}"] audio', """a => new Promise(done => {
        if (a.readyState >= 1) return done(a.duration);
        a.addEventListener('loadedmetadata', () => done(a.duration)); a.addEventListener('error', () => done(-1));
        a.preload = 'metadata'; a.load(); })""")
    assert abs(duration - 0.5) < 0.01
    await page.screenshot(path=str(shot))

    # Filters and search narrow the view.
    await page.select_option("#f-provider", "kie")
    assert sorted(await visible_keys(page)) == sorted(a["key"] for a in made.assets if a["provider"] == "kie")
    await page.select_option("#f-media", "video")
    assert sorted(await visible_keys(page)) == sorted(
        a["key"] for a in made.assets if a["provider"] == "kie" and a["media"] == "video")
    await page.select_option("#f-provider", "")
    await page.select_option("#f-media", "")
    await page.select_option("#f-label", "project=ad")
    assert sorted(await visible_keys(page)) == sorted(a["key"] for a in made.assets if a["labels"]["project"] == "ad")
    await page.select_option("#f-label", "")
    target = made.assets[7]
    await page.fill("#q", target["prompt"].upper())
    words = target["prompt"].lower().split()  # every word must occur in the prompt, in any case
    found = sorted(await visible_keys(page))
    assert found == sorted(a["key"] for a in made.assets if all(w in a["prompt"].lower() for w in words))
    assert target["key"] in found and len(found) < len(made.assets) / 4
    await page.select_option("#f-model", target["model"])
    assert await visible_keys(page)
    await page.fill("#q", "")
    await page.select_option("#f-model", "")
    assert len(await visible_keys(page)) == len(made.assets)

    # The detail view shows the sidecar's fields and links to the file and the sidecar.
    await page.click(f'[data-key="{target["key"]}"] button')
    await page.wait_for_selector("#detail[open]")
    await page.wait_for_function("() => document.querySelector('#detail-fields').textContent.includes('source_url')")
    assert await page.get_attribute("#detail-file", "href") == "./" + target["key"]
    assert await page.get_attribute("#detail-sidecar", "href") == "./" + target["key"] + ".json"
    async with page.expect_response(lambda r: r.url.endswith(target["key"] + ".json")) as sidecar:
        await page.evaluate("fetch(document.querySelector('#detail-sidecar').href)")
    assert (await (await sidecar.value).json())["prompt"] == target["prompt"]
    await page.click("#close")

    # The failed view lists every _failed task with its reason.
    await page.click("#tab-failed")
    rows = await page.eval_on_selector_all(
        "#failed-rows tr", "rs => rs.map(r => [r.dataset.record, r.children[2].textContent])")
    assert sorted(rows) == sorted([f["record"], "content_moderation"] for f in made.failed)
    assert outside == []  # no request left the archive


@pytest.mark.parametrize("backend", ["local", "s3"])
async def test_page_over_archiver_serve(tmp_path: Path, browser: Any, request: pytest.FixtureRequest,
                                        backend: str) -> None:
    world = await video_world(tmp_path, browser, request, backend)
    try:
        async with serve(app(world.storage)) as base:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            await check_page(page, base, world, tmp_path / f"gallery-{backend}.png")
            print(f"screenshot: {tmp_path / f'gallery-{backend}.png'}")
    finally:
        await world.storage.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_page_over_a_static_server_under_a_prefix(tmp_path: Path, browser: Any,
                                                        request: pytest.FixtureRequest) -> None:
    """`python -m http.server` over the folder above the archive: the page lives at /archive/."""
    world = await video_world(tmp_path, browser, request, "local")
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "-d", str(tmp_path),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}/archive"
        page = await browser.new_page()
        for _ in range(100):
            try:
                await page.goto(base + "/")
                break
            except Exception:
                await asyncio.sleep(0.1)
        await check_page(page, base, world, tmp_path / "gallery-static.png")
    finally:
        proc.terminate()
        await proc.wait()
        await world.storage.close()


async def test_phone_sized_screen(tmp_path: Path, browser: Any, request: pytest.FixtureRequest) -> None:
    world = await video_world(tmp_path, browser, request, "local")
    async with serve(app(world.storage)) as base:
        context = await browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True,
                                            device_scale_factor=2)
        page = await context.new_page()
        await page.goto(base + "/")
        await page.wait_for_selector("body[data-ready]")
        assert await page.evaluate("document.documentElement.scrollWidth <= innerWidth")  # no sideways scroll
        columns = await page.eval_on_selector(".grid", "g => getComputedStyle(g).gridTemplateColumns.split(' ').length")
        assert columns == 2
        await page.fill("#q", world.made.assets[3]["prompt"])  # on an older day: loaded on demand
        await page.wait_for_selector(f'[data-key="{world.made.assets[3]["key"]}"]', state="visible")
        await page.screenshot(path=str(tmp_path / "gallery-phone.png"))
        print(f"screenshot: {tmp_path / 'gallery-phone.png'}")
        await context.close()


async def test_empty_archive_says_how_to_build_the_index(tmp_path: Path, browser: Any) -> None:
    world = await make_world(tmp_path, "local", tasks=0, days=1)
    (world.config.storage.local.root).mkdir(parents=True, exist_ok=True)
    from archiver.browse.index import page as page_html

    (world.config.storage.local.root / "index.html").write_bytes(page_html())
    async with serve(app(world.storage)) as base:
        page = await browser.new_page()
        await page.goto(base + "/")
        await page.wait_for_selector("body[data-ready]")
        assert "archiver index --rebuild" in (await page.text_content("#stats") or "")
