"""StateStore.missing_thumbs and thumb_failed on SQLite and PostgreSQL: the archived images and videos with no
thumbnail and none given up on, newest first; audio never; a given-up asset still has no thumbnail."""

from __future__ import annotations

from pathlib import Path

from archiver.archive_format.keys import thumb_key
from archiver.state import IndexedAsset, open_reader
from tests.support.archive import generate_state
from tests.support.postgres import StateBackend
from tests.support.state import daemon_state, state_config


async def test_missing_thumbnails_newest_first(tmp_path: Path, state_backend: StateBackend) -> None:
    config = state_config(tmp_path, state_backend)
    made = await generate_state(config, 40, 3, video=b"not decoded here", audio=True)
    state = await daemon_state(config)
    try:
        media = {a["key"]: a["media"] for a in made.assets}
        assert set(media.values()) == {"image", "video", "audio"}
        at = {k: (await state.asset_by_key(k)).archived_at for k in media}  # type: ignore[union-attr]
        wanted = sorted((k for k, m in media.items() if m != "audio"), key=lambda k: -at[k])
        types = {k: made.objects[k][1] for k in wanted}
        assert await state.missing_thumbs(8) == [(k, types[k]) for k in wanted[:8]]
        assert [k for k, _ in await state.missing_thumbs(1000)] == wanted

        await state.set_media(wanted[0], thumb=thumb_key(wanted[0]), placeholder="#102030")
        await state.thumb_failed(wanted[1])
        assert [k for k, _ in await state.missing_thumbs(1000)] == wanted[2:]
    finally:
        await state.close()
    reader = open_reader(config)
    try:
        shown = {e.key: e.thumb for e in reader.each() if isinstance(e, IndexedAsset)}
    finally:
        reader.close()
    assert shown[wanted[0]] == thumb_key(wanted[0]) and shown[wanted[1]] is None
