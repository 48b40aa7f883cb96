"""sd_notify without libsystemd: READY, STATUS, STOPPING and the watchdog, over a datagram.

`Notifier.from_env()` reads NOTIFY_SOCKET and WATCHDOG_USEC/WATCHDOG_PID as systemd sets
them for a `Type=notify` unit. Without NOTIFY_SOCKET every method does nothing, so the
daemon calls them unconditionally. Sending never raises: a notification that cannot be
delivered is logged once at warning and then only at debug.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Speaks the sd_notify protocol to `socket_path` ("@name" is an abstract socket)."""

    def __init__(self, socket_path: str | None = None, watchdog_usec: int | None = None) -> None:
        self.socket_path = socket_path or None
        self.watchdog_usec = watchdog_usec if watchdog_usec and watchdog_usec > 0 else None
        self._warned = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """The notifier systemd asked for; a no-op one when not started by systemd."""
        env = os.environ if environ is None else environ
        watchdog_usec = None
        pid = env.get("WATCHDOG_PID")
        if not pid or pid == str(os.getpid()):  # the watchdog may be meant for our parent
            try:
                watchdog_usec = int(env.get("WATCHDOG_USEC", ""))
            except ValueError:
                watchdog_usec = None
        return cls(env.get("NOTIFY_SOCKET"), watchdog_usec)

    @property
    def enabled(self) -> bool:
        return self.socket_path is not None

    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings (half the timeout), or None without a watchdog."""
        if self.socket_path is None or self.watchdog_usec is None:
            return None
        return self.watchdog_usec / 2 / 1_000_000

    def ready(self) -> None:
        self._send("READY=1")

    def status(self, text: str) -> None:
        # One notification is newline-separated assignments: keep the text on one line.
        self._send("STATUS=" + " ".join(text.splitlines()))

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")

    async def watchdog_loop(self) -> None:
        """Ping the watchdog from the event loop until cancelled; a stuck loop starves it."""
        interval = self.watchdog_interval()
        if interval is None:
            return
        while True:
            self.watchdog()
            await asyncio.sleep(interval)

    def _send(self, message: str) -> None:
        if self.socket_path is None:
            return
        address = self.socket_path
        if address.startswith("@"):
            address = "\0" + address[1:]
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.setblocking(False)
                sock.sendto(message.encode(), address)
        except OSError as e:
            level = logging.DEBUG if self._warned else logging.WARNING
            self._warned = True
            log.log(level, "sd_notify to %s failed: %s", self.socket_path, e)
