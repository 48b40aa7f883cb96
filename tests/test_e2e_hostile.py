"""End to end against hostile providers: answers that echo our secrets back, in every status,
from every provider type, never put a secret in a file, the log, the CLI or the HTTP server.

One daemon runs one world (a provider entry per type and answer, each with its own key) and the
tests check each provider type's keys against everything it left behind.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import zlib
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from archiver.providers import PROVIDERS
from archiver.testing import FakeApis, FakeTask, media_bytes
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
        for ptype in PROVIDERS:
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


@pytest.mark.parametrize("ptype", list(PROVIDERS))
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


def _holds(data: bytes, payload: bytes) -> bool:
    """Whether any of ten pieces of `payload` is in `data` (SQLite splits a long value over pages)."""
    return any(payload[i:i + 200] in data for i in range(0, len(payload) - 200, len(payload) // 10))


def _state_bytes(tmp: Path) -> bytes:
    """The SQLite state DB as stored, with its write-ahead log."""
    assert (tmp / "state" / "archiver.db").exists()
    return b"".join(p.read_bytes() for p in (tmp / "state").glob("archiver.db*"))


async def test_control_characters_are_escaped_and_inline_payloads_never_stored(tmp_path: Path) -> None:
    evil = "\x1b]0;PWNED\x07\x1b[2K\rall good\x9b"
    image = media_bytes("png", 1024 * 1024, "inline")
    uri = "data:image/png;base64," + base64.b64encode(image).decode()
    fake = FakeApis("kie-SECRET-hostile-1")
    fake.add(FakeTask("kie", "evil", ["fail"], fail_code="500", fail_msg=evil))
    fake.add(FakeTask("kie", "inline", ["success"], [image], urls=[uri]))
    async with serve(fake.app()) as base:
        fake.base = base
        entries = {"kie": {"type": "kie", "base_url": base, "api_key": "${KIE_KEY}", "poll_intervals": ["0.5s"]}}
        config = write_config(tmp_path / "config.yaml", base_config(tmp_path, entries))
        (tmp_path / "inbox.txt").write_bytes(b"kie evil\nkie inline\nkie \x1b[31mred\x1b]0;inbox\x07\n")
        env = dict(os.environ, KIE_KEY=fake.api_key)
        daemon = DaemonProcess(config, env, tmp_path / "daemon.log", "--burst")
        await daemon.start()
        assert daemon.proc is not None and await asyncio.wait_for(daemon.proc.wait(), 60) == 0
    outputs = {" ".join(args): (await cli(config, *args, env=env))[1]
               for args in (("status",), ("status", "--json"), ("show", "kie", "evil"),
                            ("show", "kie", "evil", "--json"))}
    outputs["log"] = (tmp_path / "daemon.log").read_text()
    for where, text in outputs.items():
        assert not any(c in text for c in "\x1b\x07\x9b\r"), f"a raw control character in {where}"
    for where in ("status", "show kie evil", "log"):
        assert "\\x1b]0;PWNED\\x07\\x1b[2K\\x0dall good\\x9b" in outputs[where], outputs[where]
    assert "\\x1b[31mred\\x1b]0;inbox\\x07" in outputs["status"]  # the rejected line's excerpt
    # The inline image is archived, but its payload is in no sidecar and not in the state DB.
    [asset] = [p for p in (tmp_path / "archive").rglob("inline/00.*") if p.suffix != ".json"]
    assert asset.read_bytes() == image
    sidecar = Path(f"{asset}.json").read_bytes()
    assert len(sidecar) < 10_000 and b"(1.3 MiB, elided)" in sidecar, sidecar[:2000]
    assert not _holds(_state_bytes(tmp_path), base64.b64encode(image))


async def test_an_inline_result_survives_a_kill_before_its_download(tmp_path: Path) -> None:
    """The payload lives only in memory: after kill -9 the task is asked again for it."""
    image = media_bytes("png", 200_000, "replicate-inline")
    fake = FakeApis("rep-SECRET-hostile-2")
    task = fake.add(FakeTask("replicate", "repdata", ["success"], [image], where="data"))
    (tmp_path / "archive").mkdir()
    (tmp_path / "archive" / "rep").write_text("a file where the provider's folder goes: every write fails")
    async with serve(fake.app()) as base:
        fake.base = base
        entries = {"rep": {"type": "replicate", "base_url": base, "api_key": "${REP_KEY}",
                           "poll_intervals": ["0.5s"]}}
        config = write_config(tmp_path / "config.yaml", base_config(tmp_path, entries))
        (tmp_path / "inbox.txt").write_text("rep repdata\n")
        env = dict(os.environ, REP_KEY=fake.api_key)
        first = DaemonProcess(config, env, tmp_path / "daemon.log")
        await first.start()
        await first.wait_for(lambda s: any(t["last_error"] and "storage" in t["last_error"]
                                           for t in s["in_flight"]) or "storage" in json.dumps(s["health"]))
        await first.stop(signal.SIGKILL)
        payload = base64.b64encode(image)
        assert not _holds(_state_bytes(tmp_path), payload)
        polls = task.polls
        (tmp_path / "archive" / "rep").unlink()
        second = DaemonProcess(config, env, tmp_path / "daemon.log")
        await second.start()
        status = await second.wait_for(lambda s: s["counts"]["archived"] + s["counts"]["failed"] == 1)
        assert await second.stop() == 0
    assert status["counts"]["archived"] == 1, status
    assert task.polls > polls, "the inline result was not asked for again"
    [asset] = [p for p in (tmp_path / "archive").rglob("repdata/00.*") if p.suffix != ".json"]
    assert asset.read_bytes() == image
    assert not _holds(_state_bytes(tmp_path), payload) and not _holds(Path(f"{asset}.json").read_bytes(), payload)


async def test_an_answer_over_max_answer_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    huge = b'{"code":200,"data":{"state":"success","pad":"' + b"x" * (2 * 1024**2) + b'"}}'
    async with serve(canned(200, huge)) as base:
        entries = {"kie": {"type": "kie", "base_url": base, "api_key": "${KIE_KEY}", "poll_intervals": ["0.5s"],
                           "max_answer": "1MiB"}}
        config = write_config(tmp_path / "config.yaml", base_config(tmp_path, entries))
        (tmp_path / "inbox.txt").write_text("kie big-answer\n")
        daemon = DaemonProcess(config, dict(os.environ, KIE_KEY="kie-SECRET-hostile-3"), tmp_path / "daemon.log")
        await daemon.start()
        status = await daemon.wait_for(lambda s: s["health"].get("kie", {}).get("state") == "failing")
        assert await daemon.stop() == 0
    message = status["health"]["kie"]["message"]
    assert "over 1048576 bytes (providers.kie.max_answer)" in message, message
    assert status["counts"]["polling"] == 1  # the task waits: a bigger max_answer lets it through
