"""The page in a real headless Chromium: served by `archiver serve` (local and S3) and by a plain static server."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from archiver.browse.serve import app
from tests.browse.conftest import World, found_by, index_world, make_thumbnails, make_world
from tests.support.browser import chromium, record_webm, recorder, settled, to_the_end, visible_keys
from tests.support.servers import serve


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with chromium() as b:
        yield b


async def video_world(tmp_path: Path, browser: Any, request: pytest.FixtureRequest, backend: str) -> World:
    """45 tasks over 3 days, with a real video and a real sound, every thumbnail and poster made, indexed."""
    s3 = None
    if backend == "s3":
        s3 = {"bucket": request.getfixturevalue("s3_bucket"), "prefix": "ai/", "region": "us-east-1",
              "endpoint_url": request.getfixturevalue("moto_server")}
    world = await make_world(tmp_path, backend, s3, tasks=45, days=3, video=await record_webm(browser), audio=True)
    assert await make_thumbnails(world, tmp_path / "scratch")
    await index_world(world)
    return world


async def check_page(page: Any, base: str, world: World, shot: Path) -> None:
    """Everything the issue asks of the page, through what a user sees and clicks."""
    page.set_default_timeout(60_000)  # a shared, loaded machine can be slow; the test's own timeout still holds
    asked = recorder(page, base)
    await page.goto(base + "/")
    await to_the_end(page)
    made = world.made
    assert sorted(await visible_keys(page)) == sorted(a["key"] for a in made.assets)  # every asset, by data-key

    # The grid asks for thumbnails and index files only: never an original, never a sidecar.
    await page.wait_for_function("() => [...document.querySelectorAll('.tile img')].every(i => i.complete)")
    assert all(p == "/" or p.startswith(("/_thumbs/", "/_index/")) for p in asked), asked
    tiles = await page.eval_on_selector_all("#assets [data-key]", """cs => cs.map(c => [c.dataset.media,
        c.querySelector('.tile img')?.getAttribute('src') ?? null, !!c.querySelector('.badge'),
        c.querySelector('.tile').dataset.state])""")
    by_key = dict(zip(await visible_keys(page), tiles, strict=True))
    for a in made.assets:
        media, src, badge, state = by_key[a["key"]]
        if a["media"] == "audio":
            assert (src, state) == (None, "none")  # an icon: audio has no thumbnail
        else:
            assert (src, state, badge) == ("./_thumbs/" + a["key"] + ".webp", "loaded", a["media"] == "video")
    await page.screenshot(path=str(shot))

    # Filters and search narrow the view.
    await page.select_option("#f-provider", "kie")
    await to_the_end(page)
    assert sorted(await visible_keys(page)) == sorted(a["key"] for a in made.assets if a["provider"] == "kie")
    await page.select_option("#f-media", "video")
    await to_the_end(page)
    assert sorted(await visible_keys(page)) == sorted(
        a["key"] for a in made.assets if a["provider"] == "kie" and a["media"] == "video")
    await page.select_option("#f-provider", "")
    await page.select_option("#f-media", "")
    await page.select_option("#f-label", "project=ad")
    await to_the_end(page)
    assert sorted(await visible_keys(page)) == sorted(a["key"] for a in made.assets if a["labels"]["project"] == "ad")
    await page.select_option("#f-label", "")
    target = made.assets[7]
    await page.fill("#q", target["prompt"].upper())
    await to_the_end(page)
    found = await visible_keys(page)
    assert sorted(found) == sorted(a["key"] for a in made.assets if found_by(target["prompt"], a))
    assert target["key"] in found and len(found) < len(made.assets) / 4
    await page.select_option("#f-model", target["model"])
    await to_the_end(page)
    assert target["key"] in await visible_keys(page)
    await page.fill("#q", "")
    await page.select_option("#f-model", "")
    await to_the_end(page)
    assert len(await visible_keys(page)) == len(made.assets)

    # The detail view loads the original and shows the sidecar's fields, with links to the file and the sidecar.
    image = next(a for a in made.assets if a["media"] == "image")
    assert "/" + image["key"] not in asked
    async with page.expect_response(lambda r: r.url.endswith("/" + image["key"])):
        await page.click(f'[data-key="{image["key"]}"] button')
    await page.wait_for_selector("#detail[open]")
    await page.wait_for_function("() => document.querySelector('#detail-media img').naturalWidth > 0")
    await page.wait_for_function("() => document.querySelector('#detail-fields').textContent.includes('source_url')")
    assert await page.get_attribute("#detail-file", "href") == "./" + image["key"]
    assert await page.get_attribute("#detail-sidecar", "href") == "./" + image["key"] + ".json"
    async with page.expect_response(lambda r: r.url.endswith(image["key"] + ".json")) as sidecar:
        await page.evaluate("fetch(document.querySelector('#detail-sidecar').href)")
    assert (await (await sidecar.value).json())["prompt"] == image["prompt"]
    await page.screenshot(path=str(shot.with_name(shot.stem + "-detail.png")))
    await page.click("#close")

    # A video plays in the detail view (the grid showed its poster), and a sound loads.
    video = next(a for a in made.assets if a["media"] == "video")
    await page.click(f'[data-key="{video["key"]}"] button')
    played = await page.eval_on_selector("#detail-media video", """async v => {
        v.muted = true; await v.play();
        await new Promise(done => { const t = () => v.currentTime > 0.2 ? done() : setTimeout(t, 50); t(); });
        return [v.videoWidth, v.played.length, v.getAttribute('src')]; }""")
    assert played == [160, 1, "./" + video["key"]]
    await page.screenshot(path=str(shot.with_name(shot.stem + "-video.png")))
    await page.click("#close")
    sound = next(a for a in made.assets if a["media"] == "audio")
    await page.click(f'[data-key="{sound["key"]}"] button')
    duration = await page.eval_on_selector("#detail-media audio", """a => new Promise(done => {
        if (a.readyState >= 1) return done(a.duration);
        a.addEventListener('loadedmetadata', () => done(a.duration));
        a.addEventListener('error', () => done(-1)); })""")
    assert abs(duration - 0.5) < 0.01
    await page.click("#close")

    # The failed view lists every _failed task with its reason.
    await page.click("#tab-failed")
    await to_the_end(page)
    rows = await page.eval_on_selector_all(
        "#failed-rows tr", "rs => rs.map(r => [r.dataset.record, r.children[2].textContent])")
    assert sorted(rows) == sorted([f["record"], "content_moderation"] for f in made.failed)
    assert [u for u in asked if u.startswith(("http:", "https:", "data:"))] == []  # no request left the archive


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
        await settled(page)
        assert await page.evaluate("document.documentElement.scrollWidth <= innerWidth")  # no sideways scroll
        columns = await page.eval_on_selector(".grid", "g => getComputedStyle(g).gridTemplateColumns.split(' ').length")
        assert columns == 2
        await page.fill("#q", world.made.assets[3]["prompt"])  # on an older day
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
