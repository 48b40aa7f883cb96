"""The gallery at real scale (issue 24, "Measured"): page weight and time in Chromium, index sizes, and
archiving throughput with thumbnails on against off. Prints tables; asserts nothing about time.

    .venv/bin/python bench/gallery.py [--tree PATH] [--quick]        # page weight, sizes, CPU per thumbnail
    .venv/bin/python bench/gallery.py --throughput [--quick]          # thumbnails on against off, interleaved

The media (2048×2048 PNGs of about 5 MB, 10 s 1080p MP4s, WAVs) are made once into --media (bench/realmedia.py).
A few hundred of them are archived by the real daemon of --tree (`archiver run --burst`, thumbnails on, local
store); 100,000 index entries over 60 days are then added to its state DB, pointing at those files round-robin
with made-up prompts, one of them 50 days back with a word no other has; `archiver index --rebuild` writes the
day files (and the search index, where the tree has one); `archiver serve` serves the archive on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import asyncio
import datetime as dt
import itertools
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gallery_page import Load, measure  # noqa: E402
from measure import Child, free_port, wait_port  # noqa: E402
from realmedia import MODELS, ROOT, Job, archive, cached_media  # noqa: E402

PY, MB = sys.executable, 1e6
WORD = "quokkazanzibar"  # a syllable of the vocabulary never holds a q: no other prompt has it
NEEDLE = "needle-50d"
COMMON = ("a", "the", "of", "with", "in", "and", "on", "at", "cinematic", "portrait", "light", "soft", "detailed",
          "photo", "style", "night", "golden", "hour", "studio", "wide", "shot", "close", "up", "4k")
MORE_MODELS = {"image/png": ["seedream-4.5", "gpt-image-1", "flux-kontext-pro", "midjourney-v7", "imagen-4"],
               "video/mp4": ["sora-2-text-to-video", "veo-3", "kling-2.1"], "audio/wav": ["suno-v4"]}
CPU = """import sys; sys.path.insert(0, sys.argv[1])
import archiver.thumbs.make  # the tree's, before bench/thumbs.py puts this repo first
sys.path.insert(0, sys.argv[2])
from pathlib import Path
from thumbs import per_thumb
print(per_thumb(Path(sys.argv[3]), "image", 5), per_thumb(Path(sys.argv[4]), "video", 3))"""


class Prompts:
    """Prompts of 12–25 words drawn from a vocabulary of made-up words, Zipf-distributed like real text."""

    def __init__(self, rng: random.Random, size: int = 8000) -> None:
        self.rng = rng
        made: set[str] = set()
        while len(made) < size:
            made.add("".join(rng.choice("bdfgklmnprstvz") + rng.choice("aeiou") for _ in range(rng.randint(2, 4))))
        self.words = list(COMMON) + sorted(made)
        rng.shuffle(self.words[len(COMMON):])
        self.cum = list(itertools.accumulate(1 / (rank + 1) for rank in range(len(self.words))))

    def __call__(self) -> str:
        return " ".join(self.rng.choices(self.words, cum_weights=self.cum, k=self.rng.randint(12, 25)))


def jobs_for(media: list[Path], files: int, prompts: Prompts) -> list[Job]:
    """`files` tasks of one result each, the media used round-robin by kind: 1 in 25 a video, 1 in 40 audio."""
    by_kind = {k: [p.read_bytes() for p in media if p.suffix == "." + k] for k in ("png", "mp4", "wav")}
    jobs = []
    for n in range(files):
        kind = "mp4" if n % 25 == 12 else "wav" if n % 40 == 7 else "png"
        jobs.append(Job(f"real-{n:04d}", [by_kind[kind][n % len(by_kind[kind])]], MODELS[kind], prompts()))
    jobs.append(Job(NEEDLE, [by_kind["png"][0]], MODELS["png"], f"{prompts()} {WORD} {prompts()}"))
    return jobs


def synthesize(db_path: Path, assets: int, days: int, prompts: Prompts, rng: random.Random) -> int:
    """Add index entries to the daemon's state DB until it holds `assets`, spread over `days` days ending
    today; each copies a real archived asset (key, thumbnail, size) round-robin. The needle goes 50 days back."""
    db = sqlite3.connect(db_path)
    db.row_factory = sqlite3.Row
    with db:
        now = dt.datetime.now(dt.UTC)
        today = dt.datetime.combine(now.date(), dt.time(), dt.UTC).timestamp()
        back = today - 50 * 86400 + 43200
        needle = db.execute("SELECT id FROM tasks WHERE task_id = ?", (NEEDLE,)).fetchone()["id"]
        db.execute("UPDATE tasks SET success_seen_at = ?, first_seen_at = ?, updated_at = ? WHERE id = ?",
                   (back, back - 60, back + 5, needle))
        db.execute("UPDATE assets SET downloaded_at = ?, archived_at = ? WHERE task = ?", (back + 1, back + 2, needle))
        pairs = [(dict(t), dict(a)) for t in db.execute("SELECT * FROM tasks WHERE state = 'archived' AND id != ?",
                                                        (needle,))
                 for a in db.execute("SELECT * FROM assets WHERE task = ? AND state = 'archived'", (t["id"],))]
        have = db.execute("SELECT COUNT(*) FROM assets WHERE state = 'archived'").fetchone()[0]
        first = db.execute("SELECT MAX(id) FROM tasks").fetchone()[0] + 1
        tasks, rows = [], []
        for n in range(max(0, assets - have)):
            task, asset = (dict(x) for x in pairs[n % len(pairs)])
            start = today - (n % days) * 86400
            seen = start + rng.uniform(0, min(86000, now.timestamp() - start))  # none in the future
            prompt = prompts()
            task.update(id=first + n, task_id=f"s{n:06d}-{rng.randrange(16**6):06x}", prompt=prompt,
                        model=rng.choice(MORE_MODELS.get(asset["content_type"], [task["model"]])),
                        labels=json.dumps({"project": rng.choice(["ad", "poster", "film", "cover", "social"]),
                                           "client": f"client-{rng.randrange(12):02d}"}),
                        input=json.dumps({"prompt": prompt}), response="{}", first_seen_at=seen - 60,
                        updated_at=seen + 5, success_seen_at=seen)
            asset.update(task=first + n, downloaded_at=seen + 1, archived_at=seen + 2)
            tasks.append(task)
            rows.append(asset)
        for table, items in (("tasks", tasks), ("assets", rows)):
            if items:
                cols = list(items[0])
                db.executemany(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                               [tuple(i[c] for c in cols) for i in items])
        total = db.execute("SELECT COUNT(*) FROM assets WHERE state = 'archived'").fetchone()[0]
    db.close()
    return int(total)


def sizes(root: Path) -> dict[str, Any]:
    days = sorted((root / "_index/days").glob("*.json"), key=lambda p: p.stat().st_size)
    shards = sorted((root / "_index/search").glob("*.json"), key=lambda p: p.stat().st_size) \
        if (root / "_index/search/manifest.json").exists() else []
    shards = [p for p in shards if p.name != "manifest.json"]
    return {"days_json": (root / "_index/days.json").stat().st_size, "day_files": len(days),
            "day_avg": sum(p.stat().st_size for p in days) / max(1, len(days)),
            "day_max": days[-1].stat().st_size if days else 0, "day_max_name": days[-1].name if days else "",
            "shards": len(shards), "search_total": sum(p.stat().st_size for p in shards)
            + ((root / "_index/search/manifest.json").stat().st_size if shards else 0),
            "shard_max": shards[-1].stat().st_size if shards else 0}


def thumb_cpu(tree: Path, png: Path, mp4: Path) -> tuple[float, float] | None:
    if not (tree / "archiver/thumbs/make.py").exists():
        return None
    done = subprocess.run([PY, "-c", CPU, str(tree), str(Path(__file__).parent), str(png), str(mp4)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:  # a tree older than bench/thumbs.py's imports
        print(f"CPU per thumbnail not measured: {done.stderr.strip().splitlines()[-1:]}", flush=True)
        return None
    out = done.stdout.split()
    return float(out[0]), float(out[1])


def revision(tree: Path) -> str:
    done = subprocess.run(["git", "-C", str(tree), "log", "-1", "--format=%h %s"], capture_output=True, text=True,
                          check=False)
    dirty = subprocess.run(["git", "-C", str(tree), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, check=False).stdout.strip()
    return done.stdout.strip()[:60] + (" (with uncommitted changes)" if dirty else "")


def page_weight(a: argparse.Namespace, folder: Path) -> None:
    rng = random.Random(24)
    prompts = Prompts(rng)
    media = cached_media(a.media, *((8, 1, 1) if a.quick else (40, 3, 2)))
    jobs = jobs_for(media, 40 if a.quick else a.files, prompts)
    run = folder / "run"
    print(f"archiving {len(jobs)} real files with the daemon of {a.tree} (thumbnails on)…", flush=True)
    usage = asyncio.run(archive(run, jobs, thumbnails=True, tree=a.tree))
    archived = sum(len(j.files[0]) for j in jobs)
    print(f"  {archived / MB:,.0f} MB in {usage.wall:.1f} s, {usage.cpu:.1f} CPU s", flush=True)
    total = synthesize(run / "state/archiver.db", a.assets, a.days, prompts, rng)
    env = dict(os.environ, PYTHONPATH=str(a.tree))
    rebuilt = Child([PY, "-m", "archiver", "-c", str(run / "config.yaml"), "index", "--rebuild"], run / "index.log",
                    env=env, cwd=a.tree).wait()
    if rebuilt.code != 0:
        raise SystemExit((run / "index.log").read_text()[-2000:])
    print(f"  {total:,} index entries over {a.days} days; index --rebuild {rebuilt.wall:.1f} s", flush=True)
    size = sizes(run / "archive")
    port = free_port()
    server = Child([PY, "-m", "archiver", "-c", str(run / "config.yaml"), "serve", "--listen", f"127.0.0.1:{port}"],
                   run / "serve.log", env=env, cwd=a.tree)
    try:
        wait_port(port)
        firsts, searches = asyncio.run(measure(f"http://127.0.0.1:{port}/", 2 if a.quick else a.runs, WORD, NEEDLE,
                                               a.search_box))
    finally:
        server.stop()
    cpu = thumb_cpu(a.tree, media[0], next(p for p in media if p.suffix == ".mp4"))
    report(a, size, firsts, searches, cpu, total, len(jobs), media,
           (a.tree / "archiver/archive_format/search.py").exists())


def _median(values: list[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return statistics.median(got) if len(got) == len(values) and got else None


def _kinds(load: Load) -> str:
    return ", ".join(f"{k} {n} ({b / MB:.2f} MB)" for k, (n, b) in sorted(load.kinds.items()))


def report(a: argparse.Namespace, s: dict[str, Any], firsts: list[Load], searches: list[Load],
           cpu: tuple[float, float] | None, total: int, files: int, media: list[Path], has_search: bool) -> None:
    first_mb = statistics.median(f.bytes_shown for f in firsts) / MB
    idle_mb = statistics.median(f.bytes_idle for f in firsts) / MB
    ok = lambda met: "met" if met else "**not met**"  # noqa: E731
    print(f"\ntree: {a.tree} at {revision(a.tree)}; {files} real files archived, {total:,} index entries over "
          f"{a.days} days; served by `archiver serve` on 127.0.0.1; Chromium {chromium_version()}, 1280×900")
    kinds = {k: [p.stat().st_size / MB for p in media if p.suffix == "." + k] for k in ("png", "mp4", "wav")}
    print("media (" + str(a.media) + "): " + ", ".join(f"{len(v)} {k} of {min(v):.1f}–{max(v):.1f} MB"
                                                      for k, v in kinds.items() if v) + "\n")
    print("| figure | measured | target | |\n|---|---|---|---|")
    each = " / ".join(f"{f.bytes_shown / MB:.1f}" for f in firsts)
    print(f"| bytes for the first screen (until its images loaded), median of {len(firsts)} | **{first_mb:.2f} MB** "
          f"(each load: {each} MB) | ≤ 1.5 MB | {ok(first_mb <= 1.5)} |")
    print(f"| bytes until the network is quiet after load | {idle_mb:.2f} MB; first run: {_kinds(firsts[0])} | | |")
    images_ms = _median([f.images_ms for f in firsts])
    print(f"| time to the first screen, {total:,} assets: its images loaded (median of {len(firsts)}) | "
          + (f"**{images_ms:.0f} ms** | < 1 s | {ok(images_ms < 1000)} |" if images_ms is not None
             else "not reached in 120 s | < 1 s | **not met** |"))
    print("| the same, with every video in view showing a frame | " + " / ".join(
        f"{f.ms:.0f} ms" if f.ms is not None else "not within 30 s more" for f in firsts)
          + f" ({firsts[0].media} images and videos in view) | | |")
    search_ms = _median([x.ms for x in searches])
    how = "through the search index" if has_search else "no search index in this tree: the page loads days until found"
    if search_ms is None:
        print(f"| search for a word in one asset 50 days back | not shown within 180 s ({how}) | < 1 s, ≤ 2 MB "
              "| **not met** |")
    else:
        mb = statistics.median(x.bytes_shown for x in searches) / MB
        print(f"| search for a word in one asset 50 days back: time to show it (median of {len(searches)}) "
              f"| **{search_ms:.0f} ms** ({how}) | < 1 s | {ok(search_ms < 1000)} |")
        quiet = statistics.median(x.bytes_idle for x in searches) / MB
        print(f"| the same search: bytes until shown | **{mb:.2f} MB**; until quiet {quiet:.2f} MB; first run: "
              f"{_kinds(searches[0])} | ≤ 2 MB | {ok(mb <= 2)} |")
    print(f"| `_index/days.json` | {s['days_json'] / 1024:.1f} KiB | | |")
    print(f"| day files ({s['day_files']}) | average {s['day_avg'] / MB:.2f} MB, largest {s['day_max'] / MB:.2f} MB"
          f" ({s['day_max_name']}) | | |")
    print("| search index | " + (f"{s['search_total'] / MB:.2f} MB in {s['shards']} shards, largest "
                                   f"{s['shard_max'] / 1024:.0f} KiB" if s["shards"] else
                                   "none written (" + ("the tree has archiver/archive_format/search.py, but "
                                                       "`index --rebuild` wrote no _index/search/manifest.json"
                                                       if has_search else "the tree has no search index") + ")")
          + " | | |")
    print("| CPU seconds per thumbnail, 2K PNG / 10 s 1080p video | "
          + (f"{cpu[0]:.3f} s / {cpu[1]:.3f} s (bench/thumbs.py's per_thumb)" if cpu else "n/a (no archiver.thumbs)")
          + " | measured | |")


def chromium_version() -> str:
    done = subprocess.run(["/usr/bin/chromium", "--version"], capture_output=True, text=True, check=False)
    return done.stdout.strip().removeprefix("Chromium ").split()[0] if done.returncode == 0 else "?"


def throughput(a: argparse.Namespace, folder: Path) -> None:
    """The same realistic tasks archived with thumbnails off and on, alternating which goes first; medians."""
    rounds = 3
    media = cached_media(a.media, *((4, 1, 1) if a.quick else (40, 3, 2)))
    jobs = jobs_for(media, 6 if a.quick else a.files, Prompts(random.Random(24)))
    size = sum(len(j.files[0]) for j in jobs)
    walls: dict[bool, list[float]] = {False: [], True: []}
    cpus: dict[bool, list[float]] = {False: [], True: []}
    archived: dict[bool, list[float]] = {False: [], True: []}
    for r in range(rounds):
        for on in ((False, True) if r % 2 == 0 else (True, False)):
            run = folder / f"throughput-{r}-{'on' if on else 'off'}"
            began = time.time()
            usage = asyncio.run(archive(run, jobs, thumbnails=on, tree=a.tree, rps=a.rps))
            # The archiving itself ends with the last asset; a burst run then still makes the queued thumbnails.
            with contextlib.closing(sqlite3.connect(run / "state" / "archiver.db")) as db:
                archived[on].append(db.execute("SELECT MAX(archived_at) FROM assets").fetchone()[0] - began)
            made = len(list((run / "archive/_thumbs").rglob("*.webp"))) if on else 0
            print(f"  round {r + 1}, thumbnails {'on ' if on else 'off'}: {usage.wall:.1f} s, last asset archived "
                  f"at {archived[on][-1]:.1f} s, {usage.cpu:.1f} CPU s"
                  + (f", {made} thumbnails" if on else ""), flush=True)
            walls[on].append(usage.wall)
            cpus[on].append(usage.cpu)
            shutil.rmtree(run, ignore_errors=True)
    print(f"\n{len(jobs)} tasks, {size / MB:,.0f} MB of real media, kie at {a.rps or 'its default'} requests/s, "
          f"daemon of {a.tree} at {revision(a.tree)}; "
          f"wall of `archiver run --burst`, start-up included; medians of {rounds}, runs alternating\n")
    print("| thumbnails | last asset archived | files/s | MB/s | process wall | CPU s (with the thumbnail process) |\n"
          "|---|--:|--:|--:|--:|--:|")
    for on in (False, True):
        done = statistics.median(archived[on])
        print(f"| {'on' if on else 'off'} | {done:.1f} s | {len(jobs) / done:.1f} | {size / MB / done:.0f} "
              f"| {statistics.median(walls[on]):.1f} s | {statistics.median(cpus[on]):.1f} |")
    ratio = statistics.median(archived[False]) / statistics.median(archived[True])
    wall_ratio = statistics.median(walls[False]) / statistics.median(walls[True])
    print(f"\nthroughput on against off: **{ratio:.2f}×** to the last asset archived (target ≥ 0.9×); "
          f"{wall_ratio:.2f}× by process wall, which includes making the queued thumbnails before a burst exits")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tree", type=Path, default=ROOT, help="the archiver tree to measure (default: this one)")
    p.add_argument("--media", type=Path, default=Path("/tmp/archiver-bench-media"), help="media cache, kept")
    p.add_argument("--dir", type=Path, default=Path("/tmp"), help="the run's folder goes here, and is removed")
    p.add_argument("--files", type=int, default=300, help="real files archived by the daemon")
    p.add_argument("--rps", type=float, default=None,
                   help="--throughput: the fake kie entry's requests_per_second (default kie's own: the polls "
                        "then set the pace; 200 lets the downloads set it)")
    p.add_argument("--assets", type=int, default=100_000, help="index entries in all")
    p.add_argument("--days", type=int, default=60)
    p.add_argument("--runs", type=int, default=5, help="page loads measured (median taken)")
    p.add_argument("--search-box", default='input[type="search"]', help="CSS selector of the page's search field")
    p.add_argument("--quick", action="store_true", help="a few files and runs: proves the bench works")
    p.add_argument("--throughput", action="store_true", help="measure archiving with thumbnails on against off")
    p.add_argument("--keep", action="store_true", help="keep the run's folder (archive, logs) and print where")
    a = p.parse_args()
    a.tree = a.tree.resolve()
    folder = Path(tempfile.mkdtemp(prefix="archiver-bench-gallery-", dir=a.dir))
    try:
        (throughput if a.throughput else page_weight)(a, folder)
    finally:
        if a.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
