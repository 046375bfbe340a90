"""``iter_ndjson``: line numbers an editor would show, any chunking, bounded memory."""

from __future__ import annotations

import itertools
import random
import tracemalloc
from collections.abc import Iterator

import pytest

from schemas.codec import MAX_EVENT_BYTES, decode_event, iter_ndjson
from schemas.errors import InvalidEvent


def reference(data: bytes, max_line: int) -> list[tuple[int, bytes]]:
    """What iter_ndjson must yield, computed the obvious (unbounded) way."""
    out = []
    for n, line in enumerate(data.split(b"\n"), start=1):
        if line.strip():
            out.append((n, line[: max_line + 1]))
    return out


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def random_cuts(data: bytes, rng: random.Random) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(data)), k=min(len(data) - 1, rng.randint(1, 12))))
    bounds = [0, *cuts, len(data)]
    # Empty chunks are legal input too.
    return [data[a:b] for a, b in itertools.pairwise(bounds)] + [b""]


SAMPLE = b'{"a":1}\n\n   \n{"b":2}\r\n{"c":3}\r\n\r\n\t\n{"d":4}\n{"e":5}'


def test_blank_lines_are_counted_not_yielded() -> None:
    data = b'{"a":1}\n\n  \n\t\n{"b":2}\n'
    assert list(iter_ndjson([data])) == [(1, b'{"a":1}'), (5, b'{"b":2}')]


def test_crlf_lines() -> None:
    got = list(iter_ndjson([b'{"a":1}\r\n\r\n{"b":2}\r\n']))
    assert [n for n, _ in got] == [1, 3]
    assert [line.rstrip(b"\r") for _, line in got] == [b'{"a":1}', b'{"b":2}']


def test_last_line_without_newline() -> None:
    assert list(iter_ndjson([b"x\ny"])) == [(1, b"x"), (2, b"y")]
    assert list(iter_ndjson([b"x\n\n\ny"])) == [(1, b"x"), (4, b"y")]
    assert list(iter_ndjson([b"x\n"])) == [(1, b"x")]
    assert list(iter_ndjson([b""])) == []
    assert list(iter_ndjson([])) == []


@pytest.mark.parametrize("max_line", [MAX_EVENT_BYTES, 8, 7, 5])
def test_any_chunk_size_gives_the_same_lines(max_line: int) -> None:
    want = reference(SAMPLE, max_line)
    for size in range(1, len(SAMPLE) + 2):
        assert list(iter_ndjson(chunked(SAMPLE, size), max_line=max_line)) == want, size


def test_random_chunk_boundaries() -> None:
    rng = random.Random(20260301)
    for _ in range(300):
        lines = []
        for _ in range(rng.randint(1, 8)):
            kind = rng.random()
            if kind < 0.2:
                lines.append(b"")
            elif kind < 0.3:
                lines.append(b" \t ")
            else:
                # Starts with a non-blank byte: the whitespace-prefixed overlong line has
                # its own test below.
                body = bytes(rng.choice(b"ab{}\r ") for _ in range(rng.randint(0, 30)))
                lines.append(rng.choice(b"ab{}").to_bytes(1, "big") + body)
        data = b"\n".join(lines) + rng.choice([b"", b"\n", b"\r\n"])
        if len(data) < 2:
            continue
        max_line = rng.choice([4, 10, 64])
        want = reference(data, max_line)
        got = list(iter_ndjson(random_cuts(data, rng), max_line=max_line))
        assert got == want, (data, max_line)


def test_oversized_line_is_cut_and_following_lines_survive() -> None:
    max_line = 10
    data = b"ok1\n" + b"X" * 25 + b"\nok3\n\nok5\n" + b"Y" * 11 + b"\n" + b"Z" * 12 + b"\nok8"
    want = [
        (1, b"ok1"),
        (2, b"X" * 11),
        (3, b"ok3"),
        (5, b"ok5"),
        (6, b"Y" * 11),  # exactly max_line + 1: passed on whole, still over the limit
        (7, b"Z" * 11),
        (8, b"ok8"),
    ]
    for size in range(1, len(data) + 1):
        assert list(iter_ndjson(chunked(data, size), max_line=max_line)) == want, size


def test_overlong_line_with_leading_whitespace_is_not_dropped() -> None:
    """Nothing disappears silently: a line that is not blank but starts with more than
    ``max_line`` bytes of whitespace must still come through (cut, so that
    ``decode_event`` rejects it as oversized), not be skipped as a blank line."""
    data = b"a\n" + b" " * 20 + b'{"x":1}\nb\n'
    for size in (1, 3, 64):
        got = list(iter_ndjson(chunked(data, size), max_line=10))
        assert got == [(1, b"a"), (2, b" " * 11), (3, b"b")], size


def test_line_of_exactly_max_line_is_kept_whole() -> None:
    assert list(iter_ndjson([b"abcde\nfg"], max_line=5)) == [(1, b"abcde"), (2, b"fg")]


def test_cut_line_is_rejected_by_decode_event() -> None:
    long_line = b'{"pad":"' + b"x" * (2 * MAX_EVENT_BYTES) + b'"}'
    ((n, line),) = list(iter_ndjson(chunked(long_line + b"\n", 4096)))
    assert n == 1
    assert len(line) == MAX_EVENT_BYTES + 1
    with pytest.raises(InvalidEvent) as info:
        decode_event(line)
    assert info.value.field == "$"


def test_bounded_memory_on_a_10mb_line() -> None:
    chunk = b"x" * 65536
    n_chunks = 160  # 10 MiB in one line

    def stream() -> Iterator[bytes]:
        for _ in range(n_chunks):
            yield chunk
        yield b"\nafter\n"

    max_line = 1000
    tracemalloc.start()
    try:
        got = list(iter_ndjson(stream(), max_line=max_line))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got == [(1, b"x" * (max_line + 1)), (2, b"after")]
    assert all(len(line) <= max_line + 1 for _, line in got)
    # A few chunks' worth at most, never the whole 10 MiB line.
    assert peak < 4 * len(chunk), peak
