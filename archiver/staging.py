"""Staging: the folder downloads are written to before the store takes them.

The only module that knows the names there: asset `idx` of task `pk` downloads to
`{pk}-{idx}.part`, and a partial download's resume note (download.py) is `{pk}-{idx}.part.etag`.
`thumbs/` holds hard links to stored assets that the thumbnail worker (archiver/thumbs/) owns: the
store renames (local) or deletes (S3) the staged name, the link keeps the bytes until a thumbnail is made.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING

from archiver.files import private_dir
from archiver.model import TaskState

if TYPE_CHECKING:
    from archiver.state import StateStore

PART = ".part"
NOTE = ".etag"


def resume_note(part: Path) -> Path:
    """Where the validator of the partial download `part` is kept (download.py resumes with it)."""
    return part.with_name(part.name + NOTE)


def discard(part: Path) -> None:
    """Remove a staged download and its resume note."""
    part.unlink(missing_ok=True)
    resume_note(part).unlink(missing_ok=True)


def _asset_of(name: str) -> tuple[int, int] | None:
    """(pk, idx) of a staged file's name, the part or its note; None for anything else."""
    pk, _, idx = name.removesuffix(NOTE).removesuffix(PART).partition("-")
    if not (name.removesuffix(NOTE).endswith(PART) and pk.isdecimal() and idx.isdecimal()):
        return None
    return int(pk), int(idx)


class Staging:
    """One daemon's staging folder: each asset's part file, and the sweep of those no asset waits for."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def create(self) -> None:
        private_dir(self.root)
        if self.thumbs.is_dir():  # a stop's or a crash's links: `archiver index --thumbnails` makes those
            for left in self.thumbs.iterdir():
                left.unlink(missing_ok=True)

    @property
    def thumbs(self) -> Path:
        return self.root / "thumbs"

    def thumbs_done(self) -> None:
        """At a stop, once the thumbnail worker has ended: its folder goes when nothing is left in it."""
        with contextlib.suppress(OSError):
            self.thumbs.rmdir()

    def for_thumbnail(self, pk: int, idx: int) -> Path | None:
        """A name of its own for the staged file of asset `idx` of task `pk`, for the thumbnail worker to
        read and remove; made before the store takes the staged file. None if it cannot be made."""
        link = self.thumbs / f"{pk}-{idx}-{os.urandom(4).hex()}"
        try:
            if not self.thumbs.is_dir():
                private_dir(self.thumbs)
            os.link(self.part(pk, idx), link)
        except OSError:
            try:  # a file system without hard links
                shutil.copyfile(self.part(pk, idx), link)
            except OSError:
                return None
        return link

    def part(self, pk: int, idx: int) -> Path:
        return self.root / f"{pk}-{idx}{PART}"

    def discard(self, pk: int, idx: int) -> None:
        discard(self.part(pk, idx))

    async def sweep(self, state: StateStore, keep: Collection[tuple[int, int]]) -> None:
        """Remove staged files no asset waits for any more (archived, failed, retried); `keep` are
        the assets (pk, idx) known to wait.

        A file of a task still downloading stays though we did not claim it: on PostgreSQL a killed
        run's tasks come back to us only when its lease runs out, and their downloads resume then.
        """
        for path in self.root.iterdir():
            if path == self.thumbs:
                continue
            asset = _asset_of(path.name)
            if asset not in keep and not (asset is not None and await _awaited(state, *asset)):
                path.unlink(missing_ok=True)


async def _awaited(state: StateStore, pk: int, idx: int) -> bool:
    """True if asset `idx` of task `pk` belongs to a downloading task, not archived yet."""
    waiting = [a for a in await state.assets(pk) if a.idx == idx and a.state != "archived"]
    return bool(waiting) and (await state.task(pk)).state == TaskState.DOWNLOADING
