"""`archiver index` and `archiver verify` on a terminal: a progress line, then the summary."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

from tests.browse.conftest import make_world


def on_a_terminal(config: Path, *args: str) -> tuple[int, str, str]:
    """Run the command with stderr on a pseudo-terminal; return (code, stdout, what the terminal got)."""
    leader, follower = pty.openpty()
    try:
        done = subprocess.run([sys.executable, "-m", "archiver", "-c", str(config), *args], stdout=subprocess.PIPE,
                              stderr=follower, timeout=60, check=False)
        os.close(follower)
        seen = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other end is closed and drained
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(leader)
    return done.returncode, done.stdout.decode(), seen.decode(errors="replace")


async def test_progress_on_a_terminal(tmp_path: Path) -> None:
    world = await make_world(tmp_path, "local", tasks=40)
    code, out, terminal = on_a_terminal(world.config_path, "index", "--rebuild")
    assert code == 0
    assert "\rindex: wrote 3/3" in terminal  # redrawn in place
    assert out.startswith(f"index: 3 days, {len(world.made.assets)} assets, ")
    code, out, terminal = on_a_terminal(world.config_path, "verify")
    assert code == 0
    sidecars = len(world.made.assets)
    assert f"\rverify: sidecars {sidecars}/{sidecars}" in terminal
    assert out.strip().endswith("no problems")
    _, out, _ = on_a_terminal(world.config_path, "index", "--from-store")
    assert out.startswith(f"index: 3 days, {len(world.made.assets)} assets, ")
