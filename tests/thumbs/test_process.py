"""The thumbnail process: a real child that imports nothing of the daemon, a death or a hang that costs one
thumbnail (logged) and never the next, and no child left after `close`."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from archiver.storage.local import LocalStorage
from archiver.thumbs.make import NoPoster
from archiver.thumbs.process import ChildDied, ThumbProcess, Unreadable
from archiver.thumbs.worker import Thumbnailer
from tests.support.archive import wav
from tests.support.media import noisy_png
from tests.support.procs import until_gone


@pytest.fixture
async def process() -> AsyncIterator[ThumbProcess]:
    p = ThumbProcess()
    yield p
    await p.close()


def png(tmp_path: Path, name: str = "a.png", width: int = 600, height: int = 300) -> Path:
    path = tmp_path / name
    path.write_bytes(noisy_png(width, height))
    return path


def busy_on_fifo(tmp_path: Path) -> Path:
    """A FIFO: the child that opens it blocks there, mid-thumbnail, until someone writes."""
    fifo = tmp_path / "stuck.png"
    os.mkfifo(fifo)
    return fifo


async def until_opened(fifo: Path) -> int:
    """Wait until a reader has the FIFO open (a writer can then open it without blocking); our writing end."""
    for _ in range(400):
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: no reader yet
            await asyncio.sleep(0.025)
    raise AssertionError("the child never opened the file")


async def test_the_thumbnail_is_made_in_a_child_process(tmp_path: Path, process: ThumbProcess) -> None:
    thumb = await process.make(png(tmp_path), "image", 200)
    with Image.open(io.BytesIO(thumb.data)) as im:
        assert (im.format, im.size) == ("WEBP", (200, 100))
    assert (thumb.width, thumb.height) == (600, 300) and thumb.placeholder.startswith("#")
    pid = process.pid
    assert pid is not None and pid != os.getpid()
    assert Path(f"/proc/{pid}/status").read_text().split("PPid:")[1].split()[0] == str(os.getpid())
    assert b"archiver.thumbs.child" in Path(f"/proc/{pid}/cmdline").read_bytes()
    # /proc/PID/stat's 19th field is the nice value: the child yields the CPU to the daemon's downloads.
    assert int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16]) == os.nice(0) + 10
    await process.make(png(tmp_path, "b.png"), "image", 200)
    assert process.pid == pid  # one long-lived child, not one per thumbnail


def test_the_child_imports_nothing_of_the_daemon() -> None:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    done = subprocess.run([sys.executable, "-X", "importtime", "-P", "-m", "archiver.thumbs.child"], input=b"",
                          capture_output=True, env=env, timeout=60, check=True)
    imported = {line.rsplit("|", 1)[1].strip() for line in done.stderr.decode().splitlines() if "|" in line}
    ours = {m for m in imported if m.split(".")[0] == "archiver"}
    assert ours == {"archiver", "archiver.thumbs", "archiver.thumbs.make"}, ours
    assert "PIL.Image" in imported and "asyncio" not in imported and "av" not in imported  # PyAV at a video


async def test_what_cannot_be_read_is_said_and_the_child_stays(tmp_path: Path, process: ThumbProcess) -> None:
    cut = tmp_path / "cut.png"
    cut.write_bytes(noisy_png(300, 300)[:2000])
    with pytest.raises(Unreadable, match=r"^\w+Error: "):
        await process.make(cut, "image", 200)
    pid = process.pid
    audio = tmp_path / "a.wav"
    audio.write_bytes(wav())
    with pytest.raises(NoPoster):
        await process.make(audio, "audio", 200)
    await process.make(png(tmp_path), "image", 200)
    assert process.pid == pid


async def test_a_child_killed_mid_thumbnail_costs_that_one_only(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    storage = LocalStorage(tmp_path / "archive")
    thumbs = Thumbnailer(storage, 200)
    try:
        await thumbs.one("first.png", "image", png(tmp_path))
        first = thumbs.process.pid
        assert first is not None
        fifo = busy_on_fifo(tmp_path)
        stuck = asyncio.create_task(thumbs.one("stuck.png", "image", fifo))
        writer = await until_opened(fifo)  # the child is inside this thumbnail now
        try:
            os.kill(first, signal.SIGKILL)
            with caplog.at_level(logging.WARNING, logger="archiver.thumbs.worker"):
                assert await asyncio.wait_for(stuck, 30) is False
        finally:
            os.close(writer)
        assert "stuck.png: no thumbnail: the thumbnail process died of SIGKILL" in caplog.text
        assert await thumbs.one("next.png", "image", png(tmp_path, "next.png"))
        assert thumbs.process.pid not in (None, first)
        assert (tmp_path / "archive/_thumbs/next.png.webp").exists()
        assert not (tmp_path / "archive/_thumbs/stuck.png.webp").exists()
    finally:
        await thumbs.close()
        await storage.close()


async def test_a_child_that_hangs_is_killed_after_the_timeout(tmp_path: Path) -> None:
    process = ThumbProcess(timeout=1.0)
    try:
        fifo = busy_on_fifo(tmp_path)
        await process.make(png(tmp_path), "image", 200)
        hung = process.pid
        assert hung is not None
        with pytest.raises(ChildDied, match="no answer in 1s"):
            await process.make(fifo, "image", 200)  # no one ever writes: the child waits forever
        assert await until_gone(hung, 10)
        await process.make(png(tmp_path), "image", 200)
        assert process.pid not in (None, hung)
    finally:
        await process.close()


async def test_close_ends_the_child(tmp_path: Path, process: ThumbProcess) -> None:
    await process.make(png(tmp_path), "image", 200)
    pid = process.pid
    assert pid is not None
    await process.close()
    assert process.pid is None and await until_gone(pid, 0.5)  # ended by close itself, not later


async def test_a_stop_mid_thumbnail_kills_the_child(tmp_path: Path, process: ThumbProcess) -> None:
    fifo = busy_on_fifo(tmp_path)
    making = asyncio.create_task(process.make(fifo, "image", 200))
    writer = await until_opened(fifo)
    pid = process.pid
    assert pid is not None
    try:
        making.cancel()
        with pytest.raises(asyncio.CancelledError):
            await making
        await process.close()
    finally:
        os.close(writer)
    assert await until_gone(pid, 0.5)
