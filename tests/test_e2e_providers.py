"""End to end over all four providers: a mixed inbox, rate limits seen from the server's side,
acedata batching, a 429 with Retry-After, and a provider that fails for a while and recovers.

The mixed inbox is random: the test prints its seed; ARCHIVER_E2E_SEED=<seed> replays it.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from pathlib import Path

from archiver.testing import FakeApis, FakeTask, Request, media_bytes
from tests.support.daemon import DaemonProcess, base_config, write_config
from tests.support.rates import over_rate
from tests.support.servers import serve

# kie and acedata at their defaults; maxapi and apipod (default 5) set faster so the test takes seconds.
RPS = {"kie": 10, "maxapi": 15, "acedata:seedream": 1, "acedata:seedance": 1, "apipod": 15}
ENTRY = {"kie": "kie", "maxapi": "maxapi", "acedata:seedream": "seedream", "acedata:seedance": "seedance",
         "apipod": "pod"}
# One key per entry: entries that share a key share its rate limit, and RPS is per entry.
KEYS = {entry: f"{entry}-SECRET-5eed" for entry in ENTRY.values()}
# (provider type, where, fail code, fail message) → the reason archiver must record.
FAILURES = [
    (("kie", "", "422", "prompt contains prohibited content"), "content_moderation"),
    (("kie", "", "402", "Insufficient credits"), "insufficient_credits"),
    (("maxapi", "", "FAILURE", "CONTENT_MODERATION"), "content_moderation"),
    (("maxapi", "", "FAILURE", "INSUFFICIENT_POINTS"), "insufficient_credits"),
    (("maxapi", "", "CANCELLED", None), "cancelled"),
    (("acedata", "seedream", "forbidden", "content rejected"), "content_moderation"),
    (("acedata", "seedance", "api_error", "upstream error"), "provider_failed"),
    (("apipod", "images", "UPSTREAM_CAPACITY_EXHAUSTED", "Upstream request failed. Please retry later."),
     "provider_failed"),
    (("apipod", "videos", None, "Upstream request failed. Please retry later."), "provider_failed"),
]


def config_for(tmp_path: Path, base: str) -> Path:
    fast = {"base_url": base, "poll_intervals": ["0.5s"]}
    entries = {
        "kie": {"type": "kie", **fast},
        "maxapi": {"type": "maxapi", **fast, "requests_per_second": RPS["maxapi"]},
        "seedream": {"type": "acedata", "service": "seedream", **fast},
        "seedance": {"type": "acedata", "service": "seedance", **fast},
        "pod": {"type": "apipod", "family": "auto", **fast, "requests_per_second": RPS["apipod"]},
    }
    for name, entry in entries.items():
        entry["api_key"] = f"${{TEST_KEY_{name.upper()}}}"
    return write_config(tmp_path / "config.yaml", base_config(tmp_path, entries))


def mixed_world(fake: FakeApis, rng: random.Random, count: int) -> dict[str, tuple[FakeTask, str | None]]:
    """`count` tasks over every provider; about one in eight fails. Returns entry+id → (task, reason)."""
    kinds = [("kie", ""), ("maxapi", ""), ("acedata", "seedream"), ("acedata", "seedance"),
             ("apipod", "images"), ("apipod", "videos")]
    world: dict[str, tuple[FakeTask, str | None]] = {}
    for n in range(count):
        provider_type, where = kinds[n % len(kinds)]
        task_id = f"{provider_type[:3]}-{where[:4]}-{n:04d}"
        video = where in ("seedance", "videos") or (provider_type in ("kie", "maxapi") and n % 5 == 0)
        failing = [f for f in FAILURES if f[0][:2] == (provider_type, where)]
        if failing and rng.random() < 0.15:
            (_, _, code, message), reason = rng.choice(failing)
            task = FakeTask(provider_type, task_id, ["running", "fail"], fail_code=code, fail_msg=message,
                            where=where)
            world[f"{_entry(provider_type, where)} {task_id}"] = (fake.add(task), reason)
            continue
        files = ([media_bytes("mp4", 40_000, task_id)] if video else
                 [media_bytes("png", 3_000 + n, f"{task_id}/{i}") for i in range(1 + n % 3)])
        if provider_type == "acedata" and where == "seedance":
            files = files[:1]
        steps = ["queued", "running", "success"] if n % 7 == 0 else ["running", "success"]
        task = FakeTask(provider_type, task_id, steps, files, model="sora-2" if video else "seedream-4.5",
                        where=where)
        world[f"{_entry(provider_type, where)} {task_id}"] = (fake.add(task), None)
    return world


def _entry(provider_type: str, where: str) -> str:
    return {"kie": "kie", "maxapi": "maxapi", "apipod": "pod"}.get(provider_type) or where


async def start_daemon(tmp_path: Path, fake: FakeApis, base: str, world: dict[str, tuple[FakeTask, str | None]]
                ) -> DaemonProcess:
    """The daemon on every provider entry, with the whole world already in its inbox."""
    fake.base = base
    (tmp_path / "inbox.txt").write_text("".join(f"{line}\n" for line in world))
    env = dict(os.environ, **{f"TEST_KEY_{name.upper()}": key for name, key in KEYS.items()})
    daemon = DaemonProcess(config_for(tmp_path, base), env, tmp_path / "daemon.log")
    await daemon.start()
    return daemon


def assert_outcomes(archive: Path, world: dict[str, tuple[FakeTask, str | None]]) -> None:
    for line, (task, reason) in world.items():
        entry = line.split()[0]
        if reason is None:
            for index, content in enumerate(task.files):
                [path] = [p for p in archive.glob(f"{entry}/*/*/*/{task.task_id}/{index:02d}.*")
                          if not p.name.endswith(".json")]
                assert path.read_bytes() == content, path
                assert json.loads(Path(f"{path}.json").read_text())["provider_type"] == task.provider_type
        else:
            record = json.loads((archive / "_failed" / entry / f"{task.task_id}.json").read_text())
            assert record["reason"] == reason, (line, record)


async def test_mixed_inbox_with_rate_limits_batches_and_a_429(tmp_path: Path) -> None:
    seed = int(os.environ.get("ARCHIVER_E2E_SEED") or random.randrange(2**32))
    print(f"mixed inbox seed {seed} (replay with ARCHIVER_E2E_SEED={seed})")
    fake = FakeApis(*KEYS.values())
    world = mixed_world(fake, random.Random(seed), 200)
    async with serve(fake.app()) as base:
        daemon = await start_daemon(tmp_path, fake, base, world)
        await asyncio.sleep(1)  # maxapi is still busy: the 429 below comes mid-run
        fake.throttle["maxapi"] = 2
        # About 10 s: apipod's 67 tasks at 15 requests a second.
        status = await daemon.wait_for(lambda s: s["counts"]["archived"] + s["counts"]["failed"] == len(world),
                                       timeout=75)
        assert await daemon.stop() == 0
    failed = sum(1 for _, reason in world.values() if reason)
    assert status["counts"]["archived"] == len(world) - failed and status["counts"]["failed"] == failed
    assert_outcomes(tmp_path / "archive", world)

    for entry, rps in RPS.items():
        times = [r.at for r in fake.requests_for(entry)]
        assert times, entry
        assert over_rate(times, rps) is None, f"{entry} went over {rps} requests a second: {over_rate(times, rps)}"
    batches = [r.body for r in fake.requests if r.entry.startswith("acedata")]
    assert any(b["action"] == "retrieve_batch" and len(b["ids"]) > 1 for b in batches)
    assert all(b["action"] != "retrieve_batch" or b["limit"] == len(b["ids"]) <= 50 for b in batches)
    check_retry_after(fake.requests)
    log = (tmp_path / "daemon.log").read_text()
    assert not [key for key in KEYS.values() if key in log]


def check_retry_after(requests: list[Request]) -> None:
    """After the 429 with Retry-After: 2, maxapi was left alone for 2 s; the others were not."""
    [throttled] = [r for r in requests if r.status == 429]
    during = [r for r in requests if throttled.at + 0.1 < r.at < throttled.at + 2.0]
    assert not [r for r in during if r.entry == "maxapi"], "maxapi was asked again within Retry-After"
    assert [r for r in during if r.entry == "kie"], "the 429 slowed other providers"
    assert [r for r in requests if r.entry == "maxapi" and r.at > throttled.at + 2.0]


async def test_a_provider_down_for_a_while_recovers_and_slows_no_other(tmp_path: Path) -> None:
    """apipod answers 500, then garbage, for 11 s: its backoff (1, 2, 4, 8 s plus jitter) sends its
    2nd or 3rd failed request into the garbage and a later one, 10-20 s in, past it."""
    fake = FakeApis(*KEYS.values())
    world: dict[str, tuple[FakeTask, str | None]] = {}
    for n in range(12):
        for provider_type, entry in (("kie", "kie"), ("apipod", "pod")):
            task = FakeTask(provider_type, f"{entry}-{n}", ["running", "success"],
                            [media_bytes("png", 2_000, f"{entry}{n}")], where="images" if entry == "pod" else "")
            world[f"{entry} {task.task_id}"] = (fake.add(task), None)
    loop = asyncio.get_running_loop()
    start = loop.time()
    garbage_from, outage_end = start + 3, start + 11
    fake.outage["apipod"] = (garbage_from, "500")
    loop.call_at(garbage_from, fake.outage.__setitem__, "apipod", (outage_end, "garbage"))
    async with serve(fake.app()) as base:
        daemon = await start_daemon(tmp_path, fake, base, world)
        kie_done = await daemon.wait_for(lambda s: s["counts"]["archived"] == 12, timeout=20)
        assert loop.time() - start < 25, "kie was slowed by apipod's outage"
        assert kie_done["health"]["pod"]["state"] == "failing"
        status = await daemon.wait_for(lambda s: s["counts"]["archived"] == 24, timeout=start + 60 - loop.time())
        assert await daemon.stop() == 0
    assert status["counts"]["failed"] == 0
    assert status["health"]["pod"]["state"] == "ok"
    assert_outcomes(tmp_path / "archive", world)
    outage = [r for r in fake.requests_for("apipod") if r.at < outage_end]
    assert 3 <= len(outage) <= 40, f"{len(outage)} requests during the outage: no backoff?"
    assert [r for r in outage if r.at >= garbage_from], "no request saw the garbage"
    log = (tmp_path / "daemon.log").read_text()
    assert "provider=pod" in log and "not JSON" in log
