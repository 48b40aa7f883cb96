"""POST /callbacks/{entry} on the real daemon: only a valid callback polls, and only its task."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from archiver.testing import FakeApis, FakeTask, media_bytes
from tests.support.servers import serve
from tests.support.signing import fal_headers, jwk, jwks_app
from tests.support.web import API_KEY, KIE_SECRET, Web, kie_entry, kie_headers, web_daemon

ONE_POLL_THEN_WAIT = 30  # kie_entry polls every 30s: any poll sooner than that came from a callback


def kie_body(task_id: str) -> bytes:
    """kie's callback: the envelope and the recordInfo data (URLs we must never use)."""
    return json.dumps({"code": 200, "msg": "success", "data": {
        "taskId": task_id, "state": "success", "model": "seedream/4.5-edit",
        "resultJson": json.dumps({"resultUrls": ["https://evil.example/not-from-the-provider.png"]}),
        "failCode": "", "failMsg": "", "completeTime": 1763800000000}}).encode()


async def polls_settle(web: Web, task: FakeTask, expected: int) -> None:
    """Wait a moment longer than a callback-triggered poll takes, then check the count."""
    await asyncio.sleep(1.0)
    assert task.polls == expected, f"{task.task_id}: {task.polls} polls, expected {expected}"


async def wait_polls(task: FakeTask, count: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while task.polls < count:
        assert time.monotonic() < deadline, f"{task.task_id}: only {task.polls} polls"
        await asyncio.sleep(0.05)


def kie_world(fake: FakeApis) -> dict[str, FakeTask]:
    png = [media_bytes("png", 4_000, "cb")]
    return {t.task_id: fake.add(t) for t in (
        FakeTask("kie", "cb-done", ["running", "success"], png),
        FakeTask("kie", "cb-long", ["running"] * 20, png),
        FakeTask("kie", "cb-adopted", ["success"], png),
    )}


async def chunks(piece: bytes, count: int) -> AsyncIterator[bytes]:
    for _ in range(count):
        yield piece


async def test_kie_callbacks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeApis(API_KEY)
    world = kie_world(fake)
    providers = lambda base: {  # noqa: E731
        "kie": kie_entry(base, callbacks={"secret": "${KIE_WEBHOOK_KEY}"}),
        "kie-adopt": kie_entry(base, callbacks={"secret": KIE_SECRET, "adopt": True}),
        "kie-plain": kie_entry(base),
    }
    monkeypatch.setenv("KIE_WEBHOOK_KEY", KIE_SECRET)  # the daemon's env is copied from ours
    async with web_daemon(tmp_path, fake, providers) as web:
        await check_kie(web, world)


async def check_kie(web: Web, world: dict[str, FakeTask]) -> None:
    done, long = world["cb-done"], world["cb-long"]
    status, body = await web.submit([{"provider": "kie", "task_id": "cb-done"},
                                     {"provider": "kie", "task_id": "cb-long"}])
    assert status == 202, body
    await wait_polls(done, 1)
    await wait_polls(long, 1)
    started = time.monotonic()

    # Refused: no headers, forged, stale, from the future, malformed, oversized; none polls.
    refused: list[tuple[dict[str, str], bytes, int]] = [
        ({}, kie_body("cb-done"), 401),
        (kie_headers("cb-done", secret="not-the-key"), kie_body("cb-done"), 401),
        (kie_headers("cb-long"), kie_body("cb-done"), 401),  # signed for another task
        (kie_headers("cb-done", stamp=int(time.time()) - 301), kie_body("cb-done"), 401),
        (kie_headers("cb-done", stamp=int(time.time()) + 600), kie_body("cb-done"), 401),
        (kie_headers("cb-done") | {"X-Webhook-Timestamp": "9" * 5000}, kie_body("cb-done"), 401),
        (kie_headers("cb-done"), b"{not json", 400),
        (kie_headers("cb-done"), b'{"data": {"taskId": "../../etc"}}', 400),
        (kie_headers("cb-done"), b"[" * 100_000, 400),
    ]
    for headers, body_bytes, expected in refused:
        status, answer = await web.post("/callbacks/kie", data=body_bytes, headers=headers)
        assert status == expected, (headers, body_bytes[:40], status, answer)
        assert KIE_SECRET not in json.dumps(answer)
    # Oversized, with its length declared and streamed without one (chunked).
    status, _ = await web.post("/callbacks/kie", data=io.BytesIO(b"x" * (2 << 20)), headers=kie_headers("cb-done"))
    assert status == 413
    status, _ = await web.post("/callbacks/kie", data=chunks(b"x" * 65536, 32), headers=kie_headers("cb-done"))
    assert status == 413
    status, _ = await web.post("/callbacks/kie-plain", data=kie_body("cb-done"), headers=kie_headers("cb-done"))
    assert status == 404, "an entry without callbacks.secret takes no callbacks"
    status, _ = await web.post("/callbacks/nope", data=kie_body("cb-done"), headers=kie_headers("cb-done"))
    assert status == 404
    await polls_settle(web, done, 1)

    # Valid: polled at once, archived long before the next scheduled poll; the body's URL unused.
    status, answer = await web.post("/callbacks/kie", data=kie_body("cb-done"), headers=kie_headers("cb-done"))
    assert (status, answer) == (200, {"result": "polling"})
    final = await web.daemon.wait_for(lambda s: s["counts"]["archived"] == 1, timeout=20)
    assert time.monotonic() - started < ONE_POLL_THEN_WAIT
    assert done.polls == 2
    assert final["counts"]["polling"] == 1
    sidecar = json.loads(next((web.config.parent / "archive").rglob("cb-done/00.png.json")).read_text())
    assert sidecar["source_url"].startswith(web.fake.base + "/cdn/cb-done/0")

    # Replayed: the same signed callback ten times at once polls the task once more, not ten times.
    headers = kie_headers("cb-long")
    answers = await asyncio.gather(*(web.post("/callbacks/kie", data=kie_body("cb-long"), headers=headers)
                                     for _ in range(10)))
    assert sorted(a[1]["result"] for a in answers) == ["polling"] + ["replay"] * 9
    await polls_settle(web, long, 2)

    # A callback after the task ended polls nothing.
    status, answer = await web.post("/callbacks/kie", data=kie_body("cb-done"),
                                    headers=kie_headers("cb-done", stamp=int(time.time()) - 120))
    assert (status, answer) == (200, {"result": "ignored"})

    # Unknown task: ignored without callbacks.adopt, queued (and polled, then archived) with it.
    status, answer = await web.post("/callbacks/kie", data=kie_body("cb-adopted"), headers=kie_headers("cb-adopted"))
    assert (status, answer) == (200, {"result": "ignored"})
    await polls_settle(web, world["cb-adopted"], 0)
    status, answer = await web.post("/callbacks/kie-adopt", data=kie_body("cb-adopted"),
                                    headers=kie_headers("cb-adopted"))
    assert (status, answer) == (200, {"result": "queued"})
    await web.daemon.wait_for(lambda s: s["counts"]["archived"] == 2, timeout=20)
    assert world["cb-adopted"].polls == 1
    log = web.daemon.log.read_text()
    assert KIE_SECRET not in log and "not-the-key" not in log


async def test_token_callbacks_for_a_provider_without_signatures(tmp_path: Path) -> None:
    fake = FakeApis(API_KEY)
    task = fake.add(FakeTask("maxapi", "mx-1", ["running", "success"], [media_bytes("png", 3_000, "mx")]))
    secret = "maxapi-CALLBACK-token-77"

    def providers(base: str) -> dict[str, Any]:
        return {"mx": {"type": "maxapi", "api_key": API_KEY, "base_url": base, "poll_intervals": ["30s"],
                       "callbacks": {"secret": secret}}}

    async with web_daemon(tmp_path, fake, providers) as web:
        assert (await web.submit({"provider": "mx", "task_id": "mx-1"}))[0] == 202
        await wait_polls(task, 1)
        body = json.dumps({"code": 0, "data": {"taskId": "mx-1", "status": "SUCCESS"}}).encode()
        for query, expected in (("", 401), ("?token=wrong", 401), (f"?token={secret}x", 401)):
            assert (await web.post("/callbacks/mx" + query, data=body))[0] == expected
        assert (await web.post(f"/callbacks/mx?token={secret}", data=b"<html>"))[0] == 400
        await polls_settle(web, task, 1)
        status, answer = await web.post(f"/callbacks/mx?token={secret}", data=body)
        assert (status, answer) == (200, {"result": "polling"})
        await web.daemon.wait_for(lambda s: s["counts"]["archived"] == 1, timeout=20)
        assert (await web.post(f"/callbacks/mx?token={secret}", data=body))[1] == {"result": "replay"}
        assert task.polls == 2
        assert secret not in web.daemon.log.read_text()


async def test_the_answer_does_not_wait_for_a_rate_limited_provider(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeApis(API_KEY)
    first = fake.add(FakeTask("kie", "rl-a", ["running"] * 5, [media_bytes("png", 1_000, "a")]))
    second = fake.add(FakeTask("kie", "rl-b", ["running", "success"], [media_bytes("png", 1_000, "b")]))
    monkeypatch.setenv("KIE_WEBHOOK_KEY", KIE_SECRET)
    providers = lambda base: {"kie": kie_entry(base, callbacks={"secret": "${KIE_WEBHOOK_KEY}"})}  # noqa: E731
    async with web_daemon(tmp_path, fake, providers) as web:
        assert (await web.submit([{"provider": "kie", "task_id": t} for t in ("rl-a", "rl-b")]))[0] == 202
        await wait_polls(first, 1)
        await wait_polls(second, 1)
        fake.throttle["kie"] = 6  # the next request gets 429 with Retry-After: 6
        assert (await web.post("/callbacks/kie", data=kie_body("rl-a"), headers=kie_headers("rl-a")))[0] == 200
        while not any(r.status == 429 for r in fake.requests):
            await asyncio.sleep(0.05)
        # The entry is paused for 6 s; a handler that waited for its poll could not answer in 3.
        async with web.client.post(web.base + "/callbacks/kie", data=kie_body("rl-b"), headers=kie_headers("rl-b"),
                                   timeout=aiohttp.ClientTimeout(total=3)) as resp:
            assert (resp.status, await resp.json()) == (200, {"result": "polling"})
        assert second.polls == 1
        await web.daemon.wait_for(lambda s: s["counts"]["archived"] == 1, timeout=20)
        assert second.polls == 2
        # rl-a's hinted poll got the 429: it is asked again when the pause ends, not in 30 s.
        await wait_polls(first, 2, timeout=ONE_POLL_THEN_WAIT - 8)


def standard_webhook(secret: str, body: bytes, msg_id: str = "msg_2Lq", stamp: int | None = None) -> dict[str, str]:
    """Standard Webhooks headers: v1 = base64(HMAC-SHA256(key, id.timestamp.body)), key from whsec_<base64>."""
    stamp = int(time.time()) if stamp is None else stamp
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    return {"webhook-id": msg_id, "webhook-timestamp": str(stamp),
            "webhook-signature": f"v1,{base64.b64encode(digest).decode()}"}


async def test_replicate_callbacks_use_standard_webhooks(tmp_path: Path) -> None:
    fake = FakeApis(API_KEY)
    task = fake.add(FakeTask("replicate", "rep1abc", ["running", "success"], [media_bytes("png", 2_000, "r")],
                             where="list"))
    secret = "whsec_" + base64.b64encode(b"replicate-signing-key-0123456789").decode()

    def providers(base: str) -> dict[str, Any]:
        return {"rep": {"type": "replicate", "api_key": API_KEY, "base_url": base, "poll_intervals": ["30s"],
                        "callbacks": {"secret": secret}}}

    async with web_daemon(tmp_path, fake, providers) as web:
        assert (await web.submit({"provider": "rep", "task_id": "rep1abc"}))[0] == 202
        await wait_polls(task, 1)
        body = json.dumps({"id": "rep1abc", "status": "succeeded", "output": ["https://evil.example/x.png"]}).encode()
        forged = standard_webhook("whsec_" + base64.b64encode(b"another-key").decode(), body)
        stale = standard_webhook(secret, body, stamp=int(time.time()) - 600)
        edited = standard_webhook(secret, body)  # signed over the body: a changed body fails
        for headers, data in ((forged, body), (stale, body), (edited, body.replace(b"evil", b"evl")), ({}, body)):
            assert (await web.post("/callbacks/rep", data=data, headers=headers))[0] == 401
        await polls_settle(web, task, 1)
        status, answer = await web.post("/callbacks/rep", data=body, headers=standard_webhook(secret, body))
        assert (status, answer) == (200, {"result": "polling"})
        await web.daemon.wait_for(lambda s: s["counts"]["archived"] == 1, timeout=20)
        assert task.polls == 2


async def test_fal_callbacks_need_the_token_and_fal_s_ed25519_signature(tmp_path: Path) -> None:
    signer, stranger = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    keys: dict[str, Any] = {"hits": 0, "keys": [jwk(signer)]}
    rid = "0f8c1e2a-7777-4c1d-9a55-000000000007"
    fake = FakeApis(API_KEY)
    task = fake.add(FakeTask("fal", rid, ["running", "success"], [media_bytes("png", 2_000, "f")], where="fal-ai/flux"))
    token = "fal-CALLBACK-token-31"
    async with serve(jwks_app(keys)) as jwks:
        def providers(base: str) -> dict[str, Any]:
            return {"flux": {"type": "fal", "app": "fal-ai/flux/dev", "api_key": API_KEY, "base_url": base,
                             "poll_intervals": ["30s"], "jwks_url": f"{jwks}/.well-known/jwks.json",
                             "callbacks": {"secret": token}}}

        async with web_daemon(tmp_path, fake, providers) as web:
            assert (await web.submit({"provider": "flux", "task_id": rid}))[0] == 202
            await wait_polls(task, 1)
            body = json.dumps({"request_id": rid, "gateway_request_id": rid, "status": "OK",
                               "payload": {"images": [{"url": "https://evil.example/x.png"}]}}).encode()
            now = int(time.time())
            good = fal_headers(signer, body, now, rid)
            for query, headers, data in (
                    ("", good, body),  # fal signs for every account: without our token it is not ours
                    (f"?token={token}", fal_headers(stranger, body, now, rid), body),
                    (f"?token={token}", fal_headers(signer, body, now - 400, rid), body),
                    (f"?token={token}", good, body + b" "),  # the body's hash is signed
                    (f"?token={token}", {}, body)):
                assert (await web.post("/callbacks/flux" + query, data=data, headers=headers))[0] == 401
            await polls_settle(web, task, 1)
            status, answer = await web.post(f"/callbacks/flux?token={token}", data=body, headers=good)
            assert (status, answer) == (200, {"result": "polling"})
            await web.daemon.wait_for(lambda s: s["counts"]["archived"] == 1, timeout=20)
            assert task.polls == 2 and keys["hits"] == 1


async def test_kie_product_callbacks_use_kie_s_hmac(tmp_path: Path) -> None:
    """Suno is one of kie's product APIs: its callbacks are signed as Market's are."""
    fake = FakeApis(API_KEY)
    task = fake.add(FakeTask("kie", "suno-cb", ["running", "success"],
                             [media_bytes("mp3", 3_000, "s"), media_bytes("jpg", 1_000, "c")], where="suno"))

    def providers(base: str) -> dict[str, Any]:
        return {"suno": kie_entry(base, api="suno", callbacks={"secret": KIE_SECRET})}

    async with web_daemon(tmp_path, fake, providers) as web:
        assert (await web.submit({"provider": "suno", "task_id": "suno-cb"}))[0] == 202
        await wait_polls(task, 1)
        body = json.dumps({"code": 200, "msg": "All generated successfully.",
                           "data": {"callbackType": "complete", "task_id": "suno-cb", "data": []}}).encode()
        forged = kie_headers("suno-cb", secret="not-the-secret")
        assert (await web.post("/callbacks/suno", data=body, headers=forged))[0] == 401
        await polls_settle(web, task, 1)
        status, answer = await web.post("/callbacks/suno", data=body, headers=kie_headers("suno-cb"))
        assert (status, answer) == (200, {"result": "polling"})
        await web.daemon.wait_for(lambda s: s["counts"]["archived"] == 1, timeout=20)
        assert task.polls == 2
