"""kill -9 at random moments, then restarts: every asset ends archived exactly once, on either
state backend.

Prints its seed; run it again with ARCHIVER_CRASH_SEED=<seed> to replay the same kills.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
from pathlib import Path
from typing import Any

import pytest

from archiver.testing import FakeApis
from tests.support.crash import check_local, check_s3, world
from tests.support.daemon import DaemonProcess, base_config, write_config
from tests.support.postgres import StateBackend
from tests.support.servers import serve

API_KEY = "crash-SECRET-1"
TASKS = 160
KILLS = 5
# About 30 s on a quiet machine, of which the final run takes 13 s; each wait below is
# bounded so that even together they stay well inside the test's own limit.
BIG_STARTS_WITHIN = 20.0
LAST_RUN_WITHIN = 75.0


def config(tmp_path: Path, base: str, storage: dict[str, Any], backend: StateBackend) -> Path:
    fast = {"base_url": base, "api_key": "${CRASH_KEY}", "poll_intervals": ["0.2s"],
            "requests_per_second": 60}
    # On PostgreSQL the next run takes a killed run's tasks at once (its lock file names it), but
    # a kill before the lock file was named leaves them to the lease: the shortest one.
    return write_config(tmp_path / "config.yaml", base_config(tmp_path, {
        "kie": {"type": "kie", **fast},
        "maxapi": {"type": "maxapi", **fast},
        "pod": {"type": "apipod", "family": "images", **fast},
    }, storage=storage, shutdown_grace="2s", **backend.config(lease="5s")))


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    if request.param == "local":
        return {"backend": "local", "local": {"root": str(tmp_path / "archive")}}
    endpoint = request.getfixturevalue("moto_server")
    bucket = request.getfixturevalue("s3_bucket")
    client = request.getfixturevalue("s3_client")
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return {"backend": "s3", "s3": {"bucket": bucket, "prefix": "ai/", "endpoint_url": endpoint}}


@pytest.mark.timeout(180)
async def test_kill_9_then_restart_archives_everything_exactly_once(
        tmp_path: Path, storage: dict[str, Any], state_backend: StateBackend, request: pytest.FixtureRequest) -> None:
    seed = int(os.environ.get("ARCHIVER_CRASH_SEED") or random.randrange(2**32))
    print(f"crash test seed {seed} ({storage['backend']}, {state_backend.name})")
    rng = random.Random(seed)
    fake = FakeApis(API_KEY)
    lines = world(fake, rng, TASKS)
    inbox = tmp_path / "inbox.txt"
    async with serve(fake.app()) as base:
        fake.base = base
        cfg = config(tmp_path, base, storage, state_backend)
        daemon = DaemonProcess(cfg, dict(os.environ, CRASH_KEY=API_KEY), tmp_path / "daemon.log")
        chunks = [lines[i::KILLS + 1] for i in range(KILLS + 1)]
        for kill in range(KILLS):
            with inbox.open("a") as f:
                f.writelines(chunks[kill])
                f.write("kie t00")  # half a line: the next chunk starts by finishing it
            await daemon.start()
            if kill == 0:
                await big_download_started(fake, daemon)
                # Well into its 4 s: past the first MiB, which is what reaches the disk first.
                await asyncio.sleep(2.5)
            else:
                await asyncio.sleep(rng.uniform(0.3, 2.5))
            assert await daemon.stop(signal.SIGKILL) == -signal.SIGKILL
            with inbox.open("a") as f:
                f.write("00 again=yes\n")  # kie t0000 again: a duplicate
        with inbox.open("a") as f:
            f.writelines(chunks[KILLS])
        await daemon.start()
        status = await daemon.wait_for(lambda s: s["counts"]["archived"] == TASKS + 1, timeout=LAST_RUN_WITHIN)
        assert await daemon.stop() == 0
    assert status["counts"]["failed"] == 0 and status["rejected_lines"] == []
    assert sum(status["counts"].values()) == TASKS + 1, "an inbox line was lost or made two tasks"
    assert any(name == "big/0" and start > 0 for name, start in fake.ranges), "the big download restarted"
    expected = {t.task_id: t.files for t in fake.tasks.values()}
    if storage["backend"] == "local":
        check_local(tmp_path / "archive", expected)
    else:
        check_s3(request.getfixturevalue("s3_client"), storage["s3"]["bucket"], expected)
    leftovers = list((tmp_path / "state" / "staging").iterdir())
    assert leftovers == [], leftovers


async def big_download_started(fake: FakeApis, daemon: DaemonProcess) -> None:
    deadline = asyncio.get_running_loop().time() + BIG_STARTS_WITHIN
    while "big/0" not in fake.cdn_hits:
        assert asyncio.get_running_loop().time() < deadline, f"no download of big:\n{daemon.log.read_text()[-3000:]}"
        await asyncio.sleep(0.05)
