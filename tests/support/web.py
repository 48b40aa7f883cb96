"""The real daemon with its HTTP server on, a fake provider world, and an HTTP client to it."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import socket
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from archiver.testing import FakeApis
from tests.support.daemon import DaemonProcess, base_config, write_config
from tests.support.servers import serve

API_KEY = "kie-SECRET-7d1f00c0ffee"
TOKEN = "http-TOKEN-5b0c1a2e9d"
KIE_SECRET = "kie-HMAC-KEY-51f0e3"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def kie_headers(task_id: str, secret: str = KIE_SECRET, stamp: int | None = None) -> dict[str, str]:
    """kie's webhook headers: base64(HMAC-SHA256(secret, taskId + "." + timestamp))."""
    stamp = int(time.time()) if stamp is None else stamp
    digest = hmac.new(secret.encode(), f"{task_id}.{stamp}".encode(), hashlib.sha256).digest()
    return {"X-Webhook-Timestamp": str(stamp), "X-Webhook-Signature": base64.b64encode(digest).decode()}


@dataclass
class Web:
    """A running daemon with http on: its base URL, config, env, the fake world, a client."""

    daemon: DaemonProcess
    base: str
    config: Path
    env: dict[str, str]
    fake: FakeApis
    client: aiohttp.ClientSession

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.client.get(self.base + path) as resp:
            body = await resp.json() if resp.content_type == "application/json" else await resp.text()
            return resp.status, body

    async def post(self, path: str, data: Any = None, *, json: Any = None,
                   headers: dict[str, str] | None = None) -> tuple[int, Any]:
        async with self.client.post(self.base + path, data=data, json=json, headers=headers) as resp:
            body = await resp.json() if resp.content_type == "application/json" else await resp.text()
            return resp.status, body

    async def submit(self, items: Any) -> tuple[int, Any]:
        return await self.post("/tasks", json=items, headers={"Authorization": f"Bearer {TOKEN}"})


async def wait_http(daemon: DaemonProcess, base: str, timeout: float = 30) -> None:
    """Return once the daemon answers /healthz at all."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as client:
        while time.monotonic() < deadline:
            if daemon.proc and daemon.proc.returncode is not None:
                raise AssertionError(f"daemon exited {daemon.proc.returncode}:\n{daemon.log.read_text()[-3000:]}")
            try:
                async with client.get(base + "/healthz"):
                    return
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.1)
    raise AssertionError(f"no HTTP answer in {timeout}s:\n{daemon.log.read_text()[-3000:]}")


def kie_entry(base: str, **extra: Any) -> dict[str, Any]:
    """A kie entry on the fake, polled every `poll` (default 30s: only callbacks make it sooner)."""
    return {"type": "kie", "api_key": "${KIE_API_KEY}", "base_url": base, "poll_intervals": ["30s"]} | extra


# Root ignores file modes; without these two capabilities it obeys them, as the daemon's
# unprivileged user does under systemd.
NO_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]


class PrefixedDaemon(DaemonProcess):
    """`archiver run` started through a wrapper command such as NO_DAC."""

    def __init__(self, config: Path, env: dict[str, str], log: Path, prefix: list[str]) -> None:
        super().__init__(config, env, log)
        self.prefix = prefix

    async def start(self) -> None:
        with open(self.log, "ab") as err:
            self.proc = await asyncio.create_subprocess_exec(
                *self.prefix, sys.executable, "-m", "archiver", "run", "-c", str(self.config),
                stdout=asyncio.subprocess.DEVNULL, stderr=err, env=self.env)


@asynccontextmanager
async def web_daemon(tmp: Path, fake: FakeApis, providers: Any = None, http: dict[str, Any] | None = None,
                     prefix: list[str] | None = None, **extra: Any) -> AsyncIterator[Web]:
    """Serve `fake`, start `archiver run` with http on a free port, stop it (SIGTERM) at the end.

    `providers` is a dict of entries, or a callable given the fake's base URL that returns one.
    """
    async with serve(fake.app()) as api:
        fake.base = api
        entries = providers(api) if callable(providers) else providers or {"kie": kie_entry(api)}
        port = free_port()
        http = {"listen": f"127.0.0.1:{port}", "token": "${ARCHIVER_HTTP_TOKEN}"} | (http or {})
        config = write_config(tmp / "config.yaml", base_config(tmp, entries, http=http, **extra))
        env = dict(os.environ, KIE_API_KEY=API_KEY, ARCHIVER_HTTP_TOKEN=TOKEN)
        daemon = PrefixedDaemon(config, env, tmp / "daemon.log", prefix or [])
        await daemon.start()
        base = f"http://127.0.0.1:{port}"
        try:
            await wait_http(daemon, base)
            async with aiohttp.ClientSession() as client:
                yield Web(daemon, base, config, env, fake, client)
        finally:
            if daemon.proc and daemon.proc.returncode is None:
                await daemon.stop()
