"""kie's API and a CDN for the benchmarks, each run as its own process on 127.0.0.1.

    python bench/fakes.py api PORT --cdn URL --files 2 --size 2097152 --kind png --running-polls 0 [--finish-after S]
    python bench/fakes.py cdn PORT [--rate BYTES_PER_S]

Neither keeps content, so each costs little per request: the API (kie's JSON as the kit's fake
kie writes it, archiver/testing/kie.py) answers any task ID with "generating" for
`--running-polls` polls (-1: forever), then success, except that a task
named `late-<epoch ms>` (its append time) finishes `--finish-after` seconds after that; the CDN streams
`/f/{size}/{name}.{kind}` as deterministic bytes, one reused 1 MiB block at a time, so a
512 MiB body never sits in memory; `--rate` caps each response (so each connection) at that
many bytes a second, as a far CDN's per-connection bandwidth would. GET /_bench/log returns
what each saw, stamped with `time.time()`, which compares across processes on one host.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import re
import sys
import time
from pathlib import Path
from typing import Any

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # archiver from this checkout
from archiver.testing import FakeTask  # noqa: E402
from archiver.testing.kie import kie_record  # noqa: E402

MAGIC = {"png": b"\x89PNG\r\n\x1a\n", "mp4": b"\x00\x00\x00\x18ftypmp42"}
CHUNK = 1 << 20
PACED_PIECE = 64 * 1024  # a capped response is written in pieces this big, each at its time
LATE = re.compile(r"late-(\d+)")


def result_url(cdn: str, task_id: str, index: int, size: int, kind: str) -> str:
    return f"{cdn}/f/{size}/{task_id}-{index}.{kind}?sig=bench"  # the query stands in for a signature


def api(args: argparse.Namespace) -> web.Application:
    """kie's GET /api/v1/jobs/recordInfo; `resultJson` and `param` are JSON strings, as at kie."""
    polls: dict[str, list[tuple[float, str]]] = {}

    async def record_info(request: web.Request) -> web.Response:
        task_id = request.query.get("taskId", "")
        seen = polls.setdefault(task_id, [])
        running = args.running_polls < 0 or len(seen) < args.running_polls
        if late := LATE.fullmatch(task_id):
            running = time.time() < int(late[1]) / 1000 + args.finish_after
        urls = [result_url(args.cdn, task_id, i, args.size, args.kind) for i in range(args.files)]
        # kie's own JSON, as the kit's fake kie writes it; no task table, so each request costs little.
        data = kie_record(FakeTask("kie", task_id, [], model="bench-image"), "running" if running else "success", urls)
        state = data["state"]
        # Stamped as the answer leaves: for a success, the earliest the daemon can know it.
        seen.append((time.time(), state))
        return web.json_response({"code": 200, "msg": "success", "data": data})

    app = web.Application()
    app.router.add_get("/api/v1/jobs/recordInfo", record_info)
    app.router.add_get("/_bench/log", _dump(polls))
    return app


def cdn(rate: float = 0.0) -> web.Application:
    """Streams `/f/{size}/{name}` with Content-Length; each body starts with its kind's magic.

    With `rate` > 0 each response sends at most `rate` bytes a second."""
    block = random.Random(0).randbytes(CHUNK)
    first_hit: dict[str, float] = {}

    async def serve(request: web.Request) -> web.StreamResponse:
        size, name = int(request.match_info["size"]), request.match_info["name"]
        first_hit.setdefault(name, time.time())
        # The name's digest up front gives every file its own content and sha256.
        prefix = MAGIC.get(name.rpartition(".")[2], b"") + hashlib.sha256(name.encode()).digest()
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.content_length = size
        await resp.prepare(request)
        chunk, sent, started = memoryview(prefix + block[len(prefix):]), 0, time.monotonic()
        while sent < size:
            piece = chunk[: min(size - sent, PACED_PIECE if rate > 0 else CHUNK)]
            if rate > 0 and (ahead := sent / rate - (time.monotonic() - started)) > 0:
                await asyncio.sleep(ahead)
            await resp.write(piece)
            sent += len(piece)
            chunk = chunk[len(piece):] or memoryview(block)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/f/{size:\\d+}/{name}", serve)
    app.router.add_get("/_bench/log", _dump(first_hit))
    return app


def _dump(value: Any) -> Any:
    async def handler(_: web.Request) -> web.Response:
        return web.json_response(value)

    return handler


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=("api", "cdn"))
    p.add_argument("port", type=int)
    p.add_argument("--cdn", default="")
    p.add_argument("--files", type=int, default=1)
    p.add_argument("--size", type=int, default=CHUNK)
    p.add_argument("--kind", default="png")
    p.add_argument("--running-polls", type=int, default=0)
    p.add_argument("--finish-after", type=float, default=60.0, help="api: seconds a late-<epoch ms> task runs")
    p.add_argument("--rate", type=float, default=0.0, help="cdn: bytes a second per response; 0: no cap")
    args = p.parse_args()
    app = api(args) if args.role == "api" else cdn(args.rate)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
