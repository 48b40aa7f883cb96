"""A large PNG shrunk strip by strip, so that memory holds a few hundred rows, never the whole image.

Pillow decodes a PNG whole: a 4096×4096 RGB image is 64 MiB before it can be reduced. Here the
IDAT stream is inflated in pieces, and every few hundred rows become a small PNG of their own
(prefixed by the previous strip's last row, unfiltered, which the first row's filter may refer
to). Pillow decodes that, `reduce` shrinks it by a whole factor, and it is pasted into a canvas
at most a few times the thumbnail's size. Only 8-bit, non-interlaced PNGs go this way;
`suitable` says which.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from PIL import Image

SIGNATURE = b"\x89PNG\r\n\x1a\n"
BYTES_PER_PIXEL = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # by colour type, at 8 bits per sample
PIECE = 1 << 20  # compressed bytes read, and inflated bytes made, at a time
STRIP = 1 << 20  # about this many raw bytes per strip: the copies of one strip are most of the memory used


class Header:
    def __init__(self, f: BinaryIO) -> None:
        if f.read(8) != SIGNATURE:
            raise ValueError("not a PNG")
        length, kind = struct.unpack(">I4s", f.read(8))
        if kind != b"IHDR" or length != 13:
            raise ValueError("a PNG without its IHDR first")
        self.width, self.height, self.depth, self.colour, _, _, self.interlace = struct.unpack(">IIBBBBB", f.read(13))
        f.read(4)
        self.extra: list[tuple[bytes, bytes]] = []  # PLTE, tRNS: what a strip needs to be decoded alike
        self.first_idat = 0  # its length

    @property
    def suitable(self) -> bool:
        return self.depth == 8 and self.interlace == 0 and self.colour in BYTES_PER_PIXEL

    def until_data(self, f: BinaryIO) -> None:
        while True:
            head = f.read(8)
            if len(head) < 8:
                raise ValueError("a PNG without image data")
            length, kind = struct.unpack(">I4s", head)
            if kind == b"IDAT":
                self.first_idat = length
                return
            if kind in (b"PLTE", b"tRNS"):
                self.extra.append((kind, f.read(length)))
                f.read(4)
            else:
                f.seek(length + 4, io.SEEK_CUR)


def suitable(path: Path) -> bool:
    with path.open("rb") as f:
        try:
            return Header(f).suitable
        except (ValueError, struct.error):
            return False


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _compressed(f: BinaryIO, first: int) -> Iterator[bytes]:
    """The IDAT chunks' data, in pieces of at most PIECE bytes, the first chunk's header already read."""
    length = first
    while True:
        while length:
            piece = f.read(min(length, PIECE))
            if not piece:
                raise ValueError("the PNG's image data is cut off")
            length -= len(piece)
            yield piece
        f.read(4)  # its CRC: zlib's own check covers the stream
        head = f.read(8)
        if len(head) < 8:
            return
        length, kind = struct.unpack(">I4s", head)
        if kind != b"IDAT":
            return


def _inflated(f: BinaryIO, first: int) -> Iterator[bytes]:
    stream = zlib.decompressobj()
    for data in _compressed(f, first):
        while data:
            yield stream.decompress(data, PIECE)
            data = stream.unconsumed_tail
    yield stream.flush()


def reduced(path: Path, factor: int) -> Image.Image:
    """The PNG at `path`, shrunk by `factor` (RGB or RGBA); memory holds one strip of it at a time.
    ValueError or OSError for a PNG that cannot be read."""
    with path.open("rb") as f:
        h = Header(f)
        if not h.suitable:
            raise ValueError("only 8-bit, non-interlaced PNGs are read in strips")
        h.until_data(f)
        row = 1 + h.width * BYTES_PER_PIXEL[h.colour]
        per_strip = max(factor, STRIP // row // factor * factor)
        alpha = h.colour in (4, 6) or any(kind == b"tRNS" for kind, _ in h.extra)
        mode = "RGBA" if alpha else "RGB"
        canvas = Image.new(mode, (-(-h.width // factor), -(-h.height // factor)))
        done, previous, pending = 0, b"", bytearray()
        for data in _inflated(f, h.first_idat):
            pending += data
            while len(pending) >= per_strip * row or (done + len(pending) // row >= h.height and pending):
                rows = min(per_strip, h.height - done)
                strip, previous = _strip(h, bytes(pending[:rows * row]), previous, rows)
                del pending[:rows * row]
                canvas.paste(strip.convert(mode).reduce(factor), (0, done // factor))
                done += rows
                if done >= h.height:
                    return canvas
        raise ValueError(f"the PNG's image data is cut off after {done} of {h.height} rows")


def _strip(h: Header, rows: bytes, previous: bytes, count: int) -> tuple[Image.Image, bytes]:
    """`count` filtered rows as an image, and its last row unfiltered (the next strip's first may refer to it)."""
    prefix = b"\x00" + previous if previous else b""
    height = count + (1 if previous else 0)
    header = struct.pack(">IIBBBBB", h.width, height, 8, h.colour, 0, 0, 0)
    png = SIGNATURE + _chunk(b"IHDR", header) + b"".join(_chunk(k, v) for k, v in h.extra) \
        + _chunk(b"IDAT", zlib.compress(prefix + rows, 0)) + _chunk(b"IEND", b"")
    with Image.open(io.BytesIO(png)) as im:
        im.load()
        image = im.crop((0, 1, h.width, height)) if previous else im.copy()
    image.info = dict(im.info)  # tRNS: the transparent colour, for convert()
    return image, image.crop((0, count - 1, h.width, count)).tobytes()
