"""End to end, one path each: a fresh URL after expiry, a store outage, a multi-step poll
schedule, Retry-After as an HTTP date, acedata's not-found grace and its batches of more
than 50, `retry --failed` keeping archived assets, and `run --burst`.

Each test runs the real `archiver` process against fakes on 127.0.0.1 and takes seconds.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import aiohttp

from archiver.state import SqliteState
from archiver.testing import FakeApis, FakeTask, FaultCdn, Request, Resource, media_bytes, serve_at
from tests.support.daemon import DaemonProcess, base_config, cli, serve_process, write_config
from tests.support.postgres import StateBackend
from tests.support.servers import serve
from tests.support.state import health_row

API_KEY = "paths-SECRET-3c1d0e"


def daemon_for(tmp_path: Path, providers: dict[str, Any], *args: str, **extra: Any) -> DaemonProcess:
    config = write_config(tmp_path / "config.yaml", base_config(tmp_path, providers, **extra))
    return DaemonProcess(config, dict(os.environ, PATHS_KEY=API_KEY), tmp_path / "daemon.log", *args)


def entry(provider_type: str, base: str, **extra: Any) -> dict[str, Any]:
    return {"type": provider_type, "api_key": "${PATHS_KEY}", "base_url": base, "poll_intervals": ["0.2s"],
            **extra}


def append(inbox: Path, *lines: str) -> None:
    with inbox.open("a") as f:
        f.writelines(f"{line}\n" for line in lines)


def stored(archive: Path, entry_name: str, task_id: str, index: int = 0) -> Path:
    [path] = [p for p in archive.glob(f"{entry_name}/*/*/*/{task_id}/{index:02d}.*") if p.suffix != ".json"]
    return path


def times_of(requests: list[Request], task_id: str) -> list[float]:
    return [r.at for r in requests if task_id in json.dumps(r.body)]


async def test_an_expired_url_is_replaced_by_the_providers_fresh_one(tmp_path: Path) -> None:
    fake, cdn = FakeApis(API_KEY), FaultCdn()
    content = media_bytes("png", 20_000, "renewed")
    async with serve(fake.app()) as api, serve_at(cdn.app()) as cdn_base:
        fake.base, cdn.base = api, cdn_base
        cdn.add("stale", Resource(content, script=["404"]))
        cdn.add("fresh", Resource(content))
        fresh = cdn.url("fresh")
        task = fake.add(FakeTask("kie", "renewed", ["success"], [content], urls=[cdn.url("stale")],
                                 fresh_urls=[fresh]))
        append(tmp_path / "inbox.txt", "kie renewed")
        daemon = daemon_for(tmp_path, {"kie": entry("kie", api)})
        await daemon.start()
        status = await daemon.wait_for(lambda s: s["counts"]["archived"] + s["counts"]["failed"] == 1)
        assert await daemon.stop() == 0
    assert status["counts"]["archived"] == 1, status["recent_failures"]
    assert [h.status for h in cdn.hits_for("stale")] == [404]
    assert [h.status for h in cdn.hits_for("fresh")] == [200]
    assert task.polls == 2, "the provider was not asked again after the 404"
    asset = stored(tmp_path / "archive", "kie", "renewed")
    assert asset.read_bytes() == content
    assert json.loads(Path(f"{asset}.json").read_text())["source_url"] == fresh.split("?")[0]
    assert "gave a fresh one" in (tmp_path / "daemon.log").read_text()


async def test_a_fresh_url_that_expired_too_is_saved_by_kies_fresh_link(tmp_path: Path) -> None:
    """Asked again, the provider gives another URL that is also past its time: download-url is the last try."""
    fake = FakeApis(API_KEY)
    content = media_bytes("png", 20_000, "twice")
    async with serve(fake.app()) as api:
        fake.base = api
        old, new = (f"{api}/cdn/twice/0?sig=SIGNED-{n}" for n in ("old", "new"))
        fake.add(FakeTask("kie", "twice", ["success"], [content], urls=[old], fresh_urls=[new], expired=True))
        append(tmp_path / "inbox.txt", "kie twice")
        daemon = daemon_for(tmp_path, {"kie": entry("kie", api)})
        await daemon.start()
        status = await daemon.wait_for(lambda s: s["counts"]["archived"] + s["counts"]["failed"] == 1)
        assert await daemon.stop() == 0
    assert status["counts"]["archived"] == 1, status["recent_failures"]
    assert stored(tmp_path / "archive", "kie", "twice").read_bytes() == content
    asked = [r.body["url"] for r in fake.requests_for("kie:download-url")]
    assert asked == [new], "the fresh link was asked for the URL the provider gave last, once"
    log = (tmp_path / "daemon.log").read_text()
    assert "gave a fresh one" in log and "fresh link" in log


async def test_a_store_outage_shows_failing_fails_nothing_and_recovers(tmp_path: Path,
                                                                       state_backend: StateBackend) -> None:
    fake = FakeApis(API_KEY)
    during = fake.add(FakeTask("kie", "during", ["success"], [media_bytes("png", 9_000, "during")]))
    after = fake.add(FakeTask("kie", "after", ["success"], [media_bytes("png", 9_000, "after")]))
    archive, inbox = tmp_path / "archive", tmp_path / "inbox.txt"
    archive.mkdir()
    blocker = archive / "kie"
    blocker.write_text("a file where the kie folder should be: nothing can be stored under it")
    async with serve(fake.app()) as api:
        fake.base = api
        # download.retry_after 1 s: the failing store is tried again and again, not after 30 s.
        daemon = daemon_for(tmp_path, {"kie": entry("kie", api)}, **state_backend.config(),
                            download={"allow_addresses": ["127.0.0.0/8"], "retry_after": "1s"})
        await daemon.start()
        append(inbox, "kie during")
        down = await daemon.wait_for(lambda s: (health_row(s, "storage") or {}).get("state") == "failing")
        assert (health_row(down, "storage") or {})["message"]
        # Past MAX_ROUNDS tries of the store (3), not past some fixed time: still nothing failed.
        tries = "task_id=during: storage: "
        status = await daemon.wait_for(lambda _: daemon.log.read_text().count(tries) >= 4, timeout=20)
        assert status["counts"]["downloading"] == 1 and status["counts"]["failed"] == 0

        blocker.unlink()
        append(inbox, "kie after")
        final = await daemon.wait_for(lambda s: s["counts"]["archived"] == 2
                                      and (health_row(s, "storage") or {}).get("state") == "ok")
        assert await daemon.stop() == 0
    assert final["counts"]["failed"] == 0
    for task in (during, after):
        assert stored(archive, "kie", task.task_id).read_bytes() == task.files[0]


async def test_a_multi_step_poll_schedule_is_kept_per_task(tmp_path: Path) -> None:
    fake = FakeApis(API_KEY)
    steps = ["running"] * 15 + ["success"]
    tasks = [fake.add(FakeTask("kie", f"sched-{n}", steps, [media_bytes("png", 2_000, f"s{n}")])) for n in range(2)]
    schedule = ["0.25s until 1.5s", "0.6s until 4s", "1.2s"]  # steps may only slow down
    async with serve(fake.app()) as api:
        fake.base = api
        append(tmp_path / "inbox.txt", *(f"kie {t.task_id}" for t in tasks))
        daemon = daemon_for(tmp_path, {"kie": entry("kie", api, poll_intervals=schedule, requests_per_second=50)})
        await daemon.start()
        await daemon.wait_for(lambda s: s["counts"]["archived"] == 2)
        assert await daemon.stop() == 0
    # The daemon picks each step by the task's age (since first_seen_at) when an answer comes in.
    wall = time.time() - time.monotonic()  # request times are monotonic; first_seen_at is wall-clock
    state = SqliteState(tmp_path / "state" / "archiver.db")
    try:
        found = [await state.find("kie", t.task_id) for t in tasks]
        seen = {f.task_id: f.first_seen_at for f in found if f is not None}
    finally:
        await state.close()
    for task in tasks:
        times = times_of(fake.requests, task.task_id)
        assert len(times) == len(steps), task.task_id
        # A gap is put in a step by the age its poll was sent at; the answer, later by a moment a
        # loaded machine may stretch, chose the step. Gaps up to 0.5 s before a boundary are left out.
        phases: dict[str, list[float]] = {"0.25s": [], "0.6s": [], "1.2s": []}
        for at, nxt in zip(times, times[1:], strict=False):
            age = at + wall - seen[task.task_id]
            if age < 1.0:
                phases["0.25s"].append(nxt - at)
            elif 2.0 < age < 3.5:
                phases["0.6s"].append(nxt - at)
            elif age > 4.5:
                phases["1.2s"].append(nxt - at)
        assert len(phases["0.25s"]) >= 3 and len(phases["1.2s"]) >= 2 and phases["0.6s"], (task.task_id, phases)
        # Load only makes a gap longer: no gap is shorter than its step less the 10 % jitter, and
        # the shortest of each step is shorter than the next longer step allows (0.54 s, 1.08 s).
        assert min(phases["0.25s"]) >= 0.2 and min(phases["0.25s"]) < 0.54, phases
        assert min(phases["0.6s"]) >= 0.5 and min(phases["0.6s"]) < 1.08, phases
        assert min(phases["1.2s"]) >= 1.0, phases


async def test_retry_after_as_an_http_date_pauses_the_entry(tmp_path: Path) -> None:
    fake = FakeApis(API_KEY)
    steps = ["running", "running", "running", "success"]
    task = fake.add(FakeTask("kie", "paused", steps, [media_bytes("png", 3_000, "paused")]))
    async with serve(fake.app()) as api:
        fake.base = api
        append(tmp_path / "inbox.txt", "kie paused")
        daemon = daemon_for(tmp_path, {"kie": entry("kie", api)})
        await daemon.start()
        deadline = time.monotonic() + 20
        while task.polls < 1:
            assert time.monotonic() < deadline, "the task was never polled"
            await asyncio.sleep(0.01)
        # Whole seconds only: the next poll, 0.2 s on, is told to wait until `date`, at most 3 s on.
        date = int(time.time() + 3)
        fake.throttle["kie"] = email.utils.formatdate(date, usegmt=True)
        await daemon.wait_for(lambda s: s["counts"]["archived"] == 1)
        assert await daemon.stop() == 0
    asked = fake.requests_for("kie")
    [throttled] = [r for r in asked if r.status == 429]
    later = [r for r in asked if r.at > throttled.at]
    # Not asked before the date, however late the 429 came (a loaded machine only delays): one
    # ignored, or the 0.2 s poll interval, would ask sooner.
    wall = time.time() - time.monotonic()  # request times are monotonic
    assert later[0].at + wall >= date - 0.05, f"asked again {date - later[0].at - wall:.2f}s before the date"
    # The date was understood: a Retry-After not understood pauses for 5 s.
    [paused] = re.findall(r"pausing this provider for ([\d.]+)s", (tmp_path / "daemon.log").read_text())
    assert float(paused) <= 3.0, f"paused {paused}s for a date at most 3 s away"
    assert task.polls == len(steps)


async def test_acedata_not_found_only_after_its_grace(tmp_path: Path) -> None:
    """acedata gets 120 s before an unknown ID is not_found: a task that shows up late is
    archived, one still unknown keeps being polled, one unknown for 120 s fails."""
    fake = FakeApis(API_KEY)
    inbox = tmp_path / "inbox.txt"
    late = FakeTask("acedata", "late", ["success"], [media_bytes("png", 2_000, "late")], where="seedream")
    async with serve(fake.app()) as api:
        fake.base = api
        daemon = daemon_for(tmp_path, {"seedream": entry("acedata", api, service="seedream",
                                                         requests_per_second=5)})
        append(inbox, "seedream old-ghost")
        await daemon.start()
        await daemon.wait_for(lambda s: any(t["task_id"] == "old-ghost" and t["polls"] >= 2 for t in s["in_flight"]))
        assert await daemon.stop() == 0
        # Age its unknown time, as if the provider had not known it for 117 s.
        state = SqliteState(tmp_path / "state" / "archiver.db")
        try:
            ghost = await state.find("seedream", "old-ghost")
            assert ghost is not None and ghost.unknown_since is not None
            await state.polled(ghost.pk, unknown_since=time.time() - 117)
        finally:
            await state.close()
        restarted = time.monotonic()
        append(inbox, "seedream ghost", "seedream late")
        await daemon.start()
        # `late` shows up only after the provider said twice it did not know it.
        await daemon.wait_for(lambda _: len(times_of(fake.requests, "late")) >= 2)
        fake.add(late)
        status = await daemon.wait_for(lambda s: s["counts"]["archived"] == 1 and s["counts"]["failed"] == 1)
        assert await daemon.stop() == 0
    [failure] = status["recent_failures"]
    assert (failure["task_id"], failure["reason"]) == ("old-ghost", "not_found")
    [waiting] = status["in_flight"]
    assert waiting["task_id"] == "ghost" and waiting["state"] == "polling" and waiting["polls"] >= 3
    asked = [at for at in times_of(fake.requests, "old-ghost") if at > restarted]
    assert len(asked) >= 3, "old-ghost was not polled on while still within its grace"
    state = SqliteState(tmp_path / "state" / "archiver.db")
    try:
        ghost = await state.find("seedream", "old-ghost")
        assert ghost is not None and ghost.unknown_since is not None
        failed_at = (await state.history(ghost.pk))[-1]["at"]
    finally:
        await state.close()
    assert failed_at - ghost.unknown_since >= 120 - 0.01, "not_found before the grace ran out"
    assert stored(tmp_path / "archive", "seedream", "late").read_bytes() == late.files[0]


async def test_an_acedata_batch_of_more_than_50_is_split(tmp_path: Path) -> None:
    fake = FakeApis(API_KEY)
    ids = [f"bulk-{n:03d}" for n in range(60)]
    for task_id in ids:
        fake.add(FakeTask("acedata", task_id, ["success"], [media_bytes("png", 1_500, task_id)], where="seedream"))
    async with serve(fake.app()) as api:
        fake.base = api
        append(tmp_path / "inbox.txt", *(f"seedream {task_id}" for task_id in ids))
        daemon = daemon_for(tmp_path, {"seedream": entry("acedata", api, service="seedream")})
        await daemon.start()
        status = await daemon.wait_for(lambda s: s["counts"]["archived"] == len(ids))
        assert await daemon.stop() == 0
    assert status["counts"]["failed"] == 0
    bodies = [r.body for r in fake.requests_for("acedata:seedream")]
    batches = [b["ids"] for b in bodies if b["action"] == "retrieve_batch"]
    assert all(b["limit"] == len(b["ids"]) for b in bodies if b["action"] == "retrieve_batch")
    assert max(len(batch) for batch in batches) == 50, [len(batch) for batch in batches]
    asked = [task_id for batch in batches for task_id in batch]
    asked += [b["id"] for b in bodies if b["action"] == "retrieve"]
    assert sorted(asked) == ids, "an ID was asked twice or never"


async def test_retry_failed_keeps_archived_assets(tmp_path: Path, state_backend: StateBackend) -> None:
    """One asset archived, the other expired: retry --failed fetches only the missing one."""
    fake, cdn = FakeApis(API_KEY), FaultCdn()
    first, second = media_bytes("png", 8_000, "kept"), media_bytes("png", 8_000, "missing")
    async with serve(fake.app()) as api, serve_at(cdn.app()) as cdn_base:
        fake.base, cdn.base = api, cdn_base
        cdn.add("kept", Resource(first))
        # A 500 first, so that the other asset is archived before this one fails for good.
        cdn.add("missing", Resource(second, script=["500", "403", "ok"]))
        fake.add(FakeTask("kie", "half", ["success"], [first, second], urls=[cdn.url("kept"), cdn.url("missing")]))
        append(tmp_path / "inbox.txt", "kie half")
        daemon = daemon_for(tmp_path, {"kie": entry("kie", api)}, **state_backend.config())
        await daemon.start()
        failed = await daemon.wait_for(lambda s: s["counts"]["failed"] == 1)
        assert failed["recent_failures"][0]["reason"] == "url_expired"
        archive = tmp_path / "archive"
        kept = stored(archive, "kie", "half", 0)
        sidecar = Path(f"{kept}.json").read_bytes()
        code, _, err = await cli(daemon.config, "retry", "--failed", env=daemon.env)
        assert code == 0, err
        status = await daemon.wait_for(lambda s: s["counts"]["archived"] == 1)
        assert await daemon.stop() == 0
    assert status["counts"]["failed"] == 0
    assert [h.status for h in cdn.hits_for("kept")] == [200], "an archived asset was fetched again"
    assert [h.status for h in cdn.hits_for("missing")] == [500, 403, 200]
    assert kept.read_bytes() == first and Path(f"{kept}.json").read_bytes() == sidecar
    assert stored(archive, "kie", "half", 1).read_bytes() == second


async def test_burst_exits_once_the_inbox_is_read_and_nothing_is_in_flight(tmp_path: Path,
                                                                            state_backend: StateBackend) -> None:
    fake = FakeApis(API_KEY)
    done = fake.add(FakeTask("kie", "done", ["running", "success"], [media_bytes("png", 4_000, "done")]))
    fake.add(FakeTask("kie", "refused", ["running", "fail"], fail_code="422", fail_msg="prohibited content"))
    slow = fake.add(FakeTask("kie", "slow", ["running"], [media_bytes("png", 4_000, "slow")]))
    async with serve(fake.app()) as api:
        fake.base = api
        append(tmp_path / "inbox.txt", "kie done", "kie refused", "kie slow")
        daemon = daemon_for(tmp_path, {"kie": entry("kie", api)}, "--burst", **state_backend.config())
        await daemon.start()
        assert daemon.proc is not None
        await daemon.wait_for(lambda s: s["counts"]["archived"] == 1 and s["counts"]["failed"] == 1)
        # Five more polls of `slow` (0.2 s apart) span several of the burst's idle checks (every 0.2 s).
        polls = slow.polls
        await daemon.wait_for(lambda _: slow.polls >= polls + 5)
        assert daemon.proc.returncode is None, "--burst exited with a task still polling"
        slow.steps = ["success"]
        assert await asyncio.wait_for(daemon.proc.wait(), 20) == 0
    status = await daemon.status()
    assert status["counts"] == {"queued": 0, "polling": 0, "downloading": 0, "archived": 2, "failed": 1}
    keys = set()
    for task in (done, slow):
        path = stored(tmp_path / "archive", "kie", task.task_id)
        assert path.read_bytes() == task.files[0]
        keys.add(path.relative_to(tmp_path / "archive").as_posix())
    # The run wrote the index of what it archived before it returned (index.every is 60 s):
    # the gallery `serve` shows lists both assets and the failure.
    async with serve_process(daemon.config) as base, aiohttp.ClientSession() as http:
        async with http.get(f"{base}/") as r:
            assert r.status == 200 and r.content_type == "text/html"
        async with http.get(f"{base}/_index/days.json") as r:
            assert r.status == 200
            [day] = (await r.json())["days"]
        assert (day["tasks"], day["failed"]) == (2, 1), day
        async with http.get(f"{base}/_index/days/{day['date']}.json") as r:
            doc = await r.json()
        assert {a["key"] for a in doc["assets"]} == keys
        assert [f["task_id"] for f in doc["failed"]] == ["refused"]
        for key in keys:
            async with http.get(f"{base}/{key}") as r:
                assert r.status == 200
