"""End to end, on SQLite and PostgreSQL: the real daemon keeps the browse index current; the index
survives losing the state DB (`index --from-store`); `verify` names a corrupted file and `--fix` gets
it archived again."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

from archiver.testing import FakeApis, FakeTask, media_bytes
from tests.support.daemon import DaemonProcess, base_config, cli, write_config
from tests.support.postgres import StateBackend
from tests.support.servers import serve

API_KEY = "kie-SECRET-0b5e7c"


def world(fake: FakeApis) -> None:
    walk = ["queued", "running", "success"]
    fake.add(FakeTask("kie", "poster-1", walk, [media_bytes("png", 4000, "p1"), media_bytes("jpg", 3000, "p2")],
                      prompt="a poster for a jazz night"))
    fake.add(FakeTask("kie", "clip-1", walk, [media_bytes("mp4", 20_000, "c1")], model="sora-2-text-to-video",
                      prompt="waves on a rocky shore"))
    fake.add(FakeTask("kie", "refused", ["queued", "fail"], fail_code="422",
                      fail_msg="prompt contains prohibited content"))


def day_files(archive: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((archive / "_index/days").iterdir())}


async def test_index_verify_and_rebuild(tmp_path: Path, state_backend: StateBackend) -> None:
    fake = FakeApis(API_KEY)
    world(fake)
    archive = tmp_path / "archive"
    async with serve(fake.app()) as base:
        fake.base = base
        config = write_config(tmp_path / "config.yaml", base_config(tmp_path, {
            "kie": {"type": "kie", "api_key": "${KIE_API_KEY}", "base_url": base, "poll_intervals": ["0.2s"]},
        }, index={"every": "0.3s"}, **state_backend.config()))
        env = dict(os.environ, KIE_API_KEY=API_KEY)
        (tmp_path / "inbox.txt").write_text("kie poster-1 project=poster\nkie clip-1\nkie refused\n")
        daemon = DaemonProcess(config, env, tmp_path / "daemon.log")
        await daemon.start()
        try:
            await daemon.wait_for(lambda s: s["counts"]["archived"] == 2 and s["counts"]["failed"] == 1)
            await daemon.wait_for(lambda s: (archive / "_index/days.json").exists() and sum(
                d["assets"] + d["failed"] for d in json.loads((archive / "_index/days.json").read_text())["days"]) == 4)
        finally:
            assert await daemon.stop() == 0

        # The daemon's index: the page, days.json and one day file with every asset and the failure.
        assert (archive / "index.html").read_bytes().startswith(b"<!doctype html>")
        days = json.loads((archive / "_index/days.json").read_text())
        [today] = days["days"]
        assert (today["tasks"], today["assets"], today["failed"]) == (2, 3, 1)
        written = day_files(archive)
        doc = json.loads(written[f"{today['date']}.json"])
        assert sorted(a["task_id"] for a in doc["assets"]) == ["clip-1", "poster-1", "poster-1"]
        assert [(f["task_id"], f["reason"]) for f in doc["failed"]] == [("refused", "content_moderation")]

        # The state DB is lost: the index comes back from the sidecars alone, byte for byte.
        shutil.copytree(tmp_path / "state", tmp_path / "state.saved")
        shutil.rmtree(tmp_path / "state")
        shutil.rmtree(archive / "_index")
        code, out, err = await cli(config, "index", "--from-store", env=env)
        assert code == 0, err
        assert out.strip() == out.strip().splitlines()[-1]  # one summary line (no progress off a TTY)
        assert out.startswith("index: 1 day, 3 assets, 1 failed task written from the store's sidecars in ")
        assert day_files(archive) == written
        again = json.loads((archive / "_index/days.json").read_text())
        assert again["days"] == days["days"] and again["generated_at"] >= days["generated_at"]
        assert not (tmp_path / "state").exists()  # the rebuild needed no state at all
        shutil.move(tmp_path / "state.saved", tmp_path / "state")

        # From the state DB again: the same bytes. On PostgreSQL no SQLite file is asked for.
        assert (tmp_path / "state/archiver.db").exists() == (state_backend.name == "sqlite")
        code, out, err = await cli(config, "index", "--rebuild", env=env)
        assert code == 0, err
        assert out.startswith("index: 1 day, 3 assets, 1 failed task written from the state DB in ")
        assert day_files(archive) == written

        # A corrupted file is named by verify; --fix has the daemon archive it again.
        video = next(a["key"] for a in doc["assets"] if a["task_id"] == "clip-1")
        content = (archive / video).read_bytes()
        (archive / video).write_bytes(content[:100] + b"X" + content[101:])
        code, out, _ = await cli(config, "verify", env=env)
        assert code == 1
        assert f"changed       {video} (kie clip-1): sha256 " in out
        assert out.strip().splitlines()[-1].startswith("checked 3 assets (") and out.strip().endswith(": 1 problem")
        code, out, _ = await cli(config, "verify", "--fix", env=env)
        assert code == 1 and "queued again" in out
        hits = fake.cdn_hits["clip-1/0"]
        daemon = DaemonProcess(config, env, tmp_path / "daemon2.log", "--burst")
        await daemon.start()
        assert daemon.proc is not None
        assert await asyncio.wait_for(daemon.proc.wait(), 60) == 0  # burst: returns once nothing is left
        assert fake.cdn_hits["clip-1/0"] == hits + 1
        assert (archive / video).read_bytes() == content
        code, out, err = await cli(config, "verify", "--deep", env=env)
        assert code == 0, out + err
        assert out.strip().endswith("checked 3 assets (26.4 KiB): no problems")


async def test_verify_fix_rewrites_a_changed_s3_object_that_kept_our_metadata(
        tmp_path: Path, moto_server: str, s3_client: Any, s3_bucket: str) -> None:
    """S3's own checksum, not the sha256 we wrote beside the object, decides whether it is ours."""
    fake = FakeApis(API_KEY)
    original = media_bytes("png", 5000, "s3-fix")
    fake.add(FakeTask("kie", "s3-fix", ["success"], [original]))
    async with serve(fake.app()) as base:
        fake.base = base
        config = write_config(tmp_path / "config.yaml", base_config(tmp_path, {
            "kie": {"type": "kie", "api_key": "${KIE_API_KEY}", "base_url": base, "poll_intervals": ["0.2s"]},
        }, storage={"backend": "s3", "s3": {"bucket": s3_bucket, "endpoint_url": moto_server}},
            index={"enabled": False}))
        env = dict(os.environ, KIE_API_KEY=API_KEY)
        (tmp_path / "inbox.txt").write_text("kie s3-fix\n")

        async def burst(log: str) -> None:
            daemon = DaemonProcess(config, env, tmp_path / log, "--burst")
            await daemon.start()
            assert daemon.proc is not None
            assert await asyncio.wait_for(daemon.proc.wait(), 60) == 0

        await burst("daemon.log")
        [key] = [o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket)["Contents"]
                 if not o["Key"].endswith(".json") and not o["Key"].startswith("_index/")]
        head = s3_client.head_object(Bucket=s3_bucket, Key=key)
        s3_client.put_object(Bucket=s3_bucket, Key=key, Body=original[:-1] + b"X", Metadata=head["Metadata"],
                             ContentType=head["ContentType"], ChecksumAlgorithm="SHA256")
        code, out, _ = await cli(config, "verify", env=env)
        assert code == 1 and key in out
        code, out, _ = await cli(config, "verify", "--fix", env=env)
        assert code == 1 and "queued again" in out
        await burst("daemon2.log")
        assert s3_client.get_object(Bucket=s3_bucket, Key=key)["Body"].read() == original
        code, out, err = await cli(config, "verify", env=env)
        assert code == 0, out + err
