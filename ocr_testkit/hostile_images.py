"""Hostile images the tests and benchmarks build themselves: cheap to send, costly to decode."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SOS = b"\xff\xda"
EOI = b"\xff\xd9"


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def blank_png(
    width: int = 10_000, height: int = 5_000, bit_depth: int = 8, colour_type: int = 6
) -> bytes:
    """An all-zero PNG, RGBA (colour type 6) unless told otherwise: 50 megapixels by default,
    about 200 KB that decode to 200 MB."""
    channels = {0: 1, 6: 4}[colour_type]  # grey or RGBA
    row = bytes(1 + (width * channels * bit_depth + 7) // 8)  # filter byte, then the pixels
    compressor = zlib.compressobj(9)
    parts = [compressor.compress(row) for _ in range(height)]
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", b"".join(parts))
        + png_chunk(b"IEND", b"")
    )


def jpeg_segments(data: bytes) -> tuple[bytes, list[bytes]]:
    """A progressive JPEG cut into its head (up to the first scan) and its scans (each SOS
    header with its entropy-coded data), the EOI left off."""
    first = data.index(SOS)
    head, rest = data[:first], data[first : data.rindex(EOI)]
    scans = [SOS + part for part in rest.split(SOS)[1:]]
    return head, scans


def many_scan_jpeg(scans: int = 5_000, side: int = 1_024) -> bytes:
    """A valid progressive JPEG whose last scan is repeated ``scans`` times.

    Each copy is a few bytes, but a decoder walks every block of the image once per scan: a few
    hundred kilobytes that cost seconds of CPU to decode.
    """
    image = Image.new("L", (side, side), 255)
    out = io.BytesIO()
    image.save(out, "JPEG", progressive=True, quality=90)
    head, parts = jpeg_segments(out.getvalue())
    return head + b"".join(parts) + parts[-1] * scans + EOI


def sized_header_image(fmt: str, width: int, height: int) -> bytes:
    """A small real image of ``fmt`` (PNG, GIF, BMP, WEBP, TIFF, JPEG) whose header then says
    it is ``width`` x ``height`` pixels (0 for none): what Pillow refuses to open at all."""
    out = io.BytesIO()
    Image.new("RGB", (3, 2), "white").save(out, fmt)
    data = bytearray(out.getvalue())
    if fmt == "PNG":
        data[16:24] = struct.pack(">II", width, height)
        data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # the IHDR's checksum
    elif fmt == "GIF":  # the logical screen and the first image descriptor
        data[6:10] = struct.pack("<HH", width, height)
        descriptor = data.index(b"\x2c", 13)
        data[descriptor + 5 : descriptor + 9] = struct.pack("<HH", width, height)
    elif fmt == "BMP":
        data[18:26] = struct.pack("<ii", width, height)
    elif fmt == "WEBP":  # lossy: the VP8 frame header after its start code
        data[26:30] = struct.pack("<HH", width, height)
    elif fmt == "JPEG":
        frame = data.index(b"\xff\xc0")
        data[frame + 5 : frame + 9] = struct.pack(">HH", height, width)
    elif fmt == "TIFF":  # little-endian, as Pillow writes it: tags 256 and 257 of the IFD
        ifd = struct.unpack("<I", data[4:8])[0]
        for entry in range(struct.unpack("<H", data[ifd : ifd + 2])[0]):
            at = ifd + 2 + 12 * entry
            tag, kind = struct.unpack("<HH", data[at : at + 4])
            if tag in (256, 257):
                value = width if tag == 256 else height
                # A LONG, or a SHORT left-aligned in the 4-byte value field.
                packed = struct.pack("<I", value) if kind == 4 else struct.pack("<HH", value, 0)
                data[at + 8 : at + 12] = packed
    else:
        raise ValueError(f"no header patch for {fmt}")
    return bytes(data)


def chained_tiff(pages: int, *, last_next: int | None = None) -> bytes:
    """A little-endian TIFF of one small page whose directory is repeated ``pages`` times in a
    chain (each a page of the same pixels: 122 bytes a page); the last directory's pointer to a
    next one is ``last_next`` (default 0: none; the offset of another: a loop, or past the end)."""
    out = io.BytesIO()
    Image.new("L", (16, 16), 255).save(out, "TIFF")
    data = bytearray(out.getvalue())
    (first,) = struct.unpack_from("<I", data, 4)
    (entries,) = struct.unpack_from("<H", data, first)
    directory = bytes(data[first : first + 2 + 12 * entries])
    at = first
    for _ in range(pages - 1):
        struct.pack_into("<I", data, at + len(directory), len(data))
        at = len(data)
        data += directory + bytes(4)
    struct.pack_into("<I", data, at + len(directory), last_next or 0)
    return bytes(data)


def overlapping_tiff(pages: int = 1_000, entries: int = 2_000) -> bytes:
    """A TIFF of ``pages`` page directories that start 12 bytes apart, each claiming the same
    ``entries`` entries (a small 200x100 page's tags among them): little data, but every page
    makes a reader walk all the entries again."""
    width, height = 200, 100
    page = [(256, width), (257, height), (258, 8), (259, 1), (262, 1), (273, 8), (277, 1)]
    page += [(278, height), (279, width * height)]
    start = 8 + width * height  # the directories' region, after the header and the pixels
    region = bytearray(12 * entries)
    for record in range(entries):
        tag, value = page[record - pages] if pages <= record < pages + len(page) else (0, 0)
        # A count, if a directory starts here; then an entry (tag, SHORT, 1, value).
        struct.pack_into(
            "<HHHIH", region, 12 * record, entries, tag or 60000 + record % 5000, 3, 1, value
        )
    tail = bytearray(12 * pages)
    data = bytearray(b"II*\x00" + struct.pack("<I", start)) + bytes(width * height) + region + tail
    for index in range(pages):  # directory ``index`` ends 12 * index bytes into the tail
        following = start + 12 * (index + 1) if index + 1 < pages else 0
        struct.pack_into("<I", data, start + 12 * entries + 12 * index + 2, following)
    return bytes(data)
