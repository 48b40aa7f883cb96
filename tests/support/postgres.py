"""A private PostgreSQL server for tests, from Debian's package (/usr/lib/postgresql/<version>/bin).

The server runs as our child process on 127.0.0.1 and a free port, with its data and unix socket
in a temp dir, trust auth and durability switched off. PostgreSQL refuses to run as root, so as
root it runs as the `postgres` user (which Debian's package creates) on a dir chowned to it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.procs import alive, children

PG_ROOT = Path("/usr/lib/postgresql")
RUN_AS = "postgres"
START_TIMEOUT = 60.0
# Tuned for tests: nothing needs to survive a power cut, and several daemons each hold a pool.
# synchronous_commit stays on: with fsync off it costs only a write(), and off, kill() would lose
# commits the server had already acknowledged (seen: a table gone after kill and restart).
SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "max_connections": "300",
    "shared_buffers": "32MB",
    "fsync": "off",
    "full_page_writes": "off",
    "logging_collector": "off",
    "log_min_messages": "warning",
}


@dataclass(frozen=True)
class StateBackend:
    """Which state store a parametrised test runs against; `dsn` is None for SQLite."""

    name: str
    dsn: str | None

    def config(self, **state: object) -> dict[str, object]:
        """The config's `state` section for base_config (none for SQLite, the default)."""
        if self.dsn is None:
            return {}
        return {"state": {"backend": "postgres", "dsn": self.dsn, **state}}


def pg_bindir() -> Path | None:
    """The bin dir of the newest PostgreSQL server installed, or None."""
    found = [d for d in PG_ROOT.glob("*/bin") if (d / "initdb").is_file() and (d / "postgres").is_file()]
    return max(found, key=lambda d: _version(d.parent.name), default=None)


def _version(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", name))


def pg_unavailable() -> str | None:
    """Why a test PostgreSQL server cannot be had here, or None when it can."""
    if pg_bindir() is None:
        return f"no PostgreSQL server under {PG_ROOT}/*/bin (apt-get install postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(RUN_AS)
        except KeyError:
            return f"running as root and there is no {RUN_AS!r} user to run PostgreSQL as (apt-get install postgresql)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "the psycopg package is not installed (pip install -e '.[test]')"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgCluster:
    """One PostgreSQL server: start, stop (fast), kill, start again on the same port and data."""

    def __init__(self) -> None:
        bindir = pg_bindir()
        if bindir is None:
            raise RuntimeError(pg_unavailable())
        self.bindir = bindir
        self.port = free_port()
        self.base = Path(tempfile.mkdtemp(prefix="archiver-pg-"))
        self.data = self.base / "data"
        self.socket_dir = self.base / "socket"
        self.log = self.base / "server.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._as_user: dict[str, Any] = {}
        if os.geteuid() == 0:
            user = pwd.getpwnam(RUN_AS)
            self._as_user = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
            os.chown(self.base, user.pw_uid, user.pw_gid)
        self.socket_dir.mkdir()
        self.log.touch()
        if self._as_user:
            os.chown(self.socket_dir, self._as_user["user"], self._as_user["group"])
            os.chown(self.log, self._as_user["user"], self._as_user["group"])

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the server (initialising the data dir the first time) and wait until it accepts connections."""
        if self.running:
            return
        if not (self.data / "PG_VERSION").exists():
            self._initdb()
        with self.log.open("ab") as log:
            self._proc = subprocess.Popen(
                [str(self.bindir / "postgres"), "-D", str(self.data)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.base, start_new_session=True, **self._as_user)
        self._wait_ready()

    def stop(self) -> None:
        """Fast shutdown: open sessions are ended, the server exits cleanly."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)
            self._proc.wait(timeout=30)
        self._proc = None

    def backends(self) -> list[int]:
        """The pids of the server's processes but the postmaster: its children."""
        assert self._proc is not None
        return children(self._proc.pid)

    def kill(self) -> None:
        """SIGKILL the server and all its backends, as a crash would; start() recovers."""
        if self._proc is None:
            return
        # Stopped first, the postmaster forks no backend between the listing and the kill.
        self._proc.send_signal(signal.SIGSTOP)
        backends = self.backends()
        self._proc.kill()
        self._proc.wait(timeout=30)
        for pid in backends:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        # The backends were the postmaster's, so nobody here reaps them: wait until they are gone or zombies.
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in backends) and time.monotonic() < deadline:
            time.sleep(0.01)
        self._proc = None

    def create_database(self) -> str:
        """A new, empty database; returns its DSN."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def drop_database(self, dsn: str) -> None:
        """Drop a database made by create_database, ending any session still on it."""
        import psycopg

        name = dsn.rsplit("/", 1)[1]
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def cleanup(self) -> None:
        """Stop the server and remove its temp dir."""
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def _initdb(self) -> None:
        done = subprocess.run(
            [str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
             "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions"],
            stdin=subprocess.DEVNULL, capture_output=True, cwd=self.base, **self._as_user)
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}): {done.stderr.decode(errors='replace')[-2000:]}")
        settings = {**SETTINGS, "port": str(self.port), "unix_socket_directories": f"'{self.socket_dir}'"}
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("\n# tests/support/postgres.py\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    def _wait_ready(self) -> None:
        # The postmaster writes "ready" as the 8th line of postmaster.pid once it accepts connections.
        assert self._proc is not None
        pidfile = self.data / "postmaster.pid"
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self._proc.returncode}: {self._log_tail()}")
            try:
                lines = pidfile.read_text().splitlines()
            except FileNotFoundError:
                lines = []
            if len(lines) >= 8 and lines[0].strip() == str(self._proc.pid) and lines[7].strip() == "ready":
                return
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"postgres did not get ready within {START_TIMEOUT:.0f} s: {self._log_tail()}")

    def _log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:]


async def set_first_seen(state: Any, provider: str, task_ids: list[str], at: float, lane: int) -> None:
    """Set the scene on a simulated clock: these tasks were first seen (and due) at `at`, in `lane`."""
    ids = list(task_ids)
    if state.backend == "sqlite":
        marks = ",".join("?" for _ in ids)
        with state.transaction() as db:
            db.execute(f"UPDATE tasks SET first_seen_at = ?, next_poll_at = ?, lane = ? WHERE provider = ?"
                       f" AND task_id IN ({marks})", (at, at, lane, provider, *ids))
        return
    async with state.pool.connection() as conn:
        await conn.execute("UPDATE tasks SET first_seen_at = %s, next_poll_at = %s, lane = %s WHERE provider = %s"
                           " AND task_id = ANY(%s)", (at, at, lane, provider, ids))
