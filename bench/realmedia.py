"""Realistic media for the benches, and the real daemon archiving it from the project's fake providers.

"Photographs" are smooth gradients with sensor noise: a 2048×2048 one is a PNG of about 5 MB, as
real outputs are (flat colour would compress to nothing). Videos are 10 s of 1080p H.264 (PyAV),
audio a WAV tone. `cached_media` keeps what it made in a folder, so a second run starts at once.
"""

from __future__ import annotations

import asyncio
import math
import os
import struct
import sys
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from measure import Child, Usage
from PIL import Image, ImageChops

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.support, shared with the tests
from tests.support.daemon import base_config, write_config  # noqa: E402
from archiver.testing import FakeApis, FakeTask  # noqa: E402
from tests.support.servers import serve  # noqa: E402

KEY = "kie-bench-key"
ROOT = Path(__file__).resolve().parent.parent
VERSION = "v2"  # of the media makers: a cached file of another version is not used
MODELS = {"png": "seedream-4.5", "mp4": "sora-2-text-to-video", "wav": "suno-v4"}


def photo(side: int, seed: int, sigma: float = 0.8, texture: float = 20.0) -> Image.Image:
    """A photograph's statistics, roughly: gradients, structure at every scale, and sensor noise.

    At the defaults a 2048×2048 PNG is about 5.4 MB and its 400 px WebP thumbnail about 20 KB, as a
    photograph's are (without the texture the thumbnail of noise alone is 2.5 KB: the noise averages out)."""
    base = Image.merge("RGB", [Image.linear_gradient("L").rotate(a).resize((side, side)) for a in (0, 90, 45 + seed)])
    for cells, amplitude in ((side // 64, texture), (side // 16, texture * 0.6), (side // 4, texture * 0.35)):
        blobs = Image.merge("RGB", [Image.effect_noise((cells, cells), amplitude).point(lambda v: v - 128 + 64)
                                    for _ in range(3)])
        base = ImageChops.add(base, blobs.resize((side, side), Image.Resampling.BICUBIC), scale=1.0, offset=-64)
    noise = Image.merge("RGB", [Image.effect_noise((side, side), sigma * (1 + i / 4)).point(lambda v: v - 128 + 64)
                                for i in range(3)])
    return ImageChops.add(base, noise, scale=1.0, offset=-64)


def video(path: Path, seconds: int = 10, fps: int = 24, seed: int = 0) -> None:
    """A 1080p H.264 MP4 whose first 0.5 s is black (a poster frame must skip it)."""
    import av

    frames = [photo(1080, seed + n).resize((1920, 1080)) for n in range(4)]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps, options={"preset": "veryfast", "crf": "23"})
        stream.width, stream.height, stream.pix_fmt = 1920, 1080, "yuv420p"
        for n in range(seconds * fps):
            image = Image.new("RGB", (1920, 1080)) if n < fps // 2 else frames[(n // fps) % 4]
            for packet in stream.encode(av.VideoFrame.from_image(image)):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def tone(path: Path, seconds: float = 10.0, rate: int = 44100, pitch: float = 440.0) -> None:
    """A WAV file: a tone, 16-bit mono."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(struct.pack("<h", int(12000 * math.sin(2 * math.pi * pitch * i / rate)))
                               for i in range(int(seconds * rate))))


def cached_media(folder: Path, images: int, videos: int, sounds: int) -> list[Path]:
    """`images` 2048×2048 PNGs, `videos` 10 s 1080p MP4s and `sounds` WAVs in `folder`, made once."""
    folder.mkdir(parents=True, exist_ok=True)
    made: list[Path] = []
    for kind, count, make in (("png", images, lambda p, n: photo(2048, n).save(p, "PNG")),
                              ("mp4", videos, lambda p, n: video(p, seed=10 * n)),
                              ("wav", sounds, lambda p, n: tone(p, pitch=220.0 + 110 * n))):
        for n in range(count):
            path = folder / f"{kind}-{VERSION}-{n:03d}.{kind}"
            if not path.exists():
                part = path.with_suffix(".part." + kind)
                make(part, n)
                part.rename(path)  # a run stopped halfway leaves no half-written file to reuse
            made.append(path)
    return made


@dataclass(frozen=True)
class Job:
    """One task at the fake kie: its results' bytes, model and prompt."""

    task_id: str
    files: list[bytes]
    model: str = "seedream-4.5"
    prompt: str = "a lighthouse at dusk"


async def archive(run: Path, jobs: list[Job], *, thumbnails: bool, tree: Path = ROOT, index: bool = True,
                  watch: Callable[[int], None] | None = None, rps: float | None = None) -> Usage:
    """The real daemon of `tree` (`archiver run --burst`, everything in the new folder `run`) archiving
    `jobs` from a fake kie on 127.0.0.1; `watch(pid)` is called every 20 ms while it runs."""
    run.mkdir(parents=True)  # noqa: ASYNC240
    fake = FakeApis(KEY)
    for job in jobs:
        fake.add(FakeTask("kie", job.task_id, ["queued", "success"], job.files, model=job.model, prompt=job.prompt))
    async with serve(fake.app()) as base:
        fake.base = base
        config = write_config(run / "config.yaml", base_config(run, {
            "kie": {"type": "kie", "api_key": "${KIE_API_KEY}", "base_url": base, "poll_intervals": ["0.2s"],
                    **({"requests_per_second": rps} if rps else {})},
        }, index={"enabled": index}, thumbnails={"enabled": thumbnails}))
        (run / "inbox.txt").write_text("".join(f"kie {job.task_id}\n" for job in jobs))
        env = dict(os.environ, KIE_API_KEY=KEY, PYTHONPATH=str(tree))
        child = Child([sys.executable, "-m", "archiver", "run", "--burst", "-c", str(config)], run / "daemon.log",
                      env=env, cwd=tree)
        done = asyncio.ensure_future(asyncio.to_thread(child.wait, 3600))
        while not done.done():
            if watch:
                watch(child.pid)
            await asyncio.sleep(0.02)
        usage = await done
    if usage.code != 0:
        raise RuntimeError(f"archiver run --burst exited {usage.code}: {(run / 'daemon.log').read_text()[-2000:]}")
    return usage
