"""Tests that need something from the machine (chromium, PostgreSQL) skip without it, but fail under CI.

A skipped test in CI would hide a broken feature, so with CI=true (as `.ci/run` sets) a missing
dependency is an error, not a skip.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def cannot_run(what: str, reason: str) -> NoReturn:
    """Skip the test, saying why; under CI fail it instead."""
    if in_ci():
        pytest.fail(f"{what} cannot run in CI: {reason}")
    print(f"skipping {what}: {reason}")
    pytest.skip(reason)
