"""archiver/state/ sits below the pipeline: it imports no provider, no pacing, and config only to open."""

from __future__ import annotations

import ast
from pathlib import Path

import archiver.state

STATE = Path(archiver.state.__file__).parent
ABOVE = ("archiver.providers", "archiver.pacing", "archiver.browse", "archiver.web", "archiver.daemon",
         "archiver.poller", "archiver.archiving", "archiver.cli")


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_state_imports_nothing_above_it() -> None:
    for path in sorted(STATE.glob("*.py")):
        names = imports(path)
        assert not [n for n in names if n.startswith(ABOVE)], path.name
        if path.name != "__init__.py":  # open_state reads the config; the backends take plain values
            assert "archiver.config" not in names, path.name


def test_no_sql_driver_outside_state() -> None:
    package = STATE.parent
    for path in sorted(package.rglob("*.py")):
        if STATE not in path.parents:
            names = imports(path)
            assert not [n for n in names if n.split(".")[0] in ("sqlite3", "psycopg", "psycopg_pool")], \
                path.relative_to(package)
