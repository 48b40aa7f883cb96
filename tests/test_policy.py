"""The scheduling policy under a rate limit (archiver/policy.py), on a simulated clock.

The simulation drives the real poll queue of each state backend (`due`, `polled`) and the
real Policy and schedule: one poll per 1/rate simulated seconds, never more, which is what
the token bucket grants. No wall-clock timing is asserted.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path


from archiver.config import load_config
from archiver.model import TaskRef
from archiver.pacing import poll_delay
from archiver.poller import AGE_EVERY, EntryPoller
from archiver.policy import OLD_SHARE, Policy, young_window
from archiver.providers.kie import Kie
from archiver.state import Position, State, open_state
from tests.support.daemon import base_config, write_config
from tests.support.postgres import StateBackend, set_first_seen

SCHEDULE = ((3.0, 30.0), (10.0, 120.0), (30.0, 900.0), (60.0, float("inf")))  # the default poll_intervals
RATE = 10.0  # kie's requests per second


def test_young_window_is_every_step_but_the_last() -> None:
    assert young_window(SCHEDULE) == 900.0
    assert young_window(((5.0, float("inf")),)) == 0.0


def test_pick_serves_young_first_and_keeps_the_old_share() -> None:
    policy = Policy()
    young, old = [f"y{i}" for i in range(40)], [f"o{i}" for i in range(40)]
    picked = [policy.pick(young[i:i + 1], old[:1], 1)[0] for i in range(40)]
    assert picked.count("o0") == 40 // OLD_SHARE  # every OLD_SHARE-th turn, whatever the young queue holds
    assert policy.pick(["y"], [], 1) == ["y"] and policy.pick([], ["o"], 1) == ["o"]
    assert Policy().pick(["y1", "y2"], ["o1", "o2"], 4) == ["y1", "y2", "y3"][:2] + ["o1", "o2"]


async def _state(tmp_path: Path, backend: StateBackend) -> State:
    config = load_config(write_config(tmp_path / "config.yaml", base_config(tmp_path, {
        "kie": {"type": "kie", "api_key": "k", "base_url": "http://127.0.0.1:9"}}, **backend.config())))
    state = await open_state(config, daemon=True)
    await state.join("test-host", 1)
    return state


async def test_a_new_task_keeps_its_schedule_behind_a_backlog_and_no_old_task_starves(
        tmp_path: Path, state_backend: StateBackend) -> None:
    """1200 old tasks want 20 polls a second and a new one 1 every 3 s: twice what 10 a second can serve."""
    state = await _state(tmp_path, state_backend)
    rng = random.Random(7)
    try:
        olds = [f"old-{i}" for i in range(1200)]
        await state.ingest([TaskRef("kie", task_id) for task_id in olds], [], Position(0, 0, 0, 0))
        await state.claim(0, ["kie"])
        clock = time.time()
        await set_first_seen(state, "kie", olds, clock - 3600.0, lane=1)  # an hour old: in the 60 s step
        policy, young = Policy(), young_window(SCHEDULE)
        polled_at: dict[str, list[float]] = {}
        new_at = clock + 100.0
        added = False
        for _ in range(int(500 * RATE)):  # 500 simulated seconds, one poll per token
            clock += 1 / RATE
            if not added and clock >= new_at:
                await state.ingest([TaskRef("kie", "new")], [], Position(0, 0, 1, 1))
                await set_first_seen(state, "kie", ["new"], clock, lane=0)
                await state.claim(0, ["kie"])
                added = True
            y, o = await state.due("kie", clock, 1, ())
            [task] = policy.pick(y, o, 1) or [None]
            if task is None:
                continue
            polled_at.setdefault(task.task_id, []).append(clock)
            at = clock + poll_delay(SCHEDULE, clock - task.first_seen_at, rng)
            await state.polled(task.pk, next_poll_at=at, lane=0 if at - task.first_seen_at < young else 1)
        gaps = [b - a for a, b in zip(polled_at["new"], polled_at["new"][1:], strict=False)]
        assert polled_at["new"][0] - new_at <= 1.0, "the new task waited behind the backlog"
        assert max(gaps[:8]) <= 3.0 * 1.1 + 1 / RATE, "the new task was not polled every 3 s in its first 30 s"
        rounds = [times for name, times in polled_at.items() if name != "new"]
        assert len(rounds) == 1200 and min(map(len, rounds)) >= 2, "an old task was starved"
        # Old tasks get at least 1 in OLD_SHARE of 10 polls a second: a round of 1200 takes at most 480 s.
        worst = max(b - a for times in rounds for a, b in zip(times, times[1:], strict=False))
        assert worst <= 1200 / (RATE / OLD_SHARE) + 1.0, f"an old task waited {worst:.0f}s between polls"
    finally:
        await state.close()


async def test_a_backlog_never_polled_ages_into_the_old_lane(tmp_path: Path, state_backend: StateBackend) -> None:
    """10,000 tasks filed young at intake and never polled (the rate cannot reach them) are old once
    past the young window; `age`, which the poller runs every AGE_EVERY, moves them, so a task added
    later goes first instead of behind all of them."""
    state = await _state(tmp_path, state_backend)
    try:
        backlog = [f"b-{i}" for i in range(10_000)]
        await state.ingest([TaskRef("kie", task_id) for task_id in backlog], [], Position(0, 0, 0, 0))
        await state.ingest([TaskRef("kie", "new")], [], Position(0, 0, 1, 1))
        while await state.claim(0, ["kie"]):
            pass  # in batches
        clock = time.time()
        young = young_window(SCHEDULE)
        await set_first_seen(state, "kie", backlog, clock - young - 60.0, lane=0)  # 16 min old, never polled
        await set_first_seen(state, "kie", ["new"], clock - 5.0, lane=0)
        y, _ = await state.due("kie", clock, 8, ())
        assert "new" not in [t.task_id for t in y], "the scene: the new task is behind the backlog"
        assert await state.age("kie", clock - young) == 10_000
        assert await state.age("kie", clock - young) == 0
        y, o = await state.due("kie", clock, 8, ())
        assert [t.task_id for t in y] == ["new"] and len(o) == 8
        assert Policy().pick(y, o, 1)[0].task_id == "new"
    finally:
        await state.close()


async def test_the_poller_looks_for_aged_tasks_less_often_while_it_finds_none(
        tmp_path: Path, state_backend: StateBackend) -> None:
    """A look for never-polled tasks past the young window reads the whole young lane: one that moves
    nothing doubles the wait before the next (AGE_EVERY, 2 × AGE_EVERY, …); new work brings it back."""
    config = load_config(write_config(tmp_path / "config.yaml", base_config(tmp_path, {
        "kie": {"type": "kie", "api_key": "k", "base_url": "http://127.0.0.1:9",
                "poll_intervals": ["1s until 2s", "5s"]}}, **state_backend.config())))
    state = await open_state(config, daemon=True)
    await state.join("test-host", 1)
    entry = config.providers["kie"]
    poller = EntryPoller(entry, Kie(entry), None, state, lambda t, a: None, None, random.Random(1))  # type: ignore[arg-type]
    try:
        await state.ingest([TaskRef("kie", f"b-{i}") for i in range(20)], [], Position(0, 0, 0, 0))
        await state.claim(0, ["kie"])
        assert len(await poller._take_due()) == 1  # looked: nothing past the 2 s young window yet
        await asyncio.sleep(AGE_EVERY + 0.5)  # the backlog is past it now
        poller.ready.clear()
        await poller._take_due()
        young, old = await state.due("kie", time.time(), 100, ())
        assert (len(young), old) == (20, []), "looked again before twice AGE_EVERY"
        poller.renew()  # a claim: new work
        await poller._take_due()
        young, old = await state.due("kie", time.time(), 100, ())
        assert (young, len(old)) == ([], 20)
    finally:
        await state.close()
