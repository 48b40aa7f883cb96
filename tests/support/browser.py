"""A real headless Chromium (Debian's /usr/bin/chromium) driven by Playwright, for the page tests.

Where chromium or playwright is missing the tests skip with the reason, except under CI
(CI=true), where a skipped browser test would hide a broken page: there they fail.
"""

from __future__ import annotations

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
