"""SSRF policy (docs/design.md, one task's way): which URLs and addresses a download may reach.

Contract: the caller follows redirects itself, calls `check_url` on every hop, and sends
through a session built on `guarded_connector` (no proxy, no trust_env); it maps
aiohttp errors with `unsafe_from`, since a refused resolution arrives wrapped.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from archiver.errors import UnsafeUrl

IPAddress = IPv4Address | IPv6Address
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_IPV4_COMPAT = ipaddress.ip_network("::/96")
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


class RefusedAddress(UnsafeUrl, OSError):
    """Raised by GuardedResolver; an OSError so aiohttp treats it as a failed lookup."""


def _embedded_v4(ip: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 form carries and that a gateway would reach, if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _IPV4_COMPAT or any(ip in net for net in _NAT64):
        return IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _why_unsafe(ip: IPAddress) -> str | None:
    """Name the kind of non-public address `ip` is, or None if it is public."""
    checks = (
        ("unspecified", ip.is_unspecified), ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local), ("multicast", ip.is_multicast),
        ("CGNAT", isinstance(ip, IPv4Address) and ip in _CGNAT),
        ("site-local", isinstance(ip, IPv6Address) and ip.is_site_local),
        ("reserved", ip.is_reserved), ("private", ip.is_private),
        # is_global also covers documentation, benchmarking and other special ranges.
        ("non-global", not ip.is_global),
    )
    return next((name for name, hit in checks if hit), None)


class UrlGuard:
    """Decides whether a URL or an address may be fetched; `allow` CIDRs are exempt."""

    def __init__(self, allow: Sequence[str] = ()) -> None:
        self.allow = tuple(ipaddress.ip_network(c, strict=False) for c in allow)

    def _allowed(self, ip: IPAddress) -> bool:
        return any(ip.version == net.version and ip in net for net in self.allow)

    def check_address(self, ip: str) -> None:
        """Raise UnsafeUrl unless `ip` is a public address or falls in an allow CIDR."""
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            raise UnsafeUrl(f"{ip!r} is not an IP address") from None
        if isinstance(addr, IPv6Address) and addr.scope_id:
            addr = IPv6Address(str(addr).split("%", 1)[0])
        inner = _embedded_v4(addr) if isinstance(addr, IPv6Address) else None
        if self._allowed(addr) or (inner is not None and self._allowed(inner)):
            return
        why = _why_unsafe(addr) or (_why_unsafe(inner) if inner is not None else None)
        if why is not None:
            raise UnsafeUrl(f"address {addr} is {why}")

    def check_url(self, url: str) -> None:
        """Raise UnsafeUrl unless `url` is plain http(s) to a name or a public address."""
        try:
            parsed = URL(url)
        except ValueError:
            # The parser's message may quote the URL, query string and all.
            raise UnsafeUrl("URL cannot be parsed") from None
        if parsed.scheme not in ("http", "https"):
            raise UnsafeUrl(f"scheme {parsed.scheme!r} is not http or https")
        if parsed.raw_user is not None or parsed.raw_password is not None:
            raise UnsafeUrl("URL carries user:password")
        host = parsed.host
        if not host:
            raise UnsafeUrl("URL has no host")
        literal = _literal(host)
        if literal is not None:
            self.check_address(literal)


def _literal(host: str) -> str | None:
    """The address `host` denotes if a resolver would read it as one, else None."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        # inet_aton takes what getaddrinfo does: "2852039166", "0251.0376.0251.0376", "127.1".
        return socket.inet_ntoa(socket.inet_aton(host.rstrip(".")))
    except OSError:
        return None


class GuardedResolver(AbstractResolver):
    """aiohttp's default resolver (or `inner`), keeping only the addresses the guard accepts."""

    def __init__(self, guard: UrlGuard, inner: AbstractResolver | None = None) -> None:
        self._guard = guard
        # The default is built on first use: the default resolvers want a running loop.
        # Tests pass a resolver whose names they control: no machine's hosts file is the same.
        self._inner = inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if self._inner is None:
            self._inner = DefaultResolver()
        kept: list[ResolveResult] = []
        refusals: list[str] = []
        for result in await self._inner.resolve(host, port, family):
            try:
                self._guard.check_address(result["host"])
            except UnsafeUrl as exc:
                refusals.append(str(exc))
            else:
                kept.append(result)
        if not kept:
            # Only refused addresses left: refuse the host rather than dial any of them.
            raise RefusedAddress(f"host {host} has no allowed address ({'; '.join(refusals)})")
        return kept

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()


def guarded_connector(guard: UrlGuard, limit: int, limit_per_host: int,
                      resolver: AbstractResolver | None = None) -> aiohttp.TCPConnector:
    """A TCPConnector whose every name lookup goes through GuardedResolver (around `resolver`)."""
    return aiohttp.TCPConnector(
        resolver=GuardedResolver(guard, resolver), limit=limit, limit_per_host=limit_per_host
    )


def unsafe_from(exc: BaseException) -> UnsafeUrl | None:
    """The UnsafeUrl behind an aiohttp error (ClientConnectorDNSError wraps ours), or None."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, UnsafeUrl):
            return current
        seen.add(id(current))
        wrapped = getattr(current, "os_error", None)
        current = wrapped if isinstance(wrapped, BaseException) else current.__cause__
    return None
