"""PostgreSQL's own statements: the writes that take a batch, or a whole step, in one round trip.

What reads the same on SQLite is in queries.py. Parameters are psycopg's named `%(name)s`.
"""

from __future__ import annotations

from archiver.state.queries import LIVE_SQL

NOW = "extract(epoch FROM clock_timestamp())"  # the database's clock: one clock for every daemon's leases

# Free live tasks, up to this daemon's fair share: live tasks over live daemons, less what it holds.
CLAIM = f"""WITH fair AS (
                SELECT CEIL((SELECT COALESCE(SUM(n), 0) FROM task_counts WHERE state IN {LIVE_SQL})::float8
                       / GREATEST(1, (SELECT count(*) FROM daemons WHERE seen_at >= {NOW} - %(lease)s)))::bigint AS n
            ), picked AS (
                SELECT id FROM tasks WHERE owner IS NULL AND state IN {LIVE_SQL} AND provider = ANY(%(providers)s)
                ORDER BY id DESC LIMIT LEAST(%(batch)s, GREATEST(0, (SELECT n FROM fair) - GREATEST(%(held)s,
                    (SELECT count(*) FROM tasks WHERE owner = %(me)s AND state IN {LIVE_SQL}))))
                FOR UPDATE SKIP LOCKED
            )
            UPDATE tasks SET owner = %(me)s, next_poll_at = LEAST(next_poll_at, {NOW}) FROM picked
            WHERE tasks.id = picked.id RETURNING tasks.id, tasks.provider, tasks.state"""

# The new tasks of a batch and their history rows; returns id, provider and task_id of those inserted.
INSERT_TASKS = ("WITH t AS (INSERT INTO tasks (provider, task_id, labels, state, first_seen_at, updated_at,"
                " next_poll_at) SELECT p, t, l, 'queued', %(now)s, %(now)s, %(now)s FROM unnest(%(p)s::text[],"
                " %(t)s::text[], %(l)s::text[]) WITH ORDINALITY AS u (p, t, l, n) ORDER BY n"
                " ON CONFLICT (provider, task_id) DO NOTHING RETURNING id, provider, task_id),"
                " h AS (INSERT INTO history (task, at, state, note) SELECT id, %(now)s, 'queued', %(note)s FROM t)"
                " SELECT * FROM t")

# Polls that left their tasks running (see PostgresState.polled_many); returns the ids written.
POLLED_MANY = ("WITH v AS (SELECT * FROM unnest(%(pk)s::bigint[], %(at)s::float8[], %(next)s::float8[],"
               " %(lane)s::smallint[], %(error)s::text[], %(unknown)s::float8[], %(running)s::float8[],"
               " %(answered)s::float8[], %(empty)s::int[], %(empty_since)s::float8[])"
               " AS v (pk, at, next, lane, error, unknown, running, answered, empty, empty_since)),"
               " old AS (SELECT id, state, owner FROM tasks WHERE id = ANY(%(pk)s) ORDER BY id FOR UPDATE),"
               " upd AS (UPDATE tasks t SET state = 'polling', polls = t.polls + 1, last_error = v.error,"
               " unknown_since = v.unknown, running_for = COALESCE(v.running, t.running_for),"
               " updated_at = CASE WHEN old.state = 'queued' THEN v.at ELSE t.updated_at END,"
               " next_poll_at = v.next, lane = v.lane, answered_at = v.answered, empty_polls = v.empty,"
               " empty_since = v.empty_since FROM old JOIN v ON v.pk = old.id"
               f" WHERE t.id = old.id AND (old.owner = %(me)s OR old.owner IS NULL AND old.state IN {LIVE_SQL})"
               " RETURNING t.id, old.state AS was, v.at),"
               " h AS (INSERT INTO history (task, at, state) SELECT id, at, 'polling' FROM upd WHERE was = 'queued')"
               " SELECT id FROM upd")

# A success with its result URLs as assets (see PostgresState.succeeded).
SUCCEEDED = ("WITH done AS (SELECT count(*) = %(n)s AS all_done FROM assets WHERE task = %(pk)s"
             " AND idx < %(n)s AND state = 'archived'),"
             " t AS (UPDATE tasks SET state = CASE WHEN (SELECT all_done FROM done) THEN 'archived'"
             " ELSE 'downloading' END, polls = polls + 1, last_error = NULL,"
             " success_seen_at = %(now)s, updated_at = %(now)s, media = %(media)s, model = %(model)s,"
             " prompt = %(prompt)s, input = %(input)s, response = %(response)s, task_created_at = %(created)s,"
             " task_completed_at = %(completed)s, owner = CASE WHEN (SELECT all_done FROM done) THEN NULL"
             " ELSE %(owner)s END WHERE id = %(pk)s AND (owner = %(me)s OR"
             f" owner IS NULL AND state IN {LIVE_SQL}) RETURNING *),"
             " h AS (INSERT INTO history (task, at, state, note) SELECT id, %(now)s, 'downloading', %(note)s FROM t"
             " UNION ALL SELECT id, %(now)s, 'archived', NULL FROM t WHERE state = 'archived'),"
             " new AS (INSERT INTO assets (task, idx, url, role) SELECT t.id, i - 1, u, r FROM t,"
             " unnest(%(urls)s::text[], %(roles)s::text[]) WITH ORDINALITY AS x(u, r, i) ON CONFLICT DO NOTHING"
             " RETURNING *)"
             " SELECT to_jsonb(t) AS task, (SELECT COALESCE(jsonb_agg(to_jsonb(a) ORDER BY a.idx), '[]')"
             " FROM (SELECT * FROM new UNION ALL SELECT * FROM assets WHERE task = %(pk)s) a) AS assets FROM t")

# One asset archived, and its task with it when it was the last (see PostgresState.archived).
ARCHIVED = ("WITH done AS (UPDATE assets SET state = 'archived', bytes = %(size)s, sha256 = %(sha)s,"
            " content_type = %(ct)s, downloaded_at = %(down)s, archived_at = %(at)s, last_error = NULL,"
            " width = COALESCE(%(width)s, width), height = COALESCE(%(height)s, height)"
            " WHERE task = %(pk)s AND idx = %(idx)s), left_over AS (SELECT count(*) AS n FROM assets"
            " WHERE task = %(pk)s AND idx <> %(idx)s AND state <> 'archived'),"
            " fin AS (UPDATE tasks SET state = 'archived', updated_at = %(at)s, owner = NULL WHERE id = %(pk)s"
            " AND (SELECT n FROM left_over) = 0 RETURNING id), h AS (INSERT INTO history (task, at, state)"
            " SELECT id, %(now)s, 'archived' FROM fin) SELECT count(*) AS n FROM fin")

# The next `span` seconds of a key's slots; `wait` is the seconds until the first.
RESERVE = (f"INSERT INTO rate_slots (key_id, next_at) VALUES (%(k)s, {NOW} + %(span)s) ON CONFLICT (key_id) DO UPDATE"
           f" SET next_at = GREATEST(rate_slots.next_at, {NOW}) + %(span)s RETURNING next_at - %(span)s - {NOW}"
           f" AS wait")

# This host's inbox offset, kept per host and path.
INBOX = ('INSERT INTO inbox (host, path, dev, ino, "offset", line_no) VALUES (%s, %s, %s, %s, %s, %s)'
         ' ON CONFLICT (host, path) DO UPDATE SET dev = excluded.dev, ino = excluded.ino,'
         ' "offset" = excluded."offset", line_no = excluded.line_no')

# A daemon's heartbeat: its row renewed, or written again if others reaped it (then `fresh`).
HEARTBEAT = (f"INSERT INTO daemons (id, host, pid, started_at, seen_at) VALUES (%s, %s, %s, {NOW}, {NOW})"
             f" ON CONFLICT (id) DO UPDATE SET seen_at = {NOW} RETURNING (xmax = 0) AS fresh")
