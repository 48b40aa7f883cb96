"""Three daemons on one PostgreSQL and a versioned S3 bucket; kill -9 one at random moments, restart it:
every asset ends archived exactly once, as one object version, and no key went over its rate.

Prints its seed; run it again with ARCHIVER_PG_CRASH_SEED=<seed> to replay the same kills.
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
from tests.support.crash import check_s3, world
from tests.support.fleet import Fleet
from tests.support.rates import over_rate
from tests.support.servers import serve

API_KEY = "pgcrash-SECRET-1"
TASKS = 400
DAEMONS = 3
KILLS = 10
RATE = 30.0  # per entry (each entry is its own key at the fake): 90 polls a second in all
LAST_RUN_WITHIN = 120.0


def providers(base: str) -> dict[str, Any]:
    fast = {"base_url": base, "api_key": "${CRASH_KEY}", "poll_intervals": ["0.2s"], "requests_per_second": RATE}
    return {"kie": {"type": "kie", **fast}, "maxapi": {"type": "maxapi", **fast},
            "pod": {"type": "apipod", "family": "images", **fast}}


@pytest.mark.timeout(240)
async def test_kill_9_of_any_daemon_loses_nothing_and_stores_nothing_twice(
        tmp_path: Path, pg_dsn: str, moto_server: str, s3_client: Any, s3_bucket: str) -> None:
    seed = int(os.environ.get("ARCHIVER_PG_CRASH_SEED") or random.randrange(2**32))
    print(f"postgres crash test seed {seed}")
    rng = random.Random(seed)
    s3_client.put_bucket_versioning(Bucket=s3_bucket, VersioningConfiguration={"Status": "Enabled"})
    fake = FakeApis(API_KEY)
    lines = world(fake, rng, TASKS, max_size=60_000)  # small: moto shares the test's CPU
    chunks = [lines[i::KILLS + 1] for i in range(KILLS + 1)]
    async with serve(fake.app()) as base:
        fake.base = base
        fleet = Fleet(tmp_path, DAEMONS, providers(base), pg_dsn, dict(os.environ, CRASH_KEY=API_KEY),
                      lease="5s", shutdown_grace="2s",
                      storage={"backend": "s3", "s3": {"bucket": s3_bucket, "prefix": "ai/",
                                                      "endpoint_url": moto_server}})
        try:
            await fleet.start()
            for kill in range(KILLS):
                append(fleet[rng.randrange(DAEMONS)].inbox, chunks[kill])
                await asyncio.sleep(rng.uniform(0.5, 3.0))
                victim = rng.randrange(DAEMONS)
                assert await fleet.stop(victim, signal.SIGKILL) == -signal.SIGKILL
                # Written while its reader is dead: read from the stored offset on restart.
                append(fleet[victim].inbox, ["kie t0000 again=yes\n"])
                await fleet.start(victim)
            append(fleet[rng.randrange(DAEMONS)].inbox, chunks[KILLS])
            status = await fleet.wait_for(lambda s: s["counts"]["archived"] == TASKS + 1, timeout=LAST_RUN_WITHIN)
        finally:
            await fleet.stop_all()
    assert status["counts"]["failed"] == 0 and status["rejected_lines"] == []
    assert sum(status["counts"].values()) == TASKS + 1, "an inbox line was lost or made two tasks"
    check_s3(s3_client, s3_bucket, {t.task_id: t.files for t in fake.tasks.values()})
    for entry in ("kie", "maxapi", "apipod"):
        times = [r.at for r in fake.requests_for(entry)]
        assert (problem := over_rate(times, RATE)) is None, f"{entry}: {problem}"
    for member in fleet.members:
        leftovers = list((member.home / "state" / "staging").iterdir())
        assert leftovers == [], leftovers


def append(inbox: Path, lines: list[str]) -> None:
    with inbox.open("a") as f:
        f.writelines(lines)
