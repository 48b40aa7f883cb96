"""The scheduling policy under a rate limit (archiver/policy.py), on a simulated clock.

The simulation drives the real poll queue of each state backend (`due`, `polled`) and the
real Policy and schedule: one poll per 1/rate simulated seconds, never more, which is what
the token bucket grants. No wall-clock timing is asserted.
"""

from __future__ import annotations

import random
import time
from pathlib import Path


from archiver.config import load_config
from archiver.model import TaskState
from archiver.model import TaskRef
from archiver.pacing import poll_delay
from archiver.poller import AGE_EVERY
from archiver.policy import OLD_SHARE, Policy, lane_at, step_ends
from archiver.state import Position, StateStore, open_state
from tests.support.daemon import base_config, write_config
from tests.support.postgres import StateBackend, set_first_seen

SCHEDULE = ((3.0, 30.0), (10.0, 120.0), (30.0, 900.0), (60.0, float("inf")))  # the default poll_intervals
RATE = 10.0  # kie's requests per second


ENDS = step_ends(SCHEDULE)
LANES = len(ENDS) + 1


def test_a_tasks_lane_is_the_step_of_its_schedule() -> None:
    assert ENDS == (30.0, 120.0, 900.0)
    assert [lane_at(ENDS, age) for age in (0.0, 29.9, 30.0, 119.0, 600.0, 900.0, 86_400.0)] == [0, 0, 1, 1, 2, 3, 3]
    assert step_ends(((5.0, float("inf")),)) == () and lane_at((), 10.0) == 0  # one step: every task is old


def test_pick_serves_the_earliest_step_first_and_keeps_the_old_share() -> None:
    policy = Policy()
    young, old = [f"y{i}" for i in range(40)], [f"o{i}" for i in range(40)]
    picked = [policy.pick([[], young[i:i + 1], old[:1]], 1)[0] for i in range(40)]
    assert picked.count("o0") == 40 // OLD_SHARE  # every OLD_SHARE-th turn, whatever the young lanes hold
    assert policy.pick([["y"], []], 1) == ["y"] and policy.pick([[], ["o"]], 1) == ["o"]
    assert Policy().pick([["a1"], ["b1", "b2"], ["o1", "o2"]], 5) == ["a1", "b1", "b2", "o1", "o2"]
    assert Policy().pick([["b1"], ["a1"], []], 2) == ["b1", "a1"]


async def _state(tmp_path: Path, backend: StateBackend) -> StateStore:
    config = load_config(write_config(tmp_path / "config.yaml", base_config(tmp_path, {
        "kie": {"type": "kie", "api_key": "k", "base_url": "http://127.0.0.1:9"}}, **backend.config())))
    state = await open_state(config, daemon=True)
    await state.join("test-host", 1)
    return state


async def _simulate(state: StateStore, clock: float, seconds: float,
                    arrivals: dict[float, list[str]]) -> dict[str, list[float]]:
    """Poll as the poller does, one poll per token for `seconds` simulated seconds, from the real
    queue: the tasks of `arrivals` come at their time, and every AGE_EVERY the waiting tasks move on
    to the lane of their age. Returns when each task was polled."""
    rng, policy = random.Random(7), Policy()
    coming, polled_at = sorted(arrivals.items()), dict[str, list[float]]()
    aged, end, line = clock, clock + seconds, 1
    while clock < end:
        clock += 1 / RATE
        while coming and clock >= coming[0][0]:
            ids = coming.pop(0)[1]
            await state.ingest([TaskRef("kie", task_id) for task_id in ids], [], Position(0, 0, line, line))
            await set_first_seen(state, "kie", ids, clock, lane=0)
            while await state.claim(0, ["kie"]):
                line += 1  # in batches
        if clock - aged >= AGE_EVERY:
            aged = clock
            await state.age("kie", clock, ENDS)
        [task] = policy.pick(await state.due("kie", clock, 1, (), LANES), 1) or [None]
        if task is None:
            continue
        polled_at.setdefault(task.task_id, []).append(clock)
        at = clock + poll_delay(SCHEDULE, clock - task.first_seen_at, rng)
        await state.polled(task.pk, next_poll_at=at, lane=lane_at(ENDS, at - task.first_seen_at))
    return polled_at


def _gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in zip(times, times[1:], strict=False)]


async def test_a_new_task_keeps_its_schedule_behind_an_old_backlog_and_no_old_task_starves(
        tmp_path: Path, state_backend: StateBackend) -> None:
    """1200 old tasks want 20 polls a second and a new one 1 every 3 s: twice what 10 a second can serve."""
    state = await _state(tmp_path, state_backend)
    try:
        olds = [f"old-{i}" for i in range(1200)]
        await state.ingest([TaskRef("kie", task_id) for task_id in olds], [], Position(0, 0, 0, 0))
        await state.claim(0, ["kie"])
        clock = time.time()
        await set_first_seen(state, "kie", olds, clock - 3600.0, lane=LANES - 1)  # an hour old: in the 60 s step
        polled_at = await _simulate(state, clock, 500.0, {clock + 100.0: ["new"]})
        assert polled_at["new"][0] - (clock + 100.0) <= 1.0, "the new task waited behind the backlog"
        assert max(_gaps(polled_at["new"])[:8]) <= 3.0 * 1.1 + 1 / RATE, "the new task missed its 3 s steps"
        rounds = [times for name, times in polled_at.items() if name != "new"]
        assert len(rounds) == 1200 and min(map(len, rounds)) >= 2, "an old task was starved"
        # Old tasks get at least 1 in OLD_SHARE of 10 polls a second: a round of 1200 takes at most 480 s.
        worst = max(gap for times in rounds for gap in _gaps(times))
        assert worst <= 1200 / (RATE / OLD_SHARE) + 1.0, f"an old task waited {worst:.0f}s between polls"
    finally:
        await state.close()


async def test_a_new_task_goes_before_a_younger_backlog_past_its_first_step(
        tmp_path: Path, state_backend: StateBackend) -> None:
    """1500 tasks appended at once, young but past their first 30 s when a new one comes: it is polled
    at once and every 3 s, not after the 1000 of them not yet asked; and every one of them is asked."""
    state = await _state(tmp_path, state_backend)
    try:
        clock = time.time()
        backlog = [f"b-{i}" for i in range(1500)]
        polled_at = await _simulate(state, clock, 300.0, {clock: backlog, clock + 65.0: ["new"]})
        assert polled_at["new"][0] - (clock + 65.0) <= 1.0, "the new task waited behind the young backlog"
        assert max(_gaps(polled_at["new"])[:8]) <= 3.0 * 1.1 + 1 / RATE, "the new task missed its 3 s steps"
        assert all(task_id in polled_at for task_id in backlog), "a task of the backlog was never asked"
    finally:
        await state.close()


async def test_waiting_tasks_age_into_the_lane_of_their_step(tmp_path: Path, state_backend: StateBackend) -> None:
    """10,000 tasks filed in lane 0 at intake and never polled (the rate cannot reach them) move on to
    the old lane once past the young steps; `age`, which the poller runs every AGE_EVERY, moves them,
    so a task added later goes first instead of behind all of them. A lane a longer schedule left
    behind counts as old."""
    state = await _state(tmp_path, state_backend)
    try:
        backlog = [f"b-{i}" for i in range(10_000)]
        await state.ingest([TaskRef("kie", task_id) for task_id in [*backlog, "new", "middle", "stray"]], [],
                           Position(0, 0, 0, 0))
        while await state.claim(0, ["kie"]):
            pass  # in batches
        clock = time.time()
        await set_first_seen(state, "kie", backlog, clock - ENDS[-1] - 60.0, lane=0)  # 16 min old, never polled
        await set_first_seen(state, "kie", ["new"], clock - 5.0, lane=0)
        await set_first_seen(state, "kie", ["middle"], clock - 60.0, lane=0)
        await set_first_seen(state, "kie", ["stray"], clock - 5.0, lane=LANES + 2)
        [first, *_] = await state.due("kie", clock, 8, (), LANES)
        assert "new" not in [t.task_id for t in first], "the scene: the new task is behind the backlog"
        assert await state.age("kie", clock, ENDS) == 10_002
        assert await state.age("kie", clock, ENDS) == 0
        lanes = await state.due("kie", clock, 8, (), LANES)
        assert [[t.task_id for t in lane] for lane in lanes[:-1]] == [["new"], ["middle"], []]
        assert len(lanes[-1]) == 8
        everything = await state.due("kie", clock, 20_000, (), LANES)
        assert "stray" in [t.task_id for t in everything[-1]]
        assert Policy().pick(lanes, 1)[0].task_id == "new"
    finally:
        await state.close()


async def test_a_task_a_callback_hinted_goes_before_an_old_backlog(tmp_path: Path, state_backend: StateBackend) -> None:
    """An old task whose callback came (poll_soon) is asked next, not after the old tasks due longer."""
    state = await _state(tmp_path, state_backend)
    try:
        olds = [f"old-{i}" for i in range(1000)]
        await state.ingest([TaskRef("kie", task_id) for task_id in olds], [], Position(0, 0, 0, 0))
        await state.claim(0, ["kie"])
        clock = time.time()
        await set_first_seen(state, "kie", olds, clock - 3600.0, lane=LANES - 1)
        [hinted] = [t for t in await state.tasks_in([TaskState.QUEUED]) if t.task_id == "old-999"]
        assert await state.poll_soon(hinted.pk)
        assert Policy().pick(await state.due("kie", time.time(), 8, (), LANES), 1)[0].task_id == "old-999"
    finally:
        await state.close()

