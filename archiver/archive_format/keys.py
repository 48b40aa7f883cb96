"""Every key in the archive: assets from `storage.layout`, their sidecars, _failed records, the index.

`check_key` is the one rule every storage backend and `archiver serve` apply to a key.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import posixpath
import re
import secrets
import string
import unicodedata
from dataclasses import dataclass

from archiver.errors import ConfigError

PLACEHOLDERS = ("provider", "provider_type", "task_id", "index", "count", "ext", "media", "model", "date")
SIDECAR_SUFFIX = ".json"
FAILED_PREFIX = "_failed/"
INDEX_PREFIX = "_index/"
THUMBS_PREFIX = "_thumbs/"  # derived objects: `_thumbs/<asset key>.webp`, made again from the asset at will
DAYS_KEY = "_index/days.json"
WRITE_PROBE_KEY = "_index/write-probe"  # S3: the object a start writes twice to see If-None-Match honoured
PAGE_KEY = "index.html"
# `.{name}.tmp-{12 hex}`: what a put leaves behind only when the process dies mid-write.
TEMP_NAME = re.compile(r"\..+\.tmp-[0-9a-f]{12}")


@dataclass(frozen=True)
class KeyFields:
    """Everything a layout may use for one asset."""

    provider: str
    provider_type: str
    task_id: str
    index: int
    count: int
    ext: str
    media: str
    model: str | None
    date: dt.datetime


def check_layout(layout: object, key: str) -> None:
    """Refuse a layout with unknown placeholders or one that cannot tell assets apart."""
    if not isinstance(layout, str) or not layout.strip():
        raise ConfigError(f"config: {key}: expected a template string")
    try:
        names = {f[1].split(".")[0].split("[")[0] for f in string.Formatter().parse(layout) if f[1]}
    except ValueError as e:
        raise ConfigError(f"config: {key}: {e}") from None
    unknown = names - set(PLACEHOLDERS)
    if unknown:
        raise ConfigError(f"config: {key}: unknown placeholder {sorted(unknown)[0]!r} "
                          f"(known: {', '.join(PLACEHOLDERS)})")
    if layout.startswith("/") or ".." in layout.split("/"):
        raise ConfigError(f"config: {key}: keys are relative to the archive root: no leading / and no .. segment")
    if not {"task_id", "index"} <= names:
        raise ConfigError(f"config: {key}: must contain {{task_id}} and {{index}} so keys are unique")
    sample = KeyFields("p", "type", "t", 0, 1, "png", "image", "m", dt.datetime(2026, 1, 1))
    try:
        render_key(layout, sample)
    except (ValueError, KeyError, IndexError, AttributeError) as e:
        raise ConfigError(f"config: {key}: {e}") from None


def _segment(value: str) -> str:
    """One safe path segment: no separators, no NUL, no dot-only names."""
    value = unicodedata.normalize("NFC", value)
    value = re.sub(r"[^\w.:\-]+", "_", value, flags=re.ASCII)
    value = value.strip(".") or "_"
    return value[:200]


def render_key(layout: str, f: KeyFields) -> str:
    """The storage key for one asset; every placeholder is made path-safe first."""
    key = layout.format(
        provider=_segment(f.provider),
        provider_type=_segment(f.provider_type),
        task_id=_segment(f.task_id),
        index=f.index,
        count=f.count,
        ext=_segment(f.ext),
        media=_segment(f.media),
        model=_segment(f.model or "unknown"),
        date=f.date,
    )
    parts = [_fit(p) for p in key.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    if not parts:
        raise ValueError("layout produced an empty key")
    return posixpath.join(*parts)


def _fit(part: str, limit: int = 240) -> str:
    """Keep a path segment under file systems' 255-byte name limit, unique and with its end."""
    if len(part.encode()) <= limit:
        return part
    digest = hashlib.sha256(part.encode()).hexdigest()[:16]
    return f"{part[:100]}-{digest}-{part[-100:]}"


def check_key(key: str) -> list[str]:
    """The key's segments, or ValueError for a key that could leave the root or the layout.

    Refused: empty, absolute, NUL or backslash, empty/`.`/`..` segments, and a last segment
    shaped like our temp files (a local store's start() deletes those, so no key may look like one).
    """
    if not isinstance(key, str) or not key:
        raise ValueError("storage key: must be a non-empty string")
    if "\x00" in key or "\\" in key:
        raise ValueError(f"storage key {key!r}: NUL and backslash are not allowed")
    if key.startswith("/"):
        raise ValueError(f"storage key {key!r}: must be relative")
    parts = key.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"storage key {key!r}: empty, '.' and '..' segments are not allowed")
    if TEMP_NAME.fullmatch(parts[-1]):
        raise ValueError(f"storage key {key!r}: the name looks like a temp file")
    return parts


def temp_name(name: str) -> str:
    """A fresh name, matching TEMP_NAME, for the file a write goes to before it is published as `name`."""
    return f".{name}.tmp-{secrets.token_hex(6)}"


def sidecar_key(asset_key: str) -> str:
    return asset_key + SIDECAR_SUFFIX


def asset_of_sidecar(sidecar: str) -> str:
    return sidecar.removesuffix(SIDECAR_SUFFIX)


def is_sidecar(key: str) -> bool:
    return key.endswith(SIDECAR_SUFFIX) and not key.startswith((INDEX_PREFIX, FAILED_PREFIX, THUMBS_PREFIX))


def thumb_key(asset_key: str) -> str:
    """The asset's thumbnail (an image) or poster frame (a video): a WebP beside the archive's own files."""
    return f"{THUMBS_PREFIX}{asset_key}.webp"


def failed_key(provider: str, task_id: str) -> str:
    return f"{FAILED_PREFIX}{_segment(provider)}/{_segment(task_id)}.json"


def day_key(date: str) -> str:
    return f"{INDEX_PREFIX}days/{date}.json"


