"""End to end through every CDN fault: two real daemons, one archiving to local disk, one to S3.

A fake kie API hands out result URLs on the fault CDN (archiver/testing/cdn.py). Faults a
retry can mend must end archived, byte for byte the entity served last, with a sidecar
whose sha256 matches; the others must fail with their reason. Only 127.0.0.0/8 is used:
the CDN on 127.0.0.1 and 127.0.0.3 (both allowed), a canary on 127.0.0.2 (refused).
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from archiver.testing import Canary, FakeApis, FakeTask, FaultCdn, Resource, canary, media_bytes, serve_at
from archiver.testing.media import PNG
from tests.support.daemon import DaemonProcess, base_config, write_config
from tests.support.postgres import StateBackend
from tests.support.servers import serve

API_KEY = "kie-SECRET-e2e-storage-5eed"
MAX_BYTES = 300_000
CUT = 50_000
ALLOW = ["127.0.0.1/32", "127.0.0.3/32"]


@dataclass
class Case:
    resource: Resource
    reason: str | None = None  # None: must be archived as resource.final()
    ext: str = "png"


def cases(other: str, bird: Canary) -> dict[str, Case]:
    """The fault world; retry-mended faults recover on the first or second retry."""
    png, new = media_bytes("png", 200_000, "png"), media_bytes("png", 150_000, "new")
    big = media_bytes("png", MAX_BYTES + 1, "big")
    return {
        "cut": Case(Resource(png, script=["cut", "ok"], cut_at=CUT)),
        "short": Case(Resource(png, script=["short", "ok"], cut_at=CUT, validator="last-modified")),
        "reset": Case(Resource(png, script=["reset", "ok"])),
        "error-then-ok": Case(Resource(png, script=["500", "503", "ok"])),
        "retry-after": Case(Resource(png, script=["429", "ok"], retry_after="1")),
        "range-ignored": Case(Resource(png, script=["cut", "ok"], cut_at=CUT, ignore_range=True)),
        "changed": Case(Resource(png, script=["cut", "ok"], cut_at=CUT, changed=new)),
        "changed-if-range-ignored": Case(Resource(png, script=["cut", "ok"], cut_at=CUT, changed=new,
                                                  ignore_if_range=True)),
        "misaligned": Case(Resource(png, script=["cut", "misaligned", "ok"], cut_at=CUT)),
        "cut-at-end": Case(Resource(png, script=["cut", "ok"], cut_at=len(png), chunked=True)),
        "redirect-5": Case(Resource(png, redirects=5)),
        "redirect-elsewhere": Case(Resource(png, script=["cut", "ok"], cut_at=CUT, redirects=3,
                                            redirect_base=other)),
        "wrong-type": Case(Resource(png, content_type="text/html; charset=utf-8")),
        "chunked": Case(Resource(media_bytes("mp4", 250_000, "mp4"), chunked=True), ext="mp4"),
        "gzip": Case(Resource(gzip.compress(PNG + bytes(100_000)), encoding="gzip", content_type="image/png")),
        "expired": Case(Resource(png, script=["cut", "403"], cut_at=CUT), "url_expired"),
        "too-large": Case(Resource(big), "too_large"),
        "too-large-chunked": Case(Resource(big, chunked=True), "too_large"),
        "redirect-6": Case(Resource(png, redirects=6), "download_failed"),
        "unsafe": Case(Resource(png, location=f"{bird.base}/latest/meta-data?sig=SIGNED-canary"), "unsafe_url"),
    }


class Archive:
    """What one daemon left in its store, as {key: bytes} plus S3 content types."""

    def __init__(self, objects: dict[str, bytes], types: dict[str, str] | None = None) -> None:
        self.objects, self.types = objects, types or {}

    @classmethod
    def local(cls, root: Path) -> Archive:
        return cls({p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()})

    @classmethod
    def s3(cls, client: Any, bucket: str, prefix: str) -> Archive:
        objects, types = {}, {}
        for item in client.list_objects_v2(Bucket=bucket).get("Contents", []):
            assert item["Key"].startswith(prefix), item["Key"]
            reply = client.get_object(Bucket=bucket, Key=item["Key"])
            key = item["Key"].removeprefix(prefix)
            objects[key], types[key] = reply["Body"].read(), reply["ContentType"]
        return cls(objects, types)


class Run:
    """One daemon over its own state, inbox and store; its tasks are named `{name}-{case}`."""

    def __init__(self, name: str, tmp: Path, api: str, world: dict[str, Case], cdn: FaultCdn,
                 fake: FakeApis, storage: dict[str, Any], **state: Any) -> None:
        self.name, self.tmp, self.world = name, tmp, world
        tmp.mkdir()
        for case, spec in world.items():
            cdn.add(self.task_id(case), spec.resource)
            fake.add(FakeTask("kie", self.task_id(case), ["success"], [spec.resource.final()],
                              urls=[cdn.url(self.task_id(case))]))
        doc = base_config(tmp, {"kie": {"type": "kie", "api_key": "${KIE_API_KEY}", "base_url": api,
                                        "poll_intervals": ["0.2s"], "requests_per_second": 50}},
                          storage=storage, **state)
        doc["download"] = {"allow_addresses": ALLOW, "max_bytes": MAX_BYTES}
        self.config = write_config(tmp / "config.yaml", doc)
        self.daemon = DaemonProcess(self.config, dict(os.environ, KIE_API_KEY=API_KEY), tmp / "daemon.log")

    def task_id(self, case: str) -> str:
        return f"{self.name}-{case}"

    async def run(self) -> dict[str, Any]:
        await self.daemon.start()
        try:
            (self.tmp / "inbox.txt").write_text("".join(f"kie {self.task_id(c)}\n" for c in self.world))
            return await self.daemon.wait_for(
                lambda s: s["counts"]["archived"] + s["counts"]["failed"] == len(self.world), timeout=45)
        finally:
            assert await self.daemon.stop() == 0

    def check(self, status: dict[str, Any], archive: Archive) -> None:
        failures = {t["task_id"]: t["reason"] for t in status["recent_failures"]}
        for case, spec in self.world.items():
            task_id = self.task_id(case)
            if spec.reason is not None:
                assert failures.get(task_id) == spec.reason, (case, failures.get(task_id))
                record = json.loads(archive.objects[f"_failed/kie/{task_id}.json"])
                assert record["reason"] == spec.reason
                continue
            assert task_id not in failures, (case, failures[task_id])
            self.check_asset(case, spec, archive)
        assert status["counts"]["archived"] == sum(1 for c in self.world.values() if c.reason is None)
        log = (self.tmp / "daemon.log").read_text()
        assert API_KEY not in log
        assert "SIGNED-" not in log, "a signed URL's query string reached the log"
        assert not list((self.tmp / "state" / "staging").iterdir()), "staging was left with litter"

    def check_asset(self, case: str, spec: Case, archive: Archive) -> None:
        task_id, content = self.task_id(case), spec.resource.final()
        pattern = re.compile(rf"kie/\d{{4}}/\d\d/\d\d/{re.escape(task_id)}/00\.{spec.ext}")
        [key] = [k for k in archive.objects if pattern.fullmatch(k)] or [f"no asset for {case}"]
        assert archive.objects[key] == content, f"{case}: stored bytes differ from the entity served last"
        sidecar = json.loads(archive.objects[key + ".json"])
        assert sidecar["key"] == key and sidecar["bytes"] == len(content)
        assert sidecar["sha256"] == hashlib.sha256(content).hexdigest(), case
        assert sidecar["content_type"] == ("video/mp4" if spec.ext == "mp4" else "image/png")
        if archive.types:
            assert archive.types[key] == sidecar["content_type"]
            assert archive.types[key + ".json"] == "application/json"


async def test_every_cdn_fault_to_local_disk_and_s3(tmp_path: Path, moto_server: str, s3_bucket: str,
                                                    s3_client: Any, state_backend: StateBackend) -> None:
    """The S3 daemon keeps its state on either backend; the local one on SQLite (the two share no tasks)."""
    fake, cdn = FakeApis(API_KEY), FaultCdn()
    async with serve(fake.app()) as api, serve_at(cdn.app(), "127.0.0.1") as base, \
            serve_at(cdn.app(), "127.0.0.3") as other, canary("127.0.0.2") as bird:
        fake.base, cdn.base = api, base
        runs = [
            Run("local", tmp_path / "local", api, cases(other, bird), cdn, fake,
                {"backend": "local", "local": {"root": str(tmp_path / "local" / "archive")}}),
            Run("s3", tmp_path / "s3", api, cases(other, bird), cdn, fake,
                {"backend": "s3", "s3": {"bucket": s3_bucket, "prefix": "ai/", "endpoint_url": moto_server,
                                         "region": "us-east-1"}}, **state_backend.config()),
        ]
        statuses = await asyncio.gather(*(run.run() for run in runs))
    runs[0].check(statuses[0], Archive.local(tmp_path / "local" / "archive"))
    runs[1].check(statuses[1], Archive.s3(s3_client, s3_bucket, "ai/"))

    assert bird.connections == [], "a refused address was dialled"
    for hit in cdn.hits:
        assert "Authorization" not in hit.headers, hit
        assert API_KEY not in json.dumps(hit.headers)
    for run in runs:
        # The mended cut resumed: the retry asked for the rest, and got only the rest.
        first, *later = cdn.hits_for(run.task_id("cut"))
        assert (first.status, first.sent) == (200, CUT)
        [resumed] = later
        assert resumed.status == 206 and 0 < resumed.start <= CUT
        assert resumed.headers["Range"] == f"bytes={resumed.start}-"
        assert resumed.sent == len(run.world["cut"].resource.body) - resumed.start
        # The expired URL was asked for again (the fresh-URL poll gave the same one), never beyond.
        assert [h.status for h in cdn.hits_for(run.task_id("expired"))][:2] == [200, 403]


async def test_failed_record_waits_for_a_store_that_is_down(tmp_path: Path, state_backend: StateBackend) -> None:
    """A _failed record the store refused is written once the store is back."""
    fake = FakeApis(API_KEY)
    fake.add(FakeTask("kie", "doomed", ["fail"], fail_code="422", fail_msg="prompt contains prohibited content"))
    archive = tmp_path / "archive"
    archive.mkdir()
    blocker = archive / "_failed"
    blocker.write_text("a file where the _failed folder should be: the record cannot be written")
    async with serve(fake.app()) as base:
        fake.base = base
        config = write_config(tmp_path / "config.yaml", base_config(tmp_path, {
            "kie": {"type": "kie", "api_key": "${KIE_API_KEY}", "base_url": base, "poll_intervals": ["0.2s"]},
        }, **state_backend.config()))
        (tmp_path / "inbox.txt").write_text("kie doomed\n")
        env = dict(os.environ, KIE_API_KEY=API_KEY)
        daemon = DaemonProcess(config, env, tmp_path / "daemon.log")
        await daemon.start()
        await daemon.wait_for(lambda s: s["counts"]["failed"] == 1)
        assert await daemon.stop() == 0
        assert "could not write its _failed record" in (tmp_path / "daemon.log").read_text()

        blocker.unlink()
        await daemon.start()
        record = archive / "_failed" / "kie" / "doomed.json"
        for _ in range(100):
            if record.exists():
                break
            await asyncio.sleep(0.1)
        assert await daemon.stop() == 0
    assert json.loads(record.read_text())["reason"] == "content_moderation"
