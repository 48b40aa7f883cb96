"""Fixtures shared across the suite: moto's S3 server on loopback and a fresh bucket per test;
PostgreSQL servers and databases, and the state backends to run against."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from tests.support.ci import cannot_run
from tests.support.postgres import PgCluster, StateBackend, pg_unavailable

# The fake providers (archiver/testing/, docs/testing.md) give the `fake_providers` fixture.
pytest_plugins = ["archiver.testing.pytest_plugin"]
AWS_REGION = "us-east-1"


@pytest.fixture(scope="session")
def aws_env() -> Iterator[None]:
    """Dummy credentials, no profile, no instance metadata: boto3 never looks past this host."""
    with pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
                     "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ROLE_ARN",
                     "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                     "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"):
            mp.delenv(name, raising=False)
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", AWS_REGION)
        mp.setenv("AWS_CONFIG_FILE", os.devnull)
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        yield


@pytest.fixture(scope="session")
def moto_server(aws_env: None) -> Iterator[str]:
    """moto's S3 on 127.0.0.1, a free port; yields the endpoint URL."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="session")
def s3_client(moto_server: str) -> Any:
    """A plain boto3 client on the moto server, for arranging and inspecting buckets."""
    return boto3.client("s3", endpoint_url=moto_server, region_name=AWS_REGION)


@pytest.fixture
def s3_bucket(s3_client: Any) -> str:
    """A new, empty bucket for one test."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    s3_client.create_bucket(Bucket=name)
    return name


def _pg_cluster() -> PgCluster:
    """A started PostgreSQL server; skips (fails under CI=true) where none can be had."""
    reason = pg_unavailable()
    if reason is not None:
        cannot_run("PostgreSQL tests", reason)
    cluster = PgCluster()
    try:
        cluster.start()
    except BaseException:
        cluster.cleanup()
        raise
    return cluster


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """One PostgreSQL server for the whole session; tests share it through `pg_dsn`. Never stop it."""
    cluster = _pg_cluster()
    yield cluster
    cluster.cleanup()


@pytest.fixture
def pg_dsn(pg_cluster: PgCluster) -> Iterator[str]:
    """A fresh, empty database on the session server; dropped after the test."""
    dsn = pg_cluster.create_database()
    yield dsn
    pg_cluster.drop_database(dsn)


@pytest.fixture
def private_pg() -> Iterator[PgCluster]:
    """A PostgreSQL server of the test's own, for tests that stop, kill or restart it."""
    cluster = _pg_cluster()
    yield cluster
    cluster.cleanup()


@pytest.fixture(params=["sqlite", "postgres"])
def state_backend(request: pytest.FixtureRequest) -> StateBackend:
    """The state store to run against: SQLite in the state dir, or a fresh PostgreSQL database."""
    if request.param == "postgres":
        return StateBackend("postgres", request.getfixturevalue("pg_dsn"))
    return StateBackend("sqlite", None)
