"""Keyed values of one partition as closed aiokafka ``BatchBuilder``s, in order.

The changelog outbox and the row publisher both hand Faust's producer
whole batches (``send_batch``) instead of one ``send`` a message. A batch
is closed before it is shipped, so the producer sends it at once instead of
letting it linger for records that could never join it (the collector's
sender does the same).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["closed_batches"]


def closed_batches(
    producer: Any, items: Iterable[tuple[bytes, bytes | None]]
) -> Iterator[tuple[Any, int]]:
    """Each full batch of ``items`` (key, value; None is a tombstone), closed, with its count.

    A generator: the caller ships each batch before the next is filled.
    """
    batch, count = producer.create_batch(), 0
    for key, value in items:
        if batch.append(key=key, value=value, timestamp=None) is None:
            batch.close()
            yield batch, count
            batch, count = producer.create_batch(), 0
            batch.append(key=key, value=value, timestamp=None)
        count += 1
    batch.close()
    yield batch, count
