"""Scenario 6: the daemon's HTTP face (docs/http-api.md) — /metrics scrape cost and POST /tasks rate."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from measure import Child, free_port, percentile, wait_port
from scenarios import Rig, Row

from archiver.model import TaskState, TaskRef
from archiver.state import SqliteState

TOKEN = "bench-token"
PENDING = 10  # tasks still polling, at any size: only the table's size differs between rows


async def fill(state_dir: Path, tasks: int) -> None:
    """`tasks` tasks straight into a new state DB: PENDING polling, the rest archived."""
    state = SqliteState(state_dir / "archiver.db")
    try:
        await state.add_tasks([TaskRef("kie", f"m{i:06d}") for i in range(tasks)], note="bench")
        with state.transaction() as db:
            db.execute("UPDATE tasks SET state = ? WHERE id > ?", (TaskState.ARCHIVED, PENDING))
            db.execute("UPDATE tasks SET state = ? WHERE id <= ?", (TaskState.POLLING, PENDING))
    finally:
        await state.close()


def _http(rig: Rig, tasks: int) -> tuple[str, Child]:
    port = free_port()
    if tasks:
        # In a process of its own: a child's peak RSS (wait4) counts its parent's at fork time.
        subprocess.run([sys.executable, __file__, str(rig.dir / "state"), str(tasks)], check=True)
    daemon = rig.daemon(None, [], config={"http": {"listen": f"127.0.0.1:{port}", "token": TOKEN}})
    wait_port(port)
    return f"http://127.0.0.1:{port}", daemon


def scrape(tasks: int, base: Path, profile: Path | None, *, scrapes: int) -> Row:
    """GET /metrics `scrapes` times, one after another, with `tasks` tasks in the state DB."""
    with Rig(base, profile, running_polls=-1) as rig:
        url, daemon = _http(rig, tasks)
        time.sleep(2.0)  # past start-up: the pending tasks are in the poll heap
        took, size = [], 0
        for _ in range(scrapes):
            start = time.perf_counter()
            with urllib.request.urlopen(f"{url}/metrics", timeout=30) as resp:
                size = len(resp.read())
            took.append((time.perf_counter() - start) * 1e3)
        os.kill(rig.pid(daemon), signal.SIGTERM)
        usage = daemon.wait()
        note = (f"/metrics p50 {percentile(took, 50):.1f} ms, p95 {percentile(took, 95):.1f} ms, max "
                f"{max(took):.1f} ms over {scrapes} scrapes; {size:,} bytes; {tasks:,} tasks in the DB")
        return Row(f"6 /metrics ×{tasks:,}", usage.wall, None, None, usage.cpu, usage.peak_rss_mib, note)


def intake(batches: int, base: Path, profile: Path | None, *, size: int = 1000) -> Row:
    """POST /tasks: `batches` batches of `size` new tasks, one after another; each is committed before its 202."""
    with Rig(base, profile, running_polls=-1) as rig:
        url, daemon = _http(rig, 0)
        took, queued = [], 0
        for b in range(batches):
            body = json.dumps([{"provider": "kie", "task_id": f"b{b:03d}-{i:04d}"} for i in range(size)]).encode()
            request = urllib.request.Request(f"{url}/tasks", data=body, headers={
                "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
            start = time.perf_counter()
            with urllib.request.urlopen(request, timeout=60) as resp:
                answers = json.load(resp)
            took.append(time.perf_counter() - start)
            queued += sum(a["result"] == "queued" for a in answers)
        os.kill(rig.pid(daemon), signal.SIGTERM)
        usage = daemon.wait()
        stored = sum((rig.status() or {}).get("counts", {}).values())
        total = sum(took)
        note = (f"**{batches / total:.1f} batches/s** = {batches * size / total:,.0f} tasks/s; per batch p50 "
                f"{percentile(took, 50) * 1e3:.0f} ms, p95 {percentile(took, 95) * 1e3:.0f} ms; {queued:,} queued, "
                f"{stored:,} in the state DB after SIGTERM")
        return Row(f"6 POST /tasks {batches}×{size}", usage.wall, None, None, usage.cpu, usage.peak_rss_mib, note)


if __name__ == "__main__":
    asyncio.run(fill(Path(sys.argv[1]), int(sys.argv[2])))
