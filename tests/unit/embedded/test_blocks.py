"""``iter_blocks`` cuts a stream into exactly the lines and numbers of ``iter_ndjson``.

Random streams of short, blank, whitespace, CRLF and over-long lines, cut
into chunks at random places (a line often spans chunks), must give the same
(number, line) pairs as the one-line-at-a-time reader that defines them.
"""

from __future__ import annotations

import random

import pytest

from processors.embedded.blocks import iter_blocks
from schemas.codec import iter_ndjson

MAX = 64  # a small line limit, so that cut lines are common


def _line(rng: random.Random) -> bytes:
    kind = rng.randrange(9)
    if kind == 0:
        return b""
    if kind == 1:
        return rng.choice([b" ", b"\t", b"\r", b" \r", b"  \t "])
    if kind == 2:
        return b"{}" + b"\r"  # CRLF line end
    if kind == 3:
        return b"x" * rng.randrange(MAX - 2, MAX + 3)  # around the limit
    if kind == 4:
        return b" " * rng.randrange(MAX, 3 * MAX)  # long and blank
    if kind == 5:
        return b" " * rng.randrange(MAX, 3 * MAX) + b"z"  # blank until past the cut
    if kind == 6:
        return b"y" * rng.randrange(2 * MAX, 5 * MAX)
    if kind == 7:
        return b"\xef\xbb\xbf{}"  # a BOM
    return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 20))).replace(b"\n", b"")


def _chunks(data: bytes, rng: random.Random) -> list[bytes]:
    out, i = [], 0
    while i < len(data):
        n = rng.choice([1, 2, 3, 7, 50, 200, 10_000])
        out.append(data[i : i + n])
        i += n
    return out


@pytest.mark.parametrize("seed", range(60))
def test_same_lines_and_numbers_as_iter_ndjson(seed: int) -> None:
    rng = random.Random(seed)
    lines = [_line(rng) for _ in range(rng.randrange(0, 80))]
    data = b"\n".join(lines) + rng.choice([b"", b"\n", b"\n\n", b"\r\n"])
    chunks = _chunks(data, rng)
    want = list(iter_ndjson(chunks, max_line=MAX))
    block_lines = rng.choice([1, 2, 5, 1000])
    blocks = list(iter_blocks(chunks, block_lines=block_lines, max_line=MAX))
    got = [pair for b in blocks for pair in zip(b.numbers, b.lines, strict=True)]
    assert got == want
    assert all(0 < len(b) <= block_lines for b in blocks)


def test_no_chunks_and_only_blank_lines_give_no_block() -> None:
    assert list(iter_blocks([], block_lines=10)) == []
    assert list(iter_blocks([b"\n \n\r\n\t"], block_lines=10)) == []


def test_a_huge_line_is_cut_and_its_neighbours_keep_their_numbers() -> None:
    data = b'{"a":1}\n' + b"q" * 1_000_000 + b'\n{"b":2}\n'
    chunks = [data[i : i + 4096] for i in range(0, len(data), 4096)]
    (block,) = iter_blocks(chunks, block_lines=10, max_line=MAX)
    assert block.numbers == [1, 2, 3]
    assert block.lines == [b'{"a":1}', b"q" * (MAX + 1), b'{"b":2}']
