"""Scenario 9: 1, 2 and 3 daemons on one PostgreSQL against a CDN capped per connection.

Each daemon downloads at most `concurrency` files at a time and the CDN sends each response
at `rate` bytes a second, so one daemon is bound by I/O, not CPU: more daemons should mean
more throughput even on 2 cores. The server's pg_stat_statements counts every statement the
daemons sent (BEGIN and COMMIT included); the bench watches progress as another role, whose
statements are left out.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from measure import Child, Usage
from scenarios import PY, Row, Rig

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.support, shared with the tests

from tests.support.postgres import PgCluster  # noqa: E402

WATCHER = "bench"  # the role the bench itself connects as: its queries are not the daemons'
KINDS_SHOWN = 12  # statement kinds listed per run, most frequent first


class CountingCluster(PgCluster):
    """The tests' private PostgreSQL, with pg_stat_statements loaded to count what daemons send."""

    def _initdb(self) -> None:
        super()._initdb()
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("shared_preload_libraries = 'pg_stat_statements'\npg_stat_statements.track = top\n"
                       "pg_stat_statements.max = 5000\n")

    def watcher_dsn(self, dsn: str) -> str:
        return dsn.replace("postgres@", f"{WATCHER}@", 1)


def several(tasks: int, base: Path, *, daemons: tuple[int, ...] = (1, 2, 3), size: int, rate: float,
            concurrency: int, rps: float) -> list[Row]:
    """One run per daemon count, each on a fresh database with the same tasks."""
    import psycopg

    cluster = CountingCluster()
    cluster.start()
    try:
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE ROLE {WATCHER} LOGIN SUPERUSER")
        rows: list[Row] = []
        for n in daemons:
            rows.append(_run(cluster, n, tasks, base, size=size, rate=rate, concurrency=concurrency, rps=rps))
            one = rows[0].assets_s or 0.0
            rows[-1].note = f"**{(rows[-1].assets_s or 0) / one:.2f}× 1 daemon**; " + rows[-1].note
        return rows
    finally:
        cluster.cleanup()


def _run(cluster: CountingCluster, n: int, tasks: int, base: Path, *, size: int, rate: float, concurrency: int,
         rps: float) -> Row:
    import psycopg

    dsn = cluster.create_database()
    # Each task's first poll says "generating", the next (a second later) success: two polls a task.
    with Rig(base, None, size=size, running_polls=1, cdn_rate=rate) as rig, \
            psycopg.connect(cluster.watcher_dsn(dsn), autocommit=True) as watch:
        watch.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        watch.execute("SELECT pg_stat_statements_reset()")
        ids = [f"m{i:05d}" for i in range(tasks)]
        started = time.monotonic()
        children = [_daemon(rig, i, ids[i::n], dsn, concurrency, rps) for i in range(n)]
        archived, deadline = 0, started + 600
        while archived < tasks and time.monotonic() < deadline and all(c.proc.poll() is None for c in children):
            time.sleep(0.1)
            archived = _archived(watch)
        wall, ended = time.monotonic() - started, time.time()
        for child in children:
            child.proc.send_signal(signal.SIGTERM)
        usages = [child.wait(120) for child in children]
        polls = sum(len(seen) for seen in rig.seen(rig.api_url).values())
        # From the first byte asked of the CDN: the rate without the daemons' start-up.
        steady = archived / (ended - min(rig.seen(rig.cdn_url).values(), default=ended - wall))
        kinds = _statements(watch)
        # Each daemon's "archived KEY (N bytes)" log lines: how evenly the claims shared the work.
        shares = [(rig.dir / f"d{i}" / "daemon.log").read_text().count(" bytes)\n") for i in range(n)]
    cluster.drop_database(dsn)
    return _row(n, tasks, size, wall, archived, polls, kinds, usages, shares, steady)


def _daemon(rig: Rig, i: int, ids: list[str], dsn: str, concurrency: int, rps: float) -> Child:
    """Daemon `i` with its own state_dir and inbox (its share of the tasks), one shared archive."""
    home = rig.dir / f"d{i}"
    home.mkdir()
    kie = {"type": "kie", "api_key": "bench", "base_url": rig.api_url, "requests_per_second": rps,
           "poll_intervals": ["1s"]}
    doc: dict[str, Any] = {
        "state_dir": str(home / "state"), "inbox": {"path": str(home / "inbox.txt")},
        "state": {"backend": "postgres", "dsn": dsn}, "providers": {"kie": kie},
        "download": {"allow_addresses": ["127.0.0.0/8"], "concurrency": concurrency, "per_host": concurrency},
        "storage": rig.storage}
    (home / "config.yaml").write_text(yaml.safe_dump(doc))
    (home / "inbox.txt").write_text("".join(f"kie {task_id}\n" for task_id in ids))
    child = Child([PY, "-m", "archiver", "run", "-c", str(home / "config.yaml")], home / "daemon.log", rig.env)
    rig.children.insert(0, child)
    return child


def _archived(watch: Any) -> int:
    """Tasks archived so far; 0 until the first daemon has created the schema."""
    if watch.execute("SELECT to_regclass('task_counts')").fetchone()[0] is None:
        return 0
    row = watch.execute("SELECT n FROM task_counts WHERE state = 'archived'").fetchone()
    return int(row[0]) if row else 0


def _statements(watch: Any) -> list[tuple[str, int]]:
    """(statement, calls) the daemons sent to this database, most frequent first."""
    return [(" ".join(q.split()), int(c)) for q, c in watch.execute(
        "SELECT query, calls FROM pg_stat_statements WHERE userid = 'postgres'::regrole"
        " AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) ORDER BY calls DESC")]


def _row(n: int, tasks: int, size: int, wall: float, archived: int, polls: int, kinds: list[tuple[str, int]],
         usages: list[Usage], shares: list[int], steady: float) -> Row:
    total = sum(calls for _, calls in kinds)
    tx = sum(calls for q, calls in kinds if q in ("BEGIN", "COMMIT", "ROLLBACK"))
    per = max(archived, 1)
    note = (f"{archived}/{tasks} archived; {steady:.1f} assets/s from the first download; **{polls / wall:.1f} "
            f"polls/s**; **{total / per:.1f} statements/asset** ({(total - tx) / per:.1f} without BEGIN/COMMIT); "
            f"assets per daemon {shares}; exits {[u.code for u in usages]}")
    print(f"    {n} daemon(s), statements per archived asset by kind:")
    for query, calls in kinds[:KINDS_SHOWN]:
        print(f"      {calls / per:6.2f}  {query[:150]}")
    return Row(f"9 PostgreSQL, {n} daemon{'s' if n > 1 else ''}", wall, archived * size / wall / 1e6,
               archived / wall, sum(u.cpu for u in usages), max(u.peak_rss_mib for u in usages), note)

