"""Day files (`archiver.day/2`) and days.json (`archiver.index/1`): their shapes, and the day of a key.

The shapes are documented in docs/archive-format.md.

Both sources — the state DB and the store's own sidecars — produce `Day`s through the
helpers here, so a rebuild from either writes the same bytes.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import string
from dataclasses import dataclass, field
from typing import Any

from archiver.model import utc_iso

DAY_SCHEMA = "archiver.day/2"  # /2 added thumb, width, height and placeholder
INDEX_SCHEMA = "archiver.index/1"
ASSET_FIELDS = ("key", "sidecar", "provider", "provider_type", "task_id", "index", "count", "media", "model",
                "prompt", "labels", "content_type", "bytes", "sha256", "archived_at", "thumb", "width", "height",
                "placeholder")
OPTIONAL = frozenset({"thumb", "width", "height", "placeholder"})
FAILED_FIELDS = ("provider", "task_id", "reason", "provider_code", "provider_message", "record", "labels")


@dataclass
class Day:
    """One UTC day of the archive: assets by the day success was seen, failures by when they ended."""

    date: str
    assets: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)

    def ordered_assets(self) -> list[dict[str, Any]]:
        """`assets` in the day file's order: newest first (the search index counts entries from the end)."""
        return sorted(self.assets, key=lambda a: (a["archived_at"] or "", a["key"]), reverse=True)

    def encode(self) -> bytes:
        """Deterministic bytes: the same content always gives the same file (and digest)."""
        failed = sorted(self.failed, key=lambda f: f["record"])
        doc = {"schema": DAY_SCHEMA, "date": self.date, "assets": self.ordered_assets(), "failed": failed}
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    def summary(self) -> dict[str, Any]:
        return {"date": self.date, "tasks": len({(a["provider"], a["task_id"]) for a in self.assets}),
                "assets": len(self.assets), "bytes": sum(a["bytes"] or 0 for a in self.assets),
                "failed": len(self.failed)}


def encode_days(summaries: list[dict[str, Any]], now: float) -> bytes:
    """days.json: newest day first; days with nothing in them are left out."""
    days = sorted((s for s in summaries if s["assets"] or s["failed"]), key=lambda s: s["date"], reverse=True)
    doc = {"schema": INDEX_SCHEMA, "generated_at": utc_iso(now), "days": days}
    return json.dumps(doc, ensure_ascii=False, indent=1).encode("utf-8")


def asset_entry(**values: Any) -> dict[str, Any]:
    """A day file's entry; `thumb`, `width`, `height` and `placeholder` may be left out (null)."""
    return {name: values.get(name) if name in OPTIONAL else values[name] for name in ASSET_FIELDS}


def failed_entry(**values: Any) -> dict[str, Any]:
    return {name: values[name] for name in FAILED_FIELDS}


def utc_day(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d")


_DIRECTIVES = {"Y": r"(?P<Y>\d{4})", "m": r"(?P<m>\d{2})", "d": r"(?P<d>\d{2})",
               "F": r"(?P<Y>\d{4})-(?P<m>\d{2})-(?P<d>\d{2})"}


def key_pattern(layout: str) -> re.Pattern[str] | None:
    """A regex reading the date back out of keys made by `layout`; None without a full date in it."""
    out: list[str] = []
    seen: set[str] = set()
    for literal, name, spec, _ in string.Formatter().parse(layout):
        out.append(re.escape(literal))
        if name is None:
            continue
        if name != "date" or not spec:
            out.append(r"[^/]*?" if name != "date" else r".*?")
            continue
        for text, directive in re.findall(r"([^%]*)(?:%(.))?", spec):
            out.append(re.escape(text))
            groups = {"Y", "m", "d"} if directive == "F" else {directive}
            if directive in _DIRECTIVES and not groups & seen:  # a name may be captured once
                out.append(_DIRECTIVES[directive])
                seen |= groups
            elif directive:
                out.append(r"[^/]*?")
    if seen != {"Y", "m", "d"}:
        return None
    return re.compile("".join(out))


def day_of_key(pattern: re.Pattern[str] | None, key: str) -> str | None:
    """The layout's date of an asset key (when success was seen), if the layout holds one."""
    if pattern is None or not (m := pattern.fullmatch(key)):
        return None
    return f"{m['Y']}-{m['m']}-{m['d']}"
