"""Results sent inline as `data:` URIs (Replicate and fal sync mode): decoded, never fetched."""

from __future__ import annotations

import base64
import binascii
import hashlib
from pathlib import Path
from urllib.parse import unquote_to_bytes

from archiver.download import HEAD_BYTES, Fetched, redact
from archiver.errors import DownloadFailed, TooLarge

# They arrive inside a JSON answer and wait in the state DB until archived: keep them modest.
MAX_BYTES = 32 * 1024**2


def save(uri: str, dest: Path, max_bytes: int) -> Fetched:
    """Decode a data URI into `dest`, as a download would have written it."""
    head, comma, payload = uri.partition(",")
    if not head.startswith("data:") or not comma:
        raise DownloadFailed(f"{redact(uri)}: not a data URI")
    limit = min(max_bytes, MAX_BYTES)
    is_base64 = head.endswith(";base64")
    # base64 is 4 characters per 3 bytes: refuse before decoding anything that cannot fit.
    if (len(payload) * 3 // 4 if is_base64 else len(payload) // 3) > limit:
        raise TooLarge(f"{redact(uri)}: the inline result is over {limit} bytes")
    try:
        body = base64.b64decode(payload, validate=True) if is_base64 else unquote_to_bytes(payload)
    except (binascii.Error, ValueError):
        raise DownloadFailed(f"{redact(uri)}: the inline result is not valid base64") from None
    if len(body) > limit:
        raise TooLarge(f"{redact(uri)}: the inline result is over {limit} bytes")
    dest.write_bytes(body)
    mime = head[5:].split(";")[0] or None
    return Fetched(dest, len(body), hashlib.sha256(body).hexdigest(), mime, body[:HEAD_BYTES])

