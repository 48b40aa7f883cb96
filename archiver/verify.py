"""`archiver verify` (docs/operations.md, archiver verify): check the store against its sidecars and the state DB.

Every sidecar's asset must exist with the recorded size and sha256. On a store that keeps
a whole-object SHA-256 (S3 single-part uploads) that checksum is trusted unless `deep`;
everything else is read back in bounded chunks and hashed. `--fix` puts damaged assets of
tasks the state DB knows back to work; the daemon downloads them again under the same key.
A missing or unreadable thumbnail (`no_thumbnail`) is no damage to the archive: it alone does not
make verify fail, and `--fix` makes it again from the asset.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from archiver.archive_format.days import day_of_key, key_pattern, utc_day
from archiver.archive_format.keys import (FAILED_PREFIX, INDEX_PREFIX, PAGE_KEY, THUMBS_PREFIX, asset_of_sidecar,
                                          is_sidecar, sidecar_key, thumb_key)
from archiver.archive_format.media import JSON_TYPE, media_of
from archiver.archive_format.sidecar import asset_sidecar, read_recorded
from archiver.config import Config, ProviderEntry
from archiver.model import ENDED
from archiver.state import Asset, StateStore, Task
from archiver.storage import Storage
from archiver.storage.base import Listed
from archiver.thumbs.worker import Thumbnailer, thumb_from_store, wants_thumb

DERIVED = frozenset({"no_thumbnail"})  # problems of what can be made again from the archive itself
ORPHAN_AGE = 3600.0  # an asset may wait this long for its sidecar (the daemon writes it right after)
CONCURRENCY = 8


@dataclass
class Problem:
    kind: str  # missing_asset | changed | truncated | wrong_size | bad_sidecar | no_sidecar | sidecar_gone
    #            | no_thumbnail (derived, not damage: see DERIVED)
    key: str
    detail: str
    provider: str | None = None
    task_id: str | None = None
    fix: str | None = None  # what --fix did, or why it could not


@dataclass
class Report:
    assets: int = 0  # intact: size and digest as the sidecar says
    bytes: int = 0  # of the assets checked, as the store lists them
    problems: list[Problem] | None = None
    checked: int = 0  # every asset looked at, intact or not
    # Intact assets whose thumbnail is missing or empty (kind no_thumbnail): derived, so not damage.
    thumbnails: list[Problem] = field(default_factory=list)

    @property
    def damaged(self) -> bool:
        return bool(self.problems)

    def summary(self) -> str:
        n = len(self.problems or [])
        return (f"checked {_count(self.checked, 'asset')} ({_size(self.bytes)}): "
                + (_count(n, "problem") if n else "no problems"))

    def as_json(self) -> dict[str, Any]:
        return {"checked": self.checked, "assets": self.assets, "bytes": self.bytes, "ok": not self.problems,
                "problems": [asdict(p) for p in self.problems or []],
                "no_thumbnail": [asdict(p) for p in self.thumbnails]}


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value, units = n / 1024, ["KiB", "MiB", "GiB", "TiB"]
    while value >= 1024 and len(units) > 1:
        value, units = value / 1024, units[1:]
    return f"{value:.1f} {units[0]}"


class Verifier:
    def __init__(self, storage: Storage, layout: str, *, since: str | None = None, deep: bool = False,
                 state: StateStore | None = None, progress: Callable[[int, int], None] | None = None,
                 orphan_age: float = ORPHAN_AGE, thumbnails: bool = False) -> None:
        self.storage = storage
        self.orphan_age = orphan_age
        self.thumbnails = thumbnails  # check each image's and video's thumbnail
        self.thumbs: dict[str, int] = {}  # thumbnail key → size, as listed
        self.pattern = key_pattern(layout)
        self.since = since
        self.deep = deep
        self.state = state
        self.progress = progress
        self.report = Report(problems=[])
        self.seen: set[str] = set()  # asset keys checked, whatever was found

    async def run(self) -> Report:
        listing = {}
        async for item in self.storage.list():
            if item.key.startswith(THUMBS_PREFIX):
                self.thumbs[item.key] = item.size
            elif not item.key.startswith((INDEX_PREFIX, FAILED_PREFIX)) and item.key != PAGE_KEY:
                listing[item.key] = item
        sidecars = [k for k in listing if is_sidecar(k) and self._wanted(asset_of_sidecar(k), listing[k])]
        gate, done = asyncio.Semaphore(CONCURRENCY), 0

        async def one(key: str) -> None:
            nonlocal done
            async with gate:
                await self._check(key, listing)
            done += 1
            if self.progress:
                self.progress(done, len(sidecars))

        for start in range(0, len(sidecars), 1000):
            await asyncio.gather(*(one(k) for k in sidecars[start:start + 1000]))
        known = await self._check_state(listing) if self.state is not None else set()
        now = time.time()
        for key, item in listing.items():
            if (not is_sidecar(key) and sidecar_key(key) not in listing and key not in known
                    and now - item.modified > self.orphan_age and self._wanted(key, item)):
                self._problem("no_sidecar", key, "an asset without its sidecar, older than an hour")
        assert self.report.problems is not None
        self.report.problems.sort(key=lambda p: (p.key, p.kind))
        self.report.thumbnails.sort(key=lambda p: p.key)
        self.report.checked = len(self.seen)
        self.report.bytes = sum(listing[k].size for k in self.seen if k in listing)
        return self.report

    def _wanted(self, asset_key: str, item: Listed) -> bool:
        if self.since is None:
            return True
        return (day_of_key(self.pattern, asset_key) or utc_day(item.modified)) >= self.since

    async def _check(self, sidecar: str, listing: dict[str, Listed]) -> None:
        asset = asset_of_sidecar(sidecar)
        try:
            recorded = read_recorded(await self.storage.get(sidecar))
        except FileNotFoundError:
            return  # deleted since the listing
        except (ValueError, KeyError, TypeError) as e:
            self._problem("bad_sidecar", sidecar, f"not a valid sidecar: {type(e).__name__}: {e}"[:200])
            return
        size, sha256 = recorded.bytes, recorded.sha256
        fields = {"provider": recorded.provider, "task_id": recorded.task_id}
        if asset not in listing:
            self._problem("missing_asset", asset, "the sidecar is there, its asset is not", **fields)
            return
        found = listing[asset].size
        if found != size:
            kind = "truncated" if found < size else "wrong_size"
            self._problem(kind, asset, f"{found:,} bytes, the sidecar says {size:,}", **fields)
            return
        digest = await self._digest(asset)
        if digest is None:
            self._problem("missing_asset", asset, "deleted while being verified", **fields)
        elif digest != sha256:
            self._problem("changed", asset, f"sha256 {digest}, the sidecar says {sha256}", **fields)
        else:
            self.seen.add(asset)
            self.report.assets += 1
            if self.thumbnails and wants_thumb(asset) and (wrong := await self._thumb_wrong(asset)):
                self._problem("no_thumbnail", asset, wrong, **fields)

    async def _thumb_wrong(self, asset: str) -> str | None:
        """Why the asset's thumbnail will not show: missing, empty, or (with `deep`) not a WebP that decodes."""
        key = thumb_key(asset)
        if key not in self.thumbs:
            return "no thumbnail"
        if not self.thumbs[key]:
            return "its thumbnail is empty"
        if self.deep:
            try:
                await asyncio.to_thread(_decode_webp, await self.storage.get(key))
            except FileNotFoundError:
                return "no thumbnail"
            except Exception as e:  # whatever Pillow makes of a damaged file
                return f"its thumbnail cannot be read: {type(e).__name__}: {e}"[:200]
        return None

    async def _digest(self, key: str) -> str | None:
        try:
            if not self.deep and (checksum := (await self.storage.stat(key)).checksum):
                return checksum  # the store's own SHA-256 of the whole object
            digest = hashlib.sha256()
            async for chunk in self.storage.read(key):
                digest.update(chunk)
            return digest.hexdigest()
        except FileNotFoundError:
            return None

    async def _check_state(self, listing: dict[str, Listed]) -> set[str]:
        """Archived assets (by the state DB) whose sidecar is gone; returns their keys."""
        assert self.state is not None
        reported = set()
        for provider, task_id, seen, key in await self.state.archived_keys():
            if self.since and seen and utc_day(seen) < self.since:
                continue
            if sidecar_key(key) not in listing:
                where = "its asset is there" if key in listing else "its asset is gone too"
                self._problem("sidecar_gone", key, f"the state DB says archived, but no sidecar ({where})",
                              provider=provider, task_id=task_id)
                reported.add(key)
        return reported

    def _problem(self, kind: str, key: str, detail: str, **fields: Any) -> None:
        assert self.report.problems is not None
        if kind in DERIVED:
            self.report.thumbnails.append(Problem(kind, key, detail, **fields))
            return
        self.seen.add(asset_of_sidecar(key) if kind == "bad_sidecar" else key)
        self.report.problems.append(Problem(kind, key, detail, **fields))



async def fix_thumbnails(problems: list[Problem], config: Config, storage: Storage, scratch: Path) -> None:
    """Make each missing thumbnail again from its asset in the store (no state DB needed)."""
    thumbs = Thumbnailer(storage, config.thumbnails.size)
    try:
        for p in problems:
            if p.kind == "no_thumbnail" and (media := wants_thumb(p.key)):
                made = await thumb_from_store(thumbs, p.key, media, scratch)
                p.fix = "thumbnail made again" if made else "not fixed: the asset cannot be read as " + media
    finally:
        await thumbs.close()


async def fix(problems: list[Problem], state: StateStore, config: Config, storage: Storage) -> None:
    """Repair what the state DB knows how to: say in each problem's `fix` what happened."""
    for p in problems:
        asset_key = asset_of_sidecar(p.key) if p.kind == "bad_sidecar" else p.key
        asset = await state.asset_by_key(asset_key)
        if asset is None:
            p.fix = "not fixed: no task in the state DB has this key"
            continue
        task = await state.task(asset.task)
        p.provider, p.task_id = task.provider, task.task_id
        entry = config.providers.get(task.provider)
        if task.state not in ENDED:
            p.fix = f"not fixed: the task is {task.state.value}; the daemon is working on it"
        elif entry is None:
            p.fix = f"not fixed: provider entry {task.provider!r} is no longer in the config"
        elif p.kind == "bad_sidecar" and asset.state == "archived" and not _damaged(problems, asset_key):
            # The asset is intact: its sidecar is written again from what the state DB recorded.
            await storage.put_bytes(p.key, await _sidecar(state, task, entry, asset), content_type=JSON_TYPE)
            p.fix = "sidecar written again from the state DB"
        else:
            await state.requeue_asset(task.pk, asset.idx, note=f"verify --fix: {p.kind}")
            p.fix = "queued again: the daemon asks the provider and archives it anew under the same key"


def _decode_webp(data: bytes) -> None:
    with Image.open(io.BytesIO(data), formats=["WEBP"]) as im:
        im.load()


def _damaged(problems: list[Problem], key: str) -> bool:
    return any(p.key == key for p in problems)


async def _sidecar(state: StateStore, task: Task, entry: ProviderEntry, asset: Asset) -> bytes:
    assert asset.key and asset.bytes is not None and asset.sha256 and asset.content_type
    return asset_sidecar(task, entry, asset, key=asset.key, count=await state.asset_count(task.pk),
                         media=media_of(asset.content_type, task.media), content_type=asset.content_type,
                         size=asset.bytes, sha256=asset.sha256, downloaded_at=asset.downloaded_at or 0.0,
                         archived_at=asset.archived_at or 0.0)
