"""S3's REST API as S3Storage speaks it: signed requests on an aiohttp session, with retries.

Requests are signed here (SigV4, `sign`), with a payload hash we know already, so no body is
read twice. Credentials in the environment are read here too; any other source goes through
botocore's provider chain (files, SSO, instance metadata…), imported only then: botocore is
5 MiB of a daemon's memory. Errors come out as S3Error (the store answered no) or
Unreachable (no answer, or no credentials, after the retries).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import os
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote
from urllib.request import getproxies, proxy_bypass

import aiohttp
from multidict import CIMultiDictProxy
from tenacity import retry_if_exception
from yarl import URL

from archiver.config import S3Config
from archiver.files import open_off_loop
from archiver.retry import Backoff

NETWORK_ERRORS = (aiohttp.ClientError, TimeoutError, OSError)
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_PIECE = 256 * 1024  # what one upload holds in memory while its body goes out
# Retried as botocore's standard mode does, besides a failed connection: throttling and
# transient errors.
_RETRY_STATUS = {500, 502, 503, 504}
_RETRY_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestThrottled", "RequestLimitExceeded",
                "RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete", "InternalError"}
BACKOFF = Backoff(first=0.5, most=20.0, jitter=0.5)  # 0.5 s, 1 s, 2 s… 20 s, +0-0.5 s


class S3Error(Exception):
    """The store answered with an error: its HTTP status, S3 code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class Unreachable(Exception):
    """No answer from the store (or no credentials to ask with)."""


def _retryable(error: BaseException) -> bool:
    """No answer, a 5xx, or one of the codes botocore's standard mode retries."""
    if isinstance(error, S3Error):
        return error.status in _RETRY_STATUS or error.code in _RETRY_CODES
    return isinstance(error, Unreachable)


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


@dataclass(frozen=True)
class Keys:
    """One set of AWS credentials (botocore's frozen credentials have the same fields)."""

    access_key: str
    secret_key: str = field(repr=False)
    token: str | None = field(default=None, repr=False)


def sign(method: str, url: URL, headers: dict[str, str], payload_sha256: str, keys: Keys, region: str,
         now: dt.datetime) -> dict[str, str]:
    """`headers` with Host, the date, the payload hash and the SigV4 Authorization for S3 added.

    S3's canonical request takes the path as sent (encoded once, not normalised) and the
    query's `k=v` pairs, encoded as they are in `url`, sorted; every header sent is signed.
    """
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    host = url.raw_host or ""
    host = f"[{host}]" if ":" in host else host
    headers = headers | {"Host": host if url.is_default_port() else f"{host}:{url.port}",
                         "x-amz-date": stamp, "x-amz-content-sha256": payload_sha256}
    if keys.token:
        headers["x-amz-security-token"] = keys.token
    signed = sorted((name.lower(), " ".join(value.split())) for name, value in headers.items())
    names = ";".join(name for name, _ in signed)
    pairs = url.raw_query_string.split("&") if url.raw_query_string else []
    query = "&".join(sorted(pair if "=" in pair else pair + "=" for pair in pairs))
    canonical = "\n".join([method, url.raw_path, query, "".join(f"{n}:{v}\n" for n, v in signed), names,
                           payload_sha256])
    scope = f"{stamp[:8]}/{region}/s3/aws4_request"
    text_to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    key = ("AWS4" + keys.secret_key).encode()
    for part in (stamp[:8], region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, text_to_sign.encode(), hashlib.sha256).hexdigest()
    headers["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={keys.access_key}/{scope}, "
                                f"SignedHeaders={names}, Signature={signature}")
    return headers


class Client:
    """Requests to one bucket; the aiohttp session and the credentials are made on first use."""

    def __init__(self, config: S3Config, *, retries: int) -> None:
        assert config.bucket
        self.config = config
        self.bucket = config.bucket
        self.retries = retries
        self._session: aiohttp.ClientSession | None = None
        self._credentials: Any = None
        self._region = ""  # the config's, or the environment's: known once started
        self._proxy: str | None = None
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
        try:
            return ET.fromstring(reply.body)
        except ET.ParseError as e:  # not an S3 store at that URL, or a proxy's page
            raise S3Error(reply.status, "InvalidReply", f"not S3's XML ({e})") from None

    async def open(self, method: str, name: str, query: dict[str, str] | None = None, *,
                   headers: dict[str, str] | None = None, body: Body | None = None) -> aiohttp.ClientResponse:
        """The response of a successful request, its body not read yet (the caller releases it).

        A failed connection, a 5xx or throttling is retried with backoff, `retries` times."""
        session, url = await self._start(), self._url(name, query)
        async for attempt in BACKOFF.retrying(retry_if_exception(_retryable), self.retries + 1):
            with attempt:
                # A redirect (S3's 301/307 for another region) is an error: the signature
                # names this host.
                try:
                    resp = await session.request(method, url, data=body.payload() if body else None,
                                                 headers=await self._sign(method, url, headers or {}, body),
                                                 allow_redirects=False, proxy=self._proxy)
                except NETWORK_ERRORS as e:
                    raise Unreachable(f"{type(e).__name__}: {e}") from None
                if resp.status >= 300:
                    raise await _error(resp)
                return resp
        raise AssertionError("unreachable: tenacity reraises the last error")

    async def _start(self) -> aiohttp.ClientSession:
        async with self._ready:
            if self._session is None:
                self._credentials, self._region = await asyncio.to_thread(_credentials, self.config.region)
                self._proxy = _proxy(self._url("", None))
                self._session = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=32),
                    timeout=aiohttp.ClientTimeout(sock_connect=10, sock_read=60),
                    auto_decompress=False, skip_auto_headers=("Content-Type", "Accept-Encoding"))
            return self._session

    async def _sign(self, method: str, url: URL, headers: dict[str, str], body: Body | None) -> dict[str, str]:
        keys = self._credentials
        if not isinstance(keys, Keys):  # botocore's, perhaps refreshable
            if keys.refresh_needed() if hasattr(keys, "refresh_needed") else False:
                keys = await asyncio.to_thread(keys.get_frozen_credentials)  # may ask a service
            else:
                keys = keys.get_frozen_credentials()
        if body:
            headers = headers | {"Content-Length": str(body.length)}
        return sign(method, url, headers, body.sha256 if body else EMPTY_SHA256, keys, self._region,
                    dt.datetime.now(dt.UTC))

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
    """The credentials and the region (files, maybe a service: run in a thread).

    Keys in the environment come first, as in botocore's chain; when they and the region are
    there, botocore is not imported. Expiring ones (AWS_CREDENTIAL_EXPIRATION) are botocore's."""
    region = region or os.environ.get("AWS_DEFAULT_REGION")
    env = os.environ
    if region and env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY") and \
            not env.get("AWS_CREDENTIAL_EXPIRATION"):
        token = env.get("AWS_SESSION_TOKEN") or env.get("AWS_SECURITY_TOKEN")
        return Keys(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], token), region
    import botocore.session
    from botocore.exceptions import BotoCoreError

    try:
        session = botocore.session.Session()
        credentials = session.get_credentials()
    except BotoCoreError as e:
        raise Unreachable(str(e)) from e
    if credentials is None:
        raise Unreachable("Unable to locate credentials")
    return credentials, region or session.get_config_variable("region") or "us-east-1"


def _proxy(url: URL) -> str | None:
    """The proxy that HTTPS_PROXY / HTTP_PROXY name for the store, unless NO_PROXY excludes it
    (as botocore did); the session itself ignores the environment (no .netrc per request)."""
    if url.host and proxy_bypass(url.host):
        return None
    return getproxies().get(url.scheme)


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
