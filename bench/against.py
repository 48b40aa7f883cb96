"""`run.py --against REV`: a throughput scenario on this tree and on REV, interleaved, with medians.

REV is built from `git archive` into a temporary venv that borrows this venv's dependencies, so
both trees run on the same aiohttp, Python and machine. The runs alternate (this tree first in odd
rounds, REV first in even ones), each after `sync`, and each round also times the disk alone.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path

from measure import Usage
from scenarios import HERE, PY, Plan, Rig, disk_alone

SLOWER = 1.10  # this tree's median wall time past REV's by more than this fails the comparison


@dataclass(frozen=True)
class Tree:
    label: str
    python: str


def build(rev: str, base: Path) -> Tree:
    """REV's package, installed (not editable) into a new venv under `base`."""
    repo = HERE.parent
    sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", rev], capture_output=True, text=True,
                         check=True).stdout.strip()
    root = Path(tempfile.mkdtemp(prefix=f"archiver-{sha}-", dir=base))
    # Through a file, not this process: its peak RSS is the floor of every child's ru_maxrss.
    subprocess.run(["git", "-C", str(repo), "archive", "-o", str(root / "src.tar"), sha], check=True)
    (root / "src").mkdir()
    subprocess.run(["tar", "-x", "-f", str(root / "src.tar"), "-C", str(root / "src")], check=True)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True)
    python = root / "venv" / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # After REV's own site-packages on sys.path: REV's archiver wins, the dependencies are ours.
    Path(site, "borrowed-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                    str(root / "src")], check=True)
    return Tree(sha, str(python))


def compare(name: str, plan: Plan, theirs: Tree, base: Path, *, rps: float, rounds: int = 3, s3: bool = False) -> bool:
    """Print each run, then the medians and ratios; False when this tree is more than 10 % slower.

    With `s3`, both trees write to one moto server, each run under a prefix of its own."""
    ours = Tree("this tree", PY)
    runs: dict[str, list[Usage]] = {ours.label: [], theirs.label: []}
    disk: list[float] = []
    ids = [f"t{i:05d}" for i in range(plan.tasks)]
    with Rig(base, None, files=plan.files, size=plan.size, kind=plan.kind) as rig:
        if s3:
            rig.use_s3()
        for n in range(rounds):
            for tree in (ours, theirs) if n % 2 == 0 else (theirs, ours):
                for folder in ("state", "archive"):
                    shutil.rmtree(rig.dir / folder, ignore_errors=True)
                if s3:
                    rig.storage["s3"]["prefix"] = f"run{n}-{tree.python == PY}/"
                subprocess.run(["sync"], check=True)
                usage = rig.daemon(rps, ids, "--burst", python=tree.python).wait()
                archived = (rig.status() or {}).get("counts", {}).get("archived")
                if usage.code != 0 or archived != plan.tasks:
                    raise SystemExit(f"{tree.label}: exit {usage.code}, {archived}/{plan.tasks} archived; "
                                     f"see {rig.dir / 'daemon.log'}")
                runs[tree.label].append(usage)
                print(f"    round {n + 1}, {tree.label}: {usage.wall:.2f} s, {usage.cpu:.1f} CPU s, "
                      f"{usage.peak_rss_mib:.0f} MiB", flush=True)
            shutil.rmtree(rig.dir / "archive", ignore_errors=True)
            if not s3:
                disk.append(disk_alone(rig.dir / "disk", plan))
                print(f"    round {n + 1}, the disk alone: {disk[-1]:.2f} s", flush=True)
    wall = {label: statistics.median(u.wall for u in usages) for label, usages in runs.items()}
    floor = statistics.median(disk) if disk else float("nan")
    print(f"\n  {name}, medians of {rounds}:")
    for label, usages in runs.items():
        rss, mb_s = max(u.peak_rss_mib for u in usages), plan.tasks * plan.files * plan.size / wall[label] / 1e6
        print(f"    {label:>10}: {wall[label]:.2f} s, {mb_s:.0f} MB/s, peak RSS {rss:.0f} MiB, "
              f"{floor / wall[label]:.2f}× the disk alone")
    if disk:
        print(f"    {'disk alone':>10}: {floor:.2f} s")
    ratio = wall[ours.label] / wall[theirs.label]
    verdict = "slower" if ratio > 1 else "faster"
    print(f"    this tree ÷ {theirs.label}: {ratio:.2f}× the time ({abs(ratio - 1):.0%} {verdict})", flush=True)
    return ratio <= SLOWER
