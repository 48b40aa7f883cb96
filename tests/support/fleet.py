"""Several real `archiver run` processes on one PostgreSQL database (docs/operations.md, several daemons on PostgreSQL).

Each member has its own home (state_dir, inbox, config, log) as every daemon needs one:
its lock and staging are per state_dir. They share the DSN and one archive.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from archiver.storage.local import MARKER
from tests.support.daemon import DaemonProcess, StatusReader, base_config, write_config
from tests.support.web import free_port


@dataclass
class Member:
    daemon: DaemonProcess
    config: Path
    inbox: Path
    home: Path
    http: str | None = None  # the base URL of its HTTP server, when on
    down: bool = False  # stopped or killed on purpose: its exit is no failure

    @property
    def pid(self) -> int:
        assert self.daemon.proc is not None
        return self.daemon.proc.pid

    def log(self) -> str:
        return self.daemon.log.read_text(errors="replace") if self.daemon.log.exists() else ""


class Fleet:
    """N daemon configs on one DSN: members start, stop and are killed one by one."""

    def __init__(self, tmp: Path, n: int, providers: dict[str, Any], dsn: str, env: dict[str, str], *,
                 lease: str = "5s", http: bool = False, **extra: Any) -> None:
        self.env = env
        self.members = []
        for i in range(n):
            home = tmp / f"daemon{i}"
            home.mkdir()
            doc = base_config(home, providers, state={"backend": "postgres", "dsn": dsn, "lease": lease},
                              storage={"backend": "local", "local": {"root": str(tmp / "archive")}})
            doc.update(extra)
            base = None
            if http:
                port = free_port()
                doc["http"] = {"listen": f"127.0.0.1:{port}", "token": "${ARCHIVER_HTTP_TOKEN}"}
                base = f"http://127.0.0.1:{port}"
            config = write_config(home / "config.yaml", doc)
            daemon = DaemonProcess(config, env, home / "daemon.log")
            self.members.append(Member(daemon, config, home / "inbox.txt", home, base))

    def __getitem__(self, i: int) -> Member:
        return self.members[i]

    async def start(self, *which: int) -> None:
        for i in which or range(len(self.members)):
            self.members[i].down = False
            await self.members[i].daemon.start()

    async def stop(self, i: int, sig: int = signal.SIGTERM) -> int:
        self.members[i].down = True
        return await self.members[i].daemon.stop(sig)

    async def stop_all(self) -> None:
        """SIGTERM every member still running, at once; one that hangs is killed."""
        running = [m for m in self.members if m.daemon.proc and m.daemon.proc.returncode is None]
        for m in running:
            m.down = True
        codes = await asyncio.gather(*(m.daemon.stop() for m in running), return_exceptions=True)
        for m, code in zip(running, codes, strict=True):
            if isinstance(code, BaseException):
                with contextlib.suppress(ProcessLookupError):
                    await m.daemon.stop(signal.SIGKILL)

    async def status(self) -> dict[str, Any]:
        """What `status --json` with the first member's config would print now, read in this process."""
        return await StatusReader(self.members[0].config).once()

    async def wait_for(self, done: Any, timeout: float = 30) -> dict[str, Any]:
        """Read the status until `done(status)` holds; fail if a member died or on timeout."""
        return await StatusReader(self.members[0].config).wait(done, timeout, self.check_running, self.tails)

    async def wait_live(self, n: int, timeout: float = 30) -> dict[str, Any]:
        """Until exactly `n` daemons are live in `status`."""
        return await self.wait_for(lambda s: len(s["daemons"]) == n, timeout)

    def check_running(self) -> None:
        for i, m in enumerate(self.members):
            proc = m.daemon.proc
            if proc is not None and proc.returncode is not None and not m.down:
                raise AssertionError(f"daemon{i} exited {proc.returncode}:\n{m.log()[-3000:]}")

    def tails(self, chars: int = 1500) -> str:
        return "\n".join(f"--- daemon{i} log tail:\n{m.log()[-chars:]}" for i, m in enumerate(self.members))


def archived_files(root: Path) -> dict[str, int]:
    """Files in a local archive by `{task_id}/{name}`, less the browse index and the root marker:
    a name stored twice (under two dates, say) counts 2, and a temp file left behind shows up."""
    found: dict[str, int] = {}
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not (rel in ("index.html", MARKER) or rel.startswith("_index/")):
            name = "/".join(rel.split("/")[-2:])  # {task_id}/{index}.{ext}[.json]
            found[name] = found.get(name, 0) + 1
    return found
