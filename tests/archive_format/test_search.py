"""The search index's format: tokens, shard names, splitting at 256 KiB, deterministic bytes, entry numbers."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from archiver.archive_format.days import Day, asset_entry
from archiver.archive_format.search import (SHARD_LIMIT, FullBuild, Manifest, day_postings, encode_manifest,
                                            encode_tokens, file_name, read_manifest, read_shard, shard_key, shard_of,
                                            tokens)


def asset(n: int, prompt: str, *, model: str = "seedream-4.5", labels: dict[str, str] | None = None,
          at: str | None = None) -> dict[str, Any]:
    return asset_entry(key=f"kie/2026/10/01/t{n:05d}/00.png", sidecar="", provider="kie", provider_type="kie",
                       task_id=f"t{n:05d}", index=0, count=1, media="image", model=model, prompt=prompt,
                       labels=labels or {}, content_type="image/png", bytes=1, sha256="",
                       archived_at=at or f"2026-10-01T{n // 3600:02d}:{n // 60 % 60:02d}:{n % 60:02d}Z")


def test_tokens_fold_case_and_width_and_split_on_anything_but_letters_and_digits() -> None:
    assert tokens("A Red DRAGON, flying_over 4K city!") == ["red", "dragon", "flying", "over", "4k", "city"]
    assert tokens("Ｄｒａｇｏｎ ﬁre") == ["dragon", "fire"]  # NFKC: full-width letters, the fi ligature
    assert tokens("Café déjà-vu Straße") == ["café", "déjà", "vu", "straße"]
    assert tokens("上海的夜景 東京") == ["上海的夜景", "東京"]  # no word breaks in CJK: a run is one token
    assert tokens("Ελληνικά ΣΟΦΙΑ") == ["ελληνικά", "σοφια"]
    assert tokens("a b_c x 7 ٣٤") == ["٣٤"]  # shorter than 2 is not indexed; Arabic-Indic digits are digits
    assert tokens("x" * 60) == ["x" * 40]  # capped at 40


def test_an_asset_is_indexed_by_prompt_model_provider_media_and_labels_once_per_token() -> None:
    day = Day("2026-10-01", [asset(0, "dragon DRAGON dragon", labels={"project": "Moon-Shot", "kie": "x"})])
    day.failed.append({"provider": "kie", "task_id": "f", "reason": "nsfw", "provider_code": None,
                       "provider_message": "failedword", "record": "_failed/kie/f.json", "labels": {}})
    assert day_postings(day) == {t: [0] for t in ("dragon", "seedream", "kie", "image", "project", "moon", "shot")}


def test_file_names() -> None:
    assert file_name("th") == "th.json"
    assert file_name("4k") == "4k.json"
    assert file_name("上海") == "_4e0a__6d77_.json"
    assert file_name("é1") == "_e9_1.json"
    assert shard_key("dr") == "_index/search/dr.json"


def test_a_token_belongs_to_the_longest_shard_it_starts_with() -> None:
    shards = {"th", "tha", "than", "dr"}
    assert shard_of("thanks", shards) == "than"
    assert shard_of("that", shards) == "tha"
    assert shard_of("th", shards) == "th"
    assert shard_of("the", shards) == "th"
    assert shard_of("ox", shards) is None


def test_entry_numbers_count_from_the_end_and_survive_a_newer_asset() -> None:
    day = Day("2026-10-01", [asset(1, "old dragon"), asset(2, "middle dragon")])
    before = day_postings(day)
    assert before["dragon"] == [0, 1] and before["old"] == [0]
    day.assets.append(asset(3, "new dragon"))  # archived later: it sorts first in the day file
    after = day_postings(day)
    assert after["old"] == before["old"] and after["middle"] == before["middle"] and after["dragon"] == [0, 1, 2]
    file = json.loads(day.encode())["assets"]
    for word, prompt in (("old", "old dragon"), ("new", "new dragon"), ("middle", "middle dragon")):
        [n] = after[word]
        assert file[len(file) - 1 - n]["prompt"] == prompt  # the page's day.assets[length - 1 - n]


def large_day(seed: int) -> Day:
    """A real large day: 12,000 assets whose words crowd the "th" group past 256 KiB."""
    rng = random.Random(seed)
    words = [f"th{a}{b}{c}" for a in "aeiou" for b in "nrst" for c in ("", "ick", "orn", "ing")] + ["th", "dragon"]
    return Day("2026-10-01", [asset(n, " ".join(rng.sample(words, 12)) + f" thorn{n} thx{n}") for n in range(12_000)])


def test_a_group_over_the_limit_splits_one_character_longer() -> None:
    day = large_day(1)
    build = FullBuild()
    build.add(day)
    files = dict(build.shards())
    ids = set(files)
    assert {"dr", "th", "tha", "thor", "thorn1", "thx1"} <= ids  # split again where still too big
    assert "tho" not in ids and "thorn" not in ids  # no token is exactly that: nothing left to hold
    for shard, data in files.items():
        decoded = read_shard(shard, data)
        assert len(data) <= SHARD_LIMIT or len(decoded) == 1, shard  # only one token alone may stay bigger
        for token in decoded:
            assert shard_of(token, ids) == shard, (token, shard)
    assert list(read_shard("th", files["th"])) == ["th"]  # a token exactly the split id stays in it
    # Every posting is in exactly one file, and all of them are there.
    merged = {t: dates for shard, data in files.items() for t, dates in read_shard(shard, data).items()}
    assert merged == {t: {"2026-10-01": ns} for t, ns in day_postings(day).items()}


def test_same_content_gives_the_same_bytes() -> None:
    one, two = large_day(2), large_day(2)
    random.Random(3).shuffle(two.assets)  # the order the source gave them in does not matter
    builds = [FullBuild(), FullBuild()]
    builds[0].add(one)
    builds[0].add(Day("2026-09-30", [asset(5, "dragon at dawn", at="2026-09-30T10:00:00Z")]))
    builds[1].add(Day("2026-09-30", [asset(5, "dragon at dawn", at="2026-09-30T10:00:00Z")]))
    builds[1].add(two)  # nor the order of the days
    files = [dict(b.shards()) for b in builds]
    assert files[0] == files[1]
    dragon = read_shard("dr", files[0]["dr"])["dragon"]
    assert list(dragon) == ["2026-10-01", "2026-09-30"]  # newest day first
    for shard, data in files[0].items():  # the bytes are json.dumps' own, compact; decoding and encoding again
        doc = json.loads(data)
        assert data == json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
        assert list(doc["tokens"]) == sorted(doc["tokens"])
        assert encode_tokens(shard, read_shard(shard, data)) == {shard: data}


def test_manifest_round_trip() -> None:
    data = encode_manifest(["th", "dr", "上海"], "2026-10-01", 0)
    assert json.loads(data) == {"schema": "archiver.search/2", "generated_at": "1970-01-01T00:00:00.000Z",
                                "through": "2026-10-01", "shards": ["dr", "th", "上海"]}
    assert read_manifest(data) == Manifest(["dr", "th", "上海"], "2026-10-01")
    assert read_manifest(encode_manifest([], None, 0)) == Manifest([], None)


@pytest.mark.parametrize("doc", [
    {"schema": "archiver.search/1", "generated_at": "1970-01-01T00:00:00.000Z", "shards": ["dr"]},  # holds today too
    {"schema": "archiver.search/2", "through": "yesterday", "shards": ["dr"]},
    {"schema": "archiver.search/2", "through": "2026-10-01", "shards": "dr"},
])
def test_a_manifest_of_another_shape_is_refused(doc: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        read_manifest(json.dumps(doc).encode())


def test_a_file_of_exactly_the_limit_is_not_split() -> None:
    decoded = {f"ab{i:04d}": {"2026-10-01": [i]} for i in range(50)}
    [data] = encode_tokens("ab", decoded).values()
    assert list(encode_tokens("ab", decoded, limit=len(data))) == ["ab"]
    assert len(encode_tokens("ab", decoded, limit=len(data) - 1)) > 1
