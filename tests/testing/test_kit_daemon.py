"""The kit's entries drive the real daemon: one task of every provider type, a documented
failure, an expiring kie URL, a throttled poll and an unknown task all end as planned."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from archiver.testing import FakeProviders, fails, succeeds
from tests.support.daemon import DaemonProcess, base_config, write_config


async def test_every_type_through_the_daemon_ends_as_planned(tmp_path: Path) -> None:
    async with FakeProviders(poll_interval="0.2s") as fake:
        made = time.monotonic()
        ok = {
            "kie": fake.task("kie", succeeds("mp4", "png"), running_polls=2),
            "maxapi": fake.task("maxapi", succeeds("jpg")),
            "acedata": fake.task("acedata", succeeds("png", "png")),
            "apipod": fake.task("apipod", succeeds("png"), throttled=1),
            "replicate": fake.task("replicate", succeeds("png", "audio")),
            "fal": fake.task("fal", succeeds("png"), running_seconds=2.0),
        }
        expiring = fake.task("kie", succeeds("png"), expiring=True)
        refused = fake.task("maxapi", fails())
        lines = [f"{t.provider_type} {t.task_id}" for t in (*ok.values(), expiring, refused)] + ["kie never-made"]
        (tmp_path / "inbox.txt").write_text("".join(f"{line}\n" for line in lines))
        config = write_config(tmp_path / "config.yaml", base_config(tmp_path, fake.entries()))
        daemon = DaemonProcess(config, dict(os.environ), tmp_path / "daemon.log")
        await daemon.start()
        try:
            status = await daemon.wait_for(lambda s: s["counts"]["archived"] + s["counts"]["failed"] == len(lines),
                                           timeout=60)
        finally:
            assert await daemon.stop() == 0
    assert status["counts"]["archived"] == 7 and status["counts"]["failed"] == 2, status
    reasons = {t["task_id"]: (t["reason"], t["code"]) for t in status["recent_failures"]}
    assert reasons == {refused.task_id: ("content_moderation", "CONTENT_MODERATION"),
                       "never-made": ("not_found", None)}
    archive = tmp_path / "archive"
    for task in (*ok.values(), expiring):
        stored = sorted(p for p in archive.glob(f"{task.provider_type}/*/*/*/{task.task_id}/*")
                        if p.suffix != ".json")
        assert [p.read_bytes() for p in stored] == task.files, task.task_id
        assert all(json.loads(Path(f"{p}.json").read_text())["sha256"] for p in stored)
    assert [r.status for r in fake.requests(api="kie:download-url")] == [200]
    assert fake.polls(ok["kie"]) == 3  # two running, then success: asked no more
    assert ok["fal"].succeeded_at is not None and ok["fal"].succeeded_at >= made + 2.0
    assert 429 in [r.status for r in fake.requests(api="apipod")]
    assert set(fake.requests_per_key()) <= set(fake.keys.values())
