"""A generated archive: rows in a real state DB and, beside them, assets with their real sidecars.

Rows, in SQLite or PostgreSQL, carry what the daemon writes (tasks, assets, archived/failed
states); sidecars and _failed records come from archiver.archive_format.sidecar itself. Used by the index,
verify and serve tests and by the 100,000-asset bench scenario, where archiving by download
would take hours.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import math
import random
import struct
import wave
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archiver.archive_format.keys import failed_key
from archiver.archive_format.sidecar import asset_sidecar, failed_record
from archiver.config import DEFAULT_POLL_INTERVALS, Config, ProviderEntry, Secret
from archiver.model import TaskState
from archiver.providers import PROVIDERS
from archiver.state import Asset, SqliteState, Task, open_state, state_path

PROMPTS = ["a lighthouse at dusk", "poster for a jazz night", "a red fox in deep snow", "city skyline in rain",
           "a bowl of ramen, studio light", "sailing boat on a calm sea", "portrait of an old fisherman",
           "neon street market at night", "a cat astronaut floating", "autumn forest path"]
MODELS = {"kie": ["seedream-4.5", "sora-2-text-to-video"], "seedance": ["seedance-1-pro"], "pod": ["gpt-image-1"]}
TYPES = {"kie": "kie", "seedance": "acedata", "pod": "apipod"}
OPTIONS = {"acedata": {"service": "seedance"}}  # each type's own keys, where it needs some


def png(width: int, height: int, seed: int) -> bytes:
    """A real PNG: a two-colour gradient, different for each seed."""
    rng = random.Random(seed)
    a, b = [rng.randrange(256) for _ in range(3)], [rng.randrange(256) for _ in range(3)]
    rows = bytearray()
    for y in range(height):
        t = y / max(1, height - 1)
        rows += b"\x00" + bytes(int(a[i] + (b[i] - a[i]) * t) for i in range(3)) * width

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(rows))) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def wav(seconds: float = 0.5, rate: int = 8000) -> bytes:
    """A real WAV file: a 440 Hz tone, 8-bit mono."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(rate)
        tone = (int(128 + 100 * math.sin(2 * math.pi * 440 * i / rate)) for i in range(int(seconds * rate)))
        w.writeframes(bytes(tone))
    return out.getvalue()


def entries() -> dict[str, ProviderEntry]:
    return {name: ProviderEntry(name=name, type=kind, api_key=Secret("unused"), base_url="http://127.0.0.1:9",
                                requests_per_second=5.0, give_up_after=3600.0, poll_intervals=DEFAULT_POLL_INTERVALS,
                                options=PROVIDERS[kind].options.parse(OPTIONS.get(kind, {}), f"providers.{name}"))
            for name, kind in TYPES.items()}


@dataclass
class Generated:
    """What was archived: every object written (key → bytes) and the assets and failures by day."""

    objects: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    assets: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)


def generate(db_path: Path | str, tasks: int, days: int, *, start: dt.date = dt.date(2026, 9, 1), seed: int = 7,
             video: bytes | None = None, audio: bool = False, images: int = 40,
             pictures: list[bytes] | None = None) -> Generated:
    """`tasks` tasks spread over `days` UTC days; one in 25 failed, the rest with 1–3 assets.

    `db_path` is the SQLite file, or a PostgreSQL DSN whose schema exists (see generate_state).

    With `video` (a real video's bytes), one task in ten holds that video; with `audio`, one in
    ten holds a short WAV tone. `pictures` replaces the generated 96×96 gradients.
    """
    rng = random.Random(seed)
    pictures = pictures or [png(96, 96, i) for i in range(images)]
    made = Generated()
    entry_of = entries()
    with _rows(db_path) as db:
        for n in range(tasks):
            _one(db, made, n, rng, pictures, video, wav() if audio else None, entry_of, start, days)
    return made


async def generate_state(config: Config, tasks: int, days: int, **options: Any) -> Generated:
    """generate() into the config's state backend; PostgreSQL gets its schema as `archiver run` makes it."""
    if config.state.backend != "postgres":
        return generate(state_path(config), tasks, days, **options)
    await (await open_state(config, daemon=True)).close()  # a daemon's open migrates the schema
    return generate(config.state.dsn.reveal(), tasks, days, **options)


@contextmanager
def _rows(db: Path | str) -> Iterator[Any]:
    """One transaction for the generator's inserts: into the SQLite file, or the PostgreSQL DSN `db`."""
    if isinstance(db, str):
        import psycopg

        with psycopg.connect(db) as conn:  # commits on a clean exit
            yield _PgRows(conn)
        return
    state = SqliteState(db)
    try:
        with state.transaction() as conn:
            yield conn
    finally:
        state.db.close()


class _PgRows:
    """_one's SQLite calls on PostgreSQL: `?` becomes `%s`, and a new task's id comes back by RETURNING."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.lastrowid: int | None = None

    def execute(self, sql: str, params: tuple[Any, ...]) -> _PgRows:
        returning = sql.startswith("INSERT INTO tasks")
        cursor = self.conn.execute(sql.replace("?", "%s") + (" RETURNING id" if returning else ""), params)
        self.lastrowid = cursor.fetchone()[0] if returning else None
        return self


def _one(db: Any, made: Generated, n: int, rng: random.Random, pictures: list[bytes], video: bytes | None,
         audio: bytes | None, entry_of: dict[str, ProviderEntry], start: dt.date, days: int) -> None:
    provider = rng.choice(sorted(TYPES))
    task_id = f"t{n:06d}-{rng.randrange(16**6):06x}"
    day = dt.datetime.combine(start + dt.timedelta(days=n % days), dt.time(), dt.UTC)
    seen = day.timestamp() + rng.uniform(0, 86000)
    model = rng.choice(MODELS[provider])
    prompt = f"{rng.choice(PROMPTS)} #{n}"
    labels = {"project": rng.choice(["ad", "poster", "film"])}
    failed = n % 25 == 24
    state = TaskState.FAILED if failed else TaskState.ARCHIVED
    pk = db.execute(
        "INSERT INTO tasks (provider, task_id, labels, state, reason, code, message, first_seen_at, updated_at,"
        " success_seen_at, media, model, prompt, input, response) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (provider, task_id, json.dumps(labels), state, "content_moderation" if failed else None,
         "422" if failed else None, "prompt flagged by moderation" if failed else None, seen - 60, seen + 5,
         None if failed else seen, "image", model, prompt, json.dumps({"prompt": prompt}),
         json.dumps({"id": task_id}))).lastrowid
    task = Task(pk=pk, provider=provider, task_id=task_id, labels=labels, state=state, first_seen_at=seen - 60,
                polls=3, unknown_since=None, success_seen_at=None if failed else seen,
                reason="content_moderation" if failed else None, code="422" if failed else None,
                message="prompt flagged by moderation" if failed else None, media="image", model=model,
                prompt=prompt, input={"prompt": prompt}, response={"id": task_id}, task_created_at=None,
                task_completed_at=None, updated_at=seen + 5)
    entry = entry_of[provider]
    if failed:
        record = failed_key(provider, task_id)
        made.objects[record] = (failed_record(task, entry, [], task.updated_at), "application/json")
        made.failed.append({"provider": provider, "task_id": task_id, "record": record, "day": f"{day:%Y-%m-%d}"})
        return
    media = "video" if video and n % 10 == 3 else "audio" if audio and n % 10 == 5 else "image"
    count = 1 if media != "image" else rng.choice((1, 1, 2, 3))
    for idx in range(count):
        body, ext, content_type = {"video": (video, "webm", "video/webm"), "audio": (audio, "wav", "audio/wav"),
                                   "image": (pictures[(n + idx) % len(pictures)], "png", "image/png")}[media]
        assert body is not None
        key = f"{provider}/{day:%Y/%m/%d}/{task_id}/{idx:02d}.{ext}"
        sha = hashlib.sha256(body).hexdigest()
        at = seen + 2 + idx
        db.execute("INSERT INTO assets (task, idx, url, key, state, bytes, sha256, content_type, downloaded_at,"
                   " archived_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                   (pk, idx, f"https://cdn.example/{task_id}/{idx}", key, "archived", len(body), sha, content_type,
                    at - 1, at))
        asset = Asset(pk, idx, f"https://cdn.example/{task_id}/{idx}", key, "archived", len(body), sha, content_type,
                      at - 1, at)
        sidecar = asset_sidecar(task, entry, asset, key=key, count=count, media=media,
                                content_type=content_type, size=len(body), sha256=sha, downloaded_at=at - 1,
                                archived_at=at)
        made.objects[key] = (body, content_type)
        made.objects[key + ".json"] = (sidecar, "application/json")
        made.assets.append({"key": key, "provider": provider, "task_id": task_id, "prompt": prompt, "model": model,
                            "media": media, "labels": labels, "day": f"{day:%Y-%m-%d}"})


def write_local(root: Path, made: Generated) -> None:
    """Write the objects straight to a local archive root (no fsync: fast, for generated data)."""
    for key, (body, _) in made.objects.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)


async def write_storage(storage: Any, made: Generated) -> None:
    for key, (body, content_type) in made.objects.items():
        await storage.put_bytes(key, body, content_type=content_type)
