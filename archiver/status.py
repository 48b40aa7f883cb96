"""The status read model: the report `archiver status` and `GET /status` give, and the task view of `show`.

Plain dicts of JSON types, built from the state DB, the lock file and the inbox, and their text
(`status_text`, `show_text`) as the CLI and the demo print it; the HTTP server gives them as JSON.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from archiver import inbox
from archiver.config import Config
from archiver.errors import ArchiverError
from archiver.lock import Holder, running
from archiver.scrub import printable
from archiver.model import TaskState, utc_iso
from archiver.state import KEEP_REJECTS, Health, StateStore, Task, state_path
from archiver.state import Daemon as DaemonRow

INBOX_SHOWN = 20  # inbox lines not read yet that status lists


async def current_status(state: StateStore, config: Config) -> dict[str, Any]:
    """The report for `config`'s state, with the running daemon as the lock file names it."""
    return await status_report(state, running(state_path(config)), config.state.lease, config)


async def status_report(state: StateStore, holder: Holder | None, lease: float,
                        config: Config | None = None) -> dict[str, Any]:
    """`status --json`. A daemon is live while its heartbeat is younger than the lease; health rows
    of no live daemon, or from before the running daemon's start, are stale. With `config`, the
    inbox lines the daemon has not read yet too."""
    in_flight = await state.recent((TaskState.POLLING, TaskState.DOWNLOADING, TaskState.QUEUED), 50,
                                   by="first_seen_at")
    now = time.time()
    live = {d.id: d for d in await state.daemons() if now - d.seen_at < lease}
    if state.backend == "sqlite" and holder is None:
        live = {}  # the lock file is the truth for the one SQLite daemon
    started = holder.started_at if holder else float("inf")
    return {
        "backend": state.backend,
        "daemon": _daemon(holder),
        "daemons": [{"id": d.id, "host": d.host, "pid": d.pid, "since": utc_iso(d.started_at),
                     "seen": utc_iso(d.seen_at), "holds": d.holds} for d in live.values()],
        "counts": await state.counts(),
        "in_flight": [task_brief(t) for t in in_flight],
        "recent_failures": [task_brief(t) for t in await state.recent((TaskState.FAILED,), 20)],
        "rejected_lines": [{"line": r["line_no"], "reason": r["reason"], "text": r["line"],
                            "at": utc_iso(r["at"])} for r in await state.recent_rejects(KEEP_REJECTS)],
        "health": {_health_name(h, live): {"state": h.state, "message": h.message, "since": utc_iso(h.at),
                                           "stale": (h.at < started) if state.backend == "sqlite"
                                           else h.daemon not in live}
                   for h in await state.health()},
        "inbox": await inbox_report(state, config) if config else {"path": None, "unread_bytes": 0, "unread": []},
    }


async def inbox_report(state: StateStore, config: Config, limit: int | None = INBOX_SHOWN) -> dict[str, Any]:
    """The first `limit` task lines after the stored inbox position, and the bytes not read yet."""
    found, left = await asyncio.to_thread(inbox.unread, config.inbox.path, await state.inbox_position(),
                                          config.providers.keys(), config.inbox.default_provider, limit)
    return {"path": str(config.inbox.path), "unread_bytes": left, "unread": [
        {"line": u.line_no, "text": u.text, "provider": u.ref and u.ref.provider,
         "task_id": u.ref and u.ref.task_id, "labels": u.ref.labels if u.ref else {}, "error": u.error}
        for u in found]}


async def task_view(state: StateStore, config: Config, provider: str, task_id: str) -> dict[str, Any]:
    """`show --json`: one task with its history and assets, or its inbox line if the daemon has
    not read it yet; ArchiverError if neither knows it."""
    task = await state.find(provider, task_id)
    if task is None:
        return await _in_inbox(state, config, provider, task_id)
    return task_brief(task) | {
        "model": task.model,
        "history": [{"at": utc_iso(h["at"]), "state": h["state"], "reason": h["reason"],
                     "note": h["note"]} for h in await state.history(task.pk)],
        "assets": [{"index": a.idx, "state": a.state, "key": a.key, "bytes": a.bytes,
                    "sha256": a.sha256} for a in await state.assets(task.pk)],
    }


def task_brief(task: Task) -> dict[str, Any]:
    """A task as status lists it (and as the task view begins)."""
    return {"provider": task.provider, "task_id": task.task_id, "state": task.state.value,
            "reason": task.reason, "code": task.code, "message": task.message,
            "polls": task.polls, "last_error": task.last_error, "labels": task.labels,
            "first_seen_at": utc_iso(task.first_seen_at)}


async def _in_inbox(state: StateStore, config: Config, provider: str, task_id: str) -> dict[str, Any]:
    """A task the state DB does not know, from the inbox lines the daemon has not read yet."""
    for u in (await inbox_report(state, config, None))["unread"]:
        if (u["provider"], u["task_id"]) == (provider, task_id):
            return {"provider": provider, "task_id": task_id, "state": "inbox", "reason": None, "code": None,
                    "message": None, "polls": 0, "last_error": None, "labels": u["labels"], "first_seen_at": None,
                    "model": None, "history": [], "assets": [], "inbox_line": u["line"]}
    raise ArchiverError(f"no task {provider} {task_id} (add it with: archiver add {provider} {task_id})")


def _daemon(holder: Holder | None) -> dict[str, Any]:
    if holder is None:
        return {"running": False}
    return {"running": True, "pid": holder.pid, "started_at": utc_iso(holder.started_at),
            "uptime_seconds": round(time.time() - holder.started_at)}


def _health_name(h: Health, live: dict[str, DaemonRow]) -> str:
    """A row's name; with several daemons each says its own, as `name@host:pid`."""
    if not h.daemon:
        return h.name
    d = live.get(h.daemon)
    return f"{h.name}@{d.host}:{d.pid}" if d else f"{h.name}@{h.daemon}"


def status_text(report: dict[str, Any]) -> str:
    daemon = report["daemon"]
    lines = [f"daemon: running (pid {daemon['pid']}, up {_span(daemon['uptime_seconds'])})"
             if daemon["running"] else "daemon: not running"]
    lines.append("tasks: " + "  ".join(f"{k} {v}" for k, v in report["counts"].items()))
    if report["backend"] != "sqlite":  # the one SQLite daemon is the line above
        lines += _section("live daemons", [
            f"{d['host']} pid {d['pid']} since {d['since']}, holds "
            + (" ".join(f"{k} {v}" for k, v in d["holds"].items()) or "nothing") for d in report["daemons"]])
    for name, h in report["health"].items():
        detail = f" ({h['message']})" if h["message"] and h["state"] != "ok" else ""
        when = " since " + h["since"] + (", stale: from before the daemon's start" if h["stale"] else "")
        lines.append(f"{name}: {h['state']}{detail}{when}")
    lines += _section("in flight (newest first)", [
        f"{t['state']:<12} {t['provider']} {t['task_id']}  polls {t['polls']}"
        + (f"  last error: {t['last_error']}" if t["last_error"] else "") for t in report["in_flight"]])
    lines += _section("recent failures", [
        f"{t['provider']} {t['task_id']}  {t['reason']}"
        + (f"  [{t['code']}] " if t["code"] else "  ") + (t["message"] or "")
        for t in report["recent_failures"]])
    lines += _section("rejected inbox lines (newest first)", [
        f"{r['at']} line {r['line']}: {r['reason']}: {_clip(r['text'], 80)}" for r in report["rejected_lines"]])
    unread = report["inbox"]["unread"]
    more = [f"… ({report['inbox']['unread_bytes']:,} bytes not read in all)"] if len(unread) >= INBOX_SHOWN else []
    lines += _section("inbox lines not read yet (oldest first)", [
        f"line {u['line']}: {_clip(u['text'], 80)}" + (f"  (to be rejected: {u['error']})" if u["error"] else "")
        for u in unread] + more)
    return "\n".join(map(printable, lines))  # provider messages and inbox lines are outside text


def _span(seconds: int) -> str:
    """3h12m, 4m05s, 12s."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def _section(title: str, lines: list[str]) -> list[str]:
    return [f"{title}:", *(f"  {line}" for line in lines)] if lines else []


def show_text(doc: dict[str, Any]) -> str:
    if doc["state"] == "inbox":
        return "\n".join(map(printable, [
            f"{doc['provider']} {doc['task_id']}: in the inbox (line {doc['inbox_line']}), not read by the daemon yet",
            "labels: " + (" ".join(f"{k}={v}" for k, v in doc["labels"].items()) or "-")]))
    lines = [f"{doc['provider']} {doc['task_id']}: {doc['state']}"
             + (f" ({doc['reason']}: {doc['message'] or ''})" if doc["reason"] else ""),
             "labels: " + (" ".join(f"{k}={v}" for k, v in doc["labels"].items()) or "-"),
             f"polls: {doc['polls']}" + (f"  last error: {doc['last_error']}" if doc["last_error"] else "")]
    lines += _section("history", [f"{h['at']} {h['state']}" + (f" {h['reason']}" if h["reason"] else "")
                                  + (f" — {h['note']}" if h["note"] else "") for h in doc["history"]])
    lines += _section("assets", [f"{a['index']:02d} {a['state']:<9} {a['key'] or '-'}" for a in doc["assets"]])
    return "\n".join(map(printable, lines))
