"""Child processes and what they cost: CPU and RSS from /proc and wait4, no extra dependency."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path


def cpu_seconds(pid: int) -> float:
    """user + sys of a live process, all its threads, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()  # after the command name: field 3 onwards
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def busy_seconds() -> float:
    """CPU time the whole machine spent busy (all CPUs), to tell how much others used meanwhile."""
    with open("/proc/stat") as f:
        user, nice, system, idle, iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def wait_quiet(limit: float = 0.15, patience: float = 300) -> float:
    """Wait until the machine is under `limit` busy (over 2 s) and return that fraction; a
    shared box can be busy for long, so after `patience` s it goes on and says so."""
    deadline = time.monotonic() + patience
    while True:
        before = busy_seconds()
        time.sleep(2)
        busy = (busy_seconds() - before) / 2 / (os.cpu_count() or 1)
        if busy < limit or time.monotonic() > deadline:
            return busy


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("VmRSS:")).split()[1]) / 1024


@dataclass(frozen=True)
class Usage:
    wall: float
    cpu: float
    peak_rss_mib: float
    code: int


class Child:
    """A process we started. Its totals come from wait4: the kernel's own user+sys and peak
    RSS for the process, exact, with no sampling gap before it exits."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        self.pid, self.started = self.proc.pid, time.monotonic()

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def wait(self, timeout: float = 3600) -> Usage:
        deadline = time.monotonic() + timeout
        while not (done := os.wait4(self.pid, os.WNOHANG))[0]:
            if time.monotonic() > deadline:
                self.proc.kill()
                raise TimeoutError(f"{self.proc.args!r} still running after {timeout:.0f}s")
            time.sleep(0.005)
        wall = time.monotonic() - self.started
        self.proc.returncode = os.waitstatus_to_exitcode(done[1])  # reaped here, not by Popen
        return Usage(wall, done[2].ru_utime + done[2].ru_stime, done[2].ru_maxrss / 1024, self.proc.returncode)

    def stop(self, timeout: float = 60) -> Usage:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    ordered = sorted(values) or [float("nan")]
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def profile_summary(raw: Path, thread: str = "MainThread", top: int = 12) -> str:
    """Where one thread spent its samples, from `py-spy record --threads --format raw`.

    The event loop (MainThread) is the daemon's serial resource, so its shares are what
    limit throughput. Inclusive shares list archiver's own functions; self shares list any.
    """
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        root, *frames = stack.split(";")
        if thread not in root or not frames:
            continue
        total += int(count)
        names = [_name(frame) for frame in frames]
        for name in {n for n, f in zip(names, frames, strict=True) if " (archiver/" in f}:
            inclusive[name] += int(count)
        own[names[-1]] += int(count)
    rows = [f"{thread}: {total} samples; incl% self% archiver function"]
    rows += [f"{100 * n / total:5.1f} {100 * own[k] / total:5.1f} {k}" for k, n in inclusive.most_common(top)]
    return "\n".join(rows + [f" self {100 * n / total:5.1f} {k}" for k, n in own.most_common(top)])


def _name(frame: str) -> str:
    """`fetch (archiver/download.py:91)` → `archiver/download.py:fetch`."""
    func, _, where = frame.partition(" (")
    return "/".join(where.rpartition(":")[0].split("/")[-2:]) + ":" + func


# Where a sample's time goes, first match wins; matched against its whole stack. Imports first,
# so that start-up is never counted as work; the receive path before the rest of aiohttp.
LOOP_KINDS = (
    ("start-up imports", ("<frozen importlib",)),
    ("thumbnails", ("archiver/thumbs/",)),
    ("SQLite state", ("archiver/state/",)),
    ("HTTP receive: socket reads, parser, StreamReader, flow control",
     ("_read_ready (", "aiohttp/streams.py", "resume_reading (", "pause_reading (")),
    ("HTTP request and connection (aiohttp)", ("aiohttp/",)),
    ("thread hops: to_thread, wake-ups", ("run_in_executor (", "_read_from_self (", "call_soon_threadsafe (")),
    ("polling and intake", ("archiver/poll", "archiver/pacing", "archiver/providers/", "archiver/intake",
                            "archiver/inbox")),
    ("logging", ("logging/__init__.py",)),
)
LEAF_KINDS = (  # what is left, by the frame the sample stands on
    ("event loop: select, timers, task steps", ("(selectors.py", "(asyncio/", "(contextlib.py")),
    ("archiver's own code", ("(archiver/",)),
)


def profile_split(raw: Path, source: Path) -> str:
    """The event-loop thread's and the worker threads' samples by kind of work, in percent.

    A worker sample is named by the source line it stands on in `source` (the repository): a
    hasher's update is hashing, an fsync is an fsync, a write is a file write."""
    loop: Counter[str] = Counter()
    workers: Counter[str] = Counter()
    lines = [line.rpartition(" ") for line in raw.read_text().splitlines()]
    main = {root.split(")")[0] for stack, _, _ in lines if "MainThread" in (root := stack.split(";")[0])}
    for stack, _, count in lines:
        frames = stack.split(";")
        if frames[0].split(")")[0] in main:
            loop[_loop_kind(stack, frames[-1])] += int(count)
        else:
            workers[_worker_kind(frames, source)] += int(count)
    out = []
    for name, seen in (("event-loop thread", loop), ("worker threads", workers)):
        total = sum(seen.values()) or 1
        out.append(f"{name}: {total} samples")
        out += [f"{100 * n / total:5.1f} % {kind}" for kind, n in seen.most_common()]
    return "\n".join(out)


def _loop_kind(stack: str, leaf: str) -> str:
    for kind, marks in LOOP_KINDS:
        if any(m in stack for m in marks):
            return kind
    return next((kind for kind, marks in LEAF_KINDS if any(m in leaf for m in marks)), "other (stdlib)")


def _worker_kind(frames: list[str], source: Path) -> str:
    if any("archiver/thumbs/" in f for f in frames):
        return "thumbnails"
    if frames[-1].startswith("_worker (concurrent/futures/thread.py"):
        return "pool threads waiting for work"
    ours = [f for f in frames if " (archiver/" in f]
    if not ours:
        return "other"
    where = ours[-1].rpartition(" (")[2].rstrip(")")
    path, _, line = where.rpartition(":")
    text = (source / path).read_text().splitlines()[int(line) - 1] if (source / path).is_file() else ""
    if "hash" in text or "sha256" in text:
        return "hashing"
    if "fsync" in text or "makedirs_synced" in text:
        return "fsync (files and folders)"
    if "write" in text or "open" in text:
        return "file writes and opens"
    return f"other: {path}"
