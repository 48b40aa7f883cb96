"""The index from the state DB (SQLite, PostgreSQL) and from the store, local and moto S3; the daemon's loop."""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from pathlib import Path

import pytest

from archiver.archive_format.keys import DAYS_KEY, day_key
from archiver.archive_format.search import MANIFEST_KEY, SEARCH_PREFIX, read_manifest
from archiver.browse.index import IndexLoop, page, rebuild
from archiver.browse.sources import open_source
from archiver.config import Config
from archiver.errors import StateUnavailable, StorageUnavailable
from archiver.model import Phase, TaskRef, TaskStatus
from archiver.state import open_state
from archiver.state.pg_reader import PgReader
from tests.browse.conftest import Recording, World, empty_day, expected_postings, make_world, search_postings
from tests.support.postgres import PgCluster, StateBackend


async def day_files(world: World, prefix: str = "_index/days/") -> dict[str, bytes]:
    return {item.key: await world.storage.get(item.key) async for item in world.storage.list(prefix)}


async def test_rebuild_from_state_and_from_store_agree(world: World) -> None:
    result = await rebuild(world.config, world.storage, from_store=False)
    assert result == {"days": 3, "assets": len(world.made.assets), "failed": len(world.made.failed), "unreadable": 0}
    from_state = await day_files(world)
    search = await day_files(world, SEARCH_PREFIX)
    days_doc = json.loads(await world.storage.get("_index/days.json"))
    await rebuild(world.config, world.storage, from_store=True)
    assert await day_files(world) == from_state
    again_search = await day_files(world, SEARCH_PREFIX)
    assert again_search.keys() == search.keys() and len(search) > 10
    assert {k: v for k, v in again_search.items() if k != MANIFEST_KEY} == {
        k: v for k, v in search.items() if k != MANIFEST_KEY}  # the manifest differs only in generated_at
    assert read_manifest(again_search[MANIFEST_KEY]) == read_manifest(search[MANIFEST_KEY])
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    assert read_manifest(search[MANIFEST_KEY]).through == str(yesterday)  # the shards hold the days before today
    again = json.loads(await world.storage.get("_index/days.json"))
    assert again["days"] == days_doc["days"] and again["schema"] == "archiver.index/1"
    assert [d["date"] for d in again["days"]] == ["2026-09-03", "2026-09-02", "2026-09-01"]  # newest first
    assert await world.storage.get("index.html") == page()


async def test_day_file_shape(world: World) -> None:
    await rebuild(world.config, world.storage, from_store=False)
    docs = [json.loads(body) for body in (await day_files(world)).values()]
    assets = [a for d in docs for a in d["assets"]]
    assert {a["key"] for a in assets} == {a["key"] for a in world.made.assets}
    one = next(a for a in assets if a["key"] == world.made.assets[0]["key"])
    assert list(one) == ["key", "sidecar", "provider", "provider_type", "task_id", "index", "count", "media",
                         "model", "prompt", "labels", "content_type", "bytes", "sha256", "archived_at", "thumb",
                         "width", "height", "placeholder"]
    assert one["sidecar"] == one["key"] + ".json"
    # archiver.day/2's thumb and placeholder come from the thumbnail (none made here); width and height from
    # the state DB, which this generated archive leaves empty, as an archive made before them has it.
    assert (one["thumb"], one["placeholder"], one["width"], one["height"]) == (None, None, None, None)
    sidecar = json.loads(await world.storage.get(one["sidecar"]))
    own = {k: v for k, v in one.items() if k not in ("sidecar", "thumb", "placeholder", "width", "height")}
    assert {k: sidecar[k] for k in own} == own
    failed = [f for d in docs for f in d["failed"]]
    assert {f["task_id"] for f in failed} == {f["task_id"] for f in world.made.failed}
    assert set(failed[0]) == {"provider", "task_id", "reason", "provider_code", "provider_message", "record",
                              "labels"}
    assert failed[0]["reason"] == "content_moderation" and failed[0]["record"].startswith("_failed/")


async def archive_one(config: Config, task_id: str) -> str:
    """Archive one asset today through the State interface, as the daemon does."""
    state = await open_state(config)
    try:
        [task] = await state.add_tasks([TaskRef("kie", task_id, {"project": "new"})], note="test")
        assert task is not None
        await state.succeeded(task.pk, TaskStatus(Phase.SUCCEEDED, urls=("https://cdn.example/x",), prompt="fresh",
                                            model="seedream-4.5"))
        key = await state.set_key(task.pk, 0, f"kie/{time.strftime('%Y/%m/%d', time.gmtime())}/{task_id}/00.png")
        await state.archived(task.pk, 0, size=3, sha256="ab" * 32, content_type="image/png",
                       downloaded_at=time.time(), archived_at=time.time())
        return key
    finally:
        await state.close()


async def test_loop_rewrites_only_touched_days(tmp_path: Path, state_backend: StateBackend) -> None:
    world = await make_world(tmp_path, "local", state=state_backend)
    store = Recording(world.storage)
    loop = IndexLoop(world.config, store)  # type: ignore[arg-type]
    written = await loop.round()
    shards = store.take(SEARCH_PREFIX)
    assert written == 3 + 1 + len(shards)  # three day files, days.json, the search index (index.html not counted)
    root = world.config.storage.local.root
    before = {p.name: os.stat(p).st_ino for p in (root / "_index/days").iterdir()}
    assert await loop.round() == 0  # nothing changed: nothing written

    key = await archive_one(world.config, "new-task")
    written = await loop.round()
    puts = store.puts
    assert sorted(k for k in puts if k.startswith("_index/days")) == [DAYS_KEY, day_key(time.strftime("%Y-%m-%d",
                                                                                                      time.gmtime()))]
    assert store.take(SEARCH_PREFIX) == [] and written == 2  # today's words touch no shard
    after = {p.name: os.stat(p).st_ino for p in (root / "_index/days").iterdir()}
    assert {k: v for k, v in after.items() if k in before} == before  # old days untouched (same inode)
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert [a["key"] for a in json.loads(await world.storage.get(day_key(today)))["assets"]] == [key]
    assert json.loads(await world.storage.get("_index/days.json"))["days"][0]["date"] == today
    assert loop.source is not None
    loop.source.close()


async def test_a_new_loop_trusts_an_index_that_is_current(tmp_path: Path, state_backend: StateBackend) -> None:
    """After a restart, days that days.json already shows as they are cost no writes."""
    world = await make_world(tmp_path, "local", state=state_backend)
    await rebuild(world.config, world.storage, from_store=False)
    store = Recording(world.storage)
    loop = IndexLoop(world.config, store)  # type: ignore[arg-type]
    assert await loop.round() == 0
    await archive_one(world.config, "after-restart")
    written = await loop.round()
    assert store.take(SEARCH_PREFIX) == [] and written == 2  # today's day file and days.json; no shard
    assert loop.source is not None
    loop.source.close()


async def test_postgres_and_sqlite_build_the_same_index(tmp_path: Path, pg_dsn: str) -> None:
    """One generated world in each backend: fingerprints, each day and every file written are equal."""
    for name in ("sqlite", "postgres"):
        (tmp_path / name).mkdir()
    worlds = [await make_world(tmp_path / name, "local", tasks=150, days=5, audio=True, state=StateBackend(name, dsn))
              for name, dsn in (("sqlite", None), ("postgres", pg_dsn))]
    sources = [open_source(world.config) for world in worlds]
    try:
        assert isinstance(sources[1].reader, PgReader) and not isinstance(sources[0].reader, PgReader)
        prints = [source.fingerprints() for source in sources]
        assert prints[0] == prints[1] and len(prints[0]) == 5
        for date in prints[0]:
            assert sources[0].day(date).encode() == sources[1].day(date).encode(), date
        streamed = [[day.encode() for day in source.each_day()] for source in sources]
        assert streamed[0] == streamed[1] and len(streamed[0]) == 5
    finally:
        for source in sources:
            source.close()
    for world in worlds:
        assert await rebuild(world.config, world.storage, from_store=False) == {
            "days": 5, "assets": len(world.made.assets), "failed": len(world.made.failed), "unreadable": 0}
    files = [await day_files(world) for world in worlds]
    assert files[0] == files[1] and len(files[0]) == 5
    summaries = [json.loads(await world.storage.get("_index/days.json"))["days"] for world in worlds]
    assert summaries[0] == summaries[1]
    for world in worlds:
        await world.storage.close()


async def test_loop_waits_out_a_postgres_server_that_is_down(tmp_path: Path, private_pg: PgCluster) -> None:
    """A round while the server is down fails as StateUnavailable; the next one reconnects."""
    private_pg.start()
    world = await make_world(tmp_path, "local", tasks=20, state=StateBackend("postgres", private_pg.create_database()))
    store = Recording(world.storage)
    loop = IndexLoop(world.config, store)  # type: ignore[arg-type]
    assert await loop.round() == 3 + 1 + len(store.take(SEARCH_PREFIX))
    private_pg.stop()
    with pytest.raises(StateUnavailable, match="does not answer"):
        await loop.round()
    private_pg.start()
    await archive_one(world.config, "after-outage")
    assert await loop.round() == 2 + len(store.take(SEARCH_PREFIX))
    assert loop.source is not None
    loop.source.close()
    await world.storage.close()


@pytest.mark.parametrize("blocked", ["days", "search"])
async def test_failed_write_is_retried_next_round(tmp_path: Path, blocked: str) -> None:
    world = await make_world(tmp_path, "local")
    root = world.config.storage.local.root
    (root / "_index").mkdir()
    (root / "_index" / blocked).write_text("a file where a folder must be")  # every day (or shard) write now fails
    loop = IndexLoop(world.config, world.storage)
    with pytest.raises(StorageUnavailable, match="cannot write"):
        await loop.round()
    assert not (root / "_index/days.json").exists()  # days.json never lists a day file that is not there
    if blocked == "search":
        assert not (root / "_index/days").exists()  # nor a day file points into shards that are not there
    (root / "_index" / blocked).unlink()
    written = await loop.round()
    assert written == 4 if blocked == "days" else written > 4  # the shards were written before the day failed
    assert len(list((root / "_index/days").iterdir())) == 3
    assert await search_postings(world.storage) == await expected_postings(world.storage)


async def test_rebuild_empties_a_day_that_lost_everything(tmp_path: Path) -> None:
    """A day listed before but empty now keeps no stale entries, and days.json drops it."""
    world = await make_world(tmp_path, "local", tasks=30)
    await rebuild(world.config, world.storage, from_store=False)
    await empty_day(world, "2026-09-02")
    result = await rebuild(world.config, world.storage, from_store=False)
    assert result["days"] == 2
    assert [d["date"] for d in json.loads(await world.storage.get("_index/days.json"))["days"]] == [
        "2026-09-03", "2026-09-01"]
    assert json.loads(await world.storage.get(day_key("2026-09-02"))) == {
        "schema": "archiver.day/2", "date": "2026-09-02", "assets": [], "failed": []}
    assert "2026-09-02" not in {d for dates in (await search_postings(world.storage)).values() for d in dates}
