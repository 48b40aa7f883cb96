"""Durable task state in SQLite (WAL): the embedded default, one daemon per file.

One writer (the daemon) and any number of readers (status, show) share the file;
WAL plus a busy timeout keeps them from failing with "database is locked". The calls
are quick local I/O, so they run on the event loop; `async` is the StateStore interface's.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from archiver.errors import LeaseLost, StateUnavailable
from archiver.files import private_file
from archiver.model import TaskRef, TaskState, TaskStatus
from archiver.state import queries as q
from archiver.state.base import RateSlots
from archiver.state.common import CommonStore, Step, errors_at_boundary, first_line
from archiver.state.records import (CLAIM_BATCH, KEEP_REJECTS, Asset, Claimed, Daemon, Health, Polled, Position,
                                    Rejected, Task, asset_from_row, per_ref, task_from_row)
from archiver.state.sqlite_schema import migrate, use_wal

MEMORY = ":memory:"  # an empty state DB in memory: what status and show read before the first run


def _unavailable(e: Exception) -> str:
    return f"the SQLite state DB failed: {first_line(e)}"


@errors_at_boundary((sqlite3.Error,), _unavailable)
class SqliteState(CommonStore):
    """The state database in one SQLite file; every write is one transaction."""

    backend = "sqlite"

    def __init__(self, path: Path, me: str = "") -> None:
        self.me = me  # this daemon's ID in `tasks.owner`; a CLI process owns nothing
        if str(path) != MEMORY:
            private_file(path)  # before SQLite makes it 0644: it holds raw provider answers
        try:
            self.db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            raise StateUnavailable(_unavailable(e)) from e
        try:
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA busy_timeout = 30000")
            use_wal(self.db)
            # NORMAL in WAL mode survives a process crash (kill -9); only power loss can
            # drop the last commits, and the inbox offset rolls back with them.
            self.db.execute("PRAGMA synchronous = NORMAL")
            migrate(self.db)
        except BaseException as e:
            self.db.close()
            if isinstance(e, sqlite3.Error):
                raise StateUnavailable(_unavailable(e)) from e
            raise

    async def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self.db.execute(sql, params).fetchall()

    async def _fetch_one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.db.execute(sql, params).fetchone()

    async def _apply(self, steps: Iterable[Step]) -> None:
        with self.transaction() as db:
            for sql, params in steps:
                db.execute(sql, params)

    def _history(self, db: sqlite3.Connection, pk: int, state: TaskState, reason: str | None = None,
                 note: str | None = None) -> None:
        db.execute(q.ADD_HISTORY, (pk, time.time(), state, reason, note))

    def _mine(self, db: sqlite3.Connection, pk: int) -> TaskState:
        """The task's state, if no other daemon holds it (else LeaseLost); it is ours from here."""
        row = db.execute("SELECT state, owner FROM tasks WHERE id = ?", (pk,)).fetchone()
        if row["owner"] not in (None, self.me):
            raise LeaseLost(f"task #{pk} is now held by another daemon")
        return TaskState(row["state"])

    # --- daemons and leases: one daemon per file (lock.py), so its leases never run out -

    async def join(self, host: str, pid: int, predecessor: str = "") -> None:
        """Start as the only daemon: whatever a previous run held is free again."""
        now = time.time()
        with self.transaction() as db:
            db.execute("UPDATE tasks SET owner = NULL WHERE owner IS NOT NULL")
            db.execute("DELETE FROM daemons")
            db.execute("DELETE FROM health")  # this run reports its own trouble
            db.execute("INSERT INTO daemons (id, host, pid, started_at, seen_at) VALUES (?, ?, ?, ?, ?)",
                       (self.me, host, pid, now, now))

    async def heartbeat(self) -> bool:
        """Renew this daemon's leases; False if they had run out (never, with one daemon)."""
        with self.transaction() as db:
            db.execute("UPDATE daemons SET seen_at = ? WHERE id = ?", (time.time(), self.me))
        return True

    async def leave(self) -> None:
        with self.transaction() as db:
            db.execute("UPDATE tasks SET owner = NULL WHERE owner = ?", (self.me,))
            db.execute("DELETE FROM daemons WHERE id = ?", (self.me,))

    async def claim(self, held: int, providers: Sequence[str]) -> list[Claimed]:
        """Take live tasks of our providers no daemon holds (new, retried, or a previous run's)."""
        if not providers:
            return []  # every entry without a key: `IN ()` leaves INDEXED BY no plan ("no query solution")
        marks = ",".join("?" for _ in providers)
        with self.transaction() as db:
            # Newest first: after a restart with a backlog, young tasks are polled first (policy.py).
            # A task taken over is asked at once: the pause its last holder was in may be over.
            # INDEXED BY: left to itself SQLite walks every live task by (provider, state) once a
            # second, 2-3 ms at 10,000 waiting tasks; the partial index holds only the free ones.
            rows = db.execute(f"UPDATE tasks SET owner = ?, next_poll_at = MIN(next_poll_at, ?) WHERE id IN"
                              f" (SELECT id FROM tasks INDEXED BY tasks_free WHERE owner IS NULL AND state IN"
                              f" ('queued', 'polling', 'downloading') AND provider IN ({marks}) ORDER BY id DESC"
                              f" LIMIT ?) RETURNING id, provider, state",
                              (self.me, time.time(), *providers, CLAIM_BATCH)).fetchall()
        return sorted((Claimed(r[0], r[1], TaskState(r[2])) for r in rows), key=lambda c: c.pk)

    def rate_slots(self) -> RateSlots | None:
        return None  # one daemon: a key's pace is kept in its process

    async def agree(self, name: str, value: str) -> str:
        return value  # one daemon agrees with itself

    async def daemons(self) -> list[Daemon]:
        rows = self.db.execute("SELECT * FROM daemons").fetchall()
        holds = dict(self.db.execute("SELECT state, COUNT(*) FROM tasks WHERE owner IS NOT NULL"
                                     " GROUP BY state").fetchall())
        return [Daemon(r["id"], r["host"], r["pid"], r["started_at"], r["seen_at"], holds) for r in rows]

    # --- intake -------------------------------------------------------------------------

    async def inbox_position(self) -> Position | None:
        row = self.db.execute("SELECT dev, ino, offset, line_no FROM inbox WHERE id = 1").fetchone()
        return Position(*row) if row else None

    async def ingest(self, refs: Sequence[TaskRef], rejects: Sequence[Rejected],
                     position: Position) -> list[TaskRef]:
        """Store new tasks, rejected lines and the new inbox position in one transaction; returns the new refs.

        Commit point: the offset moves only together with the tasks its lines produced,
        so a crash either keeps both or re-reads the lines; a task already known is ignored.
        """
        now = time.time()
        with self.transaction() as db:
            new = [ref for ref, row in zip(refs, per_ref(refs, self._insert(db, refs, now)), strict=True) if row]
            db.executemany(q.ADD_REJECT, [(now, r.line_no, r.reason, r.line) for r in rejects])
            if rejects:
                db.execute(q.TRIM_REJECTS, (KEEP_REJECTS,))
            db.execute("INSERT OR REPLACE INTO inbox (id, dev, ino, offset, line_no) VALUES (1, ?, ?, ?, ?)",
                       (position.dev, position.ino, position.offset, position.line_no))
        return new

    async def add_tasks(self, refs: Sequence[TaskRef], note: str) -> list[Task | None]:
        """Store tasks handed over by HTTP or the CLI; per ref, the new Task or None if it was known.

        Commit point: one transaction for the batch, done before the caller is answered.
        """
        with self.transaction() as db:
            rows = per_ref(refs, self._insert(db, refs, time.time(), note))
            return [self._task(row["id"]) if row else None for row in rows]

    def _insert(self, db: sqlite3.Connection, refs: Sequence[TaskRef], now: float,
                note: str | None = None) -> list[sqlite3.Row]:
        """Queue the tasks not known yet, held by no daemon; returns their id, provider and task_id.

        Not whole rows: a 10,000-line batch of them was the intake's peak of memory."""
        last = db.execute("SELECT COALESCE(MAX(id), 0) FROM tasks").fetchone()[0]
        db.executemany(
            "INSERT OR IGNORE INTO tasks (provider, task_id, labels, state, first_seen_at,"
            " updated_at, next_poll_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(ref.provider, ref.task_id, json.dumps(ref.labels), TaskState.QUEUED, now, now, now) for ref in refs])
        # A new rowid is above every rowid in the table, and this transaction holds the write lock:
        # the rows past `last` are exactly the ones just inserted.
        db.execute("INSERT INTO history (task, at, state, note) SELECT id, ?, ?, ? FROM tasks WHERE id > ?",
                   (now, TaskState.QUEUED, note, last))
        return db.execute("SELECT id, provider, task_id FROM tasks WHERE id > ?", (last,)).fetchall()

    # --- reads --------------------------------------------------------------------------

    def _task(self, pk: int) -> Task:
        return task_from_row(self.db.execute(q.TASK, (pk,)).fetchone())

    def _assets(self, pk: int) -> list[Asset]:
        return [asset_from_row(r) for r in self.db.execute(q.ASSETS, (pk,)).fetchall()]

    async def asset_work(self, pk: int, idx: int) -> tuple[Task, Asset, int]:
        """What archiving one asset needs: its task, itself, and how many assets the task has."""
        return self._task(pk), await self.asset(pk, idx), await self.asset_count(pk)

    async def assets_pending(self) -> int:
        """Assets of this daemon's downloading tasks not archived yet: what the next start resumes."""
        return int(self.db.execute("SELECT COUNT(*) FROM assets JOIN tasks ON tasks.id = assets.task"
                                   " WHERE tasks.state = ? AND assets.state != 'archived'",
                                   (TaskState.DOWNLOADING,)).fetchone()[0])

    async def history(self, pk: int) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT at, state, reason, note FROM history WHERE task = ? ORDER BY at, rowid",
                               (pk,)).fetchall()
        return [dict(r) for r in rows]

    # --- polling ------------------------------------------------------------------------

    async def due(self, provider: str, now: float, limit: int, busy: Collection[int],
                  lanes: int) -> list[list[Task]]:
        """This daemon's tasks of `provider` due at `now`, not in `busy`: up to `limit` per lane, by due time."""
        skip = ",".join(str(int(pk)) for pk in busy)
        return [[task_from_row(r) for r in self.db.execute(
            f"SELECT * FROM tasks WHERE provider = ? AND owner = ? AND lane = ? AND state IN ('queued', 'polling')"
            f" AND next_poll_at <= ? AND id NOT IN ({skip}) ORDER BY next_poll_at LIMIT ?",
            (provider, self.me, lane, now, limit))] for lane in range(lanes)]

    async def next_due(self, provider: str, busy: Collection[int]) -> float | None:
        """When this daemon's next task of `provider` (not in `busy`) falls due; None if it has none."""
        skip = ",".join(str(int(pk)) for pk in busy)
        row = self.db.execute(f"SELECT next_poll_at FROM tasks WHERE provider = ? AND owner = ? AND state IN"
                              f" ('queued', 'polling') AND id NOT IN ({skip}) ORDER BY next_poll_at LIMIT 1",
                              (provider, self.me)).fetchone()
        return float(row[0]) if row else None

    async def age(self, provider: str, now: float, ends: Sequence[float]) -> int:
        """Move this daemon's waiting tasks of `provider` on to the lane of their age (policy.lane_at)."""
        lane, at = q.lane_case(ends, now)
        with self.transaction() as db:
            # A lane past the last is left by a schedule with more steps (a changed config): it is old now.
            moved = db.execute("UPDATE tasks SET lane = ? WHERE provider = ? AND owner = ? AND lane > ? AND state IN"
                               " ('queued', 'polling')", (len(ends), provider, self.me, len(ends))).rowcount
            for k, end in enumerate(ends):  # lane by lane: tasks_aging finds just those past the step
                moved += db.execute(f"UPDATE tasks SET lane = {lane} WHERE provider = ? AND owner = ? AND lane = ?"
                                    f" AND state IN ('queued', 'polling') AND first_seen_at <= ?",
                                    (*at, provider, self.me, k, now - end)).rowcount
            return moved

    async def poll_soon(self, pk: int) -> bool:
        """Make one of this daemon's waiting tasks due now, in the first lane (a callback said it ended);
        False if it holds no such task."""
        with self.transaction() as db:
            cur = db.execute("UPDATE tasks SET next_poll_at = ?, lane = 0 WHERE id = ? AND owner = ? AND state IN"
                             " ('queued', 'polling')", (time.time(), pk, self.me))
        return cur.rowcount > 0

    async def polled_many(self, polls: Sequence[Polled]) -> set[int]:
        """Count polls that left their tasks running and say when (and in which lane) to ask each next;
        a first poll moves its task to polling. One transaction; returns the tasks another daemon holds."""
        lost = set()
        with self.transaction() as db:
            for p in polls:
                row = db.execute("SELECT state, owner FROM tasks WHERE id = ?", (p.pk,)).fetchone()
                if row["owner"] not in (None, self.me):
                    lost.add(p.pk)
                    continue
                # updated_at is a change of state, not a poll: only a first poll moves it.
                db.execute("UPDATE tasks SET state = ?, polls = polls + 1, last_error = ?, unknown_since = ?,"
                           " running_for = COALESCE(?, running_for), next_poll_at = ?, lane = ?,"
                           " answered_at = ?, empty_polls = ?, empty_since = ?,"
                           " updated_at = CASE WHEN state = ? THEN ? ELSE updated_at END WHERE id = ?",
                           (TaskState.POLLING, p.error, p.unknown_since, p.running_for, p.next_poll_at, p.lane,
                            p.answered_at, *p.empty, TaskState.QUEUED, p.at, p.pk))
                if row["state"] == TaskState.QUEUED:
                    db.execute("INSERT INTO history (task, at, state) VALUES (?, ?, ?)",
                               (p.pk, p.at, TaskState.POLLING))
        return lost

    async def succeeded(self, pk: int, status: TaskStatus) -> tuple[Task, list[Asset]]:
        """Record success and its result URLs as assets; the task and the assets still to archive."""
        now = time.time()
        with self.transaction() as db:
            self._mine(db, pk)
            db.execute(
                "UPDATE tasks SET state = ?, polls = polls + 1, last_error = NULL, success_seen_at = ?,"
                " updated_at = ?, media = ?, model = ?, prompt = ?, input = ?, response = ?,"
                " task_created_at = ?, task_completed_at = ?, owner = ? WHERE id = ?",
                (TaskState.DOWNLOADING, now, now, status.media, status.model, status.prompt,
                 json.dumps(status.input) if status.input is not None else None,
                 json.dumps(status.response), status.created_at, status.completed_at, self.me or None, pk))
            roles = status.roles if len(status.roles) == len(status.urls) else (None,) * len(status.urls)
            db.executemany("INSERT OR IGNORE INTO assets (task, idx, url, role) VALUES (?, ?, ?, ?)",
                           [(pk, i, url, role) for i, (url, role) in enumerate(zip(status.urls, roles, strict=True))])
            self._history(db, pk, TaskState.DOWNLOADING, note=f"{len(status.urls)} result URL(s)")
            # A retried task whose assets were all archived before has nothing left to do.
            if not db.execute("SELECT 1 FROM assets WHERE task = ? AND state != 'archived'", (pk,)).fetchone():
                db.execute("UPDATE tasks SET state = ?, owner = NULL WHERE id = ?", (TaskState.ARCHIVED, pk))
                self._history(db, pk, TaskState.ARCHIVED)
        return self._task(pk), [a for a in self._assets(pk) if a.state != "archived"]

    async def failed(self, pk: int, reason: str, code: str | None = None, message: str | None = None,
                     response: Any = None, *, polled: bool = False) -> Task:
        with self.transaction() as db:
            self._mine(db, pk)
            # Commit point: record_due stays set until the _failed record is in the archive.
            db.execute("UPDATE tasks SET state = ?, reason = ?, code = ?, message = ?, updated_at = ?,"
                       " response = COALESCE(?, response), record_due = 1, owner = NULL, polls = polls + ?"
                       " WHERE id = ?",
                       (TaskState.FAILED, reason, code, message, time.time(),
                        json.dumps(response) if response is not None else None, int(polled), pk))
            self._history(db, pk, TaskState.FAILED, reason, message)
        return self._task(pk)

    # --- assets -------------------------------------------------------------------------

    async def set_key(self, pk: int, idx: int, key: str) -> str:
        """Store the asset's key unless one is stored already; return the stored one."""
        with self.transaction() as db:
            if db.execute("UPDATE assets SET key = ? WHERE task = ? AND idx = ? AND key IS NULL",
                          (key, pk, idx)).rowcount:
                return key
        return str((await self.asset(pk, idx)).key)

    async def archived(self, pk: int, idx: int, *, size: int, sha256: str, content_type: str,
                       downloaded_at: float, archived_at: float, width: int | None = None,
                       height: int | None = None) -> bool:
        """Mark one asset archived, with its pixel size if known; the task follows when it was the last.
        True if it did."""
        with self.transaction() as db:
            self._mine(db, pk)
            db.execute("UPDATE assets SET state = 'archived', bytes = ?, sha256 = ?, content_type = ?,"
                       " downloaded_at = ?, archived_at = ?, last_error = NULL, width = COALESCE(?, width),"
                       " height = COALESCE(?, height) WHERE task = ? AND idx = ?",
                       (size, sha256, content_type, downloaded_at, archived_at, width, height, pk, idx))
            left = db.execute("SELECT COUNT(*) FROM assets WHERE task = ? AND state != 'archived'",
                              (pk,)).fetchone()[0]
            if left:
                return False
            db.execute("UPDATE tasks SET state = ?, updated_at = ?, owner = NULL WHERE id = ?",
                       (TaskState.ARCHIVED, archived_at, pk))
            self._history(db, pk, TaskState.ARCHIVED)
            return True

    # --- health and status --------------------------------------------------------------

    async def set_health(self, name: str, state: str, message: str | None = None) -> None:
        """Report a health row; `at` keeps the time the current state began."""
        with self.transaction() as db:
            db.execute("INSERT INTO health (name, state, message, at) VALUES (?, ?, ?, ?)"
                       " ON CONFLICT (name) DO UPDATE SET message = excluded.message,"
                       " at = CASE WHEN health.state = excluded.state THEN health.at ELSE excluded.at END,"
                       " state = excluded.state",
                       (name, state, message, time.time()))

    async def health(self) -> list[Health]:
        rows = self.db.execute("SELECT name, state, message, at FROM health ORDER BY name").fetchall()
        return [Health("", r["name"], r["state"], r["message"], r["at"]) for r in rows]

    async def counts(self) -> dict[str, int]:
        rows = self.db.execute("SELECT state, COUNT(*) FROM tasks GROUP BY state").fetchall()
        found = {r[0]: r[1] for r in rows}
        return {s.value: found.get(s.value, 0) for s in TaskState}

    async def oldest_pending(self, provider: str) -> float | None:
        """first_seen_at of the provider's oldest unfinished task; one index lookup per state."""
        firsts = [self.db.execute("SELECT MIN(first_seen_at) FROM tasks WHERE provider = ? AND state = ?",
                                  (provider, s)).fetchone()[0]
                  for s in (TaskState.QUEUED, TaskState.POLLING, TaskState.DOWNLOADING)]
        return min((f for f in firsts if f is not None), default=None)
