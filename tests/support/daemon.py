"""Run the real `archiver` command in a subprocess, the way a user or systemd would."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import yaml


def write_config(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def base_config(tmp: Path, providers: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A config for tests: everything under `tmp`, fast polls, loopback downloads allowed."""
    doc: dict[str, Any] = {
        "state_dir": str(tmp / "state"),
        "inbox": {"path": str(tmp / "inbox.txt")},
        "providers": providers,
        "download": {"allow_addresses": ["127.0.0.0/8"]},
        "storage": {"backend": "local", "local": {"root": str(tmp / "archive")}},
    }
    doc.update(extra)
    return doc


async def cli(config: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run `python -m archiver -c CONFIG ARGS…`; return (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "archiver", "-c", str(config), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env or dict(os.environ))
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


class DaemonProcess:
    """`archiver run` as a child process, its stderr collected in a file."""

    def __init__(self, config: Path, env: dict[str, str], log: Path, *extra: str) -> None:
        self.config, self.env, self.log, self.extra = config, env, log, extra
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with open(self.log, "ab") as err:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "archiver", "run", "-c", str(self.config), *self.extra,
                stdout=asyncio.subprocess.DEVNULL, stderr=err, env=self.env)

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        return await asyncio.wait_for(self.proc.wait(), timeout)

    async def status(self) -> dict[str, Any]:
        code, out, err = await cli(self.config, "status", "--json", env=self.env)
        assert code == 0, err
        return json.loads(out)

    async def _status_if_any(self) -> dict[str, Any] | None:
        """None while status fails (on PostgreSQL, until `run` made the schema); before the first
        run on SQLite, an empty status."""
        code, out, _ = await cli(self.config, "status", "--json", env=self.env)
        return json.loads(out) if code == 0 else None

    async def wait_running(self, timeout: float = 30) -> None:
        """Until the log says the daemon is at work (its start-up, staging cleanup included, is over)."""
        deadline = time.monotonic() + timeout
        while "archiver running:" not in (self.log.read_text() if self.log.exists() else ""):
            if self.proc and self.proc.returncode is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"not running after {timeout}s; log tail:\n{self.log.read_text()[-3000:]}")
            await asyncio.sleep(0.1)

    async def wait_for(self, done: Any, timeout: float = 30) -> dict[str, Any]:
        """Poll `status --json` until `done(status)` holds; fail with the last status if not.

        The default leaves room for a few waits in one test under the 120 s per-test limit.
        """
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            if self.proc and self.proc.returncode is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            status = await self._status_if_any() or {}
            if status and done(status):
                return status
            await asyncio.sleep(0.3)
        raise AssertionError(f"timed out; last status: {json.dumps(status, indent=1)}\n"
                             f"log tail:\n{self.log.read_text()[-3000:]}")


@contextlib.asynccontextmanager
async def serve_process(config: Path, env: dict[str, str] | None = None) -> AsyncIterator[str]:
    """`archiver serve --listen 127.0.0.1:0` as a child process; yields its base URL; SIGTERM ends it."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "archiver", "-c", str(config), "serve", "--listen", "127.0.0.1:0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env or dict(os.environ))
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        assert "http://127.0.0.1:" in line, line
        yield next(w for w in line.split() if w.startswith("http://")).rstrip("/")
    finally:
        if proc.returncode is None:
            proc.terminate()
        await asyncio.wait_for(proc.wait(), 20)
