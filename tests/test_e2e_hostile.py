"""End to end against hostile providers: answers that echo our secrets back, in every status,
from every provider type, never put a secret in a file, the log, the CLI or the HTTP server.

One daemon runs one world (a provider entry per type and answer, each with its own key) and the
tests check each provider type's keys against everything it left behind.
"""

from __future__ import annotations

import asyncio
import json
import os
import zlib
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from archiver.config import PROVIDER_TYPES
from tests.support.daemon import DaemonProcess, base_config, cli, write_config
from tests.support.servers import canned, serve
from tests.support.web import free_port, wait_http

TOKEN = "http-TOKEN-hostile-77e1c0"
HOOK = "hook-SECRET-hostile-3a9d"  # a webhook secret of one kie entry
CASES = ("200", "200json", "400", "401", "422", "500")


def key_of(ptype: str, case: str) -> str:
    return f"sk-{ptype}-{case}-SECRET-{zlib.crc32(f'{ptype}/{case}'.encode()):08x}"


def answer(case: str, key: str) -> tuple[int, bytes]:
    """The provider's answer for `case`: every field a provider writes its words in quotes our secrets."""
    words = f"bad key: Bearer {key}; token {TOKEN}; hook {HOOK}"
    doc = {"code": 422, "msg": f"invalid token: Bearer {key}", "message": words, "detail": words,
           "error": {"code": "bad_key", "message": words}, "status": "failed", "failMsg": words,
           "data": {"state": "fail", "failCode": "422", "failMsg": words, "status": "FAILURE",
                    "failure_reason": words}}
    if case in ("200", "500"):
        return int(case), words.encode()  # not JSON
    if case == "200json":
        return 200, json.dumps(doc).encode()
    return int(case), json.dumps(doc | {"code": int(case)}).encode()


def entry(ptype: str, base: str, case: str) -> dict[str, Any]:
    doc: dict[str, Any] = {"type": ptype, "base_url": base, "api_key": f"${{KEY_{ptype}_{case}}}",
                           "poll_intervals": ["0.5s"], "give_up_after": "1h"}
    if ptype == "acedata":
        doc["service"] = "seedream"
    if ptype == "fal":
        doc["app"] = "fal-ai/flux/dev"
    if ptype == "kie" and case == "422":
        doc["callbacks"] = {"secret": "${HOOK}"}
    return doc


@dataclass
class Seen:
    """Everything the world left that a person or a program may read, as text, by where it came from."""

    texts: dict[str, str]
    log: str


async def _run_world(tmp: Path) -> Seen:
    env = dict(os.environ, HOOK=HOOK, ARCHIVER_HTTP_TOKEN=TOKEN)
    providers: dict[str, Any] = {}
    async with AsyncExitStack() as stack:
        for ptype in PROVIDER_TYPES:
            for case in CASES:
                base = await stack.enter_async_context(serve(canned(*answer(case, key_of(ptype, case)))))
                providers[f"{ptype}-{case}"] = entry(ptype, base, case)
                env[f"KEY_{ptype}_{case}"] = key_of(ptype, case)
        port = free_port()
        config = write_config(tmp / "config.yaml", base_config(
            tmp, providers, http={"listen": f"127.0.0.1:{port}", "token": "${ARCHIVER_HTTP_TOKEN}"},
            index={"every": "1s"}))
        (tmp / "inbox.txt").write_text("".join(f"{name} t-{name}\n" for name in providers))
        daemon = DaemonProcess(config, env, tmp / "daemon.log")
        await daemon.start()
        texts: dict[str, str] = {}
        try:
            base = f"http://127.0.0.1:{port}"
            await wait_http(daemon, base)
            # Every task asked at least once: ended, or waiting with the answer's error.
            await daemon.wait_for(lambda s: sum(s["counts"].values()) == len(providers)
                                  and all(t["polls"] >= 1 for t in s["in_flight"]), timeout=60)
            await asyncio.sleep(1.5)  # an index round
            async with aiohttp.ClientSession() as client:
                for path in ("/status", "/metrics", "/healthz"):
                    async with client.get(base + path, headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
                        texts[path] = await resp.text()
            for args in (("status", "--json"), ("status",)):
                texts[" ".join(args)] = (await cli(config, *args, env=env))[1]
            shows = await asyncio.gather(*(cli(config, "show", name, f"t-{name}", "--json", env=env)
                                           for name in providers if name.endswith(("-400", "-422", "-200json"))))
            texts |= {f"show {i}": out for i, (_, out, _) in enumerate(shows)}
        finally:
            assert await daemon.stop() == 0
        texts["index"] = (await cli(config, "index", env=env))[1]
    for path in tmp.rglob("*"):
        if path.is_file():
            texts[str(path)] = path.read_bytes().decode("utf-8", "replace")
    return Seen(texts, (tmp / "daemon.log").read_text())


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Seen:
    return asyncio.run(_run_world(tmp_path_factory.mktemp("hostile")))


@pytest.mark.parametrize("ptype", PROVIDER_TYPES)
def test_a_key_echoed_back_is_redacted_everywhere(world: Seen, ptype: str) -> None:
    secrets = [key_of(ptype, case) for case in CASES] + [TOKEN, HOOK]
    for where, text in world.texts.items():
        for secret in secrets:
            assert secret not in text, f"{secret} in {where}"
    # Not vacuous: the daemon did read the echo, and kept what it said with the secret cut out.
    lines = [line for line in world.log.splitlines() if f"provider={ptype}-200 " in line]
    assert any("bad key: Bearer [redacted]" in line for line in lines), lines
    assert f"{ptype}-" in world.texts["status --json"]
    if ptype == "kie":  # kie's 422 ends the task with kie's words: in its _failed record and the index
        [record] = [t for where, t in world.texts.items() if where.endswith("_failed/kie-422/t-kie-422.json")]
        assert json.loads(record)["provider_message"] == "invalid token: Bearer [redacted]"
