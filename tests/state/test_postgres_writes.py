"""PostgresState's task writes, each folded into as few statements as it can: the same rows,
history and holder checks as before, and the last asset of a task always ends it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from archiver.config import load_config
from archiver.errors import LeaseLost
from archiver.model import Phase, TaskState, TaskRef, TaskStatus
from archiver.state import Position
from archiver.state.postgres import PostgresState
from tests.support.daemon import base_config, write_config

KIE = {"kie": {"type": "kie", "api_key": "k"}}


async def _open(tmp: Path, dsn: str, me: str) -> PostgresState:
    doc = base_config(tmp, KIE, state={"backend": "postgres", "dsn": dsn})
    config = load_config(write_config(tmp / f"{me}.yaml", doc))
    return await PostgresState.open(config.state.dsn.reveal(), me, lease=config.state.lease,
                                    inbox=str(config.inbox.path))


@pytest.fixture
async def pair(tmp_path: Path, pg_dsn: str) -> AsyncIterator[tuple[PostgresState, PostgresState]]:
    one = await _open(tmp_path, pg_dsn, "one")
    two = await _open(tmp_path, pg_dsn, "two")
    await one.join("h", 1)
    await two.join("h", 2)
    yield one, two
    await one.close()
    await two.close()


def _success(urls: int) -> TaskStatus:
    return TaskStatus(Phase.SUCCEEDED, urls=tuple(f"https://cdn.example/{i}.png" for i in range(urls)),
                      model="m", response={"ok": True})


async def _archive(state: PostgresState, pk: int, idx: int) -> bool:
    return await state.archived(pk, idx, size=1, sha256="0" * 64, content_type="image/png",
                                downloaded_at=1.0, archived_at=2.0)


async def test_a_task_s_way_leaves_one_history_row_per_state(pair: tuple[PostgresState, PostgresState]) -> None:
    one, _ = pair
    ref = TaskRef("kie", "t1", {"k": "v"})
    assert await one.ingest([ref], [], Position(1, 2, 3, 1)) == [ref]
    task = await one.find("kie", "t1")
    assert task is not None and task.state == TaskState.QUEUED and task.labels == {"k": "v"}
    assert await one.ingest([TaskRef("kie", "t1")], [], Position(1, 2, 9, 2)) == []  # known: no new row
    [claimed] = await one.claim(0, ["kie"])
    await one.polled(claimed.pk, running_for=1.0)
    await one.polled(claimed.pk, error="timeout", running_for=None)
    polled = await one.task(claimed.pk)
    assert (polled.state, polled.polls, polled.last_error, polled.running_for) == (TaskState.POLLING, 2, "timeout", 1.0)
    got, assets = await one.succeeded(claimed.pk, _success(2))
    assert got.state == TaskState.DOWNLOADING and got.polls == 3 and [a.idx for a in assets] == [0, 1]
    assert await _archive(one, claimed.pk, 1) is False
    assert (await one.task(claimed.pk)).state == TaskState.DOWNLOADING
    assert await _archive(one, claimed.pk, 0) is True
    done = await one.task(claimed.pk)
    assert done.state == TaskState.ARCHIVED and await one.assets_pending() == 0
    states = [h["state"] for h in await one.history(claimed.pk)]
    assert states == ["queued", "polling", "downloading", "archived"]
    notes = [h["note"] for h in await one.history(claimed.pk)]
    assert notes[2] == "2 result URL(s)"
    assert (await one.kept_counts())["archived"] == 1


async def test_writes_to_a_task_another_daemon_holds_are_refused(pair: tuple[PostgresState, PostgresState]) -> None:
    one, two = pair
    await one.add_tasks([TaskRef("kie", "t1")], note="added")
    [task] = await one.claim(0, ["kie"])
    with pytest.raises(LeaseLost):
        await two.polled(task.pk, running_for=1.0)
    with pytest.raises(LeaseLost):
        await two.succeeded(task.pk, _success(1))
    after = await one.task(task.pk)
    assert (after.state, after.polls) == (TaskState.QUEUED, 0)
    assert [h["state"] for h in await one.history(task.pk)] == ["queued"]
    await one.succeeded(task.pk, _success(1))
    with pytest.raises(LeaseLost):
        await _archive(two, task.pk, 0)
    assert (await one.task(task.pk)).state == TaskState.DOWNLOADING


async def test_assets_archived_at_once_end_their_task_exactly_once(
        pair: tuple[PostgresState, PostgresState]) -> None:
    one, _ = pair
    await one.add_tasks([TaskRef("kie", f"t{i}") for i in range(10)], note="added")
    for task in await one.claim(0, ["kie"]):
        await one.succeeded(task.pk, _success(3))
        ends = await asyncio.gather(*(_archive(one, task.pk, idx) for idx in range(3)))
        assert sorted(ends) == [False, False, True]
        assert (await one.task(task.pk)).state == TaskState.ARCHIVED
        assert [h["state"] for h in await one.history(task.pk)].count("archived") == 1


async def test_a_retried_success_keeps_its_archived_assets(pair: tuple[PostgresState, PostgresState]) -> None:
    one, _ = pair
    await one.add_tasks([TaskRef("kie", "t1")], note="added")
    [task] = await one.claim(0, ["kie"])
    await one.succeeded(task.pk, _success(2))
    await _archive(one, task.pk, 0)
    await one.failed(task.pk, "download_failed")
    assert await one.retry([task.pk]) == 1
    [again] = await one.claim(0, ["kie"])
    got, pending = await one.succeeded(again.pk, _success(3))
    assert got.state == TaskState.DOWNLOADING and [a.idx for a in pending] == [1, 2]
    assert [(a.idx, a.state) for a in await one.assets(task.pk)] == [(0, "archived"), (1, "pending"), (2, "pending")]
