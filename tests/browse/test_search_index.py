"""The search index as rebuild and the daemon's loop write it: complete, correct, and only what changed."""

from __future__ import annotations

import json
import shutil
import time
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


async def test_the_loop_writes_only_the_shards_of_the_new_words(tmp_path: Path) -> None:
    world = await make_world(tmp_path, "local")
    store = Recording(world.storage)
    loop = IndexLoop(world.config, store)  # type: ignore[arg-type]
    await loop.round()
    before = set(read_manifest(await world.storage.get(MANIFEST_KEY)))
    store.take()
    key = await archive_one(world.config, "new-task")  # prompt "fresh", model seedream-4.5, label project=new
    await loop.round()
    today = time.strftime("%Y-%m-%d", time.gmtime())
    [new] = json.loads(await world.storage.get(day_key(today)))["assets"]
    after = set(read_manifest(await world.storage.get(MANIFEST_KEY)))
    shards = {shard_key(shard_of(t, after) or "") for t in asset_tokens(new)}
    assert len(shards) < len(before) // 3  # a few of the index's shards, not all of them
    assert store.take() == sorted(shards | {day_key(today), DAYS_KEY} | ({MANIFEST_KEY} if after != before else set()))
    index = await search_postings(world.storage)
    assert index["fresh"] == {today: [0]} and new["key"] == key
    assert index == await expected_postings(world.storage)

    await archive_one(world.config, "newer-task")  # the same words again: entry 0 stays the first asset
    assert await loop.round() > 0
    assert (await search_postings(world.storage))["fresh"] == {today: [0, 1]}
    store.take()
    assert await loop.round() == 0 and store.take() == []  # nothing moved: nothing written
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


async def test_an_archive_made_before_the_search_index_gets_one(tmp_path: Path) -> None:
    world = await make_world(tmp_path, "local")
    await rebuild(world.config, world.storage, from_store=False)
    built = await day_files(world, SEARCH_PREFIX)
    shutil.rmtree(world.config.storage.local.root / "_index/search")  # as an archive made before it has it
    loop = IndexLoop(world.config, world.storage)
    assert await loop.round() == len(built)  # every shard and the manifest; the day files were current
    again = await day_files(world, SEARCH_PREFIX)
    del again[MANIFEST_KEY]
    assert again == {k: v for k, v in built.items() if k != MANIFEST_KEY}
    assert read_manifest(await world.storage.get(MANIFEST_KEY)) == read_manifest(built[MANIFEST_KEY])
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
    ids = set(read_manifest(await store.get(MANIFEST_KEY)))
    assert "dr" not in ids and {"th", "th00", "th09", "th1", "tho"} <= ids and "th0" not in ids
    assert json.loads(await store.get(shard_key("dr")))["tokens"] == {}
    assert max([len(await store.get(shard_key(s))) for s in ids]) <= SHARD_LIMIT
    index = await search_postings(store)  # type: ignore[arg-type]
    assert index["th"] == index["thorn"] == {"2026-10-01": [0]} and index["th00008"] == {"2026-10-02": [1]}
    assert len(index) == 12_002 and shard_of("thorn", ids) == "tho"
