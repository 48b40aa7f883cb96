"""archiver.testing.pytest_plugin as another project enables it: a conftest line, the fixture."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_the_plugin_in_a_project_of_its_own(tmp_path: Path) -> None:
    """An outside project enables the plugin in its conftest and uses the fixture, in strict mode."""
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["archiver.testing.pytest_plugin"]\n')
    (tmp_path / "test_theirs.py").write_text(
        "import pytest\n\n"
        "@pytest.mark.asyncio\n"
        "async def test_it(fake_providers):\n"
        "    task = fake_providers.task('replicate')\n"
        "    assert fake_providers.entry('replicate')['base_url'].startswith('http://127.0.0.1:')\n"
        "    assert task.files and fake_providers.polls(task) == 0\n")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "asyncio_mode=strict",
                          "test_theirs.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed" in run.stdout
