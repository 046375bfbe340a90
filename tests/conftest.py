"""Fixtures: a real Kafka broker and a real ClickHouse engine for every test run.

Kafka: ``TELEMETRY_TEST_KAFKA`` if set, else testcontainers if a Docker engine
answers, else ``deploy/local-kafka``, else skip with the reason (fail under CI).
The local broker listens on ``TELEMETRY_TEST_KAFKA_PORT`` if set, else on a
free port picked for this session (two sessions on one machine never share a
broker; its state directory is keyed by the port). Tests that stop and start
a broker take ``dedicated_broker``: one of their own, never the shared one.
Temporary directories: each session gets its own base directory
(``telemetry-tests-*`` in the system temp dir) unless ``--basetemp`` is given:
pytest's default base is shared by every session of a user and keeps only the
three newest, so a fourth session on the machine deleted the directories
(logs, sockets, state) of one still running. The base is removed after a
session that passed and kept, with its path printed, after one that failed.
ClickHouse: ``TELEMETRY_TEST_CLICKHOUSE`` if set, else testcontainers, else a
fresh ``chdb://`` directory for the session (chDB admits one engine path per
process, so the whole session shares it; tests clean the tables they use).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kafka_broker import LocalKafka, free_port_pair, tooling_available
from pipeline_util import make_event

_OWN_BASETEMP = "telemetry-tests-"


def pytest_configure(config: pytest.Config) -> None:
    if config.option.basetemp is None:
        config.option.basetemp = tempfile.mkdtemp(prefix=_OWN_BASETEMP)
        config.stash[_own_base] = Path(config.option.basetemp)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    base = session.config.stash.get(_own_base, None)
    if base is None:
        return
    if exitstatus == 0:
        shutil.rmtree(base, ignore_errors=True)
    else:
        print(f"\ntest directories kept in {base}", file=sys.stderr)


_own_base = pytest.StashKey[Path]()

#: The fixture broker's port when the environment fixes it; else one is picked per session.
TEST_KAFKA_PORT: int | None = (
    int(os.environ["TELEMETRY_TEST_KAFKA_PORT"])
    if os.environ.get("TELEMETRY_TEST_KAFKA_PORT")
    else None
)
#: A dedicated broker's port: this far above TELEMETRY_TEST_KAFKA_PORT (or the next free pair).
DEDICATED_OFFSET = 50


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI is set and {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers of a real broker shared by the session's integration tests."""
    if os.environ.get("TELEMETRY_TEST_KAFKA"):
        yield os.environ["TELEMETRY_TEST_KAFKA"]
        return
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("confluentinc/cp-kafka:7.7.1").with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
        return
    reason = tooling_available()
    if reason:
        _unavailable(f"no Kafka broker: {reason}")
    picked = TEST_KAFKA_PORT is None
    try:
        broker = LocalKafka(TEST_KAFKA_PORT if TEST_KAFKA_PORT is not None else free_port_pair())
    except RuntimeError as exc:
        _unavailable(f"no Kafka broker: {exc}")
        raise
    if picked:
        broker.stop(wipe=True)  # a port of the moment: whatever an old run left is not ours
    try:
        bootstrap = broker.start()
    except Exception as exc:
        _unavailable(f"no Kafka broker: {exc}")
        raise
    try:
        yield bootstrap
    finally:
        if picked:
            broker.remove()
        else:
            broker.stop(wipe=True)


@pytest.fixture
def dedicated_broker() -> Iterator[LocalKafka]:
    """A broker of this test alone, which it may stop and start; fresh, and wiped after.

    ``deploy/local-kafka`` on TELEMETRY_TEST_KAFKA_PORT + 50 (or the next free
    pair above it) when that variable is set, else on a free pair picked at
    random. Never TELEMETRY_TEST_KAFKA or a container: those cannot be
    stopped and started again on the same address and data.
    """
    reason = tooling_available()
    if reason:
        _unavailable(f"no dedicated broker: {reason}")
    try:
        port = free_port_pair(
            TEST_KAFKA_PORT + DEDICATED_OFFSET if TEST_KAFKA_PORT is not None else None
        )
    except RuntimeError as exc:
        _unavailable(f"no dedicated broker: {exc}")
        raise
    broker = LocalKafka(port)
    broker.stop(wipe=True)  # a fresh cluster, whatever an interrupted run left there
    try:
        broker.start()
    except Exception as exc:
        broker.remove()
        _unavailable(f"no dedicated broker: {exc}")
        raise
    try:
        yield broker
    finally:
        if TEST_KAFKA_PORT is None:
            broker.remove()
        else:
            broker.stop(wipe=True)


@pytest.fixture(scope="session")
def clickhouse_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.environ.get("TELEMETRY_TEST_CLICKHOUSE"):
        yield os.environ["TELEMETRY_TEST_CLICKHOUSE"]
        return
    if _docker_answers():
        from testcontainers.clickhouse import ClickHouseContainer

        with ClickHouseContainer("clickhouse/clickhouse-server:24.8") as ch:
            host = ch.get_container_host_ip()
            port = ch.get_exposed_port(8123)
            yield f"http://{ch.username}:{ch.password}@{host}:{port}"
        return
    yield f"chdb://{tmp_path_factory.mktemp('chdb')}"


@pytest.fixture(scope="session")
def _migrated(clickhouse_dsn: str) -> Any:
    from processors.clickhouse import connect
    from processors.migrate import migrate

    ch = connect(clickhouse_dsn)
    migrate(ch, requests_ttl_days=30)
    return ch


@pytest.fixture
def clickhouse(_migrated: Any) -> Any:
    """The session's migrated ClickHouse, with the pipeline's tables emptied."""
    for table in (
        "requests",
        "rejected",
        "model_stats_7d_versions",
        "model_stats_hourly_versions",
        "stat_buckets",
        "pipeline_state",
    ):
        _migrated.command(f"TRUNCATE TABLE IF EXISTS telemetry.{table}")
    return _migrated


@pytest.fixture
def topic_prefix() -> str:
    """A unique prefix so tests sharing the broker never read each other's events."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def event_factory() -> Any:
    return make_event
