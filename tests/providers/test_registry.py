"""Registry-wide: every provider declares what it is, and its documented fixtures parse to their
documented outcome."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from archiver import errors
from archiver.errors import ConfigError
from archiver.providers.entry import COMMON_KEYS
from archiver.values import parse_poll_intervals
from archiver.model import REASONS, Phase
from archiver.providers import PROVIDERS
from tests.providers.conftest import FIXTURES, fixture_files, load_fixture
from tests.support.providers import entry, poll_canned


def test_registry_is_sorted_and_complete() -> None:
    assert list(PROVIDERS) == sorted(PROVIDERS)
    for name, cls in PROVIDERS.items():
        assert cls.type == name
        assert cls.requests_per_second > 0 and cls.batch_size >= 1
        assert (FIXTURES / name).is_dir(), f"{name} has no fixtures"


def example_options(name: str) -> dict[str, Any]:
    """The type's own keys from its first fixture that names some (a fixture's "entry")."""
    return next((load_fixture(p)["entry"] for p in fixture_files(name) if "entry" in load_fixture(p)), {})


@pytest.mark.parametrize("name", list(PROVIDERS))
def test_every_provider_declares_its_defaults_options_and_abilities(name: str) -> None:
    cls = PROVIDERS[name]
    base = urlsplit(cls.base_url)
    assert base.scheme == "https" and base.netloc and not cls.base_url.endswith("/"), "a default base_url"
    assert cls.poll_intervals == parse_poll_intervals(
        [f"{every}s until {until}s" if until != float("inf") else f"{every}s" for every, until in cls.poll_intervals],
        "poll_intervals"), "a default poll schedule as the config would write it"
    assert cls.poll_intervals[-1][1] == float("inf")
    assert cls.not_found_grace >= 0 and cls.min_poll_interval >= 0
    assert cls.empty_success_wait is None or cls.empty_success_wait > 0
    assert inspect.iscoroutinefunction(cls.verify_callback), "a callback verifier (callbacks.query_token if none)"
    # Options: its keys are its own (no type takes another's, none shadows a common key), and a
    # typical entry parses into options that show the same keys again for check-config.
    others = set().union(*(c.options.keys for n, c in PROVIDERS.items() if n != name))
    assert not cls.options.keys & others and not cls.options.keys & COMMON_KEYS
    options = cls.options.parse(example_options(name), f"providers.{name}")
    assert set(options.view()) == cls.options.keys
    assert dataclasses.is_dataclass(options) and options.__dataclass_params__.frozen  # type: ignore[attr-defined]
    provider = cls(entry(name, "http://127.0.0.1:9", **example_options(name)))
    assert provider.batch_size == cls.batch_size


def test_construction_does_no_io() -> None:
    # Port 9 on loopback is closed: a constructor that dialled out would fail or hang here.
    for name, cls in PROVIDERS.items():
        cls(entry(name, "http://127.0.0.1:9", **example_options(name)))


def test_a_misplaced_key_gets_its_owners_message_or_is_ignored() -> None:
    for name, cls in PROVIDERS.items():
        for other in PROVIDERS.values():
            if other is cls:
                continue
            example = example_options(other.type)
            try:
                other.options.misplaced(example, f"providers.{name}")
            except ConfigError as e:
                assert str(e).startswith(f"config: providers.{name}.") and other.type in str(e)


@pytest.mark.parametrize("path", fixture_files(), ids=lambda p: f"{p.parent.name}/{p.stem}")
async def test_fixture(path: Path) -> None:
    fixture = load_fixture(path)
    expect = fixture["expect"]
    if "source" in fixture or path.parent.name in ("fal", "replicate") or "api" in fixture.get("entry", {}):
        assert fixture["source"] in ("docs", "constructed"), "say where the answer comes from"
    if "raises" in expect:
        with pytest.raises(getattr(errors, expect["raises"])):
            await poll_canned(path.parent.name, fixture)
        return
    result = await poll_canned(path.parent.name, fixture)
    if expect.get("not_found"):
        assert fixture["task_id"] not in result
        return
    status = result[fixture["task_id"]]
    assert status.phase == Phase(expect["phase"])
    if status.phase == Phase.SUCCEEDED:
        # Every field stated: a missing one would compare the result with itself.
        missing = {"urls", "media", "roles"} - expect.keys()
        assert not missing, f"a success fixture states all it expects: add {sorted(missing)} to its expect"
        assert list(status.urls) == expect["urls"]
        assert status.media == expect["media"]
        assert list(status.roles) == expect["roles"]
    if status.phase == Phase.FAILED:
        assert "reason" in expect, "a failure fixture states its reason"
        assert status.reason in REASONS
        for field in ("reason", "code", "message"):
            if field in expect:
                assert getattr(status, field) == expect[field], field
    assert status.response is not None


# Codes the provider docs name (docs/providers.md); a fixture holding any other
# must name it in a "made up: …" note.
DOCUMENTED: dict[str, set[str]] = {
    "kie": {"200", "400", "401", "402", "404", "422", "429", "455", "500", "501", "505"},
    "maxapi": {"0", "400", "401", "CONTENT_MODERATION", "INVALID_PARAMETERS", "INSUFFICIENT_POINTS"},
    "acedata": {"bad_request", "no_token", "invalid_token", "token_expired", "token_mismatched",
                "api_not_implemented", "disabled", "used_up", "forbidden", "no_api", "not_found",
                "too_many_requests", "api_error", "timeout",
                "content_moderation"},  # [CODE]: the official n8n node's test mock
    "apipod": {"200", "400", "401", "402", "403", "404", "409", "429", "500", "503", "504",
               "invalid_api_key", "invalid_request", "insufficient_quota", "rate_limit_exceeded",
               "model_not_available", "internal_error", "invalid_idempotency_key", "idempotency_conflict",
               "idempotency_in_progress", "idempotency_unavailable", "UPSTREAM_CAPACITY_EXHAUSTED",
               "rate_limit_error", "invalid_request_error"},  # the last two are error types
}
CODE_KEYS = {"code", "error_code", "failCode", "failure_reason", "failReason"}


def codes(node: Any, provider_type: str) -> set[str]:
    """Every code in a body; apipod's error `type` counts too (acedata's `type` is a record type)."""
    keys = CODE_KEYS | ({"type"} if provider_type == "apipod" else set())
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key in keys and isinstance(value, (str, int)) and value != "":
                found.add(str(value))
            found |= codes(value, provider_type)
    elif isinstance(node, list):
        for item in node:
            found |= codes(item, provider_type)
    return found


@pytest.mark.parametrize("path", fixture_files(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_fixture_codes_are_documented_or_marked_made_up(path: Path) -> None:
    fixture = load_fixture(path)
    provider_type = path.parent.name
    if "source" in fixture:
        return  # the newer fixtures (kie products, Replicate, fal) say their origin in "source"
    undocumented = codes(fixture["body"], provider_type) - DOCUMENTED[provider_type]
    note = fixture.get("note", "")
    if undocumented:
        assert note.startswith("made up: "), f"not in the docs, and not marked made up: {undocumented}"
    assert not [code for code in undocumented if code not in note], f"not in the docs: {undocumented}"


def test_the_code_check_sees_an_unmarked_code() -> None:
    body = {"code": 200, "data": {"status": "failed", "error_code": "INVENTED", "type": "made_up_error"}}
    assert codes(body, "apipod") - DOCUMENTED["apipod"] == {"INVENTED", "made_up_error"}
