"""Topics of the pipeline: created with the configured partitions before anyone produces.

Otherwise the first produce would let the broker auto-create a topic with its
own default partition count, which the workers' tables would not match. The
collector, `telemetry ingest`, `simulate` and the workers all call this.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

from schemas.errors import OperationalError

__all__ = ["ensure_topics", "partition_counts", "unreachable"]


def unreachable(bootstrap: str, exc: BaseException) -> OperationalError:
    return OperationalError(
        f"cannot reach Kafka at {bootstrap}: check TELEMETRY_KAFKA and that the broker is up "
        f"({type(exc).__name__})"
    )


@contextlib.asynccontextmanager
async def _admin(bootstrap: str) -> AsyncIterator[Any]:
    """A started admin client, closed on the way out; an unreachable broker is one line."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaConnectionError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        await admin.start()
    except KafkaConnectionError as exc:
        await admin.close()
        raise unreachable(bootstrap, exc) from None
    try:
        yield admin
    finally:
        await admin.close()


async def ensure_topics(
    bootstrap: str,
    topics: Sequence[str],
    *,
    partitions: int,
    replication_factor: int = 1,
    configs: dict[str, str] | None = None,
) -> None:
    """Create the topics if missing (idempotent), so keys spread over ``partitions``.

    ``configs`` are topic configs for the ones created here (e.g. compaction
    for a changelog).
    """
    from aiokafka.admin import NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    async with _admin(bootstrap) as admin:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [
                        NewTopic(
                            t,
                            num_partitions=partitions,
                            replication_factor=replication_factor,
                            topic_configs=configs or {},
                        )
                        for t in missing
                    ]
                )


async def partition_counts(
    bootstrap: str, topics: Sequence[str], *, settle_s: float = 30.0
) -> dict[str, int]:
    """How many partitions the broker says each topic has (0: not there).

    A topic just created shows no partitions for a moment (the controller
    has not spread its metadata yet): asked again for up to ``settle_s``.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settle_s
    async with _admin(bootstrap) as admin:
        while True:
            described = await admin.describe_topics(list(topics))
            counts = {d["topic"]: len(d.get("partitions") or ()) for d in described}
            if all(counts.values()) or loop.time() > deadline:
                return counts
            await asyncio.sleep(0.5)
