"""The `archiver` command (design.md §2). Exit codes: 0 ok, 2 usage or config error, 1 failure."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from archiver import archive_cli, inbox, logs
from archiver.config import Config, describe, load_config
from archiver.daemon import Daemon, state_path
from archiver.errors import ArchiverError, ConfigError
from archiver.model import ENDED, State, utc_iso, valid_task_id
from archiver.state import StateDB, Task

CONFIG_PLACES = ("./config.yaml", "/etc/archiver/config.yaml")


def find_config(given: str | None) -> Path:
    """-c, then $ARCHIVER_CONFIG, then ./config.yaml, then /etc/archiver/config.yaml."""
    if given:
        return Path(given)
    if os.environ.get("ARCHIVER_CONFIG"):
        return Path(os.environ["ARCHIVER_CONFIG"])
    for place in CONFIG_PLACES:
        if Path(place).exists():
            return Path(place)
    raise ConfigError("config: no config file: pass -c PATH, set ARCHIVER_CONFIG, or create ./config.yaml")


def parser() -> argparse.ArgumentParser:
    help_c = "config file (default: $ARCHIVER_CONFIG, ./config.yaml, /etc/archiver/config.yaml)"
    p = argparse.ArgumentParser(prog="archiver", description="Poll AI generation tasks and archive every result.")
    p.add_argument("-c", "--config", help=help_c)
    # -c may also follow the command; SUPPRESS keeps it from erasing one given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", default=argparse.SUPPRESS, help=help_c)
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", parents=[common], help="the daemon, in the foreground")
    run.add_argument("--log-format", choices=("text", "json"), default="text")
    run.add_argument("--burst", action="store_true", help="exit once the inbox is read and no task is in flight")
    add = sub.add_parser("add", parents=[common], help="append one task to the inbox")
    add.add_argument("provider")
    add.add_argument("task_id")
    add.add_argument("--label", action="append", default=[], metavar="K=V")
    status = sub.add_parser("status", parents=[common], help="counts, tasks in flight, recent failures")
    status.add_argument("--json", action="store_true")
    show = sub.add_parser("show", parents=[common], help="one task: state, history, assets")
    show.add_argument("provider")
    show.add_argument("task_id")
    show.add_argument("--json", action="store_true")
    retry = sub.add_parser("retry", parents=[common], help="put ended tasks back to work")
    retry.add_argument("provider", nargs="?")
    retry.add_argument("task_id", nargs="?")
    retry.add_argument("--failed", action="store_true", help="every failed task")
    sub.add_parser("check-config", parents=[common], help="validate and print the resolved config")
    archive_cli.add_parsers(sub, common)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        path = find_config(args.config)
        config = load_config(path, require_secrets=args.command in ("run", "check-config"))
        return COMMANDS[args.command](config, args)
    except ConfigError as e:
        print(str(e), file=sys.stderr)
        return 2
    except ArchiverError as e:
        print(f"archiver: {e}", file=sys.stderr)
        return 1


def cmd_run(config: Config, args: argparse.Namespace) -> int:
    logs.setup(args.log_format)
    asyncio.run(Daemon(config, burst=args.burst).run())
    return 0


def cmd_add(config: Config, args: argparse.Namespace) -> int:
    if args.provider not in config.providers:
        raise ConfigError(f"add: unknown provider {args.provider!r} (configured: {', '.join(config.providers)})")
    if not valid_task_id(args.task_id):
        raise ConfigError(f"add: bad task ID {args.task_id!r}: use 1-200 of A-Z a-z 0-9 . _ : -")
    words = [args.provider, args.task_id]
    for label in args.label:
        key, eq, value = label.partition("=")
        if not eq or not key or any(c.isspace() for c in label):
            raise ConfigError(f"add: --label {label!r}: expected key=value without spaces")
        words.append(f"{key}={value}")
    inbox.append(config.inbox.path, " ".join(words))
    return 0


def _open_state(config: Config) -> StateDB:
    path = state_path(config)
    if not path.exists():
        raise ArchiverError(f"no state at {path}: the daemon has not run with this config yet")
    return StateDB(path)


def _task_brief(task: Task) -> dict[str, Any]:
    return {"provider": task.provider, "task_id": task.task_id, "state": task.state.value,
            "reason": task.reason, "code": task.code, "message": task.message,
            "polls": task.polls, "first_seen_at": utc_iso(task.first_seen_at)}


def status_report(state: StateDB) -> dict[str, Any]:
    in_flight = state.recent((State.POLLING, State.DOWNLOADING, State.QUEUED), 50)
    return {
        "counts": state.counts(),
        "in_flight": [_task_brief(t) for t in in_flight],
        "recent_failures": [_task_brief(t) for t in state.recent((State.FAILED,), 20)],
        "rejected_lines": [{"line": r["line_no"], "reason": r["reason"], "text": r["line"],
                            "at": utc_iso(r["at"])} for r in state.recent_rejects(20)],
        "health": {name: {"state": h["state"], "message": h["message"], "since": utc_iso(h["at"])}
                   for name, h in state.health().items()},
    }


def cmd_status(config: Config, args: argparse.Namespace) -> int:
    state = _open_state(config)
    try:
        report = status_report(state)
    finally:
        state.close()
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
        return 0
    print("tasks: " + "  ".join(f"{k} {v}" for k, v in report["counts"].items()))
    for name, h in report["health"].items():
        print(f"{name}: {h['state']}" + (f" ({h['message']})" if h["message"] and h["state"] != "ok" else ""))
    _section("in flight", [f"{t['state']:<12} {t['provider']} {t['task_id']}  polls {t['polls']}"
                           for t in report["in_flight"]])
    _section("recent failures", [
        f"{t['provider']} {t['task_id']}  {t['reason']}"
        + (f"  [{t['code']}] " if t["code"] else "  ") + (t["message"] or "")
        for t in report["recent_failures"]])
    _section("rejected inbox lines", [f"line {r['line']}: {r['reason']}" for r in report["rejected_lines"]])
    return 0


def _section(title: str, lines: list[str]) -> None:
    if lines:
        print(f"{title}:")
        for line in lines:
            print(f"  {line}")


def cmd_show(config: Config, args: argparse.Namespace) -> int:
    state = _open_state(config)
    try:
        task = state.find(args.provider, args.task_id)
        if task is None:
            raise ArchiverError(f"no task {args.provider} {args.task_id} (add it with: archiver add)")
        doc = _task_brief(task) | {
            "labels": task.labels, "model": task.model,
            "history": [{"at": utc_iso(h["at"]), "state": h["state"], "reason": h["reason"],
                         "note": h["note"]} for h in state.history(task.pk)],
            "assets": [{"index": a.idx, "state": a.state, "key": a.key, "bytes": a.bytes,
                        "sha256": a.sha256} for a in state.assets(task.pk)],
        }
    finally:
        state.close()
    if args.json:
        print(json.dumps(doc, indent=2, ensure_ascii=False))
        return 0
    print(f"{task.provider} {task.task_id}: {task.state.value}"
          + (f" ({task.reason}: {task.message or ''})" if task.reason else ""))
    _section("history", [f"{h['at']} {h['state']}" + (f" {h['reason']}" if h["reason"] else "")
                         + (f" — {h['note']}" if h["note"] else "") for h in doc["history"]])
    _section("assets", [f"{a['index']:02d} {a['state']:<9} {a['key'] or '-'}" for a in doc["assets"]])
    return 0


def cmd_retry(config: Config, args: argparse.Namespace) -> int:
    if args.failed == bool(args.provider):
        raise ConfigError("retry: give PROVIDER TASK_ID, or --failed")
    state = _open_state(config)
    try:
        if args.failed:
            tasks = state.tasks_in((State.FAILED,))
        else:
            task = state.find(args.provider, args.task_id or "")
            if task is None:
                raise ArchiverError(f"no task {args.provider} {args.task_id}")
            if task.state not in ENDED:
                raise ArchiverError(f"{args.provider} {args.task_id} is still {task.state.value}")
            tasks = [task]
        count = state.retry([t.pk for t in tasks])
    finally:
        state.close()
    print(f"{count} task(s) queued again at {time.strftime('%H:%M:%S')}")
    return 0


def cmd_check_config(config: Config, args: argparse.Namespace) -> int:
    print(json.dumps(describe(config), indent=2))
    return 0


COMMANDS = {
    "run": cmd_run, "add": cmd_add, "status": cmd_status, "show": cmd_show,
    "retry": cmd_retry, "check-config": cmd_check_config,
    **archive_cli.COMMANDS,
}
