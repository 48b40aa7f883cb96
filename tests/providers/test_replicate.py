"""Replicate: the request on the wire, the auth word, and the output walk."""

from __future__ import annotations

import json
import logging
from typing import Any

import aiohttp
import pytest

from archiver.config import Secret
from archiver.model import Phase
from archiver.pacing import ProviderHttp, TokenBucket
from archiver.providers.replicate import Replicate, walk
from tests.support.providers import entry
from tests.support.servers import HEADERS, REQUESTS, routed, serve

ID = "gm3qorzdhgbfurvjtvhg6dckhu"


async def poll(body: dict[str, Any], key: str = "r8_abc") -> tuple[Any, Any]:
    app = routed({f"/v1/predictions/{ID}": (200, json.dumps(body).encode())})
    async with serve(app) as base, aiohttp.ClientSession() as session:
        provider = Replicate(entry("replicate", base, api_key=Secret(key)))
        result = await provider.poll(ProviderHttp("replicate", session, TokenBucket(1000)), [ID])
    return result, app


@pytest.mark.parametrize("key", ["r8_abc", "Token r8_abc", "Bearer r8_abc"])
async def test_sends_bearer_whichever_word_the_key_was_configured_with(key: str) -> None:
    result, app = await poll({"id": ID, "status": "starting"}, key)
    assert result[ID].phase == Phase.RUNNING
    assert [(m, p) for m, p, _ in app[REQUESTS]] == [("GET", f"/v1/predictions/{ID}")]
    assert app[HEADERS][0]["Authorization"] == "Bearer r8_abc"


async def test_fields_and_times() -> None:
    result, _ = await poll({"id": ID, "model": "black-forest-labs/flux-schnell", "status": "succeeded",
                            "input": {"prompt": "a fox", "num_outputs": 1}, "output": ["https://replicate.delivery/a.webp"],
                            "created_at": "2026-01-05T10:00:00.120000Z", "completed_at": "2026-01-05T10:00:03.900000Z"})
    status = result[ID]
    assert (status.model, status.prompt, status.input) == ("black-forest-labs/flux-schnell", "a fox",
                                                           {"prompt": "a fox", "num_outputs": 1})
    assert (status.created_at, status.completed_at) == ("2026-01-05T10:00:00.120Z", "2026-01-05T10:00:03.900Z")


async def test_unknown_status_is_logged_with_provider_and_task(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "archiver.providers.replicate")
    result, _ = await poll({"id": ID, "status": "booting"})
    assert result[ID].phase == Phase.RUNNING
    assert "booting" in caplog.text and f"task_id={ID}" in caplog.text and "provider=replicate" in caplog.text


def test_walk_keeps_document_order_and_skips_text() -> None:
    output = {"b": ["https://x/1.png", "not a url", {"deep": "https://x/2.png"}], "a": "https://x/3.mp4",
              "n": 3, "t": "data:audio/wav;base64,UklGRg=="}
    assert list(walk(output)) == [("https://x/1.png", "b"), ("https://x/2.png", "b"), ("https://x/3.mp4", "a"),
                                  ("data:audio/wav;base64,UklGRg==", "t")]
    assert list(walk(["ftp://x/y", "http://127.0.0.1/z"])) == [("http://127.0.0.1/z", None)]
