"""Synthetic gateway traffic for demos, load tests and the documentation's tests.

``Simulator`` makes the events (pure, deterministic with a seed); ``targets``
delivers them (NDJSON file, Kafka, HTTP ingest); ``run.simulate`` drives one
into the other.
"""

from simulator.generator import DEFAULT_DUPLICATE_SHARE, Simulator
from simulator.run import SimulationPlan, SimulationReport, simulate
from simulator.targets import parse_target
from simulator.traffic import Incident

__all__ = [
    "DEFAULT_DUPLICATE_SHARE",
    "Incident",
    "SimulationPlan",
    "SimulationReport",
    "Simulator",
    "parse_target",
    "simulate",
]
