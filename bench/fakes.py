"""Fake kie API and CDN for the benchmarks, each run as its own process on 127.0.0.1.

    python bench/fakes.py api --port P --cdn http://127.0.0.1:Q --files 2 --size 2097152 --kind png
    python bench/fakes.py cdn --port Q

Both are stateless about content, so they cost little per request: the API answers any
task ID with the same shape (running for `--running-polls` polls, then success), and the
CDN serves `/f/{size}/{name}.{kind}` as deterministic bytes made chunk by chunk, so a
512 MiB body never sits in memory. GET /_bench/log returns what each saw, with wall-clock
times (`time.time()`, comparable across processes on one host) for the latency figures.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import time
from typing import Any

from aiohttp import web

MAGIC = {"png": b"\x89PNG\r\n\x1a\n", "mp4": b"\x00\x00\x00\x18ftypmp42"}
CHUNK = 1 << 20
CREATED_MS = 1763799990000


def result_url(cdn: str, task_id: str, index: int, size: int, kind: str) -> str:
    """Where the fake CDN serves one result; the query stands in for a signature."""
    return f"{cdn}/f/{size}/{task_id}-{index}.{kind}?sig=bench"


class Api:
    """kie's recordInfo: `running_polls` answers of "generating", then success (-1: never)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.polls: dict[str, int] = {}
        self.log: dict[str, list[tuple[float, str]]] = {}
        self.param = json.dumps({"model": "bench-image", "input": {"prompt": "a lighthouse at dusk"}})

    async def record_info(self, request: web.Request) -> web.Response:
        task_id = request.query.get("taskId", "")
        seen = self.polls.get(task_id, 0)
        self.polls[task_id] = seen + 1
        running = self.args.running_polls < 0 or seen < self.args.running_polls
        state = "generating" if running else "success"
        urls = [] if running else [result_url(self.args.cdn, task_id, i, self.args.size, self.args.kind)
                                   for i in range(self.args.files)]
        data = {
            "taskId": task_id, "model": "bench-image", "state": state, "param": self.param,
            "resultJson": "" if running else json.dumps({"resultUrls": urls}),
            "failCode": "", "failMsg": "", "completeTime": None if running else CREATED_MS + 10_000,
            "createTime": CREATED_MS, "updateTime": CREATED_MS + 10_000,
        }
        # Logged as the answer leaves: for a success this is when the daemon can first know.
        self.log.setdefault(task_id, []).append((time.time(), state))
        return web.json_response({"code": 200, "msg": "success", "data": data})

    async def dump(self, request: web.Request) -> web.Response:
        return web.json_response(self.log)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/v1/jobs/recordInfo", self.record_info)
        app.router.add_get("/_bench/log", self.dump)
        return app


class Cdn:
    """Streams `/f/{size}/{name}` with Content-Length; each body starts with its kind's magic."""

    def __init__(self) -> None:
        # One 1 MiB block reused for every chunk: deterministic and free to produce.
        self.block = random.Random(0).randbytes(CHUNK)
        self.first_hit: dict[str, float] = {}

    def first_chunk(self, name: str, kind: str) -> bytes:
        # The name's digest up front makes every file's content (and sha256) its own.
        prefix = MAGIC.get(kind, b"") + hashlib.sha256(name.encode()).digest()
        return prefix + self.block[len(prefix):]

    async def serve(self, request: web.Request) -> web.StreamResponse:
        size, name = int(request.match_info["size"]), request.match_info["name"]
        self.first_hit.setdefault(name, time.time())
        kind = name.rpartition(".")[2]
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.content_length = size
        await resp.prepare(request)
        view, sent = memoryview(self.first_chunk(name, kind)), 0
        while sent < size:
            n = min(CHUNK, size - sent)
            await resp.write(view[:n])
            sent += n
            view = memoryview(self.block)
        await resp.write_eof()
        return resp

    async def dump(self, request: web.Request) -> web.Response:
        return web.json_response(self.first_hit)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/f/{size:\\d+}/{name}", self.serve)
        app.router.add_get("/_bench/log", self.dump)
        return app


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=("api", "cdn"))
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cdn", default="")
    p.add_argument("--files", type=int, default=1)
    p.add_argument("--size", type=int, default=1 << 20)
    p.add_argument("--kind", default="png")
    p.add_argument("--running-polls", type=int, default=0)
    args = p.parse_args(argv)
    server: Any = Api(args) if args.role == "api" else Cdn()
    web.run_app(server.app(), host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
