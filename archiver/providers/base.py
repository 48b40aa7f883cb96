"""The Provider plug point: an adapter says how to ask about tasks and reads the answer.

A provider module declares all it is by class attributes: its type, its defaults, its own
config options (entry.Options), its optional abilities and its callback verifier.
The poller and the HTTP server ask for them through this protocol, never by name.

Pacing, retries, Retry-After, 5xx backoff and scheduling live once, in the shared
`Http` the daemon hands to `poll`; an adapter only builds requests and turns JSON into
`TaskStatus`. Its `poll` answers for every ID it was given, or leaves an ID out when the
provider does not know it (the poller turns that into not_found after `not_found_grace`).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

from archiver.errors import ProviderUnavailable
from archiver.model import TaskStatus, utc_iso
from archiver.providers.callbacks import Callback, Incoming
from archiver.providers.entry import ProviderEntry, ProviderKind


@dataclass(frozen=True)
class Reply:
    """One HTTP answer from a provider, already read."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON; garbage becomes ProviderUnavailable (a failed poll)."""
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError):
            snippet = self.body[:80].decode("utf-8", "replace")
            raise ProviderUnavailable(f"HTTP {self.status} with a body that is not JSON: {snippet!r}") from None


class Http(Protocol):
    """A paced request to one provider entry.

    Raises RateLimited on 429, ProviderUnavailable on 5xx (except those in `accept`, for
    an API that stores a model's own 5xx answer, like fal) or a network error, and
    KeyRejected on HTTP 401; any other status comes back as a Reply.
    """

    async def __call__(
        self, method: str, url: str, *, headers: Mapping[str, str], json: Any = None,
        accept: Collection[int] = (),
    ) -> Reply: ...


class Provider(ProviderKind, Protocol):
    """One provider type, declared by class attributes (ProviderKind's and these). Construction does no I/O."""

    batch_size: ClassVar[int]  # IDs asked about in one poll; above 1 the poller batches
    not_found_grace: float  # seconds an ID the provider does not know is asked about before not_found
    min_poll_interval: float  # the provider's own limit between two polls of one task; 0 for none
    empty_success_wait: ClassVar[float | None]  # how long a success without URLs is asked again; None: the poller's

    def __init__(self, entry: ProviderEntry) -> None: ...

    async def poll(self, http: Http, task_ids: Sequence[str]) -> dict[str, TaskStatus]: ...

    @staticmethod
    async def verify_callback(call: Incoming) -> Callback:
        """Check a callback to /callbacks/{entry}; callbacks.query_token for a provider that signs none."""
        ...


@runtime_checkable
class RefreshesUrls(Protocol):
    """A provider that can hand out a fresh link for a result URL that has expired."""

    async def refresh_url(self, http: Http, task_id: str, url: str) -> str | None: ...


def bearer(entry: ProviderEntry) -> dict[str, str]:
    return {"Authorization": f"Bearer {entry.api_key.reveal()}", "Accept": "application/json"}


def text(value: Any) -> str | None:
    """A provider field as a string, or None for null/empty."""
    if value is None or value == "":
        return None
    return str(value)


def url_list(value: Any, where: str) -> tuple[str, ...]:
    """A provider's list of result URLs (a lone string counts as one); junk is a failed poll."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(u, str) for u in value):
        raise ProviderUnavailable(f"{where} is not a list of URLs")
    return tuple(u for u in value if u)


def ms_to_iso(value: Any) -> str | None:
    """Milliseconds since the epoch (int, float or digit string) → ISO 8601 UTC."""
    try:
        return utc_iso(float(value) / 1000) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def seconds_to_iso(value: Any) -> str | None:
    try:
        return utc_iso(float(value)) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def media_from_model(model: str | None) -> str:
    """Guess image/video/audio from a model name, as the digest suggests for kie."""
    m = (model or "").lower()
    if any(w in m for w in ("video", "t2v", "i2v", "kling", "sora", "veo", "hailuo", "seedance", "wan")):
        return "video"
    if any(w in m for w in ("suno", "elevenlabs", "audio", "music")):
        return "audio"
    return "image"


def iso_time(value: Any) -> str | None:
    """An ISO 8601 string → UTC with a Z; one without a zone stays without one (zone unknown)."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        stamp = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return value
    if stamp.tzinfo is None:
        return stamp.isoformat(timespec="milliseconds")
    return stamp.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def api_key(entry: ProviderEntry, scheme: str) -> str:
    """The entry's key without a scheme word the user may have copied along (`Token r8_…`)."""
    key = entry.api_key.reveal().strip()
    for word in ("Bearer ", "Token ", "Key ", scheme + " "):
        if key.startswith(word):
            return key[len(word):].strip()
    return key


def shorten(value: Any) -> Any:
    """A copy of a provider's JSON with each data: URI cut to its header: sidecars stay small."""
    if isinstance(value, str) and value.startswith("data:"):
        return f"{value.split(',', 1)[0][:200]},… ({len(value)} characters inline)"
    if isinstance(value, dict):
        return {k: shorten(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shorten(v) for v in value]
    return value
