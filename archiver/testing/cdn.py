"""FaultCdn: a CDN with switchable faults per file, and a canary that counts connections.

Each file is a `Resource` served at /f/{name}. Its `script` says, request by request, what
the server does; the last step repeats. Steps:

    ok        the entity, honouring Range / If-Range (206 + Content-Range; If-Range mismatch: 200)
    cut       as ok, but after `cut_at` body bytes the connection is reset (RST)
    short     as ok, but after `cut_at` body bytes of the declared length the connection closes (FIN)
    stall     as ok, but after `cut_at` body bytes the server goes silent for `stall_for` seconds
    reset     the connection is reset before any response
    misaligned  a 206 that starts at half the offset asked for (a broken range server)
    "500", "429", "403"…   that status (with `retry_after` as Retry-After when set)

Switches: `changed` is a second entity (new bytes, new ETag and Last-Modified) served from
request `change_at` on; `ignore_range` always answers 200 with the full entity;
`ignore_if_range` honours Range whatever If-Range says; `chunked` omits Content-Length;
`encoding` sets Content-Encoding (the body is served as given); `redirects` makes
`url(name)` start a chain of that many hops, optionally via `redirect_base` (another
host or port serving this same app); `location` answers /f/{name} with a 302 there.

Recipes: 500 then OK `script=["500", "ok"]`; 429 then OK `script=["429", "ok"], retry_after="1"`;
403 after expiry `script=["cut", "403"]`; over max_bytes: a big `body` (`chunked=True` to hide
its length); wrong type `content_type="text/html"`.

Every request is recorded as a `Hit` (path, query, headers, status, first byte, bytes sent).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.test_utils import TestServer

PIECE = 16 * 1024
REDIRECT_CODES = (302, 301, 303, 307, 308)
_RANGE = re.compile(r"bytes=(\d+)-(\d*)")
LAST_MODIFIED = ("Sat, 22 Nov 2025 10:00:00 GMT", "Sat, 22 Nov 2025 11:00:00 GMT")


def etag_of(entity: bytes) -> str:
    return '"' + hashlib.sha256(entity).hexdigest()[:20] + '"'


@dataclass
class Resource:
    body: bytes
    script: list[str] = field(default_factory=lambda: ["ok"])
    cut_at: int = 0
    stall_for: float = 1.0
    retry_after: str | None = None
    changed: bytes | None = None
    change_at: int = 2
    validator: str = "etag"  # etag | last-modified | both | none
    content_type: str = "application/octet-stream"
    encoding: str | None = None
    chunked: bool = False
    ignore_range: bool = False
    ignore_if_range: bool = False
    redirects: int = 0
    redirect_base: str | None = None
    location: str | None = None
    requests: int = 0  # requests that reached /f/{name}

    def final(self) -> bytes:
        """The entity a successful download must end with."""
        return self.changed if self.changed is not None else self.body

    def entity(self) -> tuple[bytes, str, str]:
        """The bytes, ETag and Last-Modified the current request sees."""
        new = self.changed is not None and self.requests >= self.change_at
        entity = self.changed if new and self.changed is not None else self.body
        return entity, etag_of(entity), LAST_MODIFIED[int(new)]


@dataclass
class Hit:
    path: str
    query: str
    host: str
    headers: dict[str, str]
    status: int = 0  # -1: the connection was reset before any response
    start: int = 0  # offset of the first body byte sent
    sent: int = 0  # body bytes written


class FaultCdn:
    """The CDN app; `base` is set once a server runs it (FakeProviders does)."""

    def __init__(self) -> None:
        self.resources: dict[str, Resource] = {}
        self.hits: list[Hit] = []
        self.base = ""

    def add(self, name: str, resource: Resource) -> Resource:
        self.resources[name] = resource
        return resource

    def url(self, name: str, base: str | None = None) -> str:
        """A signed-looking URL for `name`: its query string is the secret logs must not show."""
        res = self.resources[name]
        path = f"/r/{res.redirects}/{name}" if res.redirects else f"/f/{name}"
        return f"{base or self.base}{path}?sig=SIGNED-{os.urandom(4).hex()}&Expires=1"

    def hits_for(self, name: str) -> list[Hit]:
        """Requests that reached the file itself (not the redirect hops)."""
        return [h for h in self.hits if h.path == f"/f/{name}"]

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/f/{name}", self.file)
        app.router.add_get("/r/{hops:\\d+}/{name}", self.hop)
        return app

    def _hit(self, request: web.Request) -> Hit:
        hit = Hit(request.path, request.query_string, request.host, dict(request.headers))
        self.hits.append(hit)
        return hit

    async def hop(self, request: web.Request) -> web.StreamResponse:
        hit = self._hit(request)
        hops, name = int(request.match_info["hops"]), request.match_info["name"]
        res = self.resources[name]
        nxt = f"/r/{hops - 1}/{name}" if hops > 1 else f"/f/{name}"
        hit.status = REDIRECT_CODES[hops % len(REDIRECT_CODES)]
        location = f"{res.redirect_base or ''}{nxt}?{request.query_string}"
        return web.Response(status=hit.status, headers={"Location": location})

    async def file(self, request: web.Request) -> web.StreamResponse:
        hit = self._hit(request)
        res = self.resources.get(request.match_info["name"])
        if res is None:
            hit.status = 404
            return web.Response(status=404)
        res.requests += 1
        step = res.script[min(res.requests, len(res.script)) - 1]
        if res.location is not None:
            hit.status = 302
            return web.Response(status=302, headers={"Location": res.location})
        if step == "reset":
            reset_connection(request)
            hit.status = -1
            return web.Response()  # never sent: the connection is gone
        if step.isdigit():
            hit.status = int(step)
            headers = {"Retry-After": res.retry_after} if res.retry_after else {}
            return web.Response(status=hit.status, text=f"HTTP {step} from the fake CDN", headers=headers)
        return await self._send(request, hit, res, step)

    async def _send(self, request: web.Request, hit: Hit, res: Resource, step: str) -> web.StreamResponse:
        entity, tag, modified = res.entity()
        status, start, headers = 200, 0, {"Content-Type": res.content_type}
        if res.validator in ("etag", "both"):
            headers["ETag"] = tag
        if res.validator in ("last-modified", "both"):
            headers["Last-Modified"] = modified
        if res.encoding:
            headers["Content-Encoding"] = res.encoding
        headers["Accept-Ranges"] = "none" if res.ignore_range else "bytes"
        asked = _RANGE.fullmatch(request.headers.get("Range", ""))
        if_range = request.headers.get("If-Range")
        fresh = if_range is None or res.ignore_if_range or if_range in (tag, modified)
        if asked and not res.ignore_range and fresh:
            start = int(asked[1])
            if start >= len(entity):
                hit.status = 416
                return web.Response(status=416, headers={"Content-Range": f"bytes */{len(entity)}"})
            if step == "misaligned":
                start //= 2
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(entity) - 1}/{len(entity)}"
        payload = entity[start:]
        resp = web.StreamResponse(status=status, headers=headers)
        if res.chunked:
            resp.enable_chunked_encoding()
        else:
            resp.content_length = len(payload)
        hit.status, hit.start = status, start
        await resp.prepare(request)
        limit = res.cut_at if step in ("cut", "short", "stall") else len(payload)
        for at in range(0, limit, PIECE):
            await resp.write(payload[at:min(at + PIECE, limit)])
            hit.sent = min(at + PIECE, limit)
        if step == "cut":
            # Let the client read what was sent: aiohttp drops what it holds unread once the
            # reset is in, and a loaded machine's client may take a while to get to it.
            await asyncio.sleep(0.3)
            reset_connection(request)
        elif step == "short":
            await asyncio.sleep(0.1)
            if request.transport is not None:
                request.transport.close()
        elif step == "stall":
            await asyncio.sleep(res.stall_for)
            reset_connection(request)
        else:
            await resp.write_eof()
        return resp


def reset_connection(request: web.Request) -> None:
    """Drop the connection with an RST, as a crashed server or a middlebox would."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


@asynccontextmanager
async def serve_at(app: web.Application, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """Run `app` on a free port of `host` (a loopback address); yield its base URL."""
    if not host.startswith("127."):
        raise ValueError(f"the fakes listen on loopback only (127.0.0.0/8), not {host}")
    server = TestServer(app, host=host)
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


@dataclass
class Canary:
    """A raw TCP listener that records every connection it accepts, and answers nothing."""

    base: str = ""
    connections: list[str] = field(default_factory=list)


@asynccontextmanager
async def canary(host: str = "127.0.0.2") -> AsyncIterator[Canary]:
    if not host.startswith("127."):
        raise ValueError(f"the fakes listen on loopback only (127.0.0.0/8), not {host}")
    seen = Canary()

    async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.connections.append(str(writer.get_extra_info("peername")))
        writer.close()

    server = await asyncio.start_server(accepted, host, 0)
    seen.base = f"http://{host}:{server.sockets[0].getsockname()[1]}"
    try:
        yield seen
    finally:
        server.close()
        await server.wait_closed()
