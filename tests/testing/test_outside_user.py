"""The kit as someone building on kie would use it: only archiver.testing and aiohttp.

It polls a fake kie Market task over HTTP as kie's docs say (GET recordInfo with a bearer
key; `resultJson` is a JSON string) until success, then downloads the file.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp

from archiver.testing import FakeProviders, succeeds


async def test_poll_a_kie_task_to_success_and_download_its_file(fake_providers: FakeProviders) -> None:
    task = fake_providers.task("kie", succeeds("png"), running_polls=2)
    entry = fake_providers.entry("kie")
    headers = {"Authorization": f"Bearer {entry['api_key']}"}
    states = []
    async with aiohttp.ClientSession() as http:
        for _ in range(10):
            async with http.get(f"{entry['base_url']}/api/v1/jobs/recordInfo", params={"taskId": task.task_id},
                                headers=headers) as resp:
                assert resp.status == 200
                reply = await resp.json()
            assert reply["code"] == 200, reply
            states.append(reply["data"]["state"])
            if states[-1] == "success":
                break
            await asyncio.sleep(0.01)
        assert states == ["generating", "generating", "success"]
        [url] = json.loads(reply["data"]["resultJson"])["resultUrls"]
        async with http.get(url) as resp:
            assert resp.status == 200
            body = await resp.read()
    assert body.startswith(b"\x89PNG\r\n\x1a\n") and body == task.files[0]
    assert fake_providers.polls(task) == 3
    assert fake_providers.requests_per_key() == {entry["api_key"]: 3}


async def test_without_pytest_fixture_as_a_plain_context_manager() -> None:
    async with FakeProviders() as fake:
        task = fake.task("kie", succeeds("jpg"))
        async with aiohttp.ClientSession() as http, http.get(
                f"{fake.base_url('kie')}/api/v1/jobs/recordInfo", params={"taskId": task.task_id},
                headers={"Authorization": "Bearer wrong"}) as resp:
            assert resp.status == 401
    assert fake.requests_per_key() == {"wrong": 1} and task.polls == 0

