"""S3's REST API as S3Storage speaks it: signed requests on an aiohttp session, with retries.

botocore resolves the credentials (its whole provider chain) and signs (SigV4); the payload
hash we sign is one we know already, so no body is read twice. Errors come out as S3Error
(the store answered no) or Unreachable (no answer, or no credentials, after the retries).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import EnvProvider
from botocore.exceptions import BotoCoreError
from multidict import CIMultiDictProxy
from yarl import URL

from archiver.config import S3Config
from archiver.files import open_off_loop

NETWORK_ERRORS = (aiohttp.ClientError, TimeoutError, OSError)
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_PIECE = 256 * 1024  # what one upload holds in memory while its body goes out
# Retried as botocore's standard mode does, besides a failed connection: throttling and
# transient errors.
_RETRY_STATUS = {500, 502, 503, 504}
_RETRY_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestThrottled", "RequestLimitExceeded",
                "RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete", "InternalError"}
_MAX_BACKOFF = 20.0


class S3Error(Exception):
    """The store answered with an error: its HTTP status, S3 code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class Unreachable(Exception):
    """No answer from the store (or no credentials to ask with)."""


@dataclass(frozen=True)
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


@dataclass(frozen=True)
class Body:
    """A request body that can be sent again on a retry, with its SHA-256 (hex) for signing."""

    sha256: str
    length: int
    data: bytes | None = None
    path: Path | None = None
    start: int = 0

    @classmethod
    def data_of(cls, data: bytes, sha256: str | None = None) -> Body:
        return cls(sha256 or hashlib.sha256(data).hexdigest(), len(data), data=data)

    @classmethod
    def file(cls, path: Path, start: int, length: int, sha256: str) -> Body:
        """`length` bytes of the file at `path` from `start`, streamed from disk when sent."""
        return cls(sha256, length, path=path, start=start)

    def payload(self) -> bytes | AsyncIterator[bytes]:
        return self.data if self.data is not None else self._pieces()

    async def _pieces(self) -> AsyncIterator[bytes]:
        assert self.path is not None
        file = await open_off_loop(self.path, "rb")
        try:
            left = self.length
            await asyncio.to_thread(file.seek, self.start)
            while left > 0:
                piece = await asyncio.to_thread(file.read, min(left, _PIECE))
                if not piece:
                    raise OSError(f"{self.path}: shorter than expected")
                left -= len(piece)
                yield piece
        finally:
            file.close()


class _Signer(S3SigV4Auth):
    """SigV4 for S3, signing the payload hash the request carries instead of reading its body."""

    def payload(self, request: Any) -> str:
        return str(request.context["payload_sha256"])


class Client:
    """Requests to one bucket; the aiohttp session and the credentials are made on first use."""

    def __init__(self, config: S3Config, *, retries: int) -> None:
        assert config.bucket
        self.config = config
        self.bucket = config.bucket
        self.retries = retries
        self._session: aiohttp.ClientSession | None = None
        self._credentials: Any = None
        self._region = config.region
        self._ready = asyncio.Lock()

    async def send(self, method: str, name: str, query: dict[str, str] | None = None, *,
                   headers: dict[str, str] | None = None, body: Body | None = None) -> Reply:
        """One request, its reply read whole; S3Error for an error status."""
        async with await self.open(method, name, query, headers=headers, body=body) as resp:
            try:
                return Reply(resp.status, resp.headers, await resp.read())
            except NETWORK_ERRORS as e:
                raise Unreachable(f"{type(e).__name__} reading the reply: {e}") from e

    async def put(self, name: str, body: Body, headers: dict[str, str]) -> Reply:
        return await self.send("PUT", name, headers=headers, body=body)

    async def xml(self, method: str, name: str, query: dict[str, str] | None = None, *,
                  headers: dict[str, str] | None = None, body: Body | None = None) -> ET.Element:
        reply = await self.send(method, name, query, headers=headers, body=body)
        return ET.fromstring(reply.body)

    async def open(self, method: str, name: str, query: dict[str, str] | None = None, *,
                   headers: dict[str, str] | None = None, body: Body | None = None) -> aiohttp.ClientResponse:
        """The response of a successful request, its body not read yet (the caller releases it).

        A failed connection, a 5xx or throttling is retried with backoff, `retries` times."""
        session, url = await self._start(), self._url(name, query)
        for attempt in range(self.retries + 1):
            error: Exception
            try:
                # A redirect (S3's 301/307 for another region) is an error: the signature
                # names this host.
                resp = await session.request(method, url, data=body.payload() if body else None,
                                             headers=await self._sign(method, url, headers or {}, body),
                                             allow_redirects=False)
            except NETWORK_ERRORS as e:
                error = Unreachable(f"{type(e).__name__}: {e}")
            else:
                if resp.status < 300:
                    return resp
                error = await _error(resp)
                if resp.status not in _RETRY_STATUS and error.code not in _RETRY_CODES:
                    raise error
            if attempt == self.retries:
                raise error
            await asyncio.sleep(random.uniform(0, min(_MAX_BACKOFF, 2.0**attempt)))
        raise AssertionError("unreachable: the last attempt raises")

    async def _start(self) -> aiohttp.ClientSession:
        async with self._ready:
            if self._session is None:
                self._credentials, self._region = await asyncio.to_thread(_credentials, self._region)
                self._session = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=32),
                    timeout=aiohttp.ClientTimeout(sock_connect=10, sock_read=60),
                    auto_decompress=False, skip_auto_headers=("Content-Type", "Accept-Encoding"))
            return self._session

    async def _sign(self, method: str, url: URL, headers: dict[str, str], body: Body | None) -> dict[str, str]:
        credentials = self._credentials
        if credentials.refresh_needed() if hasattr(credentials, "refresh_needed") else False:
            frozen = await asyncio.to_thread(credentials.get_frozen_credentials)  # may ask a service
        else:
            frozen = credentials.get_frozen_credentials()
        request = AWSRequest(method, str(url), headers=headers)
        request.context["payload_sha256"] = body.sha256 if body else EMPTY_SHA256
        if body:
            request.headers["Content-Length"] = str(body.length)
        _Signer(frozen, "s3", self._region).add_auth(request)
        return dict(request.headers.items())

    def _url(self, name: str, query: dict[str, str] | None) -> URL:
        """Path-style on a custom endpoint (S3-compatible stores serve it reliably); on AWS the
        bucket's own host, unless its name cannot be one (dots break TLS there)."""
        path = quote(name)
        if self.config.endpoint_url:
            base = f"{self.config.endpoint_url.rstrip('/')}/{self.bucket}"
        elif "." in self.bucket or self.bucket.lower() != self.bucket:
            base = f"https://s3.{self._region}.amazonaws.com/{self.bucket}"
        else:
            base = f"https://{self.bucket}.s3.{self._region}.amazonaws.com"
        url = f"{base}/{path}" if name else base
        if query:
            # A flag (`?uploads`) goes bare, as S3 documents it; it signs as `uploads=`.
            url += "?" + "&".join(quote(k, safe="-_.~") + (f"={quote(v, safe='-_.~')}" if v else "")
                                  for k, v in sorted(query.items()))
        return URL(url, encoded=True)

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


def _credentials(region: str | None) -> tuple[Any, str]:
    """botocore's credentials chain and the region (files, maybe a service: run in a thread).

    The chain's first link, the environment, is tried without a botocore Session when the
    region is known too: a Session imports botocore's client modules (3 MiB)."""
    region = region or os.environ.get("AWS_DEFAULT_REGION")
    try:
        if region and (found := EnvProvider().load()) is not None:
            return found, region
        import botocore.session

        session = botocore.session.Session()
        credentials = session.get_credentials()
    except BotoCoreError as e:
        raise Unreachable(str(e)) from e
    if credentials is None:
        raise Unreachable("Unable to locate credentials")
    return credentials, region or session.get_config_variable("region") or "us-east-1"


async def _error(resp: aiohttp.ClientResponse) -> S3Error:
    """The S3 error in a response (released here); a HEAD has no body, so its code is the status."""
    try:
        body = await resp.read()
    except NETWORK_ERRORS:
        body = b""
    finally:
        resp.release()
    code, message = str(resp.status), resp.reason or ""
    try:
        root = ET.fromstring(body) if body else None
    except ET.ParseError:
        root = None
    if root is not None:
        code, message = text(find(root, "Code")) or code, text(find(root, "Message")) or message
    return S3Error(resp.status, code, message)


def find(node: ET.Element, tag: str) -> ET.Element | None:
    """The first child named `tag`, whatever its XML namespace."""
    for child in node:
        if child.tag.rpartition("}")[2] == tag:
            return child
    return None


def find_all(node: ET.Element, tag: str) -> list[ET.Element]:
    return [child for child in node if child.tag.rpartition("}")[2] == tag]


def text(node: ET.Element | None) -> str:
    return (node.text or "") if node is not None else ""
