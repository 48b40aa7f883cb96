"""The search index as rebuild and the daemon's loop write it: complete, correct, and only what changed."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pytest

from archiver.archive_format.keys import DAYS_KEY, day_key
from archiver.archive_format.search import (MANIFEST_KEY, SEARCH_PREFIX, SHARD_LIMIT, asset_tokens, read_manifest,
                                            shard_key, shard_of)
from archiver.browse.index import IndexLoop, rebuild
from archiver.browse.search_index import Changes, SearchWriter
from archiver.errors import StorageUnavailable
from archiver.storage.local import LocalStorage
from tests.browse.conftest import Recording, World, empty_day, expected_postings, make_world, search_postings
from tests.browse.test_index import archive_one, day_files


async def test_rebuild_indexes_every_word_at_its_asset(world: World) -> None:
    await rebuild(world.config, world.storage, from_store=False)
    index = await search_postings(world.storage)
    assert index == await expected_postings(world.storage)
    days = {json.loads(d)["date"]: json.loads(d)["assets"] for d in (await day_files(world)).values()}
    for token, dates in index.items():
        for date, numbers in dates.items():
            for n in numbers:  # the page's day.assets[length - 1 - n]
                assert token in asset_tokens(days[date][len(days[date]) - 1 - n])
    some = world.made.assets[0]
    word = next(t for t in sorted(asset_tokens({"prompt": some["prompt"]})) if t.isalpha())
    assert any(days[d][len(days[d]) - 1 - n]["key"] == some["key"] for d, ns in index[word].items() for n in ns)


class Clock:
    """The loop's `today`, moved on by the test: the real UTC date unless set."""

    def __init__(self) -> None:
        self.date = dt.datetime.now(dt.UTC).date()

    def __call__(self) -> str:
        return str(self.date)


async def test_today_touches_no_shard_and_is_folded_in_after_midnight(tmp_path: Path) -> None:
    world = await make_world(tmp_path, "local")
    store = Recording(world.storage)
    clock = Clock()
    today, yesterday = str(clock.date), str(clock.date - dt.timedelta(days=1))
    loop = IndexLoop(world.config, store, today=clock)  # type: ignore[arg-type]
    await loop.round()
    before = read_manifest(await world.storage.get(MANIFEST_KEY))
    assert before.through == yesterday
    store.take()
    keys = [await archive_one(world.config, "new-task")]  # prompt "fresh", model seedream-4.5, label project=new
    await loop.round()
    assert store.take() == sorted([day_key(today), DAYS_KEY])  # no shard, no manifest
    keys.append(await archive_one(world.config, "newer-task"))
    assert await loop.round() == 2 and store.take() == sorted([day_key(today), DAYS_KEY])
    assert "fresh" not in await search_postings(world.storage)

    clock.date += dt.timedelta(days=1)  # midnight: today is closed, and folded in once
    new = json.loads(await world.storage.get(day_key(today)))["assets"]
    assert [a["key"] for a in new] == keys[::-1]
    shards = {shard_key(shard_of(t, set(before.shards)) or t[:2]) for a in new for t in asset_tokens(a)}
    assert len(shards) < len(before.shards) // 3  # a few of the index's shards, not all of them
    puts = await loop.round(), store.take()
    after = read_manifest(await world.storage.get(MANIFEST_KEY))
    assert puts[1] == sorted(shards | {MANIFEST_KEY}) and puts[0] == len(puts[1]) and after.through == today
    index = await search_postings(world.storage)
    assert index["fresh"] == {today: [0, 1]}
    assert index == await expected_postings(world.storage)
    assert await loop.round() == 0 and store.take() == []  # folded once

    # A late write to a day already folded in: only the shards of the tokens whose entries changed.
    await archive_one(world.config, "late-task")
    await loop.round()
    written = store.take(SEARCH_PREFIX)
    assert written and set(written) <= shards
    assert (await search_postings(world.storage))["fresh"] == {today: [0, 1, 2]}
    loop.close()

    clock.date += dt.timedelta(days=3)  # a restart days later, nothing new: only `through` moves
    loop = IndexLoop(world.config, store, today=clock)  # type: ignore[arg-type]
    assert await loop.round() == 1 and store.take() == [MANIFEST_KEY]
    assert read_manifest(await world.storage.get(MANIFEST_KEY)).through == str(clock.date - dt.timedelta(days=1))
    loop.close()


async def test_a_rebuild_holds_the_days_before_today_and_the_loop_folds_the_rest(tmp_path: Path) -> None:
    world = await make_world(tmp_path, "local")  # 2026-09-01 to 2026-09-03
    await rebuild(world.config, world.storage, from_store=False, today=lambda: "2026-09-03")
    assert read_manifest(await world.storage.get(MANIFEST_KEY)).through == "2026-09-02"
    index = await search_postings(world.storage)
    assert {d for dates in index.values() for d in dates} == {"2026-09-01", "2026-09-02"}
    assert index == await expected_postings(world.storage)
    store = Recording(world.storage)
    loop = IndexLoop(world.config, store, today=lambda: "2026-09-03")  # type: ignore[arg-type]
    assert await loop.round() == 0  # 2026-09-03 is today: its words stay in its day file
    loop.close()
    loop = IndexLoop(world.config, store, today=lambda: "2026-09-05")  # type: ignore[arg-type]
    await loop.round()
    assert all(k.startswith(SEARCH_PREFIX) for k in store.take())
    assert read_manifest(await world.storage.get(MANIFEST_KEY)).through == "2026-09-04"
    index = await search_postings(world.storage)
    assert {d for dates in index.values() for d in dates} == {"2026-09-01", "2026-09-02", "2026-09-03"}
    assert index == await expected_postings(world.storage)
    loop.close()


async def test_the_loop_drops_a_day_that_lost_everything(tmp_path: Path) -> None:
    world = await make_world(tmp_path, "local", tasks=30)
    loop = IndexLoop(world.config, world.storage)
    await loop.round()
    assert "2026-09-02" in {d for dates in (await search_postings(world.storage)).values() for d in dates}
    loop.close()
    await empty_day(world, "2026-09-02")
    loop = IndexLoop(world.config, world.storage)  # a new process: the day's old words come from its stored file
    await loop.round()
    index = await search_postings(world.storage)
    assert "2026-09-02" not in {d for dates in index.values() for d in dates}
    assert index == await expected_postings(world.storage)
    loop.close()


@pytest.mark.parametrize("before", ["none", "search/1"])
async def test_an_archive_made_before_the_search_index_gets_one(tmp_path: Path, before: str) -> None:
    """Without a manifest, or with an `archiver.search/1` one (its shards hold today too): a full build."""
    world = await make_world(tmp_path, "local")
    await rebuild(world.config, world.storage, from_store=False)
    built = await day_files(world, SEARCH_PREFIX)
    shutil.rmtree(world.config.storage.local.root / "_index/search")  # as an archive made before it has it
    if before == "search/1":
        old = {"schema": "archiver.search/1", "generated_at": "2026-09-04T00:00:00.000Z", "shards": ["zz"]}
        await world.storage.put_bytes(MANIFEST_KEY, json.dumps(old).encode(), content_type="application/json")
    loop = IndexLoop(world.config, world.storage)
    assert await loop.round() == len(built)  # every shard and the manifest; the day files were current
    again = await day_files(world, SEARCH_PREFIX)
    del again[MANIFEST_KEY]
    assert again == {k: v for k, v in built.items() if k != MANIFEST_KEY}
    assert read_manifest(await world.storage.get(MANIFEST_KEY)) == read_manifest(built[MANIFEST_KEY])
    assert read_manifest(built[MANIFEST_KEY]).through is not None
    loop.close()



async def test_a_rebuild_writes_the_search_index_before_the_day_files(tmp_path: Path) -> None:
    """Cut off at its first day file, a rebuild has already written the whole search index from the state DB."""
    world = await make_world(tmp_path, "local")
    root = world.config.storage.local.root
    (root / "_index").mkdir()
    (root / "_index/days").write_text("a file where a folder must be")
    with pytest.raises(StorageUnavailable, match="cannot write"):
        await rebuild(world.config, world.storage, from_store=False)
    index = await search_postings(world.storage)
    (root / "_index/days").unlink()
    loop = IndexLoop(world.config, world.storage)  # the loop finds the day files missing and writes them
    await loop.round()
    assert index == await search_postings(world.storage) == await expected_postings(world.storage)
    loop.close()


async def test_a_shard_that_grows_past_the_limit_splits_and_the_manifest_follows(tmp_path: Path) -> None:
    store = Recording(LocalStorage(tmp_path))
    writer = SearchWriter(store)  # type: ignore[arg-type]
    first: Changes = {"th": {"2026-10-01": [0]}, "thorn": {"2026-10-01": [0]}, "dragon": {"2026-10-01": [0]}}
    assert await writer.apply(first) == 3  # th, dr, the manifest
    store.take()
    # 12,000 new tokens under "th": some 400 KiB, so "th" keeps only the token "th"; the rest move down.
    grow: Changes = {f"th{i:05d}": {"2026-10-02": [i % 7]} for i in range(12_000)}
    grow["dragon"] = {"2026-10-01": None}  # and "dr" loses its only token
    await writer.apply(grow)
    puts = store.puts
    manifest = puts.index(MANIFEST_KEY)
    assert set(puts[manifest + 1:]) == {shard_key("th"), shard_key("dr")}  # after the manifest: the rest, emptied
    assert all(k.startswith(shard_key("th")[:-5]) for k in puts[:manifest])  # the new shards before it
    ids = set(read_manifest(await store.get(MANIFEST_KEY)).shards)
    assert "dr" not in ids and {"th", "th00", "th09", "th1", "tho"} <= ids and "th0" not in ids
    assert json.loads(await store.get(shard_key("dr")))["tokens"] == {}
    assert max([len(await store.get(shard_key(s))) for s in ids]) <= SHARD_LIMIT
    index = await search_postings(store)  # type: ignore[arg-type]
    assert index["th"] == index["thorn"] == {"2026-10-01": [0]} and index["th00008"] == {"2026-10-02": [1]}
    assert len(index) == 12_002 and shard_of("thorn", ids) == "tho"
