"""The state DB's own rules: health rows keep the time their trouble began."""

from __future__ import annotations

import time
from pathlib import Path

from archiver.state import StateDB


def test_health_since_is_when_the_trouble_began(tmp_path: Path) -> None:
    state = StateDB(tmp_path / "archiver.db")
    state.set_health("kie", "failing", "HTTP 500")
    began = state.health()["kie"]["at"]
    time.sleep(0.02)
    state.set_health("kie", "failing", "HTTP 502")
    row = state.health()["kie"]
    assert row["at"] == began and row["message"] == "HTTP 502"
    time.sleep(0.02)
    state.set_health("kie", "ok")
    assert state.health()["kie"]["at"] > began and state.health()["kie"]["state"] == "ok"
