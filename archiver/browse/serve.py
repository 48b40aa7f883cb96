"""`archiver serve` (docs/operations.md, archiver serve): the archive root over HTTP, read-only, from either backend.

Only GET and HEAD; a key is served only if it is a stored object under the root, so a
folder is never listed and `..` leads nowhere. Bodies are streamed from the store in
bounded chunks (S3 included), with single-range `Range` support so videos seek.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
from urllib.parse import unquote

from aiohttp import web

from archiver.archive_format.keys import INDEX_PREFIX, PAGE_KEY, check_key
from archiver.archive_format.media import OCTET_STREAM
from archiver.browse import DEFAULT_LISTEN
from archiver.errors import ConfigError, StorageUnavailable
from archiver.storage import Storage

log = logging.getLogger(__name__)
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_NO_CACHE = (PAGE_KEY, INDEX_PREFIX)  # the index changes in place; assets never do


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"serve: --listen {value!r}: expected HOST:PORT, e.g. {DEFAULT_LISTEN}")
    return host, int(port)


def key_of(raw_path: str) -> str | None:
    """The storage key a request path names, or None for anything outside the archive root."""
    path = unquote(raw_path.partition("?")[0])
    if path == "/":
        return PAGE_KEY
    if not path.startswith("/"):
        return None
    try:
        check_key(path[1:])  # refuses "", "..", ".", "//", a trailing "/", NUL and backslashes
    except ValueError:
        return None
    return path[1:]


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end exclusive) for one satisfiable range; None for the whole body; ValueError if unsatisfiable."""
    if not header:
        return None
    m = _RANGE.fullmatch(header.strip())
    if not m or not (m[1] or m[2]):
        return None  # several ranges or another unit: the whole body is a valid answer
    if not m[1]:
        start, end = max(0, size - int(m[2])), size
    else:
        start, end = int(m[1]), min(size, int(m[2]) + 1) if m[2] else size
    if start >= size or start >= end:
        raise ValueError("unsatisfiable")
    return start, end


def app(storage: Storage) -> web.Application:
    async def handle(request: web.Request) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"])
        key = key_of(request.raw_path)
        if key is None:
            raise web.HTTPNotFound()
        try:
            info = await storage.stat(key)
        except FileNotFoundError:
            raise web.HTTPNotFound() from None
        except StorageUnavailable as e:
            log.error("serve %s: %s", key, e)
            raise web.HTTPServiceUnavailable() from None
        headers = {"Accept-Ranges": "bytes", "X-Content-Type-Options": "nosniff",
                   "Content-Type": info.content_type or OCTET_STREAM}
        if key.startswith(_NO_CACHE):
            headers["Cache-Control"] = "no-cache"
        try:
            span = byte_range(request.headers.get("Range"), info.size)
        except ValueError:
            raise web.HTTPRequestRangeNotSatisfiable(headers={"Content-Range": f"bytes */{info.size}"}) from None
        start, end = span or (0, info.size)
        response = web.StreamResponse(status=206 if span else 200, headers=headers)
        if span:
            response.headers["Content-Range"] = f"bytes {start}-{end - 1}/{info.size}"
        response.content_length = end - start
        await response.prepare(request)
        if request.method == "GET":
            try:
                # aclosing: a client that hangs up mid-body must not leave the file or the S3 body open.
                async with contextlib.aclosing(storage.read(key, start, end)) as body:
                    async for chunk in body:
                        await response.write(chunk)
            except (FileNotFoundError, StorageUnavailable) as e:
                log.error("serve %s: stopped mid-body: %s", key, e)
                raise ConnectionResetError from e  # too late for a status: cut the connection
        await response.write_eof()
        return response

    application = web.Application()
    application.router.add_route("*", "/{tail:.*}", handle)
    return application


async def serve(storage: Storage, listen: str) -> None:
    """Serve until SIGTERM or SIGINT."""
    host, port = parse_listen(listen)
    runner = web.AppRunner(app(storage), access_log=None)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await web.TCPSite(runner, host, port).start()
        bound_host, bound_port = runner.addresses[0][:2]  # the real port when 0 was asked for
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        print(f"serving the archive read-only at http://{shown}:{bound_port}/ (Ctrl-C stops)", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()
        await storage.close()
