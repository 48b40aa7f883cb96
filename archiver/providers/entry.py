"""The providers section of the config: each entry's common keys, then its type's own options.

Every key a type adds (acedata's `service`, fal's `app`…) is declared, parsed and checked by
that type's `Options` in its own module; this module only knows the keys all entries share.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, Self, TypeVar
from urllib.parse import urlsplit

from archiver.errors import ConfigError
from archiver.values import Secret, parse_duration, parse_poll_intervals, parse_size, section

Schedule = tuple[tuple[float, float], ...]  # (every, until) steps, as values.parse_poll_intervals makes them
COMMON_KEYS = frozenset({"type", "api_key", "base_url", "requests_per_second", "give_up_after", "poll_intervals",
                         "callbacks", "max_answer", "empty_success_wait"})


class Options(Protocol):
    """A provider type's own config keys, parsed and checked: a frozen dataclass in its module."""

    keys: ClassVar[frozenset[str]]  # the keys this type adds to an entry

    @classmethod
    def parse(cls, item: Mapping[str, Any], key: str) -> Self:
        """This type's keys of one entry (`key` is providers.NAME); ConfigError names the key."""
        ...

    @classmethod
    def misplaced(cls, item: Mapping[str, Any], key: str) -> None:
        """An entry of another type sets some of these keys: raise ConfigError if that is an error."""
        ...

    def view(self) -> dict[str, Any]:
        """The options as check-config shows them, in the file's shape."""
        ...


@dataclass(frozen=True)
class NoOptions:
    """The options of a type that takes no keys of its own."""

    keys: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def parse(cls, item: Mapping[str, Any], key: str) -> Self:
        return cls()

    @classmethod
    def misplaced(cls, item: Mapping[str, Any], key: str) -> None:
        return None

    def view(self) -> dict[str, Any]:
        return {}


class ProviderKind(Protocol):
    """What the config asks of a provider type (the rest of base.Provider is the poller's)."""

    type: ClassVar[str]  # the `type:` of a config entry
    options: ClassVar[type[Options]]  # the keys it adds to an entry, parsed and checked
    base_url: ClassVar[str]  # the defaults of an entry's base_url, requests_per_second and poll_intervals
    requests_per_second: ClassVar[float]
    poll_intervals: ClassVar[Schedule]


@dataclass(frozen=True)
class CallbackConfig:
    """A provider entry's webhook (docs/http-api.md): its secret, and whether unknown tasks are adopted."""

    secret: Secret
    adopt: bool = False


OptionsT = TypeVar("OptionsT")


@dataclass(frozen=True)
class ProviderEntry:
    """One entry of the providers section: the keys every type shares, and its type's own options."""

    name: str
    type: str
    api_key: Secret
    base_url: str
    requests_per_second: float
    give_up_after: float
    poll_intervals: Schedule
    options: Options = NoOptions()
    callbacks: CallbackConfig | None = None  # None: no /callbacks/{entry} (404)
    empty_success_wait: float | None = None  # None: the provider's, else the poller's default
    max_answer: int = 8 * 1024**2  # a poll answer past this many bytes is refused (a failed poll)
    key_variable: str | None = None  # the ${VAR} api_key named, when it was not set

    def no_key(self) -> str | None:
        """Why this entry cannot be polled (its key is empty), or None."""
        if self.api_key.value:
            return None
        return f"{self.key_variable} is not set" if self.key_variable else "api_key is empty"

    def options_as(self, kind: type[OptionsT]) -> OptionsT:
        """The options as the provider's own type; another type is a programming error, not a config one."""
        if not isinstance(self.options, kind):
            raise TypeError(f"providers.{self.name}: options are {type(self.options).__name__}, not {kind.__name__}")
        return self.options


def parse_entries(raw: dict[str, Any], kinds: Mapping[str, ProviderKind]) -> dict[str, ProviderEntry]:
    """The `providers` section of a config, each entry checked against its type in `kinds`."""
    entries = raw.get("providers")
    if not entries:
        raise ConfigError("config: providers: no provider entries: add at least one (see config.example.yaml)")
    if not isinstance(entries, dict):
        raise ConfigError("config: providers: expected a mapping of named entries")
    allowed = set(COMMON_KEYS).union(*(kind.options.keys for kind in kinds.values()))
    return {name: _entry(entries, name, allowed, kinds) for name in entries}


def _entry(entries: dict[str, Any], name: str, allowed: set[str], kinds: Mapping[str, ProviderKind]) -> ProviderEntry:
    key = f"providers.{name}"
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", str(name)):
        raise ConfigError(f"config: {key}: entry names use letters, digits, _ and -")
    item = section(entries, name, key, allowed)
    kind = kinds.get(item["type"]) if isinstance(item.get("type"), str) else None
    if kind is None:
        raise ConfigError(f"config: {key}.type: unknown provider type {item.get('type')!r} "
                          f"(one of {', '.join(kinds)})")
    for other in kinds.values():
        if other is not kind and other.options.keys & item.keys():
            other.options.misplaced(item, key)
    options = kind.options.parse(item, key)
    if "api_key" not in item:
        raise ConfigError(f"config: {key}.api_key: missing: write api_key: ${{YOUR_KEY_VARIABLE}}")
    base_url = str(item.get("base_url") or kind.base_url).rstrip("/")
    if urlsplit(base_url).scheme not in ("http", "https") or not urlsplit(base_url).netloc:
        raise ConfigError(f"config: {key}.base_url: {base_url!r} is not an http(s) URL")
    rps = item.get("requests_per_second", kind.requests_per_second)
    if not isinstance(rps, (int, float)) or isinstance(rps, bool) or rps <= 0:
        raise ConfigError(f"config: {key}.requests_per_second: expected a number above zero")
    intervals = item.get("poll_intervals")
    return ProviderEntry(
        name=name,
        type=kind.type,
        api_key=Secret(str(item.get("api_key") or "")),
        base_url=base_url,
        requests_per_second=float(rps),
        give_up_after=parse_duration(item.get("give_up_after", "6h"), f"{key}.give_up_after"),
        poll_intervals=(parse_poll_intervals(intervals, f"{key}.poll_intervals")
                        if intervals is not None else kind.poll_intervals),
        options=options,
        callbacks=_callbacks(item, key),
        max_answer=_max_answer(item.get("max_answer", "8MiB"), f"{key}.max_answer"),
        empty_success_wait=(parse_duration(item["empty_success_wait"], f"{key}.empty_success_wait")
                            if item.get("empty_success_wait") is not None else None),
    )


def _max_answer(value: Any, key: str) -> int:
    size = parse_size(value, key)
    if size < 1024:
        raise ConfigError(f"config: {key}: must be at least 1KiB (no provider answers in less)")
    return size


def _callbacks(item: dict[str, Any], key: str) -> CallbackConfig | None:
    c = section(item, "callbacks", f"{key}.callbacks", {"secret", "adopt"})
    if not c.get("secret"):
        return None
    if not isinstance(c.get("adopt", False), bool):
        raise ConfigError(f"config: {key}.callbacks.adopt: expected true or false")
    return CallbackConfig(Secret(str(c["secret"])), c.get("adopt", False))
