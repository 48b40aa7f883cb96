"""`archiver demo` (README.md, quick start): fake providers on 127.0.0.1 serving real media, the real daemon
in burst mode on a config of its own, then the status and the gallery."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import sys
import time
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any, TextIO

from archiver import logs
from archiver.config import Config, load_config
from archiver.daemon import Daemon
from archiver.demo import media
from archiver.demo.folder import next_run, queue, recorded, write_config
from archiver.demo.plan import ENTRIES, File, Planned, again, tasks
from archiver.model import TaskState
from archiver.scrub import Redactor
from archiver.state import StateStore, open_state, state_path
from archiver.status import current_status, status_text
from archiver.testing import FakeProviders, fails, succeeds

NO_VIDEO = "videos: none this time: PyAV, the `video` extra, is not installed (pip install -e '.[video]')"


def demo(folder: Path, port: int | None) -> int:
    """Run the demo in `folder`; serve the gallery on `port` until Ctrl-C unless it is None. 0 if every
    task ended as planned."""
    if port is not None and not _free(port):
        print(f"demo: 127.0.0.1:{port} is taken (another demo?): pass --port PORT, or --no-serve", file=sys.stderr)
        return 2
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
    async with FakeProviders(poll_interval="0.5s") as fakes:
        config = load_config(write_config(folder, {name: entry(fakes, name) for name in ENTRIES}))
        left = await _unfinished(config, folder)  # by an earlier run cut short: the new fakes know them too
        bodies = await asyncio.gather(*(asyncio.to_thread(render, t) for t in planned + left))
        for t, files in zip(planned + left, bodies, strict=True):
            if not t.unknown:
                fake_task(fakes, t, files)
        queue(folder, config.inbox.path, planned, run)
        print(f"demo run {run}: {len(planned)} tasks queued for {len(ENTRIES)} fake provider entries on 127.0.0.1"
              + (f", and {len(left)} an earlier run left unfinished" if left else "")
              + f"; the daemon archives them into {folder / 'archive'} (its log: {folder / 'archiver.log'})",
              flush=True)
        logs.setup(redactor=Redactor.from_config(config), stream=log)
        await _with_progress(Daemon(config, burst=True).run(), config, len(planned) + len(left))
        refreshed = len(fakes.requests(api="kie:download-url"))
    async with _state(config) as state:
        print(status_text(await current_status(state, config)))
        wrong = await _check(state, planned + left)
    if any(got == "not ended" for got in wrong.values()):
        print(f"\ndemo: stopped before every task ended; `archiver demo --dir {folder}` again finishes them")
        return 130
    print(_summary(planned + left, wrong, refreshed, time.monotonic() - started))
    print(f"try: archiver -c {folder / 'config.yaml'} verify   (or status, show, index --from-store)")
    if wrong or port is None:
        return 1 if wrong else 0
    return await _serve(config, port)


async def _unfinished(config: Config, folder: Path) -> list[Planned]:
    """The tasks earlier runs queued that have not ended (their inbox lines maybe not even read), as planned."""
    plans = recorded(folder)
    ended: set[tuple[str, str]] = set()
    if plans and state_path(config).exists():
        async with _state(config) as state:
            ended = {(t.provider, t.task_id) for t in await state.tasks_in((TaskState.ARCHIVED, TaskState.FAILED))}
    return [again(plan, key[1]) for key, plan in plans.items() if key not in ended]


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


def fake_task(fakes: FakeProviders, t: Planned, files: list[bytes]) -> None:
    """The fake provider's side of a planned task: two polls "running", then its end."""
    entry = ENTRIES[t.entry]
    where = entry.get("api") or entry.get("service") or t.where or None  # None: the kit's default (fal's app)
    outcome = succeeds(*files) if t.ends == "archived" else fails()  # fails(): the provider's documented code
    fakes.task(entry["type"], outcome, task_id=t.task_id, where=where, running_polls=2, running_seconds=t.running,
               expiring=t.expired, download_seconds=t.slow, model=t.model, prompt=t.prompt)


def entry(fakes: FakeProviders, name: str) -> dict[str, Any]:
    """Entry `name` of ENTRIES at its fake, with its fake key."""
    options = {k: v for k, v in ENTRIES[name].items() if k != "type"}
    # The fakes have no rate limit: at the providers' own (kie 10 a second for all its entries, acedata 1) the
    # demo would mostly wait on it.
    return fakes.entry(ENTRIES[name]["type"], **options, requests_per_second=50)


async def _with_progress(work: Coroutine[Any, Any, None], config: Config, total: int) -> None:
    """Await the daemon; on a terminal, redraw one line of task counts meanwhile."""
    shown = asyncio.create_task(_progress(config, total)) if sys.stderr.isatty() else None
    try:
        await work
    finally:
        if shown is not None:
            shown.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await shown
            print("\r\033[K", end="", file=sys.stderr, flush=True)


async def _progress(config: Config, total: int) -> None:
    state: StateStore | None = None
    before = 0  # tasks of earlier runs, ended before this one began
    try:
        while True:
            await asyncio.sleep(0.25)
            if state is None and state_path(config).exists():
                state = await open_state(config)
                before = sum((await state.counts()).get(s, 0) for s in ("archived", "failed"))
            if state is not None:
                counts = await state.counts()
                ended = sum(counts.get(s, 0) for s in ("archived", "failed")) - before
                line = "  ".join(f"{k} {v}" for k, v in counts.items())
                print(f"\rdaemon: {line}  ({ended} of {total} ended)\033[K", end="", file=sys.stderr, flush=True)
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


async def _check(state: StateStore, planned: list[Planned]) -> dict[str, str]:
    """The tasks that did not end as planned: task ID → how they ended."""
    ended = {(t.provider, t.task_id): t for t in await state.tasks_in((TaskState.ARCHIVED, TaskState.FAILED))}
    wrong = {}
    for p in planned:
        task = ended.get((p.entry, p.task_id))
        got = "not ended" if task is None else "archived" if task.state is TaskState.ARCHIVED else task.reason
        if got != p.ends:
            wrong[p.task_id] = str(got)
    return wrong


def _summary(planned: list[Planned], wrong: dict[str, str], refreshed: int, took: float) -> str:
    archived = [p for p in planned if p.ends == "archived"]
    failed = Counter(p.ends for p in planned if p.ends != "archived")
    verdict = "every task ended as planned" if not wrong else f"{len(wrong)} task(s) did not end as planned"
    return (f"\ndemo: {verdict} in {took:.1f}s: {len(archived)} archived ({sum(len(p.files) for p in archived)}"
            f" files), {sum(failed.values())} failed the way providers document ("
            + ", ".join(f"{k} {v}" for k, v in sorted(failed.items())) + ")"
            + ("\n  an expired kie URL was saved by a fresh link from kie's download-url"
               if refreshed and not any(p.expired and p.task_id in wrong for p in planned) else "")
            + "".join(f"\n  not as planned: {p.entry} {p.task_id}: {wrong[p.task_id]}, planned {p.ends}"
                      for p in planned if p.task_id in wrong))


def _free(port: int) -> bool:
    """Whether the gallery's port can be had now: asked before the run, not only after it."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def _serve(config: Config, port: int) -> int:
    from archiver.browse.serve import serve  # aiohttp's server only when the gallery is served
    from archiver.storage import open_storage

    try:
        await serve(open_storage(config.storage), f"127.0.0.1:{port}")
    except OSError as e:
        print(f"demo: cannot serve the gallery on 127.0.0.1:{port}: {e.strerror or e}; try --port", file=sys.stderr)
        return 1
    return 0
