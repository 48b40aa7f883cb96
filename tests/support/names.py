"""A resolver the test controls: names answer with the addresses it is given, like a hosts file.

What `localhost` resolves to differs between machines (Debian's /etc/hosts adds ::1), and a
test must not depend on that; nor may it edit the machine's hosts file or run a DNS server
the system resolver would need to be pointed at.
"""

from __future__ import annotations

import ipaddress
import socket

from aiohttp.abc import AbstractResolver, ResolveResult


class HostsResolver(AbstractResolver):
    """Answers each name in `names` with its addresses, in order; any other name is unknown."""

    def __init__(self, names: dict[str, list[str]]) -> None:
        self.names = names
        self.asked: list[str] = []

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        self.asked.append(host)
        found: list[ResolveResult] = []
        for address in self.names.get(host, []):
            af = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
            if family in (socket.AF_UNSPEC, af):
                found.append(ResolveResult(hostname=host, host=address, port=port, family=af,
                                           proto=0, flags=socket.AI_NUMERICHOST))
        if not found:
            # What the system resolver raises for a name it cannot find.
            raise OSError(socket.EAI_NONAME, f"{host}: name not known")
        return found

    async def close(self) -> None:
        pass
