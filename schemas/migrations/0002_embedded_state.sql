-- Embedded mode keeps its hour buckets in ClickHouse, the one durable store it has.
-- `through` is the ingested_at watermark the bucket includes: a refresh adds
-- only rows of its key ingested after it, so a crash between writing buckets
-- and moving the global watermark never counts a row twice.
CREATE TABLE IF NOT EXISTS telemetry.stat_buckets
(
    model    LowCardinality(String),
    provider LowCardinality(String),
    hour     DateTime64(3, 'UTC'),
    through  DateTime64(3, 'UTC'),
    state    String
)
ENGINE = ReplacingMergeTree(through)
ORDER BY (model, provider, hour)
TTL toDateTime(hour) + INTERVAL 8 DAY;

CREATE TABLE IF NOT EXISTS telemetry.pipeline_state
(
    name       String,
    value      String,
    updated_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY name;
