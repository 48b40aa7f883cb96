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
