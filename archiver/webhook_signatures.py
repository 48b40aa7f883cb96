"""Signature checks for provider callbacks; a callback endpoint calls these with the raw body.

kie: base64 HMAC-SHA256 of `taskId.timestamp` (the body is not signed). Replicate: Standard
Webhooks, HMAC-SHA256 of `id.timestamp.body` with the `whsec_` secret. fal: ED25519 over
`request_id\\nuser_id\\ntimestamp\\nsha256hex(body)`, keys from a JWKS fetched and cached.
Each check refuses a timestamp more than five minutes from our clock.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import time
from collections.abc import Mapping
from typing import Any

import aiohttp

from archiver.errors import ConfigError, ProviderUnavailable

log = logging.getLogger(__name__)

TOLERANCE = 300.0  # seconds; Standard Webhooks' default, and fal's documented window
JWKS_TTL = 24 * 3600.0  # fal: cache the key set up to 24 h
JWKS_RETRY = 300.0  # an unknown signer makes us fetch again, at most this often


def _header(headers: Mapping[str, str], name: str) -> str:
    """A header by name, whatever its case (a plain dict is fine too)."""
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name.lower()), None)
    return (value or "").strip()


def _fresh(timestamp: str, now: float | None, tolerance: float) -> bool:
    try:
        return abs((time.time() if now is None else now) - int(timestamp)) <= tolerance
    except ValueError:
        return False


def kie_task_id(body: Any) -> str:
    """Where the taskId sits in a kie callback: data.taskId (Veo, 4o, Flux) or data.task_id (Suno, Runway)."""
    data = body.get("data") if isinstance(body, dict) else None
    for place in (data, body):
        if isinstance(place, dict):
            for key in ("taskId", "task_id"):
                if isinstance(place.get(key), str) and place[key]:
                    return str(place[key])
    return ""


def verify_kie(hmac_key: str, headers: Mapping[str, str], task_id: str, *, now: float | None = None,
               tolerance: float = TOLERANCE) -> bool:
    """kie's X-Webhook-Signature over `taskId.timestamp`; a hint to poll, never proof of the body."""
    timestamp, signature = _header(headers, "X-Webhook-Timestamp"), _header(headers, "X-Webhook-Signature")
    if not (task_id and signature and _fresh(timestamp, now, tolerance)):
        return False
    digest = hmac.new(hmac_key.encode(), f"{task_id}.{timestamp}".encode(), hashlib.sha256).digest()
    return hmac.compare_digest(base64.b64encode(digest), signature.encode())


def verify_replicate(secret: str, headers: Mapping[str, str], body: bytes, *, now: float | None = None,
                     tolerance: float = TOLERANCE) -> bool:
    """Standard Webhooks: any `v1,<base64>` entry of webhook-signature matches the HMAC."""
    msg_id, timestamp = _header(headers, "webhook-id"), _header(headers, "webhook-timestamp")
    signatures = _header(headers, "webhook-signature")
    if not (msg_id and signatures and _fresh(timestamp, now, tolerance)):
        return False
    try:
        key = base64.b64decode(secret.strip().removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError("replicate webhook secret: not a whsec_<base64> key") from None
    signed = f"{msg_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
    matched = False
    for entry in signatures.split():
        version, _, signature = entry.partition(",")
        # Compare every entry, so the time taken does not say which one matched.
        matched |= version == "v1" and hmac.compare_digest(signature.encode(), expected)
    return matched


class FalJwks:
    """fal's public keys, fetched from `url` over HTTP and cached for JWKS_TTL."""

    def __init__(self, session: aiohttp.ClientSession, url: str, *, ttl: float = JWKS_TTL) -> None:
        self.session = session
        self.url = url
        self.ttl = ttl
        self.keys: list[Any] = []
        self.fetched_at = float("-inf")
        self.fetches = 0
        self._lock = asyncio.Lock()

    async def verify(self, headers: Mapping[str, str], body: bytes, *, now: float | None = None,
                     tolerance: float = TOLERANCE) -> bool:
        """True if any key of the set signed this callback; ProviderUnavailable if no keys can be had."""
        request_id, user_id = _header(headers, "X-Fal-Webhook-Request-Id"), _header(headers, "X-Fal-Webhook-User-Id")
        timestamp = _header(headers, "X-Fal-Webhook-Timestamp")
        try:
            signature = bytes.fromhex(_header(headers, "X-Fal-Webhook-Signature"))
        except ValueError:
            return False
        if not (request_id and user_id and signature and _fresh(timestamp, now, tolerance)):
            return False
        message = "\n".join((request_id, user_id, timestamp, hashlib.sha256(body).hexdigest())).encode()
        if _any_verifies(await self._keys(), signature, message):
            return True
        # fal may have rotated its keys since we fetched them: look once more, not on every forgery.
        if time.monotonic() - self.fetched_at >= JWKS_RETRY:
            return _any_verifies(await self._keys(force=True), signature, message)
        return False

    async def _keys(self, force: bool = False) -> list[Any]:
        async with self._lock:
            if force or time.monotonic() - self.fetched_at >= self.ttl:
                try:
                    self.keys = await self._fetch()
                    self.fetched_at = time.monotonic()
                except (TimeoutError, aiohttp.ClientError, ValueError) as e:
                    if not self.keys:
                        raise ProviderUnavailable(f"fal JWKS {self.url}: {type(e).__name__}: {e}") from None
                    log.warning("fal JWKS %s could not be fetched (%s); using the cached keys", self.url, e)
            return self.keys

    async def _fetch(self) -> list[Any]:
        ed25519 = _ed25519()
        self.fetches += 1
        async with self.session.get(self.url, timeout=aiohttp.ClientTimeout(total=10)) as resp:
            if resp.status != 200:
                raise ValueError(f"HTTP {resp.status}")
            doc = await resp.json(content_type=None)
        keys = []
        for jwk in doc.get("keys", []) if isinstance(doc, dict) else []:
            if isinstance(jwk, dict) and jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519":
                raw = base64.urlsafe_b64decode(str(jwk.get("x", "")) + "==")
                keys.append(ed25519.Ed25519PublicKey.from_public_bytes(raw))
        if not keys:
            raise ValueError("no Ed25519 keys in the set")
        return keys


def _any_verifies(keys: list[Any], signature: bytes, message: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature

    for key in keys:
        try:
            key.verify(signature, message)
            return True
        except InvalidSignature:
            continue
    return False


def _ed25519() -> Any:
    """cryptography is an optional extra: only fal callbacks need it."""
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise ConfigError("fal webhook signatures need the cryptography package: "
                          "pip install 'archiver[webhooks]'") from None
    return ed25519
