"""Plain MATLAB v5 files of numeric matrices, read without scipy: importing scipy.io takes 0.22 s
here, and then reading the Frey Face file takes 2 ms. Every command that reads the data paid it.

This reader knows only what such a file holds: a 128-byte header, then one element per variable,
perhaps zlib-compressed, each a real numeric matrix (flags, dimensions, name, values in column-major
order). For anything else (big-endian, cells, structs, text, sparse, complex, logical), and for any bytes it
cannot make sense of, read() answers None, and frey.py has scipy read the file, in a forked child,
with its messages. tests/test_bad_input.py checks this reader against scipy.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from freyvae_cli.inputs import MAX_BYTES

MATRIX, COMPRESSED = 14, 15  # element types: a matrix, a zlib stream of elements
# the element types numbers are stored as: scipy hands them back as stored (a double matrix MATLAB
# stored as bytes comes back as uint8), and so does this reader
STORED = {1: "i1", 2: "u1", 3: "<i2", 4: "<u2", 5: "<i4", 6: "<u4", 7: "<f4", 9: "<f8", 12: "<i8", 13: "<u8"}
NUMERIC = range(6, 16)  # the numeric matrix classes, double to uint64


class TooLarge(Exception):
    """A compressed element unpacks to more than the reader's limit (a decompression bomb?)."""


def _element(buf: bytes, pos: int) -> tuple[int, bytes, int]:
    """The element at pos: its type, its bytes, and where the next one starts (8-byte aligned but
    after a compressed one; a small element packs type, size and up to 4 bytes into 8)."""
    kind, size = struct.unpack_from("<II", buf, pos)
    if kind >> 16:  # small: size in the upper half of the first word
        kind, size = kind & 0xFFFF, kind >> 16
        if size > 4:
            raise ValueError("small element over 4 bytes")
        return kind, buf[pos + 4:pos + 4 + size], pos + 8
    end = pos + 8 + size
    if end > len(buf):
        raise ValueError("element runs past the end")
    return kind, buf[pos + 8:end], end + (0 if kind == COMPRESSED else -size % 8)


def _matrix(body: bytes) -> tuple[str, np.ndarray]:
    """A variable's name and values, from a matrix element's body."""
    kind, flags, pos = _element(body, 0)
    if kind != 6 or len(flags) != 8:
        raise ValueError("no array flags")
    word = struct.unpack_from("<I", flags)[0]
    if word & 0xA00 or (word & 0xFF) not in NUMERIC:  # complex or logical, or not a numeric class
        raise ValueError("not a real numeric matrix")
    kind, dims, pos = _element(body, pos)
    if kind != 5 or not dims or len(dims) % 4:
        raise ValueError("no dimensions")
    shape = np.frombuffer(dims, "<i4")
    kind, name, pos = _element(body, pos)
    if kind != 1:
        raise ValueError("no name")
    kind, values, pos = _element(body, pos)
    if kind not in STORED or shape.min() < 0:
        raise ValueError("unknown value type")
    data = np.frombuffer(values, STORED[kind])
    if data.size != int(np.prod(shape, dtype=np.int64)) or pos < len(body):  # a size off, or an imaginary part
        raise ValueError("values do not fill the dimensions")
    return name.decode("ascii"), data.reshape(tuple(shape), order="F").copy()


def _inflate(packed: bytes, most: int) -> tuple[int | None, bytes]:
    """The one element in a compressed element: its type and bytes, or (None, b"") where the
    stream is not exactly one element. Over `most` bytes is TooLarge: said by the element's own
    size as soon as its 8-byte tag is unpacked, or found by unpacking no further than `most`."""
    inflate = zlib.decompressobj()
    tag = inflate.decompress(packed, 8)
    if len(tag) == 8 and not struct.unpack_from("<I", tag)[0] >> 16 and struct.unpack_from("<I", tag, 4)[0] > most:
        raise TooLarge
    inner = tag + inflate.decompress(inflate.unconsumed_tail, most)
    if len(inner) > most and not inflate.eof and inflate.decompress(inflate.unconsumed_tail, 1):
        raise TooLarge
    if not inflate.eof or inflate.unused_data or inflate.unconsumed_tail:
        return None, b""
    kind, body, end = _element(inner, 0)
    return (kind, body) if end == len(inner) else (None, b"")  # one element exactly, as scipy wants


def read(raw: bytes, most: int = MAX_BYTES) -> dict[str, np.ndarray] | None:
    """The variables of a plain v5 file, or None: scipy's to read. A compressed element that would
    unpack to more than `most` bytes raises TooLarge, unpacked no further."""
    try:
        # version 1, little-endian; a zero among the first 4 bytes means version 4 to scipy
        if len(raw) < 128 or raw[124:128] != b"\x00\x01IM" or 0 in raw[:4]:
            return None
        found, pos = {}, 128
        while pos < len(raw):
            kind, body, pos = _element(raw, pos)
            if kind == COMPRESSED:
                kind, body = _inflate(body, most)
                if kind is None:
                    return None
            if kind != MATRIX:
                return None
            name, value = _matrix(body)
            found[name] = value
        return found
    except (ValueError, struct.error, zlib.error, UnicodeDecodeError):
        return None
