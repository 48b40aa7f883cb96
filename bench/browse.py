"""Scenarios 7 and 8: the browse index at 100,000 assets over 60 days, and `archiver serve` on S3.

The archive is generated straight into a state DB and a local store (tests/support/archive.py),
then timed: `archiver index --rebuild` (from the state DB), `archiver index --from-store`
(from the sidecars), `index --rebuild` from the same rows in PostgreSQL (where Debian's
server is installed), and the largest day file. The page itself, in Chromium, is measured by
bench/gallery.py, on real media.
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from measure import Child, free_port, rss_mib, wait_port
from scenarios import PY, Row

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.support, shared with the tests

from archiver.config import load_config  # noqa: E402
from tests.support.archive import TYPES, generate, generate_state, write_local  # noqa: E402
from tests.support.postgres import PgCluster, pg_unavailable  # noqa: E402

def browse(assets: int, base: Path, days: int = 60) -> list[Row]:
    folder = Path(tempfile.mkdtemp(prefix="archiver-bench-browse-", dir=base))
    try:
        return _run(folder, assets, days)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run(folder: Path, assets: int, days: int) -> list[Row]:
    config, log = folder / "config.yaml", folder / "generate.log"
    # Generated in a process of its own: a child's peak RSS would otherwise start at ours.
    made = Child([PY, __file__, str(folder), str(assets), str(days)], log).wait()
    assert made.code == 0, log.read_text()[-2000:]
    count = int(log.read_text().split()[1].replace(",", ""))
    print(f"  {log.read_text().strip()} in {made.wall:.0f} s", flush=True)
    rows = []
    for name, flags in (("7 index --rebuild (state DB)", ["--rebuild"]), ("7 index --from-store", ["--from-store"])):
        usage = Child([PY, "-m", "archiver", "-c", str(config), "index", *flags], folder / "index.log").wait()
        assert usage.code == 0, (folder / "index.log").read_text()[-2000:]
        rows.append(Row(name, usage.wall, None, count / usage.wall, usage.cpu, usage.peak_rss_mib,
                        f"{count:,} assets, {days} days"))
    largest = max((folder / "archive/_index/days").iterdir(), key=lambda p: p.stat().st_size)
    rows[-1].note += f"; largest day file {largest.stat().st_size / 2**20:.2f} MiB ({largest.name})"
    if pg_unavailable() is None:
        rows.append(_postgres_rebuild(folder, assets, days, count))
    else:
        print(f"  skipped index --rebuild on PostgreSQL: {pg_unavailable()}", flush=True)
    return rows


def _postgres_rebuild(folder: Path, assets: int, days: int, count: int) -> Row:
    """The same archive's rows in PostgreSQL (a private server); `index --rebuild` from there."""
    cluster = PgCluster()
    try:
        cluster.start()
        doc = yaml.safe_load((folder / "config.yaml").read_text())
        doc["state"] = {"backend": "postgres", "dsn": cluster.create_database()}
        (folder / "config-pg.yaml").write_text(yaml.safe_dump(doc))
        log = folder / "generate-pg.log"
        made = Child([PY, __file__, str(folder), str(assets), str(days), "postgres"], log).wait()
        assert made.code == 0, log.read_text()[-2000:]
        print(f"  {log.read_text().strip()} in {made.wall:.0f} s", flush=True)
        before = {p.name: p.read_bytes() for p in (folder / "archive/_index/days").iterdir()}
        usage = Child([PY, "-m", "archiver", "-c", str(folder / "config-pg.yaml"), "index", "--rebuild"],
                      folder / "index-pg.log").wait()
        assert usage.code == 0, (folder / "index-pg.log").read_text()[-2000:]
        after = {p.name: p.read_bytes() for p in (folder / "archive/_index/days").iterdir()}
        return Row("7 index --rebuild (PostgreSQL)", usage.wall, None, count / usage.wall, usage.cpu,
                   usage.peak_rss_mib, f"{count:,} assets, {days} days; day files "
                   + ("byte for byte as from SQLite" if after == before else "DIFFER from SQLite's"))
    finally:
        cluster.cleanup()


def serve_s3(size_mib: int, base: Path) -> list[Row]:
    """Scenario 8: `archiver serve` streams one big S3 object (moto) to a client; its memory stays flat."""
    import boto3

    folder = Path(tempfile.mkdtemp(prefix="archiver-bench-serve-", dir=base))
    env = dict(os.environ, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    moto_port, serve_port = free_port(), free_port()
    moto = Child([PY, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)], folder / "moto.log", env)
    try:
        wait_port(moto_port)
        url = f"http://127.0.0.1:{moto_port}"
        client = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="bench",
                              aws_secret_access_key="bench")
        client.create_bucket(Bucket="bench")
        client.upload_fileobj(_Zeros(size_mib * 2**20), "bench", "ai/v/00.mp4", ExtraArgs={"ContentType": "video/mp4"})
        (folder / "config.yaml").write_text(yaml.safe_dump({
            "state_dir": str(folder / "state"), "providers": {"kie": {"type": "kie", "api_key": "bench"}},
            "storage": {"backend": "s3", "s3": {"bucket": "bench", "prefix": "ai/", "endpoint_url": url,
                                                 "region": "us-east-1"}}}))
        server = Child([PY, "-m", "archiver", "-c", str(folder / "config.yaml"), "serve", "--listen",
                        f"127.0.0.1:{serve_port}"], folder / "serve.log", env)
        try:
            wait_port(serve_port)
            idle = rss_mib(server.pid)
            started, got = time.monotonic(), 0
            with urllib.request.urlopen(f"http://127.0.0.1:{serve_port}/v/00.mp4", timeout=60) as reply:
                while chunk := reply.read(2**20):
                    got += len(chunk)
            wall = time.monotonic() - started
            # VmHWM, not wait4's ru_maxrss: that one starts at the parent's size across fork and exec.
            peak = _hwm_mib(server.pid)
        finally:
            usage = server.stop()
    finally:
        moto.stop()
        shutil.rmtree(folder, ignore_errors=True)
    assert got == size_mib * 2**20, got
    return [Row(f"8 serve {size_mib} MiB from S3", wall, got / 1e6 / wall, None, usage.cpu, peak,
                f"RSS {idle:.0f} MiB before the request (peak is VmHWM); moto's own CPU not counted")]


def _hwm_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("VmHWM:")).split()[1]) / 1024


class _Zeros(io.RawIOBase):
    """`size` zero bytes, read in pieces: the upload needs no buffer of the object's size."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def main() -> None:
    """`browse.py FOLDER ASSETS DAYS`: write a generated archive, its state DB and a config into FOLDER.

    `browse.py FOLDER ASSETS DAYS postgres`: the same rows into the DB of FOLDER/config-pg.yaml."""
    folder, assets, days = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    tasks = round(assets / (0.96 * 1.75))  # one task in 25 fails; the others hold 1.75 assets on average
    if sys.argv[4:] == ["postgres"]:
        made = asyncio.run(generate_state(load_config(folder / "config-pg.yaml", require_secrets=False), tasks, days,
                                          images=200))
        print(f"generated {len(made.assets):,} assets into PostgreSQL")
        return
    providers = {n: {"type": k, "api_key": "bench"} | ({"service": "seedance"} if k == "acedata" else {})
                 for n, k in TYPES.items()}
    (folder / "config.yaml").write_text(yaml.safe_dump({"state_dir": str(folder / "state"), "providers": providers,
                                                        "storage": {"local": {"root": str(folder / "archive")}}}))
    (folder / "state").mkdir()
    made = generate(folder / "state/archiver.db", tasks, days, images=200)
    write_local(folder / "archive", made)
    print(f"generated {len(made.assets):,} assets, {len(made.failed):,} failed tasks over {days} days")


if __name__ == "__main__":
    main()
