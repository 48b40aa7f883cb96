"""The daemon process: restarts, a rejected key, SIGTERM, and sd_notify."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import tempfile
from pathlib import Path

import yaml

from archiver.jobs import cancel
from archiver.state.records import CLAIM_BATCH
from archiver.testing import FakeApis, FakeTask, media_bytes
from tests.support.daemon import DaemonProcess, base_config, cli, write_config
from tests.support.rates import over_rate
from tests.support.servers import serve

API_KEY = "kie-SECRET-0b5e55ed"


def kie_config(tmp_path: Path, base: str) -> Path:
    return write_config(tmp_path / "config.yaml", base_config(tmp_path, {
        "kie": {"type": "kie", "api_key": "${KIE_API_KEY}", "base_url": base, "poll_intervals": ["0.2s"]},
    }))


def add_tasks(fake: FakeApis, *names: str) -> None:
    for name in names:
        fake.add(FakeTask("kie", name, ["running", "success"], [media_bytes("png", 2048, name)]))


async def test_restart_goes_on_from_the_stored_offset(tmp_path: Path) -> None:
    fake = FakeApis(API_KEY)
    add_tasks(fake, "t1", "t2", "t3", "t4", "t5")
    env = dict(os.environ, KIE_API_KEY=API_KEY)
    inbox = tmp_path / "inbox.txt"
    async with serve(fake.app()) as base:
        fake.base = base
        config = kie_config(tmp_path, base)
        inbox.write_text("kie t1\nkie t2\nkie t3\n")
        daemon = DaemonProcess(config, env, tmp_path / "daemon.log")
        await daemon.start()
        await daemon.wait_for(lambda s: s["counts"]["archived"] == 3)
        assert await daemon.stop() == 0
        polled_before = len(fake.requests)

        with inbox.open("a") as f:
            f.write("kie t4\nkie t1\nkie t5\n")
        await daemon.start()
        status = await daemon.wait_for(lambda s: s["counts"]["archived"] == 5)
        assert await daemon.stop() == 0
    assert status["counts"]["failed"] == 0 and status["counts"]["queued"] == 0
    assert all(hits == 1 for hits in fake.cdn_hits.values()) and len(fake.cdn_hits) == 5
    asked_after = {r.body["taskId"] for r in fake.requests[polled_before:]}
    assert asked_after == {"t4", "t5"}, "a line read before the restart was read again"


async def test_rejected_key_waits_and_recovers(tmp_path: Path) -> None:
    fake = FakeApis(API_KEY)
    add_tasks(fake, "k1", "k2")
    async with serve(fake.app()) as base:
        fake.base = base
        config = kie_config(tmp_path, base)
        (tmp_path / "inbox.txt").write_text("kie k1\nkie k2\n")
        wrong = DaemonProcess(config, dict(os.environ, KIE_API_KEY="wrong-key"), tmp_path / "daemon.log")
        await wrong.start()
        status = await wrong.wait_for(lambda s: s["health"].get("kie", {}).get("state") == "unauthorised")
        await asyncio.sleep(1.0)
        assert await wrong.stop() == 0
        asked = len(fake.requests)
        assert asked <= 2, "polling did not slow down after a 401"
        status = await wrong.status()
        assert status["counts"]["failed"] == 0
        assert status["counts"]["polling"] + status["counts"]["queued"] == 2

        right = DaemonProcess(config, dict(os.environ, KIE_API_KEY=API_KEY), tmp_path / "daemon.log")
        await right.start()
        status = await right.wait_for(lambda s: s["counts"]["archived"] == 2)
        assert await right.stop() == 0
    assert "kie" not in status["health"], "a past run's trouble is still reported"
    assert "wrong-key" not in (tmp_path / "daemon.log").read_text()


async def test_sd_notify_ready_watchdog_status_stopping(tmp_path: Path) -> None:
    fake = FakeApis(API_KEY)
    add_tasks(fake, "n1")
    folder = tempfile.mkdtemp(dir="/tmp")
    path = os.path.join(folder, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    messages: list[str] = []

    async def receive_until(word: str) -> None:
        while not any(m.startswith(word) for m in messages):
            messages.append((await asyncio.wait_for(loop.sock_recv(sock, 4096), 20)).decode())

    try:
        async with serve(fake.app()) as base:
            fake.base = base
            config = kie_config(tmp_path, base)
            (tmp_path / "inbox.txt").write_text("kie n1\n")
            env = dict(os.environ, KIE_API_KEY=API_KEY, NOTIFY_SOCKET=path, WATCHDOG_USEC="300000")
            daemon = DaemonProcess(config, env, tmp_path / "daemon.log")
            await daemon.start()
            await receive_until("STATUS=")
            await receive_until("WATCHDOG=1")
            assert daemon.proc is not None
            daemon.proc.terminate()
            await receive_until("STOPPING=1")
            assert await daemon.stop() == 0
    finally:
        sock.close()
        os.unlink(path)
        os.rmdir(folder)
    assert messages[0] == "READY=1"
    assert messages[-1] == "STOPPING=1"
    assert messages.count("WATCHDOG=1") >= 2
    assert any(m.startswith("STATUS=") and "archived" in m for m in messages)


async def test_status_before_first_run_says_so(tmp_path: Path) -> None:
    config = kie_config(tmp_path, "http://127.0.0.1:9")
    code, out, err = await cli(config, "status")
    assert code == 0 and "the daemon has not run" in out.splitlines()[0], err


async def test_sigterm_finishes_what_it_can_and_the_rest_resumes(tmp_path: Path) -> None:
    fake = FakeApis(API_KEY)
    fake.add(FakeTask("kie", "quick", ["success"], [media_bytes("png", 200_000, "q")], slow=1.0))
    fake.add(FakeTask("kie", "long", ["success"], [media_bytes("mp4", 3_000_000, "l")], slow=15.0))
    async with serve(fake.app()) as base:
        fake.base = base
        config = write_config(tmp_path / "config.yaml", base_config(tmp_path, {
            "kie": {"type": "kie", "api_key": "${KIE_API_KEY}", "base_url": base, "poll_intervals": ["0.2s"]},
        }, shutdown_grace="5s", index={"enabled": False}))  # the archive holds only what was downloaded
        (tmp_path / "inbox.txt").write_text("kie quick\nkie long\n")
        env = dict(os.environ, KIE_API_KEY=API_KEY)
        daemon = DaemonProcess(config, env, tmp_path / "daemon.log", "--log-format", "json")
        await daemon.start()
        async def downloads_begun() -> None:
            while len(fake.cdn_hits) < 2:
                await asyncio.sleep(0.05)

        await asyncio.wait_for(downloads_begun(), 30)
        loop = asyncio.get_running_loop()
        asked = loop.time()
        assert await daemon.stop() == 0
        # The grace, and then a few seconds to exit on a loaded machine: far less than the ~15 s
        # the long download would have taken (quick's 1 s download fits in the 5 s grace).
        assert loop.time() - asked < 5 + 4, "SIGTERM waited for the long download, past shutdown_grace"
        status = await daemon.status()
        assert status["counts"]["archived"] == 1 and status["counts"]["downloading"] == 1
        archive = tmp_path / "archive"
        assert sorted(p.name for p in archive.rglob("*") if p.is_file()) == ["00.png", "00.png.json"]

        await daemon.start()
        status = await daemon.wait_for(lambda s: s["counts"]["archived"] == 2, timeout=40)
        assert await daemon.stop() == 0
    assert [start for name, start in fake.ranges if name == "long/0"], "the long download started over"
    [video] = list(archive.rglob("long/00.mp4"))
    assert video.read_bytes() == fake.tasks[("kie", "long")].files[0]
    lines = [json.loads(line) for line in (tmp_path / "daemon.log").read_text().splitlines()]
    about_tasks = [line for line in lines if line.get("task_id") == "long"]
    assert {"provider", "task_id", "state", "message", "level", "time"} <= set(about_tasks[0])
    assert any(line.get("state") == "archived" for line in about_tasks)


async def test_sigterm_while_a_backlog_is_claimed_batch_after_batch_stops_the_daemon(tmp_path: Path) -> None:
    """The claims of a big inbox go on at once while a batch comes back full; a stop then once hung for good."""
    backlog = 3 * CLAIM_BATCH
    async with serve(FakeApis(API_KEY).app()) as base:
        config = kie_config(tmp_path, base)
        (tmp_path / "inbox.txt").write_text("".join(f"kie b{i:05d}\n" for i in range(backlog)))
        daemon = DaemonProcess(config, dict(os.environ, KIE_API_KEY=API_KEY), tmp_path / "daemon.log")
        await daemon.start()

        async def queued() -> None:
            while f"task_id=b{backlog - 1:05d}: queued" not in daemon.log.read_text():
                await asyncio.sleep(0.01)

        await asyncio.wait_for(queued(), 60)
        assert await daemon.stop(timeout=30) == 0, daemon.log.read_text()[-2000:]


async def test_retry_puts_a_failed_task_back_while_the_daemon_runs(tmp_path: Path) -> None:
    fake = FakeApis(API_KEY)
    task = fake.add(FakeTask("kie", "flaky", ["fail", "success"], [media_bytes("png", 4096, "f")],
                             fail_code="500", fail_msg="internal error, retry later"))
    async with serve(fake.app()) as base:
        fake.base = base
        config = kie_config(tmp_path, base)
        (tmp_path / "inbox.txt").write_text("kie flaky\n")
        env = dict(os.environ, KIE_API_KEY=API_KEY)
        daemon = DaemonProcess(config, env, tmp_path / "daemon.log")
        await daemon.start()
        await daemon.wait_for(lambda s: s["counts"]["failed"] == 1)
        code, out, err = await cli(config, "retry", "kie", "flaky", env=env)
        assert code == 0 and "1 task(s)" in out, err
        await daemon.wait_for(lambda s: s["counts"]["archived"] == 1, timeout=10)
        code, out, _ = await cli(config, "show", "kie", "flaky", "--json", env=env)
        assert await daemon.stop() == 0
    shown = json.loads(out)
    assert [h["state"] for h in shown["history"]] == ["queued", "failed", "queued", "downloading", "archived"]
    assert shown["assets"][0]["sha256"] and shown["assets"][0]["key"].endswith("/flaky/00.png")
    assert task.polls == 2


async def test_entries_on_one_key_share_its_rate_limit(tmp_path: Path) -> None:
    """Entries on one key share its rate limit: seedream and seedance on one key get 4/s together,
    nano on its own key 4/s of its own."""
    shared, own = "ace-SECRET-shared", "ace-SECRET-own"
    fake = FakeApis(shared, own)
    for service in ("seedream", "seedance", "nano"):
        for n in (1, 2):
            fake.add(FakeTask("acedata", f"{service}-{n}", ["running"], where=service))
    env = dict(os.environ, SHARED_KEY=shared, OWN_KEY=own)
    rate = 4.0

    def count(key: str) -> int:
        return sum(r.key == key for r in fake.requests)

    async with serve(fake.app()) as base:
        fake.base = base
        fast = {"type": "acedata", "base_url": base, "poll_intervals": ["0.2s"], "requests_per_second": rate}
        config = write_config(tmp_path / "config.yaml", base_config(tmp_path, {
            "seedream": {"service": "seedream", "api_key": "${SHARED_KEY}", **fast},
            "seedance": {"service": "seedance", "api_key": "${SHARED_KEY}", **fast},
            "nano": {"service": "nano", "api_key": "${OWN_KEY}", **fast},
        }))
        (tmp_path / "inbox.txt").write_text("".join(f"{s} {s}-{n}\n" for s in ("seedream", "seedance", "nano")
                                                    for n in (1, 2)))
        daemon = DaemonProcess(config, env, tmp_path / "daemon.log")
        await daemon.start()
        try:
            # Each entry would ask every 0.2 s: only the buckets hold them back.
            await daemon.wait_for(lambda _: count(shared) >= 20, timeout=30)
            ours = count(own)
        finally:
            assert await daemon.stop() == 0
    for key in (shared, own):
        times = [r.at for r in fake.requests if r.key == key]
        assert (problem := over_rate(times, rate)) is None, (key, problem)
    # Its own bucket: nano kept pace with the shared key; in one bucket with it, it would have got half as much.
    assert ours >= 0.75 * 20, (ours, "requests on the own key while the shared key made 20")
    entries = {r.entry for r in fake.requests if r.key == shared}
    assert entries == {"acedata:seedream", "acedata:seedance"}


async def test_a_stop_ends_a_job_that_swallowed_its_cancel() -> None:
    # Python 3.11's asyncio.wait_for (psycopg_pool waits with it) can lose a cancel; the loop then runs on.
    lost = 0

    async def loop_that_loses_one_cancel() -> None:
        nonlocal lost
        while True:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                if lost:
                    raise
                lost += 1

    job = asyncio.create_task(loop_that_loses_one_cancel())
    await asyncio.sleep(0.05)
    async with asyncio.timeout(10):
        await cancel([job])
    assert job.cancelled() and lost == 1


async def test_the_state_folder_is_private_under_umask_022(tmp_path: Path) -> None:
    """The state DB holds raw provider answers: its folder is 0700 and every file the state code
    makes there 0600 (the DB, its -wal and -shm, the lock), under a umask that would give 0644.
    The archive keeps the umask's modes: it is there to be served."""
    fake = FakeApis(API_KEY)
    add_tasks(fake, "private-1")
    env = dict(os.environ, KIE_API_KEY=API_KEY)
    async with serve(fake.app()) as base:
        fake.base = base
        config = kie_config(tmp_path, base)
        (tmp_path / "inbox.txt").write_text("kie private-1\n")
        daemon = DaemonProcess(config, env, tmp_path / "daemon.log")
        umask = os.umask(0o022)  # the daemon inherits it
        try:
            await daemon.start()
        finally:
            os.umask(umask)
        try:
            await daemon.wait_for(lambda s: s["counts"]["archived"] == 1)
            state = tmp_path / "state"
            modes = {p.name: stat.S_IMODE(os.stat(p).st_mode) for p in state.iterdir()}
        finally:
            assert await daemon.stop() == 0
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o700
    assert modes == {"archiver.db": 0o600, "archiver.db-wal": 0o600, "archiver.db-shm": 0o600,
                     "archiver.db.lock": 0o600, "staging": 0o700}, {k: oct(v) for k, v in modes.items()}
    [asset] = [p for p in (tmp_path / "archive").rglob("00.png")]
    assert stat.S_IMODE(os.stat(asset).st_mode) == 0o644


def keyless_world() -> tuple[FakeApis, dict[str, str]]:
    """A kie task and a maxapi task, and an environment without KIE_API_KEY."""
    fake = FakeApis(API_KEY)
    add_tasks(fake, "n1")
    fake.add(FakeTask("maxapi", "m1", ["success"], [media_bytes("png", 2048, "m1")]))
    return fake, {k: v for k, v in os.environ.items() if k != "KIE_API_KEY"}


def keyless_config(tmp_path: Path, fake: FakeApis, base: str) -> Path:
    """kie's key from `${KIE_API_KEY:-}`, maxapi's set; both tasks in the inbox."""
    fake.base = base
    (tmp_path / "inbox.txt").write_text("kie n1\nmx m1\n")
    return write_config(tmp_path / "config.yaml", base_config(tmp_path, {
        "kie": {"type": "kie", "api_key": "${KIE_API_KEY:-}", "base_url": base, "poll_intervals": ["0.2s"]},
        "mx": {"type": "maxapi", "api_key": API_KEY, "base_url": base, "poll_intervals": ["0.2s"]},
    }))


async def test_an_entry_without_a_key_is_never_polled_and_waits_for_one(tmp_path: Path) -> None:
    """`${KIE_API_KEY:-}` unset: no request with an empty Bearer, one warning, status says no_key, and
    the tasks wait queued until a restart with the key archives them."""
    fake, env = keyless_world()
    async with serve(fake.app()) as base:
        config = keyless_config(tmp_path, fake, base)
        daemon = DaemonProcess(config, env, tmp_path / "daemon.log")
        await daemon.start()
        # The keyed entry's task goes all the way: the daemon had every chance to poll the other.
        status = await daemon.wait_for(lambda s: s["counts"]["archived"] == 1)
        code, out, _ = await cli(config, "status", env=env)
        assert await daemon.stop() == 0
        assert "kie: no_key (KIE_API_KEY is not set)" in out and "stale" not in out, out
        assert fake.requests_for("kie") == []
        assert status["health"]["kie"]["state"] == "no_key"
        assert status["health"]["kie"]["message"] == "KIE_API_KEY is not set"
        assert [t["state"] for t in status["in_flight"] if t["task_id"] == "n1"] == ["queued"]
        log = (tmp_path / "daemon.log").read_text()
        assert log.count("KIE_API_KEY") == 1, log
        assert "provider=kie: not polled: KIE_API_KEY is not set" in log

        daemon.env = dict(env, KIE_API_KEY=API_KEY)
        await daemon.start()
        status = await daemon.wait_for(lambda s: s["counts"]["archived"] == 2)
        assert await daemon.stop() == 0
    assert status["counts"]["failed"] == 0
    assert status["health"].get("kie", {"state": "ok"})["state"] == "ok"
    assert {r.key for r in fake.requests_for("kie")} == {API_KEY}


async def test_a_burst_run_ends_though_an_entry_without_a_key_has_tasks_waiting(tmp_path: Path) -> None:
    """--burst finishes what it can: the tasks of an entry it never polls wait for a later run."""
    fake, env = keyless_world()
    async with serve(fake.app()) as base:
        config = keyless_config(tmp_path, fake, base)
        code, _, err = await asyncio.wait_for(cli(config, "run", "--burst", env=env), timeout=60)
        assert code == 0, err
        code, out, err = await cli(config, "status", "--json", env=env)
    counts = json.loads(out)["counts"]
    assert (counts["archived"], counts["queued"]) == (1, 1), counts
    assert fake.requests_for("kie") == []


async def test_a_daemon_whose_every_entry_lacks_a_key_runs_and_stops(tmp_path: Path) -> None:
    """The example config with no key set (the README's first command): the daemon runs, polls
    nothing, takes lines into its inbox, and stops cleanly."""
    fake, env = keyless_world()
    async with serve(fake.app()) as base:
        config = keyless_config(tmp_path, fake, base)
        doc = yaml.safe_load(config.read_text())
        doc["providers"]["mx"]["api_key"] = "${MAXAPI_KEY_UNSET_HERE:-}"
        config.write_text(yaml.safe_dump(doc))
        daemon = DaemonProcess(config, env, tmp_path / "daemon.log")
        await daemon.start()
        await daemon.wait_running()
        status = await daemon.wait_for(lambda s: s["counts"]["queued"] == 2)
        await asyncio.sleep(1.5)  # a few claim rounds: each used to fail with "no query solution"
        assert await daemon.stop() == 0
    assert fake.requests == [] and status["counts"]["failed"] == 0
    log = (tmp_path / "daemon.log").read_text()
    assert "state DB failed" not in log and "Traceback" not in log, log[-3000:]
