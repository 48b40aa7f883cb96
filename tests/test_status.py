"""archiver.status: the read model behind `archiver status`, `show` and `GET /status`."""

from __future__ import annotations

import asyncio
from pathlib import Path

from archiver.model import TaskRef
from archiver.state import Position, SqliteState
from archiver.status import status_report


async def test_in_flight_is_newest_first(tmp_path: Path) -> None:
    state = SqliteState(tmp_path / "archiver.db")
    for n, task_id in enumerate(("old", "middle", "new")):
        await state.ingest([TaskRef("kie", task_id)], [], Position(1, 1, n, n))
        await asyncio.sleep(0.01)
    old = await state.find("kie", "old")
    assert old is not None
    await state.polled(old.pk)  # a later change must not move it up
    report = await status_report(state, None, 60.0)
    assert [t["task_id"] for t in report["in_flight"]] == ["new", "middle", "old"]
