"""SQL that reads the same on SQLite and PostgreSQL, written once with `?` marks.

The PostgreSQL backend sends it through `pg()`, which turns the marks into psycopg's `%s`.
What differs between the two (leases, the poll queue, batch writes) stays in each backend.
"""

from __future__ import annotations

from collections.abc import Sequence

from archiver.state.records import LIVE

LIVE_SQL = "(" + ", ".join(f"'{s.value}'" for s in LIVE) + ")"

TASK = "SELECT * FROM tasks WHERE id = ?"
FIND = "SELECT * FROM tasks WHERE provider = ? AND task_id = ?"
TASKS_IN = "SELECT * FROM tasks WHERE state IN ({marks}) ORDER BY id"
RECENT = "SELECT * FROM tasks WHERE state IN ({marks}) ORDER BY {by} DESC, id DESC LIMIT ?"
ASSET_COUNT = "SELECT COUNT(*) AS n FROM assets WHERE task = ?"
ASSETS = "SELECT * FROM assets WHERE task = ? ORDER BY idx"
ASSET = "SELECT * FROM assets WHERE task = ? AND idx = ?"
ASSET_BY_KEY = "SELECT * FROM assets WHERE key = ?"
ARCHIVED_KEYS = ("SELECT t.provider, t.task_id, t.success_seen_at, a.key FROM assets a JOIN tasks t ON t.id = a.task"
                 " WHERE a.state = 'archived' AND a.key IS NOT NULL")
# record_due is an INTEGER in SQLite and a BOOLEAN in PostgreSQL: both read it as a truth value.
RECORDS_DUE = "SELECT * FROM tasks WHERE state = 'failed' AND record_due AND updated_at < ? ORDER BY id LIMIT ?"
RECORD_WRITTEN = "UPDATE tasks SET record_due = ? WHERE id = ?"
KEPT_COUNTS = "SELECT state, n FROM task_counts"
RECENT_REJECTS = "SELECT at, line_no, reason, line FROM rejects ORDER BY id DESC LIMIT ?"
ADD_REJECT = "INSERT INTO rejects (at, line_no, reason, line) VALUES (?, ?, ?, ?)"
TRIM_REJECTS = "DELETE FROM rejects WHERE id <= (SELECT MAX(id) FROM rejects) - ?"
ADD_HISTORY = "INSERT INTO history (task, at, state, reason, note) VALUES (?, ?, ?, ?, ?)"

SET_URL = "UPDATE assets SET url = ? WHERE task = ? AND idx = ?"
# What the file says of its size, and its thumbnail (archiver/thumbs/); a NULL leaves a value as it was.
SET_MEDIA = ("UPDATE assets SET width = COALESCE(?, width), height = COALESCE(?, height), thumb = COALESCE(?, thumb),"
             " placeholder = COALESCE(?, placeholder) WHERE key = ?")
# Archived images and videos with no thumbnail that no worker gave up on, newest first: what the thumbnail
# worker catches up on while idle (archiver/thumbs/catchup.py). The same terms as the assets_unthumbed
# index's, so both SQLite and PostgreSQL read only that index.
UNTHUMBED = ("thumb IS NULL AND thumb_failed IS NULL AND state = 'archived' AND key IS NOT NULL"
             " AND substr(content_type, 1, 6) IN ('image/', 'video/')")
MISSING_THUMBS = f"SELECT key, content_type FROM assets WHERE {UNTHUMBED} ORDER BY archived_at DESC LIMIT ?"
THUMB_FAILED = "UPDATE assets SET thumb_failed = ? WHERE key = ?"
ASSET_ERROR = "UPDATE assets SET last_error = ? WHERE task = ? AND idx = ?"
ASSET_PENDING = "UPDATE assets SET state = 'pending', last_error = NULL WHERE task = ? AND idx = ?"
DROP_UNARCHIVED = "DELETE FROM assets WHERE task = ? AND state <> 'archived'"
# Back to the start: queued, held by no daemon, due now in the first lane; params (now, now, now, pk).
REQUEUE = ("UPDATE tasks SET state = 'queued', reason = NULL, code = NULL, message = NULL, first_seen_at = ?,"
           " updated_at = ?, unknown_since = NULL, owner = NULL, next_poll_at = ?, lane = 0, answered_at = NULL,"
           " empty_polls = 0, empty_since = NULL{also} WHERE id = ?")

# The browse index (ArchiveReader): one row per archived asset, with what its sidecar says.
INDEX_ASSETS = """
SELECT t.provider, t.task_id, t.labels, t.media AS hint, t.model, t.prompt, t.success_seen_at,
       a.idx, a.key, a.bytes, a.sha256, a.content_type, a.archived_at, a.width, a.height, a.thumb, a.placeholder,
       (SELECT COUNT(*) FROM assets c WHERE c.task = t.id) AS count
FROM assets a JOIN tasks t ON t.id = a.task
WHERE a.state = 'archived' AND a.key IS NOT NULL {where}
"""
INDEX_FAILED = """
SELECT provider, task_id, labels, reason, code, message, updated_at FROM tasks
WHERE state = 'failed' {where}
"""
DAY_ASSETS = INDEX_ASSETS.format(where="AND t.success_seen_at >= ? AND t.success_seen_at < ?")
DAY_FAILED = INDEX_FAILED.format(where="AND updated_at >= ? AND updated_at < ?")
EACH_ASSET = INDEX_ASSETS.format(where="") + " ORDER BY COALESCE(t.success_seen_at, a.archived_at)"
EACH_FAILED = INDEX_FAILED.format(where="") + " ORDER BY updated_at"
# Per day: what days.json shows, plus the newest change, so a day is rebuilt only when it moved.
# `{day}` is the backend's way to say an epoch time's UTC date as YYYY-MM-DD.
FINGERPRINTS = """
SELECT {day} AS day, COUNT(DISTINCT t.id), COUNT(*), SUM(a.bytes), MAX(a.archived_at), COUNT(a.thumb)
FROM assets a JOIN tasks t ON t.id = a.task
WHERE a.state = 'archived' AND a.key IS NOT NULL GROUP BY 1
"""
FAILED_FINGERPRINTS = "SELECT {day} AS day, COUNT(*), MAX(updated_at) FROM tasks WHERE state = 'failed' GROUP BY 1"
ASSET_DAY = "COALESCE(t.success_seen_at, a.archived_at)"
FAILED_DAY = "updated_at"


def marks(values: Sequence[object]) -> str:
    return ",".join("?" for _ in values)


def pg(sql: str) -> str:
    """The same statement in psycopg's placeholder style."""
    return sql.replace("?", "%s")


def lane_case(ends: Sequence[float], now: float) -> tuple[str, list[float]]:
    """SQL for the lane a task's age puts it in (policy.lane_at), with its parameters."""
    whens = " ".join(f"WHEN first_seen_at <= ? THEN {k}" for k in range(len(ends), 0, -1))
    return f"CASE {whens} ELSE 0 END", [now - end for end in reversed(ends)]
