"""A reverse proxy in front of moto that plays an S3-compatible store with other manners:
one that refuses `If-None-Match` (as stores without conditional writes do), or one where
another writer's conditional write is in flight (409 ConditionalRequestConflict), or one
having a bad day: a `script` of faults, each played once on the first request of its S3
operation (and part number) that comes along. It checks every request's SigV4 signature as
AWS does, which moto does not (403 SignatureDoesNotMatch), and the body against its signed
payload hash or, for UNSIGNED-PAYLOAD, against its x-amz-checksum-sha256 where it has one.

Faults: "503 SlowDown" and "500 InternalError" answer with that error once the body is in, as
S3 does; "reset" reads part of the body, then resets the connection (RST) mid-upload;
"412 PreconditionFailed" lets the write land upstream, then answers 412, as a store does to a
conditional write that another daemon's write of the same asset beat by a moment.
Recipe: `S3Proxy(moto, script=[Fault("UploadPart", "reset", part=1), Fault("PutObject", "503 SlowDown")])`.

`region`: the bucket lives there, as AWS has it: a request signed for another region gets 301
PermanentRedirect, with the bucket's region in `x-amz-bucket-region`; with `say_region` False,
400 AuthorizationHeaderMalformed that does not name the region, as some other stores answer.
Requests may come virtual-hosted (`bucket.localhost:port`, through HTTP_PROXY): they go upstream
path-style.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from archiver.testing.cdn import reset_connection

# Hop-by-hop, or set again by aiohttp from the body it sends.
_DROP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}


RESET_AFTER = 1024**2  # body bytes a "reset" takes in before the RST (at most half the body)
_ANSWERS = {"503 SlowDown": (503, "Please reduce your request rate."),
            "500 InternalError": (500, "We encountered an internal error. Please try again.")}
LANDS_THEN_412 = "412 PreconditionFailed"


@dataclass
class Fault:
    """Played once, on the first request for S3 operation `operation` (and part `part`)."""

    operation: str  # PutObject, UploadPart, CreateMultipartUpload, CompleteMultipartUpload, HeadObject…
    answer: str  # "503 SlowDown", "500 InternalError" or "reset"
    part: int | None = None  # UploadPart only: which part number
    played: str = ""  # the request (method and path_qs) it was played on, once it was

    def __post_init__(self) -> None:
        assert self.answer in _ANSWERS or self.answer in ("reset", LANDS_THEN_412), self.answer

    def matches(self, operation: str, request: web.Request) -> bool:
        if self.played or operation != self.operation:
            return False
        return self.part is None or request.query.get("partNumber") == str(self.part)


def operation_of(request: web.Request) -> str:
    """The S3 operation a request is, by method and query (those the tests script)."""
    query, method = request.query, request.method
    if method == "PUT":
        return "UploadPart" if "partNumber" in query else "PutObject"
    if method == "POST":
        return "CreateMultipartUpload" if "uploads" in query else "CompleteMultipartUpload"
    if method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in query else "DeleteObject"
    return {"HEAD": "HeadObject", "GET": "GetObject"}.get(method, method)


@dataclass
class S3Proxy:
    """`refuse`: the (status, code) answered to every request carrying If-None-Match.
    `ignore_conditions`: If-None-Match is dropped on the way, as s3rver ignores it without a word.
    `conflicts`: how many conditional requests get a 409 first. `script`: faults to play (see
    Fault). `seen` logs each request as (method, path_qs, whether it carried If-None-Match)."""

    upstream: str
    refuse: tuple[int, str] | None = None
    ignore_conditions: bool = False
    conflicts: int = 0
    seen: list[tuple[str, str, bool]] = field(default_factory=list)
    tokens: list[str | None] = field(default_factory=list)  # each request's session token
    script: list[Fault] = field(default_factory=list)
    operations: list[tuple[str, str]] = field(default_factory=list)  # (operation, path_qs) of each request
    region: str | None = None
    say_region: bool = True
    signed: list[tuple[str, str, str]] = field(default_factory=list)  # (access key, region, Host) of each

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024**2)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        conditional = "If-None-Match" in request.headers
        self.seen.append((request.method, request.path_qs, conditional))
        operation = operation_of(request)
        self.operations.append((operation, request.path_qs))
        fault = next((f for f in self.script if f.matches(operation, request)), None)
        if fault is not None:
            fault.played = f"{request.method} {request.path_qs}"
            if fault.answer != LANDS_THEN_412:
                return await _play(fault, request)
        body = await request.read()
        self.tokens.append(request.headers.get("X-Amz-Security-Token"))
        if not _signed(request, body):
            return _error(403, "SignatureDoesNotMatch", "The request signature we calculated does not match")
        key_id, _, region = _credential(request).split("/")[:3]
        self.signed.append((key_id, region, request.host))
        if self.region and region != self.region and self.say_region:
            return _error(301, "PermanentRedirect", "The bucket you are attempting to access must be addressed "
                          "using the specified endpoint.", {"x-amz-bucket-region": self.region})
        if self.region and region != self.region:
            return _error(400, "AuthorizationHeaderMalformed", "The authorization header is malformed")
        if conditional and self.refuse:
            status, code = self.refuse
            return _error(status, code, "A header you provided implies functionality that is not implemented")
        if conditional and self.conflicts > 0:
            self.conflicts -= 1
            return _error(409, "ConditionalRequestConflict",
                          "A conflicting operation occurred. If using PutObject you can retry the request.")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP}
        headers["Host"] = request.host
        if self.ignore_conditions:
            headers = {k: v for k, v in headers.items() if k.lower() != "if-none-match"}
        path_qs = request.path_qs
        bucket, dot, rest = request.host.partition(".")
        if dot and not bucket.isdigit():  # virtual-hosted: the bucket was the first label
            path_qs, headers["Host"] = f"/{bucket}{path_qs}", rest
        async with aiohttp.ClientSession(auto_decompress=False) as session, session.request(
                request.method, self.upstream + path_qs, headers=headers,
                data=io.BytesIO(body), allow_redirects=False) as reply:
            body = await reply.read()
            kept = {k: v for k, v in reply.headers.items() if k.lower() not in _DROP}
            if request.method == "HEAD" and "Content-Length" in reply.headers:
                kept["Content-Length"] = reply.headers["Content-Length"]  # the object's, not this body's
            if fault is not None and reply.status == 200:  # LANDS_THEN_412: the write is in, the answer says no
                return _error(412, "PreconditionFailed", "At least one of the pre-conditions did not hold")
            return web.Response(status=reply.status, body=body, headers=kept)


async def _play(fault: Fault, request: web.Request) -> web.Response:
    if fault.answer == "reset":
        await request.content.read(min(RESET_AFTER, (request.content_length or 0) // 2))
        reset_connection(request)
        return web.Response()  # never sent: the connection is gone
    await request.read()  # S3 answers once the body is in: the client sees the error, not a broken pipe
    status, message = _ANSWERS[fault.answer]
    return _error(status, fault.answer.split()[1], message)


def _fields(request: web.Request) -> dict[str, str]:
    return dict(part.strip().split("=", 1) for part in
                request.headers.get("Authorization", "").removeprefix("AWS4-HMAC-SHA256 ").split(",") if "=" in part)


def _credential(request: web.Request) -> str:
    """KEY_ID/DATE/REGION/s3/aws4_request, from a request _signed let through."""
    return _fields(request)["Credential"]


def _signed(request: web.Request, body: bytes) -> bool:
    """The signature recomputed from the request as it arrived (path, query and the signed
    headers as sent) with the test credentials, and the payload hash checked against the body."""
    fields = _fields(request)
    payload = request.headers.get("X-Amz-Content-SHA256")
    if "Signature" not in fields or payload not in (hashlib.sha256(body).hexdigest(), "UNSIGNED-PAYLOAD"):
        return False
    checksum = request.headers.get("x-amz-checksum-sha256")  # signed, and checked against the body as S3 does
    if checksum is not None and checksum != base64.b64encode(hashlib.sha256(body).digest()).decode():
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


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body = f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>'
    return web.Response(status=status, body=body.encode(), content_type="application/xml", headers=headers)
