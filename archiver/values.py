"""Config values: secrets, durations, sizes and poll schedules, each parsed with a message naming its key.

Below config.py and the provider modules alike, so that each provider can check its own options.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from archiver.errors import ConfigError

# (every, until): poll every `every` seconds while the task is younger than `until`.
DEFAULT_POLL_INTERVALS = ((3.0, 30.0), (10.0, 120.0), (30.0, 900.0), (60.0, float("inf")))
_UNITS = (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0))
ENV_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}")  # ${VAR}, ${VAR:-default}
_BINARY = (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10))


@dataclass(frozen=True)
class Secret:
    """An API key; its repr and str never show the value."""

    value: str = field(repr=False)

    def __repr__(self) -> str:
        return "Secret('***')" if self.value else "Secret('')"

    __str__ = __repr__

    def reveal(self) -> str:
        return self.value


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?")
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
_UNIT_BYTES = {
    None: 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
    "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40,
}


def section(raw: dict[str, Any], name: str, key: str, allowed: set[str]) -> dict[str, Any]:
    """The mapping under `name` (empty if unset); a key not in `allowed` is an error naming it."""
    value = raw.get(name) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"config: {key}: expected a mapping")
    for k in value:
        if k not in allowed:
            raise ConfigError(f"config: {key}.{k}: unknown key (allowed: {', '.join(sorted(allowed))})")
    return value


def parse_duration(value: Any, key: str) -> float:
    """`30s`, `15m`, `2h`, `1d`, `500ms` or a number of seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    match = _DURATION.fullmatch(str(value).strip())
    if not match:
        raise ConfigError(f"config: {key}: {value!r} is not a duration (use 30s, 15m, 2h or seconds)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def parse_size(value: Any, key: str) -> int:
    """`512MiB`, `4GiB`, `10MB` or a number of bytes."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _SIZE.fullmatch(str(value).strip())
    if not match:
        raise ConfigError(f"config: {key}: {value!r} is not a size (use 512MiB, 4GiB or bytes)")
    return int(float(match.group(1)) * _UNIT_BYTES[match.group(2)])


def parse_poll_intervals(value: Any, key: str) -> tuple[tuple[float, float], ...]:
    """A list like ["3s until 30s", "10s until 2m", "60s"]; the last step has no end."""
    if not isinstance(value, list) or not value:
        raise ConfigError(f"config: {key}: expected a list like [\"3s until 30s\", \"60s\"]")
    steps = []
    for i, item in enumerate(value):
        every, _, until = str(item).partition(" until ")
        end = parse_duration(until, f"{key}[{i}]") if until else float("inf")
        steps.append((parse_duration(every, f"{key}[{i}]"), end))
    if any(every <= 0 for every, _ in steps):
        raise ConfigError(f"config: {key}: every interval must be above zero")
    ends = [until for _, until in steps]
    if ends != sorted(ends) or len(set(ends)) != len(ends) or float("inf") in ends[:-1]:
        raise ConfigError(f"config: {key}: steps out of order: each 'until' must be later than the one "
                          "before, and only the last step may have none")
    for i in range(1, len(steps)):
        # A task polled more often as it ages is a typo: polls back off, they never speed up.
        if steps[i][0] < steps[i - 1][0]:
            raise ConfigError(f"config: {key}[{i}]: {value[i]!r} polls more often than the step before "
                              f"({value[i - 1]!r}): each step's interval must be at least the one before")
    if steps[-1][1] != float("inf"):
        steps.append((steps[-1][0], float("inf")))
    return tuple(steps)


def show_duration(seconds: float) -> str:
    """Seconds as the config writes them: 20s, 6h, 250ms."""
    if seconds == 0:
        return "0s"
    for unit, size in _UNITS:
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    if seconds < 1 and (seconds * 1000).is_integer():
        return f"{int(seconds * 1000)}ms"
    return f"{seconds:g}s"


def show_size(n: int) -> str:
    """Bytes as the config writes them: 8MiB, or a plain count."""
    for unit, size in _BINARY:
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return f"{n}B"


def expand_env(node: Any, key: str, require: bool, unset: dict[str, str]) -> Any:
    """${VAR} and ${VAR:-default} from the environment; `unset` learns key → VAR that fell back."""
    if isinstance(node, dict):
        return {k: expand_env(v, f"{key}.{k}" if key else str(k), require, unset) for k, v in node.items()}
    if isinstance(node, list):
        return [expand_env(v, f"{key}[{i}]", require, unset) for i, v in enumerate(node)]
    if isinstance(node, str):
        def sub(m: re.Match[str]) -> str:
            if m.group(1) in os.environ:
                return os.environ[m.group(1)]
            unset[key] = m.group(1)
            if m.group(2) is not None:  # ${VAR:-default}, as in the shell
                return m.group(2)[2:]
            if require:
                raise ConfigError(f"config: {key}: environment variable {m.group(1)} is not set")
            return ""
        if "${" in ENV_VAR.sub("", node):
            raise ConfigError(f"config: {key}: unclosed or malformed ${{…}}: write ${{VAR}} or ${{VAR:-default}}")
        return ENV_VAR.sub(sub, node)
    return node
