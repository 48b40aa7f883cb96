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

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """user + sys of a live process, all its threads, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        # Fields after the ")" that closes the command name start at field 3 (state).
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mib(pid: int) -> float:
    """Current resident set (VmRSS) of a live process."""
    with open(f"/proc/{pid}/status") as f:
        line = next(line for line in f if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


@dataclass(frozen=True)
class Usage:
    wall: float
    cpu: float
    peak_rss_mib: float
    code: int


class Child:
    """A process we started. Its totals come from wait4, which is exact: the kernel's own
    user+sys and peak RSS for the process, with no sampling gap before it exits."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        self.started = time.monotonic()
        self.log = log

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def wait(self, timeout: float = 3600) -> Usage:
        deadline = time.monotonic() + timeout
        while True:
            pid, status, ru = os.wait4(self.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                self.proc.kill()
                raise TimeoutError(f"{self.proc.args!r} still running after {timeout:.0f}s; see {self.log}")
            time.sleep(0.005)
        wall = time.monotonic() - self.started
        self.proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        return Usage(wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024, self.proc.returncode)

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
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def profile_summary(raw: Path, top: int = 15) -> str:
    """Top functions of a `py-spy record --format raw` file: inclusive and self share."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [_frame(f) for f in stack.split(";") if f]
        total += int(count)
        for name in set(frames):
            inclusive[name] += int(count)
        if frames:
            own[frames[-1]] += int(count)
    rows = [f"{'incl%':>6} {'self%':>6}  function ({total} samples)"]
    for name, n in inclusive.most_common(top):
        rows.append(f"{100 * n / total:6.1f} {100 * own[name] / total:6.1f}  {name}")
    rows.append("-- by self time --")
    rows += [f"{100 * n / total:6.1f}  {name}" for name, n in own.most_common(top)]
    return "\n".join(rows)


def _frame(frame: str) -> str:
    """`fetch (archiver/download.py:91)` → `archiver/download.py:fetch`, the line dropped."""
    func, _, where = frame.partition(" (")
    path = where.rstrip(")").rpartition(":")[0]
    short = "/".join(path.split("/")[-2:])
    return f"{short}:{func}"
