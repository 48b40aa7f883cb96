"""End to end over kie's product APIs, Replicate and fal: a mixed inbox archives byte-exact,
every failure word ends with its reason, an expired kie URL is refreshed, a Replicate output
is saved before it is deleted, and a data: output is archived from its bytes."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

from archiver.testing import FakeApis, FakeTask, media_bytes
from archiver.testing.media import DATA_PNG
from tests.support.daemon import DaemonProcess, base_config, write_config
from tests.support.servers import serve

API_KEY = "shared-SECRET-13ab"
KIE_APIS = ("veo", "4o-image", "flux-kontext", "mj", "suno", "runway", "luma")


def config_for(tmp_path: Path, base: str) -> Path:
    fast = {"base_url": base, "api_key": "${TEST_API_KEY}", "poll_intervals": ["0.5s"]}
    providers: dict[str, Any] = {f"kie-{api}": {"type": "kie", "api": api, **fast} for api in KIE_APIS}
    providers["rep"] = {"type": "replicate", **fast}
    providers["fal-flux"] = {"type": "fal", "app": "fal-ai/flux/dev", **fast}
    providers["fal-kling"] = {"type": "fal", "app": "fal-ai/kling-video/v2/master/text-to-video", **fast}
    return write_config(tmp_path / "config.yaml", base_config(tmp_path, providers))


async def run_world(tmp_path: Path, fake: FakeApis, world: dict[str, FakeTask], done: int,
                    timeout: float = 60) -> dict[str, Any]:
    """Serve the fakes, run the daemon on `world` (inbox line → task) until `done` tasks ended."""
    async with serve(fake.app()) as base:
        fake.base = base
        for task in world.values():
            if task.expired:  # stable URLs: asking kie again must not look like a fresh one
                task.urls = [f"{base}/cdn/{task.task_id}/{i}?sig=SIGNED-{i}" for i in range(len(task.files))]
        (tmp_path / "inbox.txt").write_text("".join(f"{line}\n" for line in world))
        daemon = DaemonProcess(config_for(tmp_path, base), dict(os.environ, TEST_API_KEY=API_KEY),
                               tmp_path / "daemon.log")
        await daemon.start()
        status = await daemon.wait_for(
            lambda s: s["counts"]["archived"] + s["counts"]["failed"] >= done, timeout=timeout)
        assert await daemon.stop() == 0
    assert API_KEY not in (tmp_path / "daemon.log").read_text()
    return status


def archived(archive: Path, entry: str, task: FakeTask) -> list[dict[str, Any]]:
    """Each file of `task` is in the archive byte for byte; return the sidecars in index order."""
    sidecars = []
    for index, content in enumerate(task.files):
        [path] = [p for p in archive.glob(f"{entry}/*/*/*/{task.task_id}/{index:02d}.*") if p.suffix != ".json"]
        assert path.read_bytes() == content, path
        sidecar = json.loads(Path(f"{path}.json").read_text())
        assert sidecar["schema"] == "archiver.asset/2" and sidecar["count"] == len(task.files), sidecar
        sidecars.append(sidecar)
    return sidecars


def png(seed: str, n: int = 1) -> list[bytes]:
    return [media_bytes("png", 3_000 + i, f"{seed}/{i}") for i in range(n)]


async def test_mixed_inbox_of_every_new_type_archives_byte_exact(tmp_path: Path) -> None:
    fake = FakeApis(API_KEY)
    mp4 = media_bytes("mp4", 50_000, "veo")
    world = {
        "kie-veo veo-1": FakeTask("kie", "veo-1", ["queued", "running", "success"], [mp4], where="veo"),
        "kie-4o-image 4o-1": FakeTask("kie", "4o-1", ["running", "success"], png("4o", 4), where="4o-image"),
        "kie-flux-kontext flux-1": FakeTask("kie", "flux-1", ["success"], png("flux"), where="flux-kontext"),
        "kie-mj mj-1": FakeTask("kie", "mj-1", ["running", "success"], png("mj", 4), where="mj"),
        # FIRST_SUCCESS polls in between: stopping there would lose the second track.
        "kie-suno suno-1": FakeTask("kie", "suno-1", ["queued", "running", "partial", "partial", "success"],
                                    [media_bytes("mp3", 20_000, "t1"), media_bytes("jpg", 2_000, "c1"),
                                     media_bytes("mp3", 21_000, "t2"), media_bytes("jpg", 2_100, "c2")],
                                    where="suno"),
        "kie-runway run-1": FakeTask("kie", "run-1", ["queued", "running", "partial", "success"],
                                     [media_bytes("mp4", 30_000, "rw"), media_bytes("png", 1_000, "th")],
                                     where="runway"),
        "kie-luma luma-1": FakeTask("kie", "luma-1", ["running", "success"], [media_bytes("mp4", 9_000, "l1")],
                                    where="luma"),
        "kie-luma luma-4": FakeTask("kie", "luma-4", ["running", "success"], [media_bytes("mp4", 9_100, "l4")],
                                    where="luma", fail_code=4),
        "rep replist01": FakeTask("replicate", "replist01", ["queued", "running", "partial", "success"],
                                  png("rl", 2), where="list"),
        "rep repstring01": FakeTask("replicate", "repstring01", ["running", "success"],
                                    [media_bytes("mp4", 40_000, "rs")], where="string"),
        "rep repdict01": FakeTask("replicate", "repdict01", ["running", "success"],
                                  [media_bytes("mp4", 20_000, "rd"), media_bytes("wav", 8_000, "ra")], where="dict"),
        "rep repdata01": FakeTask("replicate", "repdata01", ["running", "success"], [DATA_PNG], where="data"),
        "fal-flux 0f8c1e2a-1111-4c1d-9a55-000000000001": FakeTask(
            "fal", "0f8c1e2a-1111-4c1d-9a55-000000000001", ["queued", "running", "success"], png("fal", 2),
            where="fal-ai/flux"),
        "fal-kling 0f8c1e2a-2222-4c1d-9a55-000000000002": FakeTask(
            "fal", "0f8c1e2a-2222-4c1d-9a55-000000000002", ["running", "success"], [media_bytes("mp4", 30_000, "fk")],
            where="fal-ai/kling-video"),
    }
    for task in world.values():
        fake.add(task)
    status = await run_world(tmp_path, fake, world, len(world))
    assert status["counts"]["archived"] == len(world), status
    archive = tmp_path / "archive"
    sidecars = {line: archived(archive, line.split()[0], task) for line, task in world.items()}

    suno = sidecars["kie-suno suno-1"]
    assert [(s["media"], s["role"]) for s in suno] == [("audio", "result"), ("image", "cover")] * 2
    assert world["kie-suno suno-1"].polls >= 5, "stopped before SUCCESS"
    assert [s["role"] for s in sidecars["kie-runway run-1"]] == ["result", "thumbnail"]
    assert [(s["media"], s["role"]) for s in sidecars["rep repdict01"]] == [("video", "video"), ("audio", "audio")]
    assert sidecars["kie-veo veo-1"][0]["task_created_at"] == "2026-01-05T10:25:00.000"  # zone not stated
    assert "role" not in sidecars["rep replist01"][0]
    # Luma's originUrls (the input video) and Flux's originImageUrl are not outputs.
    assert not [hit for hit in fake.cdn_hits if hit.startswith("input/")]

    [inline] = sidecars["rep repdata01"]
    assert inline["source_url"] == "data:image/png;base64,… (86 B, elided)" and inline["content_type"] == "image/png"
    payload = base64.b64encode(DATA_PNG).decode()
    assert "repdata01/0" not in fake.cdn_hits and payload not in json.dumps(inline)
    assert inline["provider_response"]["output"][0].startswith("data:image/png;base64,… (")


FAILURES: list[tuple[str, FakeTask, str]] = [
    ("kie-veo", FakeTask("kie", "veo-f1", ["running", "fail"], where="veo", fail_code=3,
                         fail_msg="Your prompt was flagged by Website as violating content policies."),
     "content_moderation"),
    ("kie-veo", FakeTask("kie", "veo-f2", ["fail"], where="veo", fail_code=2, fail_msg="Internal Error - Timeout"),
     "provider_failed"),
    ("kie-4o-image", FakeTask("kie", "4o-f1", ["fail"], where="4o-image", fail_msg="Image size exceeds 25MB"),
     "invalid_parameters"),
    ("kie-flux-kontext", FakeTask("kie", "flux-f1", ["fail"], where="flux-kontext", fail_code=3,
                                  fail_msg="Generation failed"), "provider_failed"),
    ("kie-mj", FakeTask("kie", "mj-f1", ["fail"], where="mj", fail_code=2, fail_msg="Banned prompt: inappropriate"),
     "content_moderation"),
    ("kie-suno", FakeTask("kie", "suno-f1", ["running", "fail"], where="suno", fail_code="SENSITIVE_WORD_ERROR",
                          fail_msg="Contains sensitive words"), "content_moderation"),
    ("kie-suno", FakeTask("kie", "suno-f2", ["fail"], where="suno", fail_code="GENERATE_AUDIO_FAILED",
                          fail_msg="generation failed"), "provider_failed"),
    ("kie-suno", FakeTask("kie", "suno-f3", ["fail"], where="suno", fail_code="CREATE_TASK_FAILED"),
     "provider_failed"),
    ("kie-runway", FakeTask("kie", "run-f1", ["fail"], where="runway", fail_code=400,
                            fail_msg="Inappropriate content detected."), "content_moderation"),
    ("kie-runway", FakeTask("kie", "run-f2", ["fail"], where="runway", fail_code="",
                            fail_msg="Unsupported width or height."), "invalid_parameters"),
    ("kie-luma", FakeTask("kie", "luma-f1", ["fail"], where="luma", fail_code=3, fail_msg="Generation failed"),
     "provider_failed"),
    ("kie-luma", FakeTask("kie", "luma-f2", ["fail"], where="luma", fail_code=2, fail_msg="Unsafe image detected"),
     "content_moderation"),
    ("rep", FakeTask("replicate", "repfail01", ["running", "fail"], where="list", fail_code="failed",
                     fail_msg="The input or output was flagged as sensitive. (E005)"), "content_moderation"),
    ("rep", FakeTask("replicate", "repfail02", ["fail"], where="list", fail_code="failed",
                     fail_msg="Input validation error: prompt is required"), "invalid_parameters"),
    ("rep", FakeTask("replicate", "repfail03", ["fail"], where="list", fail_code="failed",
                     fail_msg="Timed out starting prediction (E6716)"), "provider_failed"),
    ("rep", FakeTask("replicate", "repcancel1", ["running", "fail"], where="list", fail_code="canceled"),
     "cancelled"),
    ("rep", FakeTask("replicate", "repabort01", ["fail"], where="list", fail_code="aborted"), "cancelled"),
    ("rep", FakeTask("replicate", "repgone001", ["removed"], where="list"), "url_expired"),
    ("rep", FakeTask("replicate", "repunknown", ["running"], where="nowhere"), "not_found"),
    ("fal-flux", FakeTask("fal", "0f8c1e2a-3333-4c1d-9a55-000000000003", ["running", "fail"], where="fal-ai/flux",
                          fail_code=422, fail_msg="flagged by a content checker"), "content_moderation"),
    ("fal-flux", FakeTask("fal", "0f8c1e2a-4444-4c1d-9a55-000000000004", ["fail"], where="fal-ai/flux",
                          fail_code=504, fail_msg="Request timed out"), "provider_failed"),
    ("fal-flux", FakeTask("fal", "0f8c1e2a-5555-4c1d-9a55-000000000005", ["fail"], where="fal-ai/flux",
                          fail_code=499, fail_msg="Client cancelled"), "cancelled"),
    ("fal-kling", FakeTask("fal", "0f8c1e2a-6666-4c1d-9a55-000000000006", ["running"], where="fal-ai/other"),
     "not_found"),
]


async def test_each_failure_word_ends_with_its_reason(tmp_path: Path) -> None:
    fake = FakeApis(API_KEY)
    world = {}
    for entry, task, _ in FAILURES:
        world[f"{entry} {task.task_id}"] = task
        if task.where != "nowhere" and task.where != "fal-ai/other":  # unknown to the provider
            fake.add(task)
    await run_world(tmp_path, fake, world, len(world))
    for entry, task, reason in FAILURES:
        record = json.loads((tmp_path / "archive" / "_failed" / entry / f"{task.task_id}.json").read_text())
        assert record["reason"] == reason, (entry, task.task_id, record)
        assert record["provider_response"] is not None or reason == "not_found"
    gone = json.loads((tmp_path / "archive" / "_failed" / "rep" / "repgone001.json").read_text())
    assert gone["provider_response"]["data_removed"] is True  # the record is kept


async def test_an_expired_kie_url_is_refreshed_and_archived(tmp_path: Path) -> None:
    fake = FakeApis(API_KEY)
    world = {
        "kie-veo veo-old": FakeTask("kie", "veo-old", ["success"], [media_bytes("mp4", 30_000, "old")],
                                    where="veo", expired=True),
        "kie-4o-image 4o-old": FakeTask("kie", "4o-old", ["success"], png("4o-old", 2), where="4o-image",
                                        expired=True),
    }
    for task in world.values():
        fake.add(task)
    status = await run_world(tmp_path, fake, world, len(world))
    assert status["counts"]["archived"] == 2, status
    for line, task in world.items():
        for index, sidecar in enumerate(archived(tmp_path / "archive", line.split()[0], task)):
            assert sidecar["source_url"].endswith(f"/cdn/{task.task_id}/{index}")  # the query is not kept
            assert sidecar["key"].startswith(f"{line.split()[0]}/")
    asked = [r for r in fake.requests_for("kie:download-url")]
    assert {r.path for r in asked} == {"/api/v1/common/download-url", "/api/v1/gpt4o-image/download-url"}
    four_o = [r.body for r in asked if r.path.startswith("/api/v1/gpt4o-image/")]
    assert four_o and all(b["taskId"] == "4o-old" and "/cdn/4o-old/" in b["url"] for b in four_o)
    log = (tmp_path / "daemon.log").read_text()
    assert "fresh link" in log and "X-Amz-Signature" not in log and "FRESH-" not in log


async def test_a_replicate_output_deleted_soon_after_success_is_archived(tmp_path: Path) -> None:
    # Replicate deletes API outputs about an hour after success; the issue asks for 60 s. The
    # fake deletes after DELETE_AFTER = 3 s, twenty times less, with polls every 0.5 s: a
    # download that started "at once" begins well within it, one queued behind polling would not.
    delete_after = 3.0
    fake = FakeApis(API_KEY)
    world = {f"rep repgone{n:03d}x": FakeTask("replicate", f"repgone{n:03d}x", ["running", "success"],
                                                [media_bytes("mp4", 200_000, f"g{n}")], where="string",
                                                delete_after=delete_after)
             for n in range(4)}
    for task in world.values():
        fake.add(task)
    status = await run_world(tmp_path, fake, world, len(world))
    assert status["counts"]["archived"] == len(world), status
    for line, task in world.items():
        archived(tmp_path / "archive", "rep", task)
        assert task.succeeded_at is not None
        started = fake.cdn_first[f"{task.task_id}/0"] - task.succeeded_at
        assert 0 <= started < delete_after / 2, f"{line}: download began {started:.2f}s after success"
