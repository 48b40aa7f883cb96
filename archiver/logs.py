"""Logging to stderr as text (default) or JSON lines carrying provider, task_id, state, reason."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TextIO

from archiver.scrub import LogScrub, Redactor

FIELDS = ("provider", "task_id", "state", "reason")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        doc |= {k: getattr(record, k) for k in FIELDS if getattr(record, k, None) is not None}
        if record.exc_info:
            doc["exception"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def setup(fmt: str = "text", level: int = logging.INFO, redactor: Redactor | None = None,
          stream: TextIO | None = None) -> None:
    """Log to stderr (or `stream`); every line has the config's secrets redacted and control characters escaped."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(LogScrub(redactor or Redactor(())))
    formatter = JsonFormatter() if fmt == "json" else logging.Formatter(
        "%(asctime)sZ %(levelname)s %(name)s: %(message)s")
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiohttp's access log and botocore's chatter are not ours to show at INFO.
    for noisy in ("aiohttp.access", "botocore", "boto3", "s3transfer", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def task_fields(provider: str, task_id: str, state: str | None = None,
                reason: str | None = None) -> dict[str, str | None]:
    """`extra=` for a log line about one task."""
    return {"provider": provider, "task_id": task_id, "state": state, "reason": reason}
