"""The daemon: one object owning intake, pollers and download workers (docs/design.md, one task's way).

`run()` works until SIGTERM/SIGINT; with `burst=True` it returns once the inbox is read
and no task is left in flight, which makes end-to-end tests deterministic.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import random
import signal
import socket
import time
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

import aiohttp

from archiver.archiving import Archivist
from archiver.browse.index import IndexLoop
from archiver.config import Config
from archiver.download import Downloader
from archiver.files import private_dir
from archiver.inbox import InboxReader
from archiver.lock import DaemonLock
from archiver.errors import ArchiverError, LeaseLost, StateUnavailable
from archiver.logs import task_fields
from archiver.model import TaskState, TaskStatus
from archiver.pacing import Bucket, ProviderHttp, key_bucket
from archiver.poller import EntryPoller
from archiver.providers import PROVIDERS
from archiver.recorder import Recorder
from archiver.scrub import Redactor
from archiver.state import Asset, Task, open_state, state_path
from archiver.state.records import CLAIM_BATCH
from archiver.state import StateStore
from archiver.storage import open_storage
from archiver.storage.local import root_id
from archiver.systemd import Notifier
from archiver.urlguard import UrlGuard, guarded_connector

if TYPE_CHECKING:
    from archiver.web.app import WebServer

log = logging.getLogger(__name__)

INBOX_TICK = 0.2  # a new inbox line is noticed within this many seconds
POLL_DRAIN = 3.0  # seconds a poll in flight may take to finish at shutdown
CLAIM_EVERY = 1.0  # free tasks (added elsewhere, retried, a dead daemon's) are taken within this
STATE_DOWN_RETRY = 5.0  # an asset whose state write failed is tried again after this


def shared_buckets(config: Config, state: StateStore) -> dict[str, Bucket]:
    """One bucket per API key: providers limit a key, not an entry of ours.

    Entries with the same type, base_url and key share one bucket at the lowest of their rates;
    on PostgreSQL every daemon shares it too. The key itself never leaves this process: the
    bucket is named by a hash of it.
    """
    groups: dict[tuple[str, str, str], list[str]] = {}
    for name, entry in config.providers.items():
        groups.setdefault((entry.type, entry.base_url, entry.api_key.reveal()), []).append(name)
    buckets = {}
    for group, names in groups.items():
        key_id = hashlib.sha256("\0".join(group).encode()).hexdigest()[:32]
        bucket = key_bucket(key_id, min(config.providers[n].requests_per_second for n in names), state.rate_slots())
        buckets.update(dict.fromkeys(names, bucket))
    return buckets


class Daemon:
    def __init__(self, config: Config, *, burst: bool = False, seed: int | None = None) -> None:
        self.config = config
        self.burst = burst
        self.rng = random.Random(seed)
        self.staging = config.state_dir / "staging"
        self.stopping = asyncio.Event()
        self.queue: asyncio.Queue[tuple[int, int]] = asyncio.Queue()
        self.busy = 0
        self.finished = 0  # downloads archived by this run
        self.finished_at_stop = self.left_at_stop = 0
        self.paused_until = 0.0  # downloads wait until then after a disk-full error
        self.disk_was_full = False
        self.claim_soon = asyncio.Event()  # new tasks were stored: claim them now, not within CLAIM_EVERY
        self.working: set[tuple[int, int]] = set()  # assets a worker is on; never two workers on one
        self.idle: set[asyncio.Task[None]] = set()  # workers waiting for an asset: a stop ends them at once
        self.state_down_since: float | None = None
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
        private_dir(self.staging)
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
        guard = UrlGuard(self.config.download.allow_addresses)
        dl = self.config.download
        connector = guarded_connector(guard, dl.concurrency, dl.per_host)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=60)
        try:
            async with aiohttp.ClientSession() as api, aiohttp.ClientSession(
                connector=connector, auto_decompress=False, timeout=timeout, trust_env=False
            ) as downloads:
                await self.storage.start(shared=await self._not_alone())
                await self._check_shared_root()
                downloader = Downloader(downloads, max_bytes=dl.max_bytes, per_host=dl.per_host,
                                        check_url=guard.check_url)
                self.archivist = Archivist(self.config, self.state, self.storage, downloader, self.staging,
                                         ask_once=self._ask_once, requeue=self._requeue,
                                         disk_full=self._disk_full, refresh=self._refresh_url,
                                         recorder=self.recorder)
                await self._say_keys()
                self.pollers = self._pollers(api)
                web = await self._start_web()
                try:
                    await self._main()
                finally:
                    if web is not None:
                        await web.close()
        finally:
            await self.storage.close()

    async def _not_alone(self) -> bool:
        """Whether another daemon shares our state DB, and may be writing to the archive now. A killed
        run of ours is not one: join() removed it. Alone, the archive's temp files are all litter."""
        return any(d.id != self.state.me for d in await self.state.daemons())

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
                n = self.busy
                log.info("%s: taking no new work; finishing %d download%s in flight", signal_name, n,
                         "" if n == 1 else "s")
            self.notifier.stopping()
            self.stopping.set()

    async def _say_keys(self) -> None:
        """An entry without a key is not polled: its tasks wait (queued) for a restart with the key set,
        and status says why. A no_key row of an earlier run whose key is now set goes back to ok."""
        rows = {h.name: h.state for h in await self.state.health() if h.daemon in ("", self.state.me)}
        for name, entry in self.config.providers.items():
            why = entry.no_key()
            if why is None:
                if rows.get(name) == "no_key":
                    await self.state.set_health(name, "ok")
                continue
            log.warning("provider=%s: not polled: %s; its tasks wait until the daemon starts with a key",
                        name, why, extra={"provider": name, "reason": "no_key"})
            if rows.get(name) == "no_key":
                await self.state.set_health(name, "ok")  # else the row keeps the last run's time, and reads stale
            await self.state.set_health(name, "no_key", why)

    def _pollers(self, api: aiohttp.ClientSession) -> dict[str, EntryPoller]:
        pollers, buckets = {}, shared_buckets(self.config, self.state)
        redactor = Redactor.from_config(self.config)
        for name, entry in self.config.providers.items():
            if entry.no_key():
                continue  # never sent an empty key: see _say_keys
            provider = PROVIDERS[entry.type](entry)
            http = ProviderHttp(name, api, buckets[name], recorder=self.recorder, redactor=redactor,
                                max_answer=entry.max_answer)
            pollers[name] = EntryPoller(entry, provider, http, self.state, self._downloads_start,
                                        self.archivist.write_failed, self.rng, self.recorder)
        return pollers

    async def _start_web(self) -> WebServer | None:
        """The HTTP server (docs/http-api.md), before any work starts: a taken port stops the start."""
        if self.config.http is None:
            return None
        from archiver.web.app import Hooks, WebServer
        from archiver.web.metrics import Metrics

        assert isinstance(self.recorder, Metrics)
        hooks = Hooks(queue=lambda _task: self.claim_soon.set(), poll_now=self._poll_now,
                      store_failing_since=lambda: self.archivist.storage_failing_since)
        server = WebServer(self.config, self.state, self.recorder, hooks)
        await server.start()
        return server

    async def _poll_now(self, task: Task) -> bool:
        poller = self.pollers.get(task.provider)
        return poller is not None and await poller.poll_now(task.pk)

    async def _main(self) -> None:
        await self._claim(start=True)
        reader = InboxReader(self.config.inbox.path, await self.state.inbox_position(),
                             self.config.providers.keys(), self.config.inbox.default_provider)
        intake = [asyncio.create_task(self._intake(reader), name="inbox"),
                  asyncio.create_task(self._records(), name="failed-records"),
                  asyncio.create_task(self._claims(), name="claims"),
                  asyncio.create_task(self._heartbeats(), name="heartbeat")]
        intake += [asyncio.create_task(p.run(), name=f"poll:{n}") for n, p in self.pollers.items()]
        index = None
        if self.config.index.enabled:  # its own loop and DB connection: never in the workers' way
            index = IndexLoop(self.config, self.storage)
            intake.append(asyncio.create_task(index.run(), name="index"))
        workers = [asyncio.create_task(self._worker(), name=f"download:{i}")
                   for i in range(self.config.download.concurrency)]
        self.notifier.ready()
        watchdog = asyncio.create_task(self.notifier.watchdog_loop())
        log.info("archiver running: %d provider entries, inbox %s", len(self.pollers), self.config.inbox.path)
        try:
            await self.stopping.wait()
        finally:
            await _cancel(intake)
            # Polls in flight get a moment to record their answer; one held back by a
            # paused provider is cancelled and simply asked again on the next start.
            deadline = time.monotonic() + self.config.shutdown_grace
            polls = [job for poller in self.pollers.values() for job in poller.running]
            if polls:
                await asyncio.wait(polls, timeout=min(POLL_DRAIN, self.config.shutdown_grace))
            await _cancel(polls)
            for poller in self.pollers.values():
                with contextlib.suppress(StateUnavailable):
                    await poller.flush()  # the answers not written yet; unwritten, they are only asked again
            reader.close()
            # Downloads in flight may finish within the grace period; the rest resume next start.
            before = self.finished
            await self._drain(workers, deadline)
            watchdog.cancel()
            self.finished_at_stop = self.finished - before
            with contextlib.suppress(StateUnavailable):
                await self._sweep_staging(set())
                self.left_at_stop = await self.state.assets_pending()
                await self.state.leave()  # other daemons may take our tasks at once
            if index is not None and self.burst:
                await index.last_round()

    async def _drain(self, workers: list[asyncio.Task[None]], deadline: float) -> None:
        for job in self.idle:
            job.cancel()  # nothing in hand: waiting out its queue timeout would only delay the stop
        _, pending = await asyncio.wait(workers, timeout=max(0.0, deadline - time.monotonic()))
        await _cancel(pending)

    async def _claim(self, *, start: bool = False) -> int:
        """Take free live tasks (new, retried, or a dead daemon's) and put them to work.

        At the start this is the recovery after a stop or a crash: everything unfinished is free.
        """
        held = self.queue.qsize() + self.busy  # downloads; the backend counts the waiting tasks we hold
        wanted = set()
        claimed = await self.state.claim(held, list(self.pollers))
        for one in claimed:
            if one.state == TaskState.DOWNLOADING:
                pending = [a for a in await self.state.assets(one.pk) if a.state != "archived"]
                wanted |= {f"{one.pk}-{a.idx}.part" for a in pending}
                self._downloads_start(await self.state.task(one.pk), pending)
            else:
                self.pollers[one.provider].renew()  # it is in the poll queue now
        if start:
            await self._sweep_staging(wanted)
        return len(claimed)

    async def _sweep_staging(self, wanted: set[str]) -> None:
        """Remove staged files no asset waits for any more (archived, failed, retried).

        A file of a task still downloading stays though we did not claim it: on PostgreSQL a killed
        run's tasks come back to us only when its lease runs out, and their downloads resume then.
        """
        for path in self.staging.iterdir():
            name = path.name.removesuffix(".etag")
            if name not in wanted and not await self._awaited(name):
                path.unlink(missing_ok=True)

    async def _awaited(self, staged: str) -> bool:
        """True if `{pk}-{idx}.part` belongs to an asset of a downloading task, not archived yet."""
        pk, _, idx = staged.removesuffix(".part").partition("-")
        if not (staged.endswith(".part") and pk.isdigit() and idx.isdigit()):
            return False
        waiting = [a for a in await self.state.assets(int(pk)) if a.idx == int(idx) and a.state != "archived"]
        return bool(waiting) and (await self.state.task(int(pk))).state == TaskState.DOWNLOADING

    async def _claims(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that arrives as the
            # event is set, and a stop during a backlog's claims then never ended (seen).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLAIM_EVERY):
                    await self.claim_soon.wait()
            self.claim_soon.clear()
            try:
                if await self._claim() >= CLAIM_BATCH:
                    self.claim_soon.set()  # a backlog: take the next batch at once
            except StateUnavailable:
                pass  # the heartbeat says it, once per outage
            except Exception:
                log.exception("claiming tasks: unexpected error; retrying")

    async def _heartbeats(self) -> None:
        """Renew our leases; say once when the state DB stops answering and when it is back."""
        while True:
            await asyncio.sleep(self.config.state.lease / 4)
            try:
                if not await self.state.heartbeat():
                    log.warning("state: this daemon's leases ran out while the state DB was out of reach;"
                                " tasks another daemon took meanwhile are let go as they come up")
                if self.state_down_since is not None:
                    log.info("state: the %s state DB answers again; work resumes", self.state.backend)
                    self.state_down_since = None
            except StateUnavailable as e:
                if self.state_down_since is None:
                    self.state_down_since = time.time()
                    log.error("state: %s; polling pauses, downloads finish into staging", e)
            except Exception:
                log.exception("state: heartbeat failed; retrying")

    # --- intake ---------------------------------------------------------------------------

    async def _intake(self, reader: InboxReader) -> None:
        checked = time.time()
        while True:
            now = time.time()
            more = False
            try:
                more = await self._read_inbox(reader)
                if now - checked >= 1.0:
                    # kept_counts: constant cost; a GROUP BY here held the loop 11 ms a second at 100k tasks.
                    counts = await self.state.kept_counts()
                    self.notifier.status(" ".join(f"{k} {v}" for k, v in counts.items()))
                    checked = now
            except StateUnavailable:
                pass  # the lines stay in the inbox; the heartbeat says why
            except OSError as e:
                log.error("inbox %s cannot be read: %s; retrying", self.config.inbox.path, e)
            except Exception:
                # Intake must outlive any one bad moment (a locked or full state disk).
                log.exception("inbox: unexpected error; retrying")
            with contextlib.suppress(StateUnavailable):
                if self.burst and await self._idle():
                    self.stop()
            await asyncio.sleep(0 if more else INBOX_TICK)  # a backlog is read batch after batch

    async def _records(self) -> None:
        """_failed records the store refused (or a crash cut off) are written again, now and then;
        staged files of tasks another daemon finished meanwhile go then too."""
        while True:
            try:
                await self.archivist.write_due_records()
                await self._sweep_staging({f"{pk}-{idx}.part" for pk, idx in self.working})
            except StateUnavailable:
                pass  # the heartbeat says it, once per outage
            except Exception:
                log.exception("failed records: unexpected error; retrying")
            await asyncio.sleep(self.config.download.retry_after)

    async def _read_inbox(self, reader: InboxReader) -> bool:
        """Store what the inbox holds now, one batch; True if more lines wait."""
        batch = reader.read()
        if batch.position is None or (batch.position == reader.saved and not batch.rejects):
            return False
        for bad in batch.rejects:
            log.error("inbox line %d rejected: %s", bad.line_no, bad.reason, extra={"reason": "bad_line"})
        try:
            new = await self.state.ingest(batch.refs, batch.rejects, batch.position)
        except BaseException:
            reader.rewind()  # read these lines again once they can be stored
            raise
        reader.saved = batch.position
        self.recorder.inbox_lines("queued", len(new))
        self.recorder.inbox_lines("known", len(batch.refs) - len(new))
        self.recorder.inbox_lines("rejected", len(batch.rejects))
        for task in new:
            log.info("provider=%s task_id=%s: queued", task.provider, task.task_id,
                     extra=task_fields(task.provider, task.task_id, TaskState.QUEUED))
        if new:
            self.claim_soon.set()
        return batch.full

    async def _idle(self) -> bool:
        counts = await self.state.kept_counts()
        return not (counts["queued"] or counts["polling"] or counts["downloading"] or self.busy)

    # --- downloads ------------------------------------------------------------------------

    def _downloads_start(self, task: Task, assets: list[Asset], inline: dict[int, str] | None = None) -> None:
        """Success seen: queue its downloads at once, ahead of any further polling.

        `inline` holds the data: URIs of the answer by index; only memory keeps them (datauri.py)."""
        for idx, uri in (inline or {}).items():
            self.archivist.inline[(task.pk, idx)] = uri
        log.info("provider=%s task_id=%s: succeeded with %d asset(s) to download", task.provider,
                 task.task_id, len(assets), extra=task_fields(task.provider, task.task_id, TaskState.DOWNLOADING))
        for asset in assets:
            self.queue.put_nowait((task.pk, asset.idx))

    async def _disk_full(self, error: str) -> None:
        """No space for staging or the archive: every download pauses; nothing fails for it."""
        pause = self.config.download.disk_full_pause
        log.error("disk full: %s; downloads pause for %gs, polling goes on", error, pause)
        self.disk_was_full = True
        self.paused_until = time.monotonic() + pause
        await self.state.set_health("disk", "full", error)

    async def _worker(self) -> None:
        while not self.stopping.is_set():
            if (wait := self.paused_until - time.monotonic()) > 0:
                await asyncio.sleep(min(wait, 1.0))
                continue
            me = asyncio.current_task()
            assert me is not None
            self.idle.add(me)
            try:
                async with asyncio.timeout(0.5):  # not wait_for: see _claims
                    pk, idx = await self.queue.get()
            except TimeoutError:
                continue
            finally:
                self.idle.discard(me)
            if (pk, idx) in self.working:
                continue  # claimed again after a lost lease while a worker is on it
            self.busy += 1
            self.working.add((pk, idx))
            try:
                if await self.archivist.archive(pk, idx):
                    self.finished += 1
                if self.disk_was_full and self.paused_until < time.monotonic():
                    self.disk_was_full = False
                    await self.state.set_health("disk", "ok")
            except StateUnavailable as e:
                log.warning("asset %d of task #%d waits in staging: %s", idx, pk, e)
                self._requeue(pk, idx, STATE_DOWN_RETRY)
            except LeaseLost:
                log.info("asset %d of task #%d: another daemon holds the task now; letting it go", idx, pk)
                self.archivist.let_go(pk, idx)
            except Exception:
                log.exception("unexpected error archiving asset %d of task #%d; it will be retried", idx, pk)
                self._requeue(pk, idx, self.config.download.retry_after)
            finally:
                self.busy -= 1
                self.working.discard((pk, idx))

    def _requeue(self, pk: int, idx: int, delay: float) -> None:
        asyncio.get_running_loop().call_later(delay, self.queue.put_nowait, (pk, idx))

    async def _ask_once(self, provider: str, task_id: str) -> TaskStatus | None:
        poller = self.pollers.get(provider)
        return await poller.ask_once(task_id) if poller else None

    async def _refresh_url(self, provider: str, task_id: str, url: str) -> str | None:
        poller = self.pollers.get(provider)
        return await poller.refresh_url(task_id, url) if poller else None


async def _cancel(jobs: Collection[asyncio.Task[Any]]) -> None:
    """Cancel the jobs and wait for them, cancelling again those a cancel missed.

    On Python 3.11 asyncio.wait_for (psycopg_pool waits with it) can swallow a cancel; a loop that
    lost it would run on, and the stop would wait for it forever."""
    pending = set(jobs)
    while pending:
        for job in pending:
            job.cancel()
        _, pending = await asyncio.wait(pending, timeout=1.0)
