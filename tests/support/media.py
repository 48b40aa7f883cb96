"""Real media made in the tests: noisy PNGs, PNGs with text chunks or an XMP packet, and short videos (PyAV)."""

from __future__ import annotations

import io
import os
from pathlib import Path

from PIL import Image, PngImagePlugin

XMP = ('<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
       '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description'
       ' xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"'
       ' Iptc4xmpExt:DigitalSourceType="http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"/>'
       '</rdf:RDF></x:xmpmeta><?xpacket end="w"?>')


def noisy_png(width: int, height: int, text: dict[str, str] | None = None, xmp: str | None = None,
              chunks: dict[bytes, bytes] | None = None) -> bytes:
    """A PNG of random pixels (photographic noise compresses badly, as real outputs do), with text chunks."""
    im = Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
    info = PngImagePlugin.PngInfo()
    for k, v in (text or {}).items():
        info.add_text(k, v)
    if xmp is not None:
        info.add_itxt("XML:com.adobe.xmp", xmp)
    for kind, data in (chunks or {}).items():
        info.add(kind, data)
    out = io.BytesIO()
    im.save(out, "PNG", pnginfo=info, compress_level=1)
    return out.getvalue()


def video(path: Path, frames: int = 24, black: int = 6, size: tuple[int, int] = (320, 240), rate: int = 12) -> Path:
    """An MP4 (H.264) of `frames` frames, the first `black` of them black, the rest a bright orange."""
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for n in range(frames):
            colour = (0, 0, 0) if n < black else (230, 140, 40)
            frame = av.VideoFrame.from_image(Image.new("RGB", size, colour))
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def scene_png(width: int, height: int, seed: int) -> bytes:
    """A PNG that looks like a picture (sky, sun, hills, some grain), different for each seed: for screenshots."""
    import random

    from PIL import ImageDraw

    rng = random.Random(seed)
    top, bottom = [rng.randrange(60, 256) for _ in range(3)], [rng.randrange(40, 220) for _ in range(3)]
    im = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(im)
    for y in range(height):
        t = y / max(1, height - 1)
        draw.line([(0, y), (width, y)], fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)))
    r = rng.randrange(height // 12, height // 5)
    cx, cy = rng.randrange(r, width - r), rng.randrange(r, height // 2)
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=tuple(rng.randrange(180, 256) for _ in range(3)))
    for layer in range(3):
        base = height * (0.55 + 0.15 * layer)
        shade = tuple(int(c * (0.8 - 0.22 * layer)) for c in bottom)
        points = [(x, base - rng.uniform(0, height * 0.2)) for x in range(0, width + 60, 60)]
        draw.polygon([(0, height), *points, (width, height)], fill=shade)
    grain = Image.frombytes("L", (width, height), os.urandom(width * height)).point(lambda v: v // 10)
    im = Image.composite(im, Image.new("RGB", (width, height), (0, 0, 0)), grain.point(lambda v: 255 - v))
    out = io.BytesIO()
    im.save(out, "PNG", compress_level=1)
    return out.getvalue()
