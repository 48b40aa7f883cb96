"""ENOSPC on staging: downloads pause, nothing fails, status says why, polling goes on.

The download's staging file is `state_dir/staging/{pk}-{idx}.part`. Before the task arrives
the test puts a symlink to /dev/full there, so the daemon's writes to it fail with a real
ENOSPC from the kernel, as on a full disk; removing the link frees the "disk". This needs no
privilege (a tiny tmpfs or loop device needs mount, which an unprivileged container lacks),
so it runs everywhere, CI included.
"""

from __future__ import annotations

import os
from pathlib import Path

from archiver.testing import FakeApis, FakeTask, media_bytes
from tests.support.daemon import DaemonProcess, base_config, write_config
from tests.support.servers import serve

API_KEY = "disk-SECRET"
DEV_FULL = Path("/dev/full")


async def test_disk_full_pauses_downloads_and_fails_nothing(tmp_path: Path) -> None:
    fake = FakeApis(API_KEY)
    video = fake.add(FakeTask("kie", "video", ["success"], [media_bytes("mp4", 1_500_000, "v")]))
    fake.add(FakeTask("kie", "waiting", ["running"]))
    async with serve(fake.app()) as base:
        fake.base = base
        # A full disk pauses every download for disk_full_pause, and the asset waits retry_after
        # (both 30 s by default): 1 s here, so the disk is tried again and again while full.
        config = write_config(tmp_path / "config.yaml", base_config(tmp_path, {
            "kie": {"type": "kie", "api_key": "${KIE_API_KEY}", "base_url": base, "poll_intervals": ["0.3s"]},
        }, download={"allow_addresses": ["127.0.0.0/8"], "disk_full_pause": "1s", "retry_after": "1s"}))
        daemon = DaemonProcess(config, dict(os.environ, KIE_API_KEY=API_KEY), tmp_path / "daemon.log")
        await daemon.start()
        await daemon.wait_running(timeout=15)
        # Made after the start's staging cleanup, which would remove it; the video is the first task (pk 1).
        staged = tmp_path / "state" / "staging" / "1-0.part"
        staged.symlink_to(DEV_FULL)
        (tmp_path / "inbox.txt").write_text("kie video\nkie waiting\n")
        status = await daemon.wait_for(lambda s: s["health"].get("disk", {}).get("state") == "full", timeout=20)
        assert "No space left" in status["health"]["disk"]["message"]
        polls, hits = fake.tasks[("kie", "waiting")].polls, fake.cdn_hits.get("video/0", 0)
        # Past a pause and a retry: the download met the full disk again, and still nothing failed.
        await daemon.wait_for(lambda s: fake.cdn_hits.get("video/0", 0) > hits, timeout=20)
        status = await daemon.status()
        assert status["counts"]["failed"] == 0 and status["counts"]["downloading"] == 1
        assert status["health"]["disk"]["state"] == "full"
        assert fake.tasks[("kie", "waiting")].polls > polls, "polling stopped with the disk"

        assert staged.is_symlink(), "the daemon removed the full file: the pause below proves nothing"
        staged.unlink()
        status = await daemon.wait_for(lambda s: s["counts"]["archived"] == 1, timeout=20)
        assert await daemon.stop() == 0
    assert status["health"]["disk"]["state"] == "ok"
    [stored] = list((tmp_path / "archive").rglob("video/00.mp4"))
    assert stored.read_bytes() == video.files[0]
