"""A real headless Chromium (Debian's /usr/bin/chromium) driven by Playwright, for the page tests.

Where chromium or playwright is missing the tests skip with the reason, except under CI
(CI=true), where a skipped browser test would hide a broken page: there they fail.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from tests.support.ci import cannot_run

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def _unavailable(reason: str) -> None:
    cannot_run("browser tests", reason)


@asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    """A Playwright Browser on Debian's chromium; never downloads a browser."""
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        _unavailable("the playwright package is not installed (pip install -e '.[test]')")
    if not os.access(CHROMIUM, os.X_OK):
        _unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            await browser.close()


_RECORD = """async () => {
  const c = document.getElementById('c'), g = c.getContext('2d');
  const rec = new MediaRecorder(c.captureStream(25), {mimeType: 'video/webm'});
  const parts = []; rec.ondataavailable = e => parts.push(e.data);
  let f = 0;
  const timer = setInterval(() => { g.fillStyle = `hsl(${f * 12}, 70%, 50%)`; g.fillRect(0, 0, 160, 120);
    g.fillStyle = '#fff'; g.fillRect(f * 5 % 160, 40, 30, 30); f++; }, 40);
  rec.start(); await new Promise(r => setTimeout(r, 1000)); rec.stop();
  await new Promise(r => rec.onstop = r); clearInterval(timer);
  const bytes = new Uint8Array(await new Blob(parts).arrayBuffer());
  let s = ''; bytes.forEach(x => s += String.fromCharCode(x)); return btoa(s);
}"""


async def record_webm(browser: Any) -> bytes:
    """A real, playable WebM video, recorded by the browser itself from a canvas (about 1 s)."""
    page = await browser.new_page()
    try:
        await page.set_content('<canvas id="c" width="160" height="120"></canvas>')
        return base64.b64decode(await page.evaluate(_RECORD))
    finally:
        await page.close()


ALL_LOADED = "That is everything."
ENDS = (ALL_LOADED, "Nothing matches.", "The archive is empty.")


async def settled(page: Any) -> None:
    """Wait until the gallery has drawn what its filters ask for (its debounce and fetches done)."""
    await page.wait_for_function("() => document.body.dataset.ready && document.body.dataset.state === 'idle'")


async def to_the_end(page: Any) -> None:
    """Scroll the gallery until everything its filters match is drawn."""
    await settled(page)
    for _ in range(200):
        if (await page.text_content("#more")) in ENDS:
            return
        await page.mouse.wheel(0, 20000)
        await asyncio.sleep(0.05)
        await settled(page)
    raise AssertionError(f"the list never ended: {await page.text_content('#stats')}")


async def visible_keys(page: Any) -> list[str]:
    """The keys of the cards drawn and not hidden, in page order."""
    return await page.eval_on_selector_all(
        "#assets [data-key]", "els => els.filter(e => e.offsetParent !== null).map(e => e.dataset.key)")


def recorder(page: Any, base: str) -> list[str]:
    """Every URL the page requests from here on, as a path under `base`; anything outside `base` kept whole."""
    seen: list[str] = []
    page.on("request", lambda r: seen.append(r.url[len(base):] if r.url.startswith(base) else r.url))
    return seen
