"""A reverse proxy in front of moto that plays an S3-compatible store with other manners:
one that refuses `If-None-Match` (as stores without conditional writes do), or one where
another writer's conditional write is in flight (409 ConditionalRequestConflict). It checks
every request's SigV4 signature as AWS does, which moto does not (403 SignatureDoesNotMatch)."""

from __future__ import annotations

import hashlib
import hmac
import io
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

# Hop-by-hop, or set again by aiohttp from the body it sends.
_DROP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}


@dataclass
class S3Proxy:
    """`refuse`: the (status, code) answered to every request carrying If-None-Match.
    `conflicts`: how many conditional requests get a 409 first. `seen` logs each request as
    (method, path_qs, whether it carried If-None-Match)."""

    upstream: str
    refuse: tuple[int, str] | None = None
    conflicts: int = 0
    seen: list[tuple[str, str, bool]] = field(default_factory=list)
    tokens: list[str | None] = field(default_factory=list)  # each request's session token

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024**2)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        conditional = "If-None-Match" in request.headers
        self.seen.append((request.method, request.path_qs, conditional))
        body = await request.read()
        self.tokens.append(request.headers.get("X-Amz-Security-Token"))
        if not _signed(request, body):
            return _error(403, "SignatureDoesNotMatch", "The request signature we calculated does not match")
        if conditional and self.refuse:
            status, code = self.refuse
            return _error(status, code, "A header you provided implies functionality that is not implemented")
        if conditional and self.conflicts > 0:
            self.conflicts -= 1
            return _error(409, "ConditionalRequestConflict",
                          "A conflicting operation occurred. If using PutObject you can retry the request.")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP}
        headers["Host"] = request.host
        async with aiohttp.ClientSession(auto_decompress=False) as session, session.request(
                request.method, self.upstream + request.path_qs, headers=headers,
                data=io.BytesIO(body), allow_redirects=False) as reply:
            body = await reply.read()
            kept = {k: v for k, v in reply.headers.items() if k.lower() not in _DROP}
            if request.method == "HEAD" and "Content-Length" in reply.headers:
                kept["Content-Length"] = reply.headers["Content-Length"]  # the object's, not this body's
            return web.Response(status=reply.status, body=body, headers=kept)


def _signed(request: web.Request, body: bytes) -> bool:
    """The signature recomputed from the request as it arrived (path, query and the signed
    headers as sent) with the test credentials, and the payload hash checked against the body."""
    fields = dict(part.strip().split("=", 1) for part in
                  request.headers.get("Authorization", "").removeprefix("AWS4-HMAC-SHA256 ").split(","))
    payload = request.headers.get("X-Amz-Content-SHA256")
    if "Signature" not in fields or payload != hashlib.sha256(body).hexdigest():
        return False
    region = fields["Credential"].split("/")[2]
    names = fields["SignedHeaders"].split(";")
    # rel_url: a request to a forward proxy carries the absolute URL.
    wire = AWSRequest(request.method, f"http://{request.host}{request.rel_url.raw_path_qs}",
                      headers={name: request.headers.get(name, "") for name in names})
    wire.context["timestamp"] = request.headers["X-Amz-Date"]
    signer = S3SigV4Auth(Credentials("testing", "testing"), "s3", region)
    expected = signer.signature(signer.string_to_sign(wire, signer.canonical_request(wire)), wire)
    return hmac.compare_digest(expected, fields["Signature"])


def _error(status: int, code: str, message: str) -> web.Response:
    body = f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>'
    return web.Response(status=status, body=body.encode(), content_type="application/xml")
