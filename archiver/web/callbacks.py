"""Provider webhooks (docs/http-api.md): the replay guard. Each provider checks its own callbacks.

The verifiers, one per provider type, live with their providers (`Provider.verify_callback`,
archiver/providers/callbacks.py); this module only remembers what was accepted.
"""

from __future__ import annotations

from archiver.providers.signatures import TOLERANCE

MAX_SEEN = 100_000  # replay keys remembered at most; the oldest go first


class ReplayGuard:
    """Remembers accepted callbacks for the window, so that a replayed copy polls nothing."""

    def __init__(self, window: float = TOLERANCE, limit: int = MAX_SEEN) -> None:
        self.window = window
        self.limit = limit
        self.seen: dict[str, float] = {}  # key → when first accepted; insertion order is time order

    def first(self, key: str, now: float) -> bool:
        """True the first time `key` is seen within the window."""
        while self.seen:
            old, at = next(iter(self.seen.items()))
            if now - at <= self.window and len(self.seen) < self.limit:
                break
            del self.seen[old]
        if key in self.seen:
            return False
        self.seen[key] = now
        return True
