"""The inbox reader on a real file, with its position stored in a real state DB."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from archiver import inbox
from archiver.inbox import InboxReader, parse_line
from archiver.model import TaskRef
from archiver.state import KEEP_REJECTS, StateDB

PROVIDERS = ("kie", "maxapi")


class Tail:
    """An inbox file, its reader, and the state DB the reader's position is saved in."""

    def __init__(self, tmp: Path, default_provider: str | None = None) -> None:
        self.path = tmp / "inbox.txt"
        self.db_path = tmp / "state.db"
        self.default_provider = default_provider
        self.state = StateDB(self.db_path)
        self.reader = self._reader()
        self.rejects: list[tuple[int, str]] = []

    def _reader(self) -> InboxReader:
        return InboxReader(self.path, self.state.inbox_position(), PROVIDERS, self.default_provider)

    def write(self, text: str | bytes, mode: str = "ab") -> None:
        with open(self.path, mode) as f:
            f.write(text.encode() if isinstance(text, str) else text)

    def read(self) -> list[str]:
        """Read what is there, save it like the daemon does, return the new task IDs."""
        batch = self.reader.read()
        self.rejects += [(r.line_no, r.reason) for r in batch.rejects]
        if batch.position is None:
            return []
        return [t.task_id for t in self.state.ingest(batch.refs, batch.rejects, batch.position)]

    def restart(self) -> None:
        self.reader.close()
        self.state.close()
        self.state = StateDB(self.db_path)
        self.reader = self._reader()


@pytest.fixture
def tail(tmp_path: Path) -> Tail:
    return Tail(tmp_path)


def test_lines_of_each_form(tail: Tail) -> None:
    tail.write('kie a1 project=poster\n{"provider": "maxapi", "task_id": "b-2", "labels": {"k": "v"}}\n')
    assert tail.read() == ["a1", "b-2"]
    task = tail.state.find("kie", "a1")
    assert task is not None and task.labels == {"project": "poster"}


def test_partial_line_is_waited_for(tail: Tail) -> None:
    tail.write("kie first\nkie sec")
    assert tail.read() == ["first"]
    assert tail.read() == []
    tail.write("ond\n")
    assert tail.read() == ["second"]


def test_blank_and_comment_lines_are_skipped(tail: Tail) -> None:
    tail.write("\n   \n# kie not-a-task\n\t\nkie real\n")
    assert tail.read() == ["real"]
    assert tail.rejects == []


@pytest.mark.parametrize("line,reason", [
    (b"nope abc", "unknown provider"),
    (b"kie bad/id", "bad task ID"),
    (b"kie ..", "bad task ID"),
    (b"kie " + b"x" * 201, "bad task ID"),
    (b"kie ok-id " + b"l=" + b"v" * 4100, "over 4096 bytes"),
    (b"kie caf\xe9", "not UTF-8"),
    (b'{"provider": "kie", "task_id": ', "broken JSON"),
    (b'["kie", "x"]', "unknown provider"),
    (b"kie ok-id notalabel", "task IDs cannot contain spaces"),
    (b"kie bad id with spaces", "task IDs cannot contain spaces"),
    (b"kie ok-id =v", "label '=v' is not key=value"),
    (b"lonely-id", "default_provider"),
])
def test_bad_line_is_rejected_and_later_lines_go_on(tail: Tail, line: bytes, reason: str) -> None:
    tail.write(b"kie before\n" + line + b"\nkie after\n")
    assert tail.read() == ["before", "after"]
    [(line_no, why)] = tail.rejects
    assert line_no == 2
    assert reason in why
    assert tail.state.recent_rejects(5)[0]["line_no"] == 2


def test_bare_id_uses_default_provider(tmp_path: Path) -> None:
    tail = Tail(tmp_path, default_provider="maxapi")
    tail.write("9db7d1ed-d1e5\n")
    assert tail.read() == ["9db7d1ed-d1e5"]
    assert tail.state.find("maxapi", "9db7d1ed-d1e5") is not None


def test_duplicate_is_ignored(tail: Tail) -> None:
    tail.write("kie same\nkie same\n")
    assert tail.read() == ["same"]
    tail.write("kie same\n")
    assert tail.read() == []
    assert tail.state.counts()["queued"] == 1


def test_restart_continues_from_stored_offset(tail: Tail) -> None:
    tail.write("kie one\nkie two\n")
    assert tail.read() == ["one", "two"]
    tail.write("kie three\nkie fo")
    tail.restart()
    assert tail.read() == ["three"]
    tail.write("ur\n")
    tail.restart()
    assert tail.read() == ["four"]
    position = tail.state.inbox_position()
    assert position is not None and position.line_no == 4
    assert position.offset == tail.path.stat().st_size


def test_unsaved_read_is_read_again_after_a_crash(tail: Tail) -> None:
    tail.write("kie one\n")
    tail.reader.read()  # read, but the process dies before the transaction
    tail.restart()
    assert tail.read() == ["one"]


def test_truncation_starts_over(tail: Tail) -> None:
    tail.write("kie one\nkie two\n")
    assert tail.read() == ["one", "two"]
    os.truncate(tail.path, 0)  # what logrotate's copytruncate does
    tail.write("kie three\n")
    assert tail.read() == ["three"]


def test_rotation_by_rename(tail: Tail) -> None:
    tail.write("kie one\n")
    assert tail.read() == ["one"]
    tail.write("kie two\n")  # appended before the rename, not yet read
    os.rename(tail.path, tail.path.with_suffix(".1"))
    tail.write("kie three\n", mode="wb")
    assert tail.read() == ["two", "three"]
    tail.write("kie four\n")
    assert tail.read() == ["four"]


def test_rotation_while_stopped_reads_the_new_file(tail: Tail) -> None:
    tail.write("kie one\nkie two\n")
    assert tail.read() == ["one", "two"]
    tail.restart()
    os.rename(tail.path, tail.path.with_suffix(".1"))
    tail.write("kie three\n", mode="wb")
    tail.restart()
    assert tail.read() == ["three"]


def test_missing_file_is_waited_for(tail: Tail) -> None:
    assert tail.read() == []
    tail.write("kie late\n")
    assert tail.read() == ["late"]


def test_append_writes_one_whole_line(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "inbox.txt"
    inbox.append(path, "kie a1 k=v")
    inbox.append(path, "kie a2\n")
    assert path.read_text() == "kie a1 k=v\nkie a2\n"


def test_parse_line_plain() -> None:
    assert parse_line(b"kie  a.b:c-d_e  x=1 y=", PROVIDERS, None) == TaskRef("kie", "a.b:c-d_e", {"x": "1", "y": ""})
    assert parse_line(b"# c", PROVIDERS, None) is None


def test_only_the_newest_rejections_are_kept(tail: Tail) -> None:
    tail.write(b"".join(b"nope %d\n" % n for n in range(KEEP_REJECTS + 20)))
    assert tail.read() == []
    kept = tail.state.recent_rejects(1000)
    assert len(kept) == KEEP_REJECTS
    assert kept[0]["line_no"] == KEEP_REJECTS + 20 and kept[-1]["line_no"] == 21
    assert all(r["at"] > 0 and r["line"].startswith("nope ") for r in kept)
