"""The index from the state DB and from the store, on local disk and moto S3, and the daemon's loop."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from archiver.browse.days import day_key
from archiver.browse.index import IndexLoop, page, rebuild
from archiver.model import Phase, TaskRef, TaskStatus
from archiver.state import Position, SqliteState
from tests.browse.conftest import World, make_world


async def day_files(world: World) -> dict[str, bytes]:
    return {item.key: await world.storage.get(item.key) async for item in world.storage.list("_index/days/")}


async def test_rebuild_from_state_and_from_store_agree(world: World) -> None:
    result = await rebuild(world.config, world.storage, world.db, from_store=False)
    assert result == {"days": 3, "assets": len(world.made.assets), "failed": len(world.made.failed), "unreadable": 0}
    from_state = await day_files(world)
    days_doc = json.loads(await world.storage.get("_index/days.json"))
    await rebuild(world.config, world.storage, world.db, from_store=True)
    assert await day_files(world) == from_state
    again = json.loads(await world.storage.get("_index/days.json"))
    assert again["days"] == days_doc["days"] and again["schema"] == "archiver.index/1"
    assert [d["date"] for d in again["days"]] == ["2026-09-03", "2026-09-02", "2026-09-01"]  # newest first
    assert await world.storage.get("index.html") == page()


async def test_day_file_shape(world: World) -> None:
    await rebuild(world.config, world.storage, world.db, from_store=False)
    docs = [json.loads(body) for body in (await day_files(world)).values()]
    assets = [a for d in docs for a in d["assets"]]
    assert {a["key"] for a in assets} == {a["key"] for a in world.made.assets}
    one = next(a for a in assets if a["key"] == world.made.assets[0]["key"])
    assert list(one) == ["key", "sidecar", "provider", "provider_type", "task_id", "index", "count", "media",
                         "model", "prompt", "labels", "content_type", "bytes", "sha256", "archived_at"]
    assert one["sidecar"] == one["key"] + ".json"
    sidecar = json.loads(await world.storage.get(one["sidecar"]))
    assert {k: sidecar[k] for k in one if k != "sidecar"} == {k: v for k, v in one.items() if k != "sidecar"}
    failed = [f for d in docs for f in d["failed"]]
    assert {f["task_id"] for f in failed} == {f["task_id"] for f in world.made.failed}
    assert set(failed[0]) == {"provider", "task_id", "reason", "provider_code", "provider_message", "record",
                              "labels"}
    assert failed[0]["reason"] == "content_moderation" and failed[0]["record"].startswith("_failed/")


async def archive_one(db: Path, task_id: str) -> str:
    """Archive one asset today through the state DB's own methods, as the daemon does."""
    state = SqliteState(db)
    try:
        [task] = await state.ingest([TaskRef("kie", task_id, {"project": "new"})], [], Position(1, 1, 0, 0))
        await state.succeeded(task.pk, TaskStatus(Phase.SUCCEEDED, urls=("https://cdn.example/x",), prompt="fresh",
                                            model="seedream-4.5"))
        key = await state.set_key(task.pk, 0, f"kie/{time.strftime('%Y/%m/%d', time.gmtime())}/{task_id}/00.png")
        await state.archived(task.pk, 0, size=3, sha256="ab" * 32, content_type="image/png",
                       downloaded_at=time.time(), archived_at=time.time())
        return key
    finally:
        await state.close()


async def test_loop_rewrites_only_touched_days(tmp_path: Path) -> None:
    world = await make_world(tmp_path, "local")
    loop = IndexLoop(world.config, world.storage, world.db)
    written = await loop.round()
    assert written == 3 + 1  # three day files, then days.json (index.html is not counted)
    root = world.config.storage.local.root
    before = {p.name: os.stat(p).st_ino for p in (root / "_index/days").iterdir()}
    assert await loop.round() == 0  # nothing changed: nothing written

    key = await archive_one(world.db, "new-task")
    assert await loop.round() == 2  # today's day file and days.json
    after = {p.name: os.stat(p).st_ino for p in (root / "_index/days").iterdir()}
    assert {k: v for k, v in after.items() if k in before} == before  # old days untouched (same inode)
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert [a["key"] for a in json.loads(await world.storage.get(day_key(today)))["assets"]] == [key]
    assert json.loads(await world.storage.get("_index/days.json"))["days"][0]["date"] == today
    assert loop.source is not None
    loop.source.close()


async def test_a_new_loop_trusts_an_index_that_is_current(tmp_path: Path) -> None:
    """After a restart, days that days.json already shows as they are cost no writes."""
    world = await make_world(tmp_path, "local")
    await rebuild(world.config, world.storage, world.db, from_store=False)
    loop = IndexLoop(world.config, world.storage, world.db)
    assert await loop.round() == 0
    await archive_one(world.db, "after-restart")
    assert await loop.round() == 2


async def test_failed_write_is_retried_next_round(tmp_path: Path) -> None:
    world = await make_world(tmp_path, "local")
    root = world.config.storage.local.root
    (root / "_index").mkdir()
    (root / "_index/days").write_text("a file where a folder must be")  # every day write now fails
    loop = IndexLoop(world.config, world.storage, world.db)
    try:
        await loop.round()
        raise AssertionError("the round should have failed")
    except Exception as e:
        assert "cannot write" in str(e)
    assert not (root / "_index/days.json").exists()  # days.json never lists a day file that is not there
    (root / "_index/days").unlink()
    assert await loop.round() == 4
    assert len(list((root / "_index/days").iterdir())) == 3


async def test_rebuild_empties_a_day_that_lost_everything(tmp_path: Path) -> None:
    """A day listed before but empty now keeps no stale entries, and days.json drops it."""
    world = await make_world(tmp_path, "local", tasks=30)
    await rebuild(world.config, world.storage, world.db, from_store=False)
    state = SqliteState(world.db)
    try:  # every task of 2026-09-02 put back to work, as `archiver retry` would
        rows = state.db.execute("SELECT id FROM tasks WHERE date(COALESCE(success_seen_at, updated_at),"
                                " 'unixepoch') = '2026-09-02'").fetchall()
        state.db.execute("DELETE FROM assets WHERE key LIKE '%/2026/09/02/%'")
        await state.retry([r[0] for r in rows])
    finally:
        await state.close()
    result = await rebuild(world.config, world.storage, world.db, from_store=False)
    assert result["days"] == 2
    assert [d["date"] for d in json.loads(await world.storage.get("_index/days.json"))["days"]] == [
        "2026-09-03", "2026-09-01"]
    assert json.loads(await world.storage.get(day_key("2026-09-02"))) == {
        "schema": "archiver.day/1", "date": "2026-09-02", "assets": [], "failed": []}
