"""A generated archive on local disk or moto S3, with its state DB (SQLite or PostgreSQL) and a config for it."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from archiver.archive_format.keys import thumb_key
from archiver.archive_format.search import (MANIFEST_KEY, postings, read_manifest, read_shard, shard_key, shard_of,
                                            tokens)
from archiver.browse.index import rebuild
from archiver.config import Config, load_config
from archiver.state import SqliteState, open_state, state_path
from archiver.storage import Storage, open_storage
from archiver.thumbs.make import Thumb
from archiver.thumbs.worker import Thumbnailer, backfill
from tests.support.archive import TYPES, Generated, generate_state, write_storage
from tests.support.daemon import write_config
from tests.support.postgres import StateBackend


@dataclass
class World:
    config: Config
    config_path: Path
    storage: Storage
    made: Generated
    db: Path


def world_config(tmp: Path, backend: str, s3: dict[str, Any] | None = None, **extra: Any) -> Path:
    providers = {name: {"type": kind, "api_key": "unused"} | ({"service": "seedance"} if kind == "acedata" else {})
                 for name, kind in TYPES.items()}
    storage: dict[str, Any] = {"backend": backend, "local": {"root": str(tmp / "archive")}}
    if s3:
        storage["s3"] = s3
    return write_config(tmp / "config.yaml", {"state_dir": str(tmp / "state"), "inbox": {"path": str(tmp / "in.txt")},
                                              "providers": providers, "storage": storage, **extra})


async def make_world(tmp: Path, backend: str, s3: dict[str, Any] | None = None, *, tasks: int = 60, days: int = 3,
                     video: bytes | None = None, audio: bool = False, start: dt.date = dt.date(2026, 9, 1),
                     state: StateBackend | None = None, pictures: list[bytes] | None = None) -> World:
    path = world_config(tmp, backend, s3, **(state.config() if state else {}))
    config = load_config(path, require_secrets=False)
    made = await generate_state(config, tasks, days, video=video, audio=audio, start=start, pictures=pictures)
    storage = open_storage(config.storage)
    await write_storage(storage, made)
    return World(config, path, storage, made, state_path(config))


async def index_world(world: World) -> None:
    """The day files, days.json, the search index and index.html, from the state DB."""
    await rebuild(world.config, world.storage, from_store=False)


async def make_thumbnails(world: World, scratch: Path) -> int:
    """Every thumbnail and poster made from the store and recorded in the state DB, as `index --thumbnails` does."""
    state = await open_state(world.config)

    async def made(key: str, thumb: Thumb) -> None:
        await state.set_media(key, width=thumb.width, height=thumb.height, thumb=thumb_key(key),
                              placeholder=thumb.placeholder)

    thumbs = Thumbnailer(world.storage, world.config.thumbnails.size, made)
    scratch.mkdir(exist_ok=True)
    try:
        count, failed, _ = await backfill(thumbs, scratch)
    finally:
        await thumbs.close()
        await state.close()
    assert not failed
    return count


@pytest.fixture(params=["local", "s3"])
async def world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    s3 = None
    if request.param == "s3":
        s3 = {"bucket": request.getfixturevalue("s3_bucket"), "prefix": "ai/",
              "endpoint_url": request.getfixturevalue("moto_server"), "region": "us-east-1"}
    w = await make_world(tmp_path, request.param, s3)
    yield w
    await w.storage.close()


class Recording:
    """A storage that records the key of every put, then passes everything on to the real one."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.puts: list[str] = []

    async def put_bytes(self, key: str, data: bytes, *, content_type: str, if_absent: bool = False) -> None:
        await self.storage.put_bytes(key, data, content_type=content_type, if_absent=if_absent)
        self.puts.append(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.storage, name)

    def take(self, prefix: str = "") -> list[str]:
        """The keys put since the last take that start with `prefix`, sorted."""
        out = sorted(k for k in self.puts if k.startswith(prefix))
        self.puts = []
        return out


async def empty_day(world: World, date: str) -> None:
    """Put every task of `date` back to work, as `archiver retry` would: the day loses all it had."""
    state = SqliteState(world.db)
    try:
        rows = state.db.execute("SELECT id FROM tasks WHERE date(COALESCE(success_seen_at, updated_at),"
                                " 'unixepoch') = ?", (date,)).fetchall()
        state.db.execute("DELETE FROM assets WHERE key LIKE ?", (f"%/{date.replace('-', '/')}/%",))
        await state.retry([r[0] for r in rows])
    finally:
        await state.close()


async def search_postings(storage: Storage) -> dict[str, dict[str, list[int]]]:
    """Every token's entries in the shards the stored manifest lists, each token from the shard it belongs to."""
    ids = set(read_manifest(await storage.get(MANIFEST_KEY)).shards)
    out: dict[str, dict[str, list[int]]] = {}
    for shard in ids:
        for token, dates in read_shard(shard, await storage.get(shard_key(shard))).items():
            assert shard_of(token, ids) == shard, (token, shard)
            out[token] = dates
    return out


async def expected_postings(storage: Storage) -> dict[str, dict[str, list[int]]]:
    """What the search index must hold: every token of every stored day file up to the manifest's `through`."""
    through = read_manifest(await storage.get(MANIFEST_KEY)).through
    out: dict[str, dict[str, list[int]]] = {}
    async for item in storage.list("_index/days/"):
        doc = json.loads(await storage.get(item.key))
        if through is None or doc["date"] > through:
            continue
        for token, numbers in postings(doc["assets"]).items():
            out.setdefault(token, {})[doc["date"]] = numbers
    return out


def found_by(query: str, asset: dict[str, Any]) -> bool:
    """Whether a search for `query` finds `asset`: each word the prefix of one of its indexed tokens."""
    have = tokens(" ".join([asset["prompt"], asset["model"], asset["provider"], TYPES[asset["provider"]],
                           asset["media"], *[x for kv in asset["labels"].items() for x in kv]]))
    return all(any(t.startswith(w) for t in have) for w in tokens(query))
