"""What a file says of itself, read for its sidecar (`embedded`, `width`, `height`, `duration_s`).

Only headers are read, never the pixels: PNG text chunks before the image data (A1111's
`parameters`, ComfyUI's `prompt` and `workflow`), EXIF, the XMP packet's DigitalSourceType,
and whether a C2PA manifest is there (with its claim generator where it is plain to read).
The original's bytes are never changed. A file that cannot be read says nothing.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from PIL import Image

log = logging.getLogger(__name__)

CAP = 64 * 1024  # characters kept of each value
PNG_TEXT = ("parameters", "prompt", "workflow", "Description", "Comment", "Software", "Title", "Author", "Source")
EXIF_TAGS = {0x010E: "ImageDescription", 0x0131: "Software", 0x013B: "Artist", 0x010F: "Make", 0x0110: "Model",
             0x8298: "Copyright"}
SCAN = 1 << 20  # bytes of a file searched for a C2PA manifest
_DST = re.compile(rb"DigitalSourceType(?:>|=\"|\s+rdf:resource=\")\s*([^<\"\s]+)")
_GENERATOR = re.compile(rb"claim_generator(?:\"\s*:\s*\"([^\"]{1,200})|[\x60-\x77\x78](.{1,200}))", re.S)


def probe(path: Path, media: str) -> dict[str, Any]:
    """{"width", "height", "duration_s", "embedded"} of a staged file; missing values are None."""
    out: dict[str, Any] = {"width": None, "height": None, "duration_s": None, "embedded": {}}
    try:
        if media == "image":
            out |= _image(path)
        elif media in ("video", "audio"):
            out |= _av(path)
        c2pa = _c2pa(path)
        if c2pa:
            out["embedded"]["c2pa"] = c2pa
    except Exception as e:  # whatever a hostile file makes Pillow or FFmpeg raise: the task is archived all the same
        log.info("%s: its embedded metadata could not be read (%s)", path.name, e)
    return out


def _cap(value: Any) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return text.replace("\x00", "")[:CAP]


def _image(path: Path) -> dict[str, Any]:
    with Image.open(path) as im:
        found: dict[str, Any] = {}
        text = {k: _cap(v) for k, v in im.info.items() if k in PNG_TEXT and isinstance(v, str | bytes)}
        if text:
            found["text"] = text
        # A PNG's getexif() decodes the whole image to look for an eXIf chunk after the pixels: only the
        # one before them (already in info) is read, so that a probe never touches the pixels.
        tags = im.getexif() if im.format != "PNG" or "exif" in im.info else {}
        exif = {name: _cap(v) for tag, v in tags.items() if (name := EXIF_TAGS.get(tag))}
        if exif:
            found["exif"] = exif
        xmp = im.info.get("xmp") or im.info.get("XML:com.adobe.xmp")
        if xmp and (m := _DST.search(xmp.encode() if isinstance(xmp, str) else xmp)):
            found["digital_source_type"] = _cap(m.group(1))
        return {"width": im.width, "height": im.height, "embedded": found}


def _av(path: Path) -> dict[str, Any]:
    try:
        import av
    except ImportError:
        return {}
    try:
        with av.open(str(path)) as c:
            video = c.streams.video[0] if c.streams.video else None
            duration = c.duration / 1_000_000 if c.duration else None  # in av.time_base units (µs)
            return {"width": video.codec_context.width if video else None,
                    "height": video.codec_context.height if video else None,
                    "duration_s": round(duration, 3) if duration is not None else None}
    except av.FFmpegError as e:
        raise ValueError(str(e)) from None


def _c2pa(path: Path) -> dict[str, Any] | None:
    """A C2PA manifest's JUMBF box (PNG `caBX`, JPEG APP11, ISO BMFF `uuid`) in the first MiB; its generator."""
    with path.open("rb") as f:
        head = f.read(SCAN)
    if b"c2pa" not in head or not (b"jumb" in head or b"caBX" in head):
        return None
    found: dict[str, Any] = {"present": True}
    if m := _GENERATOR.search(head):
        raw = m.group(1) or m.group(2)
        if m.group(2) is not None:  # CBOR: the byte before is the text's length
            size = head[m.start(2) - 1]
            raw = raw[:size - 0x60] if size < 0x78 else raw[1:1 + raw[0]]
        found["claim_generator"] = _cap(raw)
    return found
