"""End to end: the real daemon makes thumbnails and poster frames as it archives (local disk and S3 on
moto); a corrupt image is archived all the same, without one, and the log says why. Its thumbnail process
can die and the daemon goes on; it leaves none behind. `archiver index --thumbnails` backfills an archive made
without them; `verify` reports `no_thumbnail` and `--fix` makes it."""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import signal
import struct
import termios
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageStat

from archiver.archive_format.keys import thumb_key
from archiver.testing import FakeApis, FakeTask
from tests.browse.conftest import make_world
from tests.support.daemon import DaemonProcess, base_config, cli, write_config
from tests.support.servers import serve
from tests.support.media import noisy_png, video
from tests.support.procs import thumbnail_child, until_gone

API_KEY = "kie-SECRET-51c0de"
WALK = ["queued", "running", "success"]


def s3_of(request: pytest.FixtureRequest) -> dict[str, Any]:
    return {"bucket": request.getfixturevalue("s3_bucket"), "prefix": "ai/", "region": "us-east-1",
            "endpoint_url": request.getfixturevalue("moto_server")}


def reader(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    """get(key) → bytes or None, and keys(), straight from the store (behind archiver's back)."""
    if backend == "local":
        root = tmp_path / "archive"
        return (lambda key: (root / key).read_bytes() if (root / key).exists() else None,
                lambda: [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()])
    client, bucket = request.getfixturevalue("s3_client"), request.getfixturevalue("s3_bucket")

    def get(key: str) -> bytes | None:
        try:
            return client.get_object(Bucket=bucket, Key="ai/" + key)["Body"].read()
        except client.exceptions.NoSuchKey:
            return None

    def keys() -> list[str]:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="ai/")
        return [o["Key"][3:] for page in pages for o in page.get("Contents", [])]
    return get, keys


@pytest.mark.parametrize("backend", ["local", "s3"])
async def test_the_daemon_makes_thumbnails_and_posters(tmp_path: Path, backend: str,
                                                       request: pytest.FixtureRequest) -> None:
    picture = noisy_png(900, 600, text={"parameters": "a lighthouse at dusk\nSteps: 20"})
    broken = noisy_png(400, 400)[:1500]  # sniffs as PNG; its pixels are cut off
    clip = video(tmp_path / "clip.mp4", frames=24, black=6).read_bytes()
    fake = FakeApis(API_KEY)
    fake.add(FakeTask("kie", "pic-1", WALK, [picture], prompt="a lighthouse"))
    fake.add(FakeTask("kie", "broken-1", WALK, [broken], prompt="broken"))
    fake.add(FakeTask("kie", "clip-1", WALK, [clip], model="sora-2-text-to-video", prompt="orange"))
    storage = {"backend": backend, "local": {"root": str(tmp_path / "archive")}}
    if backend == "s3":
        storage["s3"] = s3_of(request)
    async with serve(fake.app()) as base:
        fake.base = base
        config = write_config(tmp_path / "config.yaml", base_config(tmp_path, {
            "kie": {"type": "kie", "api_key": "${KIE_API_KEY}", "base_url": base, "poll_intervals": ["0.2s"]},
        }, storage=storage, index={"enabled": False}, thumbnails={"size": 256}))
        env = dict(os.environ, KIE_API_KEY=API_KEY)
        (tmp_path / "inbox.txt").write_text("kie pic-1\nkie broken-1\nkie clip-1\n")
        code, _, err = await cli(config, "run", "--burst", env=env)
    assert code == 0, err
    get, keys = reader(backend, tmp_path, request)
    assets = {json.loads(get(k))["task_id"]: k.removesuffix(".json") for k in keys()
              if k.endswith(".json") and not k.startswith("_")}
    assert set(assets) == {"pic-1", "broken-1", "clip-1"}  # the corrupt image is archived all the same
    with Image.open(io.BytesIO(get(thumb_key(assets["pic-1"])))) as im:
        assert (im.format, im.size) == ("WEBP", (256, 171))
    with Image.open(io.BytesIO(get(thumb_key(assets["clip-1"])))) as im:
        assert ImageStat.Stat(im.convert("L")).mean[0] > 60  # the first frame that is not black
    assert get(thumb_key(assets["broken-1"])) is None
    assert f"{assets['broken-1']}: no thumbnail: the file cannot be read as image" in err
    assert get(assets["pic-1"]) == picture and get(assets["broken-1"]) == broken  # never changed
    sidecar = json.loads(get(assets["pic-1"] + ".json"))
    assert sidecar["schema"] == "archiver.asset/2" and (sidecar["width"], sidecar["height"]) == (900, 600)
    assert sidecar["embedded"]["text"]["parameters"] == "a lighthouse at dusk\nSteps: 20"
    movie = json.loads(get(assets["clip-1"] + ".json"))
    assert (movie["width"], movie["height"]) == (320, 240) and 1.5 < movie["duration_s"] < 2.5
    assert not (tmp_path / "state/staging/thumbs").exists()  # every link handed over was removed, then its folder

    # The day file, from the state DB: thumb, size and placeholder of each.
    code, _, err = await cli(config, "index", env=env)
    assert code == 0, err
    [day] = [k for k in keys() if k.startswith("_index/days/")]
    entries = {a["task_id"]: a for a in json.loads(get(day))["assets"]}
    pic = entries["pic-1"]
    assert (pic["thumb"], pic["width"], pic["height"]) == (thumb_key(assets["pic-1"]), 900, 600)
    assert pic["placeholder"].startswith("#") and len(pic["placeholder"]) == 7
    assert entries["broken-1"]["thumb"] is None and entries["clip-1"]["thumb"] == thumb_key(assets["clip-1"])


@pytest.mark.parametrize("backend", ["local", "s3"])
async def test_backfill_and_verify_on_an_archive_made_without_thumbnails(tmp_path: Path, backend: str,
                                                                         request: pytest.FixtureRequest) -> None:
    world = await make_world(tmp_path, backend, s3_of(request) if backend == "s3" else None, tasks=12,
                             video=video(tmp_path / "v.mp4").read_bytes(), audio=True)
    await world.storage.close()
    get, keys = reader(backend, tmp_path, request)
    pictures = [a["key"] for a in world.made.assets if a["media"] in ("image", "video")]
    assert pictures and not [k for k in keys() if k.startswith("_thumbs/")]

    code, out, _ = await cli(world.config_path, "verify", "--json")
    assert code == 0  # a missing thumbnail alone is no damage
    doc = json.loads(out)
    assert doc["ok"] and doc["problems"] == []
    assert sorted(p["key"] for p in doc["no_thumbnail"]) == sorted(pictures)
    assert {p["kind"] for p in doc["no_thumbnail"]} == {"no_thumbnail"}

    code, out, err = await cli(world.config_path, "index", "--thumbnails")
    assert code == 0, err
    assert out.startswith(f"index: {len(pictures)} thumbnails made, 0 already there; day files written again in ")
    # Recorded in the state DB with each thumbnail, so the day files rewritten from it name them.
    entries = [a for k in keys() if k.startswith("_index/days/") for a in json.loads(get(k))["assets"]]
    thumbed = {a["key"]: a for a in entries if a["thumb"]}
    assert set(thumbed) == set(pictures)
    assert all(a["thumb"] == thumb_key(k) and a["placeholder"].startswith("#") and a["width"]
               for k, a in thumbed.items())
    assert " in " in out and out.strip() == out.strip().splitlines()[-1]  # one summary line, no progress off a TTY
    for key in pictures:
        with Image.open(io.BytesIO(get(thumb_key(key)))) as im:
            assert im.format == "WEBP" and max(im.size) <= 400
    code, out, _ = await cli(world.config_path, "index", "--thumbnails")
    assert out.startswith(f"index: 0 thumbnails made, {len(pictures)} already there")

    # verify --fix makes a lost one again.
    lost = pictures[0]
    if backend == "local":
        (tmp_path / "archive" / thumb_key(lost)).unlink()
    else:
        request.getfixturevalue("s3_client").delete_object(Bucket=request.getfixturevalue("s3_bucket"),
                                                           Key="ai/" + thumb_key(lost))
    code, out, _ = await cli(world.config_path, "verify", "--fix")
    assert code == 0
    assert f"no_thumbnail  {lost}" in out and "fix: thumbnail made again" in out
    assert out.strip().endswith("no problems")
    assert get(thumb_key(lost)) is not None
    code, out, _ = await cli(world.config_path, "verify", "--json")
    assert json.loads(out)["no_thumbnail"] == []


async def test_verify_deep_names_a_damaged_thumbnail(tmp_path: Path) -> None:
    world = await make_world(tmp_path, "local", tasks=6)
    await world.storage.close()
    code, _, err = await cli(world.config_path, "index", "--thumbnails")
    assert code == 0, err
    key = next(a["key"] for a in world.made.assets if a["media"] == "image")
    path = tmp_path / "archive" / thumb_key(key)
    path.write_bytes(path.read_bytes()[:40])  # still RIFF…WEBP, its image cut off
    code, out, _ = await cli(world.config_path, "verify")
    assert code == 0 and "no_thumbnail" not in out  # plain verify looks at the listing only
    code, out, _ = await cli(world.config_path, "verify", "--deep", "--fix")
    assert code == 0
    assert f"no_thumbnail  {key}" in out and "its thumbnail cannot be read" in out and "thumbnail made again" in out
    with Image.open(path) as im:
        im.load()


DIED = ": no thumbnail: the thumbnail process died of SIGKILL; `archiver index --thumbnails` makes it"


def waiting_in_pipe(pid: int) -> int:
    """Bytes written to the process's stdin that it has not read yet."""
    fd = os.open(f"/proc/{pid}/fd/0", os.O_RDONLY | os.O_NONBLOCK)
    try:
        return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]
    finally:
        os.close(fd)


@contextlib.asynccontextmanager
async def thumbnailing(tmp_path: Path, pictures: int) -> AsyncIterator[DaemonProcess]:
    """The daemon, running, with `pictures` tasks at the fake kie (pic-0, pic-1…) and none in its inbox yet."""
    fake = FakeApis(API_KEY)
    for n in range(pictures):
        fake.add(FakeTask("kie", f"pic-{n}", WALK, [noisy_png(500, 400 + n)], prompt=f"picture {n}"))
    (tmp_path / "inbox.txt").write_text("")
    async with serve(fake.app()) as base:
        fake.base = base
        config = write_config(tmp_path / "config.yaml", base_config(tmp_path, {
            "kie": {"type": "kie", "api_key": "${KIE_API_KEY}", "base_url": base, "poll_intervals": ["0.2s"]},
        }, index={"enabled": False}))
        daemon = DaemonProcess(config, dict(os.environ, KIE_API_KEY=API_KEY), tmp_path / "daemon.log")
        await daemon.start()
        try:
            yield daemon
        finally:
            if daemon.proc is not None and daemon.proc.returncode is None:  # the test failed before its stop
                await daemon.stop(signal.SIGKILL)


def made(tmp_path: Path) -> int:
    return len(list((tmp_path / "archive/_thumbs").rglob("*.webp")))


async def thumbnails_then_child(daemon: DaemonProcess, tmp_path: Path, task: str, thumbnails: int) -> int:
    """Put `task` in the inbox; once there are `thumbnails`, the pid of the daemon's thumbnail process."""
    with (tmp_path / "inbox.txt").open("a") as f:
        f.write(f"kie {task}\n")
    await daemon.wait_for(lambda s: made(tmp_path) == thumbnails)
    assert daemon.proc is not None
    child = thumbnail_child(daemon.proc.pid)
    assert child is not None and child != daemon.proc.pid
    return child


async def test_the_daemon_outlives_its_thumbnail_process(tmp_path: Path) -> None:
    """SIGKILL the thumbnail process between two thumbnails, then with one in hand: each death is logged, every
    task archived, the next thumbnail made by a new child. After a kill -9 of the daemon, its child exits."""
    async with thumbnailing(tmp_path, 4) as daemon:
        first = await thumbnails_then_child(daemon, tmp_path, "pic-0", 1)
        os.kill(first, signal.SIGKILL)  # idle: the next thumbnail finds it dead
        second = await thumbnails_then_child(daemon, tmp_path, "pic-1", 2)
        assert second != first
        os.kill(second, signal.SIGSTOP)  # frozen, so that the next job waits in its pipe
        with (tmp_path / "inbox.txt").open("a") as f:
            f.write("kie pic-2\n")
        await daemon.wait_for(lambda s: waiting_in_pipe(second) > 0)
        os.kill(second, signal.SIGKILL)  # with a thumbnail in hand
        await daemon.wait_for(lambda s: s["counts"]["archived"] == 3 and DIED in daemon.log.read_text())
        third = await thumbnails_then_child(daemon, tmp_path, "pic-3", 3)
        assert third not in (first, second)
        await daemon.wait_for(lambda s: s["counts"]["archived"] == 4)
        assert await daemon.stop(signal.SIGKILL) == -signal.SIGKILL
    assert await until_gone(third, 10)  # its stdin ended with the daemon
    text = daemon.log.read_text()
    assert "the thumbnail process died of SIGKILL, between two thumbnails; starting another" in text
    assert text.count(DIED) == 1 and text.count("thumbnail process died") == 2


async def test_a_stop_ends_the_thumbnail_process(tmp_path: Path) -> None:
    async with thumbnailing(tmp_path, 1) as daemon:
        child = await thumbnails_then_child(daemon, tmp_path, "pic-0", 1)
        assert await daemon.stop() == 0
    assert await until_gone(child, 1)  # ended by the daemon before it exited


async def test_the_daemon_catches_up_on_thumbnails_by_itself(tmp_path: Path) -> None:
    """Assets archived with thumbnails off: the daemon, run again with them on and nothing new to do, makes the
    missing ones from the store with no command, and so does the end of a --burst run; the corrupt image is
    tried once, and no later run tries it again."""
    fake = FakeApis(API_KEY)
    for n in range(4):
        fake.add(FakeTask("kie", f"pic-{n}", WALK, [noisy_png(500, 400 + n)], prompt=f"picture {n}"))
    fake.add(FakeTask("kie", "broken-1", WALK, [noisy_png(300, 300)[:1500]], prompt="broken"))
    inbox = tmp_path / "inbox.txt"
    inbox.write_text("kie pic-0\nkie pic-1\nkie broken-1\n")
    env = dict(os.environ, KIE_API_KEY=API_KEY)
    broken = ": no thumbnail: the file cannot be read as image"
    async with serve(fake.app()) as base:
        fake.base = base
        doc = base_config(tmp_path, {"kie": {"type": "kie", "api_key": "${KIE_API_KEY}", "base_url": base,
                                             "poll_intervals": ["0.2s"]}}, index={"enabled": False})
        off = write_config(tmp_path / "off.yaml", doc | {"thumbnails": {"enabled": False}})
        on = write_config(tmp_path / "config.yaml", doc)
        code, _, err = await cli(off, "run", "--burst", env=env)
        assert code == 0, err
        assert made(tmp_path) == 0
        daemon = DaemonProcess(on, env, tmp_path / "daemon.log")
        await daemon.start()
        try:
            await daemon.wait_running()
            await daemon.wait_for(lambda s: made(tmp_path) == 2)
        finally:
            assert await daemon.stop() == 0
        assert daemon.log.read_text().count(broken) == 1

        with inbox.open("a") as f:
            f.write("kie pic-2\nkie pic-3\n")
        code, _, err = await cli(off, "run", "--burst", env=env)
        assert code == 0, err
        assert made(tmp_path) == 2
        code, _, err = await cli(on, "run", "--burst", env=env)  # nothing new to archive
        assert code == 0, err
    assert made(tmp_path) == 4 and broken not in err
    assert sum(fake.cdn_hits.values()) == 5  # made from the store: nothing fetched again
