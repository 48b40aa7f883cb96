"""Results sent inline as `data:` URIs (some providers answer so in a sync mode): decoded, never fetched.

A data: URI's payload is never stored: the state DB, sidecars, _failed records and the index
keep `data:image/png;base64,… (1.4 MiB, elided)` (`elide_status`, applied to every poll
answer). The payload waits in memory until the asset is archived; after a restart the task
is asked once more for it (archiving.py).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

from archiver.archive_format.redaction import elide, is_elided
from archiver.download import HEAD_BYTES, Fetched, redact
from archiver.errors import DownloadFailed, TooLarge
from archiver.model import TaskStatus

# They arrive inside a JSON answer (see providers.NAME.max_answer) and wait in memory: keep them modest.
MAX_BYTES = 32 * 1024**2


def elide_json(value: Any) -> Any:
    """A copy of a provider's JSON with every data: URI elided, also inside JSON-in-a-string (a result list)."""
    if isinstance(value, dict):
        return {k: elide_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [elide_json(v) for v in value]
    if isinstance(value, str) and "data:" in value:
        if value[:1] in ("{", "["):
            try:
                return json.dumps(elide_json(json.loads(value)), ensure_ascii=False)
            except ValueError:
                pass
        return elide(value)
    return value


def _mentions(value: Any) -> bool:
    """Whether "data:" is in any string of `value` (keys are not looked at)."""
    if isinstance(value, str):
        return "data:" in value
    if isinstance(value, dict):
        return any(_mentions(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_mentions(v) for v in value)
    return False


def elide_status(status: TaskStatus) -> tuple[TaskStatus, dict[int, str]]:
    """The answer as it may be stored, and the inline results it held by index (kept in memory only)."""
    inline = {i: u for i, u in enumerate(status.urls) if u.startswith("data:") and not is_elided(u)}
    if not inline and not _mentions((status.message, status.prompt, status.input, status.response)):
        return status, {}  # the usual answer: nothing copied
    return dataclasses.replace(
        status, urls=tuple(elide(u) for u in status.urls),
        message=elide(status.message) if status.message else status.message,
        prompt=elide(status.prompt) if status.prompt else status.prompt,
        input=elide_json(status.input), response=elide_json(status.response)), inline


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

