"""kill -9 at random moments, then restarts: every asset ends archived exactly once, on either
state backend.

Prints its seed; run it again with ARCHIVER_CRASH_SEED=<seed> to replay the same kills.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import signal
from pathlib import Path
from typing import Any

import pytest

from archiver.storage.local import MARKER
from tests.support.daemon import DaemonProcess, base_config, write_config
from tests.support.fakes import FakeApis, FakeTask, media_bytes
from tests.support.postgres import StateBackend
from tests.support.servers import serve

API_KEY = "crash-SECRET-1"
TASKS = 240
KILLS = 5
# About 40 s on a quiet machine, of which the final run takes 20 s; each wait below is
# bounded so that even together they stay well inside the test's own limit.
BIG_STARTS_WITHIN = 20.0
LAST_RUN_WITHIN = 75.0


def world(fake: FakeApis, rng: random.Random) -> list[str]:
    """Inbox lines for TASKS tasks over three providers; some downloads are slow."""
    lines = []
    for n in range(TASKS):
        provider_type, entry, where = [("kie", "kie", ""), ("maxapi", "maxapi", ""),
                                       ("apipod", "pod", "images")][n % 3]
        files = [media_bytes("png", rng.randrange(1_000, 300_000), f"{n}/{i}") for i in range(1 + n % 2)]
        slow = rng.choice([0.0, 0.0, 0.0, 0.5, 2.0])
        fake.add(FakeTask(provider_type, f"t{n:04d}", ["running", "success"], files, where=where, slow=slow))
        lines.append(f"{entry} t{n:04d} n={n}\n")
    # One large, slow file that is surely in flight at the first kill, to prove resume.
    fake.add(FakeTask("kie", "big", ["success"], [media_bytes("mp4", 4_000_000, "big")], slow=4.0))
    return ["kie big\n", *lines]


def config(tmp_path: Path, base: str, storage: dict[str, Any], backend: StateBackend) -> Path:
    fast = {"base_url": base, "api_key": "${CRASH_KEY}", "poll_intervals": ["0.2s"],
            "requests_per_second": 60}
    # On PostgreSQL the next run takes a killed daemon's tasks once its lease runs out: the shortest one.
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
    lines = world(fake, rng)
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


def is_index(key: str) -> bool:
    """index.html and _index/ are rewritten as days fill up: the one-object-per-key rule is for assets."""
    return key.removeprefix("ai/") == "index.html" or key.removeprefix("ai/").startswith("_index/")


def check_stored(objects: dict[str, bytes], expected: dict[str, list[bytes]]) -> None:
    """Exactly one asset per expected file, with its sidecar; nothing else but the browse index."""
    objects = {k: v for k, v in objects.items() if not is_index(k)}
    want = set()
    for task_id, files in expected.items():
        for index, content in enumerate(files):
            [key] = [k for k in objects if f"/{task_id}/{index:02d}." in k and not k.endswith(".json")]
            assert objects[key] == content, key
            sidecar = json.loads(objects[f"{key}.json"])
            assert sidecar["sha256"] == hashlib.sha256(objects[key]).hexdigest()
            assert sidecar["key"] == key
            want |= {key, f"{key}.json"}
    assert set(objects) == want, f"unexpected objects: {sorted(set(objects) - want)[:5]}"


def check_local(root: Path, expected: dict[str, list[bytes]]) -> None:
    objects = {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    objects.pop(MARKER, None)  # the shared-root marker, written with PostgreSQL
    assert not [k for k in objects if ".tmp" in k or k.rsplit("/", 1)[-1].startswith(".")], "temp file left"
    check_stored(objects, expected)


def check_s3(client: Any, bucket: str, expected: dict[str, list[bytes]]) -> None:
    versions: dict[str, int] = {}
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for v in page.get("Versions", []):
            versions[v["Key"]] = versions.get(v["Key"], 0) + 1
    assert all(n == 1 for k, n in versions.items() if not is_index(k)), {k: n for k, n in versions.items() if n > 1}
    assert not client.list_multipart_uploads(Bucket=bucket).get("Uploads")
    objects = {k.removeprefix("ai/"): client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in versions}
    check_stored(objects, expected)
