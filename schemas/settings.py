"""Configuration in one place: flags and ``TELEMETRY_*`` variables.

Defaults work embedded: no broker, ClickHouse in-process under the data
directory. Every stage reads the same ``Settings`` so that a variable means the
same thing wherever it is read.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "DEFAULT_DATA_DIR",
    "DEFAULT_STATS_INTERVAL_S",
    "DEFAULT_TOPIC",
    "DLQ_TOPIC",
    "HOURLY_TOPIC",
    "STATS_TOPIC",
    "Settings",
]

DEFAULT_DATA_DIR = Path(".telemetry")
DEFAULT_TOPIC = "telemetry.requests.v1"
DLQ_TOPIC = "telemetry.requests.dlq"
#: Workers publish their rolling stats here; the sink writes them to ClickHouse.
STATS_TOPIC = "telemetry.stats.v1"
HOURLY_TOPIC = "telemetry.stats.hourly.v1"
DEFAULT_STATS_INTERVAL_S = 30.0
DEFAULT_REQUESTS_TTL_DAYS = 30


class Settings(BaseSettings):
    """All settings. Environment: ``TELEMETRY_<NAME>``; CLI flags override."""

    model_config = SettingsConfigDict(env_prefix="TELEMETRY_", extra="ignore")

    kafka: str | None = Field(
        default=None, description="Kafka bootstrap servers; unset means embedded (no broker)"
    )
    clickhouse: str | None = Field(
        default=None,
        description="ClickHouse DSN, chdb://PATH or http(s)://...; default chdb:// in the data dir",
    )
    data_dir: Path = Field(default=DEFAULT_DATA_DIR, description="where embedded state lives")
    topic: str = DEFAULT_TOPIC
    dlq_topic: str = DLQ_TOPIC
    stats_topic: str = STATS_TOPIC
    hourly_topic: str = HOURLY_TOPIC
    stats_interval_s: float = Field(default=DEFAULT_STATS_INTERVAL_S, gt=0)
    requests_ttl_days: int = Field(
        default=DEFAULT_REQUESTS_TTL_DAYS,
        ge=30,
        le=3650,
        description="days raw events are kept; at least the 30 days an event may lie back",
    )
    partitions: int = Field(
        default=4, ge=1, description="partitions of the events topic when created"
    )
    replication_factor: int = Field(
        default=1, ge=1, description="replication of the topics we create (3 on a real cluster)"
    )
    worker_id: str = "telemetry-worker"
    worker_session_timeout_s: float = Field(default=10.0, ge=6, le=300)
    worker_reread_max: int = Field(
        default=500,
        ge=1,
        description=(
            "Kafka records (each up to 1 MB of events) a worker reads straight from Kafka "
            "per step, when Faust skipped some"
        ),
    )
    worker_stuck_after_s: float = Field(
        default=120.0,
        gt=0,
        description=(
            "seconds a held partition may have lag while nothing of it is folded before the "
            "worker logs and counts it as stuck"
        ),
    )
    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description=(
            "port of the worker's or sink's Prometheus /metrics; unset: not served; "
            "0: a free port, logged at start-up"
        ),
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        description="address /metrics listens on (0.0.0.0 in a container)",
    )
    sql_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="longest a read-only query (telemetry sql, the control socket) may run",
    )
    sql_max_memory: int = Field(
        default=2 << 30, ge=64 << 20, description="memory one read-only query may use, in bytes"
    )
    sql_max_result_rows: int = Field(
        default=1_000_000, ge=1, description="rows one read-only query may return"
    )
    ingest_tokens: SecretStr | None = Field(
        default=None, description="comma-separated sha256 hex digests of accepted bearer tokens"
    )

    @field_validator("kafka", "clickhouse", mode="before")
    @classmethod
    def _blank_is_unset(cls, v: object) -> object:
        return None if isinstance(v, str) and not v.strip() else v

    @property
    def clickhouse_dsn(self) -> str:
        if self.clickhouse:
            return self.clickhouse
        return f"chdb://{(self.data_dir / 'clickhouse').resolve()}"

    @property
    def embedded(self) -> bool:
        return self.kafka is None
