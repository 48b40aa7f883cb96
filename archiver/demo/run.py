"""`archiver demo` (README.md, quick start): fake providers on 127.0.0.1 serving real media, the real daemon
in burst mode on a config of its own, then the status and the gallery."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import time
import zlib
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TextIO

from archiver import logs
from archiver.config import Config, load_config
from archiver.daemon import Daemon
from archiver.demo import media
from archiver.demo.folder import next_run, queue, write_config
from archiver.demo.plan import ENTRIES, File, Planned, tasks
from archiver.model import TaskState
from archiver.scrub import Redactor
from archiver.state import StateStore, open_state, state_path
from archiver.status import current_status, status_text
from archiver.testing import FakeProviders, FakeTask

NO_VIDEO = "videos: none this time: PyAV, the `video` extra, is not installed (pip install -e '.[video]')"


def demo(folder: Path, port: int | None) -> int:
    """Run the demo in `folder`; serve the gallery on `port` until Ctrl-C unless it is None. 0 if every
    task ended as planned."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "archiver.log", "a", encoding="utf-8") as log:
        return asyncio.run(_demo(folder, port, log))


async def _demo(folder: Path, port: int | None, log: TextIO) -> int:
    started = time.monotonic()
    video = media.video_available()
    if not video:
        print(NO_VIDEO)
    run = next_run(folder / "inbox.txt")
    planned = tasks(video, random.Random())
    bodies = await asyncio.gather(*(asyncio.to_thread(render, t) for t in planned))
    async with FakeProviders() as fakes:
        for t, files in zip(planned, bodies, strict=True):
            if not t.unknown:
                fakes.add(fake_task(t, files, fakes.base))
        config = load_config(write_config(folder, {kind: fakes.base for kind in _types()},
                                          {kind: fakes.api_key for kind in _types()}))
        queue(config.inbox.path, planned, run)
        print(f"demo run {run}: {len(planned)} tasks queued for {len(ENTRIES)} fake provider entries on 127.0.0.1;"
              f" the daemon archives them into {folder / 'archive'} (its log: {folder / 'archiver.log'})",
              flush=True)
        logs.setup(redactor=Redactor.from_config(config), stream=log)
        await _with_progress(Daemon(config, burst=True).run(), config, len(planned))
        refreshed = len(fakes.requests_for("kie:download-url"))
    async with _state(config) as state:
        print(status_text(await current_status(state, config)))
        wrong = await _check(state, planned)
    print(_summary(planned, wrong, refreshed, time.monotonic() - started))
    for line in wrong:
        print(f"  not as planned: {line}")
    print(f"try: archiver -c {folder / 'config.yaml'} verify   (or status, show, index --from-store)")
    if wrong or port is None:
        return 1 if wrong else 0
    return await _serve(config, port)


def render(task: Planned) -> list[bytes]:
    """The task's result files, drawn with its prompt."""
    seed = zlib.crc32(task.task_id.encode())  # each task its own palette and hills
    return [_file(f, task.prompt, seed + i) for i, f in enumerate(task.files)]


def _file(f: File, prompt: str, seed: int) -> bytes:
    if f.kind == "mp4":
        return media.clip(prompt, seed, seed)
    if f.kind == "wav":
        return media.tune()
    return media.picture(media.Picture(prompt, seed % len(media.PALETTES), f.size, f.kind, seed))


def fake_task(t: Planned, files: list[bytes], base: str) -> FakeTask:
    """The fake provider's side of a planned task. An expired URL is the same at every poll, as kie's are: only
    its download-url gives a link that works."""
    kind = ENTRIES[t.entry]
    where = {"acedata": kind.get("service", ""), "fal": "fal-ai/flux"}.get(kind["type"], t.where)
    if kind["type"] == "kie" and "api" in kind:
        where = kind["api"]
    return FakeTask(kind["type"], t.task_id, list(t.steps), list(files), model=t.model, prompt=t.prompt,
                    fail_code=t.fail_code, fail_msg=t.fail_msg, where=where, slow=t.slow, expired=t.expired,
                    urls=[f"{base}/cdn/{t.task_id}/{i}?sig=SIGNED-1" for i in range(len(files))] if t.expired else None)


def _types() -> set[str]:
    return {e["type"] for e in ENTRIES.values()}


async def _with_progress(work: object, config: Config, total: int) -> None:
    """Await the daemon; on a terminal, redraw one line of task counts meanwhile."""
    shown = asyncio.create_task(_progress(config, total)) if sys.stderr.isatty() else None
    try:
        await work  # type: ignore[misc]
    finally:
        if shown is not None:
            shown.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await shown
            print("\r\033[K", end="", file=sys.stderr, flush=True)


async def _progress(config: Config, total: int) -> None:
    state: StateStore | None = None
    try:
        while True:
            await asyncio.sleep(0.25)
            if state is None and state_path(config).exists():
                state = await open_state(config)
            if state is not None:
                counts = await state.counts()
                ended = counts.get("archived", 0) + counts.get("failed", 0)
                line = "  ".join(f"{k} {v}" for k, v in counts.items())
                print(f"\rdaemon: {line}  ({ended} ended)\033[K", end="", file=sys.stderr, flush=True)
    finally:
        if state is not None:
            await state.close()


@contextlib.asynccontextmanager
async def _state(config: Config) -> AsyncIterator[StateStore]:
    state = await open_state(config)
    try:
        yield state
    finally:
        await state.close()


async def _check(state: StateStore, planned: list[Planned]) -> list[str]:
    """What did not end as planned, one line each."""
    ended = {(t.provider, t.task_id): t for t in await state.tasks_in((TaskState.ARCHIVED, TaskState.FAILED))}
    wrong = []
    for p in planned:
        task = ended.get((p.entry, p.task_id))
        got = "not ended" if task is None else "archived" if task.state is TaskState.ARCHIVED else task.reason
        if got != p.ends:
            wrong.append(f"{p.entry} {p.task_id}: {got}, planned {p.ends}")
    return wrong


def _summary(planned: list[Planned], wrong: list[str], refreshed: int, took: float) -> str:
    archived = [p for p in planned if p.ends == "archived"]
    failed = Counter(p.ends for p in planned if p.ends != "archived")
    verdict = "every task ended as planned" if not wrong else f"{len(wrong)} task(s) did not end as planned"
    return (f"demo: {verdict} in {took:.1f}s: {len(archived)} archived ({sum(len(p.files) for p in archived)} files),"
            f" {sum(failed.values())} failed the way providers document ("
            + ", ".join(f"{k} {v}" for k, v in sorted(failed.items())) + ")"
            + (f"; an expired kie URL was saved by a fresh link ({refreshed} asked)" if refreshed else ""))


async def _serve(config: Config, port: int) -> int:
    from archiver.browse.serve import serve  # aiohttp's server only when the gallery is served
    from archiver.storage import open_storage

    try:
        await serve(open_storage(config.storage), f"127.0.0.1:{port}")
    except OSError as e:
        print(f"demo: cannot serve the gallery on 127.0.0.1:{port}: {e.strerror or e}; try --port", file=sys.stderr)
        return 1
    return 0
