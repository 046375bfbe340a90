"""``iter_text_blocks`` cuts a stream into exactly the lines and numbers of ``iter_ndjson``.

Random streams of short, blank, whitespace, CRLF and over-long lines, cut
into chunks at random places (a line often spans chunks), must give the same
(number, line) pairs as the one-line-at-a-time reader that defines them,
both as the Python paths read a block (``TextBlock.lines``) and as the
engine does (each piece's text split at its newlines, a row per line,
numbered from the piece's first line, blank rows skipped, long lines from
``TextBlock.long``).
"""

from __future__ import annotations

import itertools
import random

import pytest

from processors.embedded.blocks import TextBlock, blank, iter_text_blocks
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


def _as_the_engine_reads(block: TextBlock) -> list[tuple[int, bytes]]:
    rows = []
    for piece in block.pieces:
        assert piece.text.endswith(b"\n") and piece.text.count(b"\n") == piece.count
        rows += list(enumerate(piece.text.split(b"\n")[:-1], start=piece.first))
    numbers = [n for n, _ in rows]
    assert numbers == list(range(block.first, block.last + 1))  # no gap, no overlap
    long = dict(block.long)
    assert all(rows[n - block.first][1] == b"" for n in long)  # an empty line in its place
    return sorted([(n, line) for n, line in rows if not blank(line)] + block.long)


@pytest.mark.parametrize("seed", range(80))
def test_same_lines_and_numbers_as_iter_ndjson(seed: int) -> None:
    rng = random.Random(seed)
    lines = [_line(rng) for _ in range(rng.randrange(0, 80))]
    data = b"\n".join(lines) + rng.choice([b"", b"\n", b"\n\n", b"\r\n"])
    chunks = _chunks(data, rng)
    want = list(iter_ndjson(chunks, max_line=MAX))
    block_lines = rng.choice([1, 2, 5, 1000])
    pieces = rng.choice([1, 2, 3])
    blocks = list(iter_text_blocks(chunks, block_lines=block_lines, pieces=pieces, max_line=MAX))
    got = [pair for b in blocks for pair in zip(*b.lines(), strict=True)]
    assert got == want
    assert [pair for b in blocks for pair in _as_the_engine_reads(b)] == want
    for before, after in itertools.pairwise(blocks):
        assert after.first == before.last + 1
        # only the last block is short
        assert before.last - before.first + 1 == pieces * -(-block_lines // pieces)
    assert all(len(b.pieces) <= pieces for b in blocks)


def test_no_chunks_and_only_blank_lines_give_no_line() -> None:
    assert list(iter_text_blocks([], block_lines=10)) == []
    (block,) = iter_text_blocks([b"\n \n\r\n\t"], block_lines=10)
    assert block.lines() == ([], [])
    assert (block.first, block.last) == (1, 4)


def test_a_huge_line_is_cut_and_its_neighbours_keep_their_numbers() -> None:
    data = b'{"a":1}\n' + b"q" * 1_000_000 + b'\n{"b":2}\n'
    chunks = [data[i : i + 4096] for i in range(0, len(data), 4096)]
    (block,) = iter_text_blocks(chunks, block_lines=10, max_line=MAX)
    assert block.lines() == ([1, 2, 3], [b'{"a":1}', b"q" * (MAX + 1), b'{"b":2}'])
    assert block.long == [(2, b"q" * (MAX + 1))]
    assert sum(len(p.text) for p in block.pieces) < 100  # the rest of it is never held
