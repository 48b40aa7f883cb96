"""The daemon's HTTP server (docs/http-api.md), on the daemon's own event loop.

Every handler does a few small state DB operations and returns; polling and downloads
live in their own tasks, so a slow or hostile client only ever holds its own coroutine.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from archiver.config import Config
from archiver.errors import ArchiverError
from archiver.inbox import BadLine, parse_line
from archiver.model import TaskRef
from archiver.providers import PROVIDERS
from archiver.providers.callbacks import CallbackRefused, Incoming
from archiver.providers.signatures import Jwks
from archiver.state import STATE_ERRORS, StateStore, Task
from archiver.status import current_status
from archiver.web.callbacks import ReplayGuard
from archiver.web.metrics import CONTENT_TYPE, Metrics

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20  # POST /tasks and callbacks: larger bodies get 413
MAX_ITEMS = 1000
PROBE_EVERY = 1.0  # /healthz writes to the state DB at most this often


@dataclass(frozen=True)
class Hooks:
    """What the server asks of the daemon."""

    queue: Callable[[Task], None]  # start polling a task just stored
    poll_now: Callable[[Task], Awaitable[bool]]  # poll a waiting task at once; False if this daemon does not hold it
    store_failing_since: Callable[[], float | None]  # first failed write of a store outage, or None


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class WebServer:
    def __init__(self, config: Config, state: StateStore, metrics: Metrics, hooks: Hooks) -> None:
        assert config.http is not None
        self.config = config
        self.http = config.http
        self.state = state
        self.metrics = metrics
        self.hooks = hooks
        self.replays = ReplayGuard()
        self.probed_at = 0.0
        self.probe_error: str | None = None
        self.runner: web.AppRunner | None = None
        self.session: aiohttp.ClientSession | None = None  # for public key sets, made when first needed
        self.keysets: dict[str, Jwks] = {}

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics_text)
        app.router.add_get("/status", self.status)
        app.router.add_post("/tasks", self.tasks)
        app.router.add_post("/callbacks/{entry}", self.callback)
        return app

    async def start(self) -> None:
        """Listen on http.listen; a port already taken is a start-up error that says so."""
        self.runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.http.host, self.http.port)
        try:
            await site.start()
        except OSError as e:
            await self.runner.cleanup()
            raise ArchiverError(f"http.listen: cannot listen on {self.http.host}:{self.http.port}: "
                                f"{e.strerror or e} (is another archiver or program using the port?)") from None
        log.info("http: listening on %s:%d", self.http.host, self.http.port)

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
        if self.session is not None:
            await self.session.close()

    def _jwks(self, url: str) -> Jwks:
        if self.session is None:
            self.session = aiohttp.ClientSession()
        if url not in self.keysets:
            self.keysets[url] = Jwks(self.session, url)
        return self.keysets[url]

    # --- health, metrics, status --------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        reasons = []
        if (problem := await self._probe_state()) is not None:
            reasons.append(f"state DB cannot be written: {problem}")
        since = self.hooks.store_failing_since()
        if since is not None and time.time() - since >= self.http.storage_grace:
            reasons.append(f"store writes have failed for {time.time() - since:.0f}s")
        if reasons:
            return web.json_response({"status": "failing", "reasons": reasons}, status=503)
        return web.json_response({"status": "ok", "state_db": "writable",
                                  "store": "ok" if since is None else "failing"})

    async def _probe_state(self) -> str | None:
        """Write to the state DB and create a file in state_dir (SQLite needs both); cached 1 s."""
        now = time.monotonic()
        if now - self.probed_at < PROBE_EVERY:
            return self.probe_error
        self.probed_at, self.probe_error = now, None
        probe = self.config.state_dir / ".healthz"
        try:
            await self.state.probe_write()
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.close(fd)
            probe.unlink()
        except (OSError, *STATE_ERRORS) as e:  # type: ignore[misc]  # a tuple of exception types
            self.probe_error = getattr(e, "strerror", None) or str(e)
        return self.probe_error

    async def metrics_text(self, request: web.Request) -> web.Response:
        return web.Response(body=await self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    async def status(self, request: web.Request) -> web.Response:
        try:
            report = await current_status(self.state, self.config)
        except STATE_ERRORS as e:
            return _error(503, f"the state DB cannot be read: {e}")
        return web.json_response(report)

    # --- POST /tasks ----------------------------------------------------------------------

    async def tasks(self, request: web.Request) -> web.Response:
        token = self.http.token.reveal()
        if not token:
            return _error(403, "task intake is off: set http.token to turn it on")
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        given = given.strip() if scheme.lower() == "bearer" else ""
        if not hmac.compare_digest(given.encode("utf-8", "replace"), token.encode()):
            return web.json_response({"error": "a valid Authorization: Bearer token is required"}, status=401,
                                     headers={"WWW-Authenticate": "Bearer"})
        if request.content_type != "application/json":
            return _error(415, "send the tasks as JSON (curl: -H 'Content-Type: application/json')")
        items = await self._items(request)
        if isinstance(items, web.Response):
            return items
        answers: list[dict[str, Any]] = []
        refs: list[TaskRef] = []
        for item in items:
            ref, answer = self._check(item)
            answers.append(answer)
            if ref is not None:
                refs.append(ref)
        try:
            stored = await self.state.add_tasks(refs, note="http")
        except STATE_ERRORS as e:
            log.error("http: POST /tasks could not be stored: %s", e)
            return _error(503, "the state DB cannot be written; nothing was queued, send again later")
        results = iter(stored)
        for answer in answers:
            if answer["result"] == "rejected":
                continue
            task = next(results)
            answer["result"] = "known" if task is None else "queued"
            if task is not None:
                log.info("provider=%s task_id=%s: queued over HTTP", task.provider, task.task_id,
                         extra={"provider": task.provider, "task_id": task.task_id, "state": "queued"})
                self.hooks.queue(task)
        return web.json_response(answers, status=202)

    async def _items(self, request: web.Request) -> list[Any] | web.Response:
        if (request.content_length or 0) > MAX_BODY:
            return _error(413, f"the body is over {MAX_BODY} bytes")
        try:
            doc = json.loads(await request.read())
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"the body is over {MAX_BODY} bytes")
        except (ValueError, RecursionError) as e:
            return _error(400, f"the body is not JSON: {str(e)[:120]}")
        items = doc if isinstance(doc, list) else [doc]
        if not isinstance(doc, (list, dict)):
            return _error(400, "send one task object or a list of them")
        if len(items) > MAX_ITEMS:
            return _error(413, f"at most {MAX_ITEMS} tasks per request")
        return items

    def _check(self, item: Any) -> tuple[TaskRef | None, dict[str, Any]]:
        """Validate one item exactly as an inbox JSON line is validated."""
        provider = item.get("provider") if isinstance(item, dict) else None
        task_id = item.get("task_id") if isinstance(item, dict) else None
        answer: dict[str, Any] = {"provider": provider if isinstance(provider, str) else None,
                                  "task_id": task_id if isinstance(task_id, str) else None}
        if not isinstance(item, dict):
            return None, answer | {"result": "rejected", "reason": "each task must be a JSON object"}
        try:
            line = json.dumps(item, ensure_ascii=False).encode()
            ref = parse_line(line, self.config.providers.keys(), self.config.inbox.default_provider)
        except (BadLine, ValueError) as e:
            return None, answer | {"result": "rejected", "reason": str(e)}
        assert ref is not None  # a JSON object is never a blank or comment line
        return ref, answer | {"result": "pending"}

    # --- POST /callbacks/{entry} ----------------------------------------------------------

    async def callback(self, request: web.Request) -> web.Response:
        name = request.match_info["entry"]
        entry = self.config.providers.get(name)
        if entry is None or entry.callbacks is None:
            return _error(404, "no callbacks for this entry")
        if (request.content_length or 0) > MAX_BODY:
            return _error(413, f"the body is over {MAX_BODY} bytes")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"the body is over {MAX_BODY} bytes")
        now = time.time()
        try:
            verify = PROVIDERS[entry.type].verify_callback
            hint = await verify(Incoming(entry, request.headers, request.query, body, now, self._jwks))
        except CallbackRefused as e:
            log.warning("provider=%s: callback refused: %s", name, e, extra={"provider": name})
            return _error(e.status, str(e))
        key = f"{name}:{hint.replay_key}"
        if not self.replays.first(key, now):
            return web.json_response({"result": "replay"})
        try:
            return web.json_response({"result": await self._hint(name, hint.task_id, entry.callbacks.adopt)})
        except STATE_ERRORS as e:
            self.replays.seen.pop(key, None)  # not handled: the provider's next try must not count as a replay
            log.error("provider=%s: callback could not be handled: %s", name, e, extra={"provider": name})
            return _error(503, "the state DB cannot be written; send again later")

    async def _hint(self, name: str, task_id: str, adopt: bool) -> str:
        """A valid callback: poll its task now. Its body's URLs are never used."""
        fields = {"provider": name, "task_id": task_id}
        task = await self.state.find(name, task_id)
        if task is None and not adopt:
            log.info("provider=%s task_id=%s: callback for an unknown task ignored (callbacks.adopt is off)",
                     name, task_id, extra=fields)
            return "ignored"
        if task is None:
            new = (await self.state.add_tasks([TaskRef(name, task_id)], note="callback"))[0]
            if new is not None:
                log.info("provider=%s task_id=%s: adopted from a callback", name, task_id, extra=fields)
                self.hooks.queue(new)
            return "queued"
        if await self.hooks.poll_now(task):
            log.info("provider=%s task_id=%s: callback: polling now", name, task_id, extra=fields)
            return "polling"
        return "ignored"
