"""What both backends do alike: the StateStore calls whose SQL is the same, and the error boundary.

A backend supplies three primitives (`_fetch`, `_fetch_one`, `_apply`) that run queries.py's
`?`-marked SQL; the calls here are written once on top of them.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from archiver.errors import LeaseLost, StateUnavailable
from archiver.model import TaskState
from archiver.state import queries as q
from archiver.state.records import Asset, Polled, Task, asset_from_row, task_from_row

Step = tuple[str, Sequence[Any]]  # one statement of a write and its parameters
C = TypeVar("C", bound=type)


def errors_at_boundary(errors: tuple[type[Exception], ...], say: Callable[[Exception], str]) -> Callable[[C], C]:
    """Make each public coroutine of a backend raise StateUnavailable(say(e)) for a driver error `e`.

    Callers then see archiver's errors only (errors.py); tests/state/ checks no call is left out.
    """
    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        async def mapped(*args: Any, **kwargs: Any) -> Any:
            try:
                return await fn(*args, **kwargs)
            except errors as e:
                raise StateUnavailable(say(e)) from e

        mapped.at_boundary = True  # type: ignore[attr-defined]
        return mapped

    def decorate(cls: C) -> C:
        for name in dir(cls):
            fn = inspect.getattr_static(cls, name)
            if not name.startswith("_") and inspect.iscoroutinefunction(fn):
                setattr(cls, name, wrap(fn))
        return cls

    return decorate


def first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


class CommonStore:
    """The StateStore calls written once for both backends."""

    me: str

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        raise NotImplementedError

    async def _fetch_one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        raise NotImplementedError

    async def _apply(self, steps: Iterable[Step]) -> None:
        """Run the statements in one transaction."""
        raise NotImplementedError

    async def polled_many(self, polls: Sequence[Polled]) -> set[int]:
        raise NotImplementedError

    # --- reads --------------------------------------------------------------------------

    async def task(self, pk: int) -> Task:
        return task_from_row(await self._fetch_one(q.TASK, (pk,)))

    async def find(self, provider: str, task_id: str) -> Task | None:
        row = await self._fetch_one(q.FIND, (provider, task_id))
        return task_from_row(row) if row else None

    async def tasks_in(self, states: Iterable[TaskState]) -> list[Task]:
        values = [s.value for s in states]
        return [task_from_row(r) for r in await self._fetch(q.TASKS_IN.format(marks=q.marks(values)), values)]

    async def asset_count(self, pk: int) -> int:
        row = await self._fetch_one(q.ASSET_COUNT, (pk,))
        return int(row["n"]) if row else 0

    async def assets(self, pk: int) -> list[Asset]:
        return [asset_from_row(r) for r in await self._fetch(q.ASSETS, (pk,))]

    async def asset(self, pk: int, idx: int) -> Asset:
        return asset_from_row(await self._fetch_one(q.ASSET, (pk, idx)))

    async def asset_by_key(self, key: str) -> Asset | None:
        row = await self._fetch_one(q.ASSET_BY_KEY, (key,))
        return asset_from_row(row) if row else None

    async def archived_keys(self) -> list[tuple[str, str, float | None, str]]:
        """(provider, task_id, success_seen_at, key) of every archived asset, for `verify`."""
        rows = await self._fetch(q.ARCHIVED_KEYS)
        return [(r["provider"], r["task_id"], r["success_seen_at"], r["key"]) for r in rows]

    async def records_due(self, before: float, limit: int = 100) -> list[Task]:
        """Failed tasks, ended before `before`, whose _failed record could not be written yet."""
        return [task_from_row(r) for r in await self._fetch(q.RECORDS_DUE, (before, limit))]

    async def kept_counts(self) -> dict[str, int]:
        """Tasks per state from the trigger-kept table: constant cost at any number of tasks."""
        found = {r["state"]: int(r["n"]) for r in await self._fetch(q.KEPT_COUNTS)}
        return {s.value: found.get(s.value, 0) for s in TaskState}

    async def recent(self, states: Sequence[TaskState], limit: int, *, by: str = "updated_at") -> list[Task]:
        """The newest tasks in `states`, by `updated_at` (last change) or `first_seen_at`."""
        assert by in ("updated_at", "first_seen_at")
        values = [s.value for s in states]
        rows = await self._fetch(q.RECENT.format(marks=q.marks(values), by=by), (*values, limit))
        return [task_from_row(r) for r in rows]

    async def recent_rejects(self, limit: int) -> list[dict[str, Any]]:
        return [dict(r) for r in await self._fetch(q.RECENT_REJECTS, (limit,))]

    # --- writes -------------------------------------------------------------------------

    async def polled(self, pk: int, *, error: str | None = None, unknown_since: float | None = None,
                     running_for: float | None = None, next_poll_at: float = 0.0, lane: int = 0,
                     answered_at: float | None = None, empty: tuple[int, float | None] = (0, None)) -> None:
        """Count one poll that left the task running (see polled_many); LeaseLost if another daemon holds it."""
        if await self.polled_many([Polled(pk, time.time(), next_poll_at, lane, error, unknown_since, running_for,
                                          answered_at, empty)]):
            raise LeaseLost(f"task #{pk} is now held by another daemon, or another daemon ended it")

    async def record_written(self, pk: int) -> None:
        await self._apply([(q.RECORD_WRITTEN, (False, pk))])

    async def set_url(self, pk: int, idx: int, url: str) -> None:
        await self._apply([(q.SET_URL, (url, pk, idx))])

    async def set_media(self, key: str, *, width: int | None = None, height: int | None = None,
                        thumb: str | None = None, placeholder: str | None = None) -> None:
        """The archived asset at `key`: its pixel size, its thumbnail's key and placeholder (None: unchanged)."""
        await self._apply([(q.SET_MEDIA, (width, height, thumb, placeholder, key))])

    async def missing_thumbs(self, limit: int) -> list[tuple[str, str]]:
        """(key, content_type) of archived images and videos with no thumbnail and none given up on, newest first."""
        return [(r["key"], r["content_type"]) for r in await self._fetch(q.MISSING_THUMBS, (limit,))]

    async def thumb_failed(self, key: str) -> None:
        """No thumbnail can be made of the asset at `key`: the daemon stops trying (`index --thumbnails` may)."""
        await self._apply([(q.THUMB_FAILED, (time.time(), key))])

    async def asset_error(self, pk: int, idx: int, error: str) -> None:
        await self._apply([(q.ASSET_ERROR, (error, pk, idx))])

    async def requeue_asset(self, pk: int, idx: int, note: str) -> None:
        """Put one archived asset back to work under its stored key (verify --fix); the task is polled again."""
        now = time.time()
        await self._apply([(q.ASSET_PENDING, (pk, idx)),
                           (q.REQUEUE.format(also=", running_for = 0"), (now, now, now, pk)),
                           history(pk, TaskState.QUEUED, note=note)])

    async def retry(self, pks: Sequence[int]) -> int:
        """Put ended tasks back to the start; their archived assets are kept, not redone."""
        now = time.time()
        await self._apply(step for pk in pks for step in (
            (q.REQUEUE.format(also=""), (now, now, now, pk)), (q.DROP_UNARCHIVED, (pk,)),
            history(pk, TaskState.QUEUED, note="retry")))
        return len(pks)

    async def probe_write(self) -> None:
        """One tiny write transaction; raises if the DB cannot be written."""
        await self.set_health("state_db", "ok")

    async def set_health(self, name: str, state: str, message: str | None = None) -> None:
        raise NotImplementedError


def history(pk: int, state: TaskState, reason: str | None = None, note: str | None = None) -> Step:
    return q.ADD_HISTORY, (pk, time.time(), state.value, reason, note)
