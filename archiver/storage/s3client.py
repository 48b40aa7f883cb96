"""boto3's S3 client as S3Storage uses it: one client, its calls run in a small pool of threads.

botocore does the signing, finds the credentials (boto3's chain: the environment, the profile,
SSO, web identity, the instance role…), retries in standard mode, follows S3's region redirects
and reads `AWS_ENDPOINT_URL`. One client serves every call (botocore's clients are thread-safe);
the calls run in `THREADS` threads of our own, so an upload never waits behind the daemon's
other thread work (hashing, fsync), and never holds more than `THREADS` connections.

botocore's exceptions are translated in s3.py, where they are caught; this module only builds.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, TypeVar

from archiver.config import S3Config
from archiver.errors import ConfigError

T = TypeVar("T")
THREADS = 8  # S3 calls at once per daemon; download.concurrency (16) assets share them
Checksums = Literal["when_supported", "when_required"]


def checksums(config: S3Config) -> Checksums:
    """botocore's own checksums: from 1.36 it adds CRC32s by default, which MinIO, B2 and other
    stores that are not AWS refuse. On a custom endpoint (or with `checksum: false`) only where
    the API requires one; our own SHA-256 (ChecksumSHA256) is sent either way."""
    if config.sdk_checksums == "when_supported":
        return "when_supported"
    if config.sdk_checksums == "when_required" or config.endpoint_url or not config.checksum:
        return "when_required"
    return "when_supported"


def addressing_style(config: S3Config) -> str:
    """Path-style on a custom endpoint (S3-compatible stores serve it reliably), unless set."""
    return config.addressing_style or ("path" if config.endpoint_url else "auto")


def make_client(config: S3Config, retries: int) -> Any:
    """The botocore client for `config` (reads files, maybe asks a service: run in a thread)."""
    import boto3
    import botocore.session
    from botocore.config import Config
    from botocore.exceptions import ProfileNotFound

    try:
        core = botocore.session.Session(profile=config.profile)
        core.get_scoped_config()  # a missing profile is found here
        core.register_component("data_loader", _lean_loader(core.get_config_variable("data_path")))
        session = boto3.session.Session(botocore_session=core)
    except ProfileNotFound:
        raise ConfigError(f"config: storage.s3.profile: no profile {config.profile!r} in the AWS config "
                          "or credentials files (AWS_CONFIG_FILE, AWS_SHARED_CREDENTIALS_FILE)") from None
    mode = checksums(config)
    return session.client(
        "s3",
        endpoint_url=config.endpoint_url,  # None: AWS_ENDPOINT_URL(_S3), the profile's, or AWS
        region_name=config.region,
        config=Config(
            retries={"mode": "standard", "total_max_attempts": retries + 1},
            connect_timeout=10,
            read_timeout=60,
            max_pool_connections=THREADS,
            request_checksum_calculation=mode,
            response_checksum_validation=mode,
            s3={"addressing_style": addressing_style(config), **_payload_signing(config)},
        ),
    )


def _payload_signing(config: S3Config) -> dict[str, bool]:
    """Over plain http botocore reads every body once more to sign its SHA-256. With our own
    checksum that read is redundant: the checksum header is signed, and the store checks the
    body against it (as botocore itself does over https, sending UNSIGNED-PAYLOAD)."""
    return {"payload_signing_enabled": False} if config.checksum else {}


class Client:
    """The shared client, made on first use in a pool thread, and the pool that runs its calls."""

    def __init__(self, config: S3Config, *, retries: int) -> None:
        self.config = config
        self.retries = retries
        self._client: Any = None
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="archiver-s3")

    def _get(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = make_client(self.config, self.retries)
            return self._client

    async def run(self, call: Callable[[Any], T]) -> T:
        """`call(client)` in a pool thread."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, lambda: call(self._get()))

    async def close(self) -> None:
        """No new calls; those queued are dropped, and the connections closed."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        client, self._client = self._client, None
        if client is not None:
            client.close()


def _lean_loader(data_path: str | None) -> Any:
    """botocore's own loader (so AWS_DATA_PATH still counts) reading its model files as plain
    dicts with their documentation emptied: botocore keeps the API reference text that only
    `help()` reads, a few MiB of a daemon's memory for as long as the client lives."""
    from botocore.loaders import JSONFileLoader, create_loader

    class LeanFiles(JSONFileLoader):
        def load_file(self, file_path: str) -> Any:
            # The order botocore tries them in: a plain file overrides a compressed one.
            for path, opener in ((file_path + ".json", open), (file_path + ".json.gz", gzip.open)):
                if os.path.isfile(path):
                    with opener(path, "rb") as f:
                        return _drop_docs(json.loads(f.read()))
            return None

    loader = create_loader(data_path)
    loader.file_loader = LeanFiles()
    return loader


def _drop_docs(node: Any) -> Any:
    """Empty every "documentation" text (a member of that name is a dict, and stays); emptied,
    not removed: botocore indexes some of them (client context parameters)."""
    if isinstance(node, dict):
        if isinstance(node.get("documentation"), str):
            node["documentation"] = ""
        for value in node.values():
            _drop_docs(value)
    elif isinstance(node, list):
        for value in node:
            _drop_docs(value)
    return node
