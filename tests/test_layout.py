"""The package keeps the shape docs/design.md draws: small modules, a thin daemon, and the import
layers of pyproject.toml's [tool.importlinter], checked here as CI checks them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "archiver"
MOST_LINES, DAEMON_LINES = 400, 200


def lines(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def test_no_module_is_over_400_lines_and_the_daemon_is_at_most_200() -> None:
    long = {str(p.relative_to(PACKAGE)): lines(p) for p in PACKAGE.rglob("*.py") if lines(p) > MOST_LINES}
    assert not long, f"split these modules: {long}"
    assert lines(PACKAGE / "daemon.py") <= DAEMON_LINES, "daemon.py wires the parts; the work lives elsewhere"


def test_the_import_contracts_hold() -> None:
    tool = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert tool, "lint-imports comes with the test extra (import-linter)"
    done = subprocess.run([tool, "--no-cache"], cwd=PACKAGE.parent, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout[-3000:]
