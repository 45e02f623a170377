"""Whether an image's bytes are whole, told from its structure without decoding a pixel.

The API server checks every upload here. Decoding would cost the memory of every pixel (200 MB
for a 50-megapixel RGBA PNG, per request) and, for a progressive JPEG, CPU in proportion to its
number of scans (seconds for a few kilobytes of repeated scans). Walking the structure costs one
pass over the bytes and no pixel buffer. The engine processes decode the pixels later, under
their own limits; corrupt pixel data that a structure check cannot see fails the job there.
"""

from __future__ import annotations

import io
import math
import re
import struct
from collections.abc import Callable

import imagesize
from PIL import Image

from .errors import PayloadTooLarge

# libjpeg's progressive script writes 10 scans for a colour image (6 for grey), and encoders
# that tune their scans (mozjpeg) a few dozen at most. Each scan costs a decoder a pass over
# every block of the image, so thousands of tiny scans make a small file cost seconds.
MAX_JPEG_SCANS = 100
# A marker ends a scan's entropy-coded data: 0xFF followed by anything but a stuffed zero,
# a restart marker (RST0-7) or another 0xFF (fill).
_JPEG_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0-7: no length
_JPEG_EOI, _JPEG_SOS = 0xD9, 0xDA
# Rows of raw PPM pixel data: bits per pixel of each raw mode Pillow reads them as.
_PPM_RAW_BITS = {"1;I": 1, "L": 8, "RGB": 24, "I;16B": 16, "I;32B": 32}
# TIFF tags: where each strip (or tile) of a page starts, and how many bytes it has.
_TIFF_EXTENTS = ((273, 279), (324, 325))
# A TIFF holds at most this many pages (the most OCR_MAX_PAGES may be): counting them walks a
# chain of page directories, and a few megabytes can chain hundreds of thousands.
MAX_TIFF_PAGES = 10_000
# Classic TIFF (42) and BigTIFF (43): how a page directory's entry count, its entries and the
# offsets that chain directories are written.
_TIFF_LAYOUTS = {42: ("H", 12, "I", 4), 43: ("Q", 20, "Q", 8)}


# How the files of each format start: names a file that Pillow will not open.
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"BM", "BMP"),
)


class Truncated(Exception):
    """The structure stops before its end, or contradicts itself."""


def check_structure(image: Image.Image, data: bytes) -> None:
    """Refuse ``data`` (opened as ``image``, at the frame to be read), decoding no pixels:
    Truncated when it is cut short or its structure is broken (a 400), PayloadTooLarge for a
    JPEG with more scans than any encoder writes."""
    check = _CHECKS.get(image.format or "")
    if check is not None:
        check(image, data)


def unopened_reason(data: bytes) -> str | None:
    """What is wrong with an image Pillow would not open, told from its header: it is 0 pixels
    wide or tall (Pillow refuses those as not images at all), or it is of a known format whose
    header could not be read; None when it does not start as an image."""
    fmt = next((name for start, name in _SIGNATURES if data.startswith(start)), None)
    if fmt is None and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        fmt = "WebP"
    if fmt is None:
        return None
    width, height = imagesize.get(io.BytesIO(data))
    if width == 0 or height == 0:
        return f"the {fmt} image is {width}×{height} pixels: it has no pixels to read"
    return f"the data starts as a {fmt} image, but its header cannot be read (cut short or corrupt)"


def _png(_image: Image.Image, data: bytes) -> None:
    # Pillow's verify walks the chunks to IEND and checks each CRC without inflating anything.
    try:
        with Image.open(io.BytesIO(data)) as fresh:
            fresh.verify()
    except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds for broken chunks
        raise Truncated(str(exc) or type(exc).__name__) from None


def jpeg_scan_count(data: bytes) -> int:
    """The scans of a JPEG, counted by walking its markers to EOI (no entropy decoding)."""
    if not data.startswith(b"\xff\xd8"):
        raise Truncated("it does not start with a JPEG SOI marker")
    pos, end, scans = 2, len(data), 0
    while True:
        if pos >= end:
            raise Truncated("it ends before its EOI marker")
        if data[pos] != 0xFF:
            raise Truncated(f"no marker where one belongs (byte {pos})")
        while pos < end and data[pos] == 0xFF:
            pos += 1
        if pos >= end:
            raise Truncated("it ends before its EOI marker")
        marker = data[pos]
        pos += 1
        if marker == _JPEG_EOI:
            if scans == 0:
                raise Truncated("it has no image data (no scan)")
            return scans
        if marker in _JPEG_STANDALONE:
            continue
        length = int.from_bytes(data[pos : pos + 2], "big")
        if length < 2 or pos + length > end:
            raise Truncated(f"a segment runs past the end of the file (byte {pos})")
        pos += length
        if marker == _JPEG_SOS:
            scans += 1
            if scans > MAX_JPEG_SCANS:
                return scans
            found = _JPEG_SCAN_END.search(data, pos)
            if found is None:
                raise Truncated("it ends inside a scan, before its EOI marker")
            pos = found.start()


def _jpeg(_image: Image.Image, data: bytes) -> None:
    scans = jpeg_scan_count(data)
    if scans > MAX_JPEG_SCANS:
        raise PayloadTooLarge(
            f"the JPEG has more than {MAX_JPEG_SCANS} scans; no encoder needs that many (a "
            "progressive JPEG has about 10): save it again, or as PNG",
            code="document_too_complex",
        )


def _gif(_image: Image.Image, data: bytes) -> None:
    """Walk the GIF's blocks to its first image's data and past it (LZW is not decoded)."""
    pos = 13  # header and logical screen descriptor
    if len(data) < pos:
        raise Truncated("it ends inside its header")
    if data[10] & 0x80:  # a global colour table follows
        pos += 3 << ((data[10] & 0x07) + 1)
    while True:
        if pos >= len(data):
            raise Truncated("it ends before its first image")
        block = data[pos]
        if block == 0x21:  # extension: label, then data sub-blocks
            pos = _gif_sub_blocks(data, pos + 2)
        elif block == 0x2C:  # image descriptor, optional local colour table, LZW data
            if pos + 10 > len(data):
                raise Truncated("it ends inside an image descriptor")
            flags = data[pos + 9]
            pos += 10
            if flags & 0x80:
                pos += 3 << ((flags & 0x07) + 1)
            _gif_sub_blocks(data, pos + 1)  # after the LZW minimum code size
            return
        else:
            raise Truncated(f"unknown block 0x{block:02x} at byte {pos}")


def _gif_sub_blocks(data: bytes, pos: int) -> int:
    """The position after the data sub-blocks starting at ``pos`` (ended by a zero size)."""
    while True:
        if pos >= len(data):
            raise Truncated("it ends inside a block")
        size = data[pos]
        pos += 1 + size
        if size == 0:
            return pos


def _webp(_image: Image.Image, data: bytes) -> None:
    riff_size = int.from_bytes(data[4:8], "little")
    if len(data) < riff_size + 8:
        raise Truncated(f"it has {len(data)} bytes of the {riff_size + 8} its header announces")


def _tiff(image: Image.Image, data: bytes) -> None:
    tags = image.tag_v2  # type: ignore[attr-defined]
    for offsets_tag, counts_tag in _TIFF_EXTENTS:
        offsets, counts = tags.get(offsets_tag), tags.get(counts_tag)
        if offsets is None or counts is None:
            continue
        offsets = offsets if isinstance(offsets, tuple) else (offsets,)
        counts = counts if isinstance(counts, tuple) else (counts,)
        for offset, count in zip(offsets, counts, strict=False):
            if offset + count > len(data):
                raise Truncated(f"a strip of {count} bytes at {offset} runs past the end")


def tiff_page_count(data: bytes, limit: int = MAX_TIFF_PAGES) -> int:
    """The pages of a TIFF: its chain of page directories (IFDs), walked without reading one
    entry. Truncated when a directory lies past the end or the chain loops back;
    PayloadTooLarge past ``limit`` pages. Linear in the pages: Pillow's ``n_frames`` takes time
    in their square (16 s for 40,000 pages in 2 MB), and fails on a directory past the end."""
    order = {b"II": "<", b"MM": ">"}.get(data[:2])
    if order is None or len(data) < 16:
        raise Truncated("it is too short for a TIFF header")
    layout = _TIFF_LAYOUTS.get(struct.unpack_from(order + "H", data, 2)[0])
    if layout is None:
        raise Truncated("its header is neither TIFF's nor BigTIFF's")
    count_format, entry_size, offset_format, first_at = layout
    count_size, offset_size = struct.calcsize(count_format), struct.calcsize(offset_format)
    (at,) = struct.unpack_from(order + offset_format, data, first_at)
    seen: set[int] = set()
    entries_in_all = 0
    while at:
        if at in seen:
            raise Truncated(f"its chain of pages loops back to the page at byte {at}")
        seen.add(at)
        if len(seen) > limit:
            raise PayloadTooLarge(
                f"the TIFF has more than {limit} pages, the most a document may have",
                code="too_many_pages",
            )
        if at + count_size > len(data):
            raise Truncated(f"page {len(seen)} is said to be at byte {at}, past the end")
        (entries,) = struct.unpack_from(order + count_format, data, at)
        next_at = at + count_size + entries * entry_size
        if next_at + offset_size > len(data):
            raise Truncated(f"the directory of page {len(seen)} runs past the end")
        # Directories that do not overlap hold no more entries than the file has room for; ones
        # that overlap make each page claim the file's entries again (a 926 KB file of 10,000
        # directories of 65,535 entries each cost Pillow 0.13 s a page to seek past).
        entries_in_all += entries
        if entries_in_all * entry_size > len(data):
            raise Truncated("its pages' directories overlap")
        (at,) = struct.unpack_from(order + offset_format, data, next_at)
    return len(seen)


def _raw_tiles(image: Image.Image, data: bytes) -> None:
    """BMP and PPM: uncompressed rows, whose size the header gives."""
    for tile in getattr(image, "tile", ()):
        if tile.codec_name != "raw":
            continue
        args = tile.args if isinstance(tile.args, tuple) else (tile.args,)
        left, top, right, bottom = tile.extents
        stride = args[1] if len(args) > 1 and args[1] else None
        if stride is None:
            bits = _PPM_RAW_BITS.get(args[0])
            if bits is None:
                continue
            stride = math.ceil((right - left) * bits / 8)
        needed = tile.offset + stride * (bottom - top)
        if needed > len(data):
            raise Truncated(f"it has {len(data)} bytes of the {needed} its pixels need")


_CHECKS: dict[str, Callable[[Image.Image, bytes], None]] = {
    "PNG": _png,
    "JPEG": _jpeg,
    "MPO": _jpeg,
    "GIF": _gif,
    "WEBP": _webp,
    "TIFF": _tiff,
    "BMP": _raw_tiles,
    "PPM": _raw_tiles,
}
