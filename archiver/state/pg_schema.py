"""The PostgreSQL schema, as numbered migrations; `archiver run` applies the missing ones.

Each step runs in one transaction under an advisory lock, so daemons starting together
migrate once. Times are epoch seconds (double precision), as in the SQLite file.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

Conn = AsyncConnection[dict[str, Any]]  # opened with row_factory=dict_row

LOCK = 7268201  # pg_advisory_xact_lock key: "archiver migrates"

MIGRATIONS: tuple[str, ...] = (
    # 1: tasks, assets, history, rejects, health; task counts kept by triggers.
    """
    CREATE TABLE tasks (
        id BIGSERIAL PRIMARY KEY,
        provider TEXT NOT NULL,
        task_id TEXT NOT NULL,
        labels TEXT NOT NULL DEFAULT '{}',
        state TEXT NOT NULL,
        reason TEXT, code TEXT, message TEXT, last_error TEXT,
        first_seen_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        polls INTEGER NOT NULL DEFAULT 0,
        unknown_since DOUBLE PRECISION,
        success_seen_at DOUBLE PRECISION,
        media TEXT, model TEXT, prompt TEXT, input TEXT, response TEXT,
        task_created_at TEXT, task_completed_at TEXT,
        record_due BOOLEAN NOT NULL DEFAULT false,
        running_for DOUBLE PRECISION NOT NULL DEFAULT 0,
        UNIQUE (provider, task_id)
    );
    CREATE INDEX tasks_by_state ON tasks (state, updated_at);
    CREATE INDEX tasks_by_age ON tasks (provider, state, first_seen_at);
    CREATE TABLE assets (
        task BIGINT NOT NULL REFERENCES tasks (id),
        idx INTEGER NOT NULL,
        url TEXT NOT NULL,
        key TEXT,
        state TEXT NOT NULL DEFAULT 'pending',
        bytes BIGINT, sha256 TEXT, content_type TEXT,
        downloaded_at DOUBLE PRECISION, archived_at DOUBLE PRECISION, last_error TEXT, role TEXT,
        PRIMARY KEY (task, idx)
    );
    CREATE INDEX assets_by_key ON assets (key);
    CREATE TABLE history (
        id BIGSERIAL PRIMARY KEY,
        task BIGINT NOT NULL REFERENCES tasks (id),
        at DOUBLE PRECISION NOT NULL, state TEXT NOT NULL, reason TEXT, note TEXT
    );
    CREATE INDEX history_by_task ON history (task, at);
    CREATE TABLE rejects (
        id BIGSERIAL PRIMARY KEY,
        at DOUBLE PRECISION NOT NULL, line_no BIGINT NOT NULL, reason TEXT NOT NULL, line TEXT NOT NULL
    );
    CREATE TABLE health (
        daemon TEXT NOT NULL, name TEXT NOT NULL, state TEXT NOT NULL, message TEXT,
        at DOUBLE PRECISION NOT NULL, PRIMARY KEY (daemon, name)
    );
    CREATE TABLE task_counts (state TEXT PRIMARY KEY, n BIGINT NOT NULL);
    INSERT INTO task_counts VALUES ('queued', 0), ('polling', 0), ('downloading', 0), ('archived', 0), ('failed', 0);
    CREATE FUNCTION archiver_count_tasks() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP <> 'INSERT' THEN
            UPDATE task_counts SET n = n - 1 WHERE state = OLD.state;
        END IF;
        IF TG_OP <> 'DELETE' THEN
            INSERT INTO task_counts (state, n) VALUES (NEW.state, 1)
                ON CONFLICT (state) DO UPDATE SET n = task_counts.n + 1;
        END IF;
        RETURN NULL;
    END $$;
    CREATE TRIGGER task_counts_rows AFTER INSERT OR DELETE ON tasks
        FOR EACH ROW EXECUTE FUNCTION archiver_count_tasks();
    CREATE TRIGGER task_counts_state AFTER UPDATE OF state ON tasks
        FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state) EXECUTE FUNCTION archiver_count_tasks();
    """,
    # 2: several daemons: who runs, who holds which task, inbox offsets per host, shared pacing.
    """
    CREATE TABLE daemons (
        id TEXT PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT NULL,
        started_at DOUBLE PRECISION NOT NULL, seen_at DOUBLE PRECISION NOT NULL
    );
    ALTER TABLE tasks ADD COLUMN owner TEXT;
    CREATE INDEX tasks_free ON tasks (id) WHERE owner IS NULL AND state IN ('queued', 'polling', 'downloading');
    CREATE INDEX tasks_by_owner ON tasks (owner) WHERE owner IS NOT NULL;
    CREATE TABLE inbox (
        host TEXT NOT NULL, path TEXT NOT NULL,
        dev BIGINT NOT NULL, ino BIGINT NOT NULL, "offset" BIGINT NOT NULL, line_no BIGINT NOT NULL,
        PRIMARY KEY (host, path)
    );
    CREATE TABLE rate_slots (key_id TEXT PRIMARY KEY, next_at DOUBLE PRECISION NOT NULL);
    CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # 3: the poll queue lives in the database: when each task is asked next (archiver/policy.py).
    """
    ALTER TABLE tasks ADD COLUMN next_poll_at DOUBLE PRECISION NOT NULL DEFAULT 0,
        ADD COLUMN answered_at DOUBLE PRECISION, ADD COLUMN empty_polls INTEGER NOT NULL DEFAULT 0,
        ADD COLUMN empty_since DOUBLE PRECISION, ADD COLUMN lane SMALLINT NOT NULL DEFAULT 0;
    CREATE INDEX tasks_due ON tasks (provider, owner, lane, next_poll_at) WHERE state IN ('queued', 'polling');
    """,
    # 4: the counts once per statement, not per row: an intake batch of 10,000 tasks spent 70 % of its
    # time in the row trigger and held the 'queued' row's lock while it did. The count rows are
    # updated in state order, so two transactions never take them in opposite orders.
    """
    DROP TRIGGER task_counts_rows ON tasks;
    DROP TRIGGER task_counts_state ON tasks;
    DROP FUNCTION archiver_count_tasks();
    CREATE FUNCTION archiver_count_tasks() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            INSERT INTO task_counts (state, n) SELECT state, count(*) FROM new_rows GROUP BY state ORDER BY state
                ON CONFLICT (state) DO UPDATE SET n = task_counts.n + excluded.n;
        ELSIF TG_OP = 'DELETE' THEN
            INSERT INTO task_counts (state, n) SELECT state, -count(*) FROM old_rows GROUP BY state ORDER BY state
                ON CONFLICT (state) DO UPDATE SET n = task_counts.n + excluded.n;
        ELSE
            -- Per state, rows after minus rows before: no join (the planner takes a transition
            -- table for one row, and a nested loop over 2,000 took 3 s), and no lock on a count
            -- row for the many updates that move no task between states.
            INSERT INTO task_counts (state, n)
                SELECT state, sum(d) FROM (
                    SELECT state, -count(*) AS d FROM old_rows GROUP BY state
                    UNION ALL
                    SELECT state, count(*) FROM new_rows GROUP BY state
                ) moved GROUP BY state HAVING sum(d) <> 0 ORDER BY state
                ON CONFLICT (state) DO UPDATE SET n = task_counts.n + excluded.n;
        END IF;
        RETURN NULL;
    END $$;
    CREATE TRIGGER task_counts_insert AFTER INSERT ON tasks REFERENCING NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION archiver_count_tasks();
    CREATE TRIGGER task_counts_update AFTER UPDATE ON tasks REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION archiver_count_tasks();
    CREATE TRIGGER task_counts_delete AFTER DELETE ON tasks REFERENCING OLD TABLE AS old_rows
        FOR EACH STATEMENT EXECUTE FUNCTION archiver_count_tasks();
    """,
    # 5: a lane per schedule step; aging finds each lane's tasks past its step without reading the lane.
    """
    CREATE INDEX tasks_aging ON tasks (provider, owner, lane, first_seen_at) WHERE state IN ('queued', 'polling');
    """,
    # 6: what the browse index shows of each asset before it loads: its size, its thumbnail, a placeholder colour.
    """
    ALTER TABLE assets ADD COLUMN width INTEGER, ADD COLUMN height INTEGER, ADD COLUMN thumb TEXT,
        ADD COLUMN placeholder TEXT;
    """,
    # 7: when the thumbnail worker gave up on an asset (a corrupt file, a video without a poster), so that its
    # catch-up does not try it every round; and the index that catch-up reads, on the same terms as queries.UNTHUMBED.
    """
    ALTER TABLE assets ADD COLUMN thumb_failed DOUBLE PRECISION;
    CREATE INDEX assets_unthumbed ON assets (archived_at) WHERE
        thumb IS NULL AND thumb_failed IS NULL AND state = 'archived' AND key IS NOT NULL
        AND substr(content_type, 1, 6) IN ('image/', 'video/');
    """,
)
VERSION = len(MIGRATIONS)


async def schema_version(conn: Conn) -> int:
    """0 for a database archiver has never used."""
    row = await (await conn.execute("SELECT to_regclass('archiver_schema') IS NOT NULL AS found")).fetchone()
    if not row or not row["found"]:
        return 0
    row = await (await conn.execute("SELECT version FROM archiver_schema")).fetchone()
    return int(row["version"]) if row else 0


def refuse_newer(found: int) -> None:
    """A schema a newer archiver made: neither a daemon nor a command of this one may use it."""
    if found > VERSION:
        from archiver.errors import ArchiverError

        raise ArchiverError(f"state.dsn: the database's archiver schema is version {found}; this archiver knows"
                            f" up to {VERSION}: upgrade archiver on this host")


async def migrate(conn: Conn, upto: int = VERSION) -> tuple[int, int]:
    """Bring the schema to `upto`; returns (from, to). Safe to run from several daemons at once."""
    async with conn.transaction():
        await conn.execute(f"SELECT pg_advisory_xact_lock({LOCK})")
        found = await schema_version(conn)
        refuse_newer(found)
        if found == 0:
            await conn.execute("CREATE TABLE archiver_schema (version INTEGER NOT NULL)")
            await conn.execute("INSERT INTO archiver_schema VALUES (0)")
        for version in range(found + 1, upto + 1):
            await conn.execute(MIGRATIONS[version - 1])  # type: ignore[arg-type]  # our own literal SQL
            await conn.execute("UPDATE archiver_schema SET version = %s", (version,))
        return found, max(found, upto)
