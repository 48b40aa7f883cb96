"""The daemon: one object owning intake, pollers and download workers (docs/design.md, one task's way).

The composition root: it wires the parts (intake.py, claims.py, polling.py, workers.py) and orders
their start and stop. `run()` works until SIGTERM/SIGINT; with `burst=True` it returns once the inbox
is read and no task is left in flight, which makes end-to-end tests deterministic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import socket
import time
from typing import TYPE_CHECKING

import aiohttp

from archiver import polling
from archiver.browse.index import IndexLoop
from archiver.claims import Claims
from archiver.config import Config
from archiver.download import Downloader
from archiver.errors import ArchiverError, StateUnavailable
from archiver.intake import Intake
from archiver.jobs import cancel
from archiver.lock import DaemonLock
from archiver.poller import EntryPoller
from archiver.recorder import Recorder
from archiver.staging import Staging
from archiver.state import open_state, state_path
from archiver.storage import open_storage
from archiver.storage.local import root_id
from archiver.systemd import Notifier
from archiver.urlguard import UrlGuard
from archiver.workers import Workers, download_session

if TYPE_CHECKING:
    from archiver.web.app import WebServer

log = logging.getLogger(__name__)


class Daemon:
    def __init__(self, config: Config, *, burst: bool = False, seed: int | None = None) -> None:
        self.config = config
        self.burst = burst
        self.rng = random.Random(seed)
        self.staging = Staging(config.state_dir / "staging")
        self.stopping = asyncio.Event()
        self.workers: Workers | None = None  # made once the download session is open
        self.finished_at_stop = self.left_at_stop = 0
        self.notifier = Notifier.from_env()
        self.recorder = Recorder()  # counts nothing unless the HTTP server (and /metrics) is on

    async def run(self) -> None:
        # One daemon per state_dir on either backend: its staging area is its own.
        lock = DaemonLock(state_path(self.config))
        last = lock.acquire()
        try:
            await self._run(lock, last.daemon if last else "")
        finally:
            lock.release()
        log.info("stopped: %d downloads finished, %d resume on next start", self.finished_at_stop,
                 self.left_at_stop)

    async def _run(self, lock: DaemonLock, predecessor: str) -> None:
        """Run as the successor of `predecessor`, the daemon ID the lock last named (gone, as we hold it)."""
        self.staging.create()
        self.state = await open_state(self.config, daemon=True)
        lock.name(self.state.me)
        try:
            await self._joined(predecessor)
        except BaseException:
            # A start refused after join (a taken port, another archive root) must not look live.
            with contextlib.suppress(Exception):
                await self.state.leave()
            raise
        finally:
            await self.state.close()

    async def _joined(self, predecessor: str) -> None:
        await self.state.join(socket.gethostname(), os.getpid(), predecessor)
        if self.config.http is not None:
            from archiver.web.metrics import Metrics  # prometheus_client only when http is on
            self.recorder = Metrics(self.state, self.config.providers)
        self.storage = open_storage(self.config.storage)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop, sig.name)
        dl = self.config.download
        guard = UrlGuard(dl.allow_addresses)
        try:
            async with aiohttp.ClientSession() as api, download_session(dl, guard) as downloads:
                # Another daemon on our state DB may be writing to the archive now (a killed run of
                # ours is not one: join() removed it); alone, the archive's temp files are all litter.
                await self.storage.start(shared=any(d.id != self.state.me for d in await self.state.daemons()))
                await self._check_shared_root()
                downloader = Downloader(downloads, max_bytes=dl.max_bytes, per_host=dl.per_host,
                                        check_url=guard.check_url)
                # The workers' Archivist asks the pollers again about a task that succeeded; the pollers
                # hand successes to the workers: the dict is filled once both exist.
                self.pollers: dict[str, EntryPoller] = {}
                self.workers = workers = Workers(self.config, self.state, self.storage, downloader, self.staging,
                                                 self.pollers, self.stopping, self.recorder)
                await polling.say_keys(self.config, self.state)
                self.pollers.update(polling.make_pollers(self.config, self.state, api, workers.start,
                                                 workers.archivist.write_failed, self.rng, self.recorder))
                self.claims = Claims(self.config, self.state, self.pollers, workers, self.staging)
                web = await self._start_web(workers)
                try:
                    await self._main(workers)
                finally:
                    if web is not None:
                        await web.close()
        finally:
            await self.storage.close()

    async def _check_shared_root(self) -> None:
        """Daemons sharing state and a local archive must all see one folder: the same path and the
        same `.archiver-root` marker (a shared file system). The first daemon's pair is the rule."""
        if self.state.backend == "sqlite" or self.config.storage.backend != "local":
            return
        root = self.config.storage.local.root
        ours = f"{root} {await asyncio.to_thread(root_id, root)}"
        theirs = await self.state.agree("storage.local.root", ours)
        if theirs != ours:
            raise ArchiverError(
                f"storage.local.root: this daemon sees {ours}, the others {theirs} (path and .archiver-root ID):"
                " daemons sharing a PostgreSQL state DB with local storage need the same path on one shared"
                " file system")

    def stop(self, signal_name: str | None = None) -> None:
        """Take no new work; the downloads under way may finish within shutdown_grace."""
        if not self.stopping.is_set():
            if signal_name is None:
                log.info("--burst: the inbox is read and nothing is in flight; stopping")
            else:
                n = self.workers.busy if self.workers is not None else 0
                log.info("%s: taking no new work; finishing %d download%s in flight", signal_name, n,
                         "" if n == 1 else "s")
            self.notifier.stopping()
            self.stopping.set()

    async def _start_web(self, workers: Workers) -> WebServer | None:
        """The HTTP server (docs/http-api.md), before any work starts: a taken port stops the start."""
        if self.config.http is None:
            return None
        from archiver.web.app import Hooks, WebServer
        from archiver.web.metrics import Metrics

        assert isinstance(self.recorder, Metrics)
        hooks = Hooks(queue=lambda _task: self.claims.soon.set(),
                      poll_now=lambda task: polling.poll_now(self.pollers, task),
                      store_failing_since=lambda: workers.archivist.storage_failing_since)
        server = WebServer(self.config, self.state, self.recorder, hooks)
        await server.start()
        return server

    async def _main(self, workers: Workers) -> None:
        # In this order: the start's claim (recovery, then staging's sweep), the inbox read on from
        # there, the loops, the workers; ready for systemd once all run.
        await self.claims.claim(start=True)
        intake = Intake(self.config, self.state, self.claims.soon, workers, self.notifier, self.recorder,
                        when_idle=self.stop if self.burst else None)
        reader = await intake.open()
        loops = [asyncio.create_task(intake.run(reader), name="inbox"),
                 asyncio.create_task(workers.records(), name="failed-records"),
                 asyncio.create_task(self.claims.run(), name="claims"),
                 asyncio.create_task(self.claims.heartbeats(), name="heartbeat")]
        loops += [asyncio.create_task(p.run(), name=f"poll:{n}") for n, p in self.pollers.items()]
        index = None
        if self.config.index.enabled:  # its own loop and DB connection: never in the workers' way
            index = IndexLoop(self.config, self.storage)
            loops.append(asyncio.create_task(index.run(), name="index"))
        downloads = workers.launch()
        self.notifier.ready()
        watchdog = asyncio.create_task(self.notifier.watchdog_loop())
        log.info("archiver running: %d provider entries, inbox %s", len(self.pollers), self.config.inbox.path)
        try:
            await self.stopping.wait()
        finally:
            await cancel(loops)
            deadline = time.monotonic() + self.config.shutdown_grace  # for polls and downloads alike
            await polling.drain(self.pollers, self.config.shutdown_grace)
            reader.close()
            before = workers.finished
            await workers.drain(downloads, deadline, burst=self.burst)
            watchdog.cancel()
            self.finished_at_stop = workers.finished - before
            with contextlib.suppress(StateUnavailable):
                await self.staging.sweep(self.state, set())
                self.left_at_stop = await self.state.assets_pending()
                await self.state.leave()  # other daemons may take our tasks at once
            if index is not None and self.burst:
                await index.last_round()
