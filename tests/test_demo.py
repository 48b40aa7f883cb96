"""`archiver demo` end to end, as a user runs it: a subprocess in a fresh folder; then in the same folder a run
cut short by Ctrl-C, and one that finishes its tasks, adds its own and serves the gallery, opened in Chromium."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import wave
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from archiver.archive_format.days import DAY_SCHEMA, INDEX_SCHEMA
from archiver.archive_format.keys import thumb_key
from archiver.archive_format.search import MANIFEST_KEY, read_manifest
from archiver.archive_format.sidecar import ASSET_SCHEMA, FAILED_SCHEMA
from archiver.config import load_config
from archiver.demo.plan import TASKS
from archiver.model import TaskState
from archiver.state import open_state
from tests.support.browser import chromium
from tests.support.daemon import cli

DEMO = [sys.executable, "-m", "archiver", "demo"]
PLANNED = Counter((t.entry, t.ends) for t in TASKS)
STILLS = Counter((t.entry, t.ends) for t in TASKS if not t.video)  # without PyAV: no clips


@dataclass
class FirstRun:
    folder: Path
    out: str
    took: float
    files: dict[str, str]  # every file the run left in the archive but the index → its sha256


def _files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*")
            if p.is_file() and not str(p.relative_to(root)).startswith(("_index/", "index.html"))}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> FirstRun:
    """`archiver demo --no-serve` in a new folder, run once for the tests of this module."""
    folder = tmp_path_factory.mktemp("demo") / "archiver-demo"
    started = time.monotonic()
    done = subprocess.run([*DEMO, "--no-serve", "--dir", str(folder)], capture_output=True, text=True, timeout=100)
    took = time.monotonic() - started
    assert done.returncode == 0, done.stdout + done.stderr
    return FirstRun(folder, done.stdout, took, _files(folder / "archive"))


async def _outcomes(folder: Path) -> dict[str, Counter[tuple[str, str]]]:
    """How the tasks ended, per demo run: (entry, archived or the reason word), counted."""
    state = await open_state(load_config(folder / "config.yaml"))
    try:
        tasks = await state.tasks_in(list(TaskState))
    finally:
        await state.close()
    runs: dict[str, Counter[tuple[str, str]]] = {}
    for t in tasks:
        ended = "archived" if t.state is TaskState.ARCHIVED else str(t.reason) if t.state is TaskState.FAILED \
            else t.state.value
        runs.setdefault(t.labels["demo"], Counter())[(t.provider, ended)] += 1
    return runs


def _sidecars(root: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in root.rglob("*.json")
            if not str(p.relative_to(root)).startswith("_")]


async def test_the_demo_archives_every_task_as_planned(first_run: FirstRun) -> None:
    assert "every task ended as planned" in first_run.out, first_run.out
    assert "tasks: queued 0  polling 0  downloading 0" in first_run.out  # the status, as `archiver status` prints it
    assert first_run.took < 60, f"the demo took {first_run.took:.1f}s"
    log = (first_run.folder / "archiver.log").read_text()
    assert "archiver running: 8 provider entries" in log and "archiver running" not in first_run.out  # to a file
    assert (await _outcomes(first_run.folder))["run-1"] == PLANNED
    root = first_run.folder / "archive"

    sidecars = _sidecars(root)
    media = Counter(s["media"] for s in sidecars)
    assert media["image"] >= 20 and media["audio"] == 1 and media["video"] == 3
    for s in sidecars:
        assert s["schema"] == ASSET_SCHEMA, s["key"]
        data = (root / s["key"]).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (s["bytes"], s["sha256"]), s["key"]
        if s["media"] == "image":
            with Image.open(io.BytesIO(data)) as im:
                im.load()  # decodes every pixel
                assert im.size == (s["width"], s["height"]) and min(im.size) >= 576, s["key"]
        elif s["media"] == "audio":
            with wave.open(io.BytesIO(data)) as w:
                assert w.getnframes() / w.getframerate() > 1
        else:
            assert data[4:8] == b"ftyp" and s["width"] == 480, s["key"]
        if s["media"] in ("image", "video"):  # every picture has a thumbnail, every clip its poster frame
            with Image.open(root / thumb_key(s["key"])) as thumb:
                assert thumb.format == "WEBP" and max(thumb.size) == 400, s["key"]
    expired = [s for s in sidecars if s["model"] == "gpt-image-1" and s["provider"] == "kie"]
    assert expired and "X-Amz" not in expired[0]["source_url"]  # saved by a fresh link that is kept nowhere

    failed = [json.loads(p.read_text()) for p in (root / "_failed").rglob("*.json")]
    assert all(f["schema"] == FAILED_SCHEMA for f in failed)
    assert sorted(f["reason"] for f in failed) == ["content_moderation", "content_moderation", "not_found"]

    days = json.loads((root / "_index" / "days.json").read_text())
    assert days["schema"] == INDEX_SCHEMA
    dates = [d["date"] for d in days["days"]]  # one day, or two if the runs spanned midnight (UTC)
    day_files = [json.loads((root / "_index" / "days" / f"{date}.json").read_text()) for date in dates]
    assert all(f["schema"] == DAY_SCHEMA for f in day_files) and (root / "index.html").exists()
    entries = [a for f in day_files for a in f["assets"]]
    assert sorted(a["key"] for a in entries) == sorted(s["key"] for s in sidecars)  # every run's assets
    assert all(a["thumb"] for a in entries if a["media"] != "audio")
    # The search index's manifest (docs/archive-format.md). The shards take a day once it has ended; until then
    # the page searches the day's own file.
    manifest = read_manifest((root / MANIFEST_KEY).read_bytes())
    assert manifest.through is None or manifest.through < max(dates)  # today is not in the shards yet

    code, out, err = await cli(first_run.folder / "config.yaml", "verify")
    assert code == 0, out + err


async def _cut_short(folder: Path, tmp_path: Path) -> str:
    """A run without PyAV (as `pip install -e .` leaves it), stopped by Ctrl-C while its daemon works; its output."""
    (tmp_path / "no-av").mkdir()
    (tmp_path / "no-av" / "av.py").write_text("raise ImportError('no PyAV here')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "no-av"), os.environ.get("PYTHONPATH", "")]))
    proc = await asyncio.create_subprocess_exec(*DEMO, "--no-serve", "--dir", str(folder), env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
    line += (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
    assert line.startswith("videos: none this time") and "demo run 2: 21 tasks" in line, line
    await asyncio.sleep(1.5)  # the daemon has read the inbox and polls
    proc.send_signal(signal.SIGINT)
    out = line + (await asyncio.wait_for(proc.stdout.read(), 60)).decode()
    assert await proc.wait() == 130, out
    return out


async def test_runs_in_one_folder_add_tasks_finish_a_cut_short_one_and_serve_the_gallery(first_run: FirstRun,
                                                                                        tmp_path: Path) -> None:
    cut = await _cut_short(first_run.folder, tmp_path)
    assert "again finishes" in cut and cut.count("videos: none") == 1, cut
    proc = await asyncio.create_subprocess_exec(*DEMO, "--dir", str(first_run.folder), "--port", "0",
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    try:
        shown = ""
        while "serving the archive" not in shown:
            line = (await asyncio.wait_for(proc.stdout.readline(), 90)).decode()
            assert line, f"the demo ended without serving:\n{shown}{(await proc.stderr.read()).decode()}"  # type: ignore[union-attr]
            shown += line
        url = next(w for w in shown.split() if w.startswith("http://127.0.0.1:"))
        assert "every task ended as planned" in shown and "an earlier run left unfinished" in shown, shown

        runs = await _outcomes(first_run.folder)
        assert runs == {"run-1": PLANNED, "run-2": STILLS, "run-3": PLANNED}
        root = first_run.folder / "archive"
        now = _files(root)
        assert {k: now.get(k) for k in first_run.files} == first_run.files  # nothing of the first run changed
        assert len(now) > len(first_run.files) * 2.5

        keys = [s["key"] for s in _sidecars(root)]
        async with chromium() as browser:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(60_000)
            broken: list[str] = []
            page.on("response", lambda r: broken.append(r.url) if r.status >= 400 else None)
            await page.goto(url)
            await page.wait_for_selector("body[data-ready]")
            shown_keys = await page.eval_on_selector_all("#assets [data-key]", "els => els.map(e => e.dataset.key)")
            assert set(shown_keys) <= set(keys) and len(shown_keys) >= 24  # a page may render a long day in parts
            # The first screen's thumbnails all arrive and decode.
            await page.wait_for_function("""() => [...document.images].filter(i => {
                const r = i.getBoundingClientRect(); return r.bottom > 0 && r.top < innerHeight; })
                .every(i => i.complete && i.naturalWidth > 0)""")
            shot = tmp_path / "demo.png"
            await page.screenshot(path=str(shot))
            print(f"screenshot: {shot}")
            assert broken == []
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)  # Ctrl-C
        code = await asyncio.wait_for(proc.wait(), 30)
    assert code == 0


def test_the_daemon_does_not_import_the_demo() -> None:
    """`archiver run` pays nothing for the demo: importing the CLI leaves its modules unloaded."""
    probe = "import sys, archiver.cli; print(sorted(m for m in sys.modules if m.startswith(('archiver.demo.', " \
            "'archiver.testing', 'PIL.ImageDraw'))))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=30,
                          env=dict(os.environ))
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr
