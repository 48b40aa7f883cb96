"""Callback signatures: kie's HMAC, Replicate's Standard Webhooks, fal's ED25519 with a JWKS
served by a loopback server. Every key is made here by the test."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import time

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from archiver.errors import ConfigError, ProviderUnavailable
from archiver.providers.callbacks import task_id_in
from archiver.providers.fal import verify_signature as verify_fal
from archiver.providers.kie import verify_signature as verify_kie
from archiver.providers.replicate import verify_signature as verify_replicate
from archiver.providers.signatures import Jwks
from tests.support.servers import serve
from tests.support.signing import fal_headers, jwk, jwks_app

BODY = b'{"id":"m420tb253nrm60cj09c8hwfgxw","status":"succeeded","output":["https://replicate.delivery/a.png"]}'


# --- kie ---------------------------------------------------------------------------------

def kie_headers(key: str, task_id: str, timestamp: int) -> dict[str, str]:
    digest = hmac.new(key.encode(), f"{task_id}.{timestamp}".encode(), hashlib.sha256).digest()
    return {"X-Webhook-Timestamp": str(timestamp), "X-Webhook-Signature": base64.b64encode(digest).decode()}


def test_kie_signature_over_task_id_and_timestamp() -> None:
    now = int(time.time())
    headers = kie_headers("hmac-key-1", "veo_task_1", now)
    assert verify_kie("hmac-key-1", headers, "veo_task_1")
    assert verify_kie("hmac-key-1", {k.lower(): v for k, v in headers.items()}, "veo_task_1")
    assert not verify_kie("hmac-key-2", headers, "veo_task_1")
    assert not verify_kie("hmac-key-1", headers, "veo_task_2")
    assert not verify_kie("hmac-key-1", headers, "veo_task_1", now=now + 301)
    assert not verify_kie("hmac-key-1", {}, "veo_task_1")


def test_the_task_id_is_found_under_either_spelling() -> None:
    assert task_id_in({"code": 200, "data": {"taskId": "veo_1", "info": {}}}) == "veo_1"
    assert task_id_in({"code": 200, "data": {"callbackType": "complete", "task_id": "suno_1"}}) == "suno_1"
    assert task_id_in({"data": None}) == "" and task_id_in([1]) == ""


# --- Replicate ---------------------------------------------------------------------------

def standard_headers(secret: str, msg_id: str, timestamp: int, body: bytes, extra: str = "") -> dict[str, str]:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    sig = base64.b64encode(hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest())
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": f"{extra}v1,{sig.decode()}".strip()}


def test_replicate_standard_webhooks_signature() -> None:
    secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    now = int(time.time())
    headers = standard_headers(secret, "msg_2Lk", now, BODY)
    assert verify_replicate(secret, headers, BODY)
    assert not verify_replicate(secret, headers, BODY + b" ")  # the body is signed
    assert not verify_replicate(secret, dict(headers, **{"webhook-id": "msg_other"}), BODY)
    other = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    assert not verify_replicate(other, headers, BODY)
    assert not verify_replicate(secret, headers, BODY, now=now + 301)
    assert verify_replicate(secret, headers, BODY, now=now - 299)


def test_replicate_accepts_any_of_several_signatures_and_needs_v1() -> None:
    secret = "whsec_" + base64.b64encode(b"k" * 24).decode()
    now = int(time.time())
    several = standard_headers(secret, "msg_1", now, BODY, extra="v1,AAAAbm90IGl0 v2,whatever ")
    assert verify_replicate(secret, several, BODY)
    good = standard_headers(secret, "msg_1", now, BODY)["webhook-signature"]
    assert not verify_replicate(secret, dict(several, **{"webhook-signature": good.replace("v1,", "v2,")}), BODY)


def test_replicate_secret_that_is_not_base64_is_a_config_error() -> None:
    headers = {"webhook-id": "m", "webhook-timestamp": str(int(time.time())), "webhook-signature": "v1,x"}
    with pytest.raises(ConfigError, match="whsec_"):
        verify_replicate("whsec_not base64!", headers, BODY)


# --- fal ---------------------------------------------------------------------------------

async def test_fal_ed25519_against_a_served_jwks_with_caching() -> None:
    signer, stranger = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    state = {"hits": 0, "keys": [jwk(Ed25519PrivateKey.generate()), jwk(signer)]}
    body = json.dumps({"request_id": "80e732af-660e", "status": "OK", "payload": {"images": []}}).encode()
    now = int(time.time())
    async with serve(jwks_app(state)) as base, aiohttp.ClientSession() as session:
        jwks = Jwks(session, f"{base}/.well-known/jwks.json")
        assert await verify_fal(jwks, fal_headers(signer, body, now), body)  # any key of the set
        assert await verify_fal(jwks, fal_headers(signer, body, now), body)
        assert state["hits"] == 1, "the key set is cached"
        assert not await verify_fal(jwks, fal_headers(signer, body, now), body + b"x")
        assert not await verify_fal(jwks, fal_headers(signer, body, now - 301), body)
        headers = fal_headers(signer, body, now)
        assert not await verify_fal(jwks, dict(headers, **{"X-Fal-Webhook-User-Id": "user-43"}), body)
        assert not await verify_fal(jwks, dict(headers, **{"X-Fal-Webhook-Signature": "zz"}), body)
        assert not await verify_fal(jwks, fal_headers(stranger, body, now), body)
        assert state["hits"] == 1, "a forged signature within 5 minutes does not refetch"


async def test_fal_refetches_after_the_ttl_and_keeps_old_keys_when_the_jwks_is_down() -> None:
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    state = {"hits": 0, "keys": [jwk(old)]}
    body = b'{"status":"OK"}'
    now = int(time.time())
    async with serve(jwks_app(state)) as base, aiohttp.ClientSession() as session:
        jwks = Jwks(session, f"{base}/.well-known/jwks.json", ttl=0.2)
        assert await verify_fal(jwks, fal_headers(old, body, now), body)
        state["keys"] = [jwk(new)]  # fal rotated its key
        await asyncio.sleep(0.25)
        assert await verify_fal(jwks, fal_headers(new, body, now), body)
        assert state["hits"] == 2
        state["down"] = True
        await asyncio.sleep(0.25)
        assert await verify_fal(jwks, fal_headers(new, body, now), body), "cached keys serve while the JWKS is down"


async def test_fal_without_any_key_is_unavailable_not_a_rejection() -> None:
    state = {"hits": 0, "keys": [], "down": True}
    body = b"{}"
    async with serve(jwks_app(state)) as base, aiohttp.ClientSession() as session:
        jwks = Jwks(session, f"{base}/.well-known/jwks.json")
        with pytest.raises(ProviderUnavailable, match="jwks"):
            await verify_fal(jwks, fal_headers(Ed25519PrivateKey.generate(), body, int(time.time())), body)
