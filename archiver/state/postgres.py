"""Task state in PostgreSQL: any number of daemons share it (docs/design.md, several daemons).

A daemon claims free live tasks with FOR UPDATE SKIP LOCKED, its fair share at a time,
and holds them while its row in `daemons` is fresh: one heartbeat renews every lease it
holds. A daemon whose heartbeat is older than `state.lease` is reaped by the others and
its tasks are free again. Writes check the holder, so a daemon that lost a task to
another gets LeaseLost instead of overwriting it. psycopg 3 with its async pool.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import AsyncIterator, Collection, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import astuple
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from archiver.errors import ArchiverError, LeaseLost, StateUnavailable
from archiver.model import TaskRef, TaskState, TaskStatus
from archiver.state import pg_queries as pq
from archiver.state import queries as q
from archiver.state.base import RateSlots
from archiver.state.common import CommonStore, Step, errors_at_boundary, first_line
from archiver.state.pg_queries import NOW
from archiver.state.pg_schema import VERSION, migrate, refuse_newer, schema_version
from archiver.state.queries import LIVE_SQL, pg
from archiver.state.records import (CLAIM_BATCH, KEEP_REJECTS, Asset, Claimed, Daemon, Health, Polled, Position,
                                    Rejected, Task, asset_from_row, per_ref, task_from_row)

Conn = psycopg.AsyncConnection[dict[str, Any]]
POOL_SIZE = 8


def _unavailable(e: Exception) -> str:
    if isinstance(e, (psycopg.OperationalError, psycopg.InterfaceError)):  # PoolTimeout is one too
        return f"the PostgreSQL state DB does not answer: {first_line(e)}"
    return f"the PostgreSQL state DB refused a statement: {first_line(e)}"


@errors_at_boundary((psycopg.Error,), _unavailable)
class PostgresState(CommonStore):
    """The state database on a PostgreSQL server; every write is one transaction."""

    backend = "postgres"

    def __init__(self, pool: AsyncConnectionPool[Conn], me: str, lease: float, inbox: str) -> None:
        self.pool = pool
        self.me = me
        self.lease = lease
        self.host = socket.gethostname()
        self.pid = 0  # set by join(); a heartbeat that finds our row reaped writes it back with it
        self.inbox = inbox  # this daemon's inbox path: its offset is kept per host and path
        self.statements = 0  # sent to the server, for the benchmark's queries-per-asset figure

    @classmethod
    async def open(cls, dsn: str, me: str, *, lease: float, inbox: str) -> PostgresState:
        """Connect; a daemon (`me` set) creates or migrates the schema, a CLI command needs it current."""
        pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            dsn, min_size=1, max_size=POOL_SIZE, open=False, timeout=10,
            kwargs={"autocommit": True, "row_factory": dict_row, "connect_timeout": 5})
        state = cls(pool, me, lease, inbox)
        try:
            await pool.open(wait=True, timeout=10)
            async with state._conn() as conn:
                if me:
                    await migrate(conn)
                elif (found := await schema_version(conn)) != VERSION:
                    refuse_newer(found)
                    raise ArchiverError(f"state.dsn: the database's archiver schema is version {found}, not "
                                        f"{VERSION}: start `archiver run` once to create or migrate it")
        except BaseException as e:
            await pool.close()
            if isinstance(e, psycopg.Error):
                raise StateUnavailable(_unavailable(e)) from None
            raise
        return state

    async def close(self) -> None:
        await self.pool.close()

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[Conn]:
        """A pooled connection; any error of the server's (down, unreachable, refusing) is StateUnavailable."""
        try:
            async with self.pool.connection() as conn:
                yield conn
        except psycopg.Error as e:
            raise StateUnavailable(_unavailable(e)) from None

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[Conn]:
        async with self._conn() as conn, conn.transaction():
            yield conn

    async def _run(self, conn: Conn, sql: str, params: Any = None) -> psycopg.AsyncCursor[dict[str, Any]]:
        self.statements += 1
        return await conn.execute(sql, params)  # type: ignore[arg-type]  # our own literal SQL

    async def _all(self, sql: str, params: Any = None) -> list[dict[str, Any]]:
        async with self._conn() as conn:
            return await (await self._run(conn, sql, params)).fetchall()

    async def _one(self, sql: str, params: Any = None) -> dict[str, Any] | None:
        async with self._conn() as conn:
            return await (await self._run(conn, sql, params)).fetchone()

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return await self._all(pg(sql), params)

    async def _fetch_one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return await self._one(pg(sql), params)

    async def _apply(self, steps: Iterable[Step]) -> None:
        async with self._tx() as conn:
            for sql, params in steps:
                await self._run(conn, pg(sql), params)

    async def _mine(self, conn: Conn, pk: int) -> TaskState:
        """Lock the task's row; its state, if no other daemon holds it (else LeaseLost).

        An archived task nobody holds was finished by another daemon while our lease had run out
        (a pause, an outage): a write from us now would undo that.
        """
        row = await (await self._run(conn, "SELECT state, owner FROM tasks WHERE id = %s FOR UPDATE", (pk,))).fetchone()
        assert row is not None
        if row["owner"] not in (None, self.me) or (row["owner"] is None and row["state"] == TaskState.ARCHIVED.value):
            raise LeaseLost(f"task #{pk} is now held by another daemon, or another daemon ended it")
        return TaskState(row["state"])

    # --- daemons and leases -------------------------------------------------------------

    async def join(self, host: str, pid: int, predecessor: str = "") -> None:
        self.host, self.pid = host, pid
        async with self._tx() as conn:
            if predecessor:  # a restart on the same state_dir need not wait out the dead run's lease
                await self._forget(conn, [predecessor])
            await self._run(conn, f"INSERT INTO daemons (id, host, pid, started_at, seen_at) VALUES (%s, %s, %s, {NOW},"
                            f" {NOW})", (self.me, host, pid))

    async def heartbeat(self) -> bool:
        """Renew every lease we hold; reap daemons whose heartbeat stopped. False if ours had run out."""
        async with self._tx() as conn:
            dead = await (await self._run(conn, f"DELETE FROM daemons WHERE seen_at < {NOW} - %s AND id <> %s"
                                          " RETURNING id", (self.lease, self.me))).fetchall()
            if dead:
                await self._forget(conn, [d["id"] for d in dead])
            row = await (await self._run(conn, pq.HEARTBEAT, (self.me, self.host, self.pid))).fetchone()
        return not (row and row["fresh"])

    async def leave(self) -> None:
        async with self._tx() as conn:
            await self._forget(conn, [self.me])

    async def _forget(self, conn: Conn, ids: list[str]) -> None:
        """These daemons are gone: their tasks are free, their rows and health rows go."""
        await self._run(conn, "UPDATE tasks SET owner = NULL WHERE owner = ANY(%s)", (ids,))
        await self._run(conn, "DELETE FROM health WHERE daemon = ANY(%s)", (ids,))
        await self._run(conn, "DELETE FROM daemons WHERE id = ANY(%s)", (ids,))

    async def claim(self, held: int, providers: Sequence[str]) -> list[Claimed]:
        """Free live tasks of our providers, up to our fair share: live tasks over live daemons."""
        # Asked every second: when nothing is free (the usual case) the partial index tasks_free
        # says so at once, and the share's count of our own tasks (50 ms at 100,000) is not made.
        if not await self._one(f"SELECT 1 AS free FROM tasks WHERE owner IS NULL AND state IN {LIVE_SQL}"
                               " AND provider = ANY(%s) LIMIT 1", (list(providers),)):
            return []
        rows = await self._all(pq.CLAIM, {"lease": self.lease, "providers": list(providers), "batch": CLAIM_BATCH,
                                          "held": held, "me": self.me})
        return sorted((Claimed(r["id"], r["provider"], TaskState(r["state"])) for r in rows), key=lambda c: c.pk)

    async def daemons(self) -> list[Daemon]:
        rows = await self._all("SELECT * FROM daemons ORDER BY started_at")
        holds = await self._all(f"SELECT owner, state, count(*) AS n FROM tasks WHERE owner IS NOT NULL"
                                f" AND state IN {LIVE_SQL} GROUP BY owner, state")
        return [Daemon(r["id"], r["host"], r["pid"], r["started_at"], r["seen_at"],
                       {h["state"]: h["n"] for h in holds if h["owner"] == r["id"]}) for r in rows]

    def rate_slots(self) -> RateSlots | None:
        return self  # every daemon takes a key's slots from the same row (reserve, hold)

    async def reserve(self, key_id: str, interval: float, count: int = 1) -> float:
        """The next `count` free slots of this key, across every daemon, `interval` apart: seconds
        until the first (it may be now: 0)."""
        row = await self._one(pq.RESERVE, {"k": key_id, "span": interval * count})
        return max(0.0, float(row["wait"])) if row else 0.0

    async def hold(self, key_id: str, seconds: float) -> None:
        """No daemon sends with this key for `seconds` (a 429's Retry-After)."""
        async with self._conn() as conn:
            await self._run(conn, f"UPDATE rate_slots SET next_at = GREATEST(next_at, {NOW} + %s) WHERE key_id = %s",
                            (seconds, key_id))

    async def agree(self, name: str, value: str) -> str:
        """The first value any daemon stored under `name`: how daemons check they see the same thing."""
        async with self._tx() as conn:
            await self._run(conn, "INSERT INTO settings (name, value) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                            (name, value))
            row = await (await self._run(conn, "SELECT value FROM settings WHERE name = %s", (name,))).fetchone()
        return str(row["value"]) if row else value

    # --- intake -------------------------------------------------------------------------

    async def inbox_position(self) -> Position | None:
        row = await self._one('SELECT dev, ino, "offset", line_no FROM inbox WHERE host = %s AND path = %s',
                              (self.host, self.inbox))
        return Position(row["dev"], row["ino"], row["offset"], row["line_no"]) if row else None

    async def ingest(self, refs: Sequence[TaskRef], rejects: Sequence[Rejected],
                     position: Position) -> list[TaskRef]:
        """New tasks, rejected lines and this inbox's position in one transaction (see SqliteState.ingest)."""
        now = time.time()
        async with self._tx() as conn:
            rows = per_ref(refs, await self._insert(conn, refs, now))
            new = [ref for ref, row in zip(refs, rows, strict=True) if row]
            for r in rejects:
                await self._run(conn, pg(q.ADD_REJECT), (now, r.line_no, r.reason, r.line))
            if rejects:
                await self._run(conn, pg(q.TRIM_REJECTS), (KEEP_REJECTS,))
            await self._run(conn, pq.INBOX, (self.host, self.inbox, *astuple(position)))
        return new

    async def add_tasks(self, refs: Sequence[TaskRef], note: str) -> list[Task | None]:
        async with self._tx() as conn:
            rows = per_ref(refs, await self._insert(conn, refs, time.time(), note))
            made = {r["id"]: task_from_row(r) for r in await (await self._run(
                conn, "SELECT * FROM tasks WHERE id = ANY(%s)", ([r["id"] for r in rows if r],))).fetchall()}
        return [made[row["id"]] if row else None for row in rows]

    async def _insert(self, conn: Conn, refs: Sequence[TaskRef], now: float, note: str | None = None) -> list[Any]:
        """Queue the tasks not known yet; returns their id, provider and task_id (see SqliteState._insert)."""
        if not refs:
            return []
        # One statement for the whole batch, tasks and history rows: each statement is a round trip.
        return await (await self._run(
            conn, pq.INSERT_TASKS,
            {"p": [r.provider for r in refs], "t": [r.task_id for r in refs],
             "l": [json.dumps(r.labels) for r in refs], "now": now, "note": note})).fetchall()

    # --- reads --------------------------------------------------------------------------

    async def asset_work(self, pk: int, idx: int) -> tuple[Task, Asset, int]:
        """What archiving one asset needs, in one query: its task, itself, the task's asset count."""
        row = await self._one("SELECT to_jsonb(t) AS task, to_jsonb(a) AS asset, (SELECT count(*) FROM assets c"
                              " WHERE c.task = t.id) AS n FROM tasks t JOIN assets a ON a.task = t.id"
                              " WHERE t.id = %s AND a.idx = %s", (pk, idx))
        assert row is not None, f"no asset {idx} of task #{pk}"
        return task_from_row(row["task"]), asset_from_row(row["asset"]), int(row["n"])

    async def assets_pending(self) -> int:
        """Assets of the tasks this daemon holds that are not archived yet."""
        row = await self._one("SELECT count(*) AS n FROM assets JOIN tasks ON tasks.id = assets.task"
                              " WHERE tasks.state = 'downloading' AND tasks.owner = %s AND assets.state <> 'archived'",
                              (self.me,))
        return int(row["n"]) if row else 0

    async def history(self, pk: int) -> list[dict[str, Any]]:
        return await self._all("SELECT at, state, reason, note FROM history WHERE task = %s ORDER BY at, id", (pk,))

    # --- polling ------------------------------------------------------------------------

    async def due(self, provider: str, now: float, limit: int, busy: Collection[int],
                  lanes: int) -> list[list[Task]]:
        # One statement for every lane: a round trip each would cost more than the reads.
        rows = await self._all(" UNION ALL ".join(
            f"(SELECT * FROM tasks WHERE provider = %(p)s AND owner = %(me)s AND lane = {lane} AND state IN"
            f" ('queued', 'polling') AND next_poll_at <= %(now)s AND NOT id = ANY(%(busy)s)"
            f" ORDER BY next_poll_at LIMIT %(n)s)" for lane in range(lanes)),
            {"p": provider, "me": self.me, "now": now, "busy": list(busy), "n": limit})
        found: list[list[Task]] = [[] for _ in range(lanes)]
        for row in rows:
            found[row["lane"]].append(task_from_row(row))
        return [sorted(lane, key=lambda t: t.next_poll_at) for lane in found]

    async def next_due(self, provider: str, busy: Collection[int]) -> float | None:
        row = await self._one("SELECT next_poll_at FROM tasks WHERE provider = %s AND owner = %s AND state IN"
                              " ('queued', 'polling') AND NOT id = ANY(%s) ORDER BY next_poll_at LIMIT 1",
                              (provider, self.me, list(busy)))
        return float(row["next_poll_at"]) if row else None

    async def age(self, provider: str, now: float, ends: Sequence[float]) -> int:
        lane, at = q.lane_case(ends, now)
        lane = pg(lane)
        async with self._tx() as conn:
            # A lane past the last is left by a schedule with more steps (a changed config): it is old now.
            moved = (await self._run(conn, "UPDATE tasks SET lane = %s WHERE provider = %s AND owner = %s AND lane > %s"
                                     " AND state IN ('queued', 'polling')",
                                     (len(ends), provider, self.me, len(ends)))).rowcount
            for k, end in enumerate(ends):  # lane by lane: tasks_aging finds just those past the step
                moved += (await self._run(
                    conn, f"UPDATE tasks SET lane = {lane} WHERE provider = %s AND owner = %s AND lane = %s"
                    f" AND state IN ('queued', 'polling') AND first_seen_at <= %s",
                    (*at, provider, self.me, k, now - end))).rowcount
            return moved

    async def poll_soon(self, pk: int) -> bool:
        row = await self._one("UPDATE tasks SET next_poll_at = %s, lane = 0 WHERE id = %s AND owner = %s AND state IN"
                              " ('queued', 'polling') RETURNING id", (time.time(), pk, self.me))
        return row is not None

    async def polled_many(self, polls: Sequence[Polled]) -> set[int]:
        """See SqliteState.polled_many; each task at most once per call."""
        if not polls:
            return set()
        # One statement for the lot (the commonest write: every poll of a running task): lock the rows
        # in id order (two daemons never wait on each other in a circle), check the holder, update, and
        # add the history row of each task's first poll. A task nobody holds that has ended was ended by
        # another daemon while our lease had run out: not ours to write.
        # updated_at is a change of state, not a poll (see SqliteState.polled_many).
        rows = await self._all(
            pq.POLLED_MANY,
            {"pk": [p.pk for p in polls], "at": [p.at for p in polls], "next": [p.next_poll_at for p in polls],
             "lane": [p.lane for p in polls], "error": [p.error for p in polls],
             "unknown": [p.unknown_since for p in polls], "running": [p.running_for for p in polls],
             "answered": [p.answered_at for p in polls], "empty": [p.empty[0] for p in polls],
             "empty_since": [p.empty[1] for p in polls], "me": self.me})
        return {p.pk for p in polls} - {r["id"] for r in rows}

    async def succeeded(self, pk: int, status: TaskStatus) -> tuple[Task, list[Asset]]:
        now = time.time()
        roles = status.roles if len(status.roles) == len(status.urls) else (None,) * len(status.urls)
        # One statement, so one implicit transaction: the UPDATE locks the row and checks the holder
        # (as _mine would); a retried task whose assets were all archived before ends at once. New
        # asset rows come from RETURNING; the plain SELECT sees only rows the task already had.
        async with self._conn() as conn:
            row = await (await self._run(
                conn, pq.SUCCEEDED,
                {"now": now, "media": status.media, "model": status.model, "prompt": status.prompt,
                 "input": json.dumps(status.input) if status.input is not None else None,
                 "response": json.dumps(status.response), "created": status.created_at,
                 "completed": status.completed_at, "owner": self.me or None, "pk": pk, "me": self.me,
                 "note": f"{len(status.urls)} result URL(s)", "n": len(status.urls), "urls": list(status.urls),
                 "roles": list(roles)})).fetchone()
        if row is None:
            raise LeaseLost(f"task #{pk} is now held by another daemon, or another daemon ended it")
        assets = [asset_from_row(a) for a in row["assets"]]
        return task_from_row(row["task"]), [a for a in assets if a.state != "archived"]

    async def failed(self, pk: int, reason: str, code: str | None = None, message: str | None = None,
                     response: Any = None, *, polled: bool = False) -> Task:
        async with self._tx() as conn:
            await self._mine(conn, pk)
            row = await (await self._run(
                conn, "UPDATE tasks SET state = 'failed', reason = %s, code = %s, message = %s, updated_at = %s,"
                " response = COALESCE(%s, response), record_due = true, owner = NULL, polls = polls + %s"
                " WHERE id = %s RETURNING *",
                (reason, code, message, time.time(), json.dumps(response) if response is not None else None,
                 int(polled), pk))).fetchone()
            await self._run(conn, pg(q.ADD_HISTORY), (pk, time.time(), "failed", reason, message))
        return task_from_row(row)

    # --- assets -------------------------------------------------------------------------

    async def set_key(self, pk: int, idx: int, key: str) -> str:
        row = await self._one("UPDATE assets SET key = COALESCE(key, %s) WHERE task = %s AND idx = %s RETURNING key",
                              (key, pk, idx))
        return str(row["key"]) if row else key

    async def archived(self, pk: int, idx: int, *, size: int, sha256: str, content_type: str,
                       downloaded_at: float, archived_at: float, width: int | None = None,
                       height: int | None = None) -> bool:
        async with self._tx() as conn:
            # The lock first, in its own statement: the next one's snapshot then sees the other
            # assets a worker of ours archived meanwhile, so the task's last asset always ends it.
            await self._mine(conn, pk)
            row = await (await self._run(
                conn, pq.ARCHIVED,
                {"size": size, "sha": sha256, "ct": content_type, "down": downloaded_at, "at": archived_at,
                 "pk": pk, "idx": idx, "now": time.time(), "width": width, "height": height})).fetchone()
            return bool(row and row["n"])

    # --- health and status --------------------------------------------------------------

    async def set_health(self, name: str, state: str, message: str | None = None) -> None:
        async with self._conn() as conn:
            await self._run(conn, "INSERT INTO health (daemon, name, state, message, at) VALUES (%s, %s, %s, %s, %s)"
                            " ON CONFLICT (daemon, name) DO UPDATE SET message = excluded.message, at = CASE"
                            " WHEN health.state = excluded.state THEN health.at ELSE excluded.at END,"
                            " state = excluded.state",
                            (self.me, name, state, message, time.time()))

    async def health(self) -> list[Health]:
        rows = await self._all("SELECT * FROM health ORDER BY name, daemon")
        return [Health(r["daemon"], r["name"], r["state"], r["message"], r["at"]) for r in rows]

    async def counts(self) -> dict[str, int]:
        return await self.kept_counts()  # exact: kept in the same transactions as the rows

    async def oldest_pending(self, provider: str) -> float | None:
        row = await self._one(f"SELECT MIN(first_seen_at) AS first FROM tasks WHERE provider = %s AND state IN"
                              f" {LIVE_SQL}", (provider,))
        return row["first"] if row else None
