"""The inbox: a text file users append task lines to, tailed by the daemon (docs/operations.md, the inbox).

The reader keeps the file open and notices rotation (a new file at the path) and
truncation (copytruncate); it only ever consumes whole lines, so a line still being
written is waited for. `append` is how `archiver add` writes safely beside it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from archiver.model import TaskRef, valid_task_id
from archiver.state.records import Position, Rejected

MAX_LINE = 4096
READ_CHUNK = 1 << 20
MAX_LINES = 2_000  # one read takes about this many lines: a huge backlog goes in bounded steps of bounded memory
_LABEL_KEY = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class BadLine(ValueError):
    """A line that cannot become a task; the message is the reason shown to users."""


def parse_line(raw: bytes, providers: Collection[str], default_provider: str | None) -> TaskRef | None:
    """One inbox line (without its newline) → TaskRef; None for blank and # lines."""
    if len(raw) > MAX_LINE:
        raise BadLine(f"line is over {MAX_LINE} bytes")
    try:
        line = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise BadLine("line is not UTF-8") from None
    if not line or line.startswith("#"):
        return None
    if line.startswith("{"):
        return _json_line(line, providers)
    words = line.split()
    if len(words) == 1:
        if default_provider is None:
            raise BadLine("a bare task ID needs inbox.default_provider (or write: PROVIDER TASK_ID)")
        return _ref(default_provider, words[0], {}, providers)
    _check_provider(words[0], providers)  # a line that is not ours at all is told so, not about its spaces
    labels = {}
    for word in words[2:]:
        key, eq, value = word.partition("=")
        if not eq:
            raise BadLine(f"task IDs cannot contain spaces (after the ID {words[1]!r} came {word!r}); "
                          "words after the ID are labels, written key=value")
        if not _LABEL_KEY.fullmatch(key):
            raise BadLine(f"label {word!r} is not key=value")
        labels[key] = value
    return _ref(words[0], words[1], labels, providers)


def _json_line(line: str, providers: Collection[str]) -> TaskRef:
    try:
        obj = json.loads(line)
    except ValueError as e:
        raise BadLine(f"broken JSON: {e}") from None
    if not isinstance(obj, dict):
        raise BadLine("JSON line must be an object")
    labels = obj.get("labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise BadLine("labels must be an object of strings")
    for name in ("provider", "task_id"):
        if obj.get(name) is None:
            raise BadLine(f'missing "{name}"')
    return _ref(obj["provider"], obj["task_id"], labels, providers)


def _check_provider(provider: object, providers: Collection[str]) -> None:
    if not isinstance(provider, str) or provider not in providers:
        raise BadLine(f"unknown provider {provider!r} (configured: {', '.join(sorted(providers))})")


def _ref(provider: object, task_id: object, labels: dict[str, str], providers: Collection[str]) -> TaskRef:
    _check_provider(provider, providers)
    if not isinstance(task_id, str) or not valid_task_id(task_id):
        raise BadLine(f"bad task ID {str(task_id)[:60]!r}: use 1-200 of A-Z a-z 0-9 . _ : -")
    return TaskRef(provider, task_id, dict(labels))


@dataclass
class Batch:
    """What one read produced: accepted refs, rejected lines, and the position after them."""

    refs: list[TaskRef] = field(default_factory=list)
    rejects: list[Rejected] = field(default_factory=list)
    position: Position | None = None

    @property
    def full(self) -> bool:
        """The read stopped at MAX_LINES: more lines wait in the file."""
        return len(self.refs) + len(self.rejects) >= MAX_LINES


class InboxReader:
    """Tails one inbox path from a stored position."""

    def __init__(self, path: Path, position: Position | None, providers: Collection[str],
                 default_provider: str | None) -> None:
        self.path = path
        self.position = position
        self.saved = position  # what the state DB holds; the daemon updates it after ingest
        self.providers = providers
        self.default_provider = default_provider
        self.fd: int | None = None

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def rewind(self) -> None:
        """Go back to what the state DB holds: the lines after it could not be stored."""
        self.close()
        self.position = self.saved

    def read(self) -> Batch:
        """Consume every whole line available now; rotation and truncation restart at 0."""
        batch = Batch()
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return batch
        if self.fd is not None and (os.fstat(self.fd).st_ino, os.fstat(self.fd).st_dev) != (st.st_ino, st.st_dev):
            # Rotated: finish the old file (its writers have moved on), then start the new one.
            self._consume(batch, final=True)
            self.close()
        if self.fd is None:
            self.fd = os.open(self.path, os.O_RDONLY)
            st = os.fstat(self.fd)
            pos = self.position
            if pos is None or (pos.dev, pos.ino) != (st.st_dev, st.st_ino):
                self.position = Position(st.st_dev, st.st_ino, 0, 0)
        assert self.position is not None
        if os.fstat(self.fd).st_size < self.position.offset:
            # Truncated in place (copytruncate): the file starts over.
            self.position = Position(self.position.dev, self.position.ino, 0, 0)
        self._consume(batch, final=False)
        batch.position = self.position
        return batch

    def _consume(self, batch: Batch, *, final: bool) -> None:
        assert self.fd is not None and self.position is not None
        pos = self.position
        offset, line_no, pending = pos.offset, pos.line_no, b""
        while data := os.pread(self.fd, READ_CHUNK, offset + len(pending)):
            *lines, pending = (pending + data).split(b"\n")
            for raw in lines:
                line_no += 1
                offset += len(raw) + 1
                self._take(batch, raw.rstrip(b"\r"), line_no)
                if not final and batch.full:
                    self.position = Position(pos.dev, pos.ino, offset, line_no)  # the rest on the next read
                    return
        if final and pending:
            # The file was rotated away: its unterminated tail will never be finished.
            line_no += 1
            offset += len(pending)
            self._take(batch, pending, line_no)
        self.position = Position(pos.dev, pos.ino, offset, line_no)

    def _take(self, batch: Batch, raw: bytes, line_no: int) -> None:
        try:
            ref = parse_line(raw, self.providers, self.default_provider)
        except BadLine as e:
            batch.rejects.append(Rejected(line_no, str(e), raw[:200].decode("utf-8", "replace")))
            return
        if ref is not None:
            batch.refs.append(ref)


@dataclass(frozen=True)
class Unread:
    """A task line the daemon has not read yet; `ref` is None for a line it will reject (`error`)."""

    line_no: int
    text: str
    ref: TaskRef | None
    error: str | None


def unread(path: Path, position: Position | None, providers: Collection[str], default_provider: str | None,
           limit: int | None) -> tuple[list[Unread], int]:
    """The first `limit` task lines after `position` (what the state DB holds), and the bytes left.

    As the daemon reads: another file at the path (rotated) or a shorter one (truncated)
    starts at 0, and a line not finished yet is not one. Blank and # lines are left out.
    """
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return [], 0
    found: list[Unread] = []
    with f:
        st = os.fstat(f.fileno())
        offset = line_no = 0
        if position and (position.dev, position.ino) == (st.st_dev, st.st_ino) and position.offset <= st.st_size:
            offset, line_no = position.offset, position.line_no
        f.seek(offset)
        for raw in f:
            if not raw.endswith(b"\n") or (limit is not None and len(found) >= limit):
                break
            line_no += 1
            line = raw.rstrip(b"\r\n")
            try:
                ref = parse_line(line, providers, default_provider)
            except BadLine as e:
                found.append(Unread(line_no, line[:200].decode("utf-8", "replace"), None, str(e)))
                continue
            if ref is not None:
                found.append(Unread(line_no, line.decode("utf-8", "replace").strip(), ref, None))
    return found, st.st_size - offset


def append(path: Path, line: str) -> None:
    """Append one whole line with a single write on an O_APPEND descriptor."""
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, data)
        if written != len(data):
            raise OSError(f"short write to {path}: {written} of {len(data)} bytes")
    finally:
        os.close(fd)
