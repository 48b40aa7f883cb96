"""The inbox reader on a real file, with its position stored in a real state DB."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from archiver import inbox
from archiver.inbox import MAX_LINES, InboxReader, parse_line
from archiver.model import TaskRef
from archiver.state import KEEP_REJECTS, SqliteState

PROVIDERS = ("kie", "maxapi")


class Tail:
    """An inbox file, its reader, and the state DB the reader's position is saved in."""

    def __init__(self, tmp: Path, default_provider: str | None = None) -> None:
        self.path = tmp / "inbox.txt"
        self.db_path = tmp / "state.db"
        self.default_provider = default_provider
        self.state = SqliteState(self.db_path)
        self.reader: InboxReader | None = None
        self.rejects: list[tuple[int, str]] = []

    async def open(self) -> InboxReader:
        """The reader, started from the position the state DB holds."""
        if self.reader is None:
            self.reader = InboxReader(self.path, await self.state.inbox_position(), PROVIDERS, self.default_provider)
        return self.reader

    def write(self, text: str | bytes, mode: str = "ab") -> None:
        with open(self.path, mode) as f:
            f.write(text.encode() if isinstance(text, str) else text)

    async def read(self) -> list[str]:
        """Read what is there, save it like the daemon does, return the new task IDs."""
        batch = (await self.open()).read()
        self.rejects += [(r.line_no, r.reason) for r in batch.rejects]
        if batch.position is None:
            return []
        return [t.task_id for t in await self.state.ingest(batch.refs, batch.rejects, batch.position)]

    async def restart(self) -> None:
        if self.reader is not None:
            self.reader.close()
        await self.state.close()
        self.state = SqliteState(self.db_path)
        self.reader = None


@pytest.fixture
def tail(tmp_path: Path) -> Tail:
    return Tail(tmp_path)


async def test_lines_of_each_form(tail: Tail) -> None:
    tail.write('kie a1 project=poster\n{"provider": "maxapi", "task_id": "b-2", "labels": {"k": "v"}}\n')
    assert await tail.read() == ["a1", "b-2"]
    task = await tail.state.find("kie", "a1")
    assert task is not None and task.labels == {"project": "poster"}


async def test_partial_line_is_waited_for(tail: Tail) -> None:
    tail.write("kie first\nkie sec")
    assert await tail.read() == ["first"]
    assert await tail.read() == []
    tail.write("ond\n")
    assert await tail.read() == ["second"]


async def test_blank_and_comment_lines_are_skipped(tail: Tail) -> None:
    tail.write("\n   \n# kie not-a-task\n\t\nkie real\n")
    assert await tail.read() == ["real"]
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
    (b"garbage line here with !!", "unknown provider 'garbage'"),
    (b'{"provider": "kie"}', 'missing "task_id"'),
    (b'{"task_id": "abc"}', 'missing "provider"'),
    (b'{"provider": null, "task_id": "abc"}', 'missing "provider"'),
])
async def test_bad_line_is_rejected_and_later_lines_go_on(tail: Tail, line: bytes, reason: str) -> None:
    tail.write(b"kie before\n" + line + b"\nkie after\n")
    assert await tail.read() == ["before", "after"]
    [(line_no, why)] = tail.rejects
    assert line_no == 2
    assert reason in why
    assert (await tail.state.recent_rejects(5))[0]["line_no"] == 2


async def test_bare_id_uses_default_provider(tmp_path: Path) -> None:
    tail = Tail(tmp_path, default_provider="maxapi")
    tail.write("9db7d1ed-d1e5\n")
    assert await tail.read() == ["9db7d1ed-d1e5"]
    assert await tail.state.find("maxapi", "9db7d1ed-d1e5") is not None


async def test_duplicate_is_ignored(tail: Tail) -> None:
    tail.write("kie same\nkie same\n")
    assert await tail.read() == ["same"]
    tail.write("kie same\n")
    assert await tail.read() == []
    assert (await tail.state.counts())["queued"] == 1


async def test_restart_continues_from_stored_offset(tail: Tail) -> None:
    tail.write("kie one\nkie two\n")
    assert await tail.read() == ["one", "two"]
    tail.write("kie three\nkie fo")
    await tail.restart()
    assert await tail.read() == ["three"]
    tail.write("ur\n")
    await tail.restart()
    assert await tail.read() == ["four"]
    position = await tail.state.inbox_position()
    assert position is not None and position.line_no == 4
    assert position.offset == tail.path.stat().st_size


async def test_unsaved_read_is_read_again_after_a_crash(tail: Tail) -> None:
    tail.write("kie one\n")
    (await tail.open()).read()  # read, but the process dies before the transaction
    await tail.restart()
    assert await tail.read() == ["one"]


async def test_truncation_starts_over(tail: Tail) -> None:
    tail.write("kie one\nkie two\n")
    assert await tail.read() == ["one", "two"]
    os.truncate(tail.path, 0)  # what logrotate's copytruncate does
    tail.write("kie three\n")
    assert await tail.read() == ["three"]


async def test_rotation_by_rename(tail: Tail) -> None:
    tail.write("kie one\n")
    assert await tail.read() == ["one"]
    tail.write("kie two\n")  # appended before the rename, not yet read
    os.rename(tail.path, tail.path.with_suffix(".1"))
    tail.write("kie three\n", mode="wb")
    assert await tail.read() == ["two", "three"]
    tail.write("kie four\n")
    assert await tail.read() == ["four"]


async def test_rotation_while_stopped_reads_the_new_file(tail: Tail) -> None:
    tail.write("kie one\nkie two\n")
    assert await tail.read() == ["one", "two"]
    await tail.restart()
    os.rename(tail.path, tail.path.with_suffix(".1"))
    tail.write("kie three\n", mode="wb")
    await tail.restart()
    assert await tail.read() == ["three"]


async def test_missing_file_is_waited_for(tail: Tail) -> None:
    assert await tail.read() == []
    tail.write("kie late\n")
    assert await tail.read() == ["late"]


def test_append_writes_one_whole_line(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "inbox.txt"
    inbox.append(path, "kie a1 k=v")
    inbox.append(path, "kie a2\n")
    assert path.read_text() == "kie a1 k=v\nkie a2\n"


def test_parse_line_plain() -> None:
    assert parse_line(b"kie  a.b:c-d_e  x=1 y=", PROVIDERS, None) == TaskRef("kie", "a.b:c-d_e", {"x": "1", "y": ""})
    assert parse_line(b"# c", PROVIDERS, None) is None


async def test_only_the_newest_rejections_are_kept(tail: Tail) -> None:
    tail.write(b"".join(b"nope %d\n" % n for n in range(KEEP_REJECTS + 20)))
    assert await tail.read() == []
    kept = await tail.state.recent_rejects(1000)
    assert len(kept) == KEEP_REJECTS
    assert kept[0]["line_no"] == KEEP_REJECTS + 20 and kept[-1]["line_no"] == 21
    assert all(r["at"] > 0 and r["line"].startswith("nope ") for r in kept)


async def test_a_huge_backlog_is_read_in_bounded_steps(tail: Tail) -> None:
    lines = 2 * MAX_LINES + 500
    tail.write("".join(f"kie t{i}\n" for i in range(lines)))
    steps = [len(await tail.read()) for _ in range(4)]
    assert steps == [MAX_LINES, MAX_LINES, 500, 0]
    assert (await tail.state.counts())["queued"] == lines


def test_unread_starts_where_the_reader_would(tmp_path: Path) -> None:
    """What status lists as not read yet is what the reader takes next: after the stored position,
    from 0 in a rotated or truncated file, whole lines only, and at most `limit` of them."""
    path = tmp_path / "in.txt"
    path.write_text("kie a\nkie b x=y\n\n# note\nkie c\nkie d")
    reader = InboxReader(path, None, ["kie"], None)
    reader.read()
    reader.close()
    position = reader.position
    path.write_text("kie a\nkie b x=y\n\n# note\nkie c\nkie d\nnope e\nkie f\n")
    found, left = inbox.unread(path, position, ["kie"], None, None)
    assert [(u.line_no, u.text, u.ref, u.error) for u in found] == [
        (6, "kie d", TaskRef("kie", "d"), None),
        (7, "nope e", None, "unknown provider 'nope' (configured: kie)"),
        (8, "kie f", TaskRef("kie", "f"), None)]
    assert left == path.stat().st_size - position.offset
    assert [u.line_no for u in inbox.unread(path, position, ["kie"], None, 1)[0]] == [6]
    assert [u.line_no for u in inbox.unread(path, None, ["kie"], None, None)[0]] == [1, 2, 5, 6, 7, 8]
    path.write_text("kie z\n")  # truncated below the position
    assert [u.text for u in inbox.unread(path, position, ["kie"], None, None)[0]] == ["kie z"]
    (tmp_path / "new.txt").write_text("kie a\nkie b x=y\n\n# note\nkie c\nkie d\n")
    os.rename(tmp_path / "new.txt", path)  # rotated: another file (inode), read from its start
    assert [u.line_no for u in inbox.unread(path, position, ["kie"], None, None)[0]] == [1, 2, 5, 6]
    path.unlink()
    assert inbox.unread(path, position, ["kie"], None, None) == ([], 0)
