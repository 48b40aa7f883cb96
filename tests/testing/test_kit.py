"""FakeProviders against the real provider adapters: every type and kie product answers each
outcome in JSON the adapter reads as meant, and the kit records what it was asked."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from archiver.config import Secret
from archiver.model import Phase, TaskStatus
from archiver.pacing import ProviderHttp, TokenBucket
from archiver.providers import PROVIDERS
from archiver.testing import DOCUMENTED_FAILURES, PROVIDER_TYPES, FakeProviders, FakeTask, fails, succeeds
from archiver.testing.kit import DEFAULT_WHERE
from tests.support.providers import entry

KIE_APIS = ("veo", "4o-image", "flux-kontext", "mj", "runway", "luma")  # suno: files come in pairs
# What each documented failure means to the daemon: most are content moderation.
FAILURE_REASONS = {("apipod", "images"): "provider_failed", ("kie", "flux-kontext"): "provider_failed"}
CASES = [(t, {}) for t in PROVIDER_TYPES] + [("kie", {"api": api}) for api in KIE_APIS]


async def poll(fake: FakeProviders, task: FakeTask, **options: str) -> TaskStatus | None:
    """One poll of `task` by the real adapter, on an entry as `fake.entry` writes it."""
    config = fake.entry(task.provider_type, **options)
    own = {k: v for k, v in config.items() if k in PROVIDERS[task.provider_type].options.keys}
    provider = PROVIDERS[task.provider_type](entry(task.provider_type, config["base_url"], **own,
                                                   api_key=Secret(config["api_key"])))
    async with aiohttp.ClientSession() as session:
        found = await provider.poll(ProviderHttp(task.provider_type, session, TokenBucket(1000)), [task.task_id])
    return found.get(task.task_id)


def where(provider_type: str, options: dict[str, str]) -> str | None:
    return options.get("api", DEFAULT_WHERE.get(provider_type))


@pytest.mark.parametrize(("provider_type", "options"), CASES, ids=[f"{t}{o}" for t, o in CASES])
async def test_success_after_running_polls_then_its_files_download(
        fake_providers: FakeProviders, provider_type: str, options: dict[str, str]) -> None:
    one = {"veo": "mp4", "luma": "mp4", "runway": "mp4", "flux-kontext": "png"}.get(options.get("api", ""))
    kinds = (one,) if one else ("png", "png")
    task = fake_providers.task(provider_type, succeeds(*kinds), where=where(provider_type, options), running_polls=1)
    first = await poll(fake_providers, task, **options)
    assert first is not None and first.phase == Phase.RUNNING
    done = await poll(fake_providers, task, **options)
    assert done is not None and done.phase == Phase.SUCCEEDED, done
    assert len(done.urls) == len(kinds) and fake_providers.polls(task) == 2
    async with aiohttp.ClientSession() as http:
        bodies = [await (await http.get(url)).read() for url in done.urls]
    assert bodies == task.files and fake_providers.downloads(task) == len(kinds)
    assert set(fake_providers.requests_per_key()) == {fake_providers.key(provider_type)}


@pytest.mark.parametrize(("provider_type", "options"), CASES, ids=[f"{t}{o}" for t, o in CASES])
async def test_documented_failure_maps_to_its_reason(
        fake_providers: FakeProviders, provider_type: str, options: dict[str, str]) -> None:
    task = fake_providers.task(provider_type, fails(), where=where(provider_type, options))
    status = await poll(fake_providers, task, **options)
    assert status is not None and status.phase == Phase.FAILED, status
    key = (provider_type, task.where if (provider_type, task.where) in DOCUMENTED_FAILURES else "")
    assert status.reason == FAILURE_REASONS.get(key, "content_moderation"), status
    assert {str(said) for said in DOCUMENTED_FAILURES[key] if said is not None} & {status.code, status.message}


async def test_a_failure_of_ones_own_and_an_unknown_task(fake_providers: FakeProviders) -> None:
    task = fake_providers.task("kie", fails("501", "Generation failed"))
    status = await poll(fake_providers, task)
    assert status is not None and (status.reason, status.code, status.message) == (
        "provider_failed", "501", "Generation failed")
    gone = await poll(fake_providers, FakeTask("kie", "never-made", ["success"]))
    assert gone is None  # the adapter leaves an unknown task out of its answer


async def test_running_for_seconds_then_success(fake_providers: FakeProviders) -> None:
    task = fake_providers.task("maxapi", running_seconds=0.4)
    assert (await poll(fake_providers, task)).phase == Phase.RUNNING  # type: ignore[union-attr]
    assert (await poll(fake_providers, task)).phase == Phase.RUNNING  # type: ignore[union-attr]
    await asyncio.sleep(0.45)
    assert (await poll(fake_providers, task)).phase == Phase.SUCCEEDED  # type: ignore[union-attr]


async def test_throttled_polls_answer_429_with_retry_after(fake_providers: FakeProviders) -> None:
    task = fake_providers.task("apipod", throttled=2, retry_after=7)
    url = f"{fake_providers.base_url('apipod')}/v1/images/status/{task.task_id}"
    headers = {"Authorization": f"Bearer {fake_providers.key('apipod')}"}
    async with aiohttp.ClientSession() as http:
        answers = []
        for _ in range(3):
            async with http.get(url, headers=headers) as resp:
                answers.append((resp.status, resp.headers.get("Retry-After")))
    assert answers == [(429, "7"), (429, "7"), (200, None)]
    assert [r.status for r in fake_providers.requests(api="apipod")] == [429, 429, 200]
    assert fake_providers.polls(task) == 1


async def test_expiring_kie_urls_403_until_download_url_renews_them(fake_providers: FakeProviders) -> None:
    task = fake_providers.task("kie", succeeds("png"), expiring=True)
    status = await poll(fake_providers, task)
    assert status is not None and status.phase == Phase.SUCCEEDED
    [url] = status.urls
    headers = {"Authorization": f"Bearer {fake_providers.key('kie')}"}
    async with aiohttp.ClientSession() as http:
        assert (await http.get(url)).status == 403
        async with http.post(f"{fake_providers.base_url('kie')}/api/v1/common/download-url",
                             json={"url": url}, headers=headers) as resp:
            fresh = (await resp.json())["data"]
        async with http.get(fresh) as resp:
            assert resp.status == 200 and await resp.read() == task.files[0]


async def test_callable_bodies_are_made_once_on_first_download(fake_providers: FakeProviders) -> None:
    made = []

    def render() -> bytes:
        made.append(1)
        return b"\x1a\x45\xdf\xa3 a real webm would go here"

    task = fake_providers.task("fal", succeeds(render))
    assert made == []
    await poll(fake_providers, task)
    status = await poll(fake_providers, task)
    assert status is not None and status.phase == Phase.SUCCEEDED, status
    async with aiohttp.ClientSession() as http:
        for _ in range(2):
            assert await (await http.get(status.urls[0])).read() == render()
    assert len(made) == 3  # two here, one by the fake: the result answer made it, the CDN reused it


def test_entries_are_plain_config_for_every_type() -> None:
    fake = FakeProviders(poll_interval="1s")
    entries = fake.entries()
    assert sorted(entries) == sorted(PROVIDER_TYPES)
    assert entries["fal"]["app"] == "fal-ai/flux/dev" and entries["acedata"]["service"] == "seedream"
    assert fake.entry("kie", api="veo")["api"] == "veo" and entries["kie"]["poll_intervals"] == ["1s"]
    with pytest.raises(ValueError, match="no fake for provider type"):
        fake.entry("midjourney")
    with pytest.raises(ValueError, match="unknown file kind"):
        succeeds("gif")
