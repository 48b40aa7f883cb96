"""Thumbnails: CPU seconds per thumbnail (a 2048×2048 noisy PNG, a 10 s 1080p video), and the peak RSS while
making thumbnails of 4096×4096 PNGs (target ≤ 96 MiB): of the thumbnail process alone, and of the real daemon
and its thumbnail process, each its own, in `archiver run --burst`.

    .venv/bin/python bench/thumbs.py            # about a minute, most of it encoding the video
Prints a table; figures are in bench/RESULTS.md. Needs Pillow and PyAV (`pip install -e '.[test]'`).
"""

from __future__ import annotations

import asyncio
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from realmedia import Job, archive, photo, video  # noqa: E402  (puts the repo root on sys.path first)

from archiver.thumbs.make import make_thumb  # noqa: E402
from archiver.thumbs.process import ThumbProcess  # noqa: E402
from tests.support.procs import thumbnail_child  # noqa: E402


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def per_thumb(path: Path, media: str, runs: int) -> float:
    make_thumb(path, media, 400)  # warm: imports, caches
    start = cpu()
    for _ in range(runs):
        make_thumb(path, media, 400)
    return (cpu() - start) / runs


async def alone(small: Path, big: list[Path]) -> tuple[float, float, float]:
    """The thumbnail process by itself, as the daemon runs it: its peak RSS after one small thumbnail (Python,
    Pillow), its peak after the `big` ones, and its RSS once they are done (MiB)."""
    process = ThumbProcess()
    try:
        await process.make(small, "image", 400)
        assert process.pid is not None
        before = status_mib(process.pid, "VmHWM")
        for path in big:
            await process.make(path, "image", 400)
        return before, status_mib(process.pid, "VmHWM"), status_mib(process.pid, "VmRSS")
    finally:
        await process.close()


async def daemon_peak(run: Path, bodies: list[bytes], thumbnails: bool) -> tuple[float, float, float, int]:
    """The real daemon archiving `bodies` (bench/realmedia.py): (its peak RSS MiB, its thumbnail process's peak
    RSS MiB, CPU s of both, thumbnails written)."""
    peak = thumbs_peak = 0.0

    def watch(pid: int) -> None:
        # VmHWM: each process's own peak (wait4's ru_maxrss keeps ours across the exec). It only grows, so the
        # thumbnail process's last sample before it exits (at the burst's end) has its peak.
        nonlocal peak, thumbs_peak
        peak = max(peak, hwm_mib(pid))
        if (thumbs := thumbnail_child(pid)) is not None:
            thumbs_peak = max(thumbs_peak, hwm_mib(thumbs))

    jobs = [Job(f"big-{n}", [body], prompt=f"big {n}") for n, body in enumerate(bodies)]
    # The daemon's CPU counts its reaped children's: the thumbnail process's too.
    usage = await archive(run, jobs, thumbnails=thumbnails, index=False, watch=watch)
    made = len(list((run / "archive" / "_thumbs").rglob("*.webp"))) if (run / "archive" / "_thumbs").exists() else 0
    return peak, thumbs_peak, usage.cpu, made


def status_mib(pid: int, field: str) -> float:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith(field + ":")).split()[1]) / 1024


def hwm_mib(pid: int) -> float:
    """The process's VmHWM, once it runs archiver: before its exec it is a fork of ours, with our peak."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"archiver" not in f.read():
                return 0.0
        return status_mib(pid, "VmHWM")
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
        started = time.monotonic()
        before, peak, after = asyncio.run(alone(png, big))
        took = time.monotonic() - started
        size = big[0].stat().st_size / 2**20
        bodies = [p.read_bytes() for p in big]
        runs = [(on, asyncio.run(daemon_peak(folder / f"run-{n}", bodies, on)))
                for n, on in enumerate((False, True, False, True))]  # interleaved
        del bodies
    print("| file | size | CPU per thumbnail |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print("\n| the thumbnail process alone, 3 × 4096×4096 PNG | peak after one 2K PNG | peak | RSS after | wall |")
    print(f"|---|---|---|---|---|\n| {size:.1f} MiB each | {before:.1f} MiB | {peak:.1f} MiB | {after:.1f} MiB"
          f" | {took:.1f} s |")
    print("\n| `archiver run --burst`, 3 tasks × one 4096×4096 PNG | thumbnails | daemon's peak RSS"
          " | thumbnail process's peak RSS | sum | CPU (both) | thumbnails made |")
    print("|---|---|---|---|---|---|---|")
    for on, (peak, thumbs_peak, used, made) in runs:
        print(f"| | {'on' if on else 'off'} | {peak:.1f} MiB | {thumbs_peak:.1f} MiB | {peak + thumbs_peak:.1f} MiB"
              f" | {used:.2f} s | {made} |")


if __name__ == "__main__":
    main()
