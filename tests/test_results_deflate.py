"""Joinable deflate segments, stored blocks, CRC combination and the page cache."""

import gzip
import os
import tracemalloc
import zlib

import pytest

from server.results import deflate
from server.results.caches import pagecache
from server.results.caches.pagecache import PageCache, Segment
from server.results.deflate import (
    GZIP_HEADER,
    GzipJoiner,
    crc_combine,
    crc_shift,
    encode_segment,
    inflate_pieces,
)
from server.store import results
from tests.helpers import login, set_key, submit, upload


@pytest.mark.parametrize("in_c", [True, False], ids=["isal", "python"])
def test_crc_combine_matches_zlib(in_c: bool, monkeypatch: pytest.MonkeyPatch):
    assert deflate._C_COMBINE is not None  # isal is a dependency: the C path is the one used
    if not in_c:  # the fallback, as without isal
        monkeypatch.setattr(deflate, "_C_COMBINE", None)
    for a, b in [(b"", b""), (b"abc", b""), (b"", b"xyz"), (os.urandom(1000), os.urandom(70001))]:
        combined = crc_combine(zlib.crc32(a), zlib.crc32(b), crc_shift(len(b)), len(b))
        assert combined == zlib.crc32(a + b)


def test_joined_segments_and_clear_pieces_make_one_gzip_member():
    pages = [os.urandom(3000) + b"x" * 50_000, b'{"a":1}', b"", b"z" * 200_000]
    clear = [b"[", b"," * 70_000, b"]"]  # a clear piece longer than one stored block
    joiner = GzipJoiner()
    out = GZIP_HEADER + joiner.clear(clear[0])
    for page in pages:
        segment = encode_segment(page)
        assert b"".join(inflate_pieces(segment, 1 << 16)) == page
        out += joiner.segment(segment, zlib.crc32(page), crc_shift(len(page)), len(page))
        out += joiner.clear(clear[1])
    out += joiner.clear(clear[2]) + joiner.trailer()
    expected = clear[0] + b"".join(page + clear[1] for page in pages) + clear[2]
    assert gzip.decompress(out) == expected


@pytest.mark.parametrize("codec", [deflate.codec, zlib], ids=["isal", "zlib"])
def test_a_whole_member_inflates_into_one_buffer_of_its_size(codec, monkeypatch):
    """An identity body inflated in one call (server/results/fetch/inflating.py) holds its bytes
    once, not a buffer grown past them (ISA-L doubled one filled exactly: a fresh 1.6 MB mapping
    from glibc, its pages faulted in, for each 0.8 MB body)."""
    monkeypatch.setattr(deflate, "codec", codec)
    raw = b"".join(b'{"value":%d.5e-3,"bins":[1,2,3]},' % n for n in range(25_000))  # ~0.8 MB
    member = gzip.compress(raw, 1)
    tracemalloc.start()
    try:
        assert deflate.inflate_member(member) == raw
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(raw) <= peak < len(raw) + (128 << 10)  # and the inflater's state (zlib: ~70 KB)


def segment(size: int) -> Segment:
    return Segment(b"x" * size, 0, 0, size)


def test_page_cache_is_bounded_and_least_recently_used_goes_first():
    cache = PageCache(100)
    for number in range(1, 6):
        cache.put((1, number, 1), segment(20), 20)
    assert cache.size == 100
    assert cache.get((1, 1, 1)) is not None  # now the most recently used
    cache.put((1, 6, 1), segment(20), 20)  # over 100: page 2, the least recently used, goes
    assert cache.get((1, 2, 1)) is None
    assert all(cache.get((1, n, 1)) is not None for n in (1, 3, 4, 5, 6))
    assert cache.size == 100
    cache.put((2, 1, 1), segment(26), 26)  # more than a quarter of the cache: not kept
    assert cache.get((2, 1, 1)) is None
    disabled = PageCache(0)
    disabled.put((1, 1, 1), segment(1), 1)
    assert disabled.get((1, 1, 1)) is None and disabled.size == 0


async def test_page_cache_of_tiny_pages_holds_about_its_size(client, conn):
    """`server.page_cache_size` is the memory the page cache takes: each cached page costs
    more than its stored bytes (key, segment, bookkeeping), most of all a tiny page's."""
    await login(client)
    job_id = await submit(client)
    await set_key(conn, job_id)
    pages = [{"page_number": number} for number in range(9_999)]  # as many as a simulation holds
    assert (await upload(client, job_id, [{"name": "z", "pages": pages}])).status == 202
    index = (await results.read_index(conn, job_id)).index
    assert index is not None
    cache = PageCache(512 << 10)
    tracemalloc.start()
    try:
        for first in range(0, len(index.pages), 200):  # each batch under a quarter of the cache
            batch = index.pages[first : first + 200]
            async for _ in pagecache.segments(conn, cache, batch, streaming=False):
                pass
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert cache.max_bytes // 2 < cache.size <= cache.max_bytes  # full
    limit = cache.max_bytes
    assert held <= 2 * limit, f"{held / 2**20:.1f} MB held by a page cache of {limit >> 10} KiB"
