"""The tests' brokers: ``telemetry.local_kafka`` (shared with `telemetry demo --kafka`)."""

from telemetry.local_kafka import (
    SCRIPT,
    LocalKafka,
    free_port_pair,
    kafka_home,
    port_pair_free,
    tooling_available,
)

__all__ = [
    "SCRIPT",
    "LocalKafka",
    "free_port_pair",
    "kafka_home",
    "port_pair_free",
    "tooling_available",
]
