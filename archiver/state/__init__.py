"""Task state: one interface (base.StateStore), two backends (sqlite, postgres)."""

from __future__ import annotations

import os
import secrets
import socket
import sqlite3
from pathlib import Path

from archiver.config import Config
from archiver.errors import StateUnavailable
from archiver.state.base import StateStore
from archiver.state.records import KEEP_REJECTS, Asset, Claimed, Daemon, Health, Polled, Position, Rejected, Task
from archiver.state.sqlite import SqliteState

__all__ = ["KEEP_REJECTS", "STATE_ERRORS", "Asset", "Claimed", "Daemon", "Health", "Polled", "Position", "Rejected",
           "SqliteState", "StateStore", "Task", "open_state", "state_path"]

# What a state call raises when the database cannot serve it: callers answer 503 or wait.
STATE_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, StateUnavailable)


def state_path(config: Config) -> Path:
    """The SQLite state file; with PostgreSQL, its lock file still marks one daemon per state_dir."""
    return config.state_dir / "archiver.db"


def daemon_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


async def open_state(config: Config, *, daemon: bool = False) -> StateStore:
    """The configured backend; `daemon=True` gives it an ID to hold leases under."""
    me = daemon_id() if daemon else ""
    if config.state.backend == "postgres":
        from archiver.state.postgres import PostgresState  # psycopg only for those who use it

        return await PostgresState.open(config, me)
    return SqliteState(state_path(config), me)
