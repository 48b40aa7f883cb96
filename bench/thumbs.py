"""Thumbnails: CPU seconds per thumbnail (a 2048×2048 noisy PNG, a 10 s 1080p video) and the peak RSS of a
process that has imported the daemon and makes thumbnails of 4096×4096 PNGs (target ≤ 96 MiB).

    .venv/bin/python bench/thumbs.py            # about a minute, most of it encoding the video
Prints a table; figures are in bench/RESULTS.md. Needs Pillow and PyAV (`pip install -e '.[test]'`).
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from realmedia import Job, archive, photo, video  # noqa: E402  (puts the repo root on sys.path first)

from archiver.thumbs.make import make_thumb  # noqa: E402

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


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def per_thumb(path: Path, media: str, runs: int) -> float:
    make_thumb(path, media, 400)  # warm: imports, caches
    start = cpu()
    for _ in range(runs):
        make_thumb(path, media, 400)
    return (cpu() - start) / runs


async def daemon_peak(run: Path, bodies: list[bytes], thumbnails: bool) -> tuple[float, float, int]:
    """The real daemon archiving `bodies` (bench/realmedia.py): (peak RSS MiB, CPU s, thumbnails written)."""
    peak = 0.0

    def watch(pid: int) -> None:  # VmHWM: this process's own peak (wait4's ru_maxrss keeps ours across the exec)
        nonlocal peak
        peak = max(peak, hwm_mib(pid))

    jobs = [Job(f"big-{n}", [body], prompt=f"big {n}") for n, body in enumerate(bodies)]
    usage = await archive(run, jobs, thumbnails=thumbnails, index=False, watch=watch)
    made = len(list((run / "archive" / "_thumbs").rglob("*.webp"))) if (run / "archive" / "_thumbs").exists() else 0
    return peak, usage.cpu, made


def hwm_mib(pid: int) -> float:
    """The process's VmHWM, once it runs archiver: before its exec it is a fork of ours, with our peak."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"archiver" not in f.read():
                return 0.0
        with open(f"/proc/{pid}/status") as f:
            return int(next(line for line in f if line.startswith("VmHWM:")).split()[1]) / 1024
    except (OSError, StopIteration):
        return 0.0  # exited


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
                ("4096×4096 PNG", f"{big[0].stat().st_size / 2**20:.1f} MiB",
                 f"{per_thumb(big[0], 'image', 3):.3f} s")]
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
        started = time.monotonic()
        out = subprocess.run([sys.executable, "-c", CHILD, *map(str, big)], capture_output=True, text=True, env=env,
                             check=True).stdout
        took = time.monotonic() - started
        rss = json.loads(out)
        size = big[0].stat().st_size / 2**20
        bodies = [p.read_bytes() for p in big]
        runs = [(on, asyncio.run(daemon_peak(folder / f"run-{n}", bodies, on)))
                for n, on in enumerate((False, True, False, True))]  # interleaved
        del bodies
    print("| file | size | CPU per thumbnail |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print("\n| 3 × 4096×4096 PNG, in a process that imported archiver.daemon | RSS before | peak RSS | wall |")
    print(f"|---|---|---|---|\n| {size:.1f} MiB each | {rss['before'] / 1024:.1f} MiB | {rss['peak'] / 1024:.1f} MiB"
          f" | {took:.1f} s |")
    print("\n| `archiver run --burst`, 3 tasks × one 4096×4096 PNG | thumbnails | peak RSS | CPU | thumbnails made |")
    print("|---|---|---|---|---|")
    for on, (peak, used, made) in runs:
        print(f"| | {'on' if on else 'off'} | {peak:.1f} MiB | {used:.2f} s | {made} |")


if __name__ == "__main__":
    main()
