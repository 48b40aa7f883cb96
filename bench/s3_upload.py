"""One large file into S3 (moto, its own process): `put_file` without a condition against
`if_absent=True` (a HEAD first, then the same parts, one at a time). Prints wall seconds,
MB/s and each uploader's peak RSS; run: .venv/bin/python bench/s3_upload.py [--size MIB]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import boto3
from measure import Child, free_port, wait_port

PY = sys.executable


def upload(endpoint: str, source: Path, key: str, if_absent: bool) -> None:
    """In a child process: import, note the RSS, upload once, print the figures."""
    from archiver.config import S3Config
    from archiver.storage.s3 import S3Storage

    async def put() -> float:
        storage = S3Storage(S3Config(bucket="bench", endpoint_url=endpoint, region="us-east-1"))
        started = time.monotonic()
        await storage.put_file(key, source, content_type="video/mp4", sha256=sys.argv[-1],
                               if_absent=if_absent)
        await storage.close()
        return time.monotonic() - started

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    wall = asyncio.run(put())
    print(f"{wall:.2f} {before:.0f}")


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__)
    args.add_argument("--size", type=int, default=512, help="MiB (default 512)")
    args.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    opts = args.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="archiver-bench-s3-", dir=opts.dir))
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
           "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
    port = free_port()
    moto = Child([PY, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], folder / "moto.log", env)
    try:
        wait_port(port)
        endpoint = f"http://127.0.0.1:{port}"
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bench",
                     aws_secret_access_key="bench").create_bucket(Bucket="bench")
        source = folder / "big.mp4"
        digest = hashlib.sha256()
        with open(source, "wb") as f:
            block = os.urandom(1024**2)
            for _ in range(opts.size):
                f.write(block)
                digest.update(block)
        print(f"{opts.size} MiB file, moto on 127.0.0.1:{port}")
        print(f"{'mode':<28}{'wall s':>8}{'MB/s':>8}{'RSS before MiB':>16}{'peak RSS MiB':>14}")
        for n, (mode, if_absent) in enumerate((("unconditional", False), ("if_absent", True))):
            out = folder / f"child-{n}.log"
            child = Child([PY, __file__, "--child", endpoint, str(source), f"k{n}.mp4", str(if_absent),
                           digest.hexdigest()], out, env)
            usage = child.wait()
            line = out.read_text().strip().splitlines()[-1]
            if usage.code != 0:
                raise SystemExit(f"{mode}: exit {usage.code}: {line}")
            wall, before = (float(x) for x in line.split())
            print(f"{mode:<28}{wall:>8.2f}{opts.size * 1024**2 / 1e6 / wall:>8.0f}{before:>16.0f}"
                  f"{usage.peak_rss_mib:>14.0f}")
    finally:
        moto.stop()
        shutil.rmtree(folder)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        upload(sys.argv[2], Path(sys.argv[3]), sys.argv[4], sys.argv[5] == "True")
    else:
        main()
