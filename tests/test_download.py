"""Downloader.fetch against the fault CDN on 127.0.0.1: every fault ends in the right outcome.

Success means the staged bytes are exactly the entity served last (sha256 too); resumes
must be seen on the wire (a Range request answered 206 from where the first attempt
stopped), and no outcome may splice two versions of a file together.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from archiver.download import Downloader, Fetched, redact
from archiver.errors import DownloadFailed, DownloadInterrupted, PermanentError, TooLarge, UrlExpired
from archiver.archive_format.media import choose_ext
from archiver.urlguard import UrlGuard, guarded_connector
from archiver.testing import FaultCdn, Hit, Resource, media_bytes, serve_at
from archiver.testing.cdn import LAST_MODIFIED, etag_of
from archiver.testing.media import PNG

BODY = media_bytes("png", 100_000, "body")
NEW = media_bytes("png", 90_000, "new")  # a second version of the same file
CUT = 40_000
E = TypeVar("E", bound=Exception)


@pytest.fixture
async def cdn() -> AsyncIterator[FaultCdn]:
    fake = FaultCdn()
    async with serve_at(fake.app()) as base:
        fake.base = base
        yield fake


@pytest.fixture(autouse=True)
def no_secrets_leave(cdn: FaultCdn, caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """After each test: no request carried credentials, no archiver log showed a query string."""
    caplog.set_level(logging.DEBUG)
    yield
    for hit in cdn.hits:
        assert not {"Authorization", "Cookie", "Proxy-Authorization"} & set(hit.headers), hit
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("archiver"))
    assert "SIGNED-" not in ours


async def fetch(cdn: FaultCdn, name: str, dest: Path, *, max_bytes: int = 10**6, attempts: int = 4,
                max_wait: float = 0.05, sock_read: float | None = None,
                allow: tuple[str, ...] = ("127.0.0.0/8",)) -> Fetched:
    guard = UrlGuard(allow)
    timeout = aiohttp.ClientTimeout(total=20, sock_read=sock_read)
    async with aiohttp.ClientSession(connector=guarded_connector(guard, 8, 4), auto_decompress=False,
                                     timeout=timeout, trust_env=False) as session:
        downloader = Downloader(session, max_bytes=max_bytes, per_host=4, check_url=guard.check_url,
                                attempts=attempts, max_wait=max_wait)
        return await downloader.fetch(cdn.url(name), dest)


async def fails(cdn: FaultCdn, name: str, dest: Path, error: type[E], **kw: Any) -> E:
    """Fetch, expect `error`, and check its message names no secret."""
    with pytest.raises(error) as info:
        await fetch(cdn, name, dest, **kw)
    assert "SIGNED-" not in str(info.value) and "sig=" not in str(info.value)
    return info.value


def assert_stored(fetched: Fetched, dest: Path, entity: bytes) -> None:
    assert dest.read_bytes() == entity
    assert fetched.size == len(entity)
    assert fetched.sha256 == hashlib.sha256(entity).hexdigest()
    assert fetched.head == entity[:32]
    assert not dest.with_name(dest.name + ".etag").exists(), "the resume note outlived the download"


def assert_resumed(hit: Hit, offset: int, validator: str, total: int) -> None:
    """`hit` asked for the rest with Range + If-Range, and got only the rest."""
    assert hit.headers.get("Range") == f"bytes={offset}-"
    assert hit.headers.get("If-Range") == validator
    assert (hit.status, hit.start, hit.sent) == (206, offset, total - offset)


async def test_plain_download(cdn: FaultCdn, tmp_path: Path) -> None:
    cdn.add("a", Resource(BODY, content_type="image/png"))
    fetched = await fetch(cdn, "a", tmp_path / "a.part")
    assert_stored(fetched, tmp_path / "a.part", BODY)
    assert fetched.content_type == "image/png"
    [hit] = cdn.hits_for("a")
    assert "Range" not in hit.headers and "If-Range" not in hit.headers
    assert hit.headers.get("Accept-Encoding") == "identity"
    assert hit.query.startswith("sig=SIGNED-"), "the signed query string must reach the CDN"


@pytest.mark.parametrize("step", ["cut", "short"])
@pytest.mark.parametrize("validator", ["etag", "last-modified", "both"])
async def test_broken_transfer_resumes_where_it_stopped(cdn: FaultCdn, tmp_path: Path, step: str,
                                                       validator: str) -> None:
    cdn.add("a", Resource(BODY, script=[step, "ok"], cut_at=CUT, validator=validator))
    fetched = await fetch(cdn, "a", tmp_path / "a.part")
    assert_stored(fetched, tmp_path / "a.part", BODY)
    first, second = cdn.hits_for("a")
    assert (first.status, first.sent) == (200, CUT)
    expected = LAST_MODIFIED[0] if validator == "last-modified" else etag_of(BODY)
    assert_resumed(second, CUT, expected, len(BODY))


async def test_chunked_transfer_cut_resumes(cdn: FaultCdn, tmp_path: Path) -> None:
    cdn.add("a", Resource(BODY, script=["cut", "ok"], cut_at=CUT, chunked=True))
    fetched = await fetch(cdn, "a", tmp_path / "a.part")
    assert_stored(fetched, tmp_path / "a.part", BODY)
    assert_resumed(cdn.hits_for("a")[1], CUT, etag_of(BODY), len(BODY))


async def test_read_timeout_resumes(cdn: FaultCdn, tmp_path: Path) -> None:
    cdn.add("a", Resource(BODY, script=["stall", "ok"], cut_at=CUT, stall_for=3.0))
    fetched = await fetch(cdn, "a", tmp_path / "a.part", sock_read=0.5)
    assert_stored(fetched, tmp_path / "a.part", BODY)
    assert_resumed(cdn.hits_for("a")[1], CUT, etag_of(BODY), len(BODY))


async def test_several_cuts_each_resume_from_the_last_byte(cdn: FaultCdn, tmp_path: Path) -> None:
    cdn.add("a", Resource(BODY, script=["cut", "cut", "ok"], cut_at=30_000))
    fetched = await fetch(cdn, "a", tmp_path / "a.part")
    assert_stored(fetched, tmp_path / "a.part", BODY)
    hits = cdn.hits_for("a")
    assert [h.start for h in hits] == [0, 30_000, 60_000]
    assert sum(h.sent for h in hits) == len(BODY), "bytes were downloaded twice"


async def test_cut_after_the_last_byte_still_completes(cdn: FaultCdn, tmp_path: Path) -> None:
    """Every byte arrived but the chunked stream never ended: the Range asks past the end (416)."""
    cdn.add("a", Resource(BODY, script=["cut", "ok"], cut_at=len(BODY), chunked=True))
    fetched = await fetch(cdn, "a", tmp_path / "a.part")
    assert_stored(fetched, tmp_path / "a.part", BODY)
    assert [h.status for h in cdn.hits_for("a")][:2] == [200, 416]


async def test_connection_reset_before_any_response_is_retried(cdn: FaultCdn, tmp_path: Path) -> None:
    cdn.add("a", Resource(BODY, script=["reset", "ok"]))
    assert_stored(await fetch(cdn, "a", tmp_path / "a.part"), tmp_path / "a.part", BODY)


@pytest.mark.parametrize("script", [["500", "ok"], ["503", "502", "ok"], ["cut", "500", "ok"]])
async def test_server_errors_are_retried(cdn: FaultCdn, tmp_path: Path, script: list[str]) -> None:
    cdn.add("a", Resource(BODY, script=script, cut_at=CUT))
    fetched = await fetch(cdn, "a", tmp_path / "a.part")
    assert_stored(fetched, tmp_path / "a.part", BODY)
    hits = cdn.hits_for("a")
    assert len(hits) == len(script)
    if script[0] == "cut":
        assert_resumed(hits[-1], CUT, etag_of(BODY), len(BODY))


async def test_retries_are_bounded(cdn: FaultCdn, tmp_path: Path) -> None:
    cdn.add("a", Resource(BODY, script=["500"]))
    error = await fails(cdn, "a", tmp_path / "a.part", DownloadInterrupted, attempts=3)
    assert "500" in str(error)
    assert len(cdn.hits_for("a")) == 3


async def test_retry_after_is_honoured(cdn: FaultCdn, tmp_path: Path) -> None:
    # Backoff alone would wait at most 1.5 s before the second attempt.
    cdn.add("a", Resource(BODY, script=["429", "ok"], retry_after="2"))
    started = time.monotonic()
    assert_stored(await fetch(cdn, "a", tmp_path / "a.part", max_wait=5), tmp_path / "a.part", BODY)
    assert time.monotonic() - started >= 2.0
    assert [h.status for h in cdn.hits_for("a")] == [429, 200]


async def test_range_ignored_starts_over(cdn: FaultCdn, tmp_path: Path) -> None:
    cdn.add("a", Resource(BODY, script=["cut", "ok"], cut_at=CUT, ignore_range=True))
    fetched = await fetch(cdn, "a", tmp_path / "a.part")
    assert_stored(fetched, tmp_path / "a.part", BODY)
    second = cdn.hits_for("a")[1]
    assert second.headers.get("Range") == f"bytes={CUT}-", "the retry did not try to resume"
    assert (second.status, second.sent) == (200, len(BODY))


@pytest.mark.parametrize("validator", ["etag", "last-modified"])
async def test_changed_entity_is_never_spliced(cdn: FaultCdn, tmp_path: Path, validator: str) -> None:
    cdn.add("a", Resource(BODY, script=["cut", "ok"], cut_at=CUT, changed=NEW, validator=validator))
    fetched = await fetch(cdn, "a", tmp_path / "a.part")
    assert_stored(fetched, tmp_path / "a.part", NEW)
    second = cdn.hits_for("a")[1]
    assert second.headers.get("If-Range") == (etag_of(BODY) if validator == "etag" else LAST_MODIFIED[0])
    assert (second.status, second.sent) == (200, len(NEW))


async def test_changed_entity_behind_a_server_ignoring_if_range(cdn: FaultCdn, tmp_path: Path) -> None:
    """The server answers the Range of the old version with a 206 of the new one (new ETag)."""
    cdn.add("a", Resource(BODY, script=["cut", "ok"], cut_at=CUT, changed=NEW, ignore_if_range=True))
    fetched = await fetch(cdn, "a", tmp_path / "a.part")
    assert_stored(fetched, tmp_path / "a.part", NEW)


async def test_range_answered_from_another_offset_is_never_spliced(cdn: FaultCdn, tmp_path: Path) -> None:
    cdn.add("a", Resource(BODY, script=["cut", "misaligned", "ok"], cut_at=CUT))
    fetched = await fetch(cdn, "a", tmp_path / "a.part", attempts=5)
    assert_stored(fetched, tmp_path / "a.part", BODY)


async def test_no_validator_means_no_resume(cdn: FaultCdn, tmp_path: Path) -> None:
    cdn.add("a", Resource(BODY, script=["cut", "ok"], cut_at=CUT, validator="none"))
    fetched = await fetch(cdn, "a", tmp_path / "a.part")
    assert_stored(fetched, tmp_path / "a.part", BODY)
    second = cdn.hits_for("a")[1]
    assert "Range" not in second.headers
    assert (second.status, second.sent) == (200, len(BODY))


async def test_stale_partial_from_another_version_is_not_resumed(cdn: FaultCdn, tmp_path: Path) -> None:
    """A partial left by an earlier run, of a version the CDN no longer has."""
    dest = tmp_path / "a.part"
    dest.write_bytes(BODY[:CUT])
    dest.with_name("a.part.etag").write_text(json.dumps({"validator": etag_of(BODY)}))
    cdn.add("a", Resource(NEW))
    assert_stored(await fetch(cdn, "a", dest), dest, NEW)
    [hit] = cdn.hits_for("a")
    assert hit.headers.get("If-Range") == etag_of(BODY) and hit.status == 200


@pytest.mark.parametrize("status", ["403", "404", "410"])
async def test_url_that_expired_after_working(cdn: FaultCdn, tmp_path: Path, status: str) -> None:
    cdn.add("a", Resource(BODY, script=["cut", status], cut_at=CUT))
    error = await fails(cdn, "a", tmp_path / "a.part", UrlExpired)
    assert isinstance(error, PermanentError) and error.reason == "url_expired"
    assert len(cdn.hits_for("a")) == 2, "a permanent error was retried"
    assert not list(tmp_path.iterdir()), "the partial and its resume note should be gone"


async def test_expired_from_the_start(cdn: FaultCdn, tmp_path: Path) -> None:
    cdn.add("a", Resource(BODY, script=["403"]))
    error = await fails(cdn, "a", tmp_path / "a.part", UrlExpired)
    assert len(cdn.hits_for("a")) == 1
    # The message names the URL as fetched, port included, and never its query.
    assert f"{cdn.base}/f/a" in str(error) and "?" not in str(error), error


def test_redact_keeps_scheme_host_and_port_only() -> None:
    assert redact("http://user:pw@127.0.0.1:18081/cdn/x.png?sig=S#f") == "http://127.0.0.1:18081/cdn/x.png"
    assert redact("https://[::1]:8443/a?b") == "https://[::1]:8443/a"
    assert redact("https://cdn.example/a.png?X-Amz-Signature=s") == "https://cdn.example/a.png"


@pytest.mark.parametrize("chunked", [False, True], ids=["by-content-length", "by-count"])
async def test_too_large(cdn: FaultCdn, tmp_path: Path, chunked: bool) -> None:
    cdn.add("a", Resource(BODY, chunked=chunked))
    error = await fails(cdn, "a", tmp_path / "a.part", TooLarge, max_bytes=len(BODY) - 1)
    assert error.reason == "too_large"
    assert len(cdn.hits_for("a")) == 1
    assert not list(tmp_path.iterdir())


async def test_exactly_max_bytes_is_fine(cdn: FaultCdn, tmp_path: Path) -> None:
    cdn.add("a", Resource(BODY, chunked=True))
    assert_stored(await fetch(cdn, "a", tmp_path / "a.part", max_bytes=len(BODY)), tmp_path / "a.part", BODY)


@pytest.mark.parametrize("hops", [1, 5])
async def test_redirect_chain_is_followed(cdn: FaultCdn, tmp_path: Path, hops: int) -> None:
    cdn.add("a", Resource(BODY, redirects=hops))
    assert_stored(await fetch(cdn, "a", tmp_path / "a.part"), tmp_path / "a.part", BODY)
    assert len(cdn.hits) == hops + 1
    assert cdn.hits_for("a")[0].query.startswith("sig=SIGNED-")


async def test_more_than_five_redirects_fail(cdn: FaultCdn, tmp_path: Path) -> None:
    cdn.add("a", Resource(BODY, redirects=6))
    error = await fails(cdn, "a", tmp_path / "a.part", DownloadFailed)
    assert error.reason == "download_failed"
    assert len(cdn.hits) == 6 and not cdn.hits_for("a")


async def test_redirect_to_another_host_and_resume_there(cdn: FaultCdn, tmp_path: Path) -> None:
    async with serve_at(cdn.app(), "127.0.0.3") as other:
        cdn.add("a", Resource(BODY, script=["cut", "ok"], cut_at=CUT, redirects=3, redirect_base=other))
        fetched = await fetch(cdn, "a", tmp_path / "a.part")
    assert_stored(fetched, tmp_path / "a.part", BODY)
    first, second = cdn.hits_for("a")
    assert first.host == second.host == other.removeprefix("http://")
    assert_resumed(second, CUT, etag_of(BODY), len(BODY))


async def test_wrong_content_type_keeps_bytes_and_sniffs_the_type(cdn: FaultCdn, tmp_path: Path) -> None:
    cdn.add("a", Resource(BODY, content_type="text/html; charset=utf-8"))
    fetched = await fetch(cdn, "a", tmp_path / "a.part")
    assert_stored(fetched, tmp_path / "a.part", BODY)
    assert fetched.content_type == "text/html; charset=utf-8"
    assert choose_ext(fetched.head, fetched.content_type, cdn.url("a")) == "png"


async def test_no_content_length(cdn: FaultCdn, tmp_path: Path) -> None:
    cdn.add("a", Resource(BODY, chunked=True))
    assert_stored(await fetch(cdn, "a", tmp_path / "a.part"), tmp_path / "a.part", BODY)


async def test_gzip_encoding_is_stored_as_served(cdn: FaultCdn, tmp_path: Path) -> None:
    packed = gzip.compress(PNG + b"\x00" * 50_000)
    cdn.add("a", Resource(packed, encoding="gzip", content_type="image/png"))
    fetched = await fetch(cdn, "a", tmp_path / "a.part")
    assert_stored(fetched, tmp_path / "a.part", packed)
    assert cdn.hits_for("a")[0].headers.get("Accept-Encoding") == "identity"
