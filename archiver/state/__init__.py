"""Task state: two interfaces (base.StateStore, base.ArchiveReader), two backends (SQLite, PostgreSQL).

No SQL lives outside this package, and no driver error leaves it: each backend raises
StateUnavailable when its database cannot serve a call.
"""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path

from archiver.config import Config
from archiver.errors import StateUnavailable
from archiver.state.base import ArchiveReader, RateSlots, StateStore
from archiver.state.records import (KEEP_REJECTS, Asset, Claimed, Daemon, Fingerprint, Health, IndexedAsset,
                                    IndexedFailure, Polled, Position, Rejected, Task)
from archiver.state.sqlite import SqliteState

__all__ = ["KEEP_REJECTS", "STATE_ERRORS", "ArchiveReader", "Asset", "Claimed", "Daemon", "Fingerprint", "Health",
           "IndexedAsset", "IndexedFailure", "Polled", "Position", "RateSlots", "Rejected", "SqliteState",
           "StateStore", "Task", "open_reader", "open_state", "state_exists", "state_path"]

# What a state call raises when the database cannot serve it: callers answer 503 or wait.
STATE_ERRORS: tuple[type[Exception], ...] = (StateUnavailable,)


def state_path(config: Config) -> Path:
    """The SQLite state file; with PostgreSQL, its lock file still marks one daemon per state_dir."""
    return config.state_dir / "archiver.db"


def state_exists(config: Config) -> bool:
    """Whether there is state to read without creating it: the SQLite file; a PostgreSQL DB says when opened."""
    return config.state.backend == "postgres" or state_path(config).exists()


def daemon_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


async def open_state(config: Config, *, daemon: bool = False) -> StateStore:
    """The configured backend; `daemon=True` gives it an ID to hold leases under."""
    me = daemon_id() if daemon else ""
    if config.state.backend == "postgres":
        from archiver.state.postgres import PostgresState  # psycopg only for those who use it

        return await PostgresState.open(config.state.dsn.reveal(), me, lease=config.state.lease,
                                        inbox=str(config.inbox.path))
    return SqliteState(state_path(config), me)


def open_reader(config: Config) -> ArchiveReader:
    """The configured backend's reader for the browse index: blocking (a PostgreSQL connect), so call it in a thread."""
    if config.state.backend == "postgres":
        from archiver.state.pg_reader import PgReader

        return PgReader(config.state.dsn.reveal())
    from archiver.state.readers import SqliteReader

    return SqliteReader(state_path(config))
