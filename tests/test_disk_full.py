"""ENOSPC on staging: downloads pause, nothing fails, status says why, polling goes on.

Staging sits on a real 2 MiB tmpfs, filled by the test and then emptied. Mounting needs
root (CI runs as root); elsewhere the test is skipped with the reason.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import DaemonProcess, base_config, write_config
from tests.support.fakes import FakeApis, FakeTask, media_bytes
from tests.support.servers import serve

API_KEY = "disk-SECRET"


@pytest.fixture
def tiny_staging(tmp_path: Path) -> Iterator[Path]:
    staging = tmp_path / "state" / "staging"
    staging.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(staging)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tiny tmpfs here: {mounted.stderr.strip()}")
    try:
        yield staging
    finally:
        subprocess.run(["umount", "-l", str(staging)], check=True)


async def test_disk_full_pauses_downloads_and_fails_nothing(tmp_path: Path, tiny_staging: Path) -> None:
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
        await daemon.wait_for(lambda s: True, timeout=15)
        # Written after start, and held open but unlinked: the space stays taken until the fd is
        # closed, whatever the daemon's staging sweep removes meanwhile.
        filler = os.open(tiny_staging / "filler", os.O_CREAT | os.O_WRONLY)
        os.write(filler, b"\0" * 1_800_000)
        os.unlink(tiny_staging / "filler")
        (tmp_path / "inbox.txt").write_text("kie waiting\nkie video\n")
        status = await daemon.wait_for(lambda s: s["health"].get("disk", {}).get("state") == "full", timeout=20)
        assert "No space left" in status["health"]["disk"]["message"]
        polls, hits = fake.tasks[("kie", "waiting")].polls, fake.cdn_hits.get("video/0", 0)
        # Past a pause and a retry: the download met the full disk again, and still nothing failed.
        await daemon.wait_for(lambda s: fake.cdn_hits.get("video/0", 0) > hits, timeout=20)
        status = await daemon.status()
        assert status["counts"]["failed"] == 0 and status["counts"]["downloading"] == 1
        assert status["health"]["disk"]["state"] == "full"
        assert fake.tasks[("kie", "waiting")].polls > polls, "polling stopped with the disk"

        os.close(filler)
        status = await daemon.wait_for(lambda s: s["counts"]["archived"] == 1, timeout=20)
        assert await daemon.stop() == 0
    assert status["health"]["disk"]["state"] == "ok"
    [stored] = list((tmp_path / "archive").rglob("video/00.mp4"))
    assert stored.read_bytes() == video.files[0]
