"""Scenario 10: the load targets (memory, CPU and intake at 100,000 waiting tasks, a new task behind
a backlog, small files against curl, S3 memory), each measured on SQLite and on PostgreSQL and
printed beside its goal.

PostgreSQL here is the tests' private server with durability switched back on (fsync,
full_page_writes), so that its commits cost what they cost in production. Its CPU is counted
with the daemon's where the goal is CPU: on PostgreSQL the database does the queue's work.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fakes import result_url
from measure import cpu_seconds, rss_mib
from scenarios import PY, MiB, Plan, Rig, curl_parallel, disk_alone, throughput

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.support, shared with the tests

from tests.support.postgres import PgCluster, pg_unavailable  # noqa: E402

WAITING = (1_000, 10_000, 100_000)
RSS_GOAL, FLAT_KIB = 64.0, 0.1  # MiB at any size; KiB more per waiting task, from 1k to 100k
BACKLOG, FINISH_AFTER, LATE_GOAL = 10_000, 60.0, 120.0  # the fake's --finish-after default is 60 s too
SETTLE = 45.0  # the late task comes this long after its backlog: past the first step (30 s) and one aging move


@dataclass
class Result:
    measure: str
    backend: str
    result: str
    goal: str
    met: bool


class DurableCluster(PgCluster):
    """The tests' private PostgreSQL, with the durability the tests switch off switched back on."""

    def _initdb(self) -> None:
        super()._initdb()
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("fsync = on\nfull_page_writes = on\n")  # later lines win

    def server_cpu(self) -> float:
        """CPU seconds of the postmaster's children (the backends): the server's share of the work."""
        total = 0.0
        for pid in self.backends():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                total += cpu_seconds(pid)
        return total


class Backend:
    """One state backend: the daemon's `state` config section, a fresh database per rig."""

    def __init__(self, name: str, cluster: DurableCluster | None) -> None:
        self.name, self.cluster = name, cluster

    @contextlib.contextmanager
    def state(self) -> Iterator[dict[str, Any]]:
        if self.cluster is None:
            yield {}
            return
        dsn = self.cluster.create_database()
        try:
            yield {"state": {"backend": "postgres", "dsn": dsn}}
        finally:
            self.cluster.drop_database(dsn)

    def server_cpu(self) -> float:
        return self.cluster.server_cpu() if self.cluster else 0.0

    def count(self, rig: Rig, config: dict[str, Any], state: str | None = None) -> int:
        """Tasks in the state DB (in `state`, or all), 0 until the daemon has made it.

        Read from the counts the triggers keep: a count(*) of 100,000 rows ten times a second would
        take CPU from the daemon being measured."""
        query = "SELECT COALESCE(SUM(n), 0) FROM task_counts" + (" WHERE state = ?" if state else "")
        args = (state,) if state else ()
        if not config:
            path = rig.dir / "state" / "archiver.db"
            if not path.exists():
                return 0
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as db:
                try:
                    return int(db.execute(query, args).fetchone()[0])
                except sqlite3.OperationalError:  # the schema is not there yet
                    return 0
        import psycopg

        with psycopg.connect(config["state"]["dsn"], autocommit=True) as conn:
            if conn.execute("SELECT to_regclass('task_counts')").fetchone()[0] is None:  # type: ignore[index]
                return 0
            return int(conn.execute(query.replace("?", "%s"), args).fetchone()[0])  # type: ignore[index]


def targets(base: Path, *, quick: bool, backends: tuple[str, ...] = ("sqlite", "postgres")) -> list[Result]:
    results: list[Result] = []
    for name in backends:
        if name == "postgres" and (why := pg_unavailable()):
            print(f"  postgres skipped: {why}", flush=True)
            continue
        cluster = DurableCluster() if name == "postgres" else None
        if cluster:
            cluster.start()
        try:
            backend = Backend(name, cluster)
            for measure in (waiting, late_task, small_files, s3_memory):
                for result in measure(backend, base, quick):
                    print(f"  [{name}] {result.measure}: {result.result} — goal {result.goal}: "
                          f"{'MET' if result.met else 'MISSED'}", flush=True)
                    results.append(result)
        finally:
            if cluster:
                cluster.cleanup()
    return results


def waiting(backend: Backend, base: Path, quick: bool) -> list[Result]:
    """1k, 10k, 100k never-finishing tasks appended to a running daemon: intake time, then RSS and CPU."""
    warmup, span = (20.0, 20.0) if quick else (45.0, 60.0)
    runs = []
    for n in WAITING:
        with backend.state() as state, Rig(base, None, running_polls=-1) as rig:
            daemon = rig.daemon(None, [], config=state)
            _up(rig)
            pid, appended = rig.pid(daemon), time.monotonic()
            with open(rig.dir / "inbox.txt", "a") as inbox:
                inbox.write("".join(f"kie w{i:06d}\n" for i in range(n)))
            while backend.count(rig, state) < n:
                time.sleep(0.1)
            intake = time.monotonic() - appended
            time.sleep(max(0.0, warmup - intake))
            cpu0, server0, t0, wall0 = cpu_seconds(pid), backend.server_cpu(), time.monotonic(), time.time()
            time.sleep(span)
            cpu1, server1, took, wall1 = cpu_seconds(pid), backend.server_cpu(), time.monotonic() - t0, time.time()
            end = rss_mib(pid)
            daemon.proc.send_signal(signal.SIGTERM)
            peak = daemon.wait().peak_rss_mib
            polls = sum(wall0 <= at <= wall1 for seen in rig.seen(rig.api_url).values() for at, _ in seen)
            runs.append((n, intake, peak, end, (cpu1 - cpu0) / took, (server1 - server0) / took, polls / took))
            print(f"    {n:,} waiting: intake {intake:.1f} s; peak RSS {peak:.0f} MiB, {end:.0f} at the end; "
                  f"daemon {runs[-1][4]:.1%} of a core, server {runs[-1][5]:.1%}; {runs[-1][6]:.1f} polls/s",
                  flush=True)
    peaks = [r[2] for r in runs]
    slope = (peaks[-1] - peaks[0]) * 1024 / (WAITING[-1] - WAITING[0])
    n, intake, _, end, cpu, server, rate = runs[-1]
    cpu_note = f"{cpu:.1%} of a core at {rate:.1f} polls/s" + (
        f" (daemon; + PostgreSQL's backends {server:.1%} = {cpu + server:.1%})" if backend.cluster else "")
    return [
        Result("peak RSS at 1k / 10k / 100k waiting", backend.name,
               " / ".join(f"{p:.0f}" for p in peaks) + f" MiB ({slope:.3f} KiB more per task)",
               f"≤ {RSS_GOAL:.0f} MiB, flat (< {FLAT_KIB} KiB per task)", max(peaks) <= RSS_GOAL and slope < FLAT_KIB),
        Result("CPU at 100k waiting, kie's 10 req/s", backend.name, cpu_note, "< 2 % of a core", cpu + server < 0.02),
        Result("intake of a 100k-line inbox", backend.name, f"{intake:.1f} s to the state DB", "< 10 s",
               intake < 10.0),
    ]


def late_task(backend: Backend, base: Path, quick: bool) -> list[Result]:
    """10k waiting tasks, then one that finishes 60 s after it is appended: finishing → archived.

    kie's default schedule; the backlog is young (appended SETTLE earlier, never all polled), which
    is the harder case: an old backlog only gets the old share."""
    with backend.state() as state, Rig(base, None, running_polls=-1) as rig:
        daemon = rig.daemon(None, [f"w{i:05d}" for i in range(BACKLOG)], config=state)
        while backend.count(rig, state) < BACKLOG:
            time.sleep(0.2)
        time.sleep(SETTLE)
        appended = time.time()
        name = f"late-{int(appended * 1000)}"
        finished = int(name[5:]) / 1000 + FINISH_AFTER
        with open(rig.dir / "inbox.txt", "a") as inbox:
            inbox.write(f"kie {name}\n")
        archived = None
        while archived is None and time.time() < finished + 2 * LATE_GOAL:
            time.sleep(1.0)
            archived = _archived_at(rig, name)
        polls = rig.seen(rig.api_url)
        daemon.proc.send_signal(signal.SIGTERM)
        daemon.wait()
    asked = [at for at, _ in polls.get(name, [])]
    gaps = ", ".join(f"{b - a:.0f}" for a, b in zip(asked, asked[1:], strict=False))
    took = None if archived is None else archived - finished
    shown = "not archived" if took is None else f"{took:.1f} s"
    return [Result(f"a new task behind {BACKLOG:,} waiting, finishing → archived", backend.name,
                   f"{shown}; polled {len(asked)} times, gaps {gaps} s", f"≤ {LATE_GOAL:.0f} s",
                   took is not None and took <= LATE_GOAL)]


def _archived_at(rig: Rig, name: str) -> float | None:
    """When the state DB says the task was archived, from `archiver show --json`."""
    done = subprocess.run([PY, "-m", "archiver", "-c", str(rig.dir / "config.yaml"), "show", "kie", name, "--json"],
                          capture_output=True, env=rig.env, check=False)
    if done.returncode != 0:
        return None
    doc = json.loads(done.stdout)
    stamps = [h["at"] for h in doc["history"] if h["state"] == "archived"]
    if doc["state"] != "archived" or not stamps:
        return None
    return dt.datetime.fromisoformat(stamps[-1].replace("Z", "+00:00")).timestamp()


def small_files(backend: Backend, base: Path, quick: bool) -> list[Result]:
    """300 tasks × 2 files × 2 MiB, daemon and curl interleaved, each after `sync`; medians compared."""
    plan = Plan(100 if quick else 300, 2, 2 * MiB, "png")
    ids = [f"s{i:05d}" for i in range(plan.tasks)]
    daemon_s, curl_s, disk_s = [], [], []
    with Rig(base, None, files=plan.files, size=plan.size, kind=plan.kind) as rig:
        urls = [result_url(rig.cdn_url, t, i, plan.size, plan.kind) for t in ids for i in range(plan.files)]
        for run in range(3):
            with backend.state() as state:
                for folder in ("state", "archive"):
                    shutil.rmtree(rig.dir / folder, ignore_errors=True)
                subprocess.run(["sync"], check=True)
                usage = rig.daemon(1000.0, ids, "--burst", config=state).wait()
                done = backend.count(rig, state, "archived")
            shutil.rmtree(rig.dir / "archive", ignore_errors=True)
            subprocess.run(["sync"], check=True)
            _, alone = curl_parallel(rig.dir, urls, plan, "small")
            disk = disk_alone(rig.dir / "floor", plan)
            daemon_s.append(usage.wall)
            curl_s.append(alone)
            disk_s.append(disk)
            print(f"    run {run + 1}: archiver {usage.wall:.2f} s ({done}/{plan.tasks} archived, exit {usage.code}, "
                  f"{usage.cpu:.1f} CPU s), curl {alone:.2f} s: {alone / usage.wall:.2f}× curl; the bytes written "
                  f"and fsynced alone {disk:.2f} s", flush=True)
    ours, curl, disk = (statistics.median(runs) for runs in (daemon_s, curl_s, disk_s))
    return [Result(f"small files ({plan.tasks} tasks × 2 × 2 MiB, local disk) against curl alone", backend.name,
                   f"{curl / ours:.2f}× (medians of 3: archiver {ours:.2f} s, curl {curl:.2f} s; the bytes written and "
                   f"fsynced alone, 16 at a time: {disk:.2f} s)", "≥ 1.0×", curl / ours >= 1.0)]


def s3_memory(backend: Backend, base: Path, quick: bool) -> list[Result]:
    """Scenario 4 (scenario 2 into moto's S3): the daemon's peak RSS."""
    plan = Plan(200 if quick else 1000, 2, 2 * MiB, "png")
    with backend.state() as state:
        row = throughput("4 S3 (moto)", plan, base, None, rps=1000.0, s3=True, curl=False, config=state)[0]
    return [Result(f"peak RSS, S3 (moto), {plan.tasks} tasks × 2 × 2 MiB", backend.name,
                   f"{row.rss_mib:.0f} MiB; {row.mb_s:.0f} MB/s; {row.note.split(';')[0]}", f"≤ {RSS_GOAL:.0f} MiB",
                   (row.rss_mib or 0) <= RSS_GOAL and "INCOMPLETE" not in row.note)]


def _up(rig: Rig) -> None:
    """Until the daemon has made its state DB and answers `status`."""
    while rig.status() is None:
        time.sleep(0.2)


def table(results: list[Result]) -> str:
    lines = ["| target | backend | result | goal | |", "|---|---|---|---|---|"]
    return "\n".join(lines + [f"| {r.measure} | {r.backend} | {r.result} | {r.goal} | "
                              f"{'met' if r.met else '**missed**'} |" for r in results])
