"""Real HTTP servers on 127.0.0.1 for tests: start an aiohttp app, get its base URL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web
from aiohttp.test_utils import TestServer

REQUESTS = web.AppKey("requests", list)


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """Run `app` on a free loopback port; yield its base URL without a trailing slash."""
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


def canned(status: int, body: bytes, headers: dict[str, str] | None = None) -> web.Application:
    """An app that answers every request with the same reply, and logs what it was asked."""
    app = web.Application()
    app[REQUESTS] = []

    async def handler(request: web.Request) -> web.Response:
        app[REQUESTS].append((request.method, request.path_qs, await request.read()))
        return web.Response(status=status, body=body, headers=headers,
                            content_type="application/json")

    app.router.add_route("*", "/{tail:.*}", handler)
    return app


HEADERS = web.AppKey("headers", list)


def routed(replies: dict[str, tuple[int, bytes]]) -> web.Application:
    """Like `canned`, but answers by request path (no query); other paths get a JSON 404.

    Logs what it was asked in app[REQUESTS] as `canned` does, and each request's headers
    in app[HEADERS].
    """
    app = web.Application()
    app[REQUESTS] = []
    app[HEADERS] = []

    async def handler(request: web.Request) -> web.Response:
        app[REQUESTS].append((request.method, request.path_qs, await request.read()))
        app[HEADERS].append(dict(request.headers))
        status, body = replies.get(request.path, (404, b'{"code":404,"message":"not found"}'))
        return web.Response(status=status, body=body, content_type="application/json")

    app.router.add_route("*", "/{tail:.*}", handler)
    return app
