"""data: URIs become staged files exactly as a download would, within the size limits."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest

from archiver import datauri
from archiver.download import redact
from archiver.errors import DownloadFailed, TooLarge
from archiver.providers.base import shorten

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


def test_base64_uri_is_decoded_with_hash_type_and_head(tmp_path: Path) -> None:
    uri = "data:image/png;base64," + base64.b64encode(PNG).decode()
    fetched = datauri.save(uri, tmp_path / "a.part", 1 << 20)
    assert (tmp_path / "a.part").read_bytes() == PNG
    assert (fetched.size, fetched.sha256) == (len(PNG), hashlib.sha256(PNG).hexdigest())
    assert fetched.content_type == "image/png" and fetched.head == PNG[:32]


def test_percent_encoded_uri(tmp_path: Path) -> None:
    fetched = datauri.save("data:text/plain,hello%20world", tmp_path / "t.part", 100)
    assert (tmp_path / "t.part").read_bytes() == b"hello world" and fetched.content_type == "text/plain"


def test_over_the_limit_is_too_large_before_decoding(tmp_path: Path) -> None:
    uri = "data:image/png;base64," + base64.b64encode(PNG).decode()
    with pytest.raises(TooLarge):
        datauri.save(uri, tmp_path / "a.part", len(PNG) - 1)
    assert not (tmp_path / "a.part").exists()
    with pytest.raises(TooLarge):  # the fixed cap holds whatever download.max_bytes says
        datauri.save("data:;base64," + "A" * (datauri.MAX_BYTES // 3 * 4 + 8), tmp_path / "b.part", 1 << 40)


@pytest.mark.parametrize("uri", ["data:image/png;base64,not*base64", "data:image/png;base64", "http://x/y"])
def test_broken_uri_fails_the_download(tmp_path: Path, uri: str) -> None:
    with pytest.raises(DownloadFailed):
        datauri.save(uri, tmp_path / "x.part", 1 << 20)


def test_logs_and_sidecars_see_only_the_header() -> None:
    uri = "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert redact(uri) == "data:image/png;base64"
    short = shorten({"output": [uri, "https://x/y.png"], "n": 1})
    assert short == {"output": [f"data:image/png;base64,… ({len(uri)} characters inline)", "https://x/y.png"], "n": 1}
