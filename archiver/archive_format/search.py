"""The search index (`archiver.search/2`, `archiver.search-shard/1`): tokens, shards, their names and bytes.

The shapes are documented in docs/archive-format.md (the search index). Each shard maps a token to
the days and entries where it occurs; an entry number counts from the END of the day file's
`assets`, so assets that arrive later (they sort first) do not renumber the ones already indexed.
The shards hold closed days only, up to the manifest's `through`; newer days are searched in their day files.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from archiver.archive_format.days import Day
from archiver.archive_format.keys import INDEX_PREFIX
from archiver.model import utc_iso

SEARCH_SCHEMA = "archiver.search/2"
SHARD_SCHEMA = "archiver.search-shard/1"
SEARCH_PREFIX = f"{INDEX_PREFIX}search/"
MANIFEST_KEY = f"{SEARCH_PREFIX}manifest.json"
SHARD_LIMIT = 256 * 1024  # a shard file over this is split into shards one character longer
MAX_TOKEN = 40
FIELDS = ("prompt", "model", "provider", "provider_type", "media")

Postings = dict[str, list[int]]  # token → entry numbers of one day, ascending
Shard = dict[str, dict[str, list[int]]]  # token → date → entry numbers: a shard's decoded `tokens`

_WORD = re.compile(r"[^\W_]+")  # maximal runs of Unicode letters or digits; the page uses [\p{L}\p{N}]+
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")


def tokens(text: str) -> list[str]:
    """NFKC, lower case, runs of letters or digits of 2 characters or more, each cut at 40."""
    return [t[:MAX_TOKEN] for t in _WORD.findall(unicodedata.normalize("NFKC", text).lower()) if len(t) >= 2]


def asset_tokens(asset: Mapping[str, Any]) -> set[str]:
    """Every token of one day-file asset: prompt, model, provider, provider_type, media, label keys and values."""
    texts = [asset.get(name) for name in FIELDS]
    for key, value in (asset.get("labels") or {}).items():
        texts += [key, value]
    return {t for text in texts if text is not None for t in tokens(str(text))}


def postings(assets: Sequence[Mapping[str, Any]]) -> Postings:
    """token → entry numbers, for a day file's `assets` in file order (the last one is entry 0)."""
    out: Postings = {}
    for n, asset in enumerate(reversed(assets)):
        for token in asset_tokens(asset):
            out.setdefault(token, []).append(n)
    return out


def day_postings(day: Day) -> Postings:
    return postings(day.ordered_assets())


def file_name(shard: str) -> str:
    """`[a-z0-9]` as itself, any other character as `_<hex code point>_`: "上海" → `_4e0a__6d77_.json`."""
    return "".join(c if c in _PLAIN else f"_{ord(c):x}_" for c in shard) + ".json"


def shard_key(shard: str) -> str:
    return SEARCH_PREFIX + file_name(shard)


def shard_of(token: str, shards: set[str] | frozenset[str]) -> str | None:
    """The longest shard id that `token` starts with, or None."""
    for end in range(len(token), 1, -1):
        if token[:end] in shards:
            return token[:end]
    return None


def piece(date: str, numbers: Iterable[int]) -> bytes:
    """`"2026-10-01":[0,5,17]`: one day of one token."""
    return f'"{date}":[{",".join(map(str, numbers))}]'.encode()


def fragment(token: str, pieces: Iterable[bytes]) -> bytes:
    """`"dragon":{…}` with its days newest first (a piece starts with its date, so sorting them sorts days)."""
    return _dumps(token) + b":{" + b",".join(sorted(pieces, reverse=True)) + b"}"


def encode_shard(shard: str, fragments: Iterable[bytes]) -> bytes:
    """The shard file; `fragments` sorted by token. The same as json.dumps of the document, compact."""
    head = b'{"schema":"' + SHARD_SCHEMA.encode() + b'","shard":' + _dumps(shard) + b',"tokens":{'
    return head + b",".join(fragments) + b"}}"


def pack(shard: str, frags: list[tuple[str, bytes]], limit: int = SHARD_LIMIT) -> dict[str, bytes]:
    """Shard files for `frags` (token, fragment), sorted by token, all starting with `shard`; split when too big.

    A file over `limit` becomes shards one character longer, recursively; a token exactly `shard`
    stays in `shard`. A single token bigger than the limit cannot be split and keeps its own file.
    """
    if not frags:
        return {}
    size = len(encode_shard(shard, [])) + sum(len(f) for _, f in frags) + len(frags) - 1  # with the commas
    if size <= limit or all(len(t) == len(shard) for t, _ in frags):
        return {shard: encode_shard(shard, (f for _, f in frags))}
    out: dict[str, bytes] = {}
    own = [(t, f) for t, f in frags if len(t) == len(shard)]
    if own:
        out[shard] = encode_shard(shard, (f for _, f in own))
    groups: dict[str, list[tuple[str, bytes]]] = {}
    for t, f in frags:
        if len(t) > len(shard):
            groups.setdefault(t[:len(shard) + 1], []).append((t, f))
    for sub, group in groups.items():
        out |= pack(sub, group, limit)
    return out


def encode_tokens(shard: str, decoded: Shard, limit: int = SHARD_LIMIT) -> dict[str, bytes]:
    """Shard files for a decoded shard's tokens (split as `pack` does); {} when it holds nothing."""
    frags = [(t, fragment(t, (piece(d, ns) for d, ns in decoded[t].items()))) for t in sorted(decoded)]
    return pack(shard, frags, limit)


def read_shard(shard: str, data: bytes) -> Shard:
    """A shard file's `tokens`, checked to be this shard's; ValueError when it is not one."""
    doc = json.loads(data)
    if not isinstance(doc, dict) or doc.get("schema") != SHARD_SCHEMA or doc.get("shard") != shard:
        raise ValueError(f"not the search shard {shard!r}")
    decoded = doc["tokens"]
    if not isinstance(decoded, dict):
        raise ValueError(f"search shard {shard!r}: tokens is not an object")
    return decoded


@dataclass(frozen=True)
class Manifest:
    """The manifest's content: the shard ids that exist, and the newest day the shards hold (None: no day)."""

    shards: list[str]
    through: str | None


def encode_manifest(shards: Iterable[str], through: str | None, now: float) -> bytes:
    doc = {"schema": SEARCH_SCHEMA, "generated_at": utc_iso(now), "through": through, "shards": sorted(shards)}
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def read_manifest(data: bytes) -> Manifest:
    """ValueError for anything but an `archiver.search/2` manifest: a /1 one's shards hold today as well."""
    doc = json.loads(data)
    if not isinstance(doc, dict) or doc.get("schema") != SEARCH_SCHEMA or not isinstance(doc.get("shards"), list):
        raise ValueError(f"not an {SEARCH_SCHEMA} manifest")
    through = doc.get("through")
    if through is not None and not (isinstance(through, str) and _DATE.fullmatch(through)):
        raise ValueError(f"{SEARCH_SCHEMA} manifest: `through` is not a date")
    return Manifest([str(s) for s in doc["shards"]], through)


class FullBuild:
    """Every day's postings, kept encoded in one buffer per token (about the index's own size), then packed.

    Used by a rebuild: memory holds the encoded index once, never a Python object per posting or per day.
    """

    def __init__(self) -> None:
        self.pieces: dict[str, bytearray] = {}

    def add(self, day: Day) -> None:
        for token, numbers in day_postings(day).items():
            buf = self.pieces.get(token)
            if buf is None:
                buf = self.pieces[token] = bytearray()
            buf += piece(day.date, numbers) + b"\n"  # a piece is ASCII without a newline

    def shards(self, limit: int = SHARD_LIMIT) -> Iterable[tuple[str, bytes]]:
        """(shard id, file) for every shard, one 2-character group at a time, in token order."""
        group: list[tuple[str, bytes]] = []
        for token in sorted(self.pieces):
            if group and group[0][0][:2] != token[:2]:
                yield from pack(group[0][0][:2], group, limit).items()
                group = []
            group.append((token, fragment(token, self.pieces.pop(token).split(b"\n")[:-1])))
        if group:
            yield from pack(group[0][0][:2], group, limit).items()


def _dumps(text: str) -> bytes:
    return json.dumps(text, ensure_ascii=False).encode("utf-8")
