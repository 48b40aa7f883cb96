"""Thumbnails and poster frames from real files: the size, WebP, the placeholder, and what cannot be read."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image, ImageStat

from archiver.thumbs.make import NoPoster, make_thumb
from tests.support.archive import wav
from tests.support.media import noisy_png, video


def test_an_image_gets_a_webp_of_400_px_on_its_longest_side(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(noisy_png(1200, 600))
    thumb = make_thumb(path, "image", 400)
    with Image.open(io.BytesIO(thumb.data)) as im:
        assert (im.format, im.size) == ("WEBP", (400, 200))
    assert (thumb.width, thumb.height) == (1200, 600)
    assert len(thumb.placeholder) <= 40 and thumb.placeholder.startswith("#") and len(thumb.placeholder) == 7


def test_a_small_image_is_not_blown_up(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(noisy_png(120, 90))
    with Image.open(io.BytesIO(make_thumb(path, "image", 400).data)) as im:
        assert im.size == (120, 90)


def test_a_corrupt_image_raises(tmp_path: Path) -> None:
    path = tmp_path / "bad.png"
    path.write_bytes(noisy_png(300, 300)[:2000])  # cut off in its pixels
    with pytest.raises((OSError, ValueError, SyntaxError)):
        make_thumb(path, "image", 400)


def test_a_video_gets_its_first_frame_that_is_not_black(tmp_path: Path) -> None:
    path = video(tmp_path / "clip.mp4", frames=24, black=6)
    thumb = make_thumb(path, "video", 200)
    with Image.open(io.BytesIO(thumb.data)) as im:
        assert im.size == (200, 150)
        r, g, b = ImageStat.Stat(im.convert("RGB")).mean
    assert r > 150 and g > 80 and b < 100, (r, g, b)  # orange, not black
    assert (thumb.width, thumb.height) == (320, 240)


def test_audio_gets_no_thumbnail(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    path.write_bytes(wav())
    with pytest.raises(NoPoster):
        make_thumb(path, "audio", 400)


def test_a_cut_off_png_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cut.png"
    path.write_bytes(noisy_png(1200, 800)[:200_000])
    with pytest.raises((ValueError, OSError)):
        make_thumb(path, "image", 400)
