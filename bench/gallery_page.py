"""The gallery page in Debian's Chromium (Playwright): bytes and time for the first screen, and for a search.

Bytes are response bodies as Chromium's network layer receives them (CDP `Network.dataReceived`), in a
new browser context for each run, so nothing comes from a cache. A load is over once no byte has
arrived for QUIET seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.support.browser import ARGS, CHROMIUM  # noqa: E402

VIEWPORT = {"width": 1280, "height": 900}
QUIET = 1.5
# The first screen: every <img> and <video> of the page (not the detail dialog's) in the viewport has
# loaded — an image complete, a video with a frame to show (readyState 2). Checked each frame from the
# start; `__images` is the same moment for the images alone, since Chromium may leave a video at its metadata.
FIRST_SCREEN = """(() => {
  const inView = e => { const r = e.getBoundingClientRect();
    return r.width > 0 && r.height > 0 && r.bottom > 0 && r.right > 0 && r.top < innerHeight && r.left < innerWidth; };
  const loaded = e => e.tagName === 'IMG' ? !e.getAttribute('src') || e.complete : e.readyState >= 2 || e.error;
  const tick = () => {
    const media = [...document.querySelectorAll('img, video')].filter(e => !e.closest('dialog') && inView(e));
    const images = media.filter(e => e.tagName === 'IMG');
    if (window.__images === undefined && images.length && images.every(loaded)) window.__images = performance.now();
    if (!media.length || !media.every(loaded)) return requestAnimationFrame(tick);
    window.__firstScreen = performance.now(); window.__media = media.length;
  };
  requestAnimationFrame(tick);
})();"""
SHOWN = """id => [...document.querySelectorAll('img')].some(e => (e.currentSrc || e.src).includes(id) && e.complete
  && e.naturalWidth > 0 && e.checkVisibility() && e.getBoundingClientRect().top < innerHeight)"""


def kind(url: str) -> str:
    path = url.split("://", 1)[-1].partition("/")[2].partition("?")[0]
    if not url.startswith("http") or path == "favicon.ico":
        return "other"
    if path.startswith("_thumbs/"):
        return "thumbnails"
    if path.startswith("_index/"):
        return "index"
    if path in ("", "index.html"):
        return "page"
    return "sidecars" if path.endswith(".json") else "originals ." + path.rpartition(".")[2]


@dataclass
class Net:
    """Bytes received per request, from CDP, and when the last of them arrived."""

    urls: dict[str, str] = field(default_factory=dict)
    got: dict[str, int] = field(default_factory=dict)
    last: float = field(default_factory=time.monotonic)

    def attach(self, cdp: Any) -> None:
        cdp.on("Network.requestWillBeSent", self._sent)
        cdp.on("Network.dataReceived", self._data)

    def _sent(self, e: dict[str, Any]) -> None:
        self.urls[e["requestId"]] = e["request"]["url"]
        self.last = time.monotonic()

    def _data(self, e: dict[str, Any]) -> None:
        self.got[e["requestId"]] = self.got.get(e["requestId"], 0) + e["dataLength"]
        self.last = time.monotonic()

    def reset(self) -> None:
        self.urls.clear()
        self.got.clear()

    def total(self) -> int:
        return sum(n for rid, n in self.got.items() if self.urls.get(rid, "").startswith("http"))

    def by_kind(self) -> dict[str, tuple[int, int]]:
        """kind → (requests, bytes)."""
        out: dict[str, tuple[int, int]] = {}
        for rid, url in self.urls.items():
            if kind(url) == "other":
                continue
            n, b = out.get(kind(url), (0, 0))
            out[kind(url)] = (n + 1, b + self.got.get(rid, 0))
        return out

    async def quiet(self, limit: float = 120.0) -> None:
        deadline = time.monotonic() + limit
        while time.monotonic() - self.last < QUIET and time.monotonic() < deadline:
            await asyncio.sleep(0.1)


@dataclass
class Load:
    ms: float | None  # None: not reached within the limit
    bytes_shown: int  # bytes received until then (for a first screen: until its images loaded)
    bytes_idle: int  # bytes received until the network was quiet
    kinds: dict[str, tuple[int, int]]
    media: int = 0  # <img>/<video> elements in the first screen
    images_ms: float | None = None  # the first screen's images alone


async def _open(browser: Any, url: str) -> tuple[Any, Any, Net]:
    context = await browser.new_context(viewport=VIEWPORT)
    page = await context.new_page()
    await page.add_init_script(FIRST_SCREEN)
    net = Net()
    cdp = await context.new_cdp_session(page)
    net.attach(cdp)
    await cdp.send("Network.enable")
    await page.goto(url, wait_until="commit", timeout=60_000)
    return context, page, net


async def first_screen(browser: Any, url: str, limit: float = 120.0) -> Load:
    """Navigation start → the viewport's images loaded; bytes until then and until the network is quiet."""
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    context, page, net = await _open(browser, url)
    try:
        with contextlib.suppress(PlaywrightTimeout):
            await page.wait_for_function("() => window.__images !== undefined", timeout=limit * 1000)
        shown = net.total()
        with contextlib.suppress(PlaywrightTimeout):  # a video gets 30 s more at most
            await page.wait_for_function("() => window.__firstScreen !== undefined", timeout=30_000)
        ms, media, images = await page.evaluate("[window.__firstScreen, window.__media, window.__images]")
        await net.quiet()
        return Load(ms, shown, net.total(), net.by_kind(), media or 0, images)
    finally:
        await context.close()


async def search(browser: Any, url: str, word: str, task_id: str, box: str, limit: float = 180.0) -> Load:
    """After the first screen: type `word` into `box`; time until the image of `task_id` shows, loaded."""
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    context, page, net = await _open(browser, url)
    try:
        await page.wait_for_function("() => (window.__firstScreen ?? window.__images) !== undefined",
                                     timeout=120_000)
        await net.quiet()
        net.reset()
        started = time.perf_counter()
        await page.fill(box, word)
        try:
            await page.wait_for_function(SHOWN, arg=task_id, timeout=limit * 1000, polling=20)
            ms: float | None = (time.perf_counter() - started) * 1000
        except PlaywrightTimeout:
            ms = None
        shown = net.total()
        await net.quiet()
        return Load(ms, shown, net.total(), net.by_kind())
    finally:
        await context.close()


async def measure(url: str, runs: int, word: str, task_id: str, box: str) -> tuple[list[Load], list[Load]]:
    """`runs` first screens, then up to `runs` searches (one only, when it takes over 20 s)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            firsts = [await first_screen(browser, url) for _ in range(runs)]
            searches = []
            for _ in range(runs):
                searches.append(await search(browser, url, word, task_id, box))
                if searches[-1].ms is None or searches[-1].ms > 20_000:
                    break
        finally:
            await browser.close()
    return firsts, searches
