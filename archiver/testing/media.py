"""Result file bodies: deterministic filler that sniffs as a media type, and what a body is."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

PNG = b"\x89PNG\r\n\x1a\n"
JPEG = b"\xff\xd8\xff\xe0"
MP4 = b"\x00\x00\x00\x18ftypmp42"
MP3 = b"ID3\x04\x00\x00\x00\x00\x00\x00"
WAV = b"RIFF\x24\x00\x00\x00WAVEfmt "
M4A = b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00"
FLAC = b"fLaC\x00\x00\x00\x22"
AAC = b"\xff\xf1\x50\x80"
WEBM = b"\x1a\x45\xdf\xa3"
MAGIC = {"png": PNG, "jpg": JPEG, "mp4": MP4, "mp3": MP3, "wav": WAV, "m4a": M4A, "flac": FLAC, "aac": AAC}
KINDS = (*MAGIC, "audio")  # "audio" is mp3
DATA_PNG = PNG + bytes(range(40))  # small enough for a data: URI

# A result file: its bytes, or a callable that makes them when the file is first asked for
# (so a demo can serve real media it renders only on demand).
Body = bytes | Callable[[], bytes]


def media_bytes(kind: str, size: int, seed: str) -> bytes:
    """Deterministic bytes of `size` that sniff as png, jpg, mp4 or an audio format ("audio": mp3)."""
    magic = MAGIC["mp3" if kind == "audio" else kind]
    block = hashlib.sha256(seed.encode()).digest()
    return (magic + block * (size // len(block) + 1))[:size]


def content_type(body: bytes) -> str:
    """The MIME type a CDN would state for `body`, from its first bytes."""
    if body.startswith(PNG):
        return "image/png"
    if body.startswith(JPEG[:3]):
        return "image/jpeg"
    if body.startswith(WEBM):
        return "video/webm"
    if body.startswith(b"RIFF") and body[8:12] == b"WAVE":
        return "audio/wav"
    if body.startswith((b"ID3", b"\xff\xfb", b"\xff\xf3")):
        return "audio/mpeg"
    if body.startswith(b"fLaC"):
        return "audio/flac"
    if body[4:8] == b"ftyp":
        return "audio/mp4" if body[8:11] == b"M4A" else "video/mp4"
    if body.startswith(AAC[:2]):
        return "audio/aac"
    return "application/octet-stream"


def media_of(body: bytes) -> str:
    """image, video or audio: what a provider says its output is."""
    return content_type(body).split("/")[0].replace("application", "image")
