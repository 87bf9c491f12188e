"""Deflate segments that can be joined: how stored pages become identity or gzip responses.

Each page is stored as a raw deflate stream ended by a sync flush, so it stops on a byte boundary
with no final block, and any number of such segments concatenated form one valid deflate stream.
Bytes we hold in clear (the JSON envelope between pages) go in as stored blocks. A gzip response
is then header + segments + an empty final block + CRC32 + size, with the CRC32 combined from the
pages' stored CRCs (ISA-L's crc32_combine; without isal, zlib's algorithm in Python with the
x^(8n) factor precomputed at upload time).
"""

import struct
import zlib
from collections.abc import Callable, Iterator
from types import ModuleType

# ISA-L (the `isal` package) inflates the fixture's pages about 1.8 to 2 times as fast as zlib on
# this project's machines (README, "Results: how `GET /results` is served"), and deflates them
# (its level 2 against zlib's level 1) 3.5 to 4 times as fast (the 0.8 MB body, 2026-12-02); its
# segments are ordinary deflate, so pages stored by either are read by either. zlib where it is
# missing. Pages are stored at ISA-L's level 2: as fast to make as level 1, about 4 % faster to
# inflate and 1 % smaller (bench/HISTORY.md); zlib's level 2 would be slower to make.
codec: ModuleType
try:
    from isal import isal_zlib as codec

    LEVEL = 2
except ImportError:  # pragma: no cover - isal has wheels for the usual platforms
    codec = zlib
    LEVEL = 1

GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # deflate, no name, no mtime, OS unknown
FINAL_BLOCK = b"\x01\x00\x00\xff\xff"  # an empty stored block with BFINAL set
_POLY = 0xEDB88320  # CRC-32 polynomial, reflected
_MAX_STORED = 0xFFFF
INFLATE_IN = 256 << 10  # bytes of a segment given to the inflater at a time


def _multmodp(a: int, b: int) -> int:
    """a * b modulo the CRC-32 polynomial (reflected bit order), as in zlib."""
    m = 1 << 31
    product = 0
    while True:
        if a & m:
            product ^= b
            if not a & (m - 1):
                return product
        m >>= 1
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1


def _x2n_table() -> list[int]:
    table = [1 << 30]  # x^1
    for _ in range(31):
        table.append(_multmodp(table[-1], table[-1]))
    return table


_X2N = _x2n_table()


def crc_shift(length: int) -> int:
    """x^(8 * length) mod P: the factor that moves a CRC past `length` bytes."""
    product, k = 1 << 31, 3  # x^0; 2^3 bits per byte
    while length:
        if length & 1:
            product = _multmodp(_X2N[k & 31], product)
        length >>= 1
        k += 1
    return product


_C_COMBINE: Callable[[int, int, int], int] | None = getattr(codec, "crc32_combine", None)


def crc_combine(crc1: int, crc2: int, shift2: int, length2: int) -> int:
    """CRC of A + B from crc(A), crc(B), crc_shift(len(B)) and len(B): in C with ISA-L (about
    ten times as fast; it counts for results of many pages), else one product in Python."""
    if _C_COMBINE is not None:
        return _C_COMBINE(crc1, crc2, length2)
    return _multmodp(shift2, crc1) ^ crc2


def encode_segment(raw: bytes, level: int = LEVEL) -> bytes:
    """A joinable raw deflate segment of `raw` (ends with a sync flush, no final block)."""
    compressor = codec.compressobj(level, codec.DEFLATED, -15)
    data: bytes = compressor.compress(raw) + compressor.flush(codec.Z_SYNC_FLUSH)
    return data


def inflate_pieces(segment: bytes, size: int) -> Iterator[bytes]:
    """The inflated bytes of a segment, at most `size` at a time (a page may inflate to many
    MB: memory stays flat). The segment goes in INFLATE_IN bytes at a time: what the inflater
    keeps of its input (`unconsumed_tail`) is a copy."""
    inflater = codec.decompressobj(-15)
    view, fed = memoryview(segment), 0
    data: bytes | memoryview = b""
    while True:
        if not data and fed < len(view):
            data, fed = view[fed : fed + INFLATE_IN], fed + INFLATE_IN
        out: bytes = inflater.decompress(data, size)
        if out:
            yield out
        data = inflater.unconsumed_tail
        if not data and fed >= len(view) and len(out) < size:
            return


def inflate_member(member: bytes) -> bytes:
    """The inflated bytes of a whole gzip member (a GzipJoiner's, under 4 GiB), its CRC and
    length checked, in one call: ISA-L and zlib let go of the GIL for it, so another thread can
    run it. Into one buffer of the length its trailer states: ISA-L doubles a buffer it fills
    exactly before it sees the stream's end, so it gets one byte more (each 0.8 MB body took a
    fresh 1.6 MB mapping from glibc on the inflater thread, its pages faulted in: 1.5 ms
    instead of 1.1; bench/HISTORY.md, 2026-12-03 14:05); CPython's zlib copies its output into
    a new object unless it fills the buffer exactly."""
    size = int.from_bytes(member[-4:], "little")
    data: bytes = codec.decompress(member, 31, size if codec is zlib else size + 1)
    return data


def stored_blocks(raw: bytes) -> bytes:
    """`raw` as uncompressed deflate blocks (for small envelope pieces)."""
    out = bytearray()
    for start in range(0, len(raw), _MAX_STORED):
        chunk = raw[start : start + _MAX_STORED]
        out += b"\x00" + struct.pack("<HH", len(chunk), len(chunk) ^ 0xFFFF) + chunk
    return bytes(out)


class GzipJoiner:
    """Builds one gzip member from clear pieces and stored segments, tracking CRC and size."""

    def __init__(self) -> None:
        self.crc = 0
        self.size = 0

    def clear(self, raw: bytes) -> bytes:
        self.crc = zlib.crc32(raw, self.crc)
        self.size += len(raw)
        return stored_blocks(raw)

    def segment(self, segment: bytes, crc: int, shift: int, raw_size: int) -> bytes:
        self.crc = crc_combine(self.crc, crc, shift, raw_size)
        self.size += raw_size
        return segment

    def trailer(self) -> bytes:
        return FINAL_BLOCK + struct.pack("<II", self.crc, self.size & 0xFFFFFFFF)
