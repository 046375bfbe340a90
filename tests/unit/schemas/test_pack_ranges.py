"""``pack_lines`` and ``pack_ranges`` (bisection over running sizes) against the greedy rule."""

from __future__ import annotations

import random
from collections.abc import Iterator

from schemas.event_record import pack_lines, pack_ranges


def _greedy(lines: list[bytes], max_bytes: int) -> Iterator[bytes]:
    """The definition: add each line to the value while it fits, else start a new one."""
    chunk: list[bytes] = []
    size = 0
    for line in lines:
        extra = len(line) + (1 if chunk else 0)
        if chunk and size + extra > max_bytes:
            yield b"\n".join(chunk)
            chunk, size = [], 0
            extra = len(line)
        chunk.append(line)
        size += extra
    if chunk:
        yield b"\n".join(chunk)


def test_the_same_values_as_the_greedy_rule() -> None:
    rng = random.Random(1)
    for _ in range(3_000):
        lines = [b"x" * rng.randint(0, 40) for _ in range(rng.randint(0, 60))]
        max_bytes = rng.randint(1, 120)
        want = list(_greedy(lines, max_bytes))
        assert list(pack_lines(lines, max_bytes)) == want
        assert list(pack_lines(iter(lines), max_bytes)) == want
        ranges = pack_ranges(lines, max_bytes)
        assert [b"\n".join(lines[s:e]) for s, e in ranges] == want
        assert [s for s, _ in ranges[1:]] == [e for _, e in ranges[:-1]]


def test_a_line_over_the_bound_is_a_value_of_its_own() -> None:
    lines = [b"a", b"b" * 50, b"c", b"d"]
    assert pack_ranges(lines, 10) == [(0, 1), (1, 2), (2, 4)]
    assert pack_ranges([], 10) == []
