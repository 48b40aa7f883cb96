"""The SSRF guard end to end through Downloader: a redirect to a refused address is never dialled.

The CDN is allowed (127.0.0.1/32); a canary listens on 127.0.0.2, which is not, and counts
every connection it accepts. Every address here is in 127.0.0.0/8 or ::1, so even a broken
guard dials nothing beyond this host. Names resolve through a resolver the test controls
(tests/support/names.py), never through this machine's hosts file.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from archiver.download import Downloader, Fetched
from archiver.errors import DownloadInterrupted, UnsafeUrl
from archiver.urlguard import UrlGuard, guarded_connector
from archiver.testing import Canary, FaultCdn, Resource, canary, media_bytes, serve_at
from tests.support.names import HostsResolver

BODY = media_bytes("png", 10_000, "guard")


@pytest.fixture
async def cdn() -> AsyncIterator[FaultCdn]:
    fake = FaultCdn()
    async with serve_at(fake.app(), "127.0.0.1") as base:
        fake.base = base
        yield fake


@pytest.fixture
async def bird() -> AsyncIterator[Canary]:
    async with canary("127.0.0.2") as seen:
        yield seen


async def fetch(url: str, dest: Path, allow: list[str], names: HostsResolver | None = None) -> Fetched:
    """Download through the guard; names resolve through `names` when given, else the system's resolver."""
    guard = UrlGuard(allow)
    async with aiohttp.ClientSession(connector=guarded_connector(guard, 4, 2, names), auto_decompress=False,
                                     timeout=aiohttp.ClientTimeout(total=10), trust_env=False) as session:
        downloader = Downloader(session, max_bytes=10**6, per_host=2, check_url=guard.check_url,
                                attempts=2, max_wait=0.05)
        return await downloader.fetch(url, dest)


def canary_forms(bird: Canary) -> dict[str, str]:
    """Ways to write the canary's address in a URL; each one means 127.0.0.2."""
    port = bird.base.rsplit(":", 1)[1]
    return {"dotted": f"http://127.0.0.2:{port}", "integer": f"http://2130706434:{port}",
            "short": f"http://127.2:{port}", "mapped": f"http://[::ffff:127.0.0.2]:{port}"}


@pytest.mark.parametrize("form", ["dotted", "integer", "short", "mapped"])
async def test_redirect_to_refused_address_is_never_dialled(cdn: FaultCdn, bird: Canary, tmp_path: Path,
                                                            form: str) -> None:
    target = canary_forms(bird)[form]
    cdn.add("a", Resource(BODY, location=f"{target}/meta-data?sig=SIGNED-canary"))
    with pytest.raises(UnsafeUrl) as info:
        await fetch(cdn.url("a"), tmp_path / "a.part", ["127.0.0.1/32"])
    assert info.value.reason == "unsafe_url"
    assert "SIGNED-" not in str(info.value)
    assert [h.path for h in cdn.hits] == ["/f/a"], "the refused hop was retried"
    assert bird.connections == []
    assert not list(tmp_path.iterdir())


async def test_refused_hop_deep_in_a_redirect_chain(cdn: FaultCdn, bird: Canary, tmp_path: Path) -> None:
    """The chain's hops go 127.0.0.1 → 127.0.0.1 → canary: the third hop is judged too."""
    cdn.add("a", Resource(BODY, redirects=3))
    url = cdn.url("a")
    cdn.resources["a"].redirect_base = bird.base  # every Location now names the canary
    with pytest.raises(UnsafeUrl):
        await fetch(url, tmp_path / "a.part", ["127.0.0.1/32"])
    assert len(cdn.hits) == 1 and bird.connections == []


async def test_refused_first_url(bird: Canary, tmp_path: Path) -> None:
    with pytest.raises(UnsafeUrl):
        await fetch(f"{bird.base}/x.png?sig=SIGNED-x", tmp_path / "a.part", ["127.0.0.1/32"])
    assert bird.connections == []


async def test_allowing_the_canary_reaches_it(cdn: FaultCdn, bird: Canary, tmp_path: Path) -> None:
    """The control: with 127.0.0.2 allowed the same redirect is followed, and the canary counts it."""
    cdn.add("a", Resource(BODY, location=f"{bird.base}/meta-data"))
    with pytest.raises(DownloadInterrupted):  # the canary hangs up without answering
        await fetch(cdn.url("a"), tmp_path / "a.part", ["127.0.0.1/32", "127.0.0.2/32"])
    assert bird.connections, "the control never reached the canary: the tests above prove nothing"


async def test_allowed_redirect_to_another_address_is_followed(cdn: FaultCdn, tmp_path: Path) -> None:
    async with serve_at(cdn.app(), "127.0.0.3") as other:
        cdn.add("a", Resource(BODY, redirects=2, redirect_base=other))
        fetched = await fetch(cdn.url("a"), tmp_path / "a.part", ["127.0.0.1/32", "127.0.0.3/32"])
    assert (tmp_path / "a.part").read_bytes() == BODY and fetched.size == len(BODY)
    assert cdn.hits_for("a")[0].host == other.removeprefix("http://")


# Resolved as Debian's /etc/hosts resolves localhost: an IPv4 and an IPv6 loopback address.
CDN_NAME = "assets.cdn.test"
LOOPBACKS = {CDN_NAME: ["127.0.0.1", "::1"]}


async def test_name_of_a_refused_address_is_refused_at_connect(tmp_path: Path) -> None:
    """A hop to a name passes check_url (a name); the resolver refuses its addresses at dial time."""
    names = HostsResolver(LOOPBACKS)
    cdn = FaultCdn()
    async with serve_at(cdn.app(), "127.0.0.2") as base, canary("127.0.0.1") as bird:
        cdn.base = base
        port = bird.base.rsplit(":", 1)[1]
        cdn.add("a", Resource(BODY, location=f"http://{CDN_NAME}:{port}/x?sig=SIGNED-x"))
        with pytest.raises(UnsafeUrl) as info:
            await fetch(cdn.url("a"), tmp_path / "a.part", ["127.0.0.2/32"], names)
    assert "SIGNED-" not in str(info.value)
    assert names.asked == [CDN_NAME], "the hop was refused before its name was looked up"
    assert len(cdn.hits) == 1 and bird.connections == []


async def test_name_of_an_allowed_address_is_dialled(tmp_path: Path) -> None:
    """The control: with 127.0.0.1 allowed the same hop by name reaches the canary, and ::1 is never tried."""
    names = HostsResolver(LOOPBACKS)
    cdn = FaultCdn()
    async with serve_at(cdn.app(), "127.0.0.2") as base, canary("127.0.0.1") as bird:
        cdn.base = base
        port = bird.base.rsplit(":", 1)[1]
        cdn.add("a", Resource(BODY, location=f"http://{CDN_NAME}:{port}/x"))
        with pytest.raises(DownloadInterrupted):  # the canary hangs up without answering
            await fetch(cdn.url("a"), tmp_path / "a.part", ["127.0.0.1/32", "127.0.0.2/32"], names)
    assert bird.connections, "the allowed address of the name was never dialled"
