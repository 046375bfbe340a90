"""The rebalance fence: which events of a batch this worker may still fold.

Faust hands the agent batches that were fetched earlier, and with
``stream_wait_empty=False`` it does not wait for the agent when partitions
move. A worker that folds events of a partition it has lost writes state
into that partition's changelog after the new owner restored it: the new
owner never sees those writes, and the old worker's "persisted offset" for
the changelog jumps past the new owner's records, so the next time the
partition comes back, its restore skips them. That is how a rebalance
undercounted.

The consumer group's generation is the fence Kafka gives us: every message
carries the generation it was fetched in, and after every rebalance Faust
seeks each assigned partition back to its committed offset. So an event of
an older generation (or of a partition not assigned any more) is not folded
here; its partition's owner reads it again from the committed offset.

The generation is not enough on its own: inside one generation Faust can
still skip a run of a partition's messages (its read-offset bookkeeping
drops refetched messages below an offset it saw before a rebalance, and
its commits can move past them). So the state also carries, per
partition, the next offset it expects, and a worker folds a partition's
messages as a run that follows on from it: where the delivered offsets
jump (``find_holes``), the agent reads the missing run from Kafka itself
(processors/worker/gap_reader.py) and folds it first. After each
assignment a partition's runs start at the lower of the state's expected
offset and the group's committed offset (processors/worker/bookkeeper.py):
neither alone says where a partition's events stand.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import Protocol, TypeVar

__all__ = ["FencedMessage", "find_holes", "split_by_fence"]


class FencedMessage(Protocol):
    @property
    def partition(self) -> int: ...

    @property
    def generation_id(self) -> int | None: ...


class _HasMessage(Protocol):
    @property
    def message(self) -> FencedMessage: ...


E = TypeVar("E", bound=_HasMessage)


def split_by_fence(
    events: Iterable[E], *, generation: int, partitions: Collection[int]
) -> tuple[list[E], list[E]]:
    """Split a batch into (events to fold, events fenced off), order kept."""
    live: list[E] = []
    fenced: list[E] = []
    for ev in events:
        msg = ev.message
        if msg.generation_id == generation and msg.partition in partitions:
            live.append(ev)
        else:
            fenced.append(ev)
    return live, fenced


def find_holes(
    offsets: Sequence[int], expected: int | None
) -> tuple[list[tuple[int, int]], int | None]:
    """The runs of offsets missing before each delivered one, and the next expected offset.

    ``offsets`` are one partition's delivered offsets, sorted. Offsets below
    ``expected`` are redeliveries (the fold recognises them); a delivered
    offset above it leaves a hole ``[expected, offset)`` to read from Kafka.
    ``expected=None`` (a partition with no state yet) starts at the first.
    """
    holes: list[tuple[int, int]] = []
    for offset in offsets:
        if expected is not None and offset > expected:
            holes.append((expected, offset))
        if expected is None or offset >= expected:
            expected = offset + 1
    return holes, expected
