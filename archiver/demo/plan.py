"""What the demo asks of its fake providers: about 24 tasks over every provider type, each with the way it
should end. Most succeed at once; some are slow; a few fail the ways providers document."""

from __future__ import annotations

import random
import string
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

# The config's provider entries, as config.example.yaml names them, and what each one is.
ENTRIES: dict[str, dict[str, Any]] = {
    "kie": {"type": "kie"},
    "suno": {"type": "kie", "api": "suno"},
    "maxapi": {"type": "maxapi"},
    "seedream": {"type": "acedata", "service": "seedream"},
    "seedance": {"type": "acedata", "service": "seedance"},
    "pod": {"type": "apipod", "family": "auto"},
    "replicate": {"type": "replicate"},
    "flux": {"type": "fal", "app": "fal-ai/flux/dev"},
}
SLOW = 6.0  # seconds a slow task runs at its provider


@dataclass(frozen=True)
class File:
    """One result file: `kind` png, jpg, mp4 or wav; pictures have a size."""

    kind: str
    size: tuple[int, int] = (1024, 768)


@dataclass(frozen=True)
class Planned:
    """A demo task: where it runs, what it makes, how it should end (`ends`: archived or a reason word)."""

    entry: str
    model: str
    prompt: str
    files: tuple[File, ...] = ()
    project: str = "moodboard"
    ends: str = "archived"  # a failure is the provider's documented one for that reason (archiver.testing)
    running: float = 0.0  # seconds the provider says "running" (besides its first two polls)
    expired: bool = False  # the CDN refuses the first URL: kie's download-url gives a fresh one
    unknown: bool = False  # the provider never heard of it
    slow: float = 0.0  # seconds the CDN takes per file
    where: str = ""  # the fake's own word: apipod family, Replicate's output shape
    task_id: str = field(default="", compare=False)
    plan: int = field(default=-1, compare=False)  # its place in TASKS, which the folder's record keeps

    @property
    def video(self) -> bool:
        return any(f.kind == "mp4" for f in self.files)


PORTRAIT, SQUARE, WIDE = (768, 1024), (1024, 1024), (1024, 576)
TASKS = [
    Planned("kie", "google/nano-banana", "a lighthouse on a cliff at dusk, waves crashing below, volumetric fog",
            (File("png"),), project="poster"),
    Planned("kie", "bytedance/seedream-v4-text-to-image", "a glass greenhouse in a snowy pine forest, warm light",
            (File("png", SQUARE), File("png", SQUARE)), project="poster"),
    Planned("kie", "flux-2/pro-text-to-image", "a red fox curled up in autumn leaves, soft morning mist",
            (File("jpg", PORTRAIT),)),
    Planned("kie", "sora-2-text-to-video", "a paper boat drifting down a neon-lit river at night",
            (File("mp4"),), project="teaser"),
    Planned("kie", "gpt-image-1", "an old map of an imaginary archipelago, hand-drawn ink", (File("png"),),
            expired=True),
    Planned("kie", "google/nano-banana", "a crowded market street, photorealistic", ends="content_moderation"),
    Planned("kie", "google/nano-banana", "a task kie has never heard of", ends="not_found", unknown=True),
    Planned("kie", "ideogram/v3-text-to-image", "a quiet mountain lake at sunrise, long exposure", (File("png", WIDE),),
            running=SLOW, slow=2.0, project="poster"),
    Planned("suno", "V4_5", "a calm piano arpeggio for a sunrise timelapse", (File("wav"), File("jpg", SQUARE)),
            project="teaser"),
    Planned("maxapi", "seedream-4.5", "four seasons of one oak tree, a grid of four",
            (File("png", SQUARE), File("png", SQUARE), File("png", SQUARE), File("png", SQUARE))),
    Planned("maxapi", "nano-banana-pro", "a cosy reading nook with rain on the window", (File("jpg", PORTRAIT),)),
    Planned("maxapi", "veo3-fast", "drone shot over terraced rice fields at golden hour", (File("mp4"),),
            project="teaser"),
    Planned("seedream", "doubao-seedream-4-0", "a retro-futurist train station, pastel colours", (File("png"),)),
    Planned("seedream", "doubao-seedream-4-0", "a bowl of ramen, studio lighting, steam rising",
            (File("png", SQUARE), File("jpg", SQUARE))),
    Planned("seedream", "doubao-seedream-4-0", "a desert caravan under a huge moon", (File("png", WIDE),),
            running=SLOW),
    Planned("seedance", "doubao-seedance-1-0-pro", "waves rolling onto a black sand beach, slow motion",
            (File("mp4"),), project="teaser"),
    Planned("pod", "gpt-image-1", "an isometric tiny island with a windmill", (File("png", SQUARE),),
            where="images"),
    Planned("pod", "nano-banana", "a watercolour of a harbour town in spring", (File("jpg"),), where="images"),
    Planned("pod", "seedream-4", "a paper-cut diorama of a night city", (File("png", PORTRAIT),), where="images",
            running=SLOW),
    Planned("replicate", "black-forest-labs/flux-schnell", "a hot air balloon festival over the valley",
            (File("png"), File("png")), where="list"),
    Planned("replicate", "stability-ai/sdxl", "a cat astronaut floating past a ringed planet", (File("jpg", SQUARE),),
            where="string"),
    Planned("flux", "fal-ai/flux/dev", "a Japanese garden in the rain, a red bridge", (File("png"),),
            project="poster"),
    Planned("flux", "fal-ai/flux/dev", "northern lights over a snowy cabin", (File("png", WIDE),), running=SLOW,
            slow=2.0),
    Planned("flux", "fal-ai/flux/dev", "an explicit scene", ends="content_moderation"),
]


def tasks(video: bool, rng: random.Random) -> list[Planned]:
    """This run's tasks, each with a task ID of its provider's shape, new every run; without `video`, no clips."""
    return [again(n, task_id(ENTRIES[t.entry]["type"], rng)) for n, t in enumerate(TASKS) if video or not t.video]


def again(plan: int, task_id: str) -> Planned:
    """Task `plan` of TASKS under `task_id`."""
    return replace(TASKS[plan], task_id=task_id, plan=plan)


def task_id(provider_type: str, rng: random.Random) -> str:
    """An ID as the provider writes them: kie's hex, Replicate's base32, a UUID elsewhere."""
    if provider_type == "kie":
        return f"{rng.getrandbits(128):032x}"
    if provider_type == "replicate":
        return "".join(rng.choice(string.ascii_lowercase + "0123456789") for _ in range(26))
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))
