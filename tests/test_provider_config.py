"""Config of the newer provider types: kie `api`, fal `app` and `jwks_url` (each type's own Options),
per-type defaults."""

from __future__ import annotations

from pathlib import Path

from archiver.config import DEFAULT_POLL_INTERVALS, load_config
from archiver.providers.entry import NoOptions
from archiver.providers.fal import JWKS_URL as FAL_JWKS_URL
from archiver.providers.fal import FalOptions
from archiver.providers.kie import APIS as KIE_APIS


def load(tmp_path: Path, providers: str):
    path = tmp_path / "c.yaml"
    path.write_text(f"providers:\n{providers}", encoding="utf-8")
    return load_config(path).providers


def test_kie_api_defaults_to_market_and_takes_every_product(tmp_path: Path) -> None:
    lines = "  plain: {type: kie, api_key: x}\n" + "".join(
        f"  k{i}: {{type: kie, api_key: x, api: {api}}}\n" for i, api in enumerate(KIE_APIS))
    entries = load(tmp_path, lines)
    assert entries["plain"].options.api == "market"
    assert [entries[f"k{i}"].options.api for i in range(len(KIE_APIS))] == list(KIE_APIS)


def test_replicate_and_fal_defaults(tmp_path: Path) -> None:
    entries = load(tmp_path, "  r: {type: replicate, api_key: x}\n  f: {type: fal, api_key: x, app: fal-ai/flux/dev}\n"
                             "  g: {type: fal, api_key: x, app: 12345-myapp, jwks_url: 'http://127.0.0.1:9/jwks.json'}\n")
    r, f, g = entries["r"], entries["f"], entries["g"]
    assert (r.base_url, r.requests_per_second) == ("https://api.replicate.com", 40.0)
    assert (f.base_url, f.requests_per_second, f.options.app, f.options.jwks_url) == (
        "https://queue.fal.run", 10.0, "fal-ai/flux/dev", FAL_JWKS_URL)
    assert g.options.jwks_url == "http://127.0.0.1:9/jwks.json"
    # Each entry holds its own type's options, and only those.
    assert isinstance(r.options, NoOptions) and isinstance(f.options, FalOptions)
    # Tighter than the default schedule: Replicate deletes outputs after an hour, fal large results in 6 min.
    for entry in (r, f):
        assert entry.poll_intervals[0][0] == 1.0
        assert all(a[0] <= b[0] for a, b in zip(entry.poll_intervals, DEFAULT_POLL_INTERVALS, strict=True))
    assert max(every for every, _ in f.poll_intervals) < 6 * 60
