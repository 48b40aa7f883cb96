"""Storage keys from `storage.layout`, and file extensions from bytes, type or URL path."""

from __future__ import annotations

import datetime as dt
import hashlib
import posixpath
import re
import string
import unicodedata
from dataclasses import dataclass
from urllib.parse import urlsplit

from archiver.errors import ConfigError

PLACEHOLDERS = ("provider", "provider_type", "task_id", "index", "count", "ext", "media", "model", "date")

_CONTENT_TYPES = {
    "png": "image/png", "jpg": "image/jpeg", "webp": "image/webp", "gif": "image/gif",
    "mp4": "video/mp4", "webm": "video/webm", "mov": "video/quicktime", "mp3": "audio/mpeg",
    "wav": "audio/wav", "m4a": "audio/mp4", "aac": "audio/aac", "flac": "audio/flac",
    "bin": "application/octet-stream",
}
_FROM_TYPE = {v: k for k, v in _CONTENT_TYPES.items()} | {
    "image/jpg": "jpg", "audio/mp3": "mp3", "audio/x-wav": "wav", "audio/wave": "wav",
    "audio/x-m4a": "m4a", "audio/x-flac": "flac"}
_URL_EXTS = {"png", "jpg", "jpeg", "webp", "gif", "mp4", "webm", "mov", "mp3", "wav", "m4a", "aac", "flac"}
_VIDEO, _AUDIO = {"mp4", "webm", "mov"}, {"mp3", "wav", "m4a", "aac", "flac"}
_M4A_BRANDS = (b"M4A ", b"M4B ", b"M4P ")


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


def failed_key(provider: str, task_id: str) -> str:
    return f"_failed/{_segment(provider)}/{_segment(task_id)}.json"


def sniff_ext(head: bytes) -> str | None:
    """The file type from its first bytes, for the formats we archive."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "webm"
    if head[4:8] == b"ftyp":
        if head[8:12] in _M4A_BRANDS:
            return "m4a"
        return "mov" if head[8:10] == b"qt" else "mp4"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:3] == b"ID3":
        return "mp3"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        # An MPEG audio frame sync: layer bits 00 are AAC in ADTS, 01 is MP3 (layer III).
        layer = (head[1] >> 1) & 0b11
        if layer == 0 and head[1] & 0xF0 == 0xF0:
            return "aac"
        if layer == 1:
            return "mp3"
    return None


def choose_ext(head: bytes, content_type: str | None, url: str) -> str:
    """Bytes first, then Content-Type, then the URL path (never its query string)."""
    ext = sniff_ext(head)
    if ext:
        return ext
    mime = (content_type or "").split(";")[0].strip().lower()
    if mime in _FROM_TYPE and mime != "application/octet-stream":  # says nothing: try the URL
        return _FROM_TYPE[mime]
    suffix = posixpath.splitext(urlsplit(url).path)[1].lower().lstrip(".")
    if suffix in _URL_EXTS:
        return "jpg" if suffix == "jpeg" else suffix
    return "bin"


def content_type_for(ext: str) -> str:
    return _CONTENT_TYPES.get(ext, "application/octet-stream")


def media_for(ext: str, hint: str | None) -> str:
    """image / video / audio: the bytes' type wins over the provider's hint."""
    if ext in _VIDEO:
        return "video"
    if ext in _AUDIO:
        return "audio"
    if ext == "bin":
        return hint or "image"
    return "image"
