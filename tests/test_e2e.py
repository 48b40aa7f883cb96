"""End to end: the real daemon process, a fake kie API and CDN on 127.0.0.1, local disk."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from archiver.testing import FakeApis, FakeTask, media_bytes
from tests.support.daemon import DaemonProcess, base_config, cli, write_config
from tests.support.postgres import StateBackend
from tests.support.servers import serve

API_KEY = "kie-SECRET-7d1f00c0ffee"
SIDECAR_FIELDS = {
    "schema", "provider", "provider_type", "task_id", "index", "count", "media", "model", "prompt",
    "input", "source_url", "key", "content_type", "bytes", "sha256", "task_created_at",
    "task_completed_at", "first_seen_at", "downloaded_at", "archived_at", "labels",
    "provider_response", "archiver_version", "width", "height", "duration_s", "embedded",  # the last four: /2
}
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")


def kie_world(fake: FakeApis) -> dict[str, FakeTask]:
    walk = ["queued", "running", "success"]
    tasks = [
        FakeTask("kie", "img-one", walk, [media_bytes("png", 70_000, "a")]),
        FakeTask("kie", "img-two", ["queued", "running", "running", "success"],
                 [media_bytes("jpg", 5_000, "b"), media_bytes("png", 123_457, "c")]),
        FakeTask("kie", "vid.one:1", walk, [media_bytes("mp4", 2_500_000, "d")], model="sora-2-text-to-video"),
        FakeTask("kie", "echoed-1", walk, [media_bytes("png", 1_000, "e")]),
        FakeTask("kie", "bad-prompt", ["queued", "fail"], fail_code="422",
                 fail_msg="Invalid prompt: prompt contains prohibited content"),
        FakeTask("kie", "gen-failed", ["running", "fail"], fail_code=501, fail_msg="Generation failed"),
    ]
    return {t.task_id: fake.add(t) for t in tasks}


async def test_inbox_to_local_disk(tmp_path: Path, state_backend: StateBackend) -> None:
    fake = FakeApis(API_KEY)
    world = kie_world(fake)
    async with serve(fake.app()) as base:
        fake.base = base
        config = write_config(tmp_path / "config.yaml", base_config(tmp_path, {
            "kie": {"type": "kie", "api_key": "${KIE_API_KEY}", "base_url": base,
                    "poll_intervals": ["0.2s"]},
        }, **state_backend.config()))
        env = dict(os.environ, KIE_API_KEY=API_KEY)
        daemon = DaemonProcess(config, env, tmp_path / "daemon.log")
        await daemon.start()
        try:
            # On PostgreSQL a command needs the schema `archiver run` creates: wait until status answers.
            await daemon.wait_for(lambda s: True)
            for task_id in ("img-one", "img-two", "bad-prompt"):
                code, _, err = await cli(config, "add", "kie", task_id, "--label", "project=poster", env=env)
                assert code == 0, err
            echo = f"echo 'kie vid.one:1 project=film' >> {tmp_path / 'inbox.txt'}"
            assert (await (await asyncio.create_subprocess_shell(echo)).wait()) == 0
            with open(tmp_path / "inbox.txt", "a") as f:
                f.write('{"provider": "kie", "task_id": "echoed-1", "labels": {"via": "json"}}\n'
                        "# a comment\n\nkie gen-failed\nkie img-one\nkie unknown-task\n")
            status = await daemon.wait_for(lambda s: s["counts"]["archived"] == 4 and s["counts"]["failed"] == 3)
        finally:
            assert await daemon.stop() == 0
    assert status["counts"] == {"queued": 0, "polling": 0, "downloading": 0, "archived": 4, "failed": 3}
    failures = {t["task_id"]: t for t in status["recent_failures"]}
    assert failures["bad-prompt"]["reason"] == "content_moderation"
    assert failures["bad-prompt"]["code"] == "422"
    assert failures["gen-failed"]["reason"] == "provider_failed"
    assert failures["gen-failed"]["code"] == "501"
    assert failures["unknown-task"]["reason"] == "not_found"

    archive = tmp_path / "archive"
    for task in world.values():
        for index, content in enumerate(task.files):
            check_asset(archive, task, index, content, base)
    assert fake.cdn_hits["img-one/0"] == 1, "a duplicate inbox line was archived twice"
    labels = json.loads(next((archive / "kie").rglob("vid.one:1/00.mp4.json")).read_text())["labels"]
    assert labels == {"project": "film"}

    for task_id in ("bad-prompt", "gen-failed", "unknown-task"):
        record = json.loads((archive / "_failed" / "kie" / f"{task_id}.json").read_text())
        assert record["reason"] == failures[task_id]["reason"]
    assert json.loads((archive / "_failed/kie/gen-failed.json").read_text())["provider_message"] == "Generation failed"

    log = (tmp_path / "daemon.log").read_text()
    assert API_KEY not in log
    assert "SIGNED-" not in log, "a signed URL's query string reached the log"
    assert not list((tmp_path / "state" / "staging").iterdir())


def check_asset(archive: Path, task: FakeTask, index: int, content: bytes, base: str) -> None:
    ext = {b"\x89P": "png", b"\xff\xd8": "jpg", b"\x00\x00": "mp4"}[content[:2]]
    [path] = list(archive.glob(f"kie/*/*/*/{task.task_id}/{index:02d}.{ext}"))
    key = path.relative_to(archive).as_posix()
    assert re.fullmatch(rf"kie/\d{{4}}/\d\d/\d\d/{re.escape(task.task_id)}/{index:02d}\.{ext}", key)
    assert path.read_bytes() == content
    sidecar: dict[str, Any] = json.loads(Path(f"{path}.json").read_text())
    assert set(sidecar) == SIDECAR_FIELDS
    assert sidecar["schema"] == "archiver.asset/2"
    assert (sidecar["provider"], sidecar["provider_type"], sidecar["task_id"]) == ("kie", "kie", task.task_id)
    assert (sidecar["index"], sidecar["count"]) == (index, len(task.files))
    assert sidecar["key"] == key
    assert sidecar["bytes"] == len(content)
    assert sidecar["sha256"] == hashlib.sha256(content).hexdigest()
    assert sidecar["media"] == ("video" if ext == "mp4" else "image")
    assert sidecar["content_type"] == {"png": "image/png", "jpg": "image/jpeg", "mp4": "video/mp4"}[ext]
    assert sidecar["model"] == task.model and sidecar["prompt"] == task.prompt
    assert sidecar["input"] == {"prompt": task.prompt}
    # Published archives hand out no signed links: the query stays in the state DB only.
    assert sidecar["source_url"] == f"{base}/cdn/{task.task_id}/{index}"
    assert "SIGNED-" not in json.dumps(sidecar), "a signed URL in the sidecar (resultJson's resultUrls?)"
    assert sidecar["provider_response"]["taskId"] == task.task_id
    assert isinstance(sidecar["provider_response"]["resultJson"], str)
    for stamp in ("task_created_at", "task_completed_at", "first_seen_at", "downloaded_at", "archived_at"):
        assert ISO.fullmatch(sidecar[stamp]), (stamp, sidecar[stamp])
    assert API_KEY not in json.dumps(sidecar)
