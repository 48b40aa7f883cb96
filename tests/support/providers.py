"""Run one provider adapter against a canned reply served on 127.0.0.1."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import aiohttp

from archiver.config import DEFAULT_POLL_INTERVALS, ProviderEntry, Secret
from archiver.model import TaskStatus
from archiver.pacing import ProviderHttp, TokenBucket
from archiver.providers import PROVIDERS
from tests.support.servers import canned, routed, serve

API_KEY = "sk-test-SECRET-0123456789"


def entry(provider_type: str, base_url: str, **extra: Any) -> ProviderEntry:
    """An entry of this type. `extra` holds ProviderEntry fields, and the type's own keys as a config
    writes them (a fixture's "entry"), which its Options parse and check."""
    cls = PROVIDERS[provider_type]
    options = {k: v for k, v in extra.items() if k in cls.options.keys}
    e = ProviderEntry(
        name=provider_type, type=provider_type, api_key=Secret(API_KEY), base_url=base_url,
        requests_per_second=cls.requests_per_second, give_up_after=3600.0,
        poll_intervals=DEFAULT_POLL_INTERVALS, options=cls.options.parse(options, f"providers.{provider_type}"),
    )
    return replace(e, **{k: v for k, v in extra.items() if k not in options})


async def poll_canned(provider_type: str, fixture: dict[str, Any]) -> dict[str, TaskStatus]:
    """Serve the fixture's reply (or its replies by path) and poll its task_id through the real ProviderHttp."""
    if "routes" in fixture:
        app = routed({path: (r.get("http_status", 200), _raw(r["body"])) for path, r in fixture["routes"].items()})
    else:
        app = canned(fixture.get("http_status", 200), _raw(fixture["body"]))
    async with serve(app) as base:
        provider = PROVIDERS[provider_type](entry(provider_type, base, **fixture.get("entry", {})))
        async with aiohttp.ClientSession() as session:
            http = ProviderHttp(provider_type, session, TokenBucket(1000))
            return await provider.poll(http, [fixture["task_id"]])


def _raw(body: Any) -> bytes:
    return body.encode() if isinstance(body, str) else json.dumps(body).encode()
