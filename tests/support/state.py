"""Open the configured StateStore the way the daemon does: a written config, load_config, open_state."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from archiver.config import Config, load_config
from archiver.state import StateStore, open_state
from tests.support.daemon import base_config, write_config
from tests.support.postgres import StateBackend


def state_config(tmp: Path, backend: StateBackend, *, inbox: str = "inbox.txt", **state: object) -> Config:
    """A config with everything under `tmp` and the backend's `state:` section (`state` extra keys)."""
    doc = base_config(tmp, {"kie": {"type": "kie", "api_key": "unused", "base_url": "http://127.0.0.1:9"}},
                      **backend.config(**state))
    doc["inbox"] = {"path": str(tmp / inbox)}
    return load_config(write_config(tmp / f"config-{inbox}.yaml", doc))


async def daemon_state(config: Config, pid: int = 1) -> StateStore:
    """A state opened and joined as the daemon does, under `pid` (any number: nothing is signalled)."""
    state = await open_state(config, daemon=True)
    await state.join(socket.gethostname(), pid)
    return state


def only(name: str, why: str) -> pytest.MarkDecorator:
    """Run a test of behaviour only backend `name` has on that backend alone; `why` says why the other has none.

    The test is not generated for the other backend at all (rather than skipped there): CI shows
    no skips, so a skip there always means something is missing.
    """
    del why  # documentation at the test: the reason the other backend needs no such test
    return pytest.mark.parametrize("state_backend", [name], indirect=True)


def health_row(status: dict[str, Any], name: str) -> dict[str, Any] | None:
    """`status --json`'s health row `name`: plain on SQLite, `name@host:pid` per daemon on PostgreSQL."""
    found = [row for key, row in status["health"].items() if key == name or key.startswith(f"{name}@")]
    return found[0] if found else None
