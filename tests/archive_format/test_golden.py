"""The on-disk format, byte for byte: a sidecar, a _failed record, a day file and days.json from fixed inputs.

The files in golden/ were rendered by the code before the format moved into archive_format/, and
rendered again, on purpose, for `archiver.asset/2` and `archiver.day/2` (width, height, embedded;
thumb and placeholder). A change here changes every archive's files, so it needs a new schema name.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from archiver import __version__
from archiver.archive_format.days import DAY_SCHEMA, INDEX_SCHEMA, Day, asset_entry, encode_days, failed_entry
from archiver.archive_format.keys import KeyFields, failed_key, render_key
from archiver.archive_format.sidecar import (ASSET_SCHEMA, FAILED_SCHEMA, asset_sidecar, failed_record,
                                             read_asset_entry, read_failed_entry, read_recorded)
from archiver.model import TaskState
from archiver.state import Asset, Task

GOLDEN = Path(__file__).parent / "golden"
LAYOUT = "{provider}/{date:%Y/%m/%d}/{task_id}/{index:02d}.{ext}"
SEEN = 1788307200.0  # 2026-09-02T00:00:00Z


@dataclass(frozen=True)
class Entry:
    """The provider's config entry, as far as the format reads it."""

    type: str


ENTRY = Entry("kie")


def task(failed: bool = False) -> Task:
    return Task(
        pk=7, provider="kie", task_id="t-1", labels={"project": "fjörd ✓"},
        state=TaskState.FAILED if failed else TaskState.ARCHIVED, first_seen_at=SEEN - 60.25, polls=3,
        unknown_since=None, success_seen_at=None if failed else SEEN + 30,
        reason="content_moderation" if failed else None, code="422" if failed else None,
        message="prompt flagged — by moderation" if failed else None, media="image", model="seedream-4.5",
        prompt="a red fox in deep snow, «studio»",
        input={"prompt": "a red fox", "callBackUrl": "https://hooks.example/cb?token=S1",
               "image": "data:image/png;base64," + "A" * 3000},
        response={"code": 200, "data": {"taskId": "t-1", "param": json.dumps({"apiKey": "S2", "n": 1}),
                                        "resultUrls": ["https://cdn.example/a/0.png?X-Amz-Signature=S3"]}},
        task_created_at="2026-09-01T23:58:00Z", task_completed_at="2026-09-02T00:00:29Z", updated_at=SEEN + 40)


def key() -> str:
    fields = KeyFields(provider="kie", provider_type="kie", task_id="t-1", index=0, count=2, ext="png",
                       media="image", model="seedream-4.5", date=dt.datetime.fromtimestamp(SEEN + 30, dt.UTC))
    return render_key(LAYOUT, fields)


def asset(idx: int = 0, state: str = "archived") -> Asset:
    return Asset(7, idx, "https://user:pw@cdn.example/a/0.png?X-Amz-Signature=S3#f", key() if idx == 0 else None,
                 state, 1234, "ab" * 32, "image/png", SEEN + 31.5, SEEN + 32.125, role="first_frame")


def sidecar() -> bytes:
    return asset_sidecar(task(), ENTRY, asset(), key=key(), count=2, media="image", content_type="image/png",
                         size=1234, sha256="ab" * 32, downloaded_at=SEEN + 31.5, archived_at=SEEN + 32.125,
                         probe={"width": 2048, "height": 1536, "duration_s": None,
                                "embedded": {"text": {"parameters": "a red fox\nSteps: 30, Sampler: Euler a"},
                                             "digital_source_type": "http://cv.iptc.org/newscodes/digitalsourcetype/"
                                                                    "trainedAlgorithmicMedia"}})


def record() -> bytes:
    return failed_record(task(failed=True), ENTRY, [asset(0), asset(1, "pending")], SEEN + 45)


def day() -> bytes:
    d = Day("2026-09-02")
    for idx, at in ((0, "2026-09-02T00:00:32Z"), (1, "2026-09-02T00:00:33Z")):
        d.assets.append(asset_entry(
            key=f"kie/2026/09/02/t-1/0{idx}.png", sidecar=f"kie/2026/09/02/t-1/0{idx}.png.json", provider="kie",
            provider_type="kie", task_id="t-1", index=idx, count=2, media="image", model="seedream-4.5",
            prompt="a red fox in deep snow, «studio»", labels={"project": "fjörd ✓"}, content_type="image/png",
            bytes=1234 + idx, sha256="cd" * 32, archived_at=at,
            thumb=f"_thumbs/kie/2026/09/02/t-1/0{idx}.png.webp" if idx == 0 else None, width=2048 if idx == 0 else None,
            height=1536 if idx == 0 else None, placeholder="#7a5c3e" if idx == 0 else None))
    d.failed.append(failed_entry(provider="kie", task_id="t-2", reason="content_moderation", provider_code="422",
                                 provider_message="flagged", record=failed_key("kie", "t-2"), labels={}))
    return d.encode()


def days() -> bytes:
    summaries = [{"date": "2026-09-01", "tasks": 0, "assets": 0, "bytes": 0, "failed": 0},
                 {"date": "2026-09-02", "tasks": 1, "assets": 2, "bytes": 2469, "failed": 1},
                 {"date": "2026-08-31", "tasks": 3, "assets": 4, "bytes": 10, "failed": 0}]
    return encode_days(summaries, SEEN + 3600.5)


def expected(name: str) -> bytes:
    """The golden file, with this version's number where the archiver's version is recorded."""
    text = (GOLDEN / name).read_text("utf-8")
    return text.replace('"archiver_version": "0.1.0"', f'"archiver_version": {json.dumps(__version__)}').encode()


@pytest.mark.parametrize(("name", "render"), [("asset.json", sidecar), ("failed.json", record), ("day.json", day),
                                              ("days.json", days)])
def test_bytes_as_before(name: str, render: Any) -> None:
    assert render() == expected(name)


def test_schema_names() -> None:
    docs = [json.loads(render()) for render in (sidecar, record, day, days)]
    assert [d["schema"] for d in docs] == [ASSET_SCHEMA, FAILED_SCHEMA, DAY_SCHEMA, INDEX_SCHEMA] == [
        "archiver.asset/2", "archiver.failed/1", "archiver.day/2", "archiver.index/1"]


def test_readers_give_back_what_the_writers_wrote() -> None:
    recorded = read_recorded(sidecar())
    assert (recorded.bytes, recorded.sha256, recorded.provider, recorded.task_id) == (1234, "ab" * 32, "kie", "t-1")
    date, entry = read_asset_entry(key() + ".json", sidecar(), None)
    assert date == "2026-09-02" and entry["key"] == key() and entry["labels"] == {"project": "fjörd ✓"}
    assert (entry["width"], entry["height"], entry["thumb"]) == (2048, 1536, None)
    v1 = json.loads(sidecar())
    for name in ("width", "height", "duration_s", "embedded"):
        del v1[name]
    v1["schema"] = "archiver.asset/1"  # a sidecar written before /2: still read, without a size
    _, old = read_asset_entry(key() + ".json", json.dumps(v1).encode(), None, thumb="_thumbs/x.webp")
    assert (old["width"], old["height"], old["thumb"], old["prompt"]) == (None, None, "_thumbs/x.webp", entry["prompt"])
    date, failed = read_failed_entry(failed_key("kie", "t-1"), record())
    assert (date, failed["reason"], failed["record"]) == ("2026-09-02", "content_moderation", "_failed/kie/t-1.json")
