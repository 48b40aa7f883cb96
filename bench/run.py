"""Benchmarks: how fast and how lean archiver is, measured against curl. See bench/RESULTS.md, "How the bench runs".

    python bench/run.py [--scenario N ...] [--quick] [--rps R] [--dir /tmp] [--profile DIR] [--backend B]
    python bench/run.py --against REV [--scenario 1|2|4 ...] [--quick] [--rounds 3] [--tasks N]

`--against REV` runs the throughput scenarios (default: 2) on this tree and on REV, interleaved,
and exits 1 when this tree is more than 10 % slower than REV on any of them.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

from measure import profile_split, profile_summary, wait_quiet
from scenarios import MiB, Plan, Row, latency, throughput, waiting
from targets import Result, targets
from targets import table as targets_table
from web import intake, scrape

TARGETS = ("throughput ≥ 0.8× curl (1, 2); peak RSS ≤ 100 MiB (1-6); waiting < 5% of a core (3); "
           "inbox→first poll p50 < 1 s, success→first byte p50 < 100 ms (5); "
           "/metrics < 50 ms at 100,000 tasks, flat in the task count (6); "
           "index rebuild from the state DB < 30 s (7; the page: bench/gallery.py); serve's RSS flat (8); "
           "daemons on one PostgreSQL add throughput, ≤ 10 statements per asset (9); "
           "scenario 10 prints its own goals beside each result")
SEVERAL_RPS = 50.0  # scenario 9's kie rate, shared by its daemons: above the 2 polls × ~12 assets/s it needs


PLANS = {  # the throughput scenarios: their name and plan, quick or full size
    1: lambda quick: ("1 large files", Plan(8, 1, (64 if quick else 512) * MiB, "mp4")),
    2: lambda quick: ("2 many small files", Plan(200 if quick else 1000, 2, 2 * MiB, "png")),
    4: lambda quick: ("4 S3 (moto)", Plan(200 if quick else 1000, 2, 2 * MiB, "png")),
}


def scenario(n: int, a: argparse.Namespace, curl: bool) -> list[Row]:
    where = (a.dir, a.profile)
    if n in PLANS:
        name, plan = PLANS[n](a.quick)
        return throughput(name, plan, *where, rps=a.rps, s3=n == 4, curl=curl)
    if n == 3:
        seconds, warmup = (30.0, 10.0) if a.quick else (120.0, 15.0)
        return [waiting(tasks, *where, seconds=seconds, warmup=warmup) for tasks in (1000, 10000)]
    if n == 5:
        return [latency(20 if a.quick else 50, *where)]
    if n == 7:
        from browse import browse  # needs the test extra (playwright) and chromium

        return browse(10_000 if a.quick else 100_000, a.dir)
    if n == 8:
        from browse import serve_s3

        return serve_s3(256 if a.quick else 1024, a.dir)
    if n == 9:
        from several import several
        from tests.support.postgres import pg_unavailable

        if why := pg_unavailable():
            print(f"  scenario 9 skipped: {why}", flush=True)
            return []
        return several(60 if a.quick else 240, a.dir, size=2 * MiB, rate=2 * MiB, concurrency=4, rps=SEVERAL_RPS)
    scrapes = 50 if a.quick else 200
    return [scrape(1000, *where, scrapes=scrapes), scrape(100_000, *where, scrapes=scrapes),
            intake(5 if a.quick else 20, *where)]


def curl_ok() -> bool:
    """curl ≥ 7.66 has --parallel; without it the curl rows are left out, not faked."""
    try:
        out = subprocess.run(["curl", "--version"], capture_output=True, text=True, check=False).stdout
    except FileNotFoundError:
        out = ""
    found = re.match(r"curl (\d+)\.(\d+)", out)
    if found and (int(found[1]), int(found[2])) >= (7, 66):
        return True
    print("no curl ≥ 7.66 (apt-get install curl): the curl comparison is skipped", file=sys.stderr)
    return False


def machine() -> str:
    mem = next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
    return (f"{os.cpu_count()} CPUs, {int(mem.split()[1]) / 1024**2:.1f} GiB RAM, Python "
            f"{platform.python_version()}, {platform.platform()}, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC")


def table(rows: list[Row]) -> str:
    def num(value: float | None, fmt: str) -> str:
        return "–" if value is None else format(value, fmt)

    lines = ["| run | wall s | MB/s | assets/s | CPU s | peak RSS MiB | notes |", "|---|--:|--:|--:|--:|--:|---|"]
    return "\n".join(lines + [f"| {r.name} | {r.wall:.1f} | {num(r.mb_s, '.0f')} | {num(r.assets_s, '.1f')} "
                              f"| {r.cpu:.1f} | {num(r.rss_mib, '.0f')} | {r.note} |" for r in rows])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenario", type=int, action="append", choices=range(1, 11), help="repeatable; default all")
    p.add_argument("--quick", action="store_true", help="smaller sizes and shorter runs")
    p.add_argument("--rps", type=float, default=1000.0,
                   help="kie requests_per_second in scenarios 1, 2, 4 (3 and 5 keep the default, 10)")
    p.add_argument("--dir", type=Path, default=Path("/tmp"), help="scenario folders go here, and are removed")
    p.add_argument("--profile", type=Path, help="run the daemon under py-spy, raw profiles into this folder")
    p.add_argument("--backend", action="append", choices=("sqlite", "postgres"),
                   help="scenario 10's state backends (repeatable); default both")
    p.add_argument("--against", metavar="REV", help="compare with this git revision (scenarios 1, 2, 4)")
    p.add_argument("--rounds", type=int, default=3, help="with --against: runs of each tree (median taken)")
    p.add_argument("--tasks", type=int, help="with --against: this many tasks instead of the scenario's")
    args = p.parse_args()
    for name in [k for k in os.environ if k.lower().endswith("_proxy")]:
        del os.environ[name]  # everything is on 127.0.0.1: no proxy for us, curl, boto3 or the daemon
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    if args.against:
        return against(args)
    curl = curl_ok()
    print(f"{machine()}\ncommand: {' '.join(sys.argv)}\ntargets: {TARGETS}\n", flush=True)
    rows: list[Row] = []
    goals: list[Result] = []
    for n in args.scenario or [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]:
        print(f"scenario {n}: machine {wait_quiet():.0%} busy before it", flush=True)
        if n == 10:
            goals = targets(args.dir, quick=args.quick, backends=tuple(args.backend or ("sqlite", "postgres")))
            continue
        for row in scenario(n, args, curl):
            rows.append(row)
            print(f"  {row.name}: {row.wall:.1f} s, {row.cpu:.1f} CPU s, {row.rss_mib or 0:.0f} MiB; {row.note}",
                  flush=True)
    print("\n" + table(rows) if rows else "")
    print("\n" + targets_table(goals) if goals else "")
    for raw in sorted(args.profile.glob("*.txt")) if args.profile else []:
        split = profile_split(raw, Path(__file__).resolve().parents[1])
        print(f"\nprofile {raw}:\n{profile_summary(raw)}\n\nby kind of work:\n{split}")
    return 0


def against(a: argparse.Namespace) -> int:
    from against import build, compare

    print(f"{machine()}\ncommand: {' '.join(sys.argv)}\n", flush=True)
    theirs = build(a.against, a.dir)
    print(f"built {a.against} ({theirs.label}) in {Path(theirs.python).parents[2]}", flush=True)
    same = True
    try:
        for n in a.scenario or [2]:
            if n not in PLANS:
                raise SystemExit(f"--against runs scenarios {sorted(PLANS)}, not {n}")
            name, plan = PLANS[n](a.quick)
            plan = dataclasses.replace(plan, tasks=a.tasks or plan.tasks)
            print(f"scenario {n}: machine {wait_quiet():.0%} busy before it", flush=True)
            same &= compare(name, plan, theirs, a.dir, rps=a.rps, rounds=a.rounds, s3=n == 4)
    finally:
        shutil.rmtree(Path(theirs.python).parents[2], ignore_errors=True)
    print("\n" + ("not slower" if same else f"SLOWER than {a.against} by more than 10 %"))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
