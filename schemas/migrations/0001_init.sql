-- Raw events, one row per event_id. Writers deduplicate before inserting
-- (see processors/sinks); ReplacingMergeTree collapses any duplicate that
-- slips through (same event_id, hence same model, provider and ts) at merge.
-- The sort key serves the analysts' queries: one model, one provider, a time range.
CREATE DATABASE IF NOT EXISTS telemetry;

CREATE TABLE IF NOT EXISTS telemetry.requests
(
    event_id            UUID,
    schema_version      UInt8,
    ts                  DateTime64(3, 'UTC'),
    gateway_id          LowCardinality(String),
    region              LowCardinality(Nullable(String)),
    model               LowCardinality(String),
    provider            LowCardinality(String),
    stream              Bool,
    status              Enum8('ok' = 1, 'error' = 2),
    error_type          Nullable(Enum8('provider_error' = 1, 'timeout' = 2, 'rate_limited' = 3,
                                       'client_error' = 4, 'gateway_error' = 5, 'cancelled' = 6)),
    http_status         UInt16,
    ttft_ms             Nullable(Float64),
    latency_ms          Float64,
    input_tokens        UInt64,
    output_tokens       UInt64,
    cached_input_tokens UInt64,
    ingested_at         DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX idx_event_id event_id TYPE bloom_filter(0.001) GRANULARITY 4
)
ENGINE = ReplacingMergeTree
PARTITION BY toDate(ts)
ORDER BY (model, provider, toStartOfHour(ts), event_id)
TTL toDateTime(ts) + INTERVAL {requests_ttl_days} DAY
SETTINGS non_replicated_deduplication_window = 10000;

-- Rejected input, kept with its reason: nothing disappears silently.
CREATE TABLE IF NOT EXISTS telemetry.rejected
(
    received_at DateTime64(3, 'UTC') DEFAULT now64(3),
    source      LowCardinality(String),
    location    String,
    field       LowCardinality(String),
    reason      String,
    raw         String
)
ENGINE = MergeTree
PARTITION BY toDate(received_at)
ORDER BY (received_at)
TTL toDateTime(received_at) + INTERVAL {requests_ttl_days} DAY
SETTINGS non_replicated_deduplication_window = 10000;

-- Every published version of the rolling stats. Readers use the view
-- telemetry.model_stats_7d, which shows the latest row per (model, provider).
CREATE TABLE IF NOT EXISTS telemetry.model_stats_7d_versions
(
    model               LowCardinality(String),
    provider            LowCardinality(String),
    as_of               DateTime64(3, 'UTC'),
    window_start        DateTime64(3, 'UTC'),
    requests            UInt64,
    input_tokens        UInt64,
    output_tokens       UInt64,
    traffic_tokens      UInt64,
    errors              UInt64,
    error_denominator   UInt64,
    error_rate          Nullable(Float64),
    ttft_samples        UInt64,
    ttft_p50_ms         Nullable(Float64),
    ttft_p95_ms         Nullable(Float64),
    ttft_p99_ms         Nullable(Float64),
    output_tps_samples  UInt64,
    output_tps_p50      Nullable(Float64)
)
ENGINE = ReplacingMergeTree(as_of)
ORDER BY (model, provider)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE VIEW IF NOT EXISTS telemetry.model_stats_7d AS
SELECT * FROM telemetry.model_stats_7d_versions FINAL;

-- The hourly series behind the charts: one row per (model, provider, hour),
-- replaced as late events update their hour.
CREATE TABLE IF NOT EXISTS telemetry.model_stats_hourly_versions
(
    model               LowCardinality(String),
    provider            LowCardinality(String),
    hour                DateTime64(3, 'UTC'),
    as_of               DateTime64(3, 'UTC'),
    requests            UInt64,
    input_tokens        UInt64,
    output_tokens       UInt64,
    traffic_tokens      UInt64,
    errors              UInt64,
    error_denominator   UInt64,
    error_rate          Nullable(Float64),
    ttft_samples        UInt64,
    ttft_p50_ms         Nullable(Float64),
    ttft_p95_ms         Nullable(Float64),
    ttft_p99_ms         Nullable(Float64),
    output_tps_samples  UInt64,
    output_tps_p50      Nullable(Float64)
)
ENGINE = ReplacingMergeTree(as_of)
PARTITION BY toYYYYMM(hour)
ORDER BY (model, provider, hour)
TTL toDateTime(hour) + INTERVAL {requests_ttl_days} DAY
SETTINGS non_replicated_deduplication_window = 10000;

CREATE VIEW IF NOT EXISTS telemetry.model_stats_hourly AS
SELECT * FROM telemetry.model_stats_hourly_versions FINAL;
