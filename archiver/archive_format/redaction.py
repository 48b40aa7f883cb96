"""What the archive may publish of a provider's answer: no secrets, no signed links, no inline payloads.

One rule, `redact_secrets`, applies to every provider's parameters and answers before they
reach a sidecar or a _failed record. A data: URI is kept in its elided form everywhere
(`data:image/png;base64,… (1.4 MiB, elided)`); the state DB keeps that form too.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

REDACTED = "[redacted]"
_SECRET_WORDS = {"key", "keys", "token", "tokens", "secret", "secrets", "authorization", "password"}
_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
# A data: URI anywhere in a string; not one already elided (its payload starts with "… (").
_URI = re.compile(r"(data:[\w.+/-]*(?:;[\w.+-]+(?:=[\w.+-]*)?)*),(?!… \()[^\s\"'<>]*")
_ELIDED = re.compile(r"data:[^,]*,… \([^)]*, elided\)")


def bare_url(url: str) -> str:
    """The URL as an archive may publish it: no query, fragment or user:password (signatures live there)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def _size(n: int) -> str:
    if n >= 1024**2:
        return f"{n / 1024**2:.1f} MiB"
    return f"{n / 1024:.1f} KiB" if n >= 1024 else f"{n} B"


def elide(text: str) -> str:
    """Each data: URI in `text` cut to its header and the size of what was cut."""
    if "data:" not in text:
        return text
    return _URI.sub(lambda m: f"{m.group(1)[:200]},… ({_size(len(m.group(0)))}, elided)", text)


def is_elided(uri: str) -> bool:
    return bool(_ELIDED.fullmatch(uri))


@functools.lru_cache(maxsize=4096)  # the same few field names, in every sidecar
def is_secret_field(name: str) -> bool:
    """Callback and webhook URLs, and fields named like *token*, *secret*, *key*, authorization."""
    squashed = re.sub(r"[^a-z]", "", name.lower())
    words = {w.lower() for w in _WORD.findall(name)}
    return "callback" in squashed or "webhook" in squashed or bool(words & _SECRET_WORDS)


def redact_secrets(value: Any) -> Any:
    """A copy of a provider's JSON with secret fields replaced, also inside JSON held in a string field.

    URLs lose their query string (a signature or a token lives there) and data: URIs their payload."""
    if isinstance(value, dict):
        return {k: REDACTED if is_secret_field(str(k)) and v not in (None, "") else redact_secrets(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [redact_secrets(v) for v in value]
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            inner = json.loads(value)
        except ValueError:
            return value
        cleaned = redact_secrets(inner)
        return value if cleaned == inner else json.dumps(cleaned, ensure_ascii=False)
    if isinstance(value, str) and value.startswith(("http://", "https://")) and ("?" in value or "@" in value):
        return bare_url(value)
    if isinstance(value, str) and "data:" in value:
        return elide(value)
    return value
