"""Outside text made safe: secrets we know replaced, control characters made visible.

A provider may echo our API key back (`bad key: Bearer sk-…`) or send terminal escapes in a
failure message. `Redactor` removes every secret of the config from an answer where it enters
(archiver/pacing.py), so nothing after it can store, index, log or show the key; the log
handler applies it again as a second line of defence. `printable` is for what reaches a
terminal or a log line.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote, urlsplit

if TYPE_CHECKING:
    from archiver.config import Config

REDACTED = "[redacted]"
# A shorter secret would match ordinary text everywhere; such a value is no real secret anyway.
MIN_SECRET = 6
_SCHEME_WORDS = ("Bearer ", "Token ", "Key ")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_C1 = re.compile(r"[\x7f-\x9f]")


def printable(text: str) -> str:
    """C0 and C1 control characters and DEL as visible escapes: `\\x1b` is shown as the 4 characters \\x1b."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def json_text(doc: object, indent: int | None = 2) -> str:
    """JSON for a terminal: json escapes C0 itself; DEL and C1 (which some terminals obey) too."""
    return _C1.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(doc, indent=indent, ensure_ascii=False))


class Redactor:
    """Replaces each known secret, as written, JSON-escaped or URL-quoted, with [redacted]."""

    def __init__(self, secrets: Iterable[str]) -> None:
        forms: set[str] = set()
        for secret in secrets:
            secret = secret.strip()
            if len(secret) < MIN_SECRET:
                continue
            forms |= {secret, json.dumps(secret)[1:-1], quote(secret, safe="")}
        self.forms = sorted(forms, key=len, reverse=True)  # a key before any shorter part of it
        self._bytes = [f.encode() for f in self.forms]

    @classmethod
    def from_config(cls, config: Config) -> Redactor:
        """Every secret the config holds: API keys, webhook secrets, the HTTP token, the DSN's
        password, and the S3 secret key the environment gives."""
        found: list[str] = []
        for entry in config.providers.values():
            key = entry.api_key.reveal()
            found.append(key)
            for word in _SCHEME_WORDS:  # the key as sent, without the scheme word a user copied along
                if key.strip().startswith(word):
                    found.append(key.strip()[len(word):])
            if entry.callbacks is not None:
                found.append(entry.callbacks.secret.reveal())
        if config.http is not None:
            found.append(config.http.token.reveal())
        found += dsn_secrets(config.state.dsn.reveal())
        if config.storage.backend == "s3":
            found += [os.environ.get("AWS_SECRET_ACCESS_KEY", ""), os.environ.get("AWS_SESSION_TOKEN", "")]
        return cls(found)

    def __bool__(self) -> bool:
        return bool(self.forms)

    def text(self, value: str) -> str:
        for form in self.forms:
            if form in value:
                value = value.replace(form, REDACTED)
        return value

    def bytes(self, value: bytes) -> bytes:
        for form in self._bytes:
            if form in value:
                value = value.replace(form, REDACTED.encode())
        return value


def dsn_secrets(dsn: str) -> list[str]:
    """The password of a PostgreSQL DSN, as a URL (`postgresql://u:pw@h/db`) or as `password=pw`."""
    if not dsn:
        return []
    found = re.findall(r"(?:^|\s)password\s*=\s*(?:'((?:[^'\\]|\\.)*)'|(\S+))", dsn)
    secrets = [a or b for a, b in found]
    if "://" in dsn:
        password = urlsplit(dsn).password
        if password:
            secrets += [password, unquote(password)]
    return secrets


class LogScrub(logging.Filter):
    """Every log line through the Redactor and `printable`: a second line of defence after pacing's."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        message = printable(self.redactor.text(record.getMessage()))
        record.msg, record.args = message, None
        if record.exc_info and not record.exc_text:
            # The traceback keeps its line breaks; exception messages in it may quote outside text.
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = "\n".join(printable(self.redactor.text(line)) for line in text.splitlines())
        return True
