"""The kit costs the daemon nothing: importing the daemon never loads archiver.testing, and the
kit itself loads no test framework."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def loaded_after(module: str) -> set[str]:
    """The top two levels of every module loaded by a fresh interpreter importing `module`."""
    code = f"import sys, json, {module}; print(json.dumps(sorted(sys.modules)))"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True,
                         cwd=ROOT).stdout
    return {".".join(name.split(".")[:2]) for name in json.loads(out)}


def test_importing_the_daemon_does_not_import_the_kit() -> None:
    loaded = loaded_after("archiver.daemon")
    assert "archiver.daemon" in loaded
    assert "archiver.testing" not in loaded


def test_the_kit_imports_no_test_framework_and_no_optional_dependency() -> None:
    loaded = {name.split(".")[0] for name in loaded_after("archiver.testing")}
    assert "aiohttp" in loaded
    assert not loaded & {"pytest", "_pytest", "pytest_asyncio", "av", "cryptography", "psycopg", "boto3"}
