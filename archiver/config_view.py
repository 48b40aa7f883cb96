"""The resolved config as `archiver check-config` prints it: YAML in the file's shape, secrets
masked, each default marked (docs/configuration.md)."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any

import yaml

from archiver.config import Config, S3Config
from archiver.providers.entry import ProviderEntry
from archiver.values import ENV_VAR, Secret, show_duration, show_size


@dataclass(frozen=True)
class _Masked:
    """A secret as check-config shows it: `***`, or empty with the variable that was not set."""

    shown: str
    note: str = ""


_TOP = ("state_dir", "inbox", "providers", "download", "storage", "http", "shutdown_grace", "index", "state",
        "thumbnails")


def describe(config: Config, raw: Any) -> str:
    """The resolved config as YAML in the file's shape, secrets masked. `raw` is the file as written:
    a value it does not set is a default, and its line says so."""
    doc = _view(config, raw if isinstance(raw, dict) else {})
    lines: list[str] = []
    _emit({k: doc[k] for k in _TOP if k in doc}, raw if isinstance(raw, dict) else None, "", lines)
    return "\n".join(lines)


def _view(config: Config, raw: dict[str, Any]) -> dict[str, Any]:
    def given(*path: str) -> Any:
        node: Any = raw
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        return node

    storage = config.storage
    shown_storage: dict[str, Any] = {"backend": storage.backend, "layout": storage.layout}
    if storage.backend == "local" or given("storage", "local") is not None:
        shown_storage["local"] = {"root": str(storage.local.root)}
    if storage.backend == "s3" or given("storage", "s3") is not None:
        shown_storage["s3"] = {f.name: getattr(storage.s3, f.name) for f in fields(S3Config)}
    http: dict[str, Any] = {"listen": None}
    if config.http is not None:
        host = f"[{config.http.host}]" if ":" in config.http.host else config.http.host
        http = {"listen": f"{host}:{config.http.port}", "token": _mask(config.http.token, given("http", "token")),
                "storage_grace": show_duration(config.http.storage_grace)}
    state: dict[str, Any] = {"backend": config.state.backend}
    if config.state.backend == "postgres":
        state["dsn"] = _mask(config.state.dsn, given("state", "dsn"))
    state["lease"] = show_duration(config.state.lease)
    d = config.download
    return {
        "state_dir": str(config.state_dir),
        "inbox": {"path": str(config.inbox.path), "default_provider": config.inbox.default_provider},
        "providers": {name: _entry_view(e, given("providers", name) or {}) for name, e in config.providers.items()},
        "download": {"concurrency": d.concurrency, "per_host": d.per_host, "max_bytes": show_size(d.max_bytes),
                     "allow_addresses": list(d.allow_addresses)},
        "storage": shown_storage,
        "http": http,
        "shutdown_grace": show_duration(config.shutdown_grace),
        "index": {"enabled": config.index.enabled, "every": show_duration(config.index.every)},
        "thumbnails": {"enabled": config.thumbnails.enabled, "size": config.thumbnails.size},
        "state": state,
    }


def _entry_view(entry: ProviderEntry, raw: dict[str, Any]) -> dict[str, Any]:
    """One provider entry: its type's own options, then the keys every entry has."""
    view: dict[str, Any] = {"type": entry.type, **entry.options.view()}
    view |= {
        "api_key": _mask(entry.api_key, raw.get("api_key")),
        "base_url": entry.base_url,
        "requests_per_second": int(rps) if (rps := entry.requests_per_second).is_integer() else rps,
        "give_up_after": show_duration(entry.give_up_after),
        "poll_intervals": [show_duration(every) + ("" if until == float("inf") else f" until {show_duration(until)}")
                           for every, until in entry.poll_intervals],
    }
    given = raw.get("callbacks") if isinstance(raw.get("callbacks"), dict) else {}
    if entry.callbacks is not None or given:
        on = entry.callbacks
        view["callbacks"] = {"secret": _mask(on.secret if on else Secret(""), given.get("secret")),
                             "adopt": on.adopt if on else bool(given.get("adopt", False))}
    return view


def _mask(secret: Secret, written: Any) -> _Masked:
    if secret.value:
        return _Masked("'***'")
    unset = [m.group(1) for m in ENV_VAR.finditer(str(written or "")) if m.group(1) not in os.environ]
    return _Masked("''", f"{', '.join(unset)} not set" if unset else "empty")


def _emit(node: dict[str, Any], raw: dict[str, Any] | None, pad: str, lines: list[str]) -> None:
    for key, value in node.items():
        written = raw.get(key) if raw is not None and key in raw else None
        is_set = raw is not None and key in raw
        if isinstance(value, dict) and value:
            lines.append(f"{pad}{key}:")
            _emit(value, written if isinstance(written, dict) else None, pad + "  ", lines)
            continue
        notes = [] if is_set else ["default"]
        if isinstance(value, _Masked):
            shown = value.shown
            notes += [value.note] if value.note else []
        else:
            shown = yaml.safe_dump(value, default_flow_style=True, width=10**6).removesuffix("\n...\n").strip()
        lines.append(f"{pad}{key}: {shown}" + (f"  # {'; '.join(notes)}" if notes else ""))
