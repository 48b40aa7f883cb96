"""LocalStorage beyond the conformance suite: root confinement, temp files, errors."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from archiver.config import LocalConfig, S3Config, StorageConfig
from archiver.errors import AlreadyStored, DiskFull, StorageUnavailable
from archiver.storage import LocalStorage, open_storage
from archiver.storage.local import MARKER, root_id, write_error
from tests.support.ci import cannot_run

PNG = "image/png"


def every_file(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


@pytest.fixture
async def storage(tmp_path: Path) -> LocalStorage:
    s = LocalStorage(tmp_path / "root")
    await s.start()
    return s


@pytest.mark.parametrize("key", ["../x", "/etc/passwd", "a/../../b", "a\x00b", "../root2/x"])
async def test_hostile_key_writes_nothing_outside_root(storage: LocalStorage, tmp_path: Path,
                                                       key: str) -> None:
    source = tmp_path / "staged"
    source.write_bytes(b"x")
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ValueError):
        await storage.put_bytes(key, b"x", content_type=PNG)
    with pytest.raises(ValueError):
        await storage.put_file(key, source, content_type=PNG,
                               sha256=hashlib.sha256(b"x").hexdigest())
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert every_file(tmp_path / "root") == []


async def test_no_temp_file_remains(storage: LocalStorage, tmp_path: Path) -> None:
    source = tmp_path / "staged"
    source.write_bytes(b"asset")
    await storage.put_file("a/b/00.png", source, content_type=PNG,
                           sha256=hashlib.sha256(b"asset").hexdigest())
    await storage.put_bytes("a/b/00.png.json", b"{}", content_type="application/json")
    assert every_file(storage.root) == ["a/b/00.png", "a/b/00.png.json"]


async def test_file_mode_follows_umask(storage: LocalStorage) -> None:
    """Archived files are readable as the umask allows, not private like mkstemp's 0600."""
    umask = os.umask(0)
    os.umask(umask)
    await storage.put_bytes("m.json", b"{}", content_type="application/json")
    assert (storage.root / "m.json").stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.fixture
def other_disk(tmp_path: Path) -> Iterator[Path]:
    """A folder on another file system than tmp_path (/dev/shm), so put_file must copy."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        cannot_run("the cross-file-system put_file tests", "no second file system (/dev/shm) to stage on")
    folder = Path(tempfile.mkdtemp(dir=shm))
    yield folder
    shutil.rmtree(folder)


async def test_same_disk_moves_the_staged_file(storage: LocalStorage, tmp_path: Path) -> None:
    source = tmp_path / "staged"
    source.write_bytes(b"\x89PNG bytes")
    inode = source.stat().st_ino
    await storage.put_file("k.png", source, content_type=PNG, sha256=hashlib.sha256(b"\x89PNG bytes").hexdigest())
    assert (storage.root / "k.png").stat().st_ino == inode and not source.exists()
    assert every_file(storage.root) == ["k.png"]


async def test_other_disk_copies_and_verifies(storage: LocalStorage, other_disk: Path) -> None:
    source = other_disk / "staged"
    source.write_bytes(b"what was downloaded")
    await storage.put_file("ok.png", source, content_type=PNG,
                           sha256=hashlib.sha256(b"what was downloaded").hexdigest())
    assert await storage.get("ok.png") == b"what was downloaded"


async def test_digest_mismatch_keeps_old_content(storage: LocalStorage, other_disk: Path) -> None:
    await storage.put_bytes("k.png", b"old", content_type=PNG)
    source = other_disk / "staged"
    source.write_bytes(b"changed after download")
    with pytest.raises(StorageUnavailable, match="sha256"):
        await storage.put_file("k.png", source, content_type=PNG,
                               sha256=hashlib.sha256(b"what was downloaded").hexdigest())
    assert await storage.get("k.png") == b"old"
    assert every_file(storage.root) == ["k.png"]


async def test_start_removes_stale_temp_files(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "kie/2026").mkdir(parents=True)
    stale = [root / ".00.png.tmp-0123456789ab", root / "kie/2026/.01.mp4.tmp-abcdef012345"]
    kept = [root / "kie/2026/00.png", root / ".hidden", root / "x.tmp-0123456789ab",
            root / ".y.tmp-short"]
    for path in stale + kept:
        path.write_bytes(b"x")
    await LocalStorage(root).start()
    assert every_file(root) == sorted(p.relative_to(root).as_posix() for p in kept)


async def test_a_shared_start_keeps_young_temp_files(tmp_path: Path) -> None:
    """With other daemons writing here, a young temp file may be one's write in progress."""
    root = tmp_path / "root"
    root.mkdir()
    young, old = root / ".00.png.tmp-0123456789ab", root / ".01.png.tmp-abcdef012345"
    for path in (young, old):
        path.write_bytes(b"x")
    two_days_ago = time.time() - 2 * 86400
    os.utime(old, (two_days_ago, two_days_ago))
    await LocalStorage(root).start(shared=True)
    assert every_file(root) == [young.name]


async def test_start_creates_root(tmp_path: Path) -> None:
    await LocalStorage(tmp_path / "a/b/root").start()
    assert (tmp_path / "a/b/root").is_dir()


async def test_unwritable_root_is_storage_unavailable(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.write_bytes(b"a file where the archive folder should be")
    storage = LocalStorage(root)
    with pytest.raises(StorageUnavailable, match="writable"):
        await storage.start()
    with pytest.raises(StorageUnavailable):
        await storage.put_bytes("a/b.json", b"{}", content_type="application/json")
    assert not await storage.exists("a/b.json")


@pytest.mark.parametrize("code, kind", [
    (errno.ENOSPC, DiskFull), (errno.EDQUOT, DiskFull),
    (errno.EACCES, StorageUnavailable), (errno.EIO, StorageUnavailable),
])
def test_write_error_mapping(code: int, kind: type[Exception]) -> None:
    """A real full disk needs root to set up; the mapping itself is checked here."""
    error = write_error(OSError(code, os.strerror(code)), "k.png", Path("/archive"))
    assert type(error) is kind
    assert "k.png" in str(error) and os.strerror(code) in str(error)


def test_open_storage_local(tmp_path: Path) -> None:
    config = StorageConfig("local", "{task_id}/{index}", LocalConfig(tmp_path), S3Config())
    storage = open_storage(config)
    assert isinstance(storage, LocalStorage) and storage.root == tmp_path


async def test_if_absent_links_the_staged_file(storage: LocalStorage, tmp_path: Path) -> None:
    """Same disk: the staged inode itself is published by a hard link; no temp file is left."""
    source = tmp_path / "staged"
    source.write_bytes(b"\x89PNG first")
    inode = source.stat().st_ino
    await storage.put_file("k.png", source, content_type=PNG, sha256=hashlib.sha256(b"\x89PNG first").hexdigest(),
                           if_absent=True)
    final = (storage.root / "k.png").stat()
    assert final.st_ino == inode and final.st_nlink == 1 and not source.exists()
    again = tmp_path / "again"
    again.write_bytes(b"\x89PNG second")
    inode = again.stat().st_ino
    with pytest.raises(AlreadyStored, match="k.png"):
        await storage.put_file("k.png", again, content_type=PNG,
                               sha256=hashlib.sha256(b"\x89PNG second").hexdigest(), if_absent=True)
    assert again.stat().st_ino == inode and again.read_bytes() == b"\x89PNG second"  # given back
    assert (storage.root / "k.png").read_bytes() == b"\x89PNG first"
    assert every_file(storage.root) == ["k.png"]


async def test_if_absent_copy_from_other_disk(storage: LocalStorage, other_disk: Path) -> None:
    await storage.put_bytes("k.png", b"old", content_type=PNG)
    source = other_disk / "staged"
    source.write_bytes(b"new")
    with pytest.raises(AlreadyStored):
        await storage.put_file("k.png", source, content_type=PNG, sha256=hashlib.sha256(b"new").hexdigest(),
                               if_absent=True)
    assert source.read_bytes() == b"new" and await storage.get("k.png") == b"old"
    await storage.put_file("n.png", source, content_type=PNG, sha256=hashlib.sha256(b"new").hexdigest(),
                           if_absent=True)
    assert await storage.get("n.png") == b"new" and not source.exists()
    assert every_file(storage.root) == ["k.png", "n.png"]


async def test_racing_if_absent_writes_leave_one(storage: LocalStorage) -> None:
    """Sixteen writers at once (threads), one key: one lands, the others see AlreadyStored."""
    async def write(n: int) -> bool:
        try:
            await storage.put_bytes("race.json", b"writer %d" % n, content_type="application/json",
                                    if_absent=True)
        except AlreadyStored:
            return False
        return True

    won = [n for n, landed in enumerate(await asyncio.gather(*(write(n) for n in range(16)))) if landed]
    assert len(won) == 1
    assert await storage.get("race.json") == b"writer %d" % won[0]
    assert every_file(storage.root) == ["race.json"]


async def test_root_id_made_once_and_hidden(storage: LocalStorage) -> None:
    made = root_id(storage.root)
    marker = storage.root / MARKER
    assert len(made) == 32 and int(made, 16) >= 0
    assert marker.read_text() == made + "\n"
    before = marker.stat()
    assert root_id(storage.root) == made
    assert marker.stat().st_mtime_ns == before.st_mtime_ns and marker.stat().st_ino == before.st_ino
    await storage.put_bytes("a/00.png", b"x", content_type=PNG)
    assert [item.key async for item in storage.list()] == ["a/00.png"]
    assert [item.key async for item in storage.list(".arch")] == []
    with pytest.raises(ValueError, match="marker"):
        await storage.put_bytes(MARKER, b"mine", content_type="application/json")
    await storage.start()
    assert root_id(storage.root) == made
    assert root_id(storage.root.parent / "other") != made


def test_root_id_race_between_threads(tmp_path: Path) -> None:
    root = tmp_path / "root"
    barrier = threading.Barrier(16)
    found: list[str] = []

    def one() -> None:
        barrier.wait()
        found.append(root_id(root))

    threads = [threading.Thread(target=one) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(found) == 16 and set(found) == {(root / MARKER).read_text().strip()}


def test_root_id_race_between_processes(tmp_path: Path) -> None:
    """Six processes, each ready (imported) before a file releases them all at once."""
    root, go = tmp_path / "root", tmp_path / "go"
    script = (
        "import os, pathlib, sys, time\n"
        "from archiver.storage.local import root_id\n"
        "pathlib.Path(sys.argv[2] + f'.ready-{os.getpid()}').touch()\n"
        "while not pathlib.Path(sys.argv[2]).exists(): time.sleep(0.001)\n"
        "print(root_id(pathlib.Path(sys.argv[1])))\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(root), str(go)], stdout=subprocess.PIPE,
                              text=True) for _ in range(6)]
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("go.ready-*"))) < len(procs) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    found = [proc.communicate(timeout=30)[0].strip() for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * 6
    assert set(found) == {(root / MARKER).read_text().strip()}


def test_empty_marker_is_reported(tmp_path: Path) -> None:
    """A marker left empty (its maker died before writing) is named, with what to do."""
    (tmp_path / MARKER).write_bytes(b"")
    with pytest.raises(StorageUnavailable, match="delete that file"):
        root_id(tmp_path)


def test_root_id_on_a_file_is_storage_unavailable(tmp_path: Path) -> None:
    (tmp_path / "root").write_bytes(b"a file where the archive folder should be")
    with pytest.raises(StorageUnavailable, match="not a folder"):
        root_id(tmp_path / "root")


async def test_readers_follow_no_symlink(storage: LocalStorage, tmp_path: Path) -> None:
    """get, stat, exists, read and list (what serve, verify and the index read through) see no
    symlinked file or folder, and the marker is missing to them, not a ValueError."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.json").write_bytes(b"secret")
    await storage.put_bytes("a/real.json", b"real", content_type="application/json")
    root_id(storage.root)
    (storage.root / "a" / "link.json").symlink_to(outside / "secret.json")
    (storage.root / "a" / "dangling.json").symlink_to(outside / "none.json")
    (storage.root / "out").symlink_to(outside, target_is_directory=True)
    (storage.root / "a" / "same.json").symlink_to(storage.root / "a" / "real.json")
    for key in ("a/link.json", "a/dangling.json", "out/secret.json", "a/same.json", MARKER):
        with pytest.raises(FileNotFoundError):
            await storage.get(key)
        with pytest.raises(FileNotFoundError):
            await storage.stat(key)
        with pytest.raises(FileNotFoundError):
            async for _ in storage.read(key):
                pass
        assert not await storage.exists(key), key
    assert sorted([item.key async for item in storage.list()]) == ["a/real.json"]
    assert [item.key async for item in storage.list("out/")] == []
    assert await storage.get("a/real.json") == b"real"
    assert (await storage.stat("a/real.json")).size == 4
    assert b"".join([chunk async for chunk in storage.read("a/real.json", 1, 3)]) == b"ea"
