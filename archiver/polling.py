"""The provider entries' pollers: made at start (those with a key, on rate buckets shared by key), drained at stop."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
from collections.abc import Mapping

import aiohttp

from archiver.config import Config
from archiver.errors import StateUnavailable
from archiver.jobs import cancel
from archiver.pacing import Bucket, ProviderHttp, key_bucket
from archiver.poller import EntryPoller, OnFailed, OnSuccess
from archiver.providers import PROVIDERS
from archiver.recorder import Recorder
from archiver.scrub import Redactor
from archiver.state import StateStore, Task

log = logging.getLogger(__name__)

POLL_DRAIN = 3.0  # seconds a poll in flight may take to finish at shutdown


def shared_buckets(config: Config, state: StateStore) -> dict[str, Bucket]:
    """One bucket per API key: providers limit a key, not an entry of ours.

    Entries with the same type, base_url and key share one bucket at the lowest of their rates;
    on PostgreSQL every daemon shares it too. The key itself never leaves this process: the
    bucket is named by a hash of it.
    """
    groups: dict[tuple[str, str, str], list[str]] = {}
    for name, entry in config.providers.items():
        groups.setdefault((entry.type, entry.base_url, entry.api_key.reveal()), []).append(name)
    buckets = {}
    for group, names in groups.items():
        key_id = hashlib.sha256("\0".join(group).encode()).hexdigest()[:32]
        bucket = key_bucket(key_id, min(config.providers[n].requests_per_second for n in names), state.rate_slots())
        buckets.update(dict.fromkeys(names, bucket))
    return buckets


async def say_keys(config: Config, state: StateStore) -> None:
    """An entry without a key is not polled: its tasks wait (queued) for a restart with the key set,
    and status says why. A no_key row of an earlier run whose key is now set goes back to ok."""
    rows = {h.name: h.state for h in await state.health() if h.daemon in ("", state.me)}
    for name, entry in config.providers.items():
        why = entry.no_key()
        if why is None:
            if rows.get(name) == "no_key":
                await state.set_health(name, "ok")
            continue
        log.warning("provider=%s: not polled: %s; its tasks wait until the daemon starts with a key",
                    name, why, extra={"provider": name, "reason": "no_key"})
        if rows.get(name) == "no_key":
            await state.set_health(name, "ok")  # else the row keeps the last run's time, and reads stale
        await state.set_health(name, "no_key", why)


def make_pollers(config: Config, state: StateStore, api: aiohttp.ClientSession, on_success: OnSuccess,
                 on_failed: OnFailed, rng: random.Random, recorder: Recorder) -> dict[str, EntryPoller]:
    """A poller for each entry with a key, by entry name."""
    pollers, buckets = {}, shared_buckets(config, state)
    redactor = Redactor.from_config(config)
    for name, entry in config.providers.items():
        if entry.no_key():
            continue  # never sent an empty key: see say_keys
        provider = PROVIDERS[entry.type](entry)
        http = ProviderHttp(name, api, buckets[name], recorder=recorder, redactor=redactor,
                            max_answer=entry.max_answer)
        pollers[name] = EntryPoller(entry, provider, http, state, on_success, on_failed, rng, recorder)
    return pollers


async def drain(pollers: Mapping[str, EntryPoller], grace: float) -> None:
    """At a stop, polls in flight get a moment to record their answer; one held back by a paused
    provider is cancelled and simply asked again on the next start."""
    polls = [job for poller in pollers.values() for job in poller.running]
    if polls:
        await asyncio.wait(polls, timeout=min(POLL_DRAIN, grace))
    await cancel(polls)
    for poller in pollers.values():
        with contextlib.suppress(StateUnavailable):
            await poller.flush()  # the answers not written yet; unwritten, they are only asked again


async def poll_now(pollers: Mapping[str, EntryPoller], task: Task) -> bool:
    """A callback said the task ended: its poller asks at once; False if it is not ours now."""
    poller = pollers.get(task.provider)
    return poller is not None and await poller.poll_now(task.pk)
