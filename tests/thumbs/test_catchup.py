"""The thumbnail worker's catch-up (archiver/thumbs/catchup.py), with a real store and state DB (SQLite and
PostgreSQL): the assets its full queue skipped get their thumbnails while it is idle, with no command,
newest first; a corrupt image is tried once, marked, and still has no thumbnail in the browse index."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from archiver.archive_format.keys import thumb_key
from archiver.state import IndexedAsset, open_reader, open_state
from archiver.thumbs.catchup import CatchUp
from archiver.thumbs.make import Thumb
from archiver.thumbs.worker import Thumbnailer
from tests.browse.conftest import make_world
from tests.support.media import noisy_png
from tests.support.postgres import StateBackend

SKIPPED = "the thumbnail queue is full; made when the worker is idle"


async def test_skipped_thumbnails_are_made_when_the_worker_is_idle(tmp_path: Path, state_backend: StateBackend,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    broken = noisy_png(200, 200)[:1500]  # sniffs as PNG; its pixels are cut off
    world = await make_world(tmp_path, "local", tasks=8, days=1, state=state_backend,
                             pictures=[noisy_png(300, 200 + n) for n in range(3)] + [broken])
    keys = [a["key"] for a in world.made.assets]
    bad = {k for k in keys if world.made.objects[k][0] == broken}
    assert bad and len(keys) - len(bad) >= 4
    state = await open_state(world.config)
    order: list[str] = []

    async def made(key: str, thumb: Thumb) -> None:
        order.append(key)
        await state.set_media(key, width=thumb.width, height=thumb.height, thumb=thumb_key(key),
                              placeholder=thumb.placeholder)

    caplog.set_level(logging.INFO, logger="archiver.thumbs")
    thumbs = Thumbnailer(world.storage, 128, made, unmade=state.thumb_failed,
                         idle=CatchUp(state, tmp_path / "scratch"), queue=1, quiet=0.05)
    try:
        # Every asset offered at once from a staged copy, as the archivist does: one fits the queue.
        for n, key in enumerate(keys):
            staged = tmp_path / f"staged-{n}"
            staged.write_bytes(world.made.objects[key][0])
            thumbs.offer(key, "image", staged)
        assert caplog.text.count(SKIPPED) == len(keys) - 1
        async with asyncio.timeout(60):
            while await state.missing_thumbs(100):
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # ten more looks at the state DB: nothing is tried again
        at = {k: (await state.asset_by_key(k)).archived_at for k in keys}  # type: ignore[union-attr]
    finally:
        await thumbs.stop(0.0)
        await state.close()
    assert sorted(order) == sorted(set(keys) - bad)
    caught_up = order[1:] if order[0] == keys[0] else order  # the queued one came first
    assert caught_up == sorted(caught_up, key=lambda k: -at[k])  # newest first
    for key in keys:
        assert (tmp_path / "archive" / thumb_key(key)).exists() == (key not in bad)
    for key in bad:
        assert caplog.text.count(f"{key}: no thumbnail: the file cannot be read as image") == 1
    assert not list((tmp_path / "scratch").iterdir())  # each streamed copy removed
    reader = open_reader(world.config)
    try:
        shown = {e.key: e.thumb for e in reader.each() if isinstance(e, IndexedAsset)}
    finally:
        reader.close()
    assert shown == {k: None if k in bad else thumb_key(k) for k in keys}  # a given-up one still shows none
    await world.storage.close()
