"""The Archivist's rounds: a download that keeps failing ends `download_failed` after
MAX_ROUNDS; a failing store never fails a task, however many rounds it takes.

These run the real Archivist on a real state DB, local store and CDN on 127.0.0.1. The test
plays its scheduler (workers.py's `requeue`), so that the download.retry_after wait between rounds
is recorded instead of slept.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from archiver.archiving import MAX_ROUNDS, Archivist, Downloading
from archiver.config import Config, load_config
from archiver.download import Downloader
from archiver.model import Phase, TaskState, TaskRef, TaskStatus
from archiver.staging import Staging
from archiver.state import SqliteState
from archiver.storage import open_storage
from archiver.testing import FaultCdn, Resource, media_bytes, serve_at
from tests.support.daemon import base_config, write_config


@dataclass
class Requeues:
    """The Archivist's scheduler: records each requeue instead of waiting it out."""

    requeued: list[tuple[int, int, float]] = field(default_factory=list)

    def requeue(self, pk: int, idx: int, delay: float) -> None:
        self.requeued.append((pk, idx, delay))

    async def disk_full(self, error: str) -> None:
        pass


@dataclass
class Scene:
    config: Config
    state: SqliteState
    archiver: Archivist
    cdn: FaultCdn
    requeued: list[tuple[int, int, float]] = field(default_factory=list)

    async def succeeded(self, task_id: str, *names: str) -> int:
        """A task whose provider answered success with the CDN's files `names`; its pk."""
        [task] = await self.state.add_tasks([TaskRef("kie", task_id)], note="test")
        assert task is not None
        await self.state.succeeded(task.pk, TaskStatus(Phase.SUCCEEDED, urls=tuple(self.cdn.url(n) for n in names)))
        return task.pk

    async def archive(self, pk: int, idx: int) -> bool:
        """One round, read afresh as the workers do after a requeue."""
        task, asset, count = await self.state.asset_work(pk, idx)
        return await self.archiver.archive(Downloading(task, count), asset)

    async def rounds(self, pk: int, idx: int, most: int) -> int:
        """Archive, then again for each requeue, as the workers would; how many rounds ran."""
        for done in range(1, most + 1):
            before = len(self.requeued)
            await self.archive(pk, idx)
            if len(self.requeued) == before:
                return done
        return most


@pytest.fixture
async def scene(tmp_path: Path) -> AsyncIterator[Scene]:
    cdn = FaultCdn()
    async with serve_at(cdn.app()) as base, aiohttp.ClientSession() as session:
        cdn.base = base
        config = load_config(write_config(tmp_path / "config.yaml", base_config(tmp_path, {
            "kie": {"type": "kie", "api_key": "k", "base_url": "http://127.0.0.1:9"}})))
        staging = Staging(config.state_dir / "staging")
        staging.create()
        state = SqliteState(config.state_dir / "archiver.db")
        scheduler = Requeues()
        # One attempt per round, no backoff: each round is one request to the CDN. No poller to ask again.
        downloader = Downloader(session, max_bytes=10**8, per_host=4, attempts=1, max_wait=0)
        archiver = Archivist(config, state, open_storage(config.storage), downloader, staging,
                             askers={}, scheduler=scheduler)
        try:
            yield Scene(config, state, archiver, cdn, scheduler.requeued)
        finally:
            await state.close()


async def test_download_failed_after_the_rounds_run_out(scene: Scene) -> None:
    scene.cdn.add("broken", Resource(media_bytes("png", 5_000, "broken"), script=["500"]))
    pk = await scene.succeeded("doomed", "broken")
    assert await scene.rounds(pk, 0, MAX_ROUNDS + 2) == MAX_ROUNDS
    assert [delay for _, _, delay in scene.requeued] == [30.0] * (MAX_ROUNDS - 1)  # download.retry_after
    task = await scene.state.task(pk)
    assert (task.state, task.reason) == (TaskState.FAILED, "download_failed")
    assert "HTTP 500" in (task.message or "")
    assert len(scene.cdn.hits_for("broken")) == MAX_ROUNDS
    record = json.loads((scene.config.storage.local.root / "_failed" / "kie" / "doomed.json").read_text())
    assert record["reason"] == "download_failed"
    assert not list((scene.config.state_dir / "staging").iterdir())


async def test_a_failure_that_mends_within_the_rounds_is_archived(scene: Scene) -> None:
    content = media_bytes("png", 5_000, "mended")
    scene.cdn.add("mended", Resource(content, script=["503"] * (MAX_ROUNDS - 1) + ["ok"]))
    pk = await scene.succeeded("mended", "mended")
    assert await scene.rounds(pk, 0, MAX_ROUNDS + 2) == MAX_ROUNDS
    assert (await scene.state.task(pk)).state == TaskState.ARCHIVED
    [path] = scene.config.storage.local.root.glob("kie/*/*/*/mended/00.png")
    assert path.read_bytes() == content


async def test_a_failing_store_never_fails_the_task(scene: Scene) -> None:
    content = media_bytes("png", 5_000, "waits")
    scene.cdn.add("waits", Resource(content))
    root = scene.config.storage.local.root
    root.mkdir(parents=True)
    (root / "kie").write_text("a file where the kie folder should be")
    pk = await scene.succeeded("waits", "waits")
    assert await scene.rounds(pk, 0, MAX_ROUNDS * 2) == MAX_ROUNDS * 2, "the task stopped being requeued"
    assert (await scene.state.task(pk)).state == TaskState.DOWNLOADING
    assert {h.name: h.state for h in await scene.state.health()}["storage"] == "failing"

    (root / "kie").unlink()
    await scene.archive(pk, 0)
    assert (await scene.state.task(pk)).state == TaskState.ARCHIVED
    assert {h.name: h.state for h in await scene.state.health()}["storage"] == "ok"
    [path] = root.glob("kie/*/*/*/waits/00.png")
    assert path.read_bytes() == content
