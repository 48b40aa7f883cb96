"""The scenarios: each starts its fakes, runs the real daemon, and returns table rows."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from archiver.config import DownloadConfig
from fakes import result_url
from measure import Child, Usage, free_port, percentile, rss_mib, wait_port

PY = sys.executable
HERE = Path(__file__).resolve().parent
CONCURRENCY = DownloadConfig().concurrency  # curl gets the daemon's default parallelism
MiB = 1 << 20


@dataclass
class Row:
    name: str
    wall: float
    mb_s: float | None
    assets_s: float | None
    cpu: float
    rss_mib: float | None
    note: str = ""


@dataclass(frozen=True)
class Plan:
    """What a throughput scenario downloads: `tasks` × `files` results of `size` bytes."""

    tasks: int
    files: int
    size: int
    kind: str

    @property
    def total(self) -> int:
        return self.tasks * self.files * self.size


class Rig:
    """One scenario's folder plus its fake API and CDN, each in a process of its own so
    that their CPU never counts as the daemon's."""

    def __init__(self, base: Path, *, files: int = 1, size: int = MiB, kind: str = "png",
                 running_polls: int = 0, profile: Path | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="archiver-bench-", dir=base))
        self.profile = profile
        self.env = dict(os.environ, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench")
        self.cdn_url = f"http://127.0.0.1:{free_port()}"
        self.api_url = f"http://127.0.0.1:{free_port()}"
        fake = [PY, str(HERE / "fakes.py")]
        self.cdn = Child([*fake, "cdn", "--port", self.cdn_url.rpartition(":")[2]], self.dir / "cdn.log")
        self.api = Child([*fake, "api", "--port", self.api_url.rpartition(":")[2], "--cdn", self.cdn_url,
                          "--files", str(files), "--size", str(size), "--kind", kind,
                          "--running-polls", str(running_polls)], self.dir / "api.log")
        self.moto: Child | None = None
        self.daemons: list[Child] = []
        self.storage: dict[str, Any] = {"backend": "local", "local": {"root": str(self.dir / "archive")}}
        for url in (self.cdn_url, self.api_url):
            wait_port(int(url.rpartition(":")[2]))

    def __enter__(self) -> Rig:
        return self

    def __exit__(self, *exc: object) -> None:
        for child in (*self.daemons, self.api, self.cdn, self.moto):
            if child is not None and child.proc.returncode is None:
                child.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def use_s3(self) -> None:
        """moto's server in its own process, so its CPU is reported apart from the daemon's."""
        import boto3

        port = free_port()
        self.moto = Child([PY, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], self.dir / "moto.log")
        wait_port(port)
        endpoint = f"http://127.0.0.1:{port}"
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bench",
                     aws_secret_access_key="bench").create_bucket(Bucket="bench")
        self.storage = {"backend": "s3", "s3": {"bucket": "bench", "prefix": "ai/", "endpoint_url": endpoint,
                                                "region": "us-east-1"}}

    def config(self, rps: float | None, inbox: list[str]) -> Path:
        kie: dict[str, Any] = {"type": "kie", "api_key": "bench", "base_url": self.api_url}
        if rps is not None:
            kie["requests_per_second"] = rps
        doc = {"state_dir": str(self.dir / "state"), "inbox": {"path": str(self.dir / "inbox.txt")},
               "providers": {"kie": kie}, "download": {"allow_addresses": ["127.0.0.0/8"]},
               "storage": self.storage}
        (self.dir / "inbox.txt").write_text("".join(f"kie {task_id}\n" for task_id in inbox))
        path = self.dir / "config.yaml"
        path.write_text(yaml.safe_dump(doc))
        return path

    def daemon(self, *extra: str) -> Child:
        argv = [PY, "-m", "archiver", "run", "-c", str(self.dir / "config.yaml"), *extra]
        if self.profile:
            # Launched under py-spy (attaching to a running process is refused here); the
            # figures of a profiled run include py-spy and are marked as such.
            out = self.profile / f"{self.dir.name}.txt"
            argv = ["py-spy", "record", "--nonblocking", "--format", "raw", "-r", "200", "-o", str(out),
                    "--", *argv]
        self.daemons.append(Child(argv, self.dir / "daemon.log", self.env))
        return self.daemons[-1]

    def status(self) -> dict[str, Any] | None:
        done = subprocess.run([PY, "-m", "archiver", "-c", str(self.dir / "config.yaml"), "status", "--json"],
                              capture_output=True, env=self.env, check=False)
        return json.loads(done.stdout) if done.returncode == 0 else None

    def seen(self, url: str) -> dict[str, Any]:
        """What a fake saw (GET /_bench/log)."""
        with urllib.request.urlopen(f"{url}/_bench/log", timeout=30) as resp:
            return dict(json.load(resp))


def throughput(name: str, plan: Plan, *, base: Path, rps: float, s3: bool = False,
               curl: bool = True, profile: Path | None = None) -> list[Row]:
    """The daemon in --burst on tasks that succeed at their first poll, then curl on the same URLs."""
    with Rig(base, files=plan.files, size=plan.size, kind=plan.kind, profile=profile) as rig:
        if s3:
            rig.use_s3()
        ids = [f"t{i:05d}" for i in range(plan.tasks)]
        rig.config(rps, ids)
        helpers = [c for c in (rig.cdn, rig.moto) if c is not None]
        before = [c.cpu() for c in helpers]
        usage = rig.daemon("--burst").wait()
        spent = [c.cpu() - b for c, b in zip(helpers, before, strict=True)]
        row = _row(f"{name}: archiver", usage, plan)
        row.note = _check(rig.status(), plan.tasks, usage) + f"; CDN {spent[0]:.1f} CPU s"
        if s3:
            share = spent[1] / (usage.cpu + sum(spent))
            row.note += f"; moto {spent[1]:.1f} CPU s = {share:.0%} of daemon+CDN+moto CPU"
        if profile:
            row.note += "; PROFILED (py-spy)"
        shutil.rmtree(rig.dir / "archive", ignore_errors=True)
        if not curl or s3:
            return [row]
        urls = [result_url(rig.cdn_url, t, i, plan.size, plan.kind) for t in ids for i in range(plan.files)]
        other = _curl(rig.dir, urls, plan, name)
        if other.mb_s and row.mb_s:
            row.note = f"**{row.mb_s / other.mb_s:.2f}× curl**; " + row.note
        return [row, other]


def _row(name: str, usage: Usage, plan: Plan) -> Row:
    assets = plan.tasks * plan.files
    return Row(name, usage.wall, plan.total / usage.wall / 1e6, assets / usage.wall, usage.cpu, usage.peak_rss_mib)


def _check(status: dict[str, Any] | None, tasks: int, usage: Usage) -> str:
    counts = (status or {}).get("counts", {})
    if usage.code == 0 and counts.get("archived") == tasks:
        return f"{tasks} archived"
    return f"INCOMPLETE: exit {usage.code}, counts {counts}"


def _curl(work: Path, urls: list[str], plan: Plan, name: str) -> Row:
    """curl --parallel to disk, then sha256sum of every file: timed together."""
    out = work / "curl"
    out.mkdir()
    paths = [out / f"{i:06d}.{plan.kind}" for i in range(len(urls))]
    (work / "curl.cfg").write_text("".join(f'url = "{u}"\noutput = "{p}"\n' for u, p in zip(urls, paths, strict=True)))
    start = time.monotonic()
    got = Child(["curl", "--parallel", "--parallel-max", str(CONCURRENCY), "--silent", "--show-error",
                 "--fail", "--config", str(work / "curl.cfg")], work / "curl.log").wait()
    sums = Child(["sha256sum", *map(str, paths)], work / "sha256.txt").wait()
    wall = time.monotonic() - start
    ok = got.code == 0 and sums.code == 0 and sum(p.stat().st_size for p in paths) == plan.total
    shutil.rmtree(out, ignore_errors=True)
    usage = Usage(wall, got.cpu + sums.cpu, max(got.peak_rss_mib, sums.peak_rss_mib), 0)
    row = _row(f"{name}: curl + sha256sum", usage, plan)
    row.note = f"--parallel-max {CONCURRENCY}" + ("" if ok else "; FAILED, see curl.log")
    return row


def waiting(tasks: int, *, base: Path, seconds: float, warmup: float) -> Row:
    """Tasks that never finish, on kie's default schedule and rate: what idling costs."""
    with Rig(base, running_polls=-1) as rig:
        rig.config(None, [f"w{i:05d}" for i in range(tasks)])
        daemon = rig.daemon()
        time.sleep(warmup)
        cpu0, mono0, wall0 = daemon.cpu(), time.monotonic(), time.time()
        time.sleep(max(0.0, seconds - warmup))
        cpu1, mono1, wall1, rss = daemon.cpu(), time.monotonic(), time.time(), rss_mib(daemon.pid)
        usage = daemon.stop()
        polls = sum(1 for seen in rig.seen(rig.api_url).values() for at, _ in seen if wall0 <= at <= wall1)
        span = mono1 - mono0
        per_min = (cpu1 - cpu0) / span * 60
        note = (f"{per_min:.2f} CPU s/min = {per_min / 60:.1%} of a core while waiting; "
                f"first {warmup:.0f}s (start, intake): {cpu0:.2f} CPU s; {polls / span:.1f} polls/s; "
                f"RSS at end {rss:.0f} MiB")
        return Row(f"3 waiting ×{tasks}", usage.wall, None, None, usage.cpu, usage.peak_rss_mib, note)


def latency(tasks: int, *, base: Path, seed: int = 5) -> Row:
    """Lines appended one at a time to a running daemon; each task succeeds at its 2nd poll."""
    with Rig(base, size=256 * 1024, running_polls=1) as rig:
        rig.config(None, [])
        daemon = rig.daemon()
        while rig.status() is None:  # the state DB exists once the daemon is up
            time.sleep(0.2)
        time.sleep(1.0)
        rng, appended = random.Random(seed), {}
        with open(rig.dir / "inbox.txt", "a") as inbox:
            for i in range(tasks):
                task_id = f"lat{i:04d}"
                appended[task_id] = time.time()
                inbox.write(f"kie {task_id}\n")
                inbox.flush()
                time.sleep(rng.uniform(0.1, 0.5))  # spread so lines do not align with the inbox tick
        deadline = time.monotonic() + 120
        while len(rig.seen(rig.cdn_url)) < tasks and time.monotonic() < deadline:
            time.sleep(0.5)
        polls, firsts = rig.seen(rig.api_url), rig.seen(rig.cdn_url)
        usage = daemon.stop()
        to_poll = [polls[t][0][0] - at for t, at in appended.items() if t in polls]
        to_byte = [firsts[f"{t}-0.png"] - next(at for at, s in polls[t] if s == "success")
                   for t in appended if f"{t}-0.png" in firsts]
        note = (f"inbox→first poll p50 {_ms(to_poll, 50)}, p95 {_ms(to_poll, 95)}; success→first byte"
                f" p50 {_ms(to_byte, 50)}, p95 {_ms(to_byte, 95)}; {len(to_byte)}/{tasks} downloaded")
        return Row(f"5 latency ×{tasks}", usage.wall, None, None, usage.cpu, usage.peak_rss_mib, note)


def _ms(values: list[float], q: float) -> str:
    return f"{percentile(values, q) * 1e3:.1f} ms"
