"""The search index at scale: 100,000 assets over 60 days, prompts of 12–25 words from a Zipf-like vocabulary.

    .venv/bin/python bench/search_index.py [assets] [days]     # about half a minute at 100,000
Prints: the index's size, its shards (every day before today: today is in no shard), what a one-word
query reads (the page's rule), the time of a full build, the loop's rounds after 1, 5 and 50 new
assets today (files and shards written: no shard), and the once-a-day fold of today into the shards
after midnight (shards written, time, peak RSS), each in a process of its own that holds what the
daemon's loop would. Writes to a local store in a temp dir. The rounds run the loop's own `stage`,
`flush` and `fold` (archiver/browse/index.py) on a day made here: the state DB is left out, so the
figures are the index's alone.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from archiver.archive_format.days import Day, asset_entry  # noqa: E402
from archiver.archive_format.keys import day_key  # noqa: E402
from archiver.archive_format.search import (MANIFEST_KEY, SEARCH_PREFIX, FullBuild, read_manifest,  # noqa: E402
                                            shard_key, shard_of, tokens)
from archiver.browse.index import IndexLoop  # noqa: E402
from archiver.browse.search_index import SearchWriter, day_before  # noqa: E402
from archiver.storage.local import LocalStorage  # noqa: E402

SEED = 2026
TODAY = "2026-12-05"
CLOSED = day_before(TODAY)  # the newest day in the shards
RARE = "thornquux"  # occurs in one asset, 50 days back; "th" is one of the biggest groups
MODELS = ["seedream-4.5", "gpt-image-1", "flux-1.1-pro", "veo-3", "kling-2.1", "sora-2", "midjourney-v7", "imagen-4"]
PROVIDERS = [("kie", "kie"), ("pod", "apipod"), ("ace", "acedata"), ("fal", "fal"), ("rep", "replicate")]
PROJECTS = [f"project-{p}" for p in ("atlas", "borealis", "cinder", "dune", "ember", "fjord", "glacier", "harbor")]
SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "an", "el", "or", "ish", "th", "dr", "gon", "ber",
             "ly", "qu", "ux", "ph", "st", "ch", "ea"]


class Counting(LocalStorage):
    """A local store that counts what a run reads and writes."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.gets = self.got = self.puts = self.put = self.shards = self.shard_bytes = 0

    async def get(self, key: str) -> bytes:
        data = await super().get(key)
        self.gets, self.got = self.gets + 1, self.got + len(data)
        return data

    async def put_bytes(self, key: str, data: bytes, *, content_type: str, if_absent: bool = False) -> None:
        await super().put_bytes(key, data, content_type=content_type, if_absent=if_absent)
        self.puts, self.put = self.puts + 1, self.put + len(data)
        if key.startswith(SEARCH_PREFIX) and key != MANIFEST_KEY:
            self.shards, self.shard_bytes = self.shards + 1, self.shard_bytes + len(data)


def vocabulary(rng: random.Random, size: int = 20_000) -> list[str]:
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))))
    return sorted(words)


def zipf() -> tuple[list[str], list[float]]:
    """The vocabulary, most common first (rank is random, not alphabetical), and its cumulative weights."""
    rng = random.Random(SEED)
    vocab = vocabulary(rng)
    rng.shuffle(vocab)
    return vocab, list(itertools.accumulate(1 / (rank + 1) ** 1.07 for rank in range(len(vocab))))


def make_days(assets: int, days: int, today: str = TODAY) -> list[Day]:
    rng = random.Random(SEED)
    vocab, weights = zipf()
    end = time.mktime(time.strptime(today, "%Y-%m-%d")) - time.timezone
    out = []
    for d in range(days):
        date = time.strftime("%Y-%m-%d", time.gmtime(end - (days - 1 - d) * 86400))
        out.append(Day(date, [_asset(rng, vocab, weights, date, i) for i in range(assets // days)]))
    rare = out[days - 1 - 50].assets[7] if days > 50 else out[0].assets[7]
    rare["prompt"] += f" {RARE}"
    return out


def _asset(rng: random.Random, vocab: list[str], weights: list[float], date: str, i: int) -> dict[str, Any]:
    provider, kind = rng.choice(PROVIDERS)
    model = rng.choice(MODELS)
    prompt = " ".join(rng.choices(vocab, cum_weights=weights, k=rng.randint(12, 25)))
    labels = {"project": rng.choice(PROJECTS)} | ({"client": f"client{rng.randint(1, 40)}"} if i % 3 else {})
    task = f"{date}-{i:05d}"
    return asset_entry(key=f"{provider}/{date.replace('-', '/')}/{task}/00.png", sidecar="", provider=provider,
                       provider_type=kind, task_id=task, index=0, count=1, media="video" if "veo" in model else "image",
                       model=model, prompt=prompt, labels=labels, content_type="image/png", bytes=1,
                       sha256="", archived_at=f"{date}T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z")


async def query_bytes(storage: LocalStorage, word: str) -> tuple[int, int, int]:
    """(bytes, files, hits) of one query word: the manifest, then the page's rule for shards."""
    [w] = tokens(word)
    manifest = await storage.get(MANIFEST_KEY)
    ids = set(read_manifest(manifest).shards)
    wanted = {s for s in ids if s.startswith(w) and len(s) > len(w)}
    if (own := shard_of(w, ids)) is not None:
        wanted.add(own)
    total, hits = len(manifest), 0
    for s in wanted:
        data = await storage.get(shard_key(s))
        total += len(data)
        hits += sum(len(ns) for t, dates in json.loads(data)["tokens"].items() if t.startswith(w)
                    for ns in dates.values())
    return total, len(wanted) + 1, hits


def rss_peak_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def loop_without_db(storage: LocalStorage, today: str) -> IndexLoop:
    """The daemon's index loop, driven here through `stage`, `flush` and `fold`, which need no state DB."""
    return IndexLoop(None, storage, today=lambda: today)  # type: ignore[arg-type]


async def incremental(root: Path, new: int) -> None:
    """One loop round after `new` assets today, in a fresh process: what the daemon would hold and do."""
    before = rss_peak_kib()
    storage = Counting(root)
    loop = loop_without_db(storage, TODAY)
    await loop.search.load()
    today = Day(TODAY, json.loads(await storage.get(day_key(TODAY)))["assets"])
    rng = random.Random(SEED + new)
    vocab, weights = zipf()
    start = len(today.assets)
    today.assets += [_asset(rng, vocab, weights, today.date, start + i) for i in range(new)]
    held = rss_peak_kib()
    storage.gets = storage.got = 0  # what the round reads, not the manifest and today's file before it
    took = time.perf_counter()
    await loop.stage(today, (0, len(today.assets), 0, 0, 0.0, 0.0, 0))
    written = await loop.flush()
    took = time.perf_counter() - took
    print(json.dumps({"seconds": took, "written": written, "shards": storage.shards, "gets": storage.gets,
                      "read": storage.got, "put": storage.put, "rss_before_kib": held, "rss_peak_kib": rss_peak_kib(),
                      "start_kib": before}))


async def fold(root: Path) -> None:
    """The first round after midnight: today (with the assets the rounds above added) goes into the shards."""
    before = rss_peak_kib()
    storage = Counting(root)
    loop = loop_without_db(storage, _next_day(TODAY))
    await loop.search.load()
    assets = len(json.loads(await storage.get(day_key(TODAY)))["assets"])
    storage.gets = storage.got = 0
    took = time.perf_counter()
    written = await loop.fold({TODAY: (0, assets, 0, 0, 0.0, 0.0, 0)}, TODAY)
    took = time.perf_counter() - took
    through = read_manifest(await storage.get(MANIFEST_KEY)).through
    print(json.dumps({"seconds": took, "written": written, "shards": storage.shards, "shard_bytes": storage.shard_bytes,
                      "gets": storage.gets, "read": storage.got, "put": storage.put, "assets": assets,
                      "through": through, "rss_peak_kib": rss_peak_kib(), "start_kib": before}))


def _next_day(date: str) -> str:
    return str(dt.date.fromisoformat(date) + dt.timedelta(days=1))


async def main(assets: int, days: int) -> None:
    with tempfile.TemporaryDirectory(prefix="archiver-bench-search-") as tmp:
        root = Path(tmp)
        made = time.perf_counter()
        all_days = make_days(assets, days)
        print(f"{sum(len(d.assets) for d in all_days):,} assets over {days} days generated"
              f" in {time.perf_counter() - made:.1f} s")
        storage = Counting(root)
        started = time.perf_counter()
        build = FullBuild()
        for day in all_days:
            if day.date <= CLOSED:  # as the loop and a rebuild do: today is in no shard
                build.add(day)
        added = time.perf_counter() - started
        await SearchWriter(storage).write_all(build, CLOSED)
        full = time.perf_counter() - started
        for day in all_days:  # the day files, for the processes below
            await storage.put_bytes(day_key(day.date), day.encode(), content_type="application/json")
        del all_days, build
        sizes = sorted(p.stat().st_size for p in (root / "_index/search").iterdir() if p.name != "manifest.json")
        print(f"full build: {full:.1f} s ({added:.1f} s tokenizing), {len(sizes):,} shards + manifest,"
              f" {sum(sizes) / 2**20:.1f} MiB in all, largest {sizes[-1] / 1024:.0f} KiB,"
              f" median {sizes[len(sizes) // 2] / 1024:.1f} KiB, manifest"
              f" {(root / '_index/search/manifest.json').stat().st_size / 1024:.1f} KiB")
        for word in (RARE, "thornq", "th", vocab_word(0), vocab_word(5000)):
            total, files, hits = await query_bytes(storage, word)
            print(f"query {word!r}: reads {files} files, {total / 1024:.1f} KiB; {hits:,} entries match")
        r = await child("--full", root)
        print(f"full build from the {days} day files in a process of its own (as the daemon does for an archive"
              f" without a search index): {r['seconds']:.1f} s, peak RSS {r['rss_peak_kib'] / 1024:.0f} MiB"
              f" ({r['start_kib'] / 1024:.0f} MiB after its imports)")
        for new in (1, 5, 50):
            r = await child("--incremental", root, str(new))  # each round after the one before
            print(f"round after {new} new assets today: {r['shards']:,} shards written, {r['written']:,} files"
                  f" ({r['put'] / 1024:.0f} KiB), {r['gets']:,} files read ({r['read'] / 1024:.0f} KiB),"
                  f" {r['seconds']:.2f} s; peak RSS {r['rss_peak_kib'] / 1024:.0f} MiB"
                  f" ({r['rss_before_kib'] / 1024:.0f} MiB before the round, with today's day)")
        r = await child("--fold", root)
        print(f"fold after midnight, today's {r['assets']:,} assets into the shards: {r['shards']:,} shards written"
              f" ({r['shard_bytes'] / 2**20:.1f} MiB) + the manifest, {r['gets']:,} files read"
              f" ({r['read'] / 2**20:.1f} MiB), {r['seconds']:.2f} s; peak RSS {r['rss_peak_kib'] / 1024:.0f} MiB"
              f" ({r['start_kib'] / 1024:.0f} MiB after its imports); through {r['through']}")


async def child(*args: Any) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(sys.executable, __file__, *map(str, args),
                                                stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    return dict(json.loads(out))


async def full(root: Path) -> None:
    """The loop's full build (an archive without a search index): day files one at a time, then every shard."""
    start = rss_peak_kib()
    storage = LocalStorage(root)
    took = time.perf_counter()
    build = FullBuild()
    for path in sorted((root / "_index/days").iterdir()):
        doc = json.loads(await storage.get(f"_index/days/{path.name}"))
        if doc["date"] <= CLOSED:
            build.add(Day(doc["date"], doc["assets"]))
        del doc
    await SearchWriter(storage).write_all(build, CLOSED)
    print(json.dumps({"seconds": time.perf_counter() - took, "rss_peak_kib": rss_peak_kib(), "start_kib": start}))


def vocab_word(rank: int) -> str:
    return zipf()[0][rank]


if __name__ == "__main__":
    if sys.argv[1:2] == ["--incremental"]:
        asyncio.run(incremental(Path(sys.argv[2]), int(sys.argv[3])))
    elif sys.argv[1:2] == ["--fold"]:
        asyncio.run(fold(Path(sys.argv[2])))
    elif sys.argv[1:2] == ["--full"]:
        asyncio.run(full(Path(sys.argv[2])))
    else:
        args = [int(a) for a in sys.argv[1:3]]
        asyncio.run(main(*(args + [100_000, 60][len(args):])))
