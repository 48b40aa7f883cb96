"""The StateStore interface's behaviour, on both backends (SQLite and PostgreSQL).

Each test opens the state as the daemon does (a written config, load_config, open_state) through
the `state_backend` fixture. What only one backend has (several daemons, a shared rate slot, the
PostgreSQL schema versions, an older SQLite file) skips on the other, saying why.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from archiver.errors import ArchiverError, LeaseLost
from archiver.model import Phase, TaskState, TaskRef, TaskStatus
from archiver.pacing import Bucket, key_bucket
from archiver.state import Claimed, Polled, Position, Rejected, SqliteState, open_state, pg_schema
from archiver.state.base import StateStore
from tests.support.postgres import StateBackend
from tests.support.state import daemon_state, only, state_config

Opener = Callable[..., Awaitable[StateStore]]
DONE = TaskStatus(Phase.SUCCEEDED, urls=("https://cdn.example/1.png", "https://cdn.example/2.png"))
ONE_DAEMON = "SQLite has one daemon per state file (lock.py)"


@pytest.fixture
async def opened(tmp_path: Path, state_backend: StateBackend) -> AsyncIterator[Opener]:
    """open(pid=1, inbox=…, **state) → a joined daemon's TaskState; every one is closed after the test."""
    states: list[StateStore] = []

    async def opener(pid: int = 1, *, join: bool = True, inbox: str = "inbox.txt", **state: object) -> StateStore:
        config = state_config(tmp_path, state_backend, inbox=inbox, **state)
        found = await daemon_state(config, pid) if join else await open_state(config, daemon=True)
        states.append(found)
        return found

    yield opener
    for state in states:
        await state.close()


async def queue(state: StateStore, *task_ids: str, provider: str = "kie") -> list[int]:
    tasks = await state.add_tasks([TaskRef(provider, t) for t in task_ids], note="test")
    assert all(t is not None for t in tasks)
    return [t.pk for t in tasks if t is not None]


async def archive_asset(state: StateStore, pk: int, idx: int) -> bool:
    now = time.time()
    return await state.archived(pk, idx, size=10, sha256="ab" * 32, content_type="image/png",
                                downloaded_at=now, archived_at=now)


async def test_health_since_is_when_the_trouble_began(opened: Opener) -> None:
    state = await opened()
    await state.set_health("kie", "failing", "HTTP 500")
    [row] = await state.health()
    began = row.at
    await asyncio.sleep(0.02)
    await state.set_health("kie", "failing", "HTTP 502")
    [row] = await state.health()
    assert row.at == began and row.message == "HTTP 502"
    await asyncio.sleep(0.02)
    await state.set_health("kie", "ok")
    [row] = await state.health()
    assert row.at > began and row.state == "ok" and row.message is None


async def test_asset_roles_are_kept(opened: Opener) -> None:
    state = await opened()
    [pk, pk2] = await queue(state, "t1", "t2")
    _, assets = await state.succeeded(pk, TaskStatus(Phase.SUCCEEDED, urls=("https://a/1.mp3", "https://a/1.jpg"),
                                                     roles=("result", "cover")))
    assert [(a.url, a.role) for a in assets] == [("https://a/1.mp3", "result"), ("https://a/1.jpg", "cover")]
    _, assets = await state.succeeded(pk2, TaskStatus(Phase.SUCCEEDED, urls=("https://a/2.png",)))
    assert [a.role for a in assets] == [None]


@only("sqlite", "a PostgreSQL DB gains columns by numbered migrations (tested below)")
async def test_an_older_sqlite_db_gains_the_role_column(tmp_path: Path, state_backend: StateBackend) -> None:
    path = tmp_path / "archiver.db"
    old = sqlite3.connect(path)  # the assets table as it was before roles
    old.execute("CREATE TABLE assets (task INTEGER NOT NULL, idx INTEGER NOT NULL, url TEXT NOT NULL, key TEXT,"
                " state TEXT NOT NULL DEFAULT 'pending', bytes INTEGER, sha256 TEXT, content_type TEXT,"
                " downloaded_at REAL, archived_at REAL, last_error TEXT, PRIMARY KEY (task, idx))")
    old.close()
    state = SqliteState(path)
    try:
        [task] = await state.add_tasks([TaskRef("suno", "t1")], note="test")
        assert task is not None
        _, assets = await state.succeeded(task.pk, TaskStatus(Phase.SUCCEEDED, urls=("https://a/1.mp3",),
                                                              roles=("result",)))
        assert [a.role for a in assets] == ["result"]
    finally:
        await state.close()


def test_openers_of_a_new_sqlite_db_at_once_all_succeed(tmp_path: Path) -> None:
    # A CLI `status` racing a starting daemon once failed with "duplicate column name" (CI).
    def open_close(path: Path) -> None:
        SqliteState(path).db.close()

    for attempt in range(20):
        path = tmp_path / f"{attempt}.db"
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            for opened in [pool.submit(open_close, path) for _ in range(4)]:
                opened.result()


async def test_a_task_is_known_once_whichever_door(opened: Opener) -> None:
    state = await opened()
    new = await state.ingest([TaskRef("kie", "a", {"p": "1"}), TaskRef("kie", "b"), TaskRef("kie", "a")], [],
                             Position(1, 2, 30, 3))
    assert new == [TaskRef("kie", "a", {"p": "1"}), TaskRef("kie", "b")]
    added = await state.add_tasks([TaskRef("kie", "a", {"p": "2"}), TaskRef("kie", "c"), TaskRef("other", "a")],
                                  note="cli")
    assert [t and (t.provider, t.task_id) for t in added] == [None, ("kie", "c"), ("other", "a")]
    assert await state.ingest([TaskRef("kie", "c"), TaskRef("other", "a")], [], Position(1, 2, 50, 5)) == []
    assert (await state.counts())["queued"] == 4
    a = await state.find("kie", "a")
    assert a is not None and a.labels == {"p": "1"}, "a second sighting changed the first one's labels"
    assert [h["state"] for h in await state.history(a.pk)] == ["queued"]
    c = await state.find("kie", "c")
    assert c is not None and [(h["state"], h["note"]) for h in await state.history(c.pk)] == [("queued", "cli")]
    assert await state.find("kie", "nope") is None


async def test_the_inbox_position_round_trips_and_survives_a_restart(opened: Opener) -> None:
    state = await opened()
    assert await state.inbox_position() is None
    rejected = [Rejected(7, "unknown provider", "nope t1")]
    await state.ingest([TaskRef("kie", "a")], rejected, Position(11, 22, 333, 8))
    assert await state.inbox_position() == Position(11, 22, 333, 8)
    await state.ingest([], [], Position(11, 22, 400, 9))
    again = await opened(pid=2, join=False)
    assert await again.inbox_position() == Position(11, 22, 400, 9)
    assert [(r["line_no"], r["reason"], r["line"]) for r in await again.recent_rejects(5)] == \
        [(7, "unknown provider", "nope t1")]


@only("postgres", "a SQLite state file has one inbox")
async def test_each_inbox_path_keeps_its_own_position(opened: Opener, state_backend: StateBackend) -> None:
    one, two = await opened(inbox="one.txt"), await opened(pid=2, inbox="two.txt")
    await one.ingest([TaskRef("kie", "a")], [], Position(1, 1, 100, 2))
    assert await two.inbox_position() is None
    await two.ingest([TaskRef("kie", "a"), TaskRef("kie", "b")], [], Position(2, 2, 50, 1))
    assert await one.inbox_position() == Position(1, 1, 100, 2)
    assert await two.inbox_position() == Position(2, 2, 50, 1)
    assert (await one.counts())["queued"] == 2, "one task ingested through two inboxes became two"


async def test_claim_takes_free_live_tasks_and_not_another_daemons(opened: Opener) -> None:
    a = await opened()
    pks = await queue(a, "t1", "t2", "t3", "ended")
    await queue(a, "elsewhere", provider="other")
    await a.failed(pks[3], "provider_failed")
    claimed = await a.claim(0, ["kie"])
    assert claimed == [Claimed(pk, "kie", TaskState.QUEUED) for pk in pks[:3]]
    [me] = [d for d in await a.daemons() if d.id == a.me]
    assert me.holds == {"queued": 3}
    b = await opened(pid=2, join=False)  # joining a SQLite file would end a's run
    assert await b.claim(0, ["kie"]) == [], "a claim took tasks a live daemon holds"
    [late] = await queue(a, "late")
    assert [t.pk for t in await b.claim(0, ["kie", "other"])] == sorted([late, *[
        t.pk for t in await a.tasks_in([TaskState.QUEUED]) if t.provider == "other"]])
    assert await a.claim(3, ["kie"]) == []


@only("postgres", ONE_DAEMON)
async def test_claims_share_the_live_tasks_fairly(opened: Opener, state_backend: StateBackend) -> None:
    a, b = await opened(), await opened(pid=2)
    await queue(a, *(f"t{n}" for n in range(12)))
    assert len(await a.claim(2, ["kie"])) == 4, "the share is 12 tasks / 2 daemons, less the 2 held"
    assert len(await b.claim(0, ["kie"])) == 6
    assert len(await a.claim(4, ["kie"])) == 2
    assert await b.claim(6, ["kie"]) == []
    holds = {d.id: d.holds for d in await a.daemons()}
    assert holds == {a.me: {"queued": 6}, b.me: {"queued": 6}}


async def test_a_dead_daemons_tasks_go_to_the_living(opened: Opener, state_backend: StateBackend) -> None:
    dead = await opened(lease="5s")
    pks = await queue(dead, "t1", "t2")
    assert len(await dead.claim(0, ["kie"])) == 2
    alive = await opened(pid=2, lease="5s")  # on SQLite: the next run after a crash
    if state_backend.name == "postgres":
        assert await alive.claim(0, ["kie"]) == [], "tasks taken before the holder's lease ran out"
        steady = await opened(pid=3, lease="5s")
        [kept] = await queue(steady, "kept")
        assert [t.pk for t in await steady.claim(0, ["kie"])] == [kept]
        for _ in range(6):  # 5.4 s: the dead one's lease runs out, theirs are renewed
            await asyncio.sleep(0.9)
            assert await steady.heartbeat() is True and await alive.heartbeat() is True
        assert {d.id for d in await alive.daemons()} == {alive.me, steady.me}, "the dead daemon was not reaped"
        with pytest.raises(LeaseLost):
            await alive.polled(kept)
    assert [t.pk for t in await alive.claim(0, ["kie"])] == pks
    with pytest.raises(LeaseLost):
        await dead.polled(pks[0])
    if state_backend.name == "postgres":
        assert await dead.heartbeat() is False, "a daemon whose lease ran out was not told"
    await alive.polled(pks[0])
    assert (await alive.task(pks[0])).state == TaskState.POLLING


async def test_a_daemon_that_leaves_frees_its_tasks_at_once(opened: Opener) -> None:
    leaving = await opened()
    pks = await queue(leaving, "t1", "t2")
    assert len(await leaving.claim(0, ["kie"])) == 2
    await leaving.leave()
    stays = await opened(pid=2, join=False)
    assert [t.pk for t in await stays.claim(0, ["kie"])] == pks
    assert leaving.me not in [d.id for d in await stays.daemons()]


async def test_a_write_to_a_task_another_daemon_holds_raises_lease_lost(opened: Opener) -> None:
    holder = await opened()
    polled, done, failing = await queue(holder, "polled", "done", "failing")
    await holder.claim(0, ["kie"])
    await holder.succeeded(done, DONE)
    other = await opened(pid=2, join=False)
    writes = [other.polled(polled), other.succeeded(polled, DONE), other.failed(failing, "provider_failed"),
              archive_asset(other, done, 0)]
    for write in writes:
        with pytest.raises(LeaseLost):
            await write
    assert [(t.state, t.polls) for t in [await holder.task(pk) for pk in (polled, done, failing)]] == \
        [(TaskState.QUEUED, 0), (TaskState.DOWNLOADING, 1), (TaskState.QUEUED, 0)]
    assert [a.state for a in await holder.assets(done)] == ["pending", "pending"]
    assert await archive_asset(holder, done, 0) is False


async def test_several_polls_written_at_once_are_each_counted_and_scheduled(opened: Opener) -> None:
    """polled_many: what polled does for one task, for each; a first poll's history row and updated_at carry
    the answer's time; a task another daemon holds is left as it was and named."""
    holder = await opened()
    first, again = await queue(holder, "first", "again")
    await holder.claim(0, ["kie"])
    other = await opened(pid=2, join=False)
    [theirs] = await queue(other, "theirs")
    assert [t.pk for t in await other.claim(0, ["kie"])] == [theirs]
    await holder.polled(again, running_for=1.0)
    before = await holder.task(again)
    at = time.time() + 5  # the answers' time, not the write's
    lost = await holder.polled_many([
        Polled(first, at, next_poll_at=at + 30, lane=1, error="slow", running_for=2.0, answered_at=at),
        Polled(again, at + 1, next_poll_at=at + 60, empty=(1, at)),
        Polled(theirs, at, next_poll_at=at + 30)])
    assert lost == {theirs}
    one, two, not_ours = [await holder.task(pk) for pk in (first, again, theirs)]
    assert (one.state, one.polls, one.last_error, one.running_for, one.next_poll_at, one.answered_at,
            one.updated_at) == (TaskState.POLLING, 1, "slow", 2.0, at + 30, at, at)
    assert (two.polls, two.running_for, two.next_poll_at, two.empty_polls, two.empty_since, two.updated_at) == \
        (2, 1.0, at + 60, 1, at, before.updated_at), "a later poll moved updated_at or lost running_for"
    assert (not_ours.state, not_ours.polls) == (TaskState.QUEUED, 0)
    assert [(h["state"], h["at"]) for h in await holder.history(first)][1:] == [("polling", at)]
    assert [h["state"] for h in await holder.history(again)] == ["queued", "polling"]
    assert [h["state"] for h in await holder.history(theirs)] == ["queued"]
    assert await holder.polled_many([]) == set()
    assert (await holder.kept_counts())["polling"] == 2


async def test_counts_follow_every_transition(opened: Opener) -> None:
    state = await opened()

    async def both() -> dict[str, int]:
        counts, kept = await state.counts(), await state.kept_counts()
        assert counts == kept
        return {k: n for k, n in counts.items() if n}

    assert await both() == {}
    polled, done, failing = await queue(state, "polled", "done", "failing")
    assert await both() == {"queued": 3}
    await state.polled(polled, running_for=3.0)
    await state.polled(polled)
    await state.succeeded(done, DONE)
    await state.failed(failing, "content_moderation", "422", "no")
    assert await both() == {"polling": 1, "downloading": 1, "failed": 1}
    assert await archive_asset(state, done, 0) is False
    assert await both() == {"polling": 1, "downloading": 1, "failed": 1}
    assert await archive_asset(state, done, 1) is True
    assert await both() == {"polling": 1, "archived": 1, "failed": 1}
    assert await state.retry([failing]) == 1
    await state.requeue_asset(done, 1, "verify --fix")
    assert await both() == {"queued": 2, "polling": 1}
    task = await state.task(polled)
    assert (task.polls, task.running_for) == (2, 3.0)


async def test_success_archive_retry_and_requeue(opened: Opener) -> None:
    state = await opened()
    pk, lone = await queue(state, "two", "lone")
    task, pending = await state.succeeded(pk, DONE)
    assert task.state == TaskState.DOWNLOADING and task.success_seen_at is not None
    assert [(a.idx, a.url, a.state) for a in pending] == [(0, DONE.urls[0], "pending"), (1, DONE.urls[1], "pending")]
    assert await state.set_key(pk, 0, "kie/a/00.png") == "kie/a/00.png"
    assert await state.set_key(pk, 0, "kie/b/00.png") == "kie/a/00.png", "a second key replaced the first"
    assert await archive_asset(state, pk, 0) is False
    assert (await state.asset_by_key("kie/a/00.png")) == await state.asset(pk, 0)

    # The other asset's URL expired: the task failed. A retry keeps the archived asset and redoes only the other.
    failed = await state.failed(pk, "url_expired", message="403")
    assert failed.state == TaskState.FAILED and [t.pk for t in await state.records_due(time.time() + 1)] == [pk]
    assert await state.records_due(before=failed.updated_at) == [], "a record due since `before` was handed out"
    await state.record_written(pk)
    assert await state.records_due(time.time() + 1) == []
    await state.retry([pk])
    assert [(a.idx, a.state) for a in await state.assets(pk)] == [(0, "archived")]
    retried = await state.task(pk)
    assert (retried.state, retried.reason, retried.message) == (TaskState.QUEUED, None, None)
    task, pending = await state.succeeded(pk, DONE)
    assert [a.idx for a in pending] == [1]
    await state.set_key(pk, 1, "kie/a/01.png")
    assert await archive_asset(state, pk, 1) is True
    assert (await state.task(pk)).state == TaskState.ARCHIVED
    assert [h["state"] for h in await state.history(pk)] == \
        ["queued", "downloading", "failed", "queued", "downloading", "archived"]

    # Every asset archived before: success again ends the task at once.
    await state.retry([pk])
    task, pending = await state.succeeded(pk, DONE)
    assert (task.state, pending) == (TaskState.ARCHIVED, [])

    # verify --fix puts one asset back under its stored key; any daemon may claim the task.
    await state.requeue_asset(pk, 0, "verify --fix: missing")
    asset = await state.asset(pk, 0)
    assert (asset.state, asset.key) == ("pending", "kie/a/00.png")
    assert (await state.task(pk)).state == TaskState.QUEUED
    assert [t.pk for t in await state.claim(0, ["kie"])] == [pk, lone]
    assert [k[3] for k in await state.archived_keys()] == ["kie/a/01.png"]


async def test_acquires_are_spaced_by_the_rate_across_daemons(opened: Opener, state_backend: StateBackend) -> None:
    """On PostgreSQL two daemons share the key's slot row; SQLite's one daemon paces in process."""
    rate = 20.0
    states = [await opened(), await opened(pid=2)] if state_backend.name == "postgres" else [await opened()]
    buckets = [key_bucket("key-1", rate, s.rate_slots()) for s in states]
    times: list[float] = []

    async def take(bucket: Bucket, n: int) -> None:
        for _ in range(n):
            await bucket.acquire()
            times.append(time.monotonic())

    await asyncio.gather(*(take(b, 8 // len(buckets)) for b in buckets))
    times.sort()
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    # Each acquire returns no earlier than its slot on the DB clock, but a slow answer from the DB can
    # return one late and bring it nearer the next: pairs get a wide slack, the whole run a small one.
    assert len(times) == 8 and min(gaps) >= 0.5 / rate, gaps
    assert times[-1] - times[0] >= 7 / rate - 0.01, gaps
    # Another key has its own slots: its first one does not wait 2.1 s behind key-3's.
    await key_bucket("key-3", 0.5, states[0].rate_slots()).acquire()
    started = time.monotonic()
    await key_bucket("key-4", 0.5, states[-1].rate_slots()).acquire()
    assert time.monotonic() - started < 1.0


async def pg_connect(dsn: str) -> pg_schema.Conn:
    return await psycopg.AsyncConnection.connect(dsn, autocommit=True, row_factory=dict_row)


@only("postgres", "the SQLite file gains columns in place (test above)")
async def test_a_version_1_database_is_migrated_with_its_tasks(opened: Opener, state_backend: StateBackend) -> None:
    assert state_backend.dsn is not None
    async with await pg_connect(state_backend.dsn) as conn:
        assert await pg_schema.migrate(conn, upto=1) == (0, 1)
        await conn.execute("INSERT INTO tasks (provider, task_id, state, first_seen_at, updated_at)"
                           " VALUES ('kie', 'old', 'polling', 1, 1)")
    state = await opened()
    async with await pg_connect(state_backend.dsn) as conn:
        assert await pg_schema.schema_version(conn) == pg_schema.VERSION
    old = await state.find("kie", "old")
    assert old is not None and old.state == TaskState.POLLING
    assert [t.pk for t in await state.claim(0, ["kie"])] == [old.pk]
    assert (await state.counts())["polling"] == 1


@only("postgres", "a SQLite file is created by whoever opens it first")
async def test_a_cli_refuses_a_database_no_daemon_has_set_up(tmp_path: Path, state_backend: StateBackend) -> None:
    with pytest.raises(ArchiverError, match="archiver run"):
        await open_state(state_config(tmp_path, state_backend), daemon=False)


@only("postgres", "the SQLite file has no schema version")
async def test_a_newer_schema_is_refused(tmp_path: Path, state_backend: StateBackend) -> None:
    assert state_backend.dsn is not None
    async with await pg_connect(state_backend.dsn) as conn:
        await pg_schema.migrate(conn)
        await conn.execute("UPDATE archiver_schema SET version = %s", (pg_schema.VERSION + 1,))
    config = state_config(tmp_path, state_backend)
    for daemon in (True, False):
        with pytest.raises(ArchiverError, match=f"version {pg_schema.VERSION + 1}.*upgrade archiver"):
            await open_state(config, daemon=daemon)
