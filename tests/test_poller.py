"""The poller's rules end to end: give_up_after counts only answered time, a success without result
URLs is asked about again before it ends provider_failed, and answers written later keep the schedule."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from archiver.config import load_config
from archiver.state import open_state
from archiver.testing import FakeApis, FakeTask, media_bytes
from tests.support.daemon import DaemonProcess, base_config, write_config
from tests.support.postgres import StateBackend
from tests.support.servers import serve

API_KEY = "key-SECRET-9011"
EMPTY_WAIT = 4.0


async def test_outages_never_time_out_and_empty_successes_are_asked_again(tmp_path: Path) -> None:
    fake = FakeApis(API_KEY)
    png = media_bytes("png", 1024, "lag")
    fake.add(FakeTask("kie", "lagging", ["running", "empty", "empty", "success"], [png]))
    fake.add(FakeTask("kie", "never-urls", ["running", "empty"]))
    fake.add(FakeTask("maxapi", "never-urls-m", ["empty"]))
    fake.add(FakeTask("acedata", "never-urls-a", ["empty"], where="seedream"))
    fake.add(FakeTask("kie", "forever", ["running"]))
    env = dict(os.environ, TEST_API_KEY=API_KEY)
    async with serve(fake.app()) as base:
        fake.base = base
        # empty_success_wait: 60 s by default; 4 s here, so the whole rule plays out in seconds.
        fast = {"api_key": "${TEST_API_KEY}", "poll_intervals": ["0.5s"], "give_up_after": "3s",
                "empty_success_wait": f"{EMPTY_WAIT}s"}
        config = write_config(tmp_path / "config.yaml", base_config(tmp_path, {
            "kie": {"type": "kie", "base_url": base, **fast},
            "maxapi": {"type": "maxapi", "base_url": base, **fast},
            "seedream": {"type": "acedata", "service": "seedream", "base_url": base, **fast},
            # Nothing listens on port 9: this provider is never reached.
            "down": {"type": "kie", "base_url": "http://127.0.0.1:9", **fast},
        }))
        (tmp_path / "inbox.txt").write_text(
            "kie lagging\nkie never-urls\nmaxapi never-urls-m\nseedream never-urls-a\nkie forever\n"
            "down unreached\n")
        daemon = DaemonProcess(config, env, tmp_path / "daemon.log")
        await daemon.start()
        try:
            early = await daemon.wait_for(lambda s: s["counts"]["failed"] == 1, timeout=30)
            status = await daemon.wait_for(lambda s: s["counts"]["failed"] == 4 and s["counts"]["archived"] == 1,
                                           timeout=40)
        finally:
            assert await daemon.stop() == 0
    failed = {t["task_id"]: t for t in status["recent_failures"]}
    # Asked about for 3 s of answers "still running": timed_out, and nothing else was.
    assert {t["task_id"]: t["reason"] for t in early["recent_failures"]} == {"forever": "timed_out"}
    assert "still running" in failed["forever"]["message"]
    # Unreachable for the whole run, far past its give_up_after: still waiting, not failed.
    unreached = next(t for t in status["in_flight"] if t["task_id"] == "unreached")
    assert unreached["state"] == "polling" and unreached["polls"] >= 2
    # A success whose URLs came two polls late is archived.
    assert any((tmp_path / "archive" / "kie").rglob("lagging/00.png"))
    # One that never gets URLs: asked 3 more times over at least empty_success_wait, then provider_failed.
    for task_id, entry in (("never-urls", "kie"), ("never-urls-m", "maxapi"), ("never-urls-a", "acedata:seedream")):
        assert failed[task_id]["reason"] == "provider_failed"
        asked = [r for r in fake.requests_for(entry) if task_id in r.path + json.dumps(r.body)]
        empties = asked[-4:]
        assert len(empties) == 4 and empties[-1].at - empties[0].at >= EMPTY_WAIT, [r.at for r in asked]
        assert len(asked) == (5 if task_id == "never-urls" else 4)
        record = json.loads(next((tmp_path / "archive" / "_failed").rglob(f"{task_id}.json")).read_text())
        assert record["reason"] == "provider_failed" and record["provider_response"] is not None


@pytest.mark.timeout(90)
async def test_answers_written_later_never_bring_a_task_back_early_and_a_stop_writes_them(
        tmp_path: Path, state_backend: StateBackend) -> None:
    """Answers that leave a task running are written several at a time (poller.WRITE_AFTER); until then the
    task is not handed out again, so each keeps its schedule, and a stop writes what is still unwritten."""
    fake = FakeApis(API_KEY)
    ids = [f"run-{i}" for i in range(6)]
    for task_id in ids:
        fake.add(FakeTask("kie", task_id, ["running"]))
    env = dict(os.environ, TEST_API_KEY=API_KEY)
    async with serve(fake.app()) as base:
        fake.base = base
        kie = {"type": "kie", "base_url": base, "api_key": API_KEY, "poll_intervals": ["1s"]}
        config = write_config(tmp_path / "config.yaml", base_config(tmp_path, {"kie": kie}, **state_backend.config()))
        (tmp_path / "inbox.txt").write_text("".join(f"kie {task_id}\n" for task_id in ids))
        daemon = DaemonProcess(config, env, tmp_path / "daemon.log")
        await daemon.start()
        try:
            await daemon.wait_for(lambda _: all(fake.tasks[("kie", t)].polls >= 4 for t in ids), timeout=60)
        finally:
            assert await daemon.stop() == 0
    state = await open_state(load_config(config))
    try:
        for task_id in ids:
            asked = [r.at for r in fake.requests_for("kie") if r.path.endswith(f"={task_id}")]
            gaps = [b - a for a, b in zip(asked, asked[1:], strict=False)]
            # 1 s less 10 % jitter: the next poll is set from the answer, so load only lengthens a gap.
            assert min(gaps) >= 0.9 - 0.01, f"{task_id} was asked again before its next poll was due: {gaps}"
            task = await state.find("kie", task_id)
            assert task is not None and task.polls == len(asked), "an answer was not written, or twice"
    finally:
        await state.close()


@pytest.mark.timeout(90)
async def test_apipod_completed_without_result_waits_five_minutes_then_fails(tmp_path: Path) -> None:
    """apipod's `completed` with an empty result is "not yet deliverable": asked again for 5 minutes,
    not the minute of the others, then provider_failed with the answer kept. The minutes are
    passed by moving the task's first empty answer back in the state DB while the daemon is stopped."""
    fake = FakeApis(API_KEY)
    task = fake.add(FakeTask("apipod", "img-empty", ["empty"], where="images"))
    env = dict(os.environ, TEST_API_KEY=API_KEY)
    async with serve(fake.app()) as base:
        fake.base = base
        pod = {"type": "apipod", "family": "images", "base_url": base, "api_key": "${TEST_API_KEY}",
               "poll_intervals": ["0.5s"]}
        config = write_config(tmp_path / "config.yaml", base_config(tmp_path, {"pod": pod}))
        (tmp_path / "inbox.txt").write_text("pod img-empty\n")
        daemon = DaemonProcess(config, env, tmp_path / "daemon.log")

        def the_task(status: dict[str, Any]) -> dict[str, Any]:
            return next((t for t in status["in_flight"] + status["recent_failures"] if t["task_id"] == "img-empty"),
                        {"polls": 0, "last_error": None, "state": "queued"})

        async def run_once(empty_for: float | None, done: Any) -> dict[str, Any]:
            if empty_for is not None:  # 3 empty answers so far, the first `empty_for` seconds ago; due now
                with sqlite3.connect(tmp_path / "state" / "archiver.db") as db:
                    db.execute("UPDATE tasks SET empty_polls = 3, empty_since = ?, next_poll_at = 0",
                               (time.time() - empty_for,))
            await daemon.start()
            try:
                return await daemon.wait_for(done, timeout=20)
            finally:
                assert await daemon.stop() == 0

        first = await run_once(None, lambda s: the_task(s)["polls"] >= 1)
        assert "succeeded without a result URL yet" in (the_task(first)["last_error"] or "")
        # 4 minutes of empty answers: another engine would end it (60 s); apipod asks on.
        later = await run_once(240, lambda s: the_task(s)["polls"] >= 2)
        assert the_task(later)["state"] == "polling" and later["counts"]["failed"] == 0
        asked = task.polls
        ended = await run_once(301, lambda s: s["counts"]["failed"] == 1)
    assert task.polls == asked + 1
    failed = the_task(ended)
    assert failed["reason"] == "provider_failed" and failed["message"] == "succeeded without any result URL"
    record = json.loads(next((tmp_path / "archive" / "_failed").rglob("img-empty.json")).read_text())
    assert record["provider_response"]["status"] == "completed" and record["provider_response"]["result"] == []
