"""Scenario 6: the browse index at 100,000 assets over 60 days (design.md §10).

The archive is generated straight into a state DB and a local store (tests/support/archive.py),
then timed: `archiver index --rebuild` (from the state DB), `archiver index --from-store`
(from the sidecars), the largest day file, and the page's first screen in headless Chromium.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml
from measure import Child, free_port, wait_port
from scenarios import PY, Row

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.support, shared with the tests

from tests.support.archive import TYPES, generate, write_local  # noqa: E402
from tests.support.browser import ARGS, CHROMIUM  # noqa: E402



def browse(assets: int, base: Path, days: int = 60) -> list[Row]:
    folder = Path(tempfile.mkdtemp(prefix="archiver-bench-browse-", dir=base))
    try:
        return _run(folder, assets, days)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run(folder: Path, assets: int, days: int) -> list[Row]:
    providers = {n: {"type": k, "api_key": "bench"} | ({"service": "seedance"} if k == "acedata" else {})
                 for n, k in TYPES.items()}
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump({"state_dir": str(folder / "state"), "providers": providers,
                                      "storage": {"local": {"root": str(folder / "archive")}}}))
    started = time.monotonic()
    (folder / "state").mkdir()
    tasks = round(assets / (0.96 * 1.75))  # one task in 25 fails; the others hold 1.75 assets on average
    made = generate(folder / "state/archiver.db", tasks, days, images=200)
    write_local(folder / "archive", made)
    print(f"  generated {len(made.assets):,} assets, {len(made.failed):,} failed tasks over {days} days "
          f"in {time.monotonic() - started:.0f} s", flush=True)
    rows = []
    for name, flags in (("6 index --rebuild (state DB)", ["--rebuild"]), ("6 index --from-store", ["--from-store"])):
        usage = Child([PY, "-m", "archiver", "-c", str(config), "index", *flags], folder / "index.log").wait()
        assert usage.code == 0, (folder / "index.log").read_text()[-2000:]
        rows.append(Row(name, usage.wall, None, len(made.assets) / usage.wall, usage.cpu, usage.peak_rss_mib,
                        f"{len(made.assets):,} assets, {days} days"))
    largest = max((folder / "archive/_index/days").iterdir(), key=lambda p: p.stat().st_size)
    rows[-1].note += f"; largest day file {largest.stat().st_size / 2**20:.2f} MiB ({largest.name})"
    port = free_port()
    server = Child([PY, "-m", "archiver", "-c", str(config), "serve", "--listen", f"127.0.0.1:{port}"],
                   folder / "serve.log")
    try:
        wait_port(port)
        first, ready = asyncio.run(first_screen(f"http://127.0.0.1:{port}/"))
    finally:
        serve_usage = server.stop()
    rows.append(Row("6 page first screen (Chromium)", first, None, None, serve_usage.cpu, serve_usage.peak_rss_mib,
                    f"first asset element at {first * 1000:.0f} ms, first day loaded at {ready * 1000:.0f} ms "
                    "after navigation (median of 5, warm server); RSS is archiver serve's"))
    return rows


# Notes the moment the first asset element enters the document.
FIRST_ASSET = """new MutationObserver((_, o) => { if (document.querySelector('[data-key]')) {
  window.__first = performance.now(); o.disconnect(); } }).observe(document, {childList: true, subtree: true});"""


async def first_screen(url: str, runs: int = 5) -> tuple[float, float]:
    """Seconds from navigation start to the first asset element, and to the page being ready."""
    from playwright.async_api import async_playwright

    firsts, readies = [], []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        for _ in range(runs):
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            await page.add_init_script(FIRST_ASSET)
            await page.goto(url)
            await page.wait_for_selector("body[data-ready]", timeout=60_000)
            firsts.append(await page.evaluate("window.__first") / 1000)
            readies.append(await page.evaluate("performance.now()") / 1000)
            await page.close()
        await browser.close()
    return sorted(firsts)[runs // 2], sorted(readies)[runs // 2]
