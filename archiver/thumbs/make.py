"""A WebP thumbnail from an image file (Pillow) or a poster frame from a video (PyAV), and its placeholder colour.

Memory: a JPEG is decoded at a fraction of its size (`draft`), and every image is shrunk by whole
factors (`reduce`, through `thumbnail`'s reducing_gap) before it is resampled. A PNG is decoded
whole by Pillow: 64 MiB for a 4096×4096 RGBA one (bench/RESULTS.md, thumbnails).
PyAV is optional (the `video` extra): without it a video gets no poster (`NoPoster`).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageStat

Image.MAX_IMAGE_PIXELS = 16384 * 16384  # larger is a decompression bomb, refused as unreadable

POSTER_WITHIN = 5.0  # seconds of video searched for a frame that is not nearly black
DARK = 16.0  # mean luma (0-255) under which a frame counts as nearly black
WEBP_QUALITY = 78


class NoPoster(Exception):
    """This media kind gets no derived image: audio, or a video without PyAV installed."""


@dataclass(frozen=True)
class Thumb:
    data: bytes  # the WebP
    placeholder: str  # the dominant colour, `#rrggbb`
    width: int  # of the original
    height: int


def make_thumb(path: Path, media: str, size: int) -> Thumb:
    """The thumbnail of `path` at most `size` px on its longest side. Raises OSError or ValueError for a file
    that cannot be read (corrupt, truncated, not what it claims to be), NoPoster for audio or no PyAV."""
    if media == "image":
        return _image(path, size)
    if media == "video":
        return _poster(path, size)
    raise NoPoster(f"{media}: no thumbnail for this kind")


def _image(path: Path, size: int) -> Thumb:
    with Image.open(path) as im:
        width, height = im.size
        im.draft("RGB", (size, size))  # JPEG: the decoder scales by 1/2…1/8 while reading
        im.thumbnail((size, size), Image.Resampling.LANCZOS, reducing_gap=2.0)
        return _encode(im, width, height)


def _poster(path: Path, size: int) -> Thumb:
    try:
        import av
    except ImportError:
        raise NoPoster("video: PyAV is not installed (pip install 'archiver[video]')") from None
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            scale = min(1.0, size / max(width, height, 1))
            shape = {"width": max(1, round(width * scale)), "height": max(1, round(height * scale))}
            best: tuple[float, Image.Image] | None = None
            for frame in container.decode(stream):
                image = frame.to_image(**shape)
                luma = ImageStat.Stat(image.convert("L")).mean[0]
                if best is None or luma > best[0]:
                    best = (luma, image)
                if luma >= DARK or (frame.time or 0.0) >= POSTER_WITHIN:
                    break
    except (av.FFmpegError, IndexError) as e:
        raise ValueError(f"not a readable video: {e}") from None
    if best is None:
        raise ValueError("not a readable video: no frame")
    return _encode(best[1], width, height)


def _encode(im: Image.Image, width: int, height: int) -> Thumb:
    if im.mode not in ("RGB", "RGBA"):
        im = im.convert("RGBA" if "A" in im.getbands() or "transparency" in im.info else "RGB")
    out = io.BytesIO()
    im.save(out, "WEBP", quality=WEBP_QUALITY, method=4)
    r, g, b = im.convert("RGB").resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))  # type: ignore[misc]
    return Thumb(out.getvalue(), f"#{r:02x}{g:02x}{b:02x}", width, height)
