"""Benchmarks: how fast and how lean archiver is, measured against curl.

    python bench/run.py [--scenario N ...] [--quick] [--rps R] [--dir /tmp] [--profile DIR]

Everything talks to 127.0.0.1 only. See bench/README.md for what each scenario does.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

from measure import profile_summary
from scenarios import MiB, Plan, Row, latency, throughput, waiting

TARGETS = ("throughput ≥ 0.8× curl (1, 2); peak RSS ≤ 100 MiB (all); waiting < 5% of a core (3); "
           "inbox→first poll p50 < 1 s, success→first byte p50 < 100 ms (5)")


def scenario(n: int, args: argparse.Namespace, curl: bool) -> list[Row]:
    quick, base, prof = args.quick, args.dir, args.profile
    if n == 1:
        plan = Plan(8, 1, (64 if quick else 512) * MiB, "mp4")
        return throughput("1 large files", plan, base=base, rps=args.rps, curl=curl, profile=prof)
    if n == 2:
        plan = Plan(200 if quick else 1000, 2, 2 * MiB, "png")
        return throughput("2 many small files", plan, base=base, rps=args.rps, curl=curl, profile=prof)
    if n == 3:
        seconds, warmup = (30.0, 10.0) if quick else (120.0, 15.0)
        return [waiting(tasks, base=base, seconds=seconds, warmup=warmup) for tasks in (1000, 10000)]
    if n == 4:
        plan = Plan(200 if quick else 1000, 2, 2 * MiB, "png")
        return throughput("4 S3 (moto)", plan, base=base, rps=args.rps, s3=True, profile=prof)
    return [latency(20 if quick else 50, base=base)]


def curl_ok() -> bool:
    """curl ≥ 7.66 has --parallel; without it the curl rows are skipped, not faked."""
    if not shutil.which("curl"):
        print("curl not found: the curl comparison is skipped (apt-get install curl)", file=sys.stderr)
        return False
    out = subprocess.run(["curl", "--version"], capture_output=True, text=True, check=False).stdout
    found = re.match(r"curl (\d+)\.(\d+)", out)
    if not found or (int(found[1]), int(found[2])) < (7, 66):
        print(f"curl too old for --parallel: {out.splitlines()[:1]}; comparison skipped", file=sys.stderr)
        return False
    return True


def machine() -> str:
    mem = next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
    mem = mem.split()[1]
    return (f"{os.cpu_count()} CPUs, {int(mem) / 1024**2:.1f} GiB RAM, Python {platform.python_version()}, "
            f"{platform.platform()}, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC")


def table(rows: list[Row]) -> str:
    def num(value: float | None, fmt: str) -> str:
        return "–" if value is None else format(value, fmt)

    lines = ["| run | wall s | MB/s | assets/s | CPU s | peak RSS MiB | notes |", "|---|--:|--:|--:|--:|--:|---|"]
    lines += [f"| {r.name} | {r.wall:.1f} | {num(r.mb_s, '.0f')} | {num(r.assets_s, '.1f')} | {r.cpu:.1f} "
              f"| {num(r.rss_mib, '.0f')} | {r.note} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenario", type=int, action="append", choices=range(1, 6), help="repeatable; default all")
    p.add_argument("--quick", action="store_true", help="smaller sizes and shorter runs")
    p.add_argument("--rps", type=float, default=1000.0,
                   help="requests_per_second for scenarios 1, 2, 4 (3 and 5 keep kie's default 10)")
    p.add_argument("--dir", type=Path, default=Path("/tmp"), help="where scenario folders go (and are removed)")
    p.add_argument("--profile", type=Path, help="run the daemon under py-spy; raw profiles go here")
    args = p.parse_args(argv)
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    curl = curl_ok()
    print(machine(), f"\ncommand: {' '.join(sys.argv)}\ntargets: {TARGETS}\n", flush=True)
    rows: list[Row] = []
    for n in args.scenario or [1, 2, 3, 4, 5]:
        new = scenario(n, args, curl)
        rows += new
        for r in new:
            print(f"  {r.name}: {r.wall:.1f}s, {r.cpu:.1f} CPU s, peak RSS {r.rss_mib or 0:.0f} MiB; {r.note}",
                  flush=True)
    print("\n" + table(rows))
    for raw in sorted(args.profile.glob("*.txt")) if args.profile else []:
        print(f"\nprofile {raw}:\n{profile_summary(raw)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
