"""Documented answer shapes, one JSON file each under fixtures/<provider type>/.

A fixture file holds {"http_status": 200, "body": <JSON or a string for garbage>,
"task_id": "...", "expect": {...}}, or "routes": {path: {"http_status", "body"}} instead of
one reply when a poll asks twice (fal: status, then result). "source" says where the
answer comes from: "docs" (a documented example, adapted) or "constructed" (built from the
documented fields); "note" says what the case is about. `expect` is one of:
  {"phase": "running"}
  {"phase": "succeeded", "urls": [...], "media": "image", "roles": [...]}   all three required
  {"phase": "failed", "reason": "content_moderation", "code": "...", "message": "..."}   reason required
  {"not_found": true}                       the provider does not know the ID
  {"raises": "KeyRejected" | "RateLimited" | "ProviderUnavailable"}
Optional "entry": the type's own config keys (service, family, api, app), parsed by its Options.
Fixtures of the four seed providers without "source" say their origin in "note" when it is
not a documented example: "constructed: …" (built from what the docs say) or "made up: …"
(values the provider docs, summed up in docs/providers.md, do not name;
test_registry holds the codes they do).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures"


def fixture_files(provider_type: str | None = None) -> list[Path]:
    pattern = f"{provider_type}/*.json" if provider_type else "*/*.json"
    return sorted(FIXTURES.glob(pattern))


def load_fixture(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))
