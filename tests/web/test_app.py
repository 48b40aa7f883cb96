"""The HTTP server inside the real daemon: POST /tasks, /status, start-up, load, /healthz."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp
from moto.server import ThreadedMotoServer

from archiver.testing import FakeApis, FakeTask, media_bytes
from tests.support.ci import cannot_run
from tests.support.daemon import DaemonProcess, base_config, cli, write_config
from tests.support.web import API_KEY, NO_DAC, TOKEN, kie_entry, web_daemon

BEARER = {"Authorization": f"Bearer {TOKEN}"}


async def test_post_tasks(tmp_path: Path) -> None:
    fake = FakeApis(API_KEY)
    fake.add(FakeTask("kie", "t-1", ["running", "success"], [media_bytes("png", 2_000, "t1")]))
    async with web_daemon(tmp_path, fake, lambda base: {"kie": kie_entry(base, poll_intervals=["0.2s"])}) as web:
        item = {"provider": "kie", "task_id": "t-1", "labels": {"project": "poster"}}
        # Auth: no header, wrong token, wrong scheme.
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                        {"Authorization": TOKEN}):
            status, body = await web.post("/tasks", json=item, headers=headers)
            assert status == 401, (headers, body)
        # Garbage gets a clear 4xx, never a 500.
        garbage: list[tuple[Any, dict[str, str], int]] = [
            (b"{not json", {"Content-Type": "application/json"}, 400),
            (json.dumps(item).encode(), {"Content-Type": "text/plain"}, 415),
            (b'{"provider": "kie", "task_id": ' + b"9" * 5000 + b"}", {"Content-Type": "application/json"}, 400),
            (b"[" * 50_000 + b"]" * 50_000, {"Content-Type": "application/json"}, 400),
            (b'"just a string"', {"Content-Type": "application/json"}, 400),
            (b"\xff\xfe", {"Content-Type": "application/json"}, 400),
            (io.BytesIO(b" " * (1 << 20) + b"{}"), {"Content-Type": "application/json"}, 413),
            (json.dumps([item] * 1001).encode(), {"Content-Type": "application/json"}, 413),
        ]
        for data, headers, expected in garbage:
            status, body = await web.post("/tasks", data=data, headers=BEARER | headers)
            assert status == expected, (str(data)[:60], status, body)
        # Validated as the inbox validates; accepted items are queued, then known.
        status, body = await web.submit([
            item, item, {"provider": "nope", "task_id": "x"}, {"provider": "kie", "task_id": "../etc"},
            {"provider": "kie", "task_id": "t-2", "labels": {"k": 1}}, "kie t-3",
            {"provider": "kie", "task_id": "t-big", "labels": {"k": "v" * 5000}},
            {"provider": "kie", "task_id": 1e400}])
        assert status == 202
        assert [r["result"] for r in body] == ["queued", "known"] + ["rejected"] * 6
        assert body[0] == {"provider": "kie", "task_id": "t-1", "result": "queued"}
        assert "unknown provider 'nope'" in body[2]["reason"]
        assert "bad task ID" in body[3]["reason"]
        assert "labels must be an object of strings" in body[4]["reason"]
        assert "over 4096 bytes" in body[6]["reason"]
        status, body = await web.submit(item)
        assert (status, body) == (202, [{"provider": "kie", "task_id": "t-1", "result": "known"}])
        await web.daemon.wait_for(lambda s: s["counts"]["archived"] == 1)
        code, out, _ = await cli(web.config, "show", "kie", "t-1", "--json", env=web.env)
        assert code == 0 and json.loads(out)["labels"] == {"project": "poster"}
        # GET /status is `archiver status --json`, from the daemon.
        status, remote = await web.get("/status")
        local = await web.daemon.cli_status()
        assert status == 200 and remote["counts"] == local["counts"] and set(remote) == set(local)
        assert TOKEN not in web.daemon.log.read_text() and API_KEY not in json.dumps(remote)


async def test_tasks_are_refused_with_403_when_no_token_is_set(tmp_path: Path) -> None:
    async with web_daemon(tmp_path, FakeApis(API_KEY), http={"token": ""}) as web:
        status, body = await web.post("/tasks", json={"provider": "kie", "task_id": "a"}, headers=BEARER)
        assert status == 403 and "http.token" in body["error"]
        assert (await web.daemon.status())["counts"]["queued"] == 0


async def test_kill_9_right_after_202_loses_nothing(tmp_path: Path) -> None:
    async with web_daemon(tmp_path, FakeApis(API_KEY)) as web:
        items = [{"provider": "kie", "task_id": f"k9-{i:04d}"} for i in range(1000)]
        status, body = await web.submit(items)
        assert web.daemon.proc is not None
        web.daemon.proc.send_signal(signal.SIGKILL)
        assert status == 202 and {r["result"] for r in body} == {"queued"}
        assert await web.daemon.proc.wait() == -signal.SIGKILL
        counts = (await web.daemon.status())["counts"]
        assert sum(counts.values()) == 1000, counts
        code, out, _ = await cli(web.config, "show", "kie", "k9-0999", "--json", env=web.env)
        assert code == 0 and json.loads(out)["task_id"] == "k9-0999"


async def test_a_port_already_taken_is_a_clear_start_up_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path / "config.yaml", base_config(tmp_path, {
            "kie": {"type": "kie", "api_key": "k", "base_url": "http://127.0.0.1:9"}},
            http={"listen": f"127.0.0.1:{port}"}))
        daemon = DaemonProcess(config, dict(os.environ), tmp_path / "daemon.log")
        await daemon.start()
        assert daemon.proc is not None
        assert await asyncio.wait_for(daemon.proc.wait(), 30) == 1
    log = daemon.log.read_text()
    assert f"http.listen: cannot listen on 127.0.0.1:{port}" in log and "in use" in log, log
    assert "Traceback" not in log


async def test_200_slow_clients_do_not_stall_polling(tmp_path: Path) -> None:
    fake = FakeApis(API_KEY)
    task = fake.add(FakeTask("kie", "busy", ["running"] * 25 + ["success"], [media_bytes("png", 2_000, "b")]))
    async with web_daemon(tmp_path, fake, lambda base: {"kie": kie_entry(base, poll_intervals=["0.2s"])}) as web:
        host, port = web.base.removeprefix("http://").split(":")
        slow = [await asyncio.open_connection(host, int(port)) for _ in range(200)]
        try:
            # Half send headers a byte at a time; half promise a body and trickle it.
            for i, (_, writer) in enumerate(slow):
                head = (b"GET /healthz HTTP/1.1\r\nHost: x\r\n" if i % 2 else
                        b"POST /tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        b"Authorization: Bearer " + TOKEN.encode() + b"\r\nContent-Length: 100000\r\n\r\n[")
                writer.write(head)
            assert (await web.submit({"provider": "kie", "task_id": "busy"}))[0] == 202
            start = time.monotonic()
            for _ in range(10):
                for _, writer in slow:
                    writer.write(b" ")
                status, _ = await web.get("/healthz")
                assert status == 200
                await asyncio.sleep(0.3)
            await web.daemon.wait_for(lambda s: s["counts"]["archived"] == 1, timeout=30)
        finally:
            for _, writer in slow:
                writer.close()
        arrivals = [r.at for r in fake.requests_for("kie")]
        gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
        assert task.polls == 26
        # Polls every 0.2s; a stalled loop would show a gap of seconds while the clients hang on.
        assert max(gaps) < 2.0, f"longest gap between polls {max(gaps):.2f}s; {time.monotonic() - start:.1f}s"


async def test_healthz_is_503_while_the_state_dir_is_read_only(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    prefix = NO_DAC if os.geteuid() == 0 else []
    if prefix and await (await asyncio.create_subprocess_exec(*prefix, "true")).wait():
        cannot_run("the read-only state dir test",
                   "root, and setpriv cannot drop CAP_DAC_OVERRIDE here: a read-only dir would not stop us")
    async with web_daemon(tmp_path, FakeApis(API_KEY), prefix=prefix) as web:
        assert (await web.get("/healthz"))[0] == 200
        state.chmod(0o555)
        try:
            await asyncio.sleep(1.1)  # past the probe's one-second cache
            status, body = await web.get("/healthz")
            assert status == 503, body
            assert body["status"] == "failing" and "state DB cannot be written" in body["reasons"][0]
        finally:
            state.chmod(0o755)
        await asyncio.sleep(1.1)
        status, body = await web.get("/healthz")
        assert status == 200, body


async def test_healthz_is_503_once_the_store_has_failed_for_the_grace(tmp_path: Path, aws_env: None) -> None:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    async with aiohttp.ClientSession() as s, s.put(f"{endpoint}/outage") as resp:
        assert resp.status == 200
    fake = FakeApis(API_KEY)
    fake.add(FakeTask("kie", "s3-1", ["success"], [media_bytes("png", 2_000, "s")]))
    storage = {"backend": "s3", "s3": {"bucket": "outage", "endpoint_url": endpoint}}
    stopped = False
    try:
        async with web_daemon(tmp_path, fake, lambda base: {"kie": kie_entry(base)},
                              http={"storage_grace": "2s"}, storage=storage) as web:
            assert (await web.get("/healthz"))[1]["store"] == "ok"
            server.stop()
            stopped = True
            assert (await web.submit({"provider": "kie", "task_id": "s3-1"}))[0] == 202
            deadline = time.monotonic() + 60
            while (answer := await web.get("/healthz"))[0] == 200:
                assert time.monotonic() < deadline, answer
                await asyncio.sleep(0.3)
            status, body = answer
            assert status == 503 and "store writes have failed for" in body["reasons"][0], body
            assert (await web.daemon.status())["counts"]["downloading"] == 1, "the asset waits for the store"
    finally:
        if not stopped:
            server.stop()
