"""How a fake task ends: `succeeds` with files, `fails` as the provider documents, or `empty`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from archiver.testing.media import KINDS, Body, media_bytes

# A file of a success: a kind ("png", "jpg", "mp4", "audio", "mp3", "wav", "m4a", "flac", "aac"),
# made as deterministic filler bytes, or the body itself (bytes, or a callable that makes them).
FileSpec = str | Body

# Each provider's documented failure, by (type, where): the code and message a failed task
# carries unless `fails()` names its own. Most are content moderation, as docs/providers.md
# and tests/providers/fixtures/ show them; the daemon maps them to a reason word.
DOCUMENTED_FAILURES: dict[tuple[str, str], tuple[Any, str]] = {
    ("acedata", ""): ("content_moderation", "Sensitive content detected"),
    ("apipod", "images"): ("UPSTREAM_CAPACITY_EXHAUSTED", "Upstream request failed. Please retry later."),
    ("apipod", "videos"): (None, "Your prompt was flagged by content moderation."),
    ("fal", ""): (422, "The content could not be processed because it contained material flagged by a "
                       "content checker."),
    ("kie", ""): ("422", "Invalid prompt: prompt contains prohibited content"),
    ("kie", "4o-image"): (2, "Your content was flagged by OpenAI as violating content policies"),
    ("kie", "flux-kontext"): (3, "Generation failed"),
    ("kie", "luma"): (2, "Unsafe image detected"),
    ("kie", "mj"): (3, "Banned prompt: inappropriate content"),
    ("kie", "runway"): (400, "Inappropriate content detected. Please replace the image or video."),
    ("kie", "suno"): ("SENSITIVE_WORD_ERROR", "Contains sensitive words"),
    ("kie", "veo"): (3, "Your prompt was flagged by Website as violating content policies."),
    ("maxapi", ""): (None, "CONTENT_MODERATION"),
    ("replicate", ""): ("failed", "NSFW content detected. Try running it again, or try a different prompt."),
}


@dataclass(frozen=True)
class Outcome:
    """The last step of a task ("success", "fail", "empty"), its files, or its failure."""

    end: str
    files: tuple[FileSpec, ...] = ()
    code: Any = None
    message: str | None = None
    size: int = 4096  # bytes of each filler file

    def bodies(self, seed: str) -> list[Body]:
        """The result files, filler made from `seed` so each task's bytes differ."""
        return [media_bytes(f, self.size, f"{seed}/{i}") if isinstance(f, str) else f
                for i, f in enumerate(self.files)]

    def failure(self, provider_type: str, where: str) -> tuple[Any, str | None]:
        """(fail_code, fail_msg) at this provider: the outcome's own, else the documented one."""
        if self.code is not None or self.message is not None:
            return self.code, self.message
        key = (provider_type, where if (provider_type, where) in DOCUMENTED_FAILURES else "")
        return DOCUMENTED_FAILURES.get(key, (None, "failed"))


def succeeds(*files: FileSpec, size: int = 4096) -> Outcome:
    """Success with one result file per argument (default: one png)."""
    for f in files:
        if isinstance(f, str) and f not in KINDS:
            raise ValueError(f"unknown file kind {f!r}; one of {', '.join(KINDS)}, or bytes, or a callable")
    return Outcome("success", files or ("png",), size=size)


def fails(code: Any = None, message: str | None = None) -> Outcome:
    """Failure: the provider's documented code and message (DOCUMENTED_FAILURES), or these."""
    return Outcome("fail", code=code, message=message)


def empty() -> Outcome:
    """A success without result URLs (kie, maxapi, acedata, apipod)."""
    return Outcome("empty")
