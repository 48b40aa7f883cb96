"""Signing helpers for callback tests: fal's ED25519 headers and a JWKS server app."""

from __future__ import annotations

import base64
import hashlib

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


def jwk(key: Ed25519PrivateKey) -> dict[str, str]:
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": base64.urlsafe_b64encode(raw).decode().rstrip("="), "kid": "k"}


def fal_headers(key: Ed25519PrivateKey, body: bytes, timestamp: int, request_id: str = "80e732af-660e") -> dict:
    message = "\n".join((request_id, "user-42", str(timestamp), hashlib.sha256(body).hexdigest())).encode()
    return {"X-Fal-Webhook-Request-Id": request_id, "X-Fal-Webhook-User-Id": "user-42",
            "X-Fal-Webhook-Timestamp": str(timestamp), "X-Fal-Webhook-Signature": key.sign(message).hex()}


def jwks_app(state: dict) -> web.Application:
    app = web.Application()

    async def handler(request: web.Request) -> web.Response:
        state["hits"] += 1
        if state.get("down"):
            return web.Response(status=503)
        return web.json_response({"keys": [{"kty": "RSA", "n": "x", "e": "AQAB"}, *state["keys"]]})

    app.router.add_get("/.well-known/jwks.json", handler)
    return app
