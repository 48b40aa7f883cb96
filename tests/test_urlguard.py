"""The SSRF guard: pure decisions for every range, and aiohttp end to end on loopback only.

No test here may open a socket outside 127.0.0.0/8, even with a broken guard: other
ranges are judged by check_url/check_address alone.
"""

from __future__ import annotations

import socket

import aiohttp
import pytest

from archiver.errors import UnsafeUrl
from archiver.urlguard import UrlGuard, guarded_connector, unsafe_from
from tests.support.ci import cannot_run
from tests.support.servers import REQUESTS, canned, serve

REFUSED_URLS = [
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.1/",
    "http://172.16.0.1/",
    "http://172.31.255.255/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",
    "http://127.0.0.1/",
    "http://[::1]/",
    "http://[fe80::1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[::ffff:10.0.0.1]/",
    "http://[::a9fe:a9fe]/",  # IPv4-compatible
    "http://[2002:a9fe:a9fe::1]/",  # 6to4
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64
    "http://2852039166/",  # 169.254.169.254 as one integer
    "http://0251.0376.0251.0376/",  # ... and in octal
    "http://0.0.0.0/",
    "http://224.0.0.1/",
    "http://[fec0::1]/",
    "file:///etc/passwd",
    "ftp://example.com/x.png",
    "http://user:pass@example.com/",
    "http://user@example.com/",
    "http:///no-host",
    "http://[::1/",
]


@pytest.mark.parametrize("url", REFUSED_URLS)
def test_refused_urls(url: str) -> None:
    with pytest.raises(UnsafeUrl):
        UrlGuard([]).check_url(url)


@pytest.mark.parametrize("url", [
    "http://93.184.216.34/a.png",
    "https://[2606:4700::1111]/a.png",
    "https://example.com/a.png?X-Amz-Signature=abc",
    "http://localhost/",  # a name: judged by the resolver at dial time
])
def test_accepted_urls(url: str) -> None:
    UrlGuard([]).check_url(url)


@pytest.mark.parametrize("ip", ["169.254.169.254", "10.0.0.1", "100.64.0.1", "127.0.0.1", "::1",
                                "fe80::1", "fe80::1%eth0", "::ffff:169.254.169.254", "not-an-ip"])
def test_refused_addresses(ip: str) -> None:
    with pytest.raises(UnsafeUrl):
        UrlGuard([]).check_address(ip)


def test_public_addresses_pass() -> None:
    UrlGuard([]).check_address("93.184.216.34")
    UrlGuard([]).check_address("2606:4700::1111")


def test_allow_cidr_is_the_only_exemption() -> None:
    guard = UrlGuard(["127.0.0.0/8", "10.1.0.0/16"])
    guard.check_url("http://127.0.0.1:8080/x")
    guard.check_url("http://[::ffff:10.1.2.3]/")
    guard.check_address("10.1.255.255")
    with pytest.raises(UnsafeUrl):
        guard.check_address("10.2.0.1")
    with pytest.raises(UnsafeUrl):
        guard.check_url("http://[::1]/")


def test_message_never_shows_query_string() -> None:
    for url in ("ftp://h/x?sig=SECRET", "http://10.0.0.1/x?sig=SECRET", "http://[::1/?sig=SECRET"):
        with pytest.raises(UnsafeUrl) as info:
            UrlGuard([]).check_url(url)
        assert "SECRET" not in str(info.value)


def _localhost_is_loopback() -> bool:
    try:
        infos = socket.getaddrinfo("localhost", 80, socket.AF_INET, socket.SOCK_STREAM)
    except OSError:
        return False
    return any(info[4][0] == "127.0.0.1" for info in infos)


async def _get(guard: UrlGuard, url: str) -> int:
    connector = guarded_connector(guard, 4, 2)
    async with aiohttp.ClientSession(connector=connector) as session, \
            session.get(url, allow_redirects=False) as resp:
        return resp.status


async def test_allowed_loopback_end_to_end() -> None:
    app = canned(200, b"{}")
    expected = ["/a"]
    async with serve(app) as base:
        guard = UrlGuard(["127.0.0.1/32"])
        guard.check_url(base + "/a")
        assert await _get(guard, base + "/a") == 200
        if _localhost_is_loopback():
            port = base.rsplit(":", 1)[1]
            assert await _get(guard, f"http://localhost:{port}/b") == 200
            expected.append("/b")
    assert [path for _, path, _ in app[REQUESTS]] == expected


async def test_resolver_refuses_localhost() -> None:
    if not _localhost_is_loopback():
        # Every hosts file we know maps it so; names the test controls: tests/test_urlguard_e2e.py.
        cannot_run("the system resolver's localhost test", "localhost does not resolve to 127.0.0.1 here")
    app = canned(200, b"{}")
    async with serve(app) as base:
        url = f"http://localhost:{base.rsplit(':', 1)[1]}/?sig=SECRET"
        guard = UrlGuard([])
        guard.check_url(url)  # a name passes; the dialled address must not
        with pytest.raises(aiohttp.ClientError) as info:
            await _get(guard, url)
    unsafe = unsafe_from(info.value)
    assert isinstance(unsafe, UnsafeUrl)
    assert unsafe.reason == "unsafe_url"
    assert "SECRET" not in str(unsafe)
    assert app[REQUESTS] == []


def test_unsafe_from_ignores_other_errors() -> None:
    assert unsafe_from(aiohttp.ClientError("boom")) is None
    assert unsafe_from(ConnectionResetError()) is None
