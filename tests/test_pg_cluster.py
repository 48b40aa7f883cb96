"""The PostgreSQL servers the state tests run against (tests/support/postgres.py and its fixtures)."""

from __future__ import annotations

import psycopg
import pytest

from tests.support.postgres import PgCluster, StateBackend


def test_session_server_answers_on_loopback_with_test_settings(pg_cluster: PgCluster) -> None:
    with psycopg.connect(pg_cluster.dsn()) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        addr, port = conn.execute("SELECT host(inet_server_addr()), inet_server_port()").fetchone()  # type: ignore[misc]
        settings: dict[str, str] = dict(conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN "
            "('fsync', 'full_page_writes', 'max_connections', 'unix_socket_directories')").fetchall())
    assert (addr, port) == ("127.0.0.1", pg_cluster.port)
    assert settings == {"fsync": "off", "full_page_writes": "off", "max_connections": "300",
                        "unix_socket_directories": str(pg_cluster.socket_dir)}


def test_created_databases_are_separate(pg_cluster: PgCluster) -> None:
    first, second = pg_cluster.create_database(), pg_cluster.create_database()
    assert first != second
    with psycopg.connect(first) as conn:
        conn.execute("CREATE TABLE tasks (id text PRIMARY KEY)")
        conn.execute("INSERT INTO tasks VALUES ('a')")
    with psycopg.connect(second) as conn:
        assert conn.execute("SELECT to_regclass('tasks')").fetchone() == (None,)
    with psycopg.connect(first) as conn:
        assert conn.execute("SELECT id FROM tasks").fetchall() == [("a",)]


def test_drop_database_ends_open_sessions(pg_cluster: PgCluster) -> None:
    dsn = pg_cluster.create_database()
    held = psycopg.connect(dsn)
    try:
        pg_cluster.drop_database(dsn)
        with pytest.raises(psycopg.OperationalError):
            held.execute("SELECT 1")
    finally:
        held.close()
    with pytest.raises(psycopg.OperationalError, match="does not exist"):
        psycopg.connect(dsn)


def test_state_backend_names_the_store(state_backend: StateBackend) -> None:
    if state_backend.name == "sqlite":
        assert state_backend.dsn is None
        return
    assert state_backend.name == "postgres" and state_backend.dsn is not None
    with psycopg.connect(state_backend.dsn) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
    assert tables == (0,)


def test_stopped_server_refuses_then_restarts_on_the_same_port_with_its_data(private_pg: PgCluster) -> None:
    dsn = private_pg.create_database()
    port = private_pg.port
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE tasks (id text PRIMARY KEY)")
        conn.execute("INSERT INTO tasks VALUES ('kept')")
    private_pg.stop()
    with pytest.raises(psycopg.OperationalError, match="refused"):
        psycopg.connect(dsn, connect_timeout=5)
    private_pg.start()
    assert private_pg.port == port
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT id FROM tasks").fetchall() == [("kept",)]


def test_killed_server_drops_sessions_and_recovers_every_commit(private_pg: PgCluster) -> None:
    dsn = private_pg.create_database()
    held = psycopg.connect(dsn, autocommit=True)
    try:
        held.execute("CREATE TABLE tasks (id text PRIMARY KEY)")
        held.execute("INSERT INTO tasks VALUES ('committed just before the crash')")
        private_pg.kill()
        with pytest.raises(psycopg.OperationalError):
            held.execute("SELECT 1")
    finally:
        held.close()
    with pytest.raises(psycopg.OperationalError, match="refused"):
        psycopg.connect(dsn, connect_timeout=5)
    private_pg.start()
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT id FROM tasks").fetchall() == [("committed just before the crash",)]
