"""Thumbnails: CPU seconds per thumbnail (a 2048×2048 noisy PNG, a 10 s 1080p video) and the peak RSS of a
process that has imported the daemon and makes thumbnails of 4096×4096 PNGs (target ≤ 96 MiB).

    .venv/bin/python bench/thumbs.py            # about a minute, most of it encoding the video
Prints a table; figures are in bench/RESULTS.md. Needs Pillow and PyAV (`pip install -e '.[test]'`).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageChops

from archiver.thumbs.make import make_thumb

CHILD = """
import json, sys
from pathlib import Path
import archiver.daemon  # what `archiver run` has imported before its first thumbnail
from archiver.thumbs.make import make_thumb
def kib(field):  # VmHWM is this process's own peak (ru_maxrss keeps the parent's across exec)
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(field + ":"))
before = kib("VmHWM")
for path in sys.argv[1:]:
    make_thumb(Path(path), "image", 400)
print(json.dumps({"before": before, "peak": kib("VmHWM")}))
"""


def photo(side: int, seed: int) -> Image.Image:
    """A photograph's statistics, roughly: smooth gradients with sensor noise (not flat colour)."""
    base = Image.merge("RGB", [Image.linear_gradient("L").rotate(a).resize((side, side)) for a in (0, 90, 45 + seed)])
    noise = Image.merge("RGB", [Image.effect_noise((side, side), 6 + 2 * i).point(lambda v: v - 128 + 64)
                                for i in range(3)])
    return ImageChops.add(base, noise, scale=1.0, offset=-64)


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def per_thumb(path: Path, media: str, runs: int) -> float:
    make_thumb(path, media, 400)  # warm: imports, caches
    start = cpu()
    for _ in range(runs):
        make_thumb(path, media, 400)
    return (cpu() - start) / runs


def video(path: Path, seconds: int = 10, fps: int = 24) -> None:
    import av

    frames = [photo(1080, n).resize((1920, 1080)) for n in range(4)]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps, options={"preset": "veryfast", "crf": "23"})
        stream.width, stream.height, stream.pix_fmt = 1920, 1080, "yuv420p"
        for n in range(seconds * fps):
            image = Image.new("RGB", (1920, 1080)) if n < fps // 2 else frames[(n // fps) % 4]  # 0.5 s black first
            for packet in stream.encode(av.VideoFrame.from_image(image)):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        png = folder / "2k.png"
        photo(2048, 1).save(png, "PNG")
        clip = folder / "10s.mp4"
        video(clip)
        big = []
        for n in range(3):
            big.append(folder / f"4k-{n}.png")
            photo(4096, n).save(big[-1], "PNG", compress_level=1)
        rows = [("2048×2048 PNG", f"{png.stat().st_size / 2**20:.1f} MiB", f"{per_thumb(png, 'image', 5):.3f} s"),
                ("10 s 1080p H.264 (0.5 s black first)", f"{clip.stat().st_size / 2**20:.1f} MiB",
                 f"{per_thumb(clip, 'video', 3):.3f} s"),
                ("4096×4096 PNG (read in strips)", f"{big[0].stat().st_size / 2**20:.1f} MiB",
                 f"{per_thumb(big[0], 'image', 3):.3f} s")]
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
        started = time.monotonic()
        out = subprocess.run([sys.executable, "-c", CHILD, *map(str, big)], capture_output=True, text=True, env=env,
                             check=True).stdout
        took = time.monotonic() - started
        rss = json.loads(out)
        size = big[0].stat().st_size / 2**20
    print("| file | size | CPU per thumbnail |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print("\n| 3 × 4096×4096 PNG, in a process that imported archiver.daemon | RSS before | peak RSS | wall |")
    print(f"|---|---|---|---|\n| {size:.1f} MiB each | {rss['before'] / 1024:.1f} MiB | {rss['peak'] / 1024:.1f} MiB"
          f" | {took:.1f} s |")


if __name__ == "__main__":
    main()
