"""Several real `archiver run` processes on one PostgreSQL database (docs/operations.md, several daemons on PostgreSQL).

Each daemon has its own state_dir and inbox; they share the DSN and the archive.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from archiver.testing import FakeApis, FakeTask, media_bytes
from tests.support.daemon import cli, write_config
from tests.support.fleet import Fleet, archived_files
from tests.support.postgres import PgCluster
from tests.support.rates import max_in_window, over_rate, promised
from tests.support.servers import serve
from tests.support.web import TOKEN

API_KEY = "kie-SECRET-5ca1ab1e"
ENV = dict(os.environ, KIE_API_KEY=API_KEY, ARCHIVER_HTTP_TOKEN=TOKEN)


def kie(base: str, poll: str = "0.2s", rate: float = 20) -> dict[str, Any]:
    return {"kie": {"type": "kie", "api_key": "${KIE_API_KEY}", "base_url": base, "poll_intervals": [poll],
                    "requests_per_second": rate}}


def add_tasks(fake: FakeApis, names: list[str], steps: list[str], **extra: Any) -> list[FakeTask]:
    return [fake.add(FakeTask("kie", name, list(steps), [media_bytes("png", 3000, name)], **extra))
            for name in names]


def lines(names: list[str]) -> str:
    return "".join(f"kie {name}\n" for name in names)


def held_by(status: dict[str, Any], pid: int) -> int:
    """How many live tasks the daemon with this pid holds, per `status --json`."""
    return sum(sum(d["holds"].values()) for d in status["daemons"] if d["pid"] == pid)


def first_poll_after(fake: FakeApis, names: list[str], since: float) -> float:
    return min(r.at for r in fake.requests if r.body and r.body.get("taskId") in names and r.at > since)


def assert_archived_once(fake: FakeApis, root: Path, names: list[str]) -> None:
    """Each task's one asset was downloaded once and is stored once, with one sidecar."""
    assert {n: fake.cdn_hits.get(f"{n}/0") for n in names} == dict.fromkeys(names, 1)
    assert archived_files(root) == {f"{n}/{f}": 1 for n in names for f in ("00.png", "00.png.json")}


async def until(check: Any, timeout: float, fleet: Fleet) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        fleet.check_running()
        assert time.monotonic() < deadline, f"timed out\n{fleet.tails()}"
        await asyncio.sleep(0.2)


async def metric_until(client: aiohttp.ClientSession, base: str | None, sample: str) -> None:
    """GET /metrics until it holds this sample line."""
    deadline = time.monotonic() + 20
    while True:
        async with client.get(f"{base}/metrics") as resp:
            if sample in (await resp.text()).splitlines():
                return
        assert time.monotonic() < deadline, f"/metrics never said {sample}"
        await asyncio.sleep(0.2)


async def healthz_until(client: aiohttp.ClientSession, base: str | None, want: int) -> list[str]:
    """GET /healthz until it answers `want`; its reasons, if any."""
    deadline = time.monotonic() + 20
    while True:
        async with client.get(f"{base}/healthz") as resp:
            body = await resp.json()
            if resp.status == want:
                return list(body.get("reasons", []))
        assert time.monotonic() < deadline, f"/healthz still answers {resp.status}: {body}"
        await asyncio.sleep(0.3)


async def test_three_daemons_keep_one_keys_rate_limit_together(tmp_path: Path, pg_dsn: str) -> None:
    """8 requests/s for one kie key: three daemons polling 24 tasks as fast as they may stay within it."""
    rate, names = 8.0, [f"rate-{n:02d}" for n in range(24)]
    fake = FakeApis(API_KEY)
    add_tasks(fake, names, ["running", "running", "success"])
    async with serve(fake.app()) as base:
        fake.base = base
        fleet = Fleet(tmp_path, 3, kie(base, rate=rate), pg_dsn, ENV)
        try:
            await fleet.start()
            await fleet.wait_live(3)
            for i, member in enumerate(fleet.members):
                member.inbox.write_text(lines(names[i::3]))
            await fleet.wait_for(lambda s: s["counts"]["archived"] == len(names), timeout=60)
        finally:
            await fleet.stop_all()
    times = [r.at for r in fake.requests if r.key == API_KEY]
    assert len(times) == 3 * len(names), "a poll was lost or repeated"
    assert (problem := over_rate(times, rate)) is None, problem
    # The limit was the bottleneck: three daemons each keeping 4/s alone would have gone far over it.
    # Half the rate in the busiest 10 s: a loaded machine slows the daemons, but three that each
    # kept a third of the rate (or less) would stay far below it.
    assert max_in_window(times, 10.0) >= promised(rate, 10.0, jitter=0) // 2
    for i, member in enumerate(fleet.members):
        assert "succeeded with 1 asset(s)" in member.log(), f"daemon{i} polled nothing to its end"
        assert API_KEY not in member.log()
    assert_archived_once(fake, tmp_path / "archive", names)


async def two_holding(fleet: Fleet, fake: FakeApis, first: list[str], second: list[str]) -> None:
    """daemon0 holds the tasks `first`, daemon1 those of `second`, all polling."""
    await fleet.start(0)
    await fleet.wait_live(1)
    fleet[0].inbox.write_text(lines(first))
    await fleet.wait_for(lambda s: held_by(s, fleet[0].pid) == len(first) and s["counts"]["polling"] == len(first))
    await fleet.start(1)
    await fleet.wait_live(2)
    # The fair share is now half of all live tasks: daemon0 has it, so daemon1 claims the new ones.
    fleet[1].inbox.write_text(lines(second))
    await fleet.wait_for(lambda s: held_by(s, fleet[1].pid) == len(second)
                         and s["counts"]["polling"] == len(first) + len(second))


async def test_a_killed_daemons_tasks_go_to_the_other_after_the_lease(tmp_path: Path, pg_dsn: str) -> None:
    first, second = [f"kill-a{n}" for n in range(5)], [f"kill-b{n}" for n in range(5)]
    fake = FakeApis(API_KEY)
    tasks = add_tasks(fake, first + second, ["running"])  # running until the test says otherwise
    async with serve(fake.app()) as base:
        fake.base = base
        fleet = Fleet(tmp_path, 2, kie(base, poll="1s"), pg_dsn, ENV, lease="5s")
        try:
            await two_holding(fleet, fake, first, second)
            [seen] = [d["seen"] for d in (await fleet.status())["daemons"] if d["pid"] == fleet[0].pid]
            killed_at = time.monotonic()
            assert await fleet.stop(0, signal.SIGKILL) == -signal.SIGKILL
            for task in tasks:
                task.steps = ["success"]
            status = await fleet.wait_for(lambda s: s["counts"]["archived"] == 10, timeout=40)
        finally:
            await fleet.stop_all()
    # The lease runs from daemon0's last heartbeat (at `seen` or later): its tasks are free only once
    # it ran out, however late a loaded machine made that heartbeat, and then within a few seconds.
    again = first_poll_after(fake, first, killed_at)
    wall = time.time() - time.monotonic()  # request times are monotonic
    expired = dt.datetime.fromisoformat(seen.replace("Z", "+00:00")).timestamp() + 5
    early = expired - (again + wall)
    assert early <= 0.01, f"daemon0's tasks were polled {early:.2f}s before its lease ran out"
    taken = again - killed_at
    assert taken <= 5 + 5 / 4 + 5, f"daemon0's tasks were polled again {taken:.1f}s after the kill"
    assert sum(status["counts"].values()) == 10
    assert all(f"task_id={n}: archived" in fleet[1].log() for n in first), "daemon1 did not finish daemon0's tasks"
    assert_archived_once(fake, tmp_path / "archive", first + second)


async def test_a_daemon_killed_and_started_again_takes_its_tasks_back_at_once(tmp_path: Path, pg_dsn: str) -> None:
    """kill -9, then a start on the same state_dir: the lock file names the dead run's daemon ID, so its
    tasks are free at once, not after the lease (60 s), and it is no longer listed."""
    names = [f"again-{n}" for n in range(4)]
    fake = FakeApis(API_KEY)
    tasks = add_tasks(fake, names, ["running"])
    async with serve(fake.app()) as base:
        fake.base = base
        fleet = Fleet(tmp_path, 1, kie(base, poll="1s"), pg_dsn, ENV, lease="60s")
        try:
            await fleet.start()
            fleet[0].inbox.write_text(lines(names))
            await fleet.wait_for(lambda s: held_by(s, fleet[0].pid) == len(names))
            assert await fleet.stop(0, signal.SIGKILL) == -signal.SIGKILL
            await fleet.start(0)
            started_at = time.monotonic()
            status = await fleet.wait_for(lambda s: held_by(s, fleet[0].pid) == len(names), timeout=30)
            assert [d["pid"] for d in status["daemons"]] == [fleet[0].pid], "the killed run is still listed"
            for task in tasks:
                task.steps = ["success"]
            await fleet.wait_for(lambda s: s["counts"]["archived"] == len(names), timeout=30)
        finally:
            await fleet.stop_all()
    taken = first_poll_after(fake, names, started_at) - started_at
    assert taken < 10, f"the tasks waited {taken:.1f}s after the restart (lease 60s)"
    assert_archived_once(fake, tmp_path / "archive", names)


async def test_a_stopped_daemon_hands_its_tasks_over_at_once(tmp_path: Path, pg_dsn: str) -> None:
    """SIGTERM: the daemon lets its tasks go as it leaves; the other takes them long before the lease."""
    first, second = [f"term-a{n}" for n in range(4)], [f"term-b{n}" for n in range(4)]
    fake = FakeApis(API_KEY)
    tasks = add_tasks(fake, first + second, ["running"])
    async with serve(fake.app()) as base:
        fake.base = base
        fleet = Fleet(tmp_path, 2, kie(base, poll="1s"), pg_dsn, ENV, lease="60s")
        try:
            await two_holding(fleet, fake, first, second)
            assert await fleet.stop(0) == 0
            stopped_at = time.monotonic()
            status = await fleet.status()
            assert [d["pid"] for d in status["daemons"]] == [fleet[1].pid], "the stopped daemon is still listed"
            for task in tasks:
                task.steps = ["success"]
            await fleet.wait_for(lambda s: s["counts"]["archived"] == 8, timeout=30)
        finally:
            await fleet.stop_all()
    taken = first_poll_after(fake, first, stopped_at) - stopped_at
    assert taken < 10, f"daemon0's tasks waited {taken:.1f}s: not handed over at its stop (lease 60s)"
    assert_archived_once(fake, tmp_path / "archive", first + second)


async def test_every_door_lands_and_one_task_through_two_doors_is_known_once(tmp_path: Path, pg_dsn: str) -> None:
    names = ["door-inbox0", "door-inbox1", "door-add", "door-http", "door-twice"]
    fake = FakeApis(API_KEY)
    add_tasks(fake, names, ["running", "success"])
    async with serve(fake.app()) as base:
        fake.base = base
        fleet = Fleet(tmp_path, 2, kie(base), pg_dsn, ENV, http=True)
        try:
            await fleet.start()
            await fleet.wait_live(2)
            fleet[0].inbox.write_text("kie door-inbox0\nkie door-twice via=inbox0\n")
            fleet[1].inbox.write_text("kie door-inbox1\n")
            code, out, err = await cli(fleet[1].config, "add", "kie", "door-add", env=ENV)
            assert code == 0 and out == "queued kie door-add\n", err
            async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as client:
                async with client.post(f"{fleet[0].http}/tasks", json={"provider": "kie", "task_id": "door-http"}) \
                        as resp:
                    assert resp.status == 202 and (await resp.json())[0]["result"] == "queued"
                await fleet.wait_for(lambda s: sum(s["counts"].values()) == 5)
                # The same task again, through every other door and into the other daemon.
                async with client.post(f"{fleet[1].http}/tasks", json={"provider": "kie", "task_id": "door-twice"}) \
                        as resp:
                    assert resp.status == 202 and (await resp.json())[0]["result"] == "known"
            code, out, err = await cli(fleet[0].config, "add", "kie", "door-twice", env=ENV)
            assert code == 0 and out.startswith("already known: kie door-twice ("), err
            with fleet[1].inbox.open("a") as f:
                f.write("kie door-twice via=inbox1\n")
            await fleet.wait_for(lambda s: s["counts"]["archived"] == 5, timeout=30)
            # Once daemon1 has read the last line (its /metrics counts it known), it must not have made a task.
            async with aiohttp.ClientSession() as client:
                await metric_until(client, fleet[1].http, 'archiver_inbox_lines_total{result="known"} 1.0')
            status = await fleet.status()
        finally:
            await fleet.stop_all()
    assert sum(status["counts"].values()) == 5 and status["rejected_lines"] == []
    # Each daemon read its own inbox, and only its own.
    assert "task_id=door-inbox0: queued" in fleet[0].log()
    assert "task_id=door-inbox1: queued" in fleet[1].log()
    assert "task_id=door-inbox1: queued" not in fleet[0].log()
    assert "task_id=door-inbox0: queued" not in fleet[1].log()
    assert_archived_once(fake, tmp_path / "archive", names)
    [sidecar] = (tmp_path / "archive").rglob("door-twice/00.png.json")
    assert '"via": "inbox0"' in sidecar.read_text(), "the first door's labels are the task's"


async def test_status_lists_live_daemons_and_drops_a_dead_one_after_the_lease(tmp_path: Path, pg_dsn: str) -> None:
    names = [f"stat-{n}" for n in range(6)]
    fake = FakeApis(API_KEY)
    add_tasks(fake, names, ["running"])
    async with serve(fake.app()) as base:
        fake.base = base
        fleet = Fleet(tmp_path, 3, kie(base, poll="1s"), pg_dsn, ENV, lease="5s", http=True)
        fleet[2].daemon.env = dict(ENV, KIE_API_KEY="kie-wrong-key")  # its kie health turns unauthorised
        try:
            await fleet.start()
            await fleet.wait_live(3)
            fleet[0].inbox.write_text(lines(names))
            pids = [m.pid for m in fleet.members]
            await fleet.wait_for(lambda s: all(held_by(s, pid) == 2 for pid in pids))
            async with aiohttp.ClientSession() as client:
                for member in fleet.members:  # /healthz writes each daemon's state_db health row
                    async with client.get(f"{member.http}/healthz") as resp:
                        assert resp.status == 200
            host = socket.gethostname()
            unauthorised = f"kie@{host}:{pids[2]}"
            # A first poll's answer is written after the health row it changed (and within a second).
            status = await fleet.wait_for(lambda s: unauthorised in s["health"]
                                          and all(d["holds"] == {"polling": 2} for d in s["daemons"]))
            code, text, _ = await cli(fleet[0].config, "status", env=ENV)
            assert code == 0

            assert await fleet.stop(2, signal.SIGKILL) == -signal.SIGKILL
            killed_at = time.monotonic()
            assert len((await fleet.status())["daemons"]) == 3, "a killed daemon vanished before its lease ran out"
            after = await fleet.wait_for(lambda s: len(s["daemons"]) == 2, timeout=15)
            gone_after = time.monotonic() - killed_at
            after = await fleet.wait_for(lambda s: not any(str(pids[2]) in name for name in s["health"])
                                         and all(held_by(s, pid) == 3 for pid in pids[:2]), timeout=15)
        finally:
            await fleet.stop_all()
    assert status["backend"] == "postgres"
    assert sorted((d["host"], d["pid"]) for d in status["daemons"]) == sorted((host, pid) for pid in pids)
    for pid in pids:
        assert status["health"][f"state_db@{host}:{pid}"]["state"] == "ok"
    assert status["health"][unauthorised]["state"] == "unauthorised"
    assert not any(name.startswith("kie@") and name != unauthorised for name in status["health"])
    assert all(str(pid) in text for pid in pids), text
    assert 2.0 <= gone_after <= 5 + 5, f"listed for {gone_after:.1f}s after the kill (lease 5s)"
    assert sorted(d["pid"] for d in after["daemons"]) == sorted(pids[:2])
    assert "kie-wrong-key" not in fleet[2].log() and API_KEY not in fleet[0].log()


async def test_the_state_db_down_pauses_work_and_nothing_is_lost(tmp_path: Path, private_pg: PgCluster) -> None:
    names = [f"down-{n}" for n in range(4)]
    fake = FakeApis(API_KEY)
    tasks = add_tasks(fake, names, ["running"])
    slow = fake.add(FakeTask("kie", "down-slow", ["success"], [media_bytes("png", 1_000_000, "slow")], slow=6.0))
    async with serve(fake.app()) as base:
        fake.base = base
        fleet = Fleet(tmp_path, 1, kie(base, poll="0.5s"), private_pg.create_database(), ENV, lease="5s",
                      http=True)
        member = fleet[0]
        try:
            await fleet.start()
            member.inbox.write_text(lines([*names, "down-slow"]))
            await fleet.wait_for(lambda s: s["counts"]["polling"] == 4 and "down-slow/0" in fake.cdn_hits)
            private_pg.stop()
            stopped_at = time.monotonic()
            async with aiohttp.ClientSession() as client:
                reasons = await healthz_until(client, member.http, 503)
                await until(lambda: "state DB does not answer" in member.log(), 15, fleet)
                staging = member.home / "state" / "staging"
                # The download finishes into staging, and waits there.
                await until(lambda: [p.stat().st_size for p in staging.glob("*.part")] == [len(slow.files[0])],
                            20, fleet)
                for task in tasks:
                    task.steps = ["success"]
                # Down past the lease and past a poll's 5 s pause: polls are tried again, and must wait.
                # And until the heartbeat itself gave up on the pool (after 10 s): then the daemon
                # said the DB was down, and must say it answers again; a fixed time was too short
                # on an idle machine.
                await asyncio.sleep(max(0.0, stopped_at + 8 - time.monotonic()))
                await until(lambda: "polling pauses, downloads finish into staging" in member.log(), 20, fleet)
                asked_while_down = [r for r in fake.requests if r.at > stopped_at + 2]  # 2 s: a poll in flight
                private_pg.start()
                status = await fleet.wait_for(lambda s: s["counts"]["archived"] == 5, timeout=40)
                await healthz_until(client, member.http, 200)
                # Said by the heartbeat, whose call may still wait on the pool when the work is done.
                await until(lambda: "answers again; work resumes" in member.log(), 15, fleet)
        finally:
            await fleet.stop_all()
    assert any("state DB" in reason for reason in reasons), reasons
    assert asked_while_down == [], "polling went on while the state DB was down"
    assert sum(status["counts"].values()) == 5
    assert_archived_once(fake, tmp_path / "archive", [*names, "down-slow"])


async def test_local_storage_seen_differently_refuses_to_start(tmp_path: Path, pg_dsn: str) -> None:
    fleet = Fleet(tmp_path, 2, kie("http://127.0.0.1:9"), pg_dsn, ENV)
    doc = yaml.safe_load(fleet[1].config.read_text())
    doc["storage"]["local"]["root"] = str(tmp_path / "elsewhere")
    write_config(fleet[1].config, doc)
    try:
        await fleet.start(0)
        await fleet.wait_live(1)
        await fleet.start(1)
        fleet[1].down = True  # its exit is what this test waits for
        assert fleet[1].daemon.proc is not None
        assert await asyncio.wait_for(fleet[1].daemon.proc.wait(), 30) == 1
        status = await fleet.status()
    finally:
        await fleet.stop_all()
    assert "storage.local.root: this daemon sees" in fleet[1].log()
    assert [d["pid"] for d in status["daemons"]] == [fleet[0].pid], "the refused daemon is listed as live"


async def test_a_paused_daemon_lets_go_of_a_task_another_finished(tmp_path: Path, pg_dsn: str) -> None:
    """SIGSTOP past the lease mid-download: the other daemon archives the task; the paused one, woken,
    finishes its download, finds the task is no longer its own and lets it go without a trace."""
    fake = FakeApis(API_KEY)
    fake.add(FakeTask("kie", "pause-slow", ["success"], [media_bytes("png", 1_000_000, "p")], slow=6.0))
    async with serve(fake.app()) as base:
        fake.base = base
        fleet = Fleet(tmp_path, 2, kie(base), pg_dsn, ENV, lease="5s")
        try:
            await fleet.start()
            await fleet.wait_live(2)
            fleet[0].inbox.write_text("kie pause-slow\n")
            status = await fleet.wait_for(lambda s: s["counts"]["downloading"] == 1)
            [holder] = [m for m in fleet.members if held_by(status, m.pid) == 1]
            other = fleet.members[1 - fleet.members.index(holder)]
            await until(lambda: "pause-slow/0" in fake.cdn_hits, 15, fleet)
            assert holder.daemon.proc is not None
            holder.daemon.proc.send_signal(signal.SIGSTOP)
            try:
                await fleet.wait_for(lambda s: s["counts"]["archived"] == 1, timeout=40)
            finally:
                holder.daemon.proc.send_signal(signal.SIGCONT)
            # The woken daemon's download ends within the rest of its 6 s; then it must let go.
            await until(lambda: "letting it go" in holder.log(), 20, fleet)
            status = await fleet.wait_live(2)
            code, out, err = await cli(fleet[0].config, "show", "kie", "pause-slow", "--json", env=ENV)
            assert code == 0, err
        finally:
            await fleet.stop_all()
    assert fake.cdn_hits["pause-slow/0"] == 2, "both daemons downloaded it: the test did not pause mid-download"
    assert "pause-slow: archived" in other.log()
    assert [h["state"] for h in json.loads(out)["history"]] == ["queued", "downloading", "archived"]
    assert sorted(d["pid"] for d in status["daemons"]) == sorted(m.pid for m in fleet.members)
    assert archived_files(tmp_path / "archive") == {"pause-slow/00.png": 1, "pause-slow/00.png.json": 1}
    assert list((holder.home / "state" / "staging").iterdir()) == [], "the paused daemon's download was left"
