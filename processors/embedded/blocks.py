"""NDJSON bytes into blocks of numbered lines, in bounded memory.

The same lines, numbers and cuts as ``schemas.codec.iter_ndjson`` (a unit test
checks it on random inputs), a block at a time: each chunk is split with one
``bytes.split`` instead of one search per line, which matters at a million
lines.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from schemas.codec import MAX_EVENT_BYTES

__all__ = ["LineBlock", "iter_blocks"]

#: Bytes that ``bytes.strip`` removes: a line of only these is blank.
_SPACE = frozenset(b" \t\n\r\x0b\x0c")


@dataclass(slots=True)
class LineBlock:
    """Lines that are not blank, with their 1-based line numbers in the input."""

    numbers: list[int] = field(default_factory=list)
    lines: list[bytes] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.lines)


def _blank(line: bytes) -> bool:
    return not line or (line[0] in _SPACE and not line.strip())


def iter_blocks(
    chunks: Iterable[bytes], *, block_lines: int, max_line: int = MAX_EVENT_BYTES
) -> Iterator[LineBlock]:
    """Blocks of up to ``block_lines`` non-blank lines, in input order.

    Blank lines are skipped but counted. A line longer than ``max_line`` is
    cut to ``max_line + 1`` bytes (enough for the validator to reject it as
    oversized) and the rest of it is never held.
    """
    keep = max_line + 1
    block = LineBlock()
    lineno = 0
    head = bytearray()  # the start of the line not finished yet (at most ``keep`` bytes)
    cut = False  # that line was longer than ``keep``
    cut_blank = True  # what was cut off it is whitespace only

    for chunk in chunks:
        parts = chunk.split(b"\n")
        last = len(parts) - 1
        for j, part in enumerate(parts):
            if j == last or head or cut:
                # The line continues from an earlier chunk, or into the next one.
                if cut:
                    if cut_blank and not _blank(part):
                        cut_blank = False
                else:
                    room = keep - len(head)
                    if len(part) > room:
                        head += part[:room]
                        cut = True
                        if not _blank(part[room:]):
                            cut_blank = False
                    else:
                        head += part
                if j == last:
                    break
                lineno += 1
                line = bytes(head)
                if not (_blank(line) and cut_blank):
                    block.numbers.append(lineno)
                    block.lines.append(line)
                head.clear()
                cut, cut_blank = False, True
            else:
                lineno += 1
                if len(part) > keep:
                    if _blank(part):
                        continue
                    part = part[:keep]
                elif _blank(part):
                    continue
                block.numbers.append(lineno)
                block.lines.append(part)
            if len(block.lines) >= block_lines:
                yield block
                block = LineBlock()
    if head or cut:
        line = bytes(head)
        if not (_blank(line) and cut_blank):
            block.numbers.append(lineno + 1)
            block.lines.append(line)
    if block.lines:
        yield block
