"""Which due polls go first when a provider's rate limit cannot serve them all (README: Scheduling).

Young tasks (still in the early steps of their poll schedule) are the likeliest to finish
and their result URLs are the freshest, so they go first; but while older tasks wait, one
poll in OLD_SHARE goes to the oldest-due of them, so none starves. Within each class the
task due longest ago goes first, which stretches every old task's interval by the same
factor when the backlog outgrows the limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

OLD_SHARE = 4  # while both classes wait, every 4th poll goes to an old task


def young_window(intervals: Sequence[tuple[float, float]]) -> float:
    """A task is young while its poll schedule is in any step but the open-ended last one."""
    ends = [until for _, until in intervals if until != float("inf")]
    return ends[-1] if ends else 0.0


@dataclass
class Policy:
    """Interleaves young and old due tasks; `turn` counts picks so the old share holds over time."""

    turn: int = 0

    def pick(self, young: Sequence[T], old: Sequence[T], n: int) -> list[T]:
        """Up to `n` of the due tasks, each list already ordered by due time."""
        y, o, picked = list(young), list(old), list[T]()
        while len(picked) < n and (y or o):
            self.turn += 1
            old_turn = self.turn % OLD_SHARE == 0
            picked.append(o.pop(0) if o and (old_turn or not y) else y.pop(0))
        return picked
