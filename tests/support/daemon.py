"""Run the real `archiver` command in a subprocess, the way a user or systemd would."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import yaml

from archiver.config import load_config
from archiver.errors import ArchiverError
from archiver.state import StateStore, open_state, state_path
from archiver.status import current_status


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


class StatusReader:
    """The report `archiver status --json` prints, made in this process by archiver.status as the CLI does.

    A `status` process costs about 0.3 CPU seconds; a test asking every 0.3 s kept half a core
    busy and starved the daemon it waited for. The state DB stays open from the first read to
    `close()`: one wait opens it once.
    """

    def __init__(self, config: Path) -> None:
        self.config = load_config(config, require_secrets=False)
        self.state: StateStore | None = None

    async def read(self) -> dict[str, Any] | None:
        """The report, or None while there is none (no SQLite file yet, PostgreSQL out of reach)."""
        path = state_path(self.config)
        if self.config.state.backend == "sqlite" and not path.exists():
            return None  # the CLI says "no state yet" here; opening would create the file
        try:
            if self.state is None:
                self.state = await open_state(self.config)
            report = await current_status(self.state, self.config)
        # StateUnavailable, a schema the daemon has not created yet, a SQLite file still being made
        except (ArchiverError, sqlite3.OperationalError):
            await self.close()
            return None
        return json.loads(json.dumps(report))  # the CLI's types: lists, not tuples

    async def close(self) -> None:
        if self.state is not None:
            state, self.state = self.state, None
            await state.close()

    async def once(self) -> dict[str, Any]:
        try:
            report = await self.read()
        finally:
            await self.close()
        assert report is not None, "no status: the state DB is not there or does not answer"
        return report

    async def wait(self, done: Any, timeout: float, alive: Any, tail: Any) -> dict[str, Any]:
        """Read every 0.1 s until `done(status)` holds; `alive()` raises if a daemon died."""
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        try:
            while time.monotonic() < deadline:
                alive()
                status = await self.read() or {}
                if status and done(status):
                    return status
                await asyncio.sleep(0.1)
        finally:
            await self.close()
        raise AssertionError(f"timed out; last status: {json.dumps(status, indent=1)[-4000:]}\n{tail()}")


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
        """What `status --json` would print now, read in this process."""
        return await StatusReader(self.config).once()

    async def cli_status(self) -> dict[str, Any]:
        """The real `archiver status --json`, in its own process."""
        code, out, err = await cli(self.config, "status", "--json", env=self.env)
        assert code == 0, err
        return json.loads(out)

    def _alive(self) -> None:
        if self.proc and self.proc.returncode is not None:
            raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")

    async def wait_running(self, timeout: float = 30) -> None:
        """Until the log says the daemon is at work (its start-up, staging cleanup included, is over)."""
        deadline = time.monotonic() + timeout
        while "archiver running:" not in (self.log.read_text() if self.log.exists() else ""):
            self._alive()
            if time.monotonic() > deadline:
                raise AssertionError(f"not running after {timeout}s; log tail:\n{self.log.read_text()[-3000:]}")
            await asyncio.sleep(0.1)

    async def wait_for(self, done: Any, timeout: float = 30) -> dict[str, Any]:
        """Read the status until `done(status)` holds; fail with the last status if not.

        The default leaves room for a few waits in one test under the 120 s per-test limit.
        """
        return await StatusReader(self.config).wait(done, timeout, self._alive,
                                                    lambda: f"log tail:\n{self.log.read_text()[-3000:]}")


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
