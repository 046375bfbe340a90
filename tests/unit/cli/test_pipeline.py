"""`open_pipeline` chooses once; each pipeline answers for its mode (no broker needed here)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from collector.handoff import MemoryHandoff
from schemas.errors import ConfigError
from schemas.settings import Settings
from simulator import SimulationPlan, Simulator, parse_target, simulate
from simulator.targets import TopicTarget
from telemetry.pipeline import Backlog, open_pipeline, require
from telemetry.pipeline.embedded import EmbeddedPipeline
from telemetry.pipeline.kafka import KafkaPipeline, TopicDoor
from telemetry.service.control import ControlClient


def test_no_broker_is_the_embedded_pipeline(tmp_path: Path) -> None:
    for kafka in (None, "", "   "):
        pipeline = open_pipeline(Settings(kafka=kafka, data_dir=tmp_path))
        assert isinstance(pipeline, EmbeddedPipeline)
    assert (pipeline.mode, pipeline.where, pipeline.broker) == ("embedded", "embedded", None)
    assert pipeline.dead_letters == "telemetry.rejected"
    assert pipeline.topic_door() is None
    assert pipeline.backlog() == Backlog()


def test_a_broker_is_the_kafka_pipeline(tmp_path: Path) -> None:
    settings = Settings(kafka="broker-1:9092", data_dir=tmp_path, dlq_topic="t.dlq")
    pipeline = open_pipeline(settings)
    assert isinstance(pipeline, KafkaPipeline)
    assert (pipeline.mode, pipeline.where, pipeline.broker) == (
        "kafka",
        "Kafka at broker-1:9092",
        "broker-1:9092",
    )
    assert pipeline.dead_letters == "t.dlq"
    door = pipeline.topic_door()
    assert isinstance(door, TopicDoor)
    assert door.description == f"{settings.topic} at broker-1:9092"


def test_only_an_embedded_store_opened_here_is_refreshed_on_read(tmp_path: Path) -> None:
    owned = ControlClient(tmp_path / "control.sock")  # reads through the running owner
    assert not open_pipeline(Settings(data_dir=tmp_path)).refreshes(owned)
    kafka = open_pipeline(Settings(kafka="b:9092", data_dir=tmp_path))
    assert not kafka.refreshes(owned)
    assert kafka.store_backlog(owned) == Backlog()  # the sink's lag says it, not the store


def test_require_fails_in_one_line_without_the_needed_pipeline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        require(Settings(data_dir=tmp_path), KafkaPipeline, "needs a broker: set TELEMETRY_KAFKA")
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "needs a broker: set TELEMETRY_KAFKA" in err and len(err.strip().splitlines()) == 1
    got = require(Settings(kafka="b:9092", data_dir=tmp_path), KafkaPipeline, "unused")
    assert got.broker == "b:9092"


class _Door:
    """The events topic's door, with the HTTP door's in-memory handoff behind it."""

    description = "memory"

    def __init__(self) -> None:
        self.handoff = MemoryHandoff()
        self.opened = self.closed = 0

    def open(self) -> Any:
        door = self

        class _Session:
            async def __aenter__(self) -> MemoryHandoff:
                door.opened += 1
                return door.handoff

            async def __aexit__(self, *exc: object) -> None:
                door.closed += 1

        return _Session()


def test_simulate_to_kafka_hands_every_event_through_the_pipelines_door(tmp_path: Path) -> None:
    door = _Door()
    target = parse_target("kafka", Settings(data_dir=tmp_path), lambda s: door)
    assert isinstance(target, TopicTarget) and target.description == "memory"
    plan = SimulationPlan(backfill_days=1, backfill_events=2_500)
    report = asyncio.run(simulate(Simulator(seed=3), target, plan))
    assert report.target.sent == 2_500 == len(door.handoff.events)
    assert (door.opened, door.closed) == (1, 1)


def test_simulate_to_kafka_without_a_door_names_the_variable(tmp_path: Path) -> None:
    embedded = open_pipeline(Settings(data_dir=tmp_path))
    with pytest.raises(ConfigError, match="TELEMETRY_KAFKA"):
        parse_target("kafka", embedded.settings, lambda s: open_pipeline(s).topic_door())
