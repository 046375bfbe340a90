"""NDJSON bytes into blocks of lines the engine reads itself, in bounded memory.

The same lines, numbers and cuts as ``schemas.codec.iter_ndjson`` (a unit test
checks it on random inputs), a block at a time, with no Python step per line:
newlines are found with numpy, and a block is a few *pieces* of the input's
own text, each a run of whole lines that ClickHouse splits itself
(``LineAsString``: one row per line, the line's bytes as they are). Blank
lines stay in the pieces, so that a line's row number in its piece gives its
line number; the engine skips them as the reader does.

A line longer than ``max_line`` is the one exception: its place in the piece
holds an empty line, and the line itself, cut to ``max_line + 1`` bytes
(enough for the validator to reject it as oversized), is carried beside the
pieces in ``TextBlock.long``. The rest of it is never held.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from schemas.codec import MAX_EVENT_BYTES

__all__ = ["Piece", "TextBlock", "blank", "iter_text_blocks"]

#: Bytes that ``bytes.strip`` removes: a line of only these is blank.
_SPACE = frozenset(b" \t\n\r\x0b\x0c")
_NL = 10


def blank(line: bytes) -> bool:
    """Whether the reader skips this line (empty, or whitespace only)."""
    return not line or (line[0] in _SPACE and not line.strip())


@dataclass(frozen=True, slots=True)
class Piece:
    """Whole lines of the input: ``text`` is each line followed by a newline."""

    #: the number (1-based, in the input) of the piece's first line
    first: int
    #: how many lines it holds
    count: int
    #: the text, as slices of the input's chunks (written out without joining them)
    parts: tuple[bytes | memoryview, ...]

    @property
    def text(self) -> bytes:
        return b"".join(self.parts)

    def numbered(self) -> Iterator[tuple[int, bytes]]:
        """(number, line) of every line of the piece, blank ones included."""
        return enumerate(self.text[:-1].split(b"\n"), start=self.first)


@dataclass(slots=True)
class TextBlock:
    """Consecutive lines of the input, from line ``first`` to line ``last``."""

    pieces: list[Piece] = field(default_factory=list)
    #: (number, first ``max_line + 1`` bytes) of each long line that is not blank
    long: list[tuple[int, bytes]] = field(default_factory=list)

    @property
    def first(self) -> int:
        return self.pieces[0].first

    @property
    def last(self) -> int:
        """The number of the block's last line."""
        piece = self.pieces[-1]
        return piece.first + piece.count - 1

    def lines(self) -> tuple[list[int], list[bytes]]:
        """The lines the reader gives (not blank), with their numbers, in order.

        One Python step per line: for the paths without the engine's reader.
        """
        long = dict(self.long)
        numbers: list[int] = []
        lines: list[bytes] = []
        for piece in self.pieces:
            for n, line in piece.numbered():
                if n in long:  # kept whatever its first bytes (it is not blank as a whole)
                    line = long[n]
                elif blank(line):
                    continue
                numbers.append(n)
                lines.append(line)
        return numbers, lines


class _Builder:
    """Whole lines in, pieces and blocks out."""

    def __init__(self, piece_lines: int, pieces: int) -> None:
        self.piece_lines = piece_lines
        self.pieces = pieces
        self.next = 1  # the number of the next line
        self.first = 1  # the number of the current piece's first line
        #: the current piece: runs of whole lines, each ending in a newline
        self.parts: list[bytes | memoryview] = []
        self.block = TextBlock()
        self.ready: list[TextBlock] = []

    def room(self) -> int:
        return self.piece_lines - (self.next - self.first)

    def add(self, text: bytes | memoryview, count: int) -> None:
        """``count`` whole lines, each followed by a newline; at most ``room()``."""
        self.parts.append(text)
        self.next += count
        if self.next - self.first >= self.piece_lines:
            self.close_piece()

    def add_long(self, line: bytes, cut_blank: bool) -> None:
        """A line longer than the bound, already cut: an empty line in the piece."""
        if not (cut_blank and blank(line)):
            self.block.long.append((self.next, line))
        self.add(b"\n", 1)

    def close_piece(self) -> None:
        if self.next > self.first:
            self.block.pieces.append(Piece(self.first, self.next - self.first, tuple(self.parts)))
            self.parts = []
            self.first = self.next
            if len(self.block.pieces) >= self.pieces:
                self.close_block()

    def close_block(self) -> None:
        if self.block.pieces:
            self.ready.append(self.block)
            self.block = TextBlock()


def iter_text_blocks(
    chunks: Iterable[bytes],
    *,
    block_lines: int,
    pieces: int = 1,
    max_line: int = MAX_EVENT_BYTES,
) -> Iterator[TextBlock]:
    """Blocks of ``block_lines`` lines (blank ones too), in ``pieces`` pieces each.

    Each piece holds ``block_lines / pieces`` lines, rounded up; the last
    block may be shorter. A line longer than ``max_line`` is cut
    as ``iter_ndjson`` cuts it (see the module doc).
    """
    keep = max_line + 1
    out = _Builder(max(1, -(-block_lines // pieces)), pieces)
    head = bytearray()  # the start of the line not finished yet (at most ``keep`` bytes)
    cut = False  # that line was longer than ``keep``
    cut_blank = True  # what was cut off it is whitespace only

    def extend_head(part: bytes | memoryview) -> None:
        nonlocal cut, cut_blank
        if cut:
            if cut_blank and not blank(bytes(part)):
                cut_blank = False
            return
        room = keep - len(head)
        if len(part) > room:
            head.extend(part[:room])
            cut = True
            if not blank(bytes(part[room:])):
                cut_blank = False
        else:
            head.extend(part)

    def end_head() -> None:
        nonlocal cut, cut_blank
        if cut:
            out.add_long(bytes(head), cut_blank)
        else:
            head.append(_NL)
            out.add(bytes(head), 1)
        head.clear()
        cut, cut_blank = False, True

    for chunk in chunks:
        if not chunk:
            continue
        view = memoryview(chunk)
        ends = np.flatnonzero(np.frombuffer(chunk, dtype=np.uint8) == _NL)
        if not len(ends):
            extend_head(view)
            continue
        # The line that began in an earlier chunk (or at this chunk's start).
        extend_head(view[: int(ends[0])])
        end_head()
        # Whole lines in this chunk: line k runs from ends[k - 1] + 1 to ends[k].
        k, m = 1, len(ends)
        if m > 1:
            starts = ends[:-1] + 1
            too_long = np.flatnonzero(ends[1:] - starts > keep) + 1
            longs = too_long.tolist()
        else:
            longs = []
        li = 0
        while k < m:
            stop = min(m, k + out.room())  # lines k .. stop - 1 fit in the piece
            if li < len(longs) and longs[li] < stop:
                stop = longs[li]
                if stop == k:  # line k is long: cut it, an empty line in its place
                    line = chunk[int(ends[k - 1]) + 1 : int(ends[k])]
                    out.add_long(line[:keep], blank(line[keep:]))
                    li += 1
                    k += 1
                    continue
            lo, hi = int(ends[k - 1]) + 1, int(ends[stop - 1]) + 1
            out.add(view[lo:hi], stop - k)  # a view: the bytes are copied once, to the file
            k = stop
        extend_head(view[int(ends[-1]) + 1 :])
        if out.ready:
            yield from out.ready
            out.ready.clear()
    if head or cut:
        end_head()
    out.close_piece()
    out.close_block()
    yield from out.ready
