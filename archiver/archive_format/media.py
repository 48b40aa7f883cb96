"""The one media-type table: extension, Content-Type and media kind, for results and the archive's own files.

An asset's extension comes from its bytes first, then its Content-Type, then its URL path;
its stored Content-Type and its media kind follow from the extension, on every backend.
"""

from __future__ import annotations

import posixpath
from urllib.parse import urlsplit

OCTET_STREAM = "application/octet-stream"
JSON_TYPE = "application/json"
HTML_TYPE = "text/html; charset=utf-8"
# ext → (Content-Type, media kind). A kind marks a result format; the others are the archive's own files.
TYPES: dict[str, tuple[str, str | None]] = {
    "png": ("image/png", "image"), "jpg": ("image/jpeg", "image"), "webp": ("image/webp", "image"),
    "gif": ("image/gif", "image"), "mp4": ("video/mp4", "video"), "webm": ("video/webm", "video"),
    "mov": ("video/quicktime", "video"), "mp3": ("audio/mpeg", "audio"), "wav": ("audio/wav", "audio"),
    "m4a": ("audio/mp4", "audio"), "aac": ("audio/aac", "audio"), "flac": ("audio/flac", "audio"),
    "bin": (OCTET_STREAM, None), "json": (JSON_TYPE, None), "html": (HTML_TYPE, None),
}
_RESULTS = {ext for ext, (_, media) in TYPES.items() if media}
_FROM_TYPE = {TYPES[ext][0]: ext for ext in _RESULTS} | {
    "image/jpg": "jpg", "audio/mp3": "mp3", "audio/x-wav": "wav", "audio/wave": "wav",
    "audio/x-m4a": "m4a", "audio/x-flac": "flac"}
_URL_EXTS = _RESULTS | {"jpeg"}
_M4A_BRANDS = (b"M4A ", b"M4B ", b"M4P ")


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
    if mime in _FROM_TYPE:  # application/octet-stream is not in it: it says nothing, so try the URL
        return _FROM_TYPE[mime]
    suffix = posixpath.splitext(urlsplit(url).path)[1].lower().lstrip(".")
    if suffix in _URL_EXTS:
        return "jpg" if suffix == "jpeg" else suffix
    return "bin"


def content_type_for(ext: str) -> str:
    return TYPES[ext][0] if ext in TYPES else OCTET_STREAM


def content_type_of_key(key: str) -> str:
    """The Content-Type an object is served with where the store keeps none (a local archive)."""
    name = key.rpartition("/")[2]
    return content_type_for(name.rpartition(".")[2].lower() if "." in name else "")


def media_for(ext: str, hint: str | None) -> str:
    """image / video / audio: the bytes' type wins over the provider's hint."""
    media = TYPES[ext][1] if ext in TYPES else None
    if media in ("video", "audio"):
        return media
    if ext == "bin":
        return hint or "image"
    return "image"


def media_of(content_type: str | None, hint: str | None) -> str:
    """As media_for decided it from the extension: the stored type tells the same."""
    kind = (content_type or "").partition("/")[0]
    if kind in ("video", "audio"):
        return kind
    if content_type in (None, OCTET_STREAM):
        return hint or "image"
    return "image"
