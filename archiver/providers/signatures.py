"""Signature code that more than one provider's callbacks can use: headers, the clock window, key sets.

Each provider's own scheme (which headers, which bytes are signed) is in its module; a scheme
that signs with Ed25519 keys from a published JWKS (fal) asks a `Jwks` here to check the signature.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Mapping
from typing import Any

import aiohttp

from archiver.errors import ConfigError, ProviderUnavailable

log = logging.getLogger(__name__)

TOLERANCE = 300.0  # seconds; Standard Webhooks' default, and fal's documented window
JWKS_TTL = 24 * 3600.0  # cache a key set up to 24 h
JWKS_RETRY = 300.0  # an unknown signer makes us fetch again, at most this often


def header(headers: Mapping[str, str], name: str) -> str:
    """A header by name, whatever its case (a plain dict is fine too)."""
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name.lower()), None)
    return (value or "").strip()


def fresh(timestamp: str, now: float | None, tolerance: float) -> bool:
    """A Unix-seconds timestamp within `tolerance` of our clock."""
    try:
        return abs((time.time() if now is None else now) - int(timestamp)) <= tolerance
    except ValueError:
        return False


class Jwks:
    """A published set of Ed25519 public keys, fetched from `url` over HTTP and cached for `ttl`."""

    def __init__(self, session: aiohttp.ClientSession, url: str, *, ttl: float = JWKS_TTL) -> None:
        self.session = session
        self.url = url
        self.ttl = ttl
        self.keys: list[Any] = []
        self.fetched_at = float("-inf")
        self.fetches = 0
        self._lock = asyncio.Lock()

    async def verify(self, signature: bytes, message: bytes) -> bool:
        """True if any key of the set signed `message`; ProviderUnavailable if no keys can be had."""
        if _any_verifies(await self._keys(), signature, message):
            return True
        # The keys may have been rotated since we fetched them: look once more, not on every forgery.
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
                        raise ProviderUnavailable(f"JWKS {self.url}: {type(e).__name__}: {e}") from None
                    log.warning("JWKS %s could not be fetched (%s); using the cached keys", self.url, e)
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
    """cryptography is an optional extra: only Ed25519-signed callbacks need it."""
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise ConfigError("Ed25519 webhook signatures need the cryptography package: "
                          "pip install 'archiver[webhooks]'") from None
    return ed25519
