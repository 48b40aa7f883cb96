"""The crash tests' world and checks: many tasks over three providers, and an archive that
must hold every asset exactly once (tests/test_crash.py, tests/test_crash_postgres.py)."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

from archiver.storage.local import MARKER
from archiver.testing import FakeApis, FakeTask, media_bytes


def world(fake: FakeApis, rng: random.Random, tasks: int, max_size: int = 300_000) -> list[str]:
    """Inbox lines for `tasks` tasks over three providers, files of up to `max_size` bytes; some
    downloads are slow."""
    lines = []
    for n in range(tasks):
        provider_type, entry, where = [("kie", "kie", ""), ("maxapi", "maxapi", ""),
                                       ("apipod", "pod", "images")][n % 3]
        files = [media_bytes("png", rng.randrange(1_000, max_size), f"{n}/{i}") for i in range(1 + n % 2)]
        slow = rng.choice([0.0, 0.0, 0.0, 0.5, 2.0])
        fake.add(FakeTask(provider_type, f"t{n:04d}", ["running", "success"], files, where=where, slow=slow))
        lines.append(f"{entry} t{n:04d} n={n}\n")
    # One large, slow file that is surely in flight at the first kill, to prove resume.
    fake.add(FakeTask("kie", "big", ["success"], [media_bytes("mp4", 4_000_000, "big")], slow=4.0))
    return ["kie big\n", *lines]


def is_index(key: str) -> bool:
    """index.html and _index/ are rewritten as days fill up: the one-object-per-key rule is for assets."""
    return key.removeprefix("ai/") == "index.html" or key.removeprefix("ai/").startswith("_index/")


def check_stored(objects: dict[str, bytes], expected: dict[str, list[bytes]]) -> None:
    """Exactly one asset per expected file, with its sidecar; nothing else but the browse index."""
    objects = {k: v for k, v in objects.items() if not is_index(k)}
    want = set()
    for task_id, files in expected.items():
        for index, content in enumerate(files):
            [key] = [k for k in objects if f"/{task_id}/{index:02d}." in k and not k.endswith(".json")]
            assert objects[key] == content, key
            sidecar = json.loads(objects[f"{key}.json"])
            assert sidecar["sha256"] == hashlib.sha256(objects[key]).hexdigest()
            assert sidecar["key"] == key
            want |= {key, f"{key}.json"}
    assert set(objects) == want, f"unexpected objects: {sorted(set(objects) - want)[:5]}"


def check_local(root: Path, expected: dict[str, list[bytes]]) -> None:
    objects = {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    objects.pop(MARKER, None)  # the shared-root marker, written with PostgreSQL
    assert not [k for k in objects if ".tmp" in k or k.rsplit("/", 1)[-1].startswith(".")], "temp file left"
    check_stored(objects, expected)


def check_s3(client: Any, bucket: str, expected: dict[str, list[bytes]]) -> None:
    versions: dict[str, int] = {}
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for v in page.get("Versions", []):
            versions[v["Key"]] = versions.get(v["Key"], 0) + 1
    assert all(n == 1 for k, n in versions.items() if not is_index(k)), {k: n for k, n in versions.items() if n > 1}
    assert not client.list_multipart_uploads(Bucket=bucket).get("Uploads")
    objects = {k.removeprefix("ai/"): client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in versions}
    check_stored(objects, expected)
