"""Staging's names and its sweep: a staged file stays while its asset waits, and goes once nothing does."""

from __future__ import annotations

from pathlib import Path

from archiver.model import Phase, TaskRef, TaskStatus
from archiver.staging import Staging, discard, resume_note
from archiver.state import SqliteState


def test_an_assets_part_and_its_resume_note(tmp_path: Path) -> None:
    staging = Staging(tmp_path / "staging")
    staging.create()
    part = staging.part(7, 2)
    assert part == tmp_path / "staging" / "7-2.part"
    assert resume_note(part) == tmp_path / "staging" / "7-2.part.etag"
    part.write_bytes(b"half")
    resume_note(part).write_text("{}")
    discard(part)
    assert not list(staging.root.iterdir())


async def test_the_sweep_keeps_what_an_asset_waits_for(tmp_path: Path) -> None:
    staging = Staging(tmp_path / "staging")
    staging.create()
    state = SqliteState(tmp_path / "archiver.db")
    try:
        [task] = await state.add_tasks([TaskRef("kie", "t1")], note="test")
        assert task is not None
        await state.succeeded(task.pk, TaskStatus(Phase.SUCCEEDED, urls=("http://a/0", "http://a/1")))
        waiting = [f"{task.pk}-0.part", f"{task.pk}-0.part.etag", f"{task.pk}-1.part"]  # its task downloads
        kept = ["99-0.part"]  # no such task, but named as kept: a worker is on it
        litter = [f"{task.pk}-5.part", "99-1.part", "99-1.part.etag", "x-0.part", "1-0.etag", "notes.txt"]
        for name in waiting + kept + litter:
            (staging.root / name).write_bytes(b"")
        await staging.sweep(state, {(99, 0)})
        assert sorted(p.name for p in staging.root.iterdir()) == sorted(waiting + kept)

        await state.failed(task.pk, "download_failed", message="test")
        await staging.sweep(state, set())
        assert not list(staging.root.iterdir())
    finally:
        await state.close()
