"""Fake providers for tests, the way moto is for AWS (docs/testing.md).

`FakeProviders` starts fake APIs of every provider type (kie's Market and products, maxapi,
acedata, apipod, Replicate, fal), answering in their documented JSON, and a CDN, on
127.0.0.1. Needs only aiohttp; the daemon never imports this package. Public names are
those in `__all__`; the rest may change.
"""

from archiver.testing.apis import FakeApis
from archiver.testing.cdn import Canary, FaultCdn, Hit, Resource, canary, serve_at
from archiver.testing.kit import PROVIDER_TYPES, FakeProviders
from archiver.testing.media import Body, content_type, media_bytes
from archiver.testing.outcomes import DOCUMENTED_FAILURES, Outcome, empty, fails, succeeds
from archiver.testing.tasks import FakeTask, Request

__all__ = [
    "DOCUMENTED_FAILURES",
    "PROVIDER_TYPES",
    "Body",
    "Canary",
    "FakeApis",
    "FakeProviders",
    "FakeTask",
    "FaultCdn",
    "Hit",
    "Outcome",
    "Request",
    "Resource",
    "canary",
    "content_type",
    "empty",
    "fails",
    "media_bytes",
    "serve_at",
    "succeeds",
]
