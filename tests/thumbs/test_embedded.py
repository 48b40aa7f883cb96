"""What a file says of itself, read from real files made here: PNG text chunks, XMP, EXIF, C2PA, sizes."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

from PIL import Image

from archiver.thumbs.embedded import CAP, probe
from tests.support.archive import wav
from tests.support.media import XMP, noisy_png, video

WORKFLOW = '{"3": {"class_type": "KSampler", "inputs": {"seed": 42}}}'


def test_png_text_chunks_of_a1111_and_comfyui(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    body = noisy_png(64, 48, text={"parameters": "a fox\nSteps: 30, Sampler: Euler a", "prompt": WORKFLOW,
                                   "workflow": "w" * (CAP + 5000), "unrelated": "left out"})
    path.write_bytes(body)
    found = probe(path, "image")
    assert (found["width"], found["height"], found["duration_s"]) == (64, 48, None)
    text = found["embedded"]["text"]
    assert text["parameters"] == "a fox\nSteps: 30, Sampler: Euler a" and text["prompt"] == WORKFLOW
    assert len(text["workflow"]) == CAP  # capped at 64 KiB
    assert "unrelated" not in text
    assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(body).digest()  # never changed


def test_xmp_digital_source_type(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    path.write_bytes(noisy_png(32, 32, xmp=XMP))
    assert probe(path, "image")["embedded"]["digital_source_type"] == (
        "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia")


def test_exif_of_a_jpeg(tmp_path: Path) -> None:
    im = Image.new("RGB", (40, 30), (10, 200, 30))
    exif = Image.Exif()
    exif[0x0131] = "ImageGen 2.1"
    out = io.BytesIO()
    im.save(out, "JPEG", exif=exif.tobytes())
    path = tmp_path / "e.jpg"
    path.write_bytes(out.getvalue())
    found = probe(path, "image")
    assert found["embedded"] == {"exif": {"Software": "ImageGen 2.1"}} and (found["width"], found["height"]) == (40, 30)


def test_a_c2pa_manifest_and_its_claim_generator(tmp_path: Path) -> None:
    generator = b"OpenAI-API c2pa-rs/0.31"
    cbor = b"\xa2\x6fclaim_generator" + bytes([0x60 + len(generator)]) + generator
    path = tmp_path / "c.png"
    path.write_bytes(noisy_png(16, 16, chunks={b"caBX": b"\x00\x00\x00\x40jumb\x00\x00\x00\x20jumdc2pa" + cbor}))
    assert probe(path, "image")["embedded"]["c2pa"] == {"present": True, "claim_generator": generator.decode()}
    plain = tmp_path / "p.png"
    plain.write_bytes(noisy_png(16, 16))
    assert "c2pa" not in probe(plain, "image")["embedded"]


def test_video_and_audio_durations(tmp_path: Path) -> None:
    clip = video(tmp_path / "v.mp4", frames=24, rate=12)
    found = probe(clip, "video")
    assert (found["width"], found["height"]) == (320, 240) and 1.8 <= found["duration_s"] <= 2.2
    sound = tmp_path / "a.wav"
    sound.write_bytes(wav(seconds=0.5))
    assert 0.45 <= probe(sound, "audio")["duration_s"] <= 0.55


def test_a_file_that_is_not_what_it_says_says_nothing(tmp_path: Path) -> None:
    path = tmp_path / "bad.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 100)
    assert probe(path, "image") == {"width": None, "height": None, "duration_s": None, "embedded": {}}


def test_a_probe_never_decodes_the_pixels(tmp_path: Path) -> None:
    """Only headers are read: a PNG whose pixel data is garbage still gives its size and text."""
    body = bytearray(noisy_png(300, 200, text={"parameters": "kept"}))
    start = body.index(b"IDAT") + 4
    body[start:start + 500] = b"\x00" * 500  # the image data no longer inflates
    path = tmp_path / "g.png"
    path.write_bytes(bytes(body))
    found = probe(path, "image")
    assert (found["width"], found["height"], found["embedded"]["text"]) == (300, 200, {"parameters": "kept"})
