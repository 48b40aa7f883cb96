"""Keys from hostile task IDs and model names stay under the root; extensions from bytes first."""

from __future__ import annotations

import datetime as dt
from pathlib import Path, PurePosixPath

import pytest

from archiver.archive_format.keys import KeyFields, check_key, render_key
from archiver.archive_format.media import TYPES, choose_ext, content_type_for, media_for, sniff_ext
from archiver.storage.local import LocalStorage
from archiver.testing.media import JPEG, MP3, MP4, PNG, WAV

DEFAULT_LAYOUT = "{provider}/{date:%Y/%m/%d}/{task_id}/{index:02d}.{ext}"
LAYOUTS = [
    DEFAULT_LAYOUT,
    "{model}/{task_id}/{media}-{index}.{ext}",
    "{provider_type}/{task_id}/m-{model}/{count}/{index}.{ext}",
    "../../{task_id}/../{index}.{ext}",  # even a careless layout cannot climb out
    "/abs/{task_id}/{index}.{ext}",
]
HOSTILE = [
    "..", ".", "...", "../../etc/passwd", "/abs", "/", "a/b", "a/../../b", "a\\..\\..\\b", "a\x00b",
    "\x00", "模型/../x", "ｘ／．．／ｙ", "．．", "\u2025", "%2e%2e%2f", "a\nb", " ", "", "~root",
    "x" * 1000, "模" * 300, "..\\..\\windows", "C:\\x", "a//b", "./a",
]


def fields(value: str) -> KeyFields:
    """`value` wherever a provider, a user or the inbox could put it (ext and media are ours)."""
    return KeyFields(provider=value, provider_type=value, task_id=value, index=3, count=4, ext="png",
                     media="image", model=value, date=dt.datetime(2026, 11, 22, tzinfo=dt.UTC))


def assert_safe(key: str) -> None:
    assert key and not key.startswith("/"), key
    assert "\x00" not in key and "\\" not in key
    parts = key.split("/")
    assert not set(parts) & {"", ".", ".."}, key
    assert all(len(p.encode()) <= 255 for p in parts), "a segment is longer than a file name may be"
    assert check_key(key) == parts


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("value", HOSTILE, ids=[repr(v)[:24] for v in HOSTILE])
async def test_hostile_values_never_leave_the_root(tmp_path: Path, layout: str, value: str) -> None:
    key = render_key(layout, fields(value))
    assert_safe(key)
    root = tmp_path / "archive"
    await LocalStorage(root).put_bytes(key, b"data", content_type="image/png")
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written == [root.joinpath(*key.split("/"))]
    assert written[0].resolve().is_relative_to(root.resolve())
    assert written[0].read_bytes() == b"data"


@pytest.mark.parametrize("field", ["provider", "task_id", "model", "ext", "media"])
def test_each_field_alone_is_made_safe(field: str) -> None:
    safe = fields("ok")
    for value in HOSTILE:
        key = render_key("{provider}/{media}/{model}/{task_id}/{index}.{ext}",
                         KeyFields(**(vars(safe) | {field: value})))
        assert_safe(key)
        assert len(PurePosixPath(key).parts) == 5, (value, key)  # a value is one segment, never more


def test_a_segment_of_two_long_values_fits_a_file_name() -> None:
    key = render_key("{provider}/{task_id}_{model}/{index}.{ext}", fields("x" * 1000))
    assert all(len(p.encode()) <= 255 for p in key.split("/"))


def test_plain_values_are_kept() -> None:
    key = render_key(DEFAULT_LAYOUT, KeyFields("kie", "kie", "vid.one:1", 0, 1, "mp4", "video", "sora-2",
                                               dt.datetime(2026, 11, 22, tzinfo=dt.UTC)))
    assert key == "kie/2026/11/22/vid.one:1/00.mp4"


def test_distinct_ids_stay_distinct() -> None:
    a = render_key(DEFAULT_LAYOUT, fields("7f3c2a9e41b04c0e8a5d"))
    b = render_key(DEFAULT_LAYOUT, fields("7f3c2a9e41b04c0e8a5e"))
    assert a != b


# --- extensions -------------------------------------------------------------------------------

WEBP = b"RIFF\x00\x00\x00\x00WEBPVP8 "
GIF = b"GIF89a\x01\x00"
WEBM = b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81"
MOV = b"\x00\x00\x00\x14ftypqt  "


@pytest.mark.parametrize(("head", "ext"), [(PNG, "png"), (JPEG, "jpg"), (WEBP, "webp"), (GIF, "gif"),
                                           (MP4, "mp4"), (WEBM, "webm"), (MOV, "mov"), (MP3, "mp3"),
                                           (WAV, "wav"), (b"<html>", None), (b"", None)])
def test_sniff(head: bytes, ext: str | None) -> None:
    assert sniff_ext(head + b"\x00" * 20) == ext


@pytest.mark.parametrize(("head", "ext"), [
    (b"ID3\x04\x00", "mp3"),                        # ID3 tag first
    (b"\xff\xfb\x90\x64", "mp3"), (b"\xff\xf3\x84", "mp3"), (b"\xff\xe3\x18", "mp3"),  # frame sync, layer III
    (b"RIFF\x24\x00\x00\x00WAVEfmt ", "wav"),
    (b"\x00\x00\x00\x20ftypM4A \x00\x00", "m4a"), (b"\x00\x00\x00\x1cftypM4B ", "m4a"),
    (b"\xff\xf1\x50\x80", "aac"), (b"\xff\xf9\x50\x80", "aac"),  # ADTS: layer bits 00
    (b"fLaC\x00\x00\x00\x22", "flac"),
    (b"\xff\xfd\x00", None),                           # layer bits 10 (layer II) is not ours
    (b"\x00\x00\x00\x18ftypisom", "mp4"),              # a video brand stays video
])
def test_sniff_audio(head: bytes, ext: str | None) -> None:
    assert sniff_ext(head + b"\x00" * 20) == ext
    if ext in ("mp3", "wav", "m4a", "aac", "flac"):
        assert media_for(ext, "image") == "audio"
        assert content_type_for(ext).startswith("audio/")


@pytest.mark.parametrize(("content_type", "url", "ext"), [
    ("audio/mp4", "https://x/y", "m4a"), ("audio/x-m4a", "https://x/y", "m4a"),
    ("audio/flac", "https://x/y", "flac"), ("audio/aac", "https://x/y", "aac"), ("audio/x-wav", "https://x/y", "wav"),
    (None, "https://x/song.FLAC?s=1", "flac"),
    (None, "https://x/song.m4a", "m4a"), (None, "https://x/song.aac", "aac"),
])
def test_audio_from_type_or_url(content_type: str | None, url: str, ext: str) -> None:
    assert choose_ext(b"????", content_type, url) == ext


@pytest.mark.parametrize(("head", "content_type", "url", "ext"), [
    # the bytes win over everything
    (PNG, "video/mp4", "https://x/y.mp4", "png"),
    (PNG, "text/html; charset=utf-8", "https://x/y.html", "png"),
    (MP4, "image/png", "https://x/y.png?type=.png", "mp4"),
    # then Content-Type, parameters and case ignored
    (b"????", "image/webp; q=1", "https://x/y.png", "webp"),
    (b"????", "IMAGE/JPEG", "https://x/y.png", "jpg"),
    (b"????", "video/quicktime", "https://x/y", "mov"),
    # then the URL's path, never its query string or fragment
    (b"????", None, "https://x/y.png?a=b.mp4", "png"),
    (b"????", None, "https://x/y.PNG?X-Amz-Signature=abc", "png"),
    (b"????", "application/octet-stream", "https://x/y.png?sig=1", "png"),
    (b"????", None, "https://x/y.jpeg", "jpg"),
    (b"????", None, "https://x/dir.mp4/file?name=a.webm", "bin"),
    (b"????", None, "https://x/y?file=a.png", "bin"),
    (b"????", None, "https://x/y#a.png", "bin"),
    (b"????", None, "https://x/y.exe", "bin"),
    (b"????", "", "", "bin"),
])
def test_choose_ext(head: bytes, content_type: str | None, url: str, ext: str) -> None:
    assert choose_ext(head, content_type, url) == ext


@pytest.mark.parametrize("ext", sorted(TYPES))
async def test_a_local_archive_serves_the_type_s3_stores(tmp_path: Path, ext: str) -> None:
    """One table: the type a local file is served with is the one a put gives S3."""
    storage = LocalStorage(tmp_path)
    await storage.put_bytes(f"a/00.{ext}", b"x", content_type=content_type_for(ext))
    assert (await storage.stat(f"a/00.{ext}")).content_type == content_type_for(ext) == TYPES[ext][0]
