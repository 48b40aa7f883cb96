"""The demo's folder: a config pointing at this run's fakes, the inbox lines of its tasks, and which run it is."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from archiver import inbox
from archiver.demo.plan import Planned

HEADER = """\
# Written by `archiver demo` at each run: the provider entries point at that run's fake providers on
# 127.0.0.1 and carry their fake keys (real keys go in ${{VARS}}, never in a file: config.example.yaml).
# The rest is config.example.yaml's, under this folder, with no HTTP server.
# The commands read it as any config: archiver -c {config} status | show | verify | serve
"""
RECORD = "demo-tasks.jsonl"
RUN_LABEL = re.compile(rb"\bdemo=run-(\d+)\b")


def write_config(folder: Path, providers: Mapping[str, Mapping[str, Any]]) -> Path:
    """`folder`/config.yaml: local storage, SQLite state, thumbnails and the index on, and `providers`: the
    entries of ENTRIES as the fakes give them (base_url, key), polled often, since the fakes answer at once."""
    doc = {
        "state_dir": "./state",
        "inbox": {"path": "./inbox.txt"},
        "providers": {name: dict(entry) for name, entry in providers.items()},
        "download": {"allow_addresses": ["127.0.0.0/8"]},  # the fake CDN is on loopback, which the guard refuses
        "storage": {"backend": "local", "local": {"root": "./archive"}},
        "shutdown_grace": "60s",  # with --burst, the thumbnails queued at the end are made within it
        "index": {"enabled": True},
        "thumbnails": {"enabled": True},
    }
    path = folder / "config.yaml"
    path.write_text(HEADER.format(config=path) + yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def next_run(inbox_path: Path) -> int:
    """1 for a new folder; one more than the last run whose tasks the inbox holds."""
    if not inbox_path.exists():
        return 1
    return 1 + max((int(n) for n in RUN_LABEL.findall(inbox_path.read_bytes())), default=0)


def queue(folder: Path, inbox_path: Path, tasks: list[Planned], run: int) -> None:
    """One inbox line per task, in the documented format (entry, task ID, labels), each recorded first in
    `folder`/demo-tasks.jsonl with its plan: a run cut short by Ctrl-C is finished by the next."""
    with open(folder / RECORD, "a", encoding="utf-8") as record:
        record.writelines(json.dumps({"entry": t.entry, "task_id": t.task_id, "plan": t.plan, "run": run}) + "\n"
                          for t in tasks)
    for t in tasks:
        inbox.append(inbox_path, f"{t.entry} {t.task_id} project={t.project} demo=run-{run}")


def recorded(folder: Path) -> dict[tuple[str, str], int]:
    """The plan of every task an earlier run queued, by (entry, task ID)."""
    path = folder / RECORD
    if not path.exists():
        return {}
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {(r["entry"], r["task_id"]): r["plan"] for r in lines}
