"""The `archiver` command (README.md, commands). Exit codes: 0 ok, 2 usage or config error, 1 failure."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import yaml

from archiver import __version__, archive_cli, demo, inbox, logs
from archiver.config import Config, load_config
from archiver.config_view import describe
from archiver.daemon import Daemon
from archiver.errors import ArchiverError, ConfigError
from archiver.scrub import Redactor, json_text, printable
from archiver.model import ENDED, TaskRef, utc_iso, valid_task_id
from archiver.model import TaskState
from archiver.state import SqliteState, StateStore, Task, open_state, state_path
from archiver.state.sqlite import MEMORY
from archiver.status import current_status, show_text, status_text, task_view

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
    p.add_argument("--version", action="version", version=f"archiver {__version__}",
                   help="print the version and exit")
    p.add_argument("-c", "--config", help=help_c)
    # -c may also follow the command; SUPPRESS keeps it from erasing one given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", default=argparse.SUPPRESS, help=help_c)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", help="what to do (each has --help)")

    def command(name: str, summary: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=summary, description=summary + ".")

    run = command("run", "run the daemon in the foreground (systemd runs this); logs go to stderr")
    run.add_argument("--log-format", choices=("text", "json"), default="text",
                     help="log lines as text (default) or as JSON objects")
    run.add_argument("--burst", action="store_true", help="exit once the inbox is read and no task is in flight")
    add = command("add", "append one task to the inbox, safely while the daemon reads it")
    add.add_argument("provider", help="a provider entry from the config (providers: keys)")
    add.add_argument("task_id", help="the task ID the provider gave")
    add.add_argument("--label", action="append", default=[], metavar="K=V",
                     help="a label kept with the task and its sidecars (repeatable)")
    status = command("status", "show task counts, health, tasks in flight, failures and rejected inbox lines")
    status.add_argument("--json", action="store_true", help="print the report as JSON")
    show = command("show", "show one task: state, labels, polls, history and assets")
    show.add_argument("provider", help="the provider entry")
    show.add_argument("task_id", help="the task ID")
    show.add_argument("--json", action="store_true", help="print the task as JSON")
    retry = command("retry", "put ended tasks back to work; archived assets are kept")
    retry.add_argument("provider", nargs="?", help="the provider entry of one task")
    retry.add_argument("task_id", nargs="?", help="the task ID of one task")
    retry.add_argument("--failed", action="store_true", help="every failed task")
    command("check-config", "validate the config and print it resolved, secrets masked")
    archive_cli.add_parsers(sub, common)
    demo.add_parser(sub)
    return p


# Commands that print for a pipe: when the reader goes away (`| head`), they end quietly.
PRINTING = ("status", "show", "check-config", "add", "retry", "index", "verify")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command in PRINTING:
        # The Unix default, as head's neighbours (cat, seq) have it: a closed pipe ends us silently.
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    if args.command == "demo":  # the one command without a config: it writes its own
        return demo.cmd_demo(args)
    try:
        path = find_config(args.config)
        config = load_config(path, require_secrets=args.command in ("run", "check-config"))
        return COMMANDS[args.command](config, args)
    except ConfigError as e:
        print(printable(str(e)), file=sys.stderr)
        return 2
    except ArchiverError as e:
        print(printable(f"archiver: {e}"), file=sys.stderr)
        return 1


def cmd_run(config: Config, args: argparse.Namespace) -> int:
    logs.setup(args.log_format, redactor=Redactor.from_config(config))
    asyncio.run(Daemon(config, burst=args.burst).run())
    return 0


def cmd_add(config: Config, args: argparse.Namespace) -> int:
    _check_ref(config, args.provider, args.task_id, "add")
    words, labels = [args.provider, args.task_id], {}
    for label in args.label:
        key, eq, value = label.partition("=")
        if not eq or not key or any(c.isspace() for c in label):
            raise ConfigError(f"add: --label {label!r}: expected key=value without spaces")
        words.append(f"{key}={value}")
        labels[key] = value
    known = asyncio.run(_add(config, TaskRef(args.provider, args.task_id, labels)))
    if known is not None:
        print(f"already known: {args.provider} {args.task_id} ({known.state.value})")
        return 0
    if config.state.backend == "sqlite":  # PostgreSQL: stored above, for whichever daemon claims it
        inbox.append(config.inbox.path, " ".join(words))
    print(f"queued {args.provider} {args.task_id}")
    return 0


async def _add(config: Config, ref: TaskRef) -> Task | None:
    """The task if the state DB knows it already; with PostgreSQL a new one is stored at once."""
    if config.state.backend == "sqlite" and not state_path(config).exists():
        return None  # no state DB yet: not known, and the inbox line is the way in
    async with _state(config) as state:
        if config.state.backend == "sqlite":
            return await state.find(ref.provider, ref.task_id)
        [new] = await state.add_tasks([ref], note="cli")
        return await state.find(ref.provider, ref.task_id) if new is None else None


def no_state_yet(config: Config) -> bool:
    """SQLite, and no state DB file: the daemon has not run with this config yet."""
    return config.state.backend == "sqlite" and not state_path(config).exists()


@contextlib.asynccontextmanager
async def _state(config: Config, *, empty_ok: bool = False) -> AsyncIterator[StateStore]:
    """The state DB for one command. Without a SQLite file yet: an empty state in memory if
    `empty_ok` (status and show read nothing, and create no file for it), else an error."""
    if no_state_yet(config):
        if not empty_ok:
            raise ArchiverError(f"no state at {state_path(config)}: the daemon has not run with this config yet")
        state: StateStore = SqliteState(Path(MEMORY))
    else:
        state = await open_state(config)
    try:
        yield state
    finally:
        await state.close()


async def _status(config: Config) -> dict[str, Any]:
    async with _state(config, empty_ok=True) as state:
        return await current_status(state, config)


def cmd_status(config: Config, args: argparse.Namespace) -> int:
    report = asyncio.run(_status(config))
    if args.json:
        print(json_text(report))
        return 0
    if no_state_yet(config):
        print(f"state: none yet at {state_path(config)} (the daemon has not run with this config)")
    print(status_text(report))
    return 0


def _check_ref(config: Config, provider: str, task_id: str, command: str) -> None:
    """Refuse a provider that is not configured, or an ID no inbox line could carry."""
    if provider not in config.providers:
        raise ConfigError(f"{command}: provider {provider!r} is not configured "
                          f"(configured: {', '.join(config.providers)})")
    if not valid_task_id(task_id):
        raise ConfigError(f"{command}: {task_id!r} is not a valid task ID: use 1-200 of A-Z a-z 0-9 . _ : -")


def cmd_show(config: Config, args: argparse.Namespace) -> int:
    _check_ref(config, args.provider, args.task_id, "show")
    doc = asyncio.run(_show(config, args.provider, args.task_id))
    if args.json:
        print(json_text(doc))
        return 0
    print(show_text(doc))
    return 0


async def _show(config: Config, provider: str, task_id: str) -> dict[str, Any]:
    async with _state(config, empty_ok=True) as state:
        return await task_view(state, config, provider, task_id)


def cmd_retry(config: Config, args: argparse.Namespace) -> int:
    if args.failed == bool(args.provider) or (args.provider and not args.task_id):
        raise ConfigError("retry: give PROVIDER TASK_ID, or --failed")
    if args.provider:
        _check_ref(config, args.provider, args.task_id, "retry")
    count = asyncio.run(_retry(config, args))
    print(f"{count} task(s) queued again at {utc_iso(time.time())}")
    return 0


async def _retry(config: Config, args: argparse.Namespace) -> int:
    async with _state(config) as state:
        if args.failed:
            tasks = await state.tasks_in((TaskState.FAILED,))
        else:
            task = await state.find(args.provider, args.task_id)
            if task is None:
                raise ArchiverError(f"no task {args.provider} {args.task_id}")
            if task.state not in ENDED:
                raise ArchiverError(f"{args.provider} {args.task_id} is still {task.state.value}")
            tasks = [task]
        return await state.retry([t.pk for t in tasks])


def cmd_check_config(config: Config, args: argparse.Namespace) -> int:
    # The file as written says which values are the user's; the rest are shown as defaults.
    print(describe(config, yaml.safe_load(config.path.read_text(encoding="utf-8"))))
    warnings = config.warnings
    for warning in warnings:
        print(f"warning: {warning}")
    print("config ok" + (f", with {len(warnings)} warning(s)" if warnings else ""))
    return 0


COMMANDS = {
    "run": cmd_run, "add": cmd_add, "status": cmd_status, "show": cmd_show,
    "retry": cmd_retry, "check-config": cmd_check_config,
    **archive_cli.COMMANDS,
}
