"""Real media for the demo's CDN, made at demo time: pictures with their prompt drawn in (Pillow),
short H.264 clips (PyAV, when the `video` extra is installed) and a WAV tune (the stdlib's `wave`)."""

from __future__ import annotations

import io
import math
import random
import struct
import tempfile
import textwrap
import wave
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageFont, PngImagePlugin

# Dusk, sea, forest, desert, neon, dawn: (sky top, sky bottom, ground, sun)
PALETTES = [
    ((24, 28, 74), (240, 128, 92), (36, 30, 60), (255, 214, 150)),
    ((10, 60, 110), (120, 200, 220), (12, 42, 70), (255, 250, 225)),
    ((30, 70, 60), (190, 220, 170), (20, 48, 36), (250, 240, 190)),
    ((120, 60, 40), (245, 200, 130), (110, 60, 40), (255, 245, 210)),
    ((20, 10, 50), (200, 60, 170), (30, 14, 60), (120, 240, 255)),
    ((70, 90, 160), (250, 190, 200), (60, 60, 110), (255, 236, 200)),
]


@dataclass(frozen=True)
class Picture:
    """What to draw: the prompt, the palette (by index), the size and the file format."""

    prompt: str
    palette: int
    size: tuple[int, int] = (1024, 768)
    format: str = "png"  # png | jpg
    seed: int = 0


def scene(prompt: str, palette: int, size: tuple[int, int], seed: int, phase: float = 0.0) -> Image.Image:
    """A generated-looking landscape: a sky gradient, a glowing sun, layered hills, the prompt in a card."""
    rng = random.Random(seed)
    top, bottom, ground, sun = PALETTES[palette % len(PALETTES)]
    w, h = size
    # Drawn at half the size and blurred there: soft shapes at a fraction of the cost.
    sw, sh = max(1, w // 2), max(1, h // 2)
    ramp = Image.linear_gradient("L").resize((sw, sh))
    small = Image.composite(Image.new("RGB", (sw, sh), bottom), Image.new("RGB", (sw, sh), top), ramp)
    if sum(top) < 150:  # a night sky has stars
        stars = ImageDraw.Draw(small)
        for _ in range(sw * sh // 900):
            x, y, b = rng.uniform(0, sw), sh * 0.6 * rng.random() ** 1.6, rng.randint(150, 255)
            stars.point((x, y), fill=(b, b, min(255, b + 20)))
    glow = Image.new("L", (sw, sh), 0)
    cx = sw * (0.25 + 0.5 * rng.random()) + sw * 0.3 * phase
    cy = sh * (0.35 + 0.15 * rng.random()) - sh * 0.1 * phase
    r = min(sw, sh) * (0.08 + 0.05 * rng.random())
    ImageDraw.Draw(glow).ellipse((cx - r * 2.6, cy - r * 2.6, cx + r * 2.6, cy + r * 2.6), fill=120)
    small.paste(Image.new("RGB", (sw, sh), sun), mask=glow.filter(ImageFilter.GaussianBlur(r * 1.4)))
    draw = ImageDraw.Draw(small)
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=sun)
    for layer in range(3):  # far hills pale, near hills dark
        shade = tuple(int(g + (b - g) * (0.55 - 0.25 * layer)) for g, b in zip(ground, bottom, strict=True))
        base = sh * (0.62 + 0.1 * layer)
        points = [(0, sh)]
        freq, amp, shift = rng.uniform(1.5, 3.5), sh * rng.uniform(0.03, 0.08), rng.uniform(0, 6.3)
        for x in range(0, sw + 4, 4):
            a = x / sw * freq * math.pi + shift + phase * (layer + 1)
            points.append((x, base - amp * (math.sin(a) + 0.35 * math.sin(2.7 * a + layer))))
        points.append((sw, sh))
        draw.polygon(points, fill=shade)
    if seed % 3 == 0:  # a lake: the land above it, mirrored and darkened
        line = int(sh * 0.8)
        above = small.crop((0, 2 * line - sh, sw, line)).transpose(Image.Transpose.FLIP_TOP_BOTTOM)
        small.paste(Image.blend(above, Image.new("RGB", above.size, top), 0.35), (0, line))
    image = small.filter(ImageFilter.GaussianBlur(1.2)).resize(size, Image.Resampling.BICUBIC)
    _caption(image, prompt)
    return image


def _caption(image: Image.Image, prompt: str) -> None:
    """The prompt on a translucent card low in the middle square, which the gallery's square tiles keep."""
    w, h = image.size
    side = min(w, h)
    left, bottom = (w - side) // 2, (h + side) // 2
    font = ImageFont.load_default(size=max(14, side // 24))
    pad = font.size
    lines = textwrap.wrap(prompt, width=max(12, int((side - 4 * pad) / (font.size * 0.52))))[:3]
    line_h = int(font.size * 1.3)
    top = bottom - pad - 2 * pad - line_h * len(lines)
    card = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(card)
    draw.rounded_rectangle((left + pad, top, left + side - pad, bottom - pad), radius=pad, fill=(12, 12, 20, 150))
    for n, line in enumerate(lines):
        draw.text((left + 2 * pad, top + pad + n * line_h), line, font=font, fill=(255, 255, 255, 235))
    image.paste(card, mask=card)


def picture(p: Picture) -> bytes:
    """The picture's file: a PNG carrying A1111-style `parameters` (as generators write them), or a JPEG."""
    image = scene(p.prompt, p.palette, p.size, p.seed)
    out = io.BytesIO()
    if p.format == "jpg":
        image.save(out, "JPEG", quality=88)
    else:
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", f"{p.prompt}\nSteps: 28, Sampler: DPM++ 2M, Seed: {p.seed}, "
                                    f"Size: {p.size[0]}x{p.size[1]}")
        image.save(out, "PNG", pnginfo=info, compress_level=1)
    return out.getvalue()


def video_available() -> bool:
    """PyAV is the `video` extra; without it the demo makes no clips."""
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


def clip(prompt: str, palette: int, seed: int, size: tuple[int, int] = (480, 270), frames: int = 24,
         rate: int = 12) -> bytes:
    """A short MP4 (H.264): the scene's sun rising and its hills drifting, the prompt drawn in."""
    import av

    with tempfile.TemporaryDirectory(prefix="archiver-demo-") as scratch:
        path = Path(scratch) / "clip.mp4"
        with av.open(str(path), "w") as out:
            stream = out.add_stream("libx264", rate=rate)
            stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
            for n in range(frames):
                frame = av.VideoFrame.from_image(scene(prompt, palette, size, seed, phase=n / frames))
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
        return path.read_bytes()


def tune(seconds: float = 3.0, rate: int = 22050) -> bytes:
    """A WAV: an arpeggio of a major seventh chord, each note fading out."""
    notes = [261.63, 329.63, 392.00, 493.88, 523.25, 493.88, 392.00, 329.63]
    step = seconds / len(notes)
    samples = bytearray()
    for i in range(int(seconds * rate)):
        t = i / rate
        k = min(int(t / step), len(notes) - 1)
        local = t - k * step
        level = math.exp(-3.0 * local) * 0.5
        value = level * (math.sin(2 * math.pi * notes[k] * t) + 0.3 * math.sin(4 * math.pi * notes[k] * t))
        samples += struct.pack("<h", int(max(-1.0, min(1.0, value)) * 32000))
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(samples))
    return out.getvalue()
