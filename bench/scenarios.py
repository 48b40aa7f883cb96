"""The scenarios: each starts its fakes, runs the real daemon, and returns table rows."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from fakes import result_url
from measure import Child, Usage, busy_seconds, cpu_seconds, free_port, percentile, rss_mib, wait_port

from archiver.config import DownloadConfig

PY, HERE, MiB = sys.executable, Path(__file__).resolve().parent, 1 << 20
CONCURRENCY = DownloadConfig().concurrency  # curl gets the daemon's default parallelism


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

    def row(self, name: str, usage: Usage, note: str) -> Row:
        total, assets = self.tasks * self.files * self.size, self.tasks * self.files
        return Row(name, usage.wall, total / usage.wall / 1e6, assets / usage.wall, usage.cpu,
                   usage.peak_rss_mib, note)


class Rig:
    """A scenario's folder, fake API and CDN (and moto), each a process of its own so that
    their CPU never counts as the daemon's. A context manager: it stops them and cleans up."""

    def __init__(self, base: Path, profile: Path | None, *, files: int = 1, size: int = MiB,
                 kind: str = "png", running_polls: int = 0, cdn_rate: float = 0.0) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="archiver-bench-", dir=base))
        self.profile, self.children, self.python = profile, list[Child](), PY
        self.env = dict(os.environ, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench")
        self.storage: dict[str, Any] = {"backend": "local", "local": {"root": str(self.dir / "archive")}}
        fake = [PY, str(HERE / "fakes.py")]
        self.cdn_url, self.cdn = self._serve("cdn", lambda port: [*fake, "cdn", port, "--rate", str(cdn_rate)])
        self.api_url, self.api = self._serve("api", lambda port: [
            *fake, "api", port, "--cdn", self.cdn_url, "--files", str(files), "--size", str(size),
            "--kind", kind, "--running-polls", str(running_polls)])

    def _serve(self, name: str, argv: Callable[[str], list[str]]) -> tuple[str, Child]:
        port = free_port()
        self.children.append(Child(argv(str(port)), self.dir / f"{name}.log", self.env))
        wait_port(port)
        return f"http://127.0.0.1:{port}", self.children[-1]

    def __enter__(self) -> Rig:
        return self

    def __exit__(self, *exc: object) -> None:
        for child in self.children:
            if child.proc.returncode is None:
                child.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def use_s3(self) -> Child:
        url, moto = self._serve("moto", lambda port: [PY, "-m", "moto.server", "-H", "127.0.0.1", "-p", port])
        # In a child of its own: a daemon's ru_maxrss starts at this process's peak (vfork + exec
        # carry it over), and a boto3 client here would lift that floor to ~67 MiB.
        subprocess.run([PY, "-c", "import sys, boto3; boto3.client('s3', endpoint_url=sys.argv[1], "
                        "region_name='us-east-1', aws_access_key_id='bench', aws_secret_access_key='bench')"
                        ".create_bucket(Bucket='bench')", url], check=True)
        self.storage = {"backend": "s3", "s3": {"bucket": "bench", "prefix": "ai/", "endpoint_url": url,
                                                "region": "us-east-1"}}
        return moto

    def daemon(self, rps: float | None, inbox: list[str], *extra: str, config: dict[str, Any] | None = None,
               python: str = PY) -> Child:
        """Write the config and inbox, then start `archiver run`; rps None keeps kie's default.

        `config` adds top-level sections (e.g. `http`) to the generated config; `python` is the
        interpreter whose archiver runs (another tree's, for `--against`)."""
        kie = {"type": "kie", "api_key": "bench", "base_url": self.api_url}
        doc = {"state_dir": str(self.dir / "state"), "inbox": {"path": str(self.dir / "inbox.txt")},
               "providers": {"kie": kie | ({"requests_per_second": rps} if rps else {})},
               "download": {"allow_addresses": ["127.0.0.0/8"]}, "storage": self.storage} | (config or {})
        (self.dir / "config.yaml").write_text(yaml.safe_dump(doc))
        (self.dir / "inbox.txt").write_text("".join(f"kie {task_id}\n" for task_id in inbox))
        self.python = python
        argv = [python, "-m", "archiver", "run", "-c", str(self.dir / "config.yaml"), *extra]
        if self.profile:  # attaching is refused here, so py-spy starts the daemon
            spy = shutil.which("py-spy", path=f"{Path(PY).parent}{os.pathsep}{os.environ.get('PATH', '')}")
            argv = [spy or "py-spy", "record", "--threads", "--nonblocking", "--format", "raw", "-r", "200",
                    "-o", str(self.profile / f"{self.dir.name}.txt"), "--", *argv]
        self.children.insert(0, Child(argv, self.dir / "daemon.log", self._env(python), cwd=self.dir))
        return self.children[0]

    def _env(self, python: str) -> dict[str, str]:
        """`-m archiver` imports from the working folder first: children run in the rig's folder, with
        this tree on PYTHONPATH, or for another tree's python (`--against`) with nothing there."""
        if python == PY:
            return self.env | {"PYTHONPATH": str(HERE.parent)}
        return {k: v for k, v in self.env.items() if k != "PYTHONPATH"}

    def pid(self, daemon: Child) -> int:
        """The daemon's own pid, py-spy's child when profiling."""
        if not self.profile:
            return daemon.pid
        return int(Path(f"/proc/{daemon.pid}/task/{daemon.pid}/children").read_text().split()[0])

    def status(self) -> dict[str, Any] | None:
        done = subprocess.run([self.python, "-m", "archiver", "-c", str(self.dir / "config.yaml"), "status", "--json"],
                              capture_output=True, env=self._env(self.python), cwd=self.dir, check=False)
        return json.loads(done.stdout) if done.returncode == 0 else None

    def seen(self, url: str) -> dict[str, Any]:
        with urllib.request.urlopen(f"{url}/_bench/log", timeout=30) as resp:
            return dict(json.load(resp))


def throughput(name: str, plan: Plan, base: Path, profile: Path | None, *, rps: float, s3: bool = False,
               curl: bool = True, config: dict[str, Any] | None = None) -> list[Row]:
    """The daemon in --burst on tasks that succeed at their first poll, then curl on the same URLs.

    `config` adds top-level sections to the daemon's config (e.g. `state` for PostgreSQL)."""
    with Rig(base, profile, files=plan.files, size=plan.size, kind=plan.kind) as rig:
        helpers = [rig.cdn, *([rig.use_s3()] if s3 else [])]
        ids = [f"t{i:05d}" for i in range(plan.tasks)]
        before, busy = [c.cpu() for c in helpers], busy_seconds()
        usage = rig.daemon(rps, ids, "--burst", config=config).wait()
        spent = [c.cpu() - b for c, b in zip(helpers, before, strict=True)]
        others = busy_seconds() - busy - usage.cpu - sum(spent)
        counts = (rig.status() or {}).get("counts", {})
        note = (f"{plan.tasks} archived" if usage.code == 0 and counts.get("archived") == plan.tasks
                else f"INCOMPLETE: exit {usage.code}, {counts}")
        note += f"; CDN {spent[0]:.1f} CPU s; others {others:.1f} CPU s"
        if s3:
            note += f"; moto {spent[1]:.1f} CPU s = {spent[1] / (usage.cpu + sum(spent)):.0%} of all CPU"
        rows = [plan.row(f"{name}: archiver", usage, note + ("; PROFILED" if profile else ""))]
        shutil.rmtree(rig.dir / "archive", ignore_errors=True)
        if curl and not s3:
            urls = [result_url(rig.cdn_url, t, i, plan.size, plan.kind) for t in ids for i in range(plan.files)]
            row, alone = curl_parallel(rig.dir, urls, plan, name)
            rows.append(row)
            # Same bytes, so the throughput ratio is the inverse ratio of wall times.
            rows[0].note = (f"**{row.wall / rows[0].wall:.2f}× curl + sha256sum**, {alone / rows[0].wall:.2f}× "
                            "curl alone; " + rows[0].note)
        if not s3:
            floor = disk_alone(rig.dir / "disk", plan)
            rows.append(plan.row(f"{name}: the disk alone", Usage(floor, 0.0, 0.0, 0), "same bytes and folders, "
                                 f"fsynced, {CONCURRENCY} writers, no network, no hashing"))
            rows[0].note = f"**{floor / rows[0].wall:.2f}× the disk alone**; " + rows[0].note
        return rows


def curl_parallel(work: Path, urls: list[str], plan: Plan, name: str) -> tuple[Row, float]:
    """curl --parallel to disk, then sha256sum of every file: timed together; also curl's own time."""
    (work / "curl").mkdir()
    paths = [str(work / "curl" / f"{i:06d}.{plan.kind}") for i in range(len(urls))]
    (work / "curl.cfg").write_text("".join(f'url = "{u}"\noutput = "{p}"\n' for u, p in zip(urls, paths, strict=True)))
    busy = busy_seconds()
    got = Child(["curl", "--parallel", "--parallel-max", str(CONCURRENCY), "-sS", "--fail", "--config",
                 str(work / "curl.cfg")], work / "curl.log").wait()
    sums = Child(["sha256sum", *paths], work / "sha256.txt").wait()
    others = busy_seconds() - busy - got.cpu - sums.cpu  # the CDN's share included
    ok = got.code == sums.code == 0 and sum(os.path.getsize(p) for p in paths) == plan.tasks * plan.files * plan.size
    shutil.rmtree(work / "curl", ignore_errors=True)
    both = Usage(got.wall + sums.wall, got.cpu + sums.cpu, max(got.peak_rss_mib, sums.peak_rss_mib), 0)
    note = f"curl {got.wall:.1f} s + sha256sum {sums.wall:.1f} s; CDN + others {others:.1f} CPU s"
    note += "" if ok else "; FAILED, see curl.log"
    return plan.row(f"{name}: curl + sha256sum", both, note), got.wall


def disk_alone(folder: Path, plan: Plan, writers: int = CONCURRENCY) -> float:
    """Seconds to write the plan's bytes in the archive's shape with no network and no hashing: a
    folder per task, each asset and a small sidecar written and fsynced, then the folder, `writers`
    at a time. What an archiver that keeps every fsync needs at least (curl's files stay unsynced).

    The bytes are one 1 MiB block written again and again: the bench's own peak RSS becomes the
    floor of every child's ru_maxrss (fork + exec carry it over), so it must stay small."""
    block, sidecar = os.urandom(min(plan.size, MiB)), b"{}" * 256

    def put(path: Path, size: int, body: bytes) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for at in range(0, size, len(body)):
                os.write(fd, memoryview(body)[:size - at])
            os.fsync(fd)
        finally:
            os.close(fd)

    def task(n: int) -> None:
        home = folder / f"t{n:05d}"
        home.mkdir()
        for i in range(plan.files):
            put(home / f"{i}.{plan.kind}", plan.size, block)
            put(home / f"{i}.{plan.kind}.json", len(sidecar), sidecar)
        fd = os.open(home, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    folder.mkdir()
    subprocess.run(["sync"], check=True)
    start = time.monotonic()
    with ThreadPoolExecutor(writers) as pool:
        list(pool.map(task, range(plan.tasks)))
    took = time.monotonic() - start
    shutil.rmtree(folder)
    return took


def waiting(tasks: int, base: Path, profile: Path | None, *, seconds: float, warmup: float) -> Row:
    """Tasks that never finish, on kie's default schedule and rate: what waiting costs."""
    with Rig(base, profile, running_polls=-1) as rig:
        daemon = rig.daemon(None, [f"w{i:05d}" for i in range(tasks)])
        time.sleep(warmup)
        pid = rig.pid(daemon)
        cpu0, mono0, wall0 = cpu_seconds(pid), time.monotonic(), time.time()
        time.sleep(max(0.0, seconds - warmup))
        cpu1, span, wall1, rss = cpu_seconds(pid), time.monotonic() - mono0, time.time(), rss_mib(pid)
        os.kill(pid, signal.SIGTERM)
        usage = daemon.wait()
        polls = sum(wall0 <= at <= wall1 for seen in rig.seen(rig.api_url).values() for at, _ in seen)
        per_min = (cpu1 - cpu0) / span * 60
        note = (f"{per_min:.2f} CPU s/min = {per_min / 60:.1%} of a core while waiting; first {warmup:.0f} s "
                f"(start, intake) {cpu0:.2f} CPU s; {polls / span:.1f} polls/s; RSS at end {rss:.0f} MiB")
        return Row(f"3 waiting ×{tasks}", usage.wall, None, None, usage.cpu, usage.peak_rss_mib, note)


def latency(tasks: int, base: Path, profile: Path | None, seed: int = 5) -> Row:
    """Lines appended one at a time to a running daemon; each task succeeds at its 2nd poll."""
    with Rig(base, profile, size=256 * 1024, running_polls=1) as rig:
        daemon = rig.daemon(None, [])
        while rig.status() is None:  # the state DB exists once the daemon is up
            time.sleep(0.2)
        time.sleep(1.0)
        rng, appended = random.Random(seed), {}
        with open(rig.dir / "inbox.txt", "a") as inbox:
            for i in range(tasks):
                appended[f"lat{i:04d}"] = time.time()
                inbox.write(f"kie lat{i:04d}\n")
                inbox.flush()
                time.sleep(rng.uniform(0.1, 0.5))  # irregular, so lines do not align with the inbox tick
        deadline = time.monotonic() + 120
        while len(rig.seen(rig.cdn_url)) < tasks and time.monotonic() < deadline:
            time.sleep(0.5)
        polls, firsts = rig.seen(rig.api_url), rig.seen(rig.cdn_url)
        os.kill(rig.pid(daemon), signal.SIGTERM)
        usage = daemon.wait()
        to_poll = [polls[t][0][0] - at for t, at in appended.items() if t in polls]
        to_byte = [firsts[f"{t}-0.png"] - next(at for at, s in polls[t] if s == "success")
                   for t in appended if f"{t}-0.png" in firsts]
        ms = {q: (percentile(to_poll, q) * 1e3, percentile(to_byte, q) * 1e3) for q in (50, 95)}
        note = (f"inbox→first poll p50 {ms[50][0]:.0f} ms, p95 {ms[95][0]:.0f} ms; success→first byte "
                f"p50 {ms[50][1]:.1f} ms, p95 {ms[95][1]:.1f} ms; {len(to_byte)}/{tasks} downloaded")
        return Row(f"5 latency ×{tasks}", usage.wall, None, None, usage.cpu, usage.peak_rss_mib, note)
