"""Reading the day back out of a key, for any layout that holds a full date."""

from __future__ import annotations

import pytest

from archiver.archive_format.days import Day, day_of_key, key_pattern


@pytest.mark.parametrize(("layout", "key", "day"), [
    ("{provider}/{date:%Y/%m/%d}/{task_id}/{index:02d}.{ext}", "kie/2026/11/22/a.b:c-1/00.png", "2026-11-22"),
    ("{date:%F}/{provider}-{task_id}-{index}.{ext}", "2026-01-02/kie-x-1.png", "2026-01-02"),
    ("{media}/{date:%Y}/{date:%m}/{date:%d}/{model}/{task_id}_{index}.{ext}", "image/2025/02/03/m-1/t_0.png",
     "2025-02-03"),
    ("{date:%Y%m%d-%H}/{task_id}/{index}.{ext}", "20260304-17/t/0.png", "2026-03-04"),
])
def test_day_from_key(layout: str, key: str, day: str) -> None:
    assert day_of_key(key_pattern(layout), key) == day


@pytest.mark.parametrize("layout", ["{provider}/{task_id}/{index}.{ext}", "{date:%Y/%m}/{task_id}/{index}.{ext}"])
def test_layout_without_a_full_date(layout: str) -> None:
    assert key_pattern(layout) is None
    assert day_of_key(key_pattern(layout), "kie/2026/11/t/0.png") is None


def test_key_of_another_layout() -> None:
    assert day_of_key(key_pattern("{provider}/{date:%Y/%m/%d}/{task_id}/{index}.{ext}"), "_failed/kie/t.json") is None


def test_day_bytes_do_not_depend_on_order() -> None:
    a = {"key": "k/1.png", "archived_at": "2026-01-01T00:00:01.000Z", "provider": "kie", "task_id": "1", "bytes": 5}
    b = a | {"key": "k/2.png", "archived_at": "2026-01-01T00:00:02.000Z", "task_id": "2"}
    f = {"record": "_failed/kie/3.json", "provider": "kie", "task_id": "3"}
    assert Day("2026-01-01", [a, b], [f]).encode() == Day("2026-01-01", [b, a], [f]).encode()
    assert Day("2026-01-01", [a, b], [f]).summary() == {"date": "2026-01-01", "tasks": 2, "assets": 2, "bytes": 10,
                                                        "failed": 1}
