"""Which due polls go first when a provider's rate limit cannot serve them all (docs/design.md, scheduling).

Each waiting task is filed in the lane of its poll schedule's step: lane 0 for the first step
(with the default intervals, its first 30 s), lane 1 for the second, and so on; the last,
open-ended step is the old lane. Young tasks are the likeliest to finish and their result
URLs are the freshest, so the earliest young lane with a due task goes first; but while old
tasks wait, one poll in OLD_SHARE goes to the oldest-due of them, so none starves. Within a
lane the task due longest ago goes first, which stretches every task's interval by the same
factor when the backlog outgrows the limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

OLD_SHARE = 4  # while young and old tasks wait, every 4th poll goes to an old one


def step_ends(intervals: Sequence[tuple[float, float]]) -> tuple[float, ...]:
    """Where each step of a poll schedule ends, but the open-ended last: lane k holds step k."""
    return tuple(until for _, until in intervals if until != float("inf"))


def lane_at(ends: Sequence[float], age: float) -> int:
    """The lane of a task `age` seconds after it was first seen: the schedule step it is in."""
    return sum(age >= end for end in ends)


@dataclass
class Policy:
    """Picks from the lanes; `turn` counts picks so the old share holds over time."""

    turn: int = 0

    def pick(self, lanes: Sequence[Sequence[T]], n: int) -> list[T]:
        """Up to `n` of the due tasks; `lanes` are young ones by step, then the old, each by due time."""
        *young, old = [list(lane) for lane in lanes]
        picked = list[T]()
        while len(picked) < n and (old or any(young)):
            self.turn += 1
            first = next((lane for lane in young if lane), old)
            picked.append((old if old and self.turn % OLD_SHARE == 0 else first).pop(0))
        return picked
